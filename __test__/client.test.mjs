// The client SDK against the real native server (built addon), with `ws` as the WebSocket in Node 20.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import WebSocket from 'ws'
import { createClient, RealtimeError } from '../dist/client/index.js'
import { freePort, sleep, startServer, waitFor } from './helpers/server.mjs'
import { JWT_KEY, signToken } from './helpers/ws.mjs'

const FAST = { initialDelayMs: 20, maxDelayMs: 200, factor: 2, jitter: 0 }

/** A client on `url` that records its states and errors; closed when the test ends. */
function connect(t, url, options = {}) {
  const client = createClient({ url, WebSocket, reconnect: FAST, ...options })
  const states = [client.state]
  const errors = []
  client.onStateChange((s) => states.push(s))
  client.onError((e) => errors.push(e))
  t.after(() => client.close())
  return { client, states, errors }
}

async function server(t, options) {
  const srv = await startServer(options)
  t.after(() => srv.close())
  return srv
}

const untilState = (client, state, timeoutMs = 5000) =>
  waitFor(() => client.state === state, { timeoutMs, message: `state '${state}' (is '${client.state}')` })

const members = (srv, room) => srv.manager.getLocalRoomMembers(room).length

function frames(client, type) {
  const list = []
  client.on(type, (f) => list.push(f))
  return list
}

test('collection and doc events arrive typed by room; unsubscribing leaves the room', async (t) => {
  const srv = await server(t)
  const { client } = connect(t, srv.url())
  const welcome = frames(client, 'welcome')
  await untilState(client, 'open')
  await waitFor(() => welcome.length === 1, { message: 'welcome' })
  assert.equal(client.socketId, welcome[0].socketId)
  assert.equal(client.user, null)

  const posts = []
  const doc42 = []
  const offPosts = client.onCollection('posts', (e) => posts.push(e))
  const offDoc = client.onDoc('posts', 42, (e) => doc42.push(e))
  await waitFor(() => members(srv, 'collection:posts') === 1 && members(srv, 'doc:posts:42') === 1, {
    message: 'joins',
  })

  srv.manager.emitEvent({ operation: 'create', collection: 'posts', id: 41, doc: { id: 41, title: 'a' } })
  srv.manager.emitEvent({ operation: 'update', collection: 'posts', id: 42, doc: { id: 42, title: 'b' } })
  srv.manager.emitEvent({ operation: 'delete', collection: 'posts', id: 42, doc: { id: 42, title: 'b' } })
  srv.manager.emitEvent({ operation: 'create', collection: 'pages', id: 1, doc: { id: 1 } })
  await waitFor(() => posts.length === 3 && doc42.length === 2, { message: 'events' })
  assert.deepEqual(
    posts.map((e) => [e.type, e.operation, e.collection, String(e.id), e.doc.title]),
    [
      ['update', 'create', 'posts', '41', 'a'],
      ['update', 'update', 'posts', '42', 'b'],
      ['delete', 'delete', 'posts', '42', 'b'],
    ],
  )
  assert.deepEqual(
    doc42.map((e) => e.operation),
    ['update', 'delete'],
  )

  offPosts()
  offPosts() // idempotent
  offDoc()
  await waitFor(() => members(srv, 'collection:posts') === 0 && members(srv, 'doc:posts:42') === 0, {
    message: 'leaves',
  })
  srv.manager.emitEvent({ operation: 'update', collection: 'posts', id: 42, doc: { id: 42 } })
  await sleep(100)
  assert.equal(posts.length, 3, 'no events after unsubscribe')
})

test('the room stays joined while any listener of it remains', async (t) => {
  const srv = await server(t)
  const { client } = connect(t, srv.url())
  const a = client.onCollection('posts', () => {})
  const b = client.onCollection('posts', () => {})
  await waitFor(() => members(srv, 'collection:posts') === 1, { message: 'join' })
  a()
  await sleep(100)
  assert.equal(members(srv, 'collection:posts'), 1)
  b()
  await waitFor(() => members(srv, 'collection:posts') === 0, { message: 'leave' })
})

