// Users of PXL's WebSocket module, taken literally: {type, action, data} messages routed to
// per-action handlers (actionRouting), tokens that carry only `sub`, sendMessageToAll, and
// inactivity cleanup (idleTimeoutMs). docs/migrating/pxl.md shows each before/after.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { startServer } from './helpers/server.mjs'
import { JWT_KEY, signToken, TestClient } from './helpers/ws.mjs'

const IDLE_MS = 400
let srv
before(async () => {
  srv = await startServer({
    jwtKey: JWT_KEY,
    actionRouting: true,
    idleTimeoutMs: IDLE_MS,
    heartbeatMs: 60_000,
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
  const c = await TestClient.connect(srv.url(token ? `/?token=${token}` : '/'))
  c.welcome = await c.next('welcome')
  return c
}

test('{type, action} goes to the handler "type:action", else to "type"', async () => {
  const c = await connect()
  try {
    c.send({ type: 'chat', action: 'send', id: '1', data: 'hi' })
    assert.deepEqual((await c.next('reply')).data, { sent: 'hi', by: null })
    c.send({ type: 'chat', action: 'typing', id: '2', data: 1 })
    assert.deepEqual((await c.next('reply')).data, { fallback: 'typing', data: 1 })
  } finally {
    c.close()
  }
})

test('a token with only `sub` authenticates as that user of `users`', async () => {
  const token = signToken({ sub: 'u-42' })
  const c = await connect(token)
  try {
    assert.deepEqual(c.welcome.user, { id: 'u-42', collection: 'users' })
    c.send({ type: 'chat', action: 'send', id: '3', data: 'x' })
    assert.equal((await c.next('reply')).data.by, 'u-42')
  } finally {
    c.close()
  }
})

test('sendMessageToAll reaches every socket', async () => {
  const a = await connect()
  const b = await connect()
  try {
    srv.manager.sendMessageToAll({ type: 'system', text: 'maintenance' })
    assert.equal((await a.next('system')).text, 'maintenance')
    assert.equal((await b.next('system')).text, 'maintenance')
  } finally {
    a.close()
    b.close()
  }
})

test('inactive sockets are cleaned up after idleTimeoutMs', async () => {
  const c = await connect()
  const started = Date.now()
  const code = await c.expectClose(IDLE_MS * 10)
  assert.equal(code, 1000)
  // Margin: the idle close comes after IDLE_MS and well before 10× it.
  assert.ok(Date.now() - started >= IDLE_MS - 50, `closed after ${Date.now() - started} ms`)
})
