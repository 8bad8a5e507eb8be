// Authentication with real Payload credentials: JWTs from payload.login (valid, expired, tampered,
// logged out), API keys, logout and user deletion closing sockets 4001, per-user authorize.
import assert from 'node:assert/strict'
import { createHash, createHmac } from 'node:crypto'
import { payloadJwtKey } from 'payload-realtime-rs'
import { after, before, describe, test } from 'node:test'
import {
  SECRET,
  createUser,
  decodeJwt,
  logout,
  refusedStatus,
  signJwt,
  startPayload,
} from './helpers/payload.mjs'

describe('requireAuth with Payload credentials', () => {
  let app
  let alice
  before(async () => {
    app = await startPayload({
      realtime: {
        requireAuth: true,
        includeCollections: ['posts'],
        authorize: {
          posts: async (user, event) =>
            event.doc.title !== 'editors only' || user.email?.startsWith('editor'),
        },
      },
    })
    alice = await createUser(app.payload, 'alice@example.com', {
      enableAPIKey: true,
      apiKey: 'alice-api-key-1',
    })
  })
  after(async () => app?.stop())

  test('Payload JWT facts the native check relies on', () => {
    const { header, claims } = decodeJwt(alice.token)
    assert.equal(header.alg, 'HS256')
    assert.equal(header.authVersion, 1)
    assert.equal(String(claims.id), String(alice.user.id))
    assert.equal(claims.collection, 'users')
    assert.equal(claims.email, 'alice@example.com')
    assert.equal(typeof claims.sid, 'string')
    assert.ok(claims.exp > Date.now() / 1000)
    // key = first 32 hex chars of sha256(secret), used as UTF-8 bytes
    assert.equal(app.payload.secret, createHash('sha256').update(SECRET).digest('hex').slice(0, 32))
    const [h, c, sig] = alice.token.split('.')
    assert.equal(
      createHmac('sha256', payloadJwtKey(SECRET)).update(`${h}.${c}`).digest('base64url'),
      sig,
      'that key verifies Payload tokens',
    )
  })

  test('no credentials: 401', async () => {
    assert.equal(await refusedStatus(app.url), 401)
  })

  test('valid token from payload.login: welcome names the user', async () => {
    const c = await app.client({ token: alice.token })
    assert.equal(String(c.welcome.user.id), String(alice.user.id))
    assert.equal(c.welcome.user.collection, 'users')
  })

  test('token in the Payload cookie', async () => {
    const c = await app.client({ headers: { cookie: `payload-token=${alice.token}` } })
    assert.equal(String(c.welcome.user.id), String(alice.user.id))
  })

  test('token in the ?token= query (browsers cannot set headers)', async () => {
    const c = await app.client({ path: `/?token=${encodeURIComponent(alice.token)}` })
    assert.equal(String(c.welcome.user.id), String(alice.user.id))
  })

  test('expired token: 401', async () => {
    const { claims } = decodeJwt(alice.token)
    const expired = signJwt({ ...claims, iat: claims.iat - 7200, exp: Math.floor(Date.now() / 1000) - 60 })
    assert.equal(await refusedStatus(app.url, { token: expired }), 401)
  })

  test('tampered token (claims changed, signature kept): 401', async () => {
    const [h, c, s] = alice.token.split('.')
    const claims = JSON.parse(Buffer.from(c, 'base64url'))
    const forged = Buffer.from(JSON.stringify({ ...claims, id: 999 })).toString('base64url')
    assert.equal(await refusedStatus(app.url, { token: `${h}.${forged}.${s}` }), 401)
  })

  test('token signed with another secret: 401', async () => {
    const { claims } = decodeJwt(alice.token)
    assert.equal(await refusedStatus(app.url, { token: signJwt(claims, 'some-other-secret') }), 401)
  })

  test('API key (Authorization: users API-Key …) resolves through payload.auth', async () => {
    const c = await app.client({ headers: { authorization: 'users API-Key alice-api-key-1' } })
    assert.equal(String(c.welcome.user.id), String(alice.user.id))
    assert.equal(await refusedStatus(app.url, { headers: { authorization: 'users API-Key wrong-key' } }), 401)
  })

  test('logout closes that session’s sockets with 4001, not other sessions; its token is then refused', async () => {
    const bob = await createUser(app.payload, 'bob@example.com')
    const { token: bob2 } = await app.payload.login({
      collection: 'users',
      data: { email: 'bob@example.com', password: 'correct horse battery' },
    })
    const s1 = await app.client({ token: bob.token })
    const s2 = await app.client({ token: bob2 })
    await logout(app.payload, bob.token)
    assert.equal(await s1.expectClose(), 4001)
    await s2.expectNothing(200, () => false)
    assert.equal(s2.ws.readyState, 1, 'the other session stays open')

    // A logged-out token still has a valid signature: the session check refuses it at upgrade.
    assert.equal(await refusedStatus(app.url, { token: bob.token }), 401)
  })

  test('logout with allSessions closes every socket of the user', async () => {
    const carl = await createUser(app.payload, 'carl@example.com')
    const { token: carl2 } = await app.payload.login({
      collection: 'users',
      data: { email: 'carl@example.com', password: 'correct horse battery' },
    })
    const s1 = await app.client({ token: carl.token })
    const s2 = await app.client({ token: carl2 })
    await logout(app.payload, carl.token, { allSessions: true })
    assert.equal(await s1.expectClose(), 4001)
    assert.equal(await s2.expectClose(), 4001)
  })

  test('deleting a user closes their sockets with 4001', async () => {
    const dora = await createUser(app.payload, 'dora@example.com')
    const s = await app.client({ token: dora.token })
    await app.payload.delete({ collection: 'users', id: dora.user.id })
    assert.equal(await s.expectClose(), 4001)
  })

  test('authorize filters each event per user', async () => {
    const editor = await createUser(app.payload, 'editor@example.com')
    const reader = await createUser(app.payload, 'reader@example.com')
    const e = await app.client({ token: editor.token })
    const r = await app.client({ token: reader.token })
    await e.joinCollection('posts')
    await r.joinCollection('posts')
    await app.payload.create({ collection: 'posts', data: { title: 'editors only' } })
    await app.payload.create({ collection: 'posts', data: { title: 'for all' } })
    assert.equal((await e.next('update')).doc.title, 'editors only')
    assert.equal((await e.next('update')).doc.title, 'for all')
    assert.equal((await r.next('update')).doc.title, 'for all')
    await r.expectNothing(300, 'update')
  })
})