test('join(room) follows the room policy: app messages arrive, refusals surface as errors', async (t) => {
  const srv = await server(t)
  srv.manager.setRoomPolicy({ canJoin: (_user, room) => room.endsWith('chat:ok') })
  const { client, errors } = connect(t, srv.url())
  const chat = frames(client, 'chat')
  client.join('chat:ok')
  client.join('chat:no')
  await waitFor(() => members(srv, 'room:chat:ok') === 1, { message: 'join-room' })
  await waitFor(() => errors.length === 1, { message: 'refusal' })
  assert.equal(errors[0].code, 'forbidden')
  assert.equal(members(srv, 'room:chat:no'), 0)

  srv.manager.broadcastToRoom('room:chat:ok', { type: 'chat', text: 'hi' })
  await waitFor(() => chat.length === 1, { message: 'chat message' })
  assert.deepEqual(chat[0], { type: 'chat', text: 'hi' })

  client.leave('chat:ok')
  await waitFor(() => members(srv, 'room:chat:ok') === 0, { message: 'leave-room' })
})

test('request() resolves with the custom handler reply and rejects with its error', async (t) => {
  const srv = await server(t)
  let seen = null
  srv.manager.registerCustomHandler('sum', (socket, data) => {
    seen = socket.id
    return { total: data.a + data.b }
  })
  srv.manager.registerCustomHandler('boom', () => {
    throw new Error('nope')
  })
  const { client } = connect(t, srv.url())
  const welcome = frames(client, 'welcome')
  assert.deepEqual(await client.request('sum', { a: 2, b: 3 }), { total: 5 })
  await waitFor(() => welcome.length === 1)
  assert.equal(seen, welcome[0].socketId)

  const err = await client.request('boom', {}).then(
    () => assert.fail('should reject'),
    (e) => e,
  )
  assert.ok(err instanceof RealtimeError)
  assert.equal(err.code, 'handler_failed')
  const unknown = await client.request('no-such-type').catch((e) => e)
  assert.equal(unknown.code, 'unknown_type')
})

test('request() times out when no reply comes, and the late answer is ignored', async (t) => {
  // The client gives up after 150 ms, the server's handler timeout is 1500 ms: the server's own
  // answer can only win if this process stalls for over a second, not on ordinary load.
  const handlerTimeoutMs = 1500
  const srv = await server(t, { handlerTimeoutMs })
  let calls = 0
  srv.manager.registerCustomHandler('slow', () => {
    calls++
    return new Promise(() => {})
  })
  const { client, errors } = connect(t, srv.url())
  const started = Date.now()
  const err = await client.request('slow', null, { timeoutMs: 150 }).catch((e) => e)
  const took = Date.now() - started
  assert.equal(err.code, 'timeout')
  // 10 ms below: timers may fire a little early against Date.now()'s rounding.
  assert.ok(took >= 140 && took < handlerTimeoutMs, `timed out after ${took} ms`)
  assert.equal(calls, 1)
  // The server's own handler_timeout error for that id comes later; it is not a connection error.
  const late = frames(client, 'error')
  await waitFor(() => late.length === 1, { message: 'server handler_timeout frame' })
  assert.equal(late[0].code, 'handler_timeout')
  assert.deepEqual(errors, [])
})

test('ping() measures a round trip', async (t) => {
  const srv = await server(t)
  const { client } = connect(t, srv.url())
  await assert.rejects(client.ping(), { code: 'not_open' })
  await untilState(client, 'open')
  const [a, b] = await Promise.all([client.ping(), client.ping()])
  for (const ms of [a, b]) assert.ok(typeof ms === 'number' && ms >= 0 && ms < 1000, `latency ${ms}`)
})

test('sends while disconnected are queued up to maxQueue, refused beyond, and delivered once', async (t) => {
  const port = await freePort()
  const { client, states } = connect(t, `ws://127.0.0.1:${port}/`, { maxQueue: 3 })
  await untilState(client, 'reconnecting')
  client.send('note', 1)
  client.send('note', 2)
  const reply = client.request('echo', 3) // third slot
  assert.throws(
    () => client.send('note', 4),
    (e) => e instanceof RealtimeError && e.code === 'queue_full',
  )
  await assert.rejects(client.request('echo', 5), { code: 'queue_full' })

  const notes = []
  const srv = await server(t, { port })
  srv.manager.registerCustomHandler('note', (_s, data) => void notes.push(data))
  srv.manager.registerCustomHandler('echo', (_s, data) => data)
  assert.equal(await reply, 3)
  await waitFor(() => notes.length === 2, { message: 'queued notes' })
  assert.ok(states.includes('open'))

  // A reconnect afterwards replays nothing.
  await srv.close()
  await untilState(client, 'reconnecting')
  const srv2 = await server(t, { port })
  const notes2 = []
  srv2.manager.registerCustomHandler('note', (_s, data) => void notes2.push(data))
  await untilState(client, 'open')
  client.send('note', 'after')
  await waitFor(() => notes2.length === 1, { message: 'fresh note' })
  await sleep(100)
  assert.deepEqual([...notes].sort(), [1, 2])
  assert.deepEqual(notes2, ['after'])
})

