// The native manager through its JS surface: init, events, handlers, middleware, authorize,
// lifetime. A real server on loopback, real `ws` clients.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import { getUWebSocketManager, initUWebSocket } from '../dist/plugin/index.js'
import { waitFor } from './helpers/server.mjs'
import { JWT_KEY, signToken, TestClient } from './helpers/ws.mjs'

const pluginEntry = fileURLToPath(new URL('../dist/plugin/index.js', import.meta.url))
let m
let url

before(async () => {
  m = await initUWebSocket({ port: 0, host: '127.0.0.1', jwtKey: JWT_KEY, handlerTimeoutMs: 300 })
  url = `ws://127.0.0.1:${m.port}`
})
after(() => m.close())

const connect = async (query = '') => {
  const c = await TestClient.connect(`${url}/${query}`)
  c.welcome = await c.next('welcome')
  return c
}

test('init is a per-process singleton', async () => {
  assert.equal(await initUWebSocket({ port: 0 }), m)
  assert.equal(await initUWebSocket({ port: m.port }), m)
  assert.equal(getUWebSocketManager(), m)
  await assert.rejects(initUWebSocket({ port: m.port + 1 }), { code: 'EALREADY' })
  assert.ok(m.port > 0)
})

test('emitEvent reaches collection, doc and extra rooms with the documented shape', async () => {
  const coll = await connect()
  await coll.joinCollection('posts')
  const doc = await connect()
  doc.send({ type: 'join-doc', collection: 'posts', id: 5 })
  await doc.next('joined')
  const none = await connect()
  await none.joinCollection('pages')
  m.emitEvent({ operation: 'create', collection: 'posts', id: 5, doc: { id: 5, title: 'Hi' } })
  const expected = {
    type: 'update',
    operation: 'create',
    collection: 'posts',
    id: 5,
    doc: { id: 5, title: 'Hi' },
  }
  assert.deepEqual(await coll.next(), expected)
  assert.deepEqual(await doc.next(), expected)
  await none.expectNothing(150)
  m.emitEvent({ operation: 'delete', collection: 'posts', id: 'abc', doc: null, rooms: ['collection:pages'] })
  assert.deepEqual(await none.next(), {
    type: 'delete',
    operation: 'delete',
    collection: 'posts',
    id: 'abc',
    doc: null,
  })
  for (const c of [coll, doc, none]) c.close()
})

test('broadcastToRoom and sendToSocket take objects, strings and buffers', async () => {
  const a = await connect()
  const b = await connect()
  await a.joinCollection('news')
  await b.joinCollection('news')
  m.broadcastToRoom('collection:news', { type: 'note', n: 1 }, { except: a.welcome.socketId })
  assert.deepEqual(await b.next(), { type: 'note', n: 1 })
  await a.expectNothing(150)
  m.broadcastToRoom('collection:news', '{"type":"raw"}')
  assert.equal((await a.next()).type, 'raw')
  assert.equal(m.sendToSocket(a.welcome.socketId, Buffer.from([1, 2])), true)
  assert.deepEqual([...(await a.next())], [1, 2])
  assert.equal(m.sendToSocket('nobody-1', { x: 1 }), false)
  a.close()
  b.close()
})

test('fan-out calls of one JS task go out together, in order, wherever the task runs', async () => {
  // The native calls are held until the task ends (one microtask flushes them): none may be
  // left waiting, whether made synchronously, after an await, from a timer or from a handler.
  const a = await connect()
  await a.joinCollection('burst')
  const got = []
  const take = async (n) => {
    for (let i = 0; i < n; i++) got.push((await a.next()).i)
  }
  for (let i = 0; i < 20; i++) m.broadcastToRoom('collection:burst', { type: 'note', i })
  await take(20)
  await Promise.resolve()
  m.broadcastToRoom('collection:burst', { type: 'note', i: 20 })
  m.sendToSocket(a.welcome.socketId, { type: 'note', i: 21 })
  await take(2)
  setTimeout(() => m.emitEvent({ operation: 'update', collection: 'burst', id: 1, doc: { n: 22 } }), 5)
  assert.equal((await a.next()).doc.n, 22)
  m.registerCustomHandler('burst', (socket) => {
    for (let i = 23; i < 26; i++) socket.broadcast('collection:burst', { type: 'note', i })
    return 'ok'
  })
  const b = await connect()
  b.send({ type: 'burst', id: 1 })
  await take(3)
  assert.deepEqual(
    got,
    Array.from({ length: 26 }, (_, i) => i).filter((i) => i !== 22),
  )
  a.close()
  b.close()
})

