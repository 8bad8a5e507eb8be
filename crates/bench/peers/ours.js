// Our server: the manager (dist/plugin, over the addon built by `npx napi build --platform
// --release`) doing the same product-level work as the peers: JWT verified natively at upgrade,
// rooms and fan-out in the Rust core, one emitEvent call per event, the `echo` handler and the
// authorize callback in JS. (The `echo` scenario uses the core's native echo example instead.)
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const { PORT, AUTHORIZE, JWT_KEY, REDIS_URL, authorizeHalf, control } = require('./common')

const PLUGIN = path.join(__dirname, '..', '..', '..', 'dist', 'plugin', 'index.js')

async function main() {
  const { initUWebSocket } = await import(pathToFileURL(PLUGIN).href)
  const manager = await initUWebSocket({
    port: PORT,
    host: '127.0.0.1',
    requireAuth: true,
    jwtKey: JWT_KEY,
    // The benchmark measures throughput, not the per-socket rate limiter (default 100 msg/s).
    rateLimit: false,
    maxConnections: 100_000,
    maxBackpressure: 1 << 20,
    // --redis: instances share this Redis (scenario fanout with --instances K).
    ...(REDIS_URL ? { redis: { url: REDIS_URL } } : {}),
  })
  manager.registerCustomHandler('echo', (_socket, data) => data)
  if (AUTHORIZE) manager.setAuthorize('posts', (users, event) => authorizeHalf(users, event))
  control((event) => manager.emitEvent(event))
}

main().catch((e) => {
  console.error('ours:', e)
  process.exit(1)
})