test('a request on the wire when the socket drops rejects with disconnected and is not re-sent', async (t) => {
  const srv = await server(t)
  let calls = 0
  srv.manager.registerCustomHandler('hang', () => {
    calls++
    return new Promise(() => {})
  })
  const { client } = connect(t, srv.url())
  await untilState(client, 'open')
  const outcome = client.request('hang', null, { timeoutMs: 5000 }).catch((e) => e)
  await waitFor(() => calls === 1, { message: 'handler call' })
  const port = srv.port
  await srv.close()
  const err = await outcome
  assert.equal(err.code, 'disconnected')
  assert.equal(err.closeCode, 1001)
  const srv2 = await server(t, { port })
  let calls2 = 0
  srv2.manager.registerCustomHandler('hang', () => void calls2++)
  await untilState(client, 'open')
  await sleep(150)
  assert.equal(calls2, 0)
})

test('reconnects after the server restarts on the same port and re-joins every room', async (t) => {
  const srv = await server(t)
  const port = srv.port
  srv.manager.setRoomPolicy({ canJoin: () => true })
  const { client, states } = connect(t, srv.url())
  const posts = []
  const doc = []
  const lobby = []
  client.onCollection('posts', (e) => posts.push(e))
  client.onDoc('posts', 7, (e) => doc.push(e))
  client.join('lobby')
  client.on('lobby-msg', (m) => lobby.push(m))
  const joined = frames(client, 'joined')
  await waitFor(() => joined.length === 3, { message: 'first joins' })
  const firstSocket = client.socketId

  await srv.close()
  await untilState(client, 'reconnecting')
  await sleep(100) // a few refused attempts while nothing listens
  const srv2 = await server(t, { port })
  srv2.manager.setRoomPolicy({ canJoin: () => true })
  await untilState(client, 'open')
  await waitFor(
    () =>
      members(srv2, 'collection:posts') === 1 &&
      members(srv2, 'doc:posts:7') === 1 &&
      members(srv2, 'room:lobby') === 1,
    { message: 're-joined rooms' },
  )
  await waitFor(() => joined.length === 6, { message: 'second joins' })
  assert.deepEqual(
    joined
      .slice(3)
      .map((f) => f.room)
      .sort(),
    ['collection:posts', 'doc:posts:7', 'room:lobby'],
  )
  assert.notEqual(client.socketId, firstSocket)

  srv2.manager.emitEvent({ operation: 'update', collection: 'posts', id: 7, doc: { id: 7, title: 'x' } })
  srv2.manager.broadcastToRoom('room:lobby', { type: 'lobby-msg', n: 1 })
  await waitFor(() => posts.length === 1 && doc.length === 1 && lobby.length === 1, {
    message: 'events after reconnect',
  })
  await sleep(100)
  assert.equal(joined.length, 6, 'each room joined exactly once per connection')
  const i = states.indexOf('reconnecting')
  assert.ok(i > 0 && states.indexOf('open', i) > i, `states ${states}`)
})

