// The one shared helper module of the Node tests: boots a real Payload 3 (SQLite in a temp dir)
// with the plugin, connects real WebSocket clients (the `ws` package), waits for messages.
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { buildConfig, getPayload } from 'payload'
import WebSocket from 'ws'
import { getUWebSocketManager, initUWebSocket, payloadJwtKey, uWebSocketPlugin } from 'payload-realtime-rs'

process.env.DISABLE_PAYLOAD_HMR = 'true'
process.env.PAYLOAD_TELEMETRY_DISABLED = 'true' // belt and braces next to `telemetry: false`
// Payload skips the dev schema push when the schema equals the previous one in this process;
// every test Payload has a fresh database file, so always push.
process.env.PAYLOAD_FORCE_DRIZZLE_PUSH = 'true'

export const SECRET = 'realtime-test-secret-0123456789'
export const PASSWORD = 'correct horse battery'
export { getUWebSocketManager, initUWebSocket, uWebSocketPlugin }

let seq = 0

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort() {
  const srv = net.createServer()
  await new Promise((res) => srv.listen(0, '127.0.0.1', res))
  const { port } = srv.address()
  await new Promise((res) => srv.close(res))
  return port
}

/** Test collections: users (auth, API keys), posts (relations, hidden fields, blocks), notes, articles (drafts). */
export function testCollections() {
  return [
    {
      slug: 'users',
      auth: { useAPIKey: true },
      fields: [
        { name: 'name', type: 'text' },
        { name: 'role', type: 'select', options: ['admin', 'editor', 'reader'], defaultValue: 'reader' },
        { name: 'secretNote', type: 'text', hidden: true },
      ],
    },
    {
      slug: 'posts',
      fields: [
        { name: 'title', type: 'text', required: true },
        { name: 'team', type: 'text' },
        { name: 'author', type: 'relationship', relationTo: 'users' },
        { name: 'internal', type: 'text', hidden: true },
        {
          name: 'meta',
          type: 'group',
          fields: [
            { name: 'summary', type: 'text' },
            { name: 'reviewToken', type: 'text', hidden: true },
          ],
        },
        {
          type: 'row',
          fields: [{ name: 'rowHidden', type: 'text', hidden: true }, { name: 'rowShown', type: 'text' }],
        },
        {
          name: 'content',
          type: 'blocks',
          blocks: [
            {
              slug: 'quote',
              fields: [
                { name: 'text', type: 'text' },
                { name: 'by', type: 'relationship', relationTo: 'users' },
                { name: 'blockSecret', type: 'text', hidden: true },
              ],
            },
          ],
        },
      ],
    },
    { slug: 'notes', fields: [{ name: 'text', type: 'text' }] },
    { slug: 'articles', versions: { drafts: true }, fields: [{ name: 'title', type: 'text' }] },
  ]
}

/**
 * Boots Payload with the plugin. `realtime`: plugin options (default `{ port: 0 }` semantics are
 * the caller's). `transactions`: SQLite transactions on (default true). `plugins`: extra Payload
 * plugins placed after ours. `hooks`: `{ [slug]: hooks }` merged into the test collections.
 * Returns `{ payload, manager, url, stop }`; `stop()` closes the manager and Payload.
 */
export async function startPayload({ realtime = {}, transactions = true, plugins = [], hooks = {}, onInit, startServer = 'port' } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-payload-'))
  const collections = testCollections().map((c) => ({ ...c, hooks: { ...c.hooks, ...hooks[c.slug] } }))
  const pluginOptions = startServer === 'port' ? { port: 0, host: '127.0.0.1', ...realtime } : realtime
  const config = buildConfig({
    secret: SECRET,
    telemetry: false,
    typescript: { autoGenerate: false },
    graphQL: { disable: true },
    logger: { options: { level: process.env.TEST_LOG_LEVEL || 'error' } },
    db: sqliteAdapter({
      client: { url: `file:${path.join(dir, 'test.db')}` },
      ...(transactions ? { transactionOptions: {} } : {}),
    }),
    collections,
    onInit,
    plugins: [uWebSocketPlugin(pluginOptions), ...plugins],
  })
  const payload = await getPayload({ config, key: `test-${process.pid}-${++seq}` })
  let manager = getUWebSocketManager()
  if (startServer === 'manual') manager = await initUWebSocket({ port: 0, host: '127.0.0.1' })
  const url = manager ? `ws://127.0.0.1:${manager.port}/` : null
  const stop = async () => {
    await getUWebSocketManager()?.close()
    await payload.destroy()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { payload, manager, url, stop }
}

/** Creates a user and logs in; returns `{ user, token }` (a real Payload JWT). */
export async function createUser(payload, email, data = {}) {
  const user = await payload.create({ collection: 'users', data: { email, password: PASSWORD, ...data } })
  const { token } = await payload.login({ collection: 'users', data: { email, password: PASSWORD } })
  return { user, token }
}

/** Decodes a JWT without verifying: `{ header, claims }`. */
export function decodeJwt(token) {
  const [h, c] = token.split('.')
  return { header: JSON.parse(Buffer.from(h, 'base64url')), claims: JSON.parse(Buffer.from(c, 'base64url')) }
}

/** Signs a Payload-style JWT (HS256, `authVersion: 1`) with the key Payload derives from `secret`. */
export function signJwt(claims, secret = SECRET) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const head = enc({ alg: 'HS256', authVersion: 1, typ: 'JWT' }) // Payload's key order
  const body = enc(claims)
  const sig = createHmac('sha256', payloadJwtKey(secret)).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

/**
 * Opens a WebSocket and waits for `welcome`. Options: `token` (sent as `Authorization: JWT …`),
 * `headers`, `origin`, `path`. Rejects with `err.status` when the upgrade is refused.
 * The client keeps every message; `next(pred, ms)` takes the first match, `none(pred, ms)`
 * asserts none arrives.
 */
export async function connect(url, { token, headers = {}, origin, path: p = '', waitWelcome = true } = {}) {
  const h = { ...headers }
  if (token) h.authorization = `JWT ${token}`
  const ws = new WebSocket(url.replace(/\/$/, '') + (p || '/'), { headers: h, origin })
  const client = new TestClient(ws)
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('unexpected-response', (_req, res) => {
      const err = new Error(`upgrade refused: HTTP ${res.statusCode}`)
      err.status = res.statusCode
      res.resume()
      reject(err)
    })
    ws.once('error', reject)
  })
  if (waitWelcome) client.welcome = await client.next((m) => m.type === 'welcome')
  return client
}

