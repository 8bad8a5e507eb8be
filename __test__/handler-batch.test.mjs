// The JS custom-handler path under batching: messages that arrive while the JS thread is busy
// reach JS in one call; within that call each message is answered on its own (a throw, a hostile
// thrown object, an unserialisable return value or a slow promise touch only their own message),
// and deadlines are kept while the JS thread is blocked. A real server on loopback, real `ws`
// clients (one in a worker thread, so it reads while this thread is blocked).
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { after, before, test } from 'node:test'
import { Worker } from 'node:worker_threads'

import { initUWebSocket } from '../dist/plugin/index.js'
import { JWT_KEY, TestClient } from './helpers/ws.mjs'

// Long enough that a loaded machine reads a burst well within it (the batch tests hold the JS
// thread until the server has read everything, at most BURST_WAIT_MS < HANDLER_TIMEOUT_MS).
const HANDLER_TIMEOUT_MS = 1000
const BURST_WAIT_MS = 800

let m
let url

before(async () => {
  m = await initUWebSocket({
    port: 0,
    host: '127.0.0.1',
    jwtKey: JWT_KEY,
    handlerTimeoutMs: HANDLER_TIMEOUT_MS,
    rateLimit: false,
  })
  url = `ws://127.0.0.1:${m.port}`
})
after(() => m.close())

const connect = async () => {
  const c = await TestClient.connect(url)
  c.welcome = await c.next('welcome')
  return c
}

/** Keeps the JS thread busy (as a busy app would) until the server has read `n` more messages. */
function holdJsUntilRead(before, n) {
  const deadline = Date.now() + BURST_WAIT_MS
  while (m.getStats().messagesIn < before + n) {
    if (Date.now() > deadline) throw new Error(`the server did not read ${n} messages in ${BURST_WAIT_MS} ms`)
  }
  // Counted a moment before it is queued: a little longer, so the last one is queued too.
  const until = Date.now() + 20
  while (Date.now() < until) {}
}

test('messages that arrive while the JS thread is busy reach the handlers in one call', async () => {
  // Every message handled in one JS call sees the same `call` number: the next call comes
  // after the microtask queue has run.
  let call = 0
  let inCall = false
  m.registerCustomHandler('which-call', () => {
    if (!inCall) {
      inCall = true
      call++
      queueMicrotask(() => {
        inCall = false
      })
    }
    return call
  })
  const clients = await Promise.all(Array.from({ length: 10 }, connect))
  const before = m.getStats().messagesIn
  for (const c of clients) for (let i = 0; i < 4; i++) c.send({ type: 'which-call', id: i })
  holdJsUntilRead(before, 40)
  const seen = []
  for (const c of clients) for (let i = 0; i < 4; i++) seen.push((await c.next('reply')).data)
  assert.deepEqual(new Set(seen), new Set([seen[0]]), `40 messages in ${new Set(seen).size} calls`)
  for (const c of clients) c.close()
})

test("a socket's synchronous replies from one batch arrive complete and in message order", async () => {
  m.registerCustomHandler('echo', (_s, data) => data)
  const [a, b] = await Promise.all([connect(), connect()])
  const before = m.getStats().messagesIn
  for (let i = 0; i < 20; i++) {
    a.send({ type: 'echo', id: `a${i}`, data: i })
    b.send({ type: 'echo', id: `b${i}`, data: i })
  }
  holdJsUntilRead(before, 40)
  for (const [c, p] of [
    [a, 'a'],
    [b, 'b'],
  ]) {
    const got = []
    for (let i = 0; i < 20; i++) got.push((await c.next()).id)
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => `${p}${i}`),
    )
  }
  a.close()
  b.close()
})

