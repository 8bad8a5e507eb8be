// The in-memory Where evaluator agrees with the database: for every documented operator, on
// text, number, date, select-hasMany and relationship fields, dotted paths into populated
// relations, and/or, each answer `evaluateWhere` gives equals what Payload's SQLite query
// answers for the same document; what it cannot decide it leaves to the database (undefined).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { evaluateWhere } from 'payload-realtime-rs'
import { startPayload } from './helpers/payload.mjs'

const collections = [
  { slug: 'users', auth: true, fields: [{ name: 'name', type: 'text' }] },
  { slug: 'teams', access: { read: () => true }, fields: [{ name: 'name', type: 'text' }] },
  {
    slug: 'items',
    access: { read: () => true },
    fields: [
      { name: 'title', type: 'text' },
      { name: 'count', type: 'number' },
      { name: 'due', type: 'date' },
      { name: 'tags', type: 'select', hasMany: true, options: ['a', 'b', 'c'] },
      { name: 'owner', type: 'relationship', relationTo: 'users' },
      { name: 'team', type: 'relationship', relationTo: 'teams' },
      { name: 'meta', type: 'group', fields: [{ name: 'kind', type: 'text' }] },
    ],
  },
]

describe('evaluateWhere agrees with Payload (SQLite)', () => {
  let app
  const docs = []
  let users
  let teams
  before(async () => {
    app = await startPayload({ collections, realtime: { includeCollections: ['items'] } })
    const { payload } = app
    users = [
      await payload.create({
        collection: 'users',
        data: { email: 'u1@x.io', password: 'pw-123456', name: 'Ann' },
      }),
      await payload.create({
        collection: 'users',
        data: { email: 'u2@x.io', password: 'pw-123456', name: 'Bob' },
      }),
    ]
    teams = [
      await payload.create({ collection: 'teams', data: { name: 'Red Team' } }),
      await payload.create({ collection: 'teams', data: { name: 'blue' } }),
    ]
    const rows = [
      {
        title: 'Hello World',
        count: 3,
        due: '2026-01-02T00:00:00.000Z',
        tags: ['a', 'b'],
        owner: users[0].id,
        team: teams[0].id,
        meta: { kind: 'x' },
      },
      {
        title: 'another thing',
        count: 10,
        due: '2027-06-01T00:00:00.000Z',
        tags: ['c'],
        owner: users[1].id,
        team: teams[1].id,
        meta: { kind: 'y' },
      },
      {
        title: 'world peace',
        count: null,
        due: null,
        tags: [],
        owner: null,
        team: null,
        meta: { kind: null },
      },
    ]
    for (const data of rows) {
      const d = await payload.create({ collection: 'items', data })
      docs.push(await payload.findByID({ collection: 'items', id: d.id, depth: 2 }))
    }
  })
  after(() => app?.stop())

  const wheres = () => [
    { title: { equals: 'Hello World' } },
    { title: { not_equals: 'Hello World' } },
    { title: { like: 'world hello' } },
    { title: { like: 'WORLD' } },
    { title: { contains: 'o w' } },
    { title: { in: ['Hello World', 'world peace'] } },
    { title: { not_in: ['Hello World'] } },
    { count: { greater_than: 3 } },
    { count: { greater_than_equal: 3 } },
    { count: { less_than: 10 } },
    { count: { less_than_equal: 3 } },
    { count: { equals: '3' } },
    { count: { exists: true } },
    { count: { exists: false } },
    { count: { not_equals: 3 } },
    { due: { greater_than: '2026-06-01T00:00:00.000Z' } },
    { due: { less_than_equal: '2026-01-02T00:00:00.000Z' } },
    { tags: { in: ['a'] } },
    { tags: { equals: 'c' } },
    { owner: { equals: users[0].id } },
    { owner: { equals: String(users[1].id) } },
    { owner: { in: [users[0].id, users[1].id] } },
    { owner: { exists: false } },
    { owner: { not_equals: users[0].id } },
    { 'owner.name': { equals: 'Bob' } },
    { 'team.name': { like: 'red' } },
    { 'team.name': { equals: 'blue' } },
    { 'meta.kind': { equals: 'x' } },
    { or: [{ owner: { equals: users[0].id } }, { 'team.name': { equals: 'blue' } }] },
    { and: [{ count: { greater_than: 1 } }, { title: { contains: 'thing' } }] },
    {
      and: [
        { count: { greater_than: 1 } },
        { or: [{ 'meta.kind': { equals: 'x' } }, { tags: { in: ['c'] } }] },
      ],
    },
    { title: { equals: 'Hello World' }, count: { equals: 3 } },
  ]

  test('every in-memory answer equals the database answer', async () => {
    let decided = 0
    for (const where of wheres()) {
      for (const doc of docs) {
        const mem = evaluateWhere(where, doc)
        if (mem === undefined) continue
        decided++
        const { totalDocs } = await app.payload.count({
          collection: 'items',
          where: { and: [{ id: { equals: doc.id } }, where] },
        })
        assert.equal(mem, totalDocs > 0, `${JSON.stringify(where)} on "${doc.title}"`)
      }
    }
    // Most of the matrix is decided in memory (the DB fallback is for the rest).
    assert.ok(decided >= wheres().length * docs.length - 6, `decided ${decided}`)
  })

  test('undecidable in memory: other operators, unpopulated relations, missing fields', () => {
    const shallow = { ...docs[0], team: docs[0].team.id }
    assert.equal(evaluateWhere({ 'team.name': { equals: 'Red Team' } }, shallow), undefined)
    assert.equal(evaluateWhere({ title: { near: '1,2' } }, docs[0]), undefined)
    assert.equal(evaluateWhere({ nothere: { equals: 1 } }, docs[0]), undefined)
    // …but an id path through an unpopulated relation is known.
    assert.equal(evaluateWhere({ 'team.id': { equals: docs[0].team.id } }, shallow), true)
    // or: one true decides even next to an undecidable clause; and: one false decides.
    assert.equal(evaluateWhere({ or: [{ title: { near: 'x' } }, { count: { equals: 3 } }] }, docs[0]), true)
    assert.equal(evaluateWhere({ and: [{ title: { near: 'x' } }, { count: { equals: 4 } }] }, docs[0]), false)
  })
})