/** Expects the upgrade to be refused; returns the HTTP status. */
export async function refusedStatus(url, opts) {
  try {
    const c = await connect(url, opts)
    c.close()
  } catch (err) {
    if (err.status) return err.status
    throw err
  }
  assert.fail('upgrade was accepted')
}

class TestClient {
  constructor(ws) {
    this.ws = ws
    this.messages = []
    this.waiters = []
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    ws.on('message', (data) => {
      let msg
      try {
        msg = JSON.parse(data.toString())
      } catch {
        msg = { raw: data.toString() }
      }
      this.messages.push(msg)
      this.waiters = this.waiters.filter((w) => !w.offer())
    })
    ws.on('error', () => {})
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj))
  }

  /** Resolves with (and removes) the first message matching `pred` (a function or `{type}`-like object). */
  next(pred = () => true, ms = 3000) {
    const match = typeof pred === 'function' ? pred : (m) => Object.entries(pred).every(([k, v]) => m[k] === v)
    return new Promise((resolve, reject) => {
      const w = {
        offer: () => {
          const i = this.messages.findIndex(match)
          if (i < 0) return false
          clearTimeout(w.timer)
          resolve(this.messages.splice(i, 1)[0])
          return true
        },
      }
      if (w.offer()) return
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w)
        reject(new Error(`no matching message within ${ms} ms; got ${JSON.stringify(this.messages)}`))
      }, ms)
      this.waiters.push(w)
    })
  }

  /** Asserts no message matching `pred` arrives within `ms`. */
  async none(pred = () => true, ms = 300) {
    const match = typeof pred === 'function' ? pred : (m) => Object.entries(pred).every(([k, v]) => m[k] === v)
    await new Promise((r) => setTimeout(r, ms))
    const got = this.messages.filter(match)
    assert.deepEqual(got, [], `unexpected message(s): ${JSON.stringify(got)}`)
  }

  /** Sends a join/leave message and waits for its ack. */
  async join(msg) {
    this.send(msg)
    const ack = await this.next((m) => m.type === 'joined' || m.type === 'error')
    assert.equal(ack.type, 'joined', `join refused: ${JSON.stringify(ack)}`)
    return ack
  }

  joinCollection(collection) {
    return this.join({ type: 'join-collection', collection })
  }

  joinDoc(collection, id) {
    return this.join({ type: 'join-doc', collection, id: String(id) })
  }

  /** Sends `{type, id, data}` and resolves with the `reply` or `error` carrying that id. */
  request(type, data, ms = 3000) {
    const id = `r${++seq}`
    this.send({ type, id, data })
    return this.next((m) => (m.type === 'reply' || m.type === 'error') && m.id === id, ms)
  }

  /** Resolves with `{code, reason}` once closed, failing after `ms`. */
  async closedWithin(ms = 3000) {
    let t
    const timeout = new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`socket still open after ${ms} ms`)), ms)))
    try {
      return await Promise.race([this.closed, timeout])
    } finally {
      clearTimeout(t)
    }
  }

  close() {
    this.ws.close()
  }
}

/** Closes clients, ignoring ones already closed. */
export function closeAll(...clients) {
  for (const c of clients) c?.close()
}

/** JSON of `value` (a sent doc) never contains any of `keys` as a property, at any depth. */
export function assertNoKeys(value, keys) {
  const found = []
  const walk = (v, at) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${at}[${i}]`))
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (keys.includes(k)) found.push(`${at}.${k}`)
        walk(x, `${at}.${k}`)
      }
    }
  }
  walk(value, '$')
  assert.deepEqual(found, [], `secret keys leaked: ${found.join(', ')}`)
}
