// Starts the demo: Payload (Local API + REST on HTTP_PORT via handleEndpoints, no Next.js) and the
// WebSocket server the plugin starts on WS_PORT. Seeds a demo user and prints how to try it.
import http from 'node:http'
import { getPayload, handleEndpoints } from 'payload'
import { getUWebSocketManager } from 'payload-realtime-rs'
import config from './payload.config.mjs'

process.env.DISABLE_PAYLOAD_HMR ??= 'true'
const HTTP_PORT = Number(process.env.HTTP_PORT || 3000)
const HOST = process.env.HOST || '127.0.0.1'
const email = process.env.DEMO_EMAIL || 'demo@example.com'
const password = process.env.DEMO_PASSWORD || 'demo-password'

const payload = await getPayload({ config, key: 'payload-basic' })

const existing = await payload.find({ collection: 'users', where: { email: { equals: email } }, limit: 1 })
if (!existing.docs.length)
  await payload.create({ collection: 'users', data: { email, password, name: 'Demo' } })

// Payload's REST API on plain node:http.
const server = http.createServer(async (req, res) => {
  try {
    const chunks = []
    for await (const c of req) chunks.push(c)
    const body = chunks.length ? Buffer.concat(chunks) : undefined
    const request = new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method,
      headers: req.headers,
      body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body,
    })
    const response = await handleEndpoints({ config, request, payloadInstanceCacheKey: 'payload-basic' })
    res.writeHead(response.status, Object.fromEntries(response.headers))
    res.end(Buffer.from(await response.arrayBuffer()))
  } catch (err) {
    payload.logger.error({ err, msg: 'request failed' })
    res.writeHead(500).end()
  }
})
await new Promise((resolve) => server.listen(HTTP_PORT, HOST, resolve))

const ws = getUWebSocketManager()
const api = `http://${HOST}:${server.address().port}/api`
console.log(`
payload-basic is running
  REST API   ${api}
  WebSocket  ws://${HOST}:${ws.port}/
  login      ${email} / ${password}

Try it:
  TOKEN=$(curl -s -X POST ${api}/users/login -H 'content-type: application/json' \\
    -d '{"email":"${email}","password":"${password}"}' | node -pe 'JSON.parse(require("fs").readFileSync(0)).token')
  # in another shell: npx wscat -c ws://${HOST}:${ws.port}/ then send {"type":"join-collection","collection":"posts"}
  curl -s -X POST ${api}/posts -H "authorization: JWT $TOKEN" -H 'content-type: application/json' -d '{"title":"hello"}'
`)

const shutdown = async () => {
  server.close()
  await getUWebSocketManager()?.close()
  await payload.destroy()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