test('pacing keeps bursts under the server rate limit, also when a reconnect re-joins many rooms', async (t) => {
  // Margins from the configured values. The server counts frames in fixed windows by when it
  // reads them; the client paces by when it writes them (sliding window). Frames the server reads
  // within one window were written within windowMs plus the spread of their delays, so while that
  // spread stays under windowMs (300 ms of scheduling jitter here) at most twice the client's
  // pace can meet in one server window: the client paces at half the server's limit.
  const rateLimit = { messages: 20, windowMs: 300 }
  const paced = { messages: rateLimit.messages / 2, windowMs: rateLimit.windowMs }
  // Writing 30 frames at that pace takes 3 windows; the wait allows that plus the usual 5 s.
  const pacedWait = { timeoutMs: 3 * paced.windowMs + 5000 }
  const srv = await server(t, { rateLimit })
  const port = srv.port
  const notes = []
  srv.manager.registerCustomHandler('note', (_s, data) => void notes.push(data))
  const { client, errors } = connect(t, srv.url(), { rateLimit: paced })
  const joined = frames(client, 'joined')
  for (let id = 1; id <= 25; id++) client.onDoc('posts', id, () => {})
  for (let n = 1; n <= 5; n++) client.send('note', n)
  await waitFor(() => joined.length === 25 && notes.length === 5, {
    ...pacedWait,
    message: `joins (${joined.length}) and notes (${notes.length})`,
  })
  // Sorted: the server may run one socket's handlers out of order.
  assert.deepEqual([...notes].sort(), [1, 2, 3, 4, 5])

  await srv.close()
  await untilState(client, 'reconnecting')
  const srv2 = await server(t, { port, rateLimit })
  await waitFor(() => joined.length === 50, { ...pacedWait, message: `re-joins (${joined.length - 25})` })
  assert.equal(members(srv2, 'doc:posts:25'), 1)
  const stats = srv2.manager.getStats()
  assert.equal(stats.rateLimited, 0)
  assert.equal(stats.rateLimitCloses, 0)
  assert.deepEqual(errors, [])
  assert.equal(client.state, 'open')

  // The same burst unpaced is what the server punishes: past the limit a `rate_limited` warning,
  // past twice the limit close 4008 (the warning still arrives first: the close keeps the queue).
  // The burst is written in one go, but the server's window may restart while it reads it, splitting
  // it in two; 2 × (2 × limit + 1) frames put more than twice the limit on one side of any split.
  const burst = 2 * (2 * rateLimit.messages + 1)
  const raw = connect(t, srv2.url(), { rateLimit: false })
  for (let id = 1; id <= burst; id++) raw.client.onDoc('posts', id, () => {})
  await waitFor(() => srv2.manager.getStats().rateLimitCloses > 0, { message: 'unpaced client closed 4008' })
  await waitFor(() => raw.errors.some((e) => e.code === 'rate_limited'), { message: 'rate_limited error' })
  assert.ok(srv2.manager.getStats().rateLimited > 0)
})

test('close() stops for good and rejects what is pending', async (t) => {
  const srv = await server(t)
  let connects = 0
  srv.manager.use(() => void connects++)
  const { client, states } = connect(t, srv.url())
  await untilState(client, 'open')
  client.close()
  assert.equal(client.state, 'closed')
  assert.throws(() => client.send('x'), { code: 'closed' })
  await assert.rejects(client.request('x'), { code: 'closed' })
  await sleep(150)
  assert.equal(connects, 1)
  assert.equal(states.at(-1), 'closed')
})

test('close 4003 from middleware: state failed, forbidden error, no reconnection', async (t) => {
  const srv = await server(t)
  let connects = 0
  srv.manager.use(() => {
    connects++
    return false
  })
  const { client, errors } = connect(t, srv.url())
  await untilState(client, 'failed')
  assert.equal(errors.length, 1)
  assert.equal(errors[0].code, 'forbidden')
  assert.equal(errors[0].closeCode, 4003)
  await sleep(200)
  assert.equal(connects, 1)
  assert.equal(client.state, 'failed')
})

test('maxRetries bounds reconnection, then state failed with max_retries', async (t) => {
  const port = await freePort()
  const { client, errors } = connect(t, `ws://127.0.0.1:${port}/`, { reconnect: { ...FAST, maxRetries: 2 } })
  await untilState(client, 'failed')
  assert.deepEqual(
    errors.map((e) => e.code),
    ['max_retries'],
  )
})

// ------------------------------------------------------------------ credentials

/** A Payload-style user token (claims id, collection, email, exp). */
const userToken = (id, { key = JWT_KEY, ttlSeconds = 3600, ...claims } = {}) =>
  signToken({ id, collection: 'users', email: `u${id}@example.com`, ...claims }, { key, ttlSeconds })

async function authServer(t, options = {}) {
  const srv = await server(t, { requireAuth: true, jwtKey: JWT_KEY, ...options })
  srv.manager.registerCustomHandler('whoami', (socket) => socket.user)
  return srv
}

test('the token goes in the query; without getToken a refusal (401) fails the client', async (t) => {
  const srv = await authServer(t)
  const ok = connect(t, srv.url(), { token: userToken('7') })
  const me = await ok.client.request('whoami')
  assert.equal(String(me.id), '7')
  assert.equal(me.collection, 'users')

  const bad = connect(t, srv.url(), { token: userToken('7', { key: 'wrong-key' }) })
  await untilState(bad.client, 'failed')
  assert.deepEqual(
    bad.errors.map((e) => e.code),
    ['unauthorized'],
  )
})

