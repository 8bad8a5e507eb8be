// What every Node server of the benchmark shares: configuration from the generator, JWT
// verification, the event document, the authorize policy, the app protocol's dispatch and the
// control channel (stdin commands, `@bench {json}` lines on stdout). See crates/bench/src/server.rs.

const crypto = require('node:crypto')
const readline = require('node:readline')
const { monitorEventLoopDelay, performance } = require('node:perf_hooks')

const PORT = Number(process.env.PORT || 3002)
const MODE = process.env.BENCH_MODE || 'app' // 'app' | 'echo'
// 'half': an authorize callback allows even user ids; 'access' (ours only): the plugin's default
// read check (an owner-based Where per user, evaluated in memory), allowing the same half.
const AUTHORIZE = process.env.BENCH_AUTHORIZE === 'half' || process.env.BENCH_AUTHORIZE === 'access'
const ACCESS = process.env.BENCH_AUTHORIZE === 'access'
const JWT_KEY = process.env.BENCH_JWT_KEY || ''
// Instances behind Redis (--instances K): this one's events are numbered START, START+STEP, …
const SEQ_START = Number(process.env.BENCH_SEQ_START || 0)
const SEQ_STEP = Number(process.env.BENCH_SEQ_STEP || 1)
const REDIS_URL = process.env.BENCH_REDIS_URL || ''
const ROOM = 'collection:posts'

// --- JWT (HS256, Payload's claims), checked once at upgrade ---------------------------------
const HS256_HEADER_OK = new Set()

/** Claims of a valid, unexpired HS256 token in `Authorization: Bearer|JWT …`, else null. */
function verifyJwt(authorization) {
  if (typeof authorization !== 'string') return null
  const sp = authorization.indexOf(' ')
  const token = sp > 0 ? authorization.slice(sp + 1) : authorization
  const d1 = token.indexOf('.')
  const d2 = token.indexOf('.', d1 + 1)
  if (d1 < 0 || d2 < 0) return null
  const head = token.slice(0, d1)
  if (!HS256_HEADER_OK.has(head)) {
    try {
      if (JSON.parse(Buffer.from(head, 'base64url')).alg !== 'HS256') return null
    } catch {
      return null
    }
    HS256_HEADER_OK.add(head)
  }
  const want = crypto.createHmac('sha256', JWT_KEY).update(token.slice(0, d2)).digest()
  const got = Buffer.from(token.slice(d2 + 1), 'base64url')
  if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) return null
  let claims
  try {
    claims = JSON.parse(Buffer.from(token.slice(d1 + 1, d2), 'base64url'))
  } catch {
    return null
  }
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) return null
  return claims
}

// --- events ----------------------------------------------------------------------------------
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000)
// BENCH_EVENT_PAD=N makes every event N bytes longer (to compare framings at equal frame sizes:
// Socket.IO's `42["update",…]` adds 13 bytes to ours).
const EXCERPT = `Pads the document to about 300 bytes.${'x'.repeat(Number(process.env.BENCH_EVENT_PAD || 0))}`

/** An afterChange event as the Payload plugin hands it over; `_seq`/`_ts` feed the generator. */
function makeEvent(seq) {
  const at = new Date().toISOString()
  return {
    operation: 'create',
    collection: 'posts',
    id: String(seq),
    doc: {
      id: String(seq),
      title: `Benchmark post ${seq}`,
      slug: `benchmark-post-${seq}`,
      status: 'published',
      author: { id: '7', name: 'Bench Author' },
      // fanout-access: owned by user 0 and shared with the even group (read by even ids only).
      ...(ACCESS ? { owner: '0', sharedWith: 'even' } : {}),
      excerpt: EXCERPT,
      createdAt: at,
      updatedAt: at,
      _seq: seq,
      _ts: nowUs(),
    },
  }
}

/** The wire message every peer sends for an event (our server builds the same natively). */
const eventMessage = (e) => ({
  type: 'update',
  operation: e.operation,
  collection: e.collection,
  id: e.id,
  doc: e.doc,
})

/** The benchmark's authorize callback: one call per event, users with an even id may see it. */
const authorizeHalf = (users) => users.map((u) => Number(u?.id) % 2 === 0)

