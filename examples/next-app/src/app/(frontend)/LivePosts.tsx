'use client'
import { RealtimeProvider, useCollection, useRealtimeState } from 'payload-realtime-rs/react'

export interface Post {
  id: number | string
  title: string
  author?: { name?: string | null; email?: string } | number | string | null
}

function authorName(a: Post['author']): string {
  return a && typeof a === 'object' ? (a.name ?? a.email ?? '') : ''
}

function Posts({ initial }: { initial: Post[] }) {
  const posts = useCollection<Post>('posts', { initial })
  const state = useRealtimeState()
  return (
    <>
      <p id="state" data-state={state}>
        realtime: {state}
      </p>
      <ul id="posts">
        {posts.map((p) => (
          <li key={p.id} data-id={p.id}>
            {p.title}
            {authorName(p.author) ? ` by ${authorName(p.author)}` : ''}
          </li>
        ))}
      </ul>
    </>
  )
}

/** No URL given: the client connects to /realtime on this page's origin (withRealtime's rewrite). */
export function LivePosts({ initial }: { initial: Post[] }) {
  return (
    <RealtimeProvider>
      <Posts initial={initial} />
    </RealtimeProvider>
  )
}
