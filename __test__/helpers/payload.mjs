// Payload side of the shared test helpers: boots a real Payload 3 (SQLite in a temp dir) with
// the plugin, creates users with real logins, connects clients (TestClient from ws.mjs).
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { buildConfig, getPayload } from 'payload'
import { getUWebSocketManager, initUWebSocket, payloadJwtKey, uWebSocketPlugin } from 'payload-realtime-rs'
import { signToken, TestClient } from './ws.mjs'

export { TestClient }
process.env.DISABLE_PAYLOAD_HMR = 'true'
process.env.PAYLOAD_TELEMETRY_DISABLED = 'true' // belt and braces next to `telemetry: false`
// Payload skips the dev schema push when the schema equals the previous one in this process;
// every test Payload has a fresh database file, so always push.
process.env.PAYLOAD_FORCE_DRIZZLE_PUSH = 'true'

export const SECRET = 'realtime-test-secret-0123456789'
export const PASSWORD = 'correct horse battery'
export { getUWebSocketManager, initUWebSocket, uWebSocketPlugin }

let seq = 0

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
 * Returns `{ payload, manager, url, client, stop }`; `stop()` closes clients, the manager and Payload.
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
  const payload = await withoutSchemaSpinner(() => getPayload({ config, key: `test-${process.pid}-${++seq}` }))
  let manager = getUWebSocketManager()
  if (startServer === 'manual') manager = await initUWebSocket({ port: 0, host: '127.0.0.1' })
  const url = manager ? `ws://127.0.0.1:${manager.port}/` : null
  const clients = []
  /** `connect(url, opts)` to this app's server; `stop()` closes the client. */
  const client = async (opts) => {
    const c = await connect(url, opts)
    clients.push(c)
    return c
  }
  const stop = async () => {
    for (const c of clients) c.close()
    await getUWebSocketManager()?.close()
    await payload.destroy()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { payload, manager, url, client, stop }
}

/**
 * Runs `fn` while dropping drizzle-kit's "Pulling schema" spinner from stdout: Node 20's test
 * runner reads each test file's stdout as its message channel, and the spinner's raw terminal
 * writes can corrupt it ("Unable to deserialize cloned data").
 */
async function withoutSchemaSpinner(fn) {
  const write = process.stdout.write
  process.stdout.write = function (chunk, ...rest) {
    if (typeof chunk === 'string' && chunk.includes('Pulling schema')) {
      const cb = rest.find((a) => typeof a === 'function')
      if (cb) process.nextTick(cb)
      return true
    }
    return write.call(this, chunk, ...rest)
  }
  try {
    return await fn()
  } finally {
    process.stdout.write = write
  }
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

/** Signs a JWT exactly as Payload does (its header key order), with the key derived from `secret`. */
export function signJwt(claims, secret = SECRET) {
  return signToken(claims, { key: payloadJwtKey(secret), header: { alg: 'HS256', authVersion: 1, typ: 'JWT' } })
}

/**
 * Opens a WebSocket and waits for `welcome` (kept as `client.welcome`). Options: `token` (sent as
 * `Authorization: JWT …`), `headers`, `origin`, `path` (with query). Rejects with `err.status`
 * when the upgrade is refused.
 */
export async function connect(url, { token, headers = {}, origin, path: p = '/', waitWelcome = true } = {}) {
  const h = { ...headers }
  if (token) h.authorization = `JWT ${token}`
  const client = await TestClient.connect(url.replace(/\/$/, '') + p, { headers: h, origin })
  if (waitWelcome) client.welcome = await client.next('welcome')
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
