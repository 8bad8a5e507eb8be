// Collection writes through Payload's Local API reach the right WebSocket clients, only after the
// transaction commits, and never carry hidden or auth fields.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { assertNoKeys, createUser, lateFailurePlugin, startPayload } from './helpers/payload.mjs'

const SECRET_KEYS = [
  'hash',
  'salt',
  'sessions',
  'apiKey',
  'apiKeyIndex',
  'resetPasswordToken',
  'resetPasswordExpiration',
  '_verificationToken',
  'lockUntil',
  'loginAttempts',
  'secretNote',
  'internal',
  'reviewToken',
  'rowHidden',
  'blockSecret',
]

describe('events from a Payload with the plugin (port option, transactions on)', () => {
  let app
  before(async () => {
    app = await startPayload({
      realtime: {
        collections: {
          posts: {
            room: (doc) => {
              if (doc.team === 'throw') throw new Error('room() failure')
              return doc.team ? `team:${doc.team}` : undefined
            },
          },
          users: { events: ['delete'] },
          articles: {},
        },
        rooms: { patterns: ['team:*'] },
      },
      plugins: [lateFailurePlugin],
    })
  })
  after(async () => app?.stop())

  test('server started from onInit on the `port` option', () => {
    assert.ok(app.manager, 'manager running')
    assert.ok(app.manager.port > 0)
  })

  test('create/update/delete reach collection subscribers with the documented shape, others get nothing', async () => {
    const sub = await app.client()
    const other = await app.client()
    await sub.joinCollection('posts')
    await other.joinCollection('articles')

    const post = await app.payload.create({ collection: 'posts', data: { title: 'hello' } })
    const created = await sub.next('update')
    assert.equal(created.operation, 'create')
    assert.equal(created.collection, 'posts')
    assert.equal(String(created.id), String(post.id))
    assert.equal(created.doc.title, 'hello')
    assert.equal(String(created.doc.id), String(post.id))

    await app.payload.update({ collection: 'posts', id: post.id, data: { title: 'hello 2' } })
    const updated = await sub.next('update')
    assert.equal(updated.operation, 'update')
    assert.equal(updated.doc.title, 'hello 2')

    await app.payload.delete({ collection: 'posts', id: post.id })
    const deleted = await sub.next('delete')
    assert.equal(deleted.operation, 'delete')
    assert.equal(String(deleted.id), String(post.id))
    assert.equal(deleted.doc.title, 'hello 2')

    await other.expectNothing(300, (m) => m.type === 'update' || m.type === 'delete')
    await sub.expectNothing(100, (m) => m.type === 'update' || m.type === 'delete')
  })

  test('join-doc receives only that document', async () => {
    const a = await app.payload.create({ collection: 'posts', data: { title: 'a' } })
    const b = await app.payload.create({ collection: 'posts', data: { title: 'b' } })
    const c = await app.client()
    await c.join({ type: 'join-doc', collection: 'posts', id: String(a.id) })
    await app.payload.update({ collection: 'posts', id: b.id, data: { title: 'b2' } })
    await app.payload.update({ collection: 'posts', id: a.id, data: { title: 'a2' } })
    const got = await c.next('update')
    assert.equal(String(got.id), String(a.id))
    assert.equal(got.doc.title, 'a2')
    await c.expectNothing(300, 'update')
  })

  test('room() targets join-room members only', async () => {
    const red = await app.client()
    const blue = await app.client()
    await red.join({ type: 'join-room', room: 'team:red' })
    await blue.join({ type: 'join-room', room: 'team:blue' })
    const post = await app.payload.create({ collection: 'posts', data: { title: 'for red', team: 'red' } })
    const got = await red.next('update')
    assert.equal(String(got.id), String(post.id))
    assert.equal(got.doc.team, 'red')
    await blue.expectNothing(300, 'update')
  })

  test('a throwing room() neither fails the write nor drops the event', async () => {
    const c = await app.client()
    await c.joinCollection('posts')
    const post = await app.payload.create({
      collection: 'posts',
      data: { title: 'room throws', team: 'throw' },
    })
    assert.equal(String((await c.next('update')).id), String(post.id))
  })

  test('events filter: users emit delete only', async () => {
    // Users are readable by logged-in users only (Payload's default access): a logged-in socket.
    const viewer = await createUser(app.payload, 'viewer@example.com')
    const c = await app.client({ token: viewer.token })
    await c.joinCollection('users')
    const { user } = await createUser(app.payload, 'filter@example.com')
    await app.payload.update({ collection: 'users', id: user.id, data: { name: 'x' } })
    await c.expectNothing(300, (m) => m.type === 'update')
    await app.payload.delete({ collection: 'users', id: user.id })
    const del = await c.next('delete')
    assert.equal(String(del.id), String(user.id))
    assertNoKeys(del.doc, SECRET_KEYS)
  })

  test('includeCollections filter: a collection not enabled emits nothing, and cannot be joined', async () => {
    const c = await app.client()
    c.send({ type: 'join-collection', collection: 'notes' })
    const refused = await c.next((m) => m.type === 'joined' || m.type === 'error')
    assert.equal(refused.code, 'forbidden')
    await app.payload.create({ collection: 'notes', data: { text: 'n' } })
    await c.expectNothing(300)
  })

  test('a write rolled back by a later hook emits nothing; the next commit does', async () => {
    const c = await app.client()
    await c.joinCollection('posts')
    await assert.rejects(
      app.payload.create({ collection: 'posts', data: { title: 'explode-late' } }),
      /late hook failure/,
    )
    const found = await app.payload.find({
      collection: 'posts',
      where: { title: { equals: 'explode-late' } },
    })
    assert.equal(found.totalDocs, 0, 'the write was rolled back')
    await c.expectNothing(300, 'update')
    await app.payload.create({ collection: 'posts', data: { title: 'after rollback' } })
    assert.equal((await c.next('update')).doc.title, 'after rollback')
  })

  test('writes in an explicit transaction emit on commit, not before, and never on rollback', async () => {
    const c = await app.client()
    await c.joinCollection('posts')
    const db = app.payload.db

    const rolledBack = await db.beginTransaction()
    await app.payload.create({
      collection: 'posts',
      data: { title: 'tx-rollback' },
      req: { transactionID: rolledBack },
    })
    await db.rollbackTransaction(rolledBack)
    await c.expectNothing(300, 'update')

    const committed = await db.beginTransaction()
    await app.payload.create({
      collection: 'posts',
      data: { title: 'tx-1' },
      req: { transactionID: committed },
    })
    await app.payload.create({
      collection: 'posts',
      data: { title: 'tx-2' },
      req: { transactionID: committed },
    })
    await c.expectNothing(200, 'update')
    await db.commitTransaction(committed)
    assert.equal((await c.next('update')).doc.title, 'tx-1')
    assert.equal((await c.next('update')).doc.title, 'tx-2')
  })

  test('drafts stay on the server until published; context.realtime === false skips a write', async () => {
    const c = await app.client()
    await c.joinCollection('articles')
    const draft = await app.payload.create({
      collection: 'articles',
      data: { title: 'secret draft' },
      draft: true,
    })
    await app.payload.update({
      collection: 'articles',
      id: draft.id,
      data: { title: 'still draft' },
      draft: true,
    })
    await c.expectNothing(300, 'update')
    await app.payload.update({
      collection: 'articles',
      id: draft.id,
      data: { title: 'published', _status: 'published' },
    })
    const pub = await c.next('update')
    assert.equal(pub.doc.title, 'published')
    await app.payload.update({
      collection: 'articles',
      id: draft.id,
      data: { title: 'quiet' },
      context: { realtime: false },
    })
    await c.expectNothing(300, 'update')
    const d2 = await app.payload.create({
      collection: 'articles',
      data: { title: 'draft to delete' },
      draft: true,
    })
    await app.payload.delete({ collection: 'articles', id: d2.id })
    const del = await c.next('delete')
    assert.deepEqual(del.doc, { id: d2.id }, 'a deleted draft is announced by id only')
  })

  test('hidden and auth fields never leave the server, also in a populated related user', async () => {
    // A logged-in reader: anonymous sockets see the author as its id (users need a login to read).
    const reader = await createUser(app.payload, 'reader@example.com')
    const c = await app.client({ token: reader.token })
    await c.joinCollection('posts')
    const { user } = await createUser(app.payload, 'author@example.com', {
      name: 'Ann',
      secretNote: 'psst',
      enableAPIKey: true,
      apiKey: 'ann-key-123',
    })
    // The author has a live session, so the populated user in hook docs carries `sessions`.
    const post = await app.payload.create({
      collection: 'posts',
      data: {
        title: 'with author',
        author: user.id,
        internal: 'do not send',
        meta: { summary: 'ok', reviewToken: 'rt' },
        rowHidden: 'rh',
        rowShown: 'rs',
        content: [{ blockType: 'quote', text: 'q', by: user.id, blockSecret: 'bs' }],
      },
    })
    const hookDoc = await app.payload.findByID({
      collection: 'posts',
      id: post.id,
      depth: 2,
      showHiddenFields: true,
    })
    assert.ok(hookDoc.author.sessions?.length, 'precondition: populated user carries sessions')

    const got = await c.next('update')
    assert.equal(got.doc.author.name, 'Ann', 'relation is populated')
    assert.equal(got.doc.author.email, 'author@example.com')
    assert.equal(got.doc.meta.summary, 'ok')
    assert.equal(got.doc.rowShown, 'rs')
    assert.equal(got.doc.content[0].text, 'q')
    assert.equal(got.doc.content[0].by.name, 'Ann')
    assertNoKeys(got, SECRET_KEYS)
  })
})

describe('server started by the app (server.ts style), transactions off', () => {
  let app
  before(async () => {
    app = await startPayload({
      realtime: { includeCollections: ['posts'] },
      transactions: false,
      startServer: 'manual',
    })
  })
  after(async () => app?.stop())

  test('initUWebSocket() after getPayload serves events immediately (no transaction to wait for)', async () => {
    const c = await app.client()
    await c.joinCollection('posts')
    const post = await app.payload.create({ collection: 'posts', data: { title: 'no tx' } })
    const got = await c.next('update')
    assert.equal(String(got.id), String(post.id))
    c.close()
  })
})

describe('disabled plugin', () => {
  let app
  before(async () => {
    app = await startPayload({
      realtime: { disabled: true, includeCollections: ['posts'] },
      startServer: 'manual',
    })
  })
  after(async () => app?.stop())

  test('`disabled: true` adds no hooks: writes emit nothing', async () => {
    const c = await app.client()
    await c.joinCollection('posts')
    await app.payload.create({ collection: 'posts', data: { title: 'silent' } })
    await c.expectNothing(300)
    c.close()
  })
})
