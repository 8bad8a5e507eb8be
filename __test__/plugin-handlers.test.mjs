// Custom message handlers, middleware, verifyClient and the join-room policy, configured through
// the plugin options.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createUser, refusedStatus, startPayload } from './helpers/payload.mjs'

describe('handlers, middleware, verifyClient, room policy', () => {
  let app
  const seen = { connections: [] }
  before(async () => {
    app = await startPayload({
      realtime: {
        handlerTimeoutMs: 300,
        handlers: {
          echo: (socket, data) => ({ echoed: data, socketId: socket.id, user: socket.user?.email ?? null }),
          'count-posts': async (_socket, _data) =>
            (await app.payload.count({ collection: 'posts' })).totalDocs,
          explode: () => {
            throw new Error('handler blew up')
          },
          slow: () => new Promise((resolve) => setTimeout(() => resolve('too late'), 2000)),
          'remember-me': (socket, data) => {
            socket.data.nick = data.nick
            return socket.data
          },
        },
        middleware: [(_socket, req) => !req.url.includes('blocked=1')],
        onSocketConnection: (socket) => {
          seen.connections.push(socket.id)
        },
        verifyClient: (info) => info.headers['x-deny'] !== 'yes',
        rooms: {
          patterns: ['public:*'],
          canJoin: (user, room) => room === `private:${user?.email}`,
        },
      },
    })
  })
  after(async () => app?.stop())

  test('custom handler request/reply, sync and async (uses the Local API)', async () => {
    const c = await app.client()
    const r = await c.request('echo', { a: 1 })
    assert.equal(r.type, 'reply')
    assert.deepEqual(r.data.echoed, { a: 1 })
    assert.equal(r.data.socketId, c.welcome.socketId)
    await app.payload.create({ collection: 'posts', data: { title: 'counted' } })
    const n = await c.request('count-posts', null)
    assert.equal(n.type, 'reply')
    assert.equal(n.data, 1)
  })

  test('socket.data persists across messages of one socket', async () => {
    const c = await app.client()
    await c.request('remember-me', { nick: 'zed' })
    const r = await c.request('remember-me', { nick: 'zed2' })
    assert.equal(r.data.nick, 'zed2')
  })

  test('a throwing handler answers handler_failed and the socket stays usable', async () => {
    const c = await app.client()
    const r = await c.request('explode', {})
    assert.equal(r.type, 'error')
    assert.equal(r.code, 'handler_failed')
    assert.equal((await c.request('echo', 1)).type, 'reply')
  })

  test('a slow handler answers handler_timeout', async () => {
    const c = await app.client()
    const t0 = Date.now()
    const r = await c.request('slow', {}, 1500)
    assert.equal(r.type, 'error')
    assert.equal(r.code, 'handler_timeout')
    assert.ok(Date.now() - t0 < 1500)
  })

  test('unknown type answers unknown_type', async () => {
    const c = await app.client()
    const r = await c.request('no-such-type', {})
    assert.equal(r.type, 'error')
    assert.equal(r.code, 'unknown_type')
  })

  test('middleware returning false closes the socket 4003; onSocketConnection sees sockets', async () => {
    const ok = await app.client({ path: '/?x=1' })
    assert.ok(seen.connections.includes(ok.welcome.socketId))
    const blocked = await app.client({ path: '/?blocked=1', waitWelcome: false })
    assert.equal(await blocked.expectClose(), 4003)
  })

  test('verifyClient false answers 403', async () => {
    assert.equal(await refusedStatus(app.url, { headers: { 'x-deny': 'yes' } }), 403)
  })

  test('join-room: pattern allows, canJoin allows per user, anything else refused', async () => {
    const { token } = await createUser(app.payload, 'roomer@example.com')
    const c = await app.client({ token })
    await c.join({ type: 'join-room', room: 'public:lobby' })
    await c.join({ type: 'join-room', room: 'private:roomer@example.com' })
    c.send({ type: 'join-room', room: 'private:someone-else@example.com' })
    const refused = await c.next((m) => m.type === 'error' || m.type === 'joined')
    assert.equal(refused.type, 'error')
    assert.equal(refused.code, 'forbidden')
  })

  test('broadcastToRoom reaches join-room members', async () => {
    const c = await app.client()
    await c.join({ type: 'join-room', room: 'public:news' })
    app.manager.broadcastToRoom('room:public:news', { type: 'news', text: 'hi' })
    assert.equal((await c.next('news')).text, 'hi')
  })
})

describe('defaults, and the uWebSockets.js plugin option names', () => {
  let app
  before(async () => {
    app = await startPayload({
      realtime: {
        uWebSocket: { cors: { origin: ['http://good.example'] }, path: '/ws' },
        includeCollections: ['posts'],
        authorize: { posts: (user, event) => (user === null ? event.doc.title === 'public' : true) },
      },
    })
  })
  after(async () => app?.stop())

  test('without `rooms`, every join-room is refused', async () => {
    const c = await app.client({ path: '/ws', origin: 'http://good.example' })
    c.send({ type: 'join-room', room: 'anything' })
    const m = await c.next((x) => x.type === 'error' || x.type === 'joined')
    assert.equal(m.type, 'error')
    assert.equal(m.code, 'forbidden')
    c.close()
  })

  test('authorize sees anonymous sockets as null', async () => {
    const c = await app.client({ path: '/ws', origin: 'http://good.example' })
    await c.joinCollection('posts')
    await app.payload.create({ collection: 'posts', data: { title: 'members' } })
    await app.payload.create({ collection: 'posts', data: { title: 'public' } })
    assert.equal((await c.next('update')).doc.title, 'public')
    await c.expectNothing(300, 'update')
    c.close()
  })

  test('uWebSocket.cors.origin becomes allowOrigins; uWebSocket.path the served path', async () => {
    const ok = await app.client({ path: '/ws', origin: 'http://good.example' })
    ok.close()
    assert.equal(await refusedStatus(app.url, { path: '/ws', origin: 'http://evil.example' }), 403)
    assert.equal(await refusedStatus(app.url, { path: '/elsewhere', origin: 'http://good.example' }), 404)
  })
})
