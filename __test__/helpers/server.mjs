// Shared helpers for Node tests that need the native realtime server (through the plugin's manager,
// dist/plugin): start/stop it on loopback, find free ports, wait for conditions. Generic: no client
// SDK, no Payload. JWTs: signToken in ./ws.mjs.
import net from 'node:net'
import { getUWebSocketManager, initUWebSocket } from '../../dist/plugin/index.js'

/**
 * Starts the server on 127.0.0.1 (port 0 = any free port unless `options.port`). The manager is a
 * per-process singleton that ignores new options while running, so this refuses to start a second
 * one. Returns { manager, port, url(path = '/'), close() }; close() is idempotent.
 */
export async function startServer(options = {}) {
  const running = getUWebSocketManager()
  if (running) throw new Error(`startServer: a server already runs on port ${running.port}; close it first`)
  const manager = await initUWebSocket({ host: '127.0.0.1', port: 0, ...options })
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
