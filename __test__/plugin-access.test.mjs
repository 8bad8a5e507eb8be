// Events and joins obey Payload's read access by default: each socket receives exactly what
// `GET /api/<collection>/<id>` (Payload's own REST handler, same user) shows it, field for
// field — an owner-based Where, a Where through a relationship path, a public collection, a
// field with admin-only read access, populated relations whose own access applies — for users
// A and B, an admin and an anonymous socket; join refusals; one access evaluation per distinct
// user per event.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { AUTH_SECRET_KEYS, realtimeAccessStats } from 'payload-realtime-rs'
import { connect, createUser, startPayload } from './helpers/payload.mjs'

const adminOnly = ({ req: { user } }) => user?.role === 'admin'
/** Calls of the notes collection's access.read, per user id ('anon' for null). */
const notesReads = []

const collections = [
  {
    slug: 'users',
    auth: true,
    fields: [
      { name: 'role', type: 'select', options: ['admin', 'user'], defaultValue: 'user' },
      { name: 'teamName', type: 'text' },
      { name: 'phone', type: 'text', access: { read: adminOnly } },
    ],
  },
  { slug: 'teams', access: { read: () => true }, fields: [{ name: 'name', type: 'text' }] },
  {
    slug: 'notes',
    access: {
      read: ({ req: { user } }) => {
        notesReads.push(user ? user.id : 'anon')
        return user ? { owner: { equals: user.id } } : false
      },
    },
    fields: [
      { name: 'title', type: 'text' },
      { name: 'owner', type: 'relationship', relationTo: 'users' },
      { name: 'secret', type: 'text', access: { read: adminOnly } },
    ],
  },
  {
    slug: 'projects',
    // Through a relationship path: the project's team's name is the user's team.
    access: {
      read: ({ req: { user } }) => (user ? { 'team.name': { equals: user.teamName ?? '' } } : false),
    },
    fields: [
      { name: 'name', type: 'text' },
      { name: 'team', type: 'relationship', relationTo: 'teams' },
    ],
  },
  // Not readable through REST at all, but its events are opted out of the check.
  { slug: 'logs', access: { read: () => false }, fields: [{ name: 'message', type: 'text' }] },
  // Not readable through REST either; an `authorize` function decides instead.
  { slug: 'tickets', access: { read: () => false }, fields: [{ name: 'subject', type: 'text' }] },
  {
    slug: 'announcements',
    access: { read: () => true },
    fields: [
      { name: 'title', type: 'text' },
      { name: 'adminNote', type: 'text', access: { read: adminOnly } },
      { name: 'author', type: 'relationship', relationTo: 'users' },
    ],
  },
]