test('a refused token makes the client ask getToken() again', async (t) => {
  const srv = await authServer(t)
  const tokens = [userToken('8', { key: 'wrong-key' }), userToken('8')]
  let calls = 0
  const { client } = connect(t, srv.url(), { getToken: async () => tokens[calls++] })
  const me = await client.request('whoami')
  assert.equal(String(me.id), '8')
  assert.equal(calls, 2)
})

test('refreshes the token on the live socket before exp, without reconnecting', async (t) => {
  const srv = await authServer(t)
  const first = userToken('9', { ttlSeconds: 3 })
  const firstExp = JSON.parse(Buffer.from(first.split('.')[1], 'base64url')).exp
  const fresh = []
  const { client, states } = connect(t, srv.url(), {
    token: first,
    getToken: () => {
      const tok = userToken('9')
      fresh.push(tok)
      return tok
    },
  })
  const authenticated = frames(client, 'authenticated')
  await untilState(client, 'open')
  const socketId = await waitFor(() => client.socketId, { message: 'welcome' })
  assert.equal((await client.request('whoami')).exp, firstExp)
  await waitFor(() => fresh.length === 1, { timeoutMs: 4000, message: 'refresh' })
  const newExp = JSON.parse(Buffer.from(fresh[0].split('.')[1], 'base64url')).exp
  await waitFor(() => authenticated.length === 1, { message: 'authenticated' })
  assert.equal(authenticated[0].exp, newExp, 'the server took the new token')
  // Past the first token's expiry the same socket is still serving.
  await waitFor(() => Date.now() > firstExp * 1000 + 1000, { timeoutMs: 6000, message: 'first exp' })
  assert.equal(String((await client.request('whoami')).id), '9')
  assert.equal(client.socketId, socketId)
  assert.deepEqual(states, ['connecting', 'open'])
  assert.equal(fresh.length, 1, 'a one-hour token is not refreshed again so soon')
})

test('close 4001 (credentials revoked) → getToken() → reconnect', async (t) => {
  const srv = await authServer(t)
  let calls = 0
  const { client, states } = connect(t, srv.url(), {
    getToken: () => {
      calls++
      return userToken('10', { n: calls })
    },
  })
  await untilState(client, 'open')
  const first = await waitFor(() => client.socketId, { message: 'welcome' })
  assert.equal(calls, 1)
  assert.equal(srv.manager.disconnectUser('10'), 1)
  await waitFor(() => client.state === 'open' && client.socketId && client.socketId !== first, {
    message: 'new socket',
  })
  assert.equal(calls, 2)
  assert.equal((await client.request('whoami')).n, 2, 'reconnected with the new token')
  assert.ok(states.includes('reconnecting'))
})

test('close 1008 (policy) fails without reconnecting', async (t) => {
  const srv = await server(t)
  let connects = 0
  srv.manager.use((socket) => {
    connects++
    socket.close(1008, 'policy')
  })
  const { client, errors } = connect(t, srv.url())
  await untilState(client, 'failed')
  assert.equal(errors[0].code, 'forbidden')
  assert.equal(errors[0].closeCode, 1008)
  await sleep(150)
  assert.equal(connects, 1)
})

test('without getToken an expiring token ends in close 4001 and state failed (unauthorized)', async (t) => {
  const srv = await authServer(t)
  const { client, errors, states } = connect(t, srv.url(), { token: userToken('11', { ttlSeconds: 2 }) })
  await untilState(client, 'open')
  await untilState(client, 'failed', 5000)
  assert.deepEqual(
    errors.map((e) => [e.code, e.closeCode]),
    [['unauthorized', 4001]],
  )
  assert.deepEqual(states, ['connecting', 'open', 'failed'])
})

test("a refresh with another user's token is refused (auth_failed) and the socket keeps its user", async (t) => {
  const srv = await authServer(t)
  const { client, errors } = connect(t, srv.url(), {
    token: userToken('12'),
    getToken: () => userToken('13'),
  })
  await untilState(client, 'open')
  await client.refreshToken()
  await waitFor(() => errors.length === 1, { message: 'auth_failed' })
  assert.equal(errors[0].code, 'auth_failed')
  assert.equal(String((await client.request('whoami')).id), '12')
  assert.equal(client.state, 'open')
})
