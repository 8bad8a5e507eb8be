// Users of the Payload 2 Socket.IO plugin (payload-plugin-socket-io), taken literally from its
// README: `custom.socketAccess` per operation — a function `(args, req, result)` returning
// `{public, self, <room>}` or an object of booleans — emitting `public.<slug>.<op>` to everyone,
// `self.<slug>.<op>` to the requesting user and `<room>.<slug>.<op>` to a room, for writes,
// reads and logins; clients on the real socket.io-client (`transports: ['websocket']`).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { PASSWORD, createUser, startPayload } from './helpers/payload.mjs'
import { connectSocketIo, expectNoEvent, nextEvent } from './helpers/socketio.mjs'

let app
let alice
before(async () => {
  app = await startPayload({
    // Any server option through the plugin: presence events for the editors' room.
    realtime: { presenceEvents: ['room:editors'] },
    custom: {
      posts: {
        socketAccess: {
          create: (_args, _req, result) => ({
            public: { id: result.id, title: result.title },
            self: true,
            editors: `new: ${result.title}`,
          }),
          updateByID: { public: true },
          find: { public: true },
        },
      },
      users: { socketAccess: { login: { public: true } } },
    },
  })
  alice = await createUser(app.payload, 'alice@example.com')
})
after(() => app?.stop())

const sockets = []
const client = async (opts) => {
  const s = await connectSocketIo(app.manager.port, opts)
  sockets.push(s)
  return s
}
after(() => {
  for (const s of sockets) s.close()
})

test('create: public to everyone, self to the requesting user, <room> to that room', async () => {
  const mine = await client({ auth: { token: alice.token } })
  const other = await client()
  const editor = await client()
  // What the old plugin's onConnect custom routes did with socket.join('editors').
  app.manager.joinRoom(editor.id, 'room:editors')
  const events = [
    nextEvent(other, 'public.posts.create'),
    nextEvent(mine, 'self.posts.create'),
    nextEvent(editor, 'editors.posts.create'),
  ]
  const post = await app.payload.create({
    collection: 'posts',
    data: { title: 'Hello' },
    user: alice.user,
  })
  const [pub, self, room] = await Promise.all(events)
  assert.deepEqual(pub, { id: post.id, title: 'Hello' })
  assert.equal(self.id, post.id)
  assert.equal(self.internal, undefined, 'hidden fields never leave')
  assert.equal(room, 'new: Hello')
  await expectNoEvent(other, 'self.posts.create', 150)
})

test('object form on updateByID and on a read (find)', async () => {
  const s = await client()
  const post = await app.payload.create({ collection: 'posts', data: { title: 'v1' } })
  const upd = nextEvent(s, 'public.posts.updateByID')
  await app.payload.update({ collection: 'posts', id: post.id, data: { title: 'v2' } })
  assert.equal((await upd).title, 'v2')
  const found = nextEvent(s, 'public.posts.find')
  await app.payload.find({ collection: 'posts' })
  assert.ok(Array.isArray((await found).docs))
})

test('login events carry the user, never the token', async () => {
  const s = await client()
  const got = nextEvent(s, 'public.users.login')
  await app.payload.login({ collection: 'users', data: { email: 'alice@example.com', password: PASSWORD } })
  const e = await got
  assert.equal(e.user.email, 'alice@example.com')
  assert.equal(e.token, undefined)
  assert.equal(e.user.hash, undefined)
})

test('server options reach the server through the plugin (presenceEvents)', async () => {
  const a = await client()
  const b = await client()
  app.manager.joinRoom(a.id, 'room:editors')
  const seen = []
  a.on('presence', (p) => seen.push(p))
  app.manager.joinRoom(b.id, 'room:editors')
  // Presence is coalesced per room (presenceIntervalMs, default 1 s): b's join arrives alone
  // (`joined` an object) or merged with a's (`joined` an array); wait past one interval.
  const hasB = () =>
    seen.some((p) => p.room === 'room:editors' && [p.joined].flat().some((j) => j?.socketId === b.id))
  for (let waited = 0; !hasB() && waited < 3000; waited += 50) await new Promise((r) => setTimeout(r, 50))
  assert.ok(hasB(), `no presence for ${b.id} in ${JSON.stringify(seen)}`)
})
