// Users of PXL's WebSocket module (@scpxl/nodejs-framework), taken literally from its source:
// {type, action, data} messages routed to `type:action` handlers and answered
// {type, action, response} (errors {type:'error', action:'message', data:{error}}), tokens
// that carry only `sub`, sendMessageToAll({ data }), system joinRoom/leaveRoom, the
// `authenticated` message and disconnectInactiveClients. docs/migrating/pxl.md shows each.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { startServer } from './helpers/server.mjs'
import { JWT_KEY, signToken, TestClient } from './helpers/ws.mjs'

const IDLE_MS = 400
let srv
before(async () => {
  srv = await startServer({
    jwtKey: JWT_KEY,
    path: '/ws',
    actionRouting: true,
    disconnectInactiveClients: { enabled: true, inactiveTime: IDLE_MS, intervalCheckTime: 60_000 },
    heartbeatMs: 60_000,
    roomPatterns: ['lobby'],
  })
  // docs/migrating/pxl.md, "Rooms": the system controller's joinRoom / leaveRoom.
  srv.manager.registerCustomHandler('system:joinRoom', (socket, data) => {
    if (!data?.roomName) return { success: false, error: 'Room name is required' }
    if (data.roomName !== 'lobby') return { success: false, error: 'Failed to join room' } // your policy
    socket.join(`room:${data.roomName}`)
    return { success: true, data: { roomName: data.roomName } }
  })
  srv.manager.registerCustomHandler('system:leaveRoom', (socket, data) => {
    socket.leave(`room:${data.roomName}`)
    return { success: true, data: { roomName: data.roomName } }
  })
  // docs/migrating/pxl.md, "Authentication": PXL's message to authenticated clients.
  srv.manager.use((socket) => {
    if (socket.user)
      socket.send({
        type: 'auth',
        action: 'authenticated',
        data: { userId: socket.user.id, message: 'Authentication successful' },
      })
  })
  srv.manager.registerCustomHandler('chat:fail', () => {
    throw new Error('nope')
  })
  srv.manager.registerCustomHandler('chat:send', (socket, data) => ({
    sent: data,
    by: socket.user?.id ?? null,
  }))
  srv.manager.registerCustomHandler('chat', (_socket, data, message) => ({
    fallback: message.action ?? null,
    data,
  }))
})
after(() => srv.close())

const connect = async (token) => {
  const c = await TestClient.connect(srv.url(token ? `/ws?token=${token}` : '/ws'))
  c.welcome = await c.next('welcome')
  return c
}

test('{type, action} goes to the handler "type:action" and is answered {type, action, response}', async () => {
  const c = await connect()
  try {
    c.send({ type: 'chat', action: 'send', data: 'hi' })
    assert.deepEqual(await c.next('chat'), {
      type: 'chat',
      action: 'send',
      response: { sent: 'hi', by: null },
    })
    c.send({ type: 'chat', action: 'fail', data: 1 })
    assert.deepEqual(await c.next('error'), { type: 'error', action: 'message', data: { error: 'nope' } })
    // Beside PXL's shape: an `id` asks for our reply; an action without its own handler goes to `type`.
    c.send({ type: 'chat', action: 'send', id: '1', data: 'hi' })
    assert.deepEqual((await c.next('reply')).data, { sent: 'hi', by: null })
    c.send({ type: 'chat', action: 'typing', id: '2', data: 1 })
    assert.deepEqual((await c.next('reply')).data, { fallback: 'typing', data: 1 })
  } finally {
    c.close()
  }
})

test('system joinRoom / leaveRoom as a handler; room broadcasts reach the members', async () => {
  const c = await connect()
  try {
    c.send({ type: 'system', action: 'joinRoom', data: { roomName: 'lobby' } })
    const joined = await c.next('system')
    assert.deepEqual(joined, {
      type: 'system',
      action: 'joinRoom',
      response: { success: true, data: { roomName: 'lobby' } },
    })
    srv.manager.broadcastToRoom('room:lobby', { type: 'chat', action: 'message', data: { text: 'hi' } })
    assert.deepEqual((await c.next('chat')).data, { text: 'hi' })
    c.send({ type: 'system', action: 'joinRoom', data: { roomName: 'secret' } })
    assert.equal((await c.next('system')).response.success, false)
    c.send({ type: 'system', action: 'leaveRoom', data: { roomName: 'lobby' } })
    assert.equal((await c.next('system')).response.success, true)
    assert.deepEqual(srv.manager.getSocketsInRoom('room:lobby'), [])
  } finally {
    c.close()
  }
})

test('a token with only `sub` authenticates as that user of `users`; PXL`s authenticated message', async () => {
  const token = signToken({ sub: 'u-42' })
  const c = await TestClient.connect(srv.url(`/ws?token=${token}`))
  try {
    // `welcome` (ours) and `auth` (the middleware's) in whichever order they come.
    const first = [await c.next(), await c.next()]
    assert.deepEqual(first.find((m) => m.type === 'welcome').user, { id: 'u-42', collection: 'users' })
    assert.deepEqual(
      first.find((m) => m.type === 'auth'),
      {
        type: 'auth',
        action: 'authenticated',
        data: { userId: 'u-42', message: 'Authentication successful' },
      },
    )
    c.send({ type: 'chat', action: 'send', id: '3', data: 'x' })
    assert.equal((await c.next('reply')).data.by, 'u-42')
    // A bad token is refused with 401, as PXL did.
    await assert.rejects(TestClient.connect(srv.url(`/ws?token=${token}x`)), { status: 401 })
  } finally {
    c.close()
  }
})

test('sendMessageToAll({ data }) sends data to every socket', async () => {
  const a = await connect()
  const b = await connect()
  try {
    const data = { type: 'notification', action: 'alert', data: { message: 'maintenance' } }
    srv.manager.sendMessageToAll({ data })
    assert.deepEqual(await a.next('notification'), data)
    assert.deepEqual(await b.next('notification'), data)
  } finally {
    a.close()
    b.close()
  }
})

test('disconnectInactiveClients closes sockets silent for inactiveTime', async () => {
  const c = await connect()
  const started = Date.now()
  const code = await c.expectClose(IDLE_MS * 10)
  assert.equal(code, 1000)
  // Margin: the idle close comes after IDLE_MS and well before 10× it.
  assert.ok(Date.now() - started >= IDLE_MS - 50, `closed after ${Date.now() - started} ms`)
})
