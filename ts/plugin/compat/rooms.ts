// Room names of payload-real-time (`user:<id>`) in ours: its apps route events to `user:<id>`,
// our sockets are in `user:<collection>:<id>`. A `user:` name with one part after the prefix
// becomes that user's room in each auth collection of the config (usually just `users`).

/** `user:<id>` → `user:<slug>:<id>` for each auth collection; any other name unchanged. */
export function expandUserRoom(name: string, authCollections: readonly string[]): string[] {
  if (!name.startsWith('user:')) return [name]
  const id = name.slice('user:'.length)
  if (id === '' || id.includes(':') || authCollections.length === 0) return [name]
  return authCollections.map((slug) => `user:${slug}:${id}`)
}
