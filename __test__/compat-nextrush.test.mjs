// Users of NextRush's WebSocketPlugin, taken literally: its option forms (several paths,
// RegExp origins, heartbeatMs: 0 for "no pings", maxConnections: Infinity), broadcast without a
// room, and a close hook. docs/migrating/nextrush.md shows each before/after.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { startServer, waitFor } from './helpers/server.mjs'
import { TestClient } from './helpers/ws.mjs'

let srv
const closed = []
before(async () => {
  srv = await startServer({
    path: ['/ws', '/chat'],
    allowOrigins: [/^https:\/\/app\d\.example\.com$/, 'https://admin.example.com'],
    heartbeatMs: 0,
    maxConnections: Number.POSITIVE_INFINITY,
  })
  srv.manager.onDisconnect((socket, code, reason) => closed.push({ id: socket.id, code, reason }))
})
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
