// Users of payload-real-time (Socket.IO), taken literally from its README and client: the
// plugin's options (collections with room/events, serverOptions.port, requireAuth), its client
// calls over the real socket.io-client (auth.token, identify, join('user:<id>'), onCollection =
// on('realtime:<slug>') reading `data`), and the server's `payload.io.to(room).emit(...)`.
// Its clients either keep socket.io-client and add `transports: ['websocket']`, or keep
// `PayloadRealtimeClient` imported from payload-realtime-rs/compat/payload-real-time (both here;
// docs/migrating/payload-real-time.md).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { io } from 'socket.io-client'
import WebSocket from 'ws'

import { payloadRealTime } from 'payload-realtime-rs'
import { PayloadRealtimeClient } from 'payload-realtime-rs/compat/payload-real-time'
import { useRealtime } from 'payload-realtime-rs/compat/payload-real-time/react'
import { createElement as h } from 'react'
import TestRenderer from 'react-test-renderer'
import { createUser, startPayload } from './helpers/payload.mjs'
import { sleep, waitFor } from './helpers/server.mjs'
import { connectSocketIo, expectNoEvent, nextEvent } from './helpers/socketio.mjs'

let app
let alice
let bob
before(async () => {
  app = await startPayload({
    realtimePlugin: payloadRealTime(
      {
        collections: {
          // Scoped to the author's room, as its README scopes notifications to `user:<id>`.
          posts: {
            room: (doc) => {
              const author = typeof doc.author === 'object' ? doc.author?.id : doc.author
              return author ? `user:${author}` : undefined
            },
            events: ['create', 'update'],
          },
          // No room: everyone gets these.
          notes: {},
        },
        serverOptions: { port: 0 },
        requireAuth: true,
      },
      { host: '127.0.0.1' },
    ),
  })
  alice = await createUser(app.payload, 'alice@example.com')
  bob = await createUser(app.payload, 'bob@example.com')
})
after(() => app?.stop())

// What `new PayloadRealtimeClient({ url, token })` does, plus the one documented change.
const client = (token) => connectSocketIo(app.manager.port, { auth: { token } })

/** Whether a socket of `who` is in `room` here (open is not joined: joins pass the access check first). */
const inRoom = (room, who) =>
  app.manager.getLocalRoomMembers(room).some((m) => m.userId === String(who.user.id))

test('requireAuth: no token is a connect_error; a Payload token in auth.token connects', async () => {
  await assert.rejects(connectSocketIo(app.manager.port), /unauthorized/)
  const s = await client(alice.token)
  s.close()
})

test('room-scoped events reach the user room only, as realtime:<slug> with `data`', async () => {
  const a = await client(alice.token)
  const b = await client(bob.token)
  try {
    a.emit('identify', String(alice.user.id)) // accepted and ignored: identity is the token's
    a.emit('join', `user:${alice.user.id}`)
    assert.deepEqual(await nextEvent(a, 'joined'), { type: 'joined', room: `user:users:${alice.user.id}` })
    const got = nextEvent(a, 'realtime:posts')
    await app.payload.create({ collection: 'posts', data: { title: 'for alice', author: alice.user.id } })
    const e = await got
    assert.equal(e.operation, 'create')
    assert.equal(e.collection, 'posts')
    assert.equal(e.data.title, 'for alice')
    await expectNoEvent(b, 'realtime:posts', 200)
  } finally {
    a.close()
    b.close()
  }
})

test('events of a collection without room reach every socket', async () => {
  const a = await client(alice.token)
  const b = await client(bob.token)
  try {
    const ga = nextEvent(a, 'realtime:notes')
    const gb = nextEvent(b, 'realtime:notes')
    await app.payload.create({ collection: 'notes', data: { text: 'all' } })
    assert.equal((await ga).data.text, 'all')
    assert.equal((await gb).data.text, 'all')
  } finally {
    a.close()
    b.close()
  }
})

test('payload.io.to(room).emit(event, data) and payload.io.emit(event, data) from server code', async () => {
  const a = await client(alice.token)
  const b = await client(bob.token)
  try {
    const got = nextEvent(a, 'custom-event')
    app.payload.io.to(`user:${alice.user.id}`).emit('custom-event', { message: 'Hello!' })
    assert.deepEqual(await got, { message: 'Hello!' })
    await expectNoEvent(b, 'custom-event', 150)
    const all = [nextEvent(a, 'announce'), nextEvent(b, 'announce')]
    app.payload.io.emit('announce', 1)
    assert.deepEqual(await Promise.all(all), [1, 1])
  } finally {
    a.close()
    b.close()
  }
})

