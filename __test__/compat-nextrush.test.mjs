// Users of NextRush's WebSocketPlugin (nextrush 2), taken literally from its source and docs: its
// option forms (several paths, RegExp origins, heartbeatMs: 0, maxConnections: Infinity), its
// application API through withWebSocket(manager) (ws(path, handler) per path, wsUse with next(),
// wsBroadcast(message, room?), getStats() with its field names), socket.onClose, and broadcast
// without a room. docs/migrating/nextrush.md shows each before/after.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { withWebSocket } from '../dist/plugin/index.js'
import { startServer, waitFor } from './helpers/server.mjs'
import { TestClient } from './helpers/ws.mjs'

let srv
const closed = []
before(async () => {
  srv = await startServer({
    path: ['/ws', '/chat', '/game/*'],
    allowOrigins: [/^https:\/\/app\d\.example\.com$/, 'https://admin.example.com'],
    heartbeatMs: 0,
    maxConnections: Number.POSITIVE_INFINITY,
    verifyClient: (req) => !new URL(req.url, 'http://x').searchParams.has('blocked'),
  })
  srv.manager.onDisconnect((socket, code, reason) => closed.push({ id: socket.id, code, reason }))
  // NextRush's application API, as its docs use it.
  wsApp = withWebSocket(srv.manager)
  wsApp.wsUse((socket, req, next) => {
    if (new URL(req.url, 'http://x').searchParams.get('deny')) {
      socket.close(1008, 'Authentication required')
      return
    }
    next()
  })
  wsApp.ws('/chat', (socket) => {
    socket.join('general')
    socket.onClose((code, reason) => chatCloses.push({ id: socket.id, code, reason }))
    socket.send(JSON.stringify({ type: 'user_list', path: socket.url }))
  })
  wsApp.ws('/game/*', (socket) => {
    const gameId = new URL(socket.url, 'http://x').pathname.split('/')[2]
    socket.join(`game:${gameId}`)
  })
})
let wsApp
const chatCloses = []
after(() => srv.close())

const connect = async (path, origin = 'https://app1.example.com') => {
  const c = await TestClient.connect(srv.url(path), { origin })
  c.welcome = await c.next('welcome')
  return c
}

test('a path array serves each path and no other', async () => {
  const a = await connect('/ws')
  const b = await connect('/chat')
  a.close()
  b.close()
  await assert.rejects(TestClient.connect(srv.url('/other'), { origin: 'https://app1.example.com' }), {
    status: 404,
  })
})

test('RegExp and string origins are both honoured', async () => {
  ;(await connect('/ws', 'https://app7.example.com')).close()
  ;(await connect('/ws', 'https://admin.example.com')).close()
  await assert.rejects(TestClient.connect(srv.url('/ws'), { origin: 'https://evil.example.com' }), {
    status: 403,
  })
})

test('maxConnections: Infinity admits clients; heartbeatMs: 0 starts and sends no pings', async () => {
  const c = await connect('/ws')
  try {
    let pings = 0
    c.ws.on('ping', () => pings++)
    // With the default (30 s) no ping would come this soon either; what matters is that the
    // server started with 0 and holds the socket open with no heartbeat.
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(pings, 0)
    assert.equal(srv.manager.getStats().connections >= 1, true)
  } finally {
    c.close()
  }
})

test('broadcast without a room reaches every socket; the close hook sees the code', async () => {
  const a = await connect('/ws')
  const b = await connect('/chat')
  srv.manager.broadcast({ type: 'announcement', text: 'hello all' })
  assert.deepEqual(await a.next('announcement'), { type: 'announcement', text: 'hello all' })
  assert.deepEqual(await b.next('announcement'), { type: 'announcement', text: 'hello all' })
  srv.manager.broadcast({ type: 'others' }, { except: a.welcome.socketId })
  assert.deepEqual(await b.next('others'), { type: 'others' })
  await a.expectNothing(150, 'others')
  const id = b.welcome.socketId
  b.close()
  a.close()
  await waitFor(() => closed.find((c) => c.id === id), { message: 'close hook' })
  assert.equal(closed.find((c) => c.id === id).code, 1005) // a close frame without a code
})

test('withWebSocket(manager): ws(path) handlers per path, wsUse with next(), wsBroadcast, onClose', async () => {
  // The path handler's message and our `welcome`, in whichever order they come.
  const chat = await TestClient.connect(srv.url('/chat'), { origin: 'https://app1.example.com' })
  const first = [await chat.next(), await chat.next()]
  chat.welcome = first.find((m) => m.type === 'welcome')
  const game = await connect('/game/42')
  const plain = await connect('/ws')
  try {
    assert.deepEqual(
      first.find((m) => m.type === 'user_list'),
      { type: 'user_list', path: '/chat' },
    )
    await waitFor(() => srv.manager.getSocketsInRoom('game:42').length === 1, { message: 'game join' })
    wsApp.wsBroadcast(JSON.stringify({ type: 'message', text: 'hi general' }), 'general')
    assert.deepEqual(await chat.next('message'), { type: 'message', text: 'hi general' })
    await game.expectNothing(150, 'message')
    wsApp.wsBroadcast(JSON.stringify({ type: 'announcement', text: 'all' }))
    for (const c of [chat, game, plain]) assert.equal((await c.next('announcement')).text, 'all')
    const stats = wsApp.getStats()
    assert.equal(stats.totalConnections, 3)
    assert.deepEqual(stats.rooms.filter((r) => r === 'general' || r.startsWith('game:')).sort(), [
      'game:42',
      'general',
    ])
    assert.equal(stats.handlers, 2)
    const id = chat.welcome.socketId
    chat.ws.close(4000, 'bye')
    await waitFor(() => chatCloses.find((c) => c.id === id), { message: 'onClose listener' })
    assert.deepEqual(
      chatCloses.find((c) => c.id === id),
      { id, code: 4000, reason: 'bye' },
    )
  } finally {
    chat.close()
    game.close()
    plain.close()
  }
})

test('a wsUse middleware that does not call next() refuses the socket', async () => {
  const c = await TestClient.connect(srv.url('/chat?deny=1'), { origin: 'https://app1.example.com' })
  const code = await c.expectClose(3000)
  assert.equal(code, 1008)
})

test('verifyClient in the options refuses upgrades, with 403 (NextRush: 401, on purpose)', async () => {
  await assert.rejects(TestClient.connect(srv.url('/ws?blocked=1'), { origin: 'https://app1.example.com' }), {
    status: 403,
  })
  ;(await connect('/ws')).close()
})

// Last: restarts the server with @nextrush/websocket's option names (the successor package).
test("@nextrush/websocket's names: allowedOrigins (wildcards), maxPayload, heartbeatInterval: 0", async () => {
  await srv.close()
  srv = await startServer({
    allowedOrigins: ['https://*.example.com'],
    maxPayload: 1024,
    heartbeatInterval: 0,
  })
  await assert.rejects(TestClient.connect(srv.url('/'), { origin: 'https://example.org' }), { status: 403 })
  const c = await TestClient.connect(srv.url('/'), { origin: 'https://app.example.com' })
  await c.next('welcome')
  c.send({ type: 'ping', pad: 'x'.repeat(2048) })
  assert.equal(await c.expectClose(3000), 1009) // over maxPayload: message too big
})
