// Users of the uWebSockets.js Payload plugin, taken literally: its manager API (on, joinRoom,
// leaveRoom, getSocketsInRoom, getSockets, sendToSocket(ws, event, data), broadcastToRoom(room,
// data, event, exceptId)), its client join shapes (join-collection with `data`, subscribe /
// unsubscribe), its event format (eventFormat: 'uwebsocket-plugin'), its 16 MiB messages and a
// disconnect hook. docs/migrating/uwebsocket-plugin.md shows each before/after.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { startServer, waitFor } from './helpers/server.mjs'
import { JWT_KEY, signToken, TestClient } from './helpers/ws.mjs'

let srv
const disconnects = []
before(async () => {
  srv = await startServer({
    eventFormat: 'uwebsocket-plugin',
    jwtKey: JWT_KEY,
    maxMessageSize: 16 * 1024 * 1024,
    maxBackpressure: 32 * 1024 * 1024, // the 12 MiB reply must fit the socket's queue
  })
  srv.manager.on('disconnect', (socket, code, reason) => disconnects.push({ id: socket.id, code, reason }))
  srv.manager.on('echo', (_socket, data) => ({ echoed: data }))
  srv.manager.on('connection', (socket, req) => {
    socket.data.path = new URL(req.url, 'http://x').pathname
  })
  srv.manager.on('whereami', (socket) => socket.data.path)
  srv.manager.on('whoami', (ws) => {
    const { id, user, rooms } = ws.getUserData()
    return { id, user, rooms: [...rooms].filter((r) => !r.startsWith('user:')) }
  })
  srv.manager.onBinary((_socket, data) => ({ type: 'got-bytes', bytes: data.length, first: data[0] }))
})
after(() => srv.close())

const connect = async () => {
  const c = await TestClient.connect(srv.url('/'))
  c.welcome = await c.next('welcome')
  return c
}

test('join shapes: data as a slug, data as an array, subscribe / unsubscribe', async () => {
  const c = await connect()
  try {
    c.send({ type: 'join-collection', data: 'posts' })
    assert.deepEqual(await c.next('joined'), { type: 'joined', room: 'collection:posts' })
    c.send({ type: 'join-collection', data: ['pages', 'users'] })
    assert.equal((await c.next('joined')).room, 'collection:pages')
    assert.equal((await c.next('joined')).room, 'collection:users')
    c.send({ type: 'subscribe', data: 'media' })
    assert.equal((await c.next('joined')).room, 'collection:media')
    c.send({ type: 'unsubscribe', data: 'media' })
    assert.deepEqual(await c.next('left'), { type: 'left', room: 'collection:media' })
    c.send({ type: 'join-collection', data: 7 })
    assert.equal((await c.next('error')).code, 'bad_message')
  } finally {
    c.close()
  }
})

