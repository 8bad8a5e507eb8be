// Shared helpers for tests that use the real socket.io-client against the server's Socket.IO
// endpoint (WebSocket transport only, as documented).
import { io } from 'socket.io-client'

/** Connects with `transports: ['websocket']`; resolves on `connect`, rejects on `connect_error` (5 s bound). */
export function connectSocketIo(port, opts = {}) {
  const socket = io(`http://127.0.0.1:${port}`, {
    transports: ['websocket'],
    reconnection: false,
    timeout: 5000,
    ...opts,
  })
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => (socket.close(), reject(new Error('no connect within 5 s'))), 5000)
    socket.once('connect', () => (clearTimeout(t), resolve(socket)))
    socket.once('connect_error', (err) => (clearTimeout(t), socket.close(), reject(err)))
  })
}

/** The next `event` on `socket` (its first argument), or a rejection after `timeoutMs`. */
export function nextEvent(socket, event, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      socket.off(event, on)
      reject(new Error(`no ${event} within ${timeoutMs} ms`))
    }, timeoutMs)
    const on = (arg) => {
      clearTimeout(t)
      resolve(arg)
    }
    socket.once(event, on)
  })
}

/** Resolves if no `event` comes within `ms`; rejects with it otherwise. */
export function expectNoEvent(socket, event, ms = 200) {
  return new Promise((resolve, reject) => {
    const on = (arg) => {
      clearTimeout(t)
      reject(new Error(`unexpected ${event}: ${JSON.stringify(arg)}`))
    }
    const t = setTimeout(() => (socket.off(event, on), resolve()), ms)
    socket.once(event, on)
  })
}