test('custom handlers: sync, async, throwing, slow; socket handles keep data', async () => {
  m.registerCustomHandler('echo', (_socket, data) => data)
  m.registerCustomHandler(
    'later',
    async (_s, data) => new Promise((r) => setTimeout(() => r({ later: data }), 20)),
  )
  m.registerCustomHandler('boom', () => {
    throw new Error('kaboom')
  })
  m.registerCustomHandler('reject', async () => Promise.reject(new Error('nope')))
  m.registerCustomHandler('slow', () => new Promise((r) => setTimeout(r, 2000)))
  m.registerCustomHandler('count', (socket) => {
    socket.data.n = (socket.data.n ?? 0) + 1
    return socket.data.n
  })
  m.registerCustomHandler('enter', (socket, data) => {
    socket.join(`room:${data}`)
    socket.broadcast(`room:${data}`, { type: 'entered', who: socket.id })
    return socket.rooms
  })
  const c = await connect()
  const bystander = await connect()
  c.send({ type: 'echo', id: 'a', data: { deep: [1, { x: 'y' }] } })
  assert.deepEqual(await c.next('reply'), { type: 'reply', id: 'a', data: { deep: [1, { x: 'y' }] } })
  c.send({ type: 'later', id: 2, data: 'x' })
  assert.deepEqual(await c.next('reply'), { type: 'reply', id: 2, data: { later: 'x' } })
  c.send({ type: 'boom', id: 'b' })
  assert.deepEqual(await c.next('error'), {
    type: 'error',
    id: 'b',
    code: 'handler_failed',
    message: 'kaboom',
  })
  c.send({ type: 'reject', id: 'r' })
  assert.equal((await c.next('error')).code, 'handler_failed')
  c.send({ type: 'slow', id: 's' })
  assert.equal((await c.next('error')).code, 'handler_timeout')
  // Handlers of one socket may finish in any order: replies are matched by id.
  c.send({ type: 'count', id: 1 })
  c.send({ type: 'count', id: 2 })
  const counts = [await c.next('reply'), await c.next('reply')].map((r) => r.data).sort()
  assert.deepEqual(counts, [1, 2])
  bystander.send({ type: 'enter', id: 1, data: 'lobby' })
  assert.deepEqual((await bystander.next('reply')).data.sort(), ['room:lobby'])
  c.send({ type: 'enter', id: 2, data: 'lobby' })
  assert.equal((await bystander.next('entered')).who, c.welcome.socketId)
  c.send({ type: 'never-registered', id: 'u' })
  assert.equal((await c.next('error')).code, 'unknown_type')
  const s = m.getStats()
  assert.ok(s.handlerErrors >= 2 && s.handlerTimeouts >= 1)
  c.close()
  bystander.close()
})

test('middleware may annotate or reject; authorize is batched per event', async () => {
  m.use((socket, req) => {
    if (req.url.includes('reject')) return false
    socket.data.tag = 'seen'
  })
  const rejected = await TestClient.connect(`${url}/?reject=1`)
  assert.equal(await rejected.expectClose(), 4003)
  const calls = []
  m.setAuthorize('secret', (users, event) => {
    calls.push({ users: users.map((u) => u?.id ?? null), collection: event.collection })
    return users.map((u) => u?.id === 2)
  })
  const clients = []
  for (const id of [1, 2, 2]) {
    const c = await connect(`?token=${signToken({ id, collection: 'users', email: `${id}@x.io` })}`)
    assert.deepEqual(c.welcome.user, { id, collection: 'users' })
    await c.joinCollection('secret')
    clients.push(c)
  }
  m.emitEvent({ operation: 'update', collection: 'secret', id: 1, doc: { s: 1 } })
  assert.equal((await clients[1].next()).doc.s, 1)
  assert.equal((await clients[2].next()).doc.s, 1)
  await clients[0].expectNothing(150)
  assert.deepEqual(calls, [{ users: calls[0].users, collection: 'secret' }])
  assert.deepEqual([...calls[0].users].sort(), [1, 2])
  assert.equal((await m.getRoomMembers('user:users:2')).length, 2)
  assert.equal(m.disconnectUser(2), 2)
  assert.equal(await clients[1].expectClose(), 4001)
  clients[0].close()
})

