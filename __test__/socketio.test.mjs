// The core's Socket.IO endpoint with the real socket.io-client (WebSocket transport): open,
// namespace connect, auth (token in `auth` or query), rooms, events, acks, errors, ping/pong,
// long-polling refused, binary attachments refused, delivery to native and Socket.IO sockets alike.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { io } from 'socket.io-client'
import WebSocket from 'ws'

import { startServer, waitFor } from './helpers/server.mjs'
import { connectSocketIo, nextEvent } from './helpers/socketio.mjs'
import { JWT_KEY, signToken, TestClient } from './helpers/ws.mjs'

let srv
before(async () => {
  // heartbeatMs short so the Engine.IO ping/pong is exercised within the test.
  srv = await startServer({ jwtKey: JWT_KEY, handlerTimeoutMs: 1000, heartbeatMs: 300, pongTimeoutMs: 1000 })
  srv.manager.registerCustomHandler('echo', (_socket, data) => ({ echoed: data }))
  srv.manager.registerCustomHandler('boom', () => {
    throw new Error('nope')
  })
  srv.manager.registerCustomHandler('whoami', (socket) => socket.user)
  // Answers after a turn of the event loop, as a policy that looks something up would.
  srv.manager.setRoomPolicy({
    canJoin: async (_user, name) => {
      await null
      // `slow:` rooms are allowed after 150 ms: answers to later requests come first.
      if (name.startsWith('slow:')) await new Promise((resolve) => setTimeout(resolve, 150))
      return name.startsWith('open:') || name.startsWith('slow:')
    },
  })
})
after(() => srv.close())

test('connects, joins a collection and receives events as Socket.IO events', async () => {
  const s = await connectSocketIo(srv.port)
  try {
    assert.ok(s.id, 'CONNECT answered with a sid')
    s.emit('join-collection', 'posts')
    assert.deepEqual(await nextEvent(s, 'joined'), { type: 'joined', room: 'collection:posts' })
    srv.manager.emitEvent({ operation: 'create', collection: 'posts', id: 1, doc: { id: 1, title: 'A' } })
    assert.deepEqual(await nextEvent(s, 'update'), {
      type: 'update',
      operation: 'create',
      collection: 'posts',
      id: 1,
      doc: { id: 1, title: 'A' },
    })
  } finally {
    s.close()
  }
})

test('acks carry handler replies and errors', async () => {
  const s = await connectSocketIo(srv.port)
  try {
    assert.deepEqual(await s.timeout(2000).emitWithAck('echo', { a: 1 }), { echoed: { a: 1 } })
    const failed = await s.timeout(2000).emitWithAck('boom', 1)
    assert.equal(failed.error.code, 'handler_failed')
    const unknown = await s.timeout(2000).emitWithAck('nosuch', 1)
    assert.equal(unknown.error.code, 'unknown_type')
  } finally {
    s.close()
  }
})

test("a join's or leave's ack callback gets its answer (joined, left, or the refusal)", async () => {
  const s = await connectSocketIo(srv.port)
  try {
    assert.deepEqual(await s.timeout(2000).emitWithAck('join', 'collection:posts'), {
      type: 'joined',
      room: 'collection:posts',
    })
    // A list of slugs is acked once, on its last answer.
    assert.deepEqual(await s.timeout(2000).emitWithAck('join-collection', ['a', 'b']), {
      type: 'joined',
      room: 'collection:b',
    })
    assert.deepEqual(await s.timeout(2000).emitWithAck('leave', 'collection:posts'), {
      type: 'left',
      room: 'collection:posts',
    })
    // The room policy (an async JS hook) refuses `chat:1`: the ack says so.
    const refused = await s.timeout(2000).emitWithAck('join', 'chat:1')
    assert.equal(refused.error.code, 'forbidden')
    // While the policy decides, an unrelated error (no handler) does not take the join's ack.
    const joining = s.timeout(2000).emitWithAck('join', 'open:1')
    s.emit('nosuch', 1)
    assert.deepEqual(await joining, { type: 'joined', room: 'room:open:1' })
    // Acks of other events are not taken by joins.
    assert.deepEqual(await s.timeout(2000).emitWithAck('echo', 9), { echoed: 9 })
  } finally {
    s.close()
  }
})