test("events in the plugin's shape: {type:'payload:event', data:{type, collection, id, doc, timestamp}}", async () => {
  const c = await connect()
  try {
    c.send({ type: 'join-collection', data: 'posts' })
    await c.next('joined')
    const before = Date.now()
    srv.manager.emitEvent({ operation: 'update', collection: 'posts', id: 3, doc: { id: 3, title: 'T' } })
    const e = await c.next('payload:event')
    // The plugin's RealtimeEventPayload: `type` is the operation, `timestamp` an ISO string.
    assert.deepEqual(
      { ...e.data, timestamp: 0 },
      {
        type: 'update',
        operation: 'update',
        collection: 'posts',
        id: 3,
        doc: { id: 3, title: 'T' },
        timestamp: 0,
      },
    )
    assert.match(e.data.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    const at = Date.parse(e.data.timestamp)
    assert.ok(at >= before - 1 && at <= Date.now() + 1, e.data.timestamp)
    srv.manager.emitEvent({ operation: 'delete', collection: 'posts', id: 3, doc: { id: 3 } })
    const deleted = await c.next('payload:event')
    assert.equal(deleted.data.type, 'delete')
    assert.deepEqual(deleted.data.doc, { id: 3 }) // sent with deletes too (the plugin left it out)
    // Creates are events here (the plugin emitted none); `data.type` says which.
    srv.manager.emitEvent({ operation: 'create', collection: 'posts', id: 4, doc: { id: 4 } })
    assert.equal((await c.next('payload:event')).data.type, 'create')
    // No `payload:event:all` to every socket: only the collection's room gets the event.
    const outsider = await connect()
    try {
      srv.manager.emitEvent({ operation: 'update', collection: 'posts', id: 5, doc: { id: 5 } })
      assert.equal((await c.next('payload:event')).data.id, 5)
      await outsider.expectNothing(200)
    } finally {
      outsider.close()
    }
  } finally {
    c.close()
  }
})

test('joinRoom / leaveRoom take socket ids; getSocketsInRoom gives ids, getSockets a Map', async () => {
  const a = await connect()
  const b = await connect()
  try {
    const ids = [a.welcome.socketId, b.welcome.socketId]
    assert.equal(srv.manager.joinRoom(ids[0], 'room:lobby'), true)
    assert.equal(srv.manager.joinRoom(srv.manager.socket(ids[1]), 'room:lobby'), true)
    // The plugin's getSocketsInRoom(roomName): string[] of socket ids.
    assert.deepEqual(srv.manager.getSocketsInRoom('room:lobby').sort(), [...ids].sort())
    // The plugin's getSockets(): Map<socketId, ws>.
    const sockets = srv.manager.getSockets()
    assert.ok(sockets instanceof Map)
    for (const id of ids) assert.equal(sockets.get(id).id, id)
    assert.equal(srv.manager.leaveRoom(ids[1], 'room:lobby'), true)
    assert.deepEqual(srv.manager.getSocketsInRoom('room:lobby'), [ids[0]])
    assert.equal(srv.manager.joinRoom('no-such-socket', 'room:lobby'), false)
  } finally {
    a.close()
    b.close()
  }
})

test('ws.getUserData() in handlers: {id, user, rooms} as the plugin kept them', async () => {
  const token = signToken({ id: 7, collection: 'users', email: 'u7@example.com' })
  const c = await TestClient.connect(srv.url(`/?token=${token}`))
  try {
    c.welcome = await c.next('welcome')
    c.send({ type: 'join-collection', data: 'posts' })
    await c.next('joined')
    const r = await c.request('whoami', null)
    assert.deepEqual(r.data, {
      id: c.welcome.socketId,
      user: { id: 7, email: 'u7@example.com', collection: 'users' },
      rooms: ['collection:posts'],
    })
  } finally {
    c.close()
  }
})

test('sendToSocket(ws, event, data) and broadcastToRoom(room, data, event, exceptId) wrap as {type, data}', async () => {
  const a = await connect()
  const b = await connect()
  try {
    const [ida, idb] = [a.welcome.socketId, b.welcome.socketId]
    assert.equal(srv.manager.sendToSocket(srv.manager.socket(ida), 'notice', { n: 1 }), true)
    assert.deepEqual(await a.next('notice'), { type: 'notice', data: { n: 1 } })
    for (const id of [ida, idb]) srv.manager.joinRoom(id, 'room:r')
    srv.manager.broadcastToRoom('room:r', { text: 'hi' }, 'chat', ida)
    assert.deepEqual(await b.next('chat'), { type: 'chat', data: { text: 'hi' } })
    await a.expectNothing(150, 'chat')
    // Our own forms keep working beside them.
    srv.manager.broadcastToRoom('room:r', { type: 'plain' }, { except: idb })
    assert.deepEqual(await a.next('plain'), { type: 'plain' })
  } finally {
    a.close()
    b.close()
  }
})

test('on(type, handler) handles messages; on("disconnect") sees code and reason', async () => {
  const c = await connect()
  assert.deepEqual((await c.request('echo', 5)).data, { echoed: 5 })
  const id = c.welcome.socketId
  c.ws.close(4000, 'bye now')
  await waitFor(() => disconnects.find((d) => d.id === id), { message: 'disconnect hook' })
  assert.deepEqual(
    disconnects.find((d) => d.id === id),
    { id, code: 4000, reason: 'bye now' },
  )
})

test('messages up to 16 MiB pass when maxMessageSize says so', async () => {
  const c = await connect()
  try {
    const big = 'x'.repeat(12 * 1024 * 1024)
    const r = await c.request('echo', big, 20_000)
    assert.equal(r.data.echoed.length, big.length)
  } finally {
    c.close()
  }
})

test("on('connection') runs for each socket; binary messages reach onBinary", async () => {
  const c = await TestClient.connect(srv.url('/some/where'))
  try {
    await c.next('welcome')
    assert.equal((await c.request('whereami', null)).data, '/some/where')
    c.send(Buffer.from([7, 1, 2]))
    assert.deepEqual(await c.next('got-bytes'), { type: 'got-bytes', bytes: 3, first: 7 })
  } finally {
    c.close()
  }
})
