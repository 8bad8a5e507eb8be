// Compile-time checks of the SDK's typing against the built declarations (dist/). Every
// `@ts-expect-error` must hit an error, or tsc fails this check.
import { createClient, RealtimeClient } from '../../dist/client/index.js'
import { createRealtimeHooks, useCollection } from '../../dist/react/index.js'

// Shaped like Payload's generated payload-types.ts: interfaces, not type aliases.
interface Post {
  id: number
  title: string
}
interface User {
  id: number
  email: string
}
interface Config {
  auth: { users: unknown }
  collections: { posts: Post; users: User }
  globals: {}
}

const client = createClient<Config>({ url: 'ws://127.0.0.1:1/', autoConnect: false })
client.onCollection('posts', (e) => {
  const title: string = e.doc.title
  const _slug: 'posts' = e.collection
  if (e.type === 'delete') {
    const op: 'delete' = e.operation
    void op
  }
  void title, _slug
})
client.onDoc('users', 1, (e) => {
  const email: string = e.doc.email
  // @ts-expect-error users have no title
  void e.doc.title
  void email
})
// @ts-expect-error unknown collection slug
client.onCollection('comments', () => {})
client.on('welcome', (w) => {
  const id: string = w.socketId
  void id
})
client.on('update', (e) => {
  if (e.collection === 'posts') {
    const t: string = e.doc.title
    void t
  }
})
client.on<{ text: string }>('chat', (m) => {
  const text: string = m.text
  void text
})
const reply: Promise<{ ok: boolean }> = client.request<{ ok: boolean }>('x', { a: 1 }, { timeoutMs: 5 })
void reply

// The class form works too.
const typed: RealtimeClient<{ collections: { posts: Post } }> = new RealtimeClient({
  url: 'ws://x/',
  autoConnect: false,
})
typed.onCollection('posts', (e) => void e.doc.id.toFixed())

// Untyped clients accept any slug.
createClient({ url: 'ws://x/', autoConnect: false }).onCollection('anything', (e) => void e.doc.whatever)

const hooks = createRealtimeHooks<Config>()
export function usePosts(): Post[] {
  // @ts-expect-error unknown slug
  hooks.useCollection('nope')
  const doc: User | null | undefined = hooks.useDoc('users', 1)
  void doc
  const posts: Post[] = useCollection<Post>('posts')
  void posts
  return hooks.useCollection('posts')
}