test("each join's or leave's ack gets its own request's answer, whatever comes in between", async () => {
  const s = await connectSocketIo(srv.port)
  try {
    // A join whose room policy answers late, then a join answered at once: each ack its own.
    const slow = s.timeout(2000).emitWithAck('join', 'slow:1')
    const fast = s.timeout(2000).emitWithAck('join-collection', 'posts')
    assert.deepEqual(await fast, { type: 'joined', room: 'collection:posts' })
    assert.deepEqual(await slow, { type: 'joined', room: 'room:slow:1' })
    // A refusal of another message without an id (a malformed native message) while a join
    // waits for its policy is not that join's answer.
    const waiting = s.timeout(2000).emitWithAck('join', 'slow:2')
    s.emit('message', { type: 5 })
    assert.deepEqual(await waiting, { type: 'joined', room: 'room:slow:2' })
    // A join refused before it reaches the rooms (no room name) gets its refusal; the next
    // join gets its own answer.
    const bad = s.timeout(2000).emitWithAck('join', 5)
    const good = s.timeout(2000).emitWithAck('leave-collection', 'posts')
    assert.equal((await bad).error.code, 'bad_message')
    assert.deepEqual(await good, { type: 'left', room: 'collection:posts' })
  } finally {
    s.close()
  }
})

test('a leave right after a join awaiting the room policy applies after it', async () => {
  const s = await connectSocketIo(srv.port)
  try {
    // The policy answers `slow:` rooms after 150 ms; the leave is sent at once behind the join.
    const order = []
    const joined = s.timeout(2000).emitWithAck('join', 'slow:order')
    const left = s.timeout(2000).emitWithAck('leave', 'slow:order')
    joined.then(() => order.push('joined'))
    left.then(() => order.push('left'))
    assert.deepEqual(await joined, { type: 'joined', room: 'room:slow:order' })
    assert.deepEqual(await left, { type: 'left', room: 'room:slow:order' })
    assert.deepEqual(order, ['joined', 'left'])
    assert.deepEqual(srv.manager.getLocalRoomMembers('room:slow:order'), [])
  } finally {
    s.close()
  }
})

test('an event dropped by the rate limit has its ack answered with the refusal', async () => {
  const s = await connectSocketIo(srv.port)
  try {
    // Default rateLimit: 100 per 1000 ms; 120 in a burst exceed it (under the 200 that close).
    const answers = await Promise.all(
      Array.from({ length: 120 }, (_, i) => s.timeout(3000).emitWithAck('echo', i)),
    )
    assert.deepEqual(answers[0], { echoed: 0 })
    assert.equal(answers.at(-1).error.code, 'rate_limited')
  } finally {
    s.close()
  }
})

test('auth.token authenticates at CONNECT; a bad one is a connect_error', async () => {
  const token = signToken({ id: 7, collection: 'users' })
  const s = await connectSocketIo(srv.port, { auth: { token } })
  try {
    const me = await s.timeout(2000).emitWithAck('whoami', null)
    assert.equal(me.id, 7)
  } finally {
    s.close()
  }
  await assert.rejects(connectSocketIo(srv.port, { auth: { token: 'a.b.c' } }), /invalid token/)
  const q = await connectSocketIo(srv.port, { query: { token } })
  try {
    assert.equal((await q.timeout(2000).emitWithAck('whoami', null)).id, 7)
  } finally {
    q.close()
  }
})

test('a native client and a Socket.IO client in one room get the same broadcast', async () => {
  const s = await connectSocketIo(srv.port)
  const n = await TestClient.connect(srv.url('/'))
  try {
    await n.next('welcome')
    for (const id of srv.manager.socketIds()) srv.manager.native.join(id, 'room:x')
    srv.manager.broadcastToRoom('room:x', { type: 'chat', text: 'hi' })
    assert.deepEqual(await nextEvent(s, 'chat'), { type: 'chat', text: 'hi' })
    assert.deepEqual(await n.next('chat'), { type: 'chat', text: 'hi' })
    srv.manager.broadcast({ type: 'all', n: 1 })
    assert.deepEqual(await nextEvent(s, 'all'), { type: 'all', n: 1 })
    assert.deepEqual(await n.next('all'), { type: 'all', n: 1 })
    // Text that is not one of our messages arrives as the event `message`.
    // The Socket.IO sid is the server's socket id.
    assert.ok(srv.manager.sendToSocket(s.id, 'plain text'))
    assert.equal(await nextEvent(s, 'message'), 'plain text')
    assert.ok(srv.manager.sendToSocket(s.id, Buffer.from([9, 8])))
    assert.deepEqual([...new Uint8Array(await nextEvent(s, 'message'))], [9, 8])
  } finally {
    s.close()
    n.close()
  }
})

