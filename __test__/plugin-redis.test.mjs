// Two instances behind a real Redis (REDIS_URL, else a redis-server the test spawns): Payload
// with the plugin in this process, a second realtime server (same secret) in a child process.
// A write in Payload reaches a client of the other instance; a logout in Payload closes that
// client's socket there.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import {
  createUser,
  connect,
  logout,
  SECRET,
  spawnInstance,
  startPayload,
  startRedis,
} from './helpers/payload.mjs'

let redis
let app
let other

before(async () => {
  redis = await startRedis()
  if (!redis) return
  app = await startPayload({ realtime: { includeCollections: ['posts'], redis: redis.options } })
  other = await spawnInstance({ secret: SECRET, redis: redis.options })
})

after(async () => {
  await other?.stop()
  await app?.stop()
  await redis?.stop()
})

test('an event from Payload reaches a socket on another instance; logout closes it there', async (t) => {
  if (!redis) return t.skip('no Redis: neither REDIS_URL nor redis-server')
  const { user, token } = await createUser(app.payload, 'far@example.com')
  const far = await connect(other.url, { token })
  assert.equal(String(far.welcome.user.id), String(user.id))
  // `joined` comes once the other instance's subscription to the room is in place, and a publish
  // goes to the room's channel unconditionally: no wait is needed before the event.
  await far.joinCollection('posts')

  const post = await app.payload.create({ collection: 'posts', data: { title: 'across', author: user.id } })
  const ev = await far.next('update')
  assert.equal(String(ev.id), String(post.id))
  assert.equal(ev.doc.author.email, 'far@example.com')
  assert.equal(ev.doc.author.sessions, undefined, 'stripped before it left the first instance')

  await logout(app.payload, token)
  assert.equal(await far.expectClose(), 4001)
})
