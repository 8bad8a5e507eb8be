// Pure logic of the client SDK (no server): backoff, JWT exp decoding, refresh timing, list updates,
// and the compile-time typing of the SDK and hooks.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import {
  applyDocEvent,
  backoffDelay,
  createClient,
  DEFAULT_BACKOFF,
  jwtExpiry,
  refreshDelay,
} from '../dist/client/index.js'
import { signToken } from './helpers/ws.mjs'

const opts = { initialDelayMs: 100, maxDelayMs: 5000, factor: 2, jitter: 0 }

test('backoff grows by factor from initialDelayMs and is capped at maxDelayMs', () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, opts)),
    [100, 200, 400, 800, 1600, 3200, 5000, 5000],
  )
  assert.equal(backoffDelay(10_000, opts), 5000, 'huge attempt numbers stay finite and capped')
  assert.equal(backoffDelay(3, { ...opts, factor: 1 }), 100)
  assert.equal(backoffDelay(0, { ...opts, initialDelayMs: 0 }), 0)
})

test('jitter draws from [delay*(1-jitter), delay]', () => {
  const j = { ...opts, jitter: 0.5 }
  assert.equal(
    backoffDelay(2, j, () => 0),
    400,
  )
  assert.equal(
    backoffDelay(2, j, () => 0.999999),
    200,
  )
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(3, j)
    assert.ok(d >= 400 && d <= 800, `delay ${d} outside [400, 800]`)
  }
  assert.equal(
    backoffDelay(2, { ...opts, jitter: 7 }, () => 0.5),
    200,
    'jitter is clamped to 1',
  )
  assert.equal(DEFAULT_BACKOFF.maxRetries, Infinity)
})

test('jwtExpiry reads exp from the payload and rejects anything else', () => {
  const token = signToken({ id: 1, exp: 1_900_000_000, email: 'ünï@example.com' }, { key: 'k' })
  assert.equal(jwtExpiry(token), 1_900_000_000)
  assert.equal(jwtExpiry('opaque-api-key'), null)
  assert.equal(jwtExpiry('a.b.c'), null)
  assert.equal(jwtExpiry(`x.${Buffer.from('{"exp":"soon"}').toString('base64url')}.y`), null)
  assert.equal(jwtExpiry(`x.${Buffer.from('{"sub":1}').toString('base64url')}.y`), null)
  assert.equal(jwtExpiry(null), null)
})

test('refreshDelay: lead time before exp, at most half the remaining life, 0 when expired', () => {
  const now = 1_000_000_000_000
  assert.equal(refreshDelay(now / 1000 + 3600, now, 60_000), 3_540_000)
  assert.equal(refreshDelay(now / 1000 + 4, now, 60_000), 2000)
  assert.equal(refreshDelay(now / 1000 - 1, now, 60_000), 0)
  assert.equal(
    refreshDelay(now / 1000 + 10 ** 9, now, 60_000),
    2 ** 31 - 1,
    'capped to what setTimeout honours',
  )
})

test('applyDocEvent creates, updates and deletes by id (string/number agnostic)', () => {
  const a = { id: 1, title: 'a' }
  const b = { id: '2', title: 'b' }
  const list = [a, b]
  const created = applyDocEvent(list, {
    type: 'update',
    operation: 'create',
    collection: 'p',
    id: 3,
    doc: { id: 3, title: 'c' },
  })
  assert.deepEqual(
    created.map((d) => d.id),
    [1, '2', 3],
  )
  const first = applyDocEvent(
    list,
    { type: 'update', operation: 'create', collection: 'p', id: 3, doc: { id: 3 } },
    { insertAt: 'start' },
  )
  assert.deepEqual(
    first.map((d) => d.id),
    [3, 1, '2'],
  )
  const updated = applyDocEvent(list, {
    type: 'update',
    operation: 'update',
    collection: 'p',
    id: '1',
    doc: { id: 1, title: 'A' },
  })
  assert.deepEqual(updated, [{ id: 1, title: 'A' }, b])
  assert.deepEqual(list, [a, b], 'input is not mutated')
  const deleted = applyDocEvent(list, { type: 'delete', operation: 'delete', collection: 'p', id: 2, doc: b })
  assert.deepEqual(deleted, [a])
  const same = applyDocEvent(list, { type: 'delete', operation: 'delete', collection: 'p', id: 9, doc: {} })
  assert.equal(same, list, 'no change returns the same array')
})

test('send without any connection refuses with a RealtimeError', () => {
  class NeverOpens {
    readyState = 0
    send() {}
    close() {}
  }
  const c = createClient({ url: 'ws://127.0.0.1:9/', WebSocket: NeverOpens, autoConnect: false })
  assert.equal(c.state, 'closed')
  assert.throws(() => c.send('x', 1), { name: 'RealtimeError', code: 'closed' })
  // Without options.WebSocket the client takes the global one. Node 22 and later have it, Node 20
  // does not: the refusal is checked with the global taken away, whatever Node runs this.
  const global = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket')
  try {
    delete globalThis.WebSocket
    assert.throws(() => createClient({ url: 'ws://127.0.0.1:9/' }), /no global WebSocket/)
  } finally {
    if (global) Object.defineProperty(globalThis, 'WebSocket', global)
  }
  if (global) {
    const withGlobal = createClient({ url: 'ws://127.0.0.1:9/', autoConnect: false })
    withGlobal.connect() // would throw as above without a WebSocket to use
    assert.equal(withGlobal.state, 'connecting')
    withGlobal.close()
  }
})

test('the URL: relative and http(s) URLs resolve against the page, the token goes in the query', async (t) => {
  const opened = []
  class Recorder {
    readyState = 0
    constructor(url) {
      opened.push(url)
    }
    send() {}
    close() {}
  }
  globalThis.location = { href: 'https://example.com/app/page' }
  t.after(() => delete globalThis.location)
  const clients = [
    createClient({ url: '/realtime', WebSocket: Recorder, token: 'a b&c' }),
    createClient({ url: 'http://127.0.0.1:3002/x?v=1', WebSocket: Recorder }),
    createClient({ url: 'ws://127.0.0.1:3002/', WebSocket: Recorder, token: 't' }),
  ]
  await new Promise((r) => setImmediate(r)) // sockets open after the (async) token step
  for (const c of clients) c.close()
  assert.deepEqual(opened, [
    'wss://example.com/realtime?token=a+b%26c',
    'ws://127.0.0.1:3002/x?v=1',
    'ws://127.0.0.1:3002/?token=t',
  ])
})

test('types: collection slugs and docs are checked (tsc on __test__/types)', () => {
  const project = fileURLToPath(new URL('./types/tsconfig.json', import.meta.url))
  const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url))
  try {
    execFileSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8', stdio: 'pipe' })
  } catch (err) {
    assert.fail(`type check failed:\n${err.stdout}${err.stderr}`)
  }
})
