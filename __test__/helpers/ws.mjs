// Shared helpers of the Node tests: a WebSocket test client (the `ws` package) with a message
// queue, and Payload-style JWT signing. One place, imported by every suite (payload.mjs adds
// booting a real Payload on top of it).
import { createHmac } from 'node:crypto'
import WebSocket from 'ws'

export const JWT_KEY = '0123456789abcdef0123456789abcdef'

/** `type` filter of next/expectNothing: a message type, a predicate, or nothing (any message). */
const matches = (type, msg) => !type || (typeof type === 'function' ? type(msg) : msg?.type === type)

const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url')

/** HS256 token like Payload's: header {alg, typ, authVersion: 1}, claims with exp in seconds. */
export function signToken(
  claims,
  { key = JWT_KEY, ttlSeconds = 60, header = { alg: 'HS256', typ: 'JWT', authVersion: 1 } } = {},
) {
  const body = { exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...claims }
  const input = `${b64(header)}.${b64(body)}`
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`
}

/** A connected client; `next()` yields messages in order, `expectClose()` the close code. */
export class TestClient {
  constructor(ws) {
    this.ws = ws
    this.queue = []
    this.waiters = []
    this.closed = null
    ws.on('message', (data, isBinary) => {
      const msg = isBinary ? data : JSON.parse(data.toString())
      const w = this.waiters.shift()
      if (w) w.resolve(msg)
      else this.queue.push(msg)
    })
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() }
      for (const w of this.waiters.splice(0)) w.reject(Object.assign(new Error(`closed ${code}`), { code }))
    })
  }

  static connect(url, opts = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, opts.protocols, { headers: opts.headers, origin: opts.origin })
      const client = new TestClient(ws)
      ws.once('open', () => resolve(client))
      ws.once('unexpected-response', (_req, res) =>
        reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })),
      )
      ws.once('error', reject)
    })
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj))
  }

  /** Next message (optionally the next of `type` or matching a predicate, skipping others) within `timeoutMs`. */
  async next(type, timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const msg = await this.#one(deadline - Date.now())
      if (matches(type, msg)) return msg
    }
  }

  #one(ms) {
    if (this.queue.length) return Promise.resolve(this.queue.shift())
    if (this.closed)
      return Promise.reject(Object.assign(new Error(`closed ${this.closed.code}`), this.closed))
    return new Promise((resolve, reject) => {
      const w = { resolve, reject }
      const t = setTimeout(
        () => {
          this.waiters.splice(this.waiters.indexOf(w), 1)
          reject(new Error(`no message within ${ms} ms`))
        },
        Math.max(ms, 0),
      )
      w.resolve = (m) => (clearTimeout(t), resolve(m))
      w.reject = (e) => (clearTimeout(t), reject(e))
      this.waiters.push(w)
    })
  }

  /** Resolves with nothing if no message (of `type`) arrives within `ms`; throws otherwise. */
  async expectNothing(ms = 200, type) {
    const deadline = Date.now() + ms
    for (;;) {
      let msg
      try {
        msg = await this.#one(deadline - Date.now())
      } catch {
        return
      }
      if (matches(type, msg)) throw new Error(`expected no message, got ${JSON.stringify(msg)}`)
    }
  }

  /** Resolves with the close code. */
  expectClose(timeoutMs = 5000) {
    if (this.closed) return Promise.resolve(this.closed.code)
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('socket not closed in time')), timeoutMs)
      this.ws.once('close', (code) => (clearTimeout(t), resolve(code)))
    })
  }

  /** Sends join-collection and waits for the ack. */
  async joinCollection(slug) {
    this.send({ type: 'join-collection', collection: slug })
    const ack = await this.next('joined')
    if (ack.room !== `collection:${slug}`) throw new Error(`joined ${ack.room}`)
  }

  /** Sends a join message (`join-doc`, `join-room`, …) and returns its ack; throws on an error reply. */
  async join(msg) {
    this.send(msg)
    const ack = await this.next((m) => m.type === 'joined' || m.type === 'error')
    if (ack.type !== 'joined') throw new Error(`join refused: ${JSON.stringify(ack)}`)
    return ack
  }

  /** Sends `{type, id, data}` and resolves with the `reply` or `error` carrying that id. */
  request(type, data, timeoutMs = 3000) {
    const id = `r${++requests}`
    this.send({ type, id, data })
    return this.next((m) => (m.type === 'reply' || m.type === 'error') && m.id === id, timeoutMs)
  }

  close() {
    this.ws.close()
  }
}

let requests = 0