// --- rooms kept in JS (ws; uWS when authorizing: its topics cannot be filtered per socket) ----
class Rooms {
  constructor() {
    this.rooms = new Map() // room -> Map(socket -> user)
  }
  join(room, socket, user) {
    let m = this.rooms.get(room)
    if (!m) this.rooms.set(room, (m = new Map()))
    m.set(socket, user)
  }
  leave(room, socket) {
    const m = this.rooms.get(room)
    if (m?.delete(socket) && m.size === 0) this.rooms.delete(room)
  }
  /** The sockets of `room` that may see `event`: one authorize call per event when enabled. */
  recipients(room, event) {
    const m = this.rooms.get(room)
    if (!m) return []
    if (!AUTHORIZE) return m.keys()
    const sockets = [...m.keys()]
    const ok = authorizeHalf([...m.values()], event)
    return sockets.filter((_, i) => ok[i])
  }
}

// --- app protocol (what our core does natively; the peers do it in JS) ---------------------
const handlers = { echo: (_socket, data) => data }

/**
 * Handles one parsed client message. `s` is the peer's socket adapter:
 * { send(obj), join(room), leave(room) }.
 */
function dispatch(s, msg) {
  if (!msg || typeof msg.type !== 'string')
    return s.send({ type: 'error', code: 'bad_json', message: 'bad message' })
  switch (msg.type) {
    case 'join-collection': {
      const room = `collection:${msg.collection}`
      s.join(room)
      return s.send({ type: 'joined', room })
    }
    case 'leave-collection': {
      const room = `collection:${msg.collection}`
      s.leave(room)
      return s.send({ type: 'left', room })
    }
    case 'ping':
      return s.send({ type: 'pong' })
    default: {
      const h = handlers[msg.type]
      if (!h) return s.send({ type: 'error', code: 'unknown_type', message: msg.type })
      const reply = (data) => msg.id !== undefined && s.send({ type: 'reply', id: msg.id, data })
      const fail = (e) => s.send({ type: 'error', id: msg.id, code: 'handler_failed', message: String(e) })
      try {
        const r = h(s, msg.data, msg)
        if (r && typeof r.then === 'function') r.then(reply, fail)
        else reply(r)
      } catch (e) {
        fail(e)
      }
    }
  }
}

/** Parses a text frame and dispatches it (uWS, ws). */
function dispatchText(s, data) {
  let msg
  try {
    msg = JSON.parse(typeof data === 'string' ? data : Buffer.from(data).toString('utf8'))
  } catch {
    return s.send({ type: 'error', code: 'bad_json', message: 'invalid JSON' })
  }
  dispatch(s, msg)
}

// --- control channel -------------------------------------------------------------------------
const ELD_RESOLUTION_MS = 1
const out = (obj) => process.stdout.write(`@bench ${JSON.stringify(obj)}\n`)

/**
 * Reports ready and serves the generator's commands. `emit(event)` publishes one event to
 * collection:posts (fanout scenarios). Exits when stdin closes.
 */
function control(emit) {
  const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS })
  eld.enable()
  let seq = SEQ_START
  let emitted = 0
  // Delay beyond the sampling period, µs.
  const q = (p) => Math.max(0, Math.round(eld.percentile(p) / 1000 - ELD_RESOLUTION_MS * 1000))
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    const c = JSON.parse(line)
    switch (c.cmd) {
      case 'start':
        eld.reset()
        return out({ ok: true })
      case 'credit':
        for (let i = 0; i < c.n; i++, seq += SEQ_STEP, emitted++) emit(makeEvent(seq))
        return
      case 'stop':
        return out({ emitted, eld_p50_us: q(50), eld_p99_us: q(99), eld_max_us: Math.round(eld.max / 1000) })
    }
  })
  rl.on('close', () => process.exit(0))
  out({ ready: true })
}

module.exports = {
  PORT,
  MODE,
  AUTHORIZE,
  ACCESS,
  JWT_KEY,
  REDIS_URL,
  ROOM,
  verifyJwt,
  makeEvent,
  eventMessage,
  authorizeHalf,
  Rooms,
  dispatch,
  dispatchText,
  control,
}
