// Our server: the manager (dist/plugin, over the addon built by `npx napi build --platform
// --release`) doing the same product-level work as the peers: JWT verified natively at upgrade,
// rooms and fan-out in the Rust core, one emitEvent call per event, the `echo` handler and the
// authorize callback in JS. (The `echo` scenario uses the core's native echo example instead.)
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const { PORT, AUTHORIZE, ACCESS, JWT_KEY, REDIS_URL, authorizeHalf, control } = require('./common')

const PLUGIN = path.join(__dirname, '..', '..', '..', 'dist', 'plugin', 'index.js')

async function main() {
  const { initUWebSocket, ReadAccess } = await import(pathToFileURL(PLUGIN).href)
  const manager = await initUWebSocket({
    port: PORT,
    host: '127.0.0.1',
    requireAuth: true,
    jwtKey: JWT_KEY,
    // The benchmark measures throughput, not the per-socket rate limiter (default 100 msg/s).
    rateLimit: false,
    maxConnections: 100_000,
    maxBackpressure: 1 << 20,
    // --server-workers N: the core's tokio worker threads (default: the cores it may run on).
    ...(process.env.BENCH_WORKERS ? { workerThreads: Number(process.env.BENCH_WORKERS) } : {}),
    // --redis: instances share this Redis (scenario fanout with --instances K).
    ...(REDIS_URL ? { redis: { url: REDIS_URL } } : {}),
  })
  manager.registerCustomHandler('echo', (_socket, data) => data)
  if (ACCESS) {
    // The plugin's default read check (ReadAccess.decide, the code the plugin installs), over a
    // Payload stand-in that holds the collection configs: access.read per distinct user (an
    // owner-based Where: owner or the user's group), identical Where results once per event,
    // each evaluated against the document in memory; the populated author's collection access
    // and the users' documents (loaded once, then cached) as in a Payload app.
    const posts = {
      slug: 'posts',
      access: {
        read: ({ req: { user } }) =>
          user
            ? {
                or: [
                  { owner: { equals: user.id } },
                  { sharedWith: { equals: Number(user.id) % 2 === 0 ? 'even' : 'odd' } },
                ],
              }
            : false,
      },
      fields: [
        { name: 'title', type: 'text' },
        { name: 'slug', type: 'text' },
        { name: 'status', type: 'text' },
        { name: 'author', type: 'relationship', relationTo: 'users' },
        { name: 'excerpt', type: 'text' },
        { name: 'owner', type: 'text' },
        { name: 'sharedWith', type: 'text' },
      ],
    }
    const users = {
      slug: 'users',
      auth: { depth: 0 },
      access: { read: () => true },
      fields: [{ name: 'name', type: 'text' }],
    }
    const payload = {
      collections: { posts: { config: posts }, users: { config: users } },
      find: async ({ where }) => ({ docs: where.id.in.map((id) => ({ id })) }),
      count: async () => ({ totalDocs: 0 }),
    }
    const access = new ReadAccess(payload, (user) => ({ user }))
    manager.setAuthorize('posts', (users, event) => access.decide('posts', users, event))
  } else if (AUTHORIZE) manager.setAuthorize('posts', (users, event) => authorizeHalf(users, event))
  control((event) => manager.emitEvent(event))
}

main().catch((e) => {
  console.error('ours:', e)
  process.exit(1)
})