test('broadcasts back to back reach Socket.IO and native members alike, in order, skips included', async () => {
  const s = await connectSocketIo(srv.port)
  const n = await TestClient.connect(srv.url('/'))
  try {
    await n.next('welcome')
    for (const id of srv.manager.socketIds()) srv.manager.native.join(id, 'room:run')
    const got = []
    s.on('seq', (m) => got.push(m.i ?? m))
    // Sent together, so one fan-out pass may deliver them as one run (each member visited once,
    // the Socket.IO member with the run translated once); the 4th skips the Socket.IO socket.
    for (let i = 1; i <= 3; i++) srv.manager.broadcastToRoom('room:run', { type: 'seq', i })
    srv.manager.broadcastToRoom('room:run', { i: 4 }, 'seq', s.id)
    srv.manager.broadcastToRoom('room:run', { type: 'seq', i: 5 })
    const native = []
    for (let k = 0; k < 5; k++) {
      const m = await n.next('seq')
      native.push(m.i ?? m.data.i)
    }
    assert.deepEqual(native, [1, 2, 3, 4, 5])
    await waitFor(() => got.length >= 4, { message: 'Socket.IO events' })
    assert.deepEqual(got, [1, 2, 3, 5])
  } finally {
    s.close()
    n.close()
  }
})

test('Engine.IO heartbeats keep the socket open past several intervals', async () => {
  const s = await connectSocketIo(srv.port)
  try {
    let pings = 0
    s.io.engine.on('ping', () => pings++)
    // 4 heartbeat intervals (heartbeatMs 300): the client must have answered pings and stayed.
    await new Promise((r) => setTimeout(r, 1200))
    assert.ok(pings >= 2, `pings seen: ${pings}`)
    assert.ok(s.connected)
  } finally {
    s.close()
  }
})

test('long-polling is refused with a clear error', async () => {
  const res = await fetch(`http://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=polling`)
  assert.equal(res.status, 400)
  assert.match((await res.json()).message, /transports: \['websocket'\]/)
  const s = io(`http://127.0.0.1:${srv.port}`, { transports: ['polling'], reconnection: false })
  try {
    const err = await nextEvent(s, 'connect_error')
    assert.ok(err instanceof Error)
  } finally {
    s.close()
  }
})

test('binary attachments are refused with an error event', async () => {
  const s = await connectSocketIo(srv.port)
  try {
    s.emit('upload', Buffer.from([1, 2, 3]))
    const e = await nextEvent(s, 'error')
    assert.equal(e.code, 'binary_unsupported')
    // The socket stays usable.
    assert.deepEqual(await s.timeout(2000).emitWithAck('echo', 2), { echoed: 2 })
  } finally {
    s.close()
  }
})

test('another namespace is refused', async () => {
  const s = io(`http://127.0.0.1:${srv.port}/admin`, { transports: ['websocket'], reconnection: false })
  try {
    const err = await nextEvent(s, 'connect_error')
    assert.match(err.message, /Invalid namespace/)
  } finally {
    s.close()
  }
})

test("emit('message', {type, …}) speaks our own protocol as it is", async () => {
  const s = await connectSocketIo(srv.port)
  try {
    s.emit('message', { type: 'join-collection', collection: 'notes' })
    assert.deepEqual(await nextEvent(s, 'joined'), { type: 'joined', room: 'collection:notes' })
    s.emit('message', { type: 'echo', id: 'r1', data: 3 })
    assert.deepEqual(await nextEvent(s, 'reply'), { type: 'reply', id: 'r1', data: { echoed: 3 } })
  } finally {
    s.close()
  }
})

test('every Socket.IO packet counts against the rate limit, Engine.IO pings included', async () => {
  // Raw frames: socket.io-client never sends Engine.IO pings itself (v4 servers ping), so a
  // hostile client is played with \`ws\`.
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`)
  const frames = []
  ws.on('message', (d) => frames.push(d.toString()))
  try {
    await waitFor(() => frames.some((f) => f.startsWith('0{')), { message: 'open packet' })
    ws.send('40')
    await waitFor(() => frames.some((f) => f.startsWith('40{')), { message: 'CONNECT answered' })
    // Default rateLimit: 100 per 1000 ms; 150 in a burst exceed it (under the 200 that close).
    for (let i = 0; i < 150; i++) ws.send('2')
    await waitFor(() => frames.some((f) => f.startsWith('42["error"') && f.includes('rate_limited')), {
      message: 'rate_limited error event',
    })
  } finally {
    ws.close()
  }
})
