import config from '@payload-config'
import { getPayload } from 'payload'
import { LivePosts, type Post } from './LivePosts'

// Rendered per request: the list is current, and the hooks render on the server first.
export const dynamic = 'force-dynamic'

export default async function Page() {
  const payload = await getPayload({ config })
  const { docs } = await payload.find({ collection: 'posts', depth: 1, sort: 'createdAt', limit: 100 })
  return (
    <>
      <h1>Live posts</h1>
      <LivePosts initial={docs as Post[]} />
    </>
  )
}