test('in one batch, a throw, a hostile thrown object, a bad return value and a slow promise touch only their own message', async () => {
  m.registerCustomHandler('echo', (_s, data) => data)
  m.registerCustomHandler('throw-hostile', () => {
    // instanceof, String() and every property read throw.
    throw new Proxy(
      {},
      {
        get() {
          throw new Error('trap')
        },
        getPrototypeOf() {
          throw new Error('trap')
        },
      },
    )
  })
  m.registerCustomHandler('bad-return', () => ({
    toJSON() {
      throw new Error('cannot serialise')
    },
  }))
  m.registerCustomHandler('bigint', () => 1n)
  m.registerCustomHandler('slow', (_s, data) => new Promise((r) => setTimeout(() => r(data), 150)))
  const [a, b, c] = await Promise.all([connect(), connect(), connect()])
  const before = m.getStats().messagesIn
  a.send({ type: 'slow', id: 'a1', data: 'late' })
  a.send({ type: 'echo', id: 'a2', data: 'now' })
  b.send({ type: 'throw-hostile', id: 'b1' })
  b.send({ type: 'echo', id: 'b2', data: 'fine' })
  c.send({ type: 'bad-return', id: 'c1' })
  c.send({ type: 'bigint', id: 'c2' })
  c.send({ type: 'echo', id: 'c3', data: 3 })
  holdJsUntilRead(before, 7)
  // The slow promise delays only its own reply: the echo after it on the same socket comes first.
  assert.deepEqual(await a.next(), { type: 'reply', id: 'a2', data: 'now' })
  assert.deepEqual(await a.next(), { type: 'reply', id: 'a1', data: 'late' })
  const b1 = await b.next('error')
  assert.equal(b1.id, 'b1')
  assert.equal(b1.code, 'handler_failed')
  assert.deepEqual(await b.next('reply'), { type: 'reply', id: 'b2', data: 'fine' })
  const c1 = await c.next('error')
  assert.deepEqual([c1.id, c1.code], ['c1', 'handler_failed'])
  const c2 = await c.next('error')
  assert.deepEqual([c2.id, c2.code], ['c2', 'handler_failed'])
  assert.deepEqual(await c.next('reply'), { type: 'reply', id: 'c3', data: 3 })
  for (const x of [a, b, c]) x.close()
})

test('while a handler blocks the JS thread, waiting messages are answered handler_timeout at their deadline', async () => {
  const BLOCK_MS = HANDLER_TIMEOUT_MS * 2.5
  m.registerCustomHandler('echo', (_s, data) => data)
  m.registerCustomHandler('block', () => {
    const until = Date.now() + BLOCK_MS
    while (Date.now() < until) {}
    return 'done'
  })
  // The client runs in a worker (its own event loop): it sees the answers while this thread is
  // blocked, and reports how long after sending each arrived.
  const w = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads')
    const WebSocket = require('ws')
    const ws = new WebSocket(workerData.url)
    const got = {}
    let sent = 0
    ws.on('message', (raw) => {
      const msg = JSON.parse(raw.toString())
      if (msg.type === 'welcome') {
        sent = Date.now()
        ws.send(JSON.stringify({ type: 'block', id: 'b' }))
        ws.send(JSON.stringify({ type: 'echo', id: 'e', data: 1 }))
        return
      }
      if (msg.id === 'b' || msg.id === 'e') got[msg.id] = { code: msg.code ?? msg.type, after: Date.now() - sent }
      if (got.b && got.e) { parentPort.postMessage(got); ws.close() }
    })`,
    { eval: true, workerData: { url } },
  )
  const [got] = await once(w, 'message')
  await w.terminate()
  for (const id of ['b', 'e']) {
    assert.equal(got[id].code, 'handler_timeout', `${id}: ${JSON.stringify(got)}`)
    // At the deadline (not before it), and long before the JS thread was free again.
    assert.ok(got[id].after >= HANDLER_TIMEOUT_MS - 5, `${id} after ${got[id].after} ms`)
    assert.ok(got[id].after < BLOCK_MS - HANDLER_TIMEOUT_MS / 2, `${id} after ${got[id].after} ms`)
  }
  // The server handles messages again once the JS thread is free.
  const c = await connect()
  c.send({ type: 'echo', id: 'again', data: 2 })
  assert.deepEqual(await c.next('reply'), { type: 'reply', id: 'again', data: 2 })
  c.close()
})
