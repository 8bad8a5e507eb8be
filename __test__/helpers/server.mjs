// Shared helpers for Node tests that need the native realtime server: start/stop it on loopback,
// find free ports, sign Payload-style JWTs, wait for conditions. Generic: no client SDK, no Payload.
import { createHash, createHmac } from 'node:crypto'
import { createRequire } from 'node:module'
import net from 'node:net'

const require = createRequire(import.meta.url)

/** The napi addon built by `npx napi build --platform --release` (root index.js). */
export function loadNative() {
  return require('../../index.js')
}

/**
 * Starts the native server on 127.0.0.1 (port 0 = any free port unless `options.port`).
 * Returns { manager, port, url(path = '/') , close() }; close() is idempotent.
 */
export async function startServer(options = {}) {
  const native = loadNative()
  const manager = await native.initUWebSocket({ host: '127.0.0.1', port: 0, ...options })
  const port = manager.port
  let closed = false
  return {
    manager,
    port,
    url: (path = '/') => `ws://127.0.0.1:${port}${path}`,
    async close() {
      if (closed) return
      closed = true
      await manager.close()
    },
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it when this returns). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** Payload's JWT key for a config `secret`: sha256(secret) as hex, first 32 characters. */
export function payloadJwtKey(secret) {
  return createHash('sha256').update(secret).digest('hex').slice(0, 32)
}

const b64url = (buf) => Buffer.from(buf).toString('base64url')

/**
 * Signs an HS256 JWT. `claims` defaults: id '1', collection 'users', email 'u1@example.com',
 * exp in one hour; `expiresInS` sets exp relative to now. `header` extends {alg:'HS256',typ:'JWT'}.
 */
export function signJwt(key, claims = {}, { expiresInS = 3600, header = {} } = {}) {
  const body = {
    id: '1',
    collection: 'users',
    email: 'u1@example.com',
    exp: Math.floor(Date.now() / 1000) + expiresInS,
    ...claims,
  }
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', ...header }))}.${b64url(JSON.stringify(body))}`
  const sig = createHmac('sha256', key).update(input).digest('base64url')
  return `${input}.${sig}`
}

/** Polls `predicate` (sync or async) until truthy; returns its value or throws after timeoutMs. */
export async function waitFor(predicate, { timeoutMs = 5000, intervalMs = 10, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}`)
    await sleep(intervalMs)
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