test('authorize gets one frozen user list per audience, reused until a join, leave or close', async () => {
  const lists = []
  m.setAuthorize('shared', (users) => {
    lists.push(users)
    return users.map((u) => u !== null)
  })
  const join = async (id) => {
    const c = await connect(`?token=${signToken({ id, collection: 'users', email: `${id}@x.io` })}`)
    await c.joinCollection('shared')
    return c
  }
  const a = await join(11)
  const b = await join(12)
  for (const n of [1, 2]) {
    m.emitEvent({ operation: 'update', collection: 'shared', id: 1, doc: { n } })
    assert.equal((await a.next()).doc.n, n)
    assert.equal((await b.next()).doc.n, n)
  }
  assert.equal(lists.length, 2)
  assert.equal(lists[1], lists[0], 'the same array: not sent or parsed again')
  assert.ok(Object.isFrozen(lists[0]) && Object.isFrozen(lists[0][0]))
  assert.throws(() => lists[0].push(null))

  const c = await join(13)
  m.emitEvent({ operation: 'update', collection: 'shared', id: 1, doc: { n: 3 } })
  for (const x of [a, b, c]) assert.equal((await x.next()).doc.n, 3)
  assert.deepEqual(lists[2].map((u) => u.id).sort(), [11, 12, 13])
  // A new registration keeps working with the list the manager holds.
  m.setAuthorize('shared', (users) => (lists.push(users), users.map(() => true)))
  b.close()
  // Until the server has seen the close, b still counts for the room's audience.
  await waitFor(() => m.getLocalRoomMembers('collection:shared').length === 2, { message: "b's close" })
  m.emitEvent({ operation: 'update', collection: 'shared', id: 1, doc: { n: 4 } })
  assert.equal((await a.next()).doc.n, 4)
  assert.deepEqual(lists[3].map((u) => u.id).sort(), [11, 13])
  m.setAuthorize('shared', null)
  a.close()
  c.close()
})

test('refuses to start inside worker_threads', async () => {
  const w = new Worker(
    `import(${JSON.stringify(pluginEntry)}).then(m => m.initUWebSocket({ port: 0 })).then(() => process.exit(0), e => { require('node:worker_threads').parentPort.postMessage(e.code) })`,
    { eval: true },
  )
  const [code] = await once(w, 'message')
  assert.equal(code, 'EWORKER')
  await w.terminate()
})

test('a running server keeps Node alive; after close() it exits on its own', async () => {
  const script = (closeIt) =>
    `import(${JSON.stringify(pluginEntry)}).then(async (m) => { const s = await m.initUWebSocket({ port: 0, host: '127.0.0.1' }); s.registerCustomHandler('x', () => 1); console.log('up'); ${closeIt ? 'await s.close(); console.log("closed")' : ''} })`
  const closing = spawn(process.execPath, ['-e', script(true)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [exitCode] = await Promise.race([
    once(closing, 'exit'),
    new Promise((_, rej) => setTimeout(() => rej(new Error('did not exit after close()')), 8000)),
  ])
  assert.equal(exitCode, 0)
  const running = spawn(process.execPath, ['-e', script(false)], { stdio: ['ignore', 'pipe', 'inherit'] })
  await once(running.stdout, 'data')
  await new Promise((r) => setTimeout(r, 1000))
  assert.equal(running.exitCode, null, 'still running')
  running.kill('SIGKILL')
})
