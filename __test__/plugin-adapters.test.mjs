// Every write emits whatever the database adapter: SQLite with its default options (no
// transactions), SQLite with `transactionOptions`, and a real PostgreSQL. Covers documents whose
// relationships get populated (Payload's dataloader JSON-round-trips `req.transactionID`, which
// turned a pending Promise into `{}`), nested writes that pass `req`, bulk writes by `where`,
// drafts and autosave, rollbacks, and the after-commit bookkeeping returning to zero.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { postgresAdapter } from '@payloadcms/db-postgres'
import {
  createPostgresDatabase,
  createUser,
  lateFailurePlugin,
  startPayload,
  testCollections,
} from './helpers/payload.mjs'

const pages = {
  slug: 'pages',
  access: { read: () => true },
  versions: { drafts: { autosave: true } },
  fields: [{ name: 'title', type: 'text' }],
}

// A nested write: creating a post titled `nested` creates a note inside the same request.
const nestedHook = {
  afterChange: [
    async ({ doc, operation, req }) => {
      if (operation === 'create' && doc.title === 'nested')
        await req.payload.create({ collection: 'notes', data: { text: `for ${doc.id}` }, req })
    },
  ],
}

const ADAPTERS = [
  { name: 'SQLite with default options (no transactionOptions)', transactions: false },
  { name: 'SQLite with transactionOptions', transactions: true },
  { name: 'PostgreSQL (real server)', postgres: true },
]

for (const adapter of ADAPTERS) {
  describe(`every write emits: ${adapter.name}`, () => {
    let app
    let pg
    let author
    let authorToken
    before(async () => {
      let db
      if (adapter.postgres) {
        pg = await createPostgresDatabase()
        if (!pg) return
        db = postgresAdapter({ pool: { connectionString: pg.url }, push: true })
      }
      app = await startPayload({
        db,
        transactions: adapter.transactions,
        collections: [...testCollections(), pages],
        hooks: { posts: nestedHook },
        plugins: [lateFailurePlugin],
        realtime: { collections: { posts: {}, notes: {}, pages: {} } },
      })
      const ann = await createUser(app.payload, `author-${adapter.transactions}@example.com`, { name: 'Ann' })
      author = ann.user
      authorToken = ann.token
    })
    after(async () => {
      // Payload's destroy() leaves the pg pool open, with a client it never releases: dropping the
      // database ends those connections, which the pool reports as errors (ignored here).
      const pool = app?.payload.db.pool
      pool?.on('error', () => {})
      await app?.stop()
      await pg?.stop()
      await Promise.race([pool?.end(), new Promise((r) => setTimeout(r, 1000))])
    })
    const pending = () => app.manager.getStats().pendingAfterCommit

    for (const depth of [0, 1, 2]) {
      test(`create/update/delete of a post with an author at depth ${depth} emit; nothing stays pending`, async (t) => {
        if (!app) return t.skip('no database')
        // Ann's socket: users are readable only when logged in, so she sees herself populated.
        const c = await app.client({ token: authorToken })
        await c.joinCollection('posts')
        const post = await app.payload.create({
          collection: 'posts',
          data: { title: `d${depth}`, author: author.id },
          depth,
        })
        const created = await c.next('update')
        assert.equal(created.operation, 'create')
        assert.equal(created.id, post.id)
        if (depth > 0) assert.equal(created.doc.author.name, 'Ann', 'the author is populated')
        await app.payload.update({ collection: 'posts', id: post.id, data: { title: `d${depth}!` }, depth })
        const updated = await c.next('update')
        assert.equal(updated.operation, 'update')
        assert.equal(updated.doc.title, `d${depth}!`)
        await app.payload.delete({ collection: 'posts', id: post.id, depth })
        const deleted = await c.next('delete')
        assert.equal(deleted.id, post.id)
        assert.equal(pending(), 0, 'after-commit bookkeeping is empty again')
      })
    }

    test('a nested write that passes req emits, as does its parent', async (t) => {
      if (!app) return t.skip('no database')
      const c = await app.client()
      await c.joinCollection('posts')
      await c.joinCollection('notes')
      const post = await app.payload.create({
        collection: 'posts',
        data: { title: 'nested', author: author.id },
      })
      const got = [await c.next((m) => m.type === 'update'), await c.next((m) => m.type === 'update')]
      assert.deepEqual(got.map((m) => m.collection).sort(), ['notes', 'posts'])
      assert.equal(got.find((m) => m.collection === 'notes').doc.text, `for ${post.id}`)
      assert.equal(pending(), 0)
    })

    test('bulk update and delete by where emit one event per document', async (t) => {
      if (!app) return t.skip('no database')
      const c = await app.client()
      await c.joinCollection('posts')
      for (const i of [1, 2, 3])
        await app.payload.create({
          collection: 'posts',
          data: { title: `bulk ${i}`, team: 'bulk', author: author.id },
        })
      for (let i = 0; i < 3; i++) await c.next('update')
      const where = { team: { equals: 'bulk' } }
      const res = await app.payload.update({ collection: 'posts', where, data: { rowShown: 'x' } })
      assert.equal(res.docs.length, 3)
      const updates = [await c.next('update'), await c.next('update'), await c.next('update')]
      assert.ok(updates.every((m) => m.operation === 'update' && m.doc.rowShown === 'x'))
      await app.payload.delete({ collection: 'posts', where })
      const deletes = [await c.next('delete'), await c.next('delete'), await c.next('delete')]
      assert.deepEqual(deletes.map((m) => m.id).sort(), res.docs.map((d) => d.id).sort())
      assert.equal(pending(), 0)
    })

    test('drafts and autosave stay quiet; publishing emits', async (t) => {
      if (!app) return t.skip('no database')
      const c = await app.client()
      await c.joinCollection('pages')
      const page = await app.payload.create({ collection: 'pages', data: { title: 'draft' }, draft: true })
      await app.payload.update({
        collection: 'pages',
        id: page.id,
        data: { title: 'autosaved' },
        draft: true,
        autosave: true,
      })
      await c.expectNothing(300, 'update')
      await app.payload.update({
        collection: 'pages',
        id: page.id,
        data: { title: 'live', _status: 'published' },
      })
      assert.equal((await c.next('update')).doc.title, 'live')
      assert.equal(pending(), 0)
    })

    test('a write rolled back by a later hook emits nothing; the next one does', async (t) => {
      if (!app) return t.skip('no database')
      const c = await app.client()
      await c.joinCollection('posts')
      await assert.rejects(
        app.payload.create({ collection: 'posts', data: { title: 'explode-late', author: author.id } }),
        /late hook failure/,
      )
      if (adapter.transactions === false) {
        // Without transactions the row stays: Payload cannot undo it, and the event says so.
        assert.equal((await c.next('update')).doc.title, 'explode-late')
      } else {
        await c.expectNothing(300, 'update')
      }
      await app.payload.create({ collection: 'posts', data: { title: 'after', author: author.id } })
      assert.equal((await c.next('update')).doc.title, 'after')
      assert.equal(pending(), 0)
    })
  })
}
