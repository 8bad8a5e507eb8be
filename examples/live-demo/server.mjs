// The live demo: one node:http server serves the page (public/), the client SDK as ES modules
// (dist/client) and Payload's REST API (handleEndpoints, no Next.js); the plugin runs the WebSocket
// server on WS_PORT. Seeds a user and a few posts on first start, then prints the URL and the login.
//
//   HOST (127.0.0.1)  HTTP_PORT (3000)  WS_PORT (3002)  DATABASE_URL (file:./demo.db)
//   DEMO_EMAIL / DEMO_PASSWORD (demo@example.com / demo-password)  PAYLOAD_SECRET (random)
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { getPayload, handleEndpoints } from 'payload'
import { getUWebSocketManager } from 'payload-realtime-rs'
import { demoConfig } from './payload.config.mjs'

process.env.DISABLE_PAYLOAD_HMR ??= 'true'
const HOST = process.env.HOST || '127.0.0.1'
const HTTP_PORT = Number(process.env.HTTP_PORT ?? 3000)
const WS_PORT = Number(process.env.WS_PORT ?? 3002)
const email = process.env.DEMO_EMAIL || 'demo@example.com'
const password = process.env.DEMO_PASSWORD || 'demo-password'
const CACHE_KEY = 'live-demo'

const here = path.dirname(fileURLToPath(import.meta.url))
const publicDir = path.join(here, 'public')
const clientDir = path.resolve(here, '../../dist/client')

// The HTTP server listens first, so its port (maybe chosen by the OS) is known to the socket
// server's origin check: a browser page may connect when it came from this server.
let payload = null
let ready = null // { config, wsPort } once Payload and the socket server run
const server = http.createServer((req, res) => {
  route(req, res).catch((err) => {
    ;(payload?.logger ?? console).error({ err, msg: `${req.method} ${req.url} failed` })
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ errors: [{ message: 'internal error' }] }))
  })
})
await new Promise((resolve, reject) => server.once('error', reject).listen(HTTP_PORT, HOST, resolve))
const httpPort = server.address().port
const isPageOrigin = (origin, hostHeader = '') => {
  try {
    const o = new URL(origin)
    const host = new URL(`http://${hostHeader}`).hostname
    return o.protocol === 'http:' && Number(o.port || 80) === httpPort && o.hostname === host
  } catch {
    return false
  }
}

const config = demoConfig({ host: HOST, wsPort: WS_PORT, isPageOrigin })
payload = await getPayload({ config, key: CACHE_KEY })
await seed()
const wsPort = getUWebSocketManager().port
ready = { config, wsPort }

/** Serves the page, its config, the client SDK, and /api/* through Payload. */
async function route(req, res) {
  const { pathname } = new URL(`http://x${req.url}`) // not new URL(req.url, base): '//a' would be a host
  if (!ready) return send(res, 503, 'text/plain', 'starting, try again in a moment')
  if (pathname.startsWith('/api/') || pathname === '/api') return rest(req, res)
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed')
  if (pathname === '/config.json')
    return send(res, 200, 'application/json', JSON.stringify({ wsPort: ready.wsPort, wsPath: '/' }))
  if (pathname === '/' || pathname === '/index.html') return file(res, publicDir, 'index.html')
  if (/^\/(app\.js|style\.css)$/.test(pathname)) return file(res, publicDir, pathname.slice(1))
  // The SDK's compiled modules import each other relatively ('./client.js'): serve the folder.
  const m = /^\/client\/([a-z]+\.js(?:\.map)?)$/.exec(pathname)
  if (m) return file(res, clientDir, m[1])
  return send(res, 404, 'text/plain', 'not found')
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
}

async function file(res, dir, name) {
  let body
  try {
    body = await fs.readFile(path.join(dir, name))
  } catch (err) {
    if (err.code !== 'ENOENT') throw err
    const hint = dir === clientDir ? ' (build the client SDK first: npx tsc -p tsconfig.json)' : ''
    return send(res, 404, 'text/plain', `${name} not found${hint}`)
  }
  send(res, 200, TYPES[path.extname(name)], body)
}

function send(res, status, type, body) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  })
  res.end(body)
}

/** Payload's REST API: node:http request → fetch Request → handleEndpoints → node:http response. */
async function rest(req, res) {
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
  const request = new Request(`http://${req.headers.host}${req.url}`, {
    method: req.method,
    headers: Object.entries(req.headers).flatMap(([k, v]) =>
      Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]],
    ),
    body: hasBody ? Readable.toWeb(req) : undefined,
    duplex: 'half',
  })
  const response = await handleEndpoints({
    config: ready.config,
    request,
    payloadInstanceCacheKey: CACHE_KEY,
  })
  const headers = Object.fromEntries([...response.headers].filter(([k]) => k !== 'set-cookie'))
  const cookies = response.headers.getSetCookie()
  if (cookies.length) headers['set-cookie'] = cookies
  res.writeHead(response.status, headers)
  res.end(Buffer.from(await response.arrayBuffer()))
}

/** First start: the demo user and a few posts. Later starts keep what the database holds. */
async function seed() {
  const found = await payload.find({ collection: 'users', where: { email: { equals: email } }, limit: 1 })
  if (found.docs.length) return
  const user = await payload.create({ collection: 'users', data: { email, password, name: 'Demo' } })
  const posts = [
    [
      'Welcome to the live demo',
      'Open this page in a second window: whatever you create, edit or delete here shows up there at once.',
    ],
    [
      'How it works',
      'Payload saves the post; the plugin hands the event to the Rust WebSocket server, which sends it to every open page.',
    ],
    ['Try the REST API', 'A post created with curl appears here too — the page does not poll.'],
  ]
  for (const [title, body] of posts)
    await payload.create({ collection: 'posts', data: { title, body, author: user.id } })
}

const shown = HOST === '0.0.0.0' || HOST === '::' ? '127.0.0.1' : HOST.includes(':') ? `[${HOST}]` : HOST
console.log(`
live demo is running
  page       http://${shown}:${httpPort}/
  REST API   http://${shown}:${httpPort}/api
  WebSocket  ws://${shown}:${wsPort}/
  login      ${email} / ${password}

Open the page in two windows, log in, and change posts in one (or with curl): the other follows.
Ctrl-C stops it.
`)

let stopping = false
const shutdown = async () => {
  if (stopping) return
  stopping = true
  server.close()
  server.closeAllConnections()
  await getUWebSocketManager()?.close()
  await payload.destroy()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