describe('default read access against Payload REST (SQLite)', () => {
  let app
  const users = {}
  const sockets = {}
  const joined = {
    notes: ['A', 'A2', 'B', 'admin'],
    projects: ['A', 'A2', 'B', 'admin'],
    announcements: ['A', 'A2', 'B', 'admin', 'anon'],
  }

  /**
   * What GET /api/<collection>/<id> answers `who` (null: not readable), less the auth fields
   * that realtime never sends whoever reads (REST shows users their own `sessions`).
   */
  async function restView(who, collection, id) {
    const headers = who === 'anon' ? {} : { authorization: `JWT ${users[who].token}` }
    const res = await app.rest(`/${collection}/${id}`, { headers })
    if (res.status !== 200) return null
    return withoutAuthSecrets(await res.json())
  }
  const withoutAuthSecrets = (v) => {
    if (Array.isArray(v)) return v.map(withoutAuthSecrets)
    if (!v || typeof v !== 'object') return v
    return Object.fromEntries(
      Object.entries(v)
        .filter(([k]) => !AUTH_SECRET_KEYS.has(k))
        .map(([k, x]) => [k, withoutAuthSecrets(x)]),
    )
  }

  before(async () => {
    app = await startPayload({
      collections,
      realtime: {
        includeCollections: ['notes', 'projects', 'announcements'],
        collections: { logs: { access: 'none' }, tickets: {} },
        authorize: { tickets: (_user, event) => event.doc.subject === 'open' },
      },
    })
    const { payload } = app
    users.A = await createUser(payload, 'a@x.io', { teamName: 'red', phone: '111' })
    users.B = await createUser(payload, 'b@x.io', { teamName: 'blue', phone: '222' })
    users.admin = await createUser(payload, 'admin@x.io', { role: 'admin', teamName: 'red', phone: '999' })
    for (const who of ['A', 'B', 'admin']) sockets[who] = await app.client({ token: users[who].token })
    sockets.A2 = await app.client({ token: users.A.token }) // a second socket of A
    sockets.anon = await app.client()
    for (const [slug, whos] of Object.entries(joined))
      for (const who of whos) await sockets[who].joinCollection(slug)
  })
  after(() => app?.stop())

  test('anonymous and not-enabled joins are refused with forbidden, and no joined', async () => {
    for (const [who, msg] of [
      ['anon', { type: 'join-collection', collection: 'notes' }],
      ['anon', { type: 'join-collection', collection: 'projects' }],
      ['A', { type: 'join-collection', collection: 'teams' }], // readable, but not enabled
      ['A', { type: 'join-collection', collection: 'users' }],
    ]) {
      sockets[who].send(msg)
      const answer = await sockets[who].next((m) => m.type === 'joined' || m.type === 'error')
      assert.equal(answer.type, 'error', `${who} ${JSON.stringify(msg)}`)
      assert.equal(answer.code, 'forbidden')
    }
    assert.deepEqual(app.manager.getLocalRoomMembers('collection:teams'), [])
  })

  test('join-doc: only who can read that document', async () => {
    const { payload } = app
    const note = await payload.create({
      collection: 'notes',
      data: { title: 'join-doc probe', owner: users.A.user.id },
    })
    const c = {
      A: await connect(app.url, { token: users.A.token }),
      B: await connect(app.url, { token: users.B.token }),
    }
    try {
      const ack = await c.A.join({ type: 'join-doc', collection: 'notes', id: String(note.id) })
      assert.equal(ack.room, `doc:notes:${note.id}`)
      c.B.send({ type: 'join-doc', collection: 'notes', id: String(note.id) })
      const refused = await c.B.next((m) => m.type === 'joined' || m.type === 'error')
      assert.equal(refused.code, 'forbidden')
    } finally {
      c.A.close()
      c.B.close()
    }
  })

  test('each socket gets exactly what REST shows its user, field for field', async () => {
    const { payload } = app
    const red = await payload.create({ collection: 'teams', data: { name: 'red' } })
    const blue = await payload.create({ collection: 'teams', data: { name: 'blue' } })
    const created = []
    const make = async (collection, data) => {
      const doc = await payload.create({ collection, data })
      created.push({ collection, id: doc.id })
      return doc
    }
    await make('notes', { title: 'A private', owner: users.A.user.id, secret: 's-a' })
    await make('notes', { title: 'B private', owner: users.B.user.id, secret: 's-b' })
    await make('projects', { name: 'red project', team: red.id })
    await make('projects', { name: 'blue project', team: blue.id })
    await make('announcements', { title: 'hello', adminNote: 'for admins', author: users.A.user.id })
    // Sentinels: one per reader of each collection, so each socket knows its stream is complete
    // (events of one collection reach a socket in order).
    const sentinels = new Map()
    const sentinel = async (collection, data, readers) => {
      const doc = await payload.create({ collection, data: { ...data } })
      for (const who of readers) sentinels.set(`${who}:${collection}`, doc.id)
    }
    await sentinel('notes', { title: 'end', owner: users.A.user.id }, ['A', 'A2'])
    await sentinel('notes', { title: 'end', owner: users.B.user.id }, ['B'])
    await sentinel('notes', { title: 'end', owner: users.admin.user.id }, ['admin'])
    await sentinel('projects', { name: 'end', team: red.id }, ['A', 'A2', 'admin'])
    await sentinel('projects', { name: 'end', team: blue.id }, ['B'])
    await sentinel('announcements', { title: 'end' }, ['A', 'A2', 'B', 'admin', 'anon'])

    for (const [who, socket] of Object.entries(sockets)) {
      const restUser = who === 'A2' ? 'A' : who
      const want = new Set(
        Object.entries(joined)
          .filter(([, w]) => w.includes(who))
          .map(([c]) => c),
      )
      const got = new Map()
      while (want.size) {
        const m = await socket.next('update', 5000)
        if (sentinels.get(`${who}:${m.collection}`) === m.id) want.delete(m.collection)
        else got.set(`${m.collection}:${m.id}`, m.doc)
      }
      for (const { collection, id } of created) {
        if (!joined[collection].includes(who)) continue
        const rest = await restView(restUser, collection, id)
        assert.deepEqual(got.get(`${collection}:${id}`) ?? null, rest, `${who} ${collection}:${id}`)
      }
      const expected = (
        await Promise.all(
          created
            .filter(({ collection }) => joined[collection].includes(who))
            .map(async (c) =>
              (await restView(restUser, c.collection, c.id)) ? `${c.collection}:${c.id}` : null,
            ),
        )
      ).filter(Boolean)
      const ofThisTest = new Set(created.map((c) => `${c.collection}:${c.id}`))
      const received = [...got.keys()].filter((k) => ofThisTest.has(k))
      assert.deepEqual(received.sort(), expected.sort(), `${who} got exactly the readable events`)
    }
    // The test proves something: the users do see different things.
    const annA = await restView('A', 'announcements', created[4].id)
    const annAdmin = await restView('admin', 'announcements', created[4].id)
    assert.equal(annA.adminNote, undefined)
    assert.equal(annAdmin.adminNote, 'for admins')
    assert.equal(annAdmin.author.phone, '111')
    assert.equal(annA.author.phone, undefined)
    assert.equal(
      await restView('anon', 'announcements', created[4].id).then((d) => d.author),
      users.A.user.id,
    )
  })

  test('updates and deletes: judged like REST before the delete; one read check per distinct user', async () => {
    const { payload } = app
    const note = await payload.create({ collection: 'notes', data: { title: 'v1', owner: users.B.user.id } })
    for (const who of ['B']) await sockets[who].next((m) => m.id === note.id)
    const before = { B: await restView('B', 'notes', note.id), A: await restView('A', 'notes', note.id) }
    assert.equal(before.A, null)
    notesReads.length = 0
    const statsBefore = realtimeAccessStats()
    await payload.delete({ collection: 'notes', id: note.id })
    const del = await sockets.B.next((m) => m.type === 'delete' && m.id === note.id)
    assert.deepEqual(del.doc, before.B)
    // One access.read call per distinct user in the room (A has two sockets): A, B, admin.
    assert.equal(notesReads.length, 3, `calls: ${notesReads}`)
    assert.deepEqual(
      notesReads.map(String).sort(),
      [users.A.user.id, users.B.user.id, users.admin.user.id].map(String).sort(),
    )
    const s = realtimeAccessStats()
    assert.equal(s.whereQueries - statsBefore.whereQueries, 0, 'decided in memory')
    // A and admin did not get it: B's sentinel-free check — the next note event for A is its own.
    const mine = await payload.create({
      collection: 'notes',
      data: { title: 'after', owner: users.A.user.id },
    })
    const nextForA = await sockets.A.next((m) => m.collection === 'notes')
    assert.equal(nextForA.id, mine.id)
  })

  test("access: 'none' opts a collection out: everyone in its rooms gets its events", async () => {
    const c = await connect(app.url)
    try {
      await c.joinCollection('logs')
      const log = await app.payload.create({ collection: 'logs', data: { message: 'public anyway' } })
      const got = await c.next('update')
      assert.equal(got.id, log.id)
      assert.equal(await restView('anon', 'logs', log.id), null, 'REST would refuse it')
    } finally {
      c.close()
    }
  })

  test('an authorize function replaces the read check for its collection', async () => {
    const c = await connect(app.url)
    try {
      await c.joinCollection('tickets')
      await app.payload.create({ collection: 'tickets', data: { subject: 'closed' } })
      const open = await app.payload.create({ collection: 'tickets', data: { subject: 'open' } })
      assert.equal((await c.next('update')).id, open.id)
    } finally {
      c.close()
    }
  })

  test("a user's changed role applies to the next event (user documents are re-read)", async () => {
    const { payload } = app
    const note = () =>
      payload.create({
        collection: 'notes',
        data: { title: 'role', owner: users.B.user.id, secret: 'for admins' },
      })
    const first = await note()
    assert.equal((await sockets.B.next((m) => m.id === first.id)).doc.secret, undefined)
    await payload.update({ collection: 'users', id: users.B.user.id, data: { role: 'admin' } })
    const second = await note()
    const got = await sockets.B.next((m) => m.id === second.id)
    assert.equal(got.doc.secret, 'for admins')
    assert.deepEqual(got.doc, await restView('B', 'notes', second.id))
    await payload.update({ collection: 'users', id: users.B.user.id, data: { role: 'user' } })
  })

  test('a Where the evaluator cannot decide in memory falls back to one counted query', async () => {
    const { payload } = app
    const blue = await payload.find({ collection: 'teams', where: { name: { equals: 'blue' } } })
    // depth 0: the team is an id, so `team.name` needs the database.
    const before = realtimeAccessStats()
    const p = await payload.create({
      collection: 'projects',
      data: { name: 'shallow', team: blue.docs[0].id },
      depth: 0,
    })
    const got = await sockets.B.next((m) => m.collection === 'projects' && m.id === p.id)
    assert.equal(got.doc.name, 'shallow')
    const after = realtimeAccessStats()
    // Identical Where results are evaluated once per event: B's and the red users' Where differ (2 queries at most).
    assert.ok(after.whereQueries - before.whereQueries >= 1 && after.whereQueries - before.whereQueries <= 2)
    // A red user did not get it: its next project event is the red one created after.
    const red = await payload.find({ collection: 'teams', where: { name: { equals: 'red' } } })
    const mine = await payload.create({
      collection: 'projects',
      data: { name: 'red2', team: red.docs[0].id },
    })
    assert.equal((await sockets.A.next((m) => m.collection === 'projects')).id, mine.id)
  })
})