test("the client's default transports (long-polling first) get a clear connect_error", async () => {
  const s = io(`http://127.0.0.1:${app.manager.port}`, { auth: { token: alice.token }, reconnection: false })
  try {
    const err = await nextEvent(s, 'connect_error')
    assert.ok(err instanceof Error)
  } finally {
    s.close()
  }
})

test('PayloadRealtimeClient from payload-realtime-rs/compat/payload-real-time: its README usage', async () => {
  // `WebSocket: ws` only because Node 20 has no global WebSocket (browsers and Node 22 do).
  const url = `ws://127.0.0.1:${app.manager.port}`
  const client = new PayloadRealtimeClient({ url, token: alice.token, WebSocket })
  const other = new PayloadRealtimeClient({ url, token: bob.token, WebSocket })
  try {
    client.identify(String(alice.user.id))
    client.join(`user:${alice.user.id}`)
    const posts = []
    const notes = []
    const custom = []
    client.onCollection('posts', (data) => posts.push(data))
    client.onCollection('notes', (data) => notes.push(data))
    client.on('custom-event', (data) => custom.push(data))
    const leaked = []
    other.onCollection('posts', (data) => leaked.push(data))
    await waitFor(() => client.client.state === 'open' && other.client.state === 'open', { message: 'open' })
    await waitFor(
      () =>
        // The rooms the notes event and the custom event go to (collection:posts stays empty here:
        // posts, readable by owner only, is not delivered through it).
        inRoom(`user:users:${alice.user.id}`, alice) && inRoom('collection:notes', alice),
      { message: 'joined' },
    )
    await app.payload.create({ collection: 'posts', data: { title: 'mine', author: alice.user.id } })
    await app.payload.create({ collection: 'notes', data: { text: 'for all' } })
    app.payload.io.to(`user:${alice.user.id}`).emit('custom-event', { message: 'Hello!' })
    await waitFor(() => posts.length && notes.length && custom.length, { message: 'events' })
    assert.equal(posts[0].operation, 'create')
    assert.equal(posts[0].data.title, 'mine')
    assert.equal(notes[0].data.text, 'for all')
    assert.deepEqual(custom[0], { message: 'Hello!' })
    await sleep(150)
    assert.deepEqual(leaked, [], "another user's room-scoped events never arrive")
  } finally {
    client.disconnect()
    other.disconnect()
  }
})

test('useRealtime(userId, token) from payload-realtime-rs/compat/payload-real-time/react', async (t) => {
  // As in a browser: a global WebSocket, the URL from NEXT_PUBLIC_WEBSOCKET_URL.
  const hadWs = 'WebSocket' in globalThis
  if (!hadWs) globalThis.WebSocket = WebSocket
  process.env.NEXT_PUBLIC_WEBSOCKET_URL = `ws://127.0.0.1:${app.manager.port}`
  t.after(() => {
    if (!hadWs) delete globalThis.WebSocket
    delete process.env.NEXT_PUBLIC_WEBSOCKET_URL
  })
  const seen = {}
  function Probe() {
    seen.client = useRealtime(String(alice.user.id), alice.token)
    return null
  }
  const r = TestRenderer.create(h(Probe))
  // Unmounted however the test ends: a live client would keep the file's process from exiting.
  let unmounted = false
  t.after(() => {
    if (!unmounted) r.unmount()
  })
  await waitFor(() => seen.client, { message: 'client created' })
  const client = seen.client
  const notes = []
  client.onCollection('notes', (d) => notes.push(d))
  await waitFor(() => client.client.state === 'open', { message: 'open' })
  await waitFor(() => inRoom('collection:notes', alice), { message: 'joined' })
  await app.payload.create({ collection: 'notes', data: { text: 'hook' } })
  await waitFor(() => notes.length, { message: 'event through the hook' })
  assert.equal(notes[0].data.text, 'hook')
  r.unmount()
  unmounted = true
  await waitFor(() => client.client.state === 'closed', { message: 'closed on unmount' })
})
