// The plugin's lifecycle: a realtime failure never fails Payload and is never silent; only
// serving processes serve; a hot reload keeps the server (or restarts it when its options
// changed); SIGTERM closes sockets 1001 and still runs the app's own handler.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { buildConfig, reload } from 'payload'
import {
  connect,
  freePort,
  getUWebSocketManager,
  SECRET,
  startPayload,
  startProcess,
  testCollections,
  uWebSocketPlugin,
} from './helpers/payload.mjs'

const fixture = fileURLToPath(new URL('./fixtures/lifecycle-app.mjs', import.meta.url))
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-lifecycle-'))
after(() => fs.rmSync(tmp, { recursive: true, force: true }))

let dbSeq = 0
/** The fixture app in its own process; `env` adds to PAYLOAD_REALTIME_PORT and DB_FILE. */
async function startApp(port, env = {}) {
  return startProcess(process.execPath, [fixture], {
    env: { PAYLOAD_REALTIME_PORT: String(port), DB_FILE: path.join(tmp, `app-${++dbSeq}.db`), ...env },
    ready: /READY/,
    stdin: 'pipe',
  })
}

describe('realtime failures never fail Payload, and are never silent', () => {
  test('port in use at start: init succeeds, one error with the fix, then the server binds once the port frees', async () => {
    const port = await freePort()
    const blocker = net.createServer()
    await new Promise((r) => blocker.listen(port, '127.0.0.1', r))
    const app = await startApp(port)
    try {
      await app.waitFor(/could not listen on 127\.0\.0\.1:\d+: another process holds the port/, 5000)
      // Backoff 0.5 s, 1 s, 2 s: by 2.5 s at least three retries failed, none logged again.
      await new Promise((r) => setTimeout(r, 2500))
      assert.equal(app.output().match(/could not listen/g).length, 1, 'logged once')
      assert.match(app.output(), /"level":50/, 'at error level')
      // An event now finds no server: warned, not dropped silently.
      app.child.stdin.write('create early\n')
      await app.waitFor(
        /event\(s\) not delivered, the last create posts:\d+: the server could not start and is retrying/,
        5000,
      )
      await new Promise((r) => blocker.close(r))
      // The next retry is at most 30 s away (backoff cap); at 4 s of retries it is ≤ 4 s.
      await app.waitFor(/WebSocket server listening on 127\.0\.0\.1:\d+/, 10_000)
      const c = await connect(`ws://127.0.0.1:${port}/`)
      await c.joinCollection('posts')
      app.child.stdin.write('create late\n')
      assert.equal((await c.next('update')).doc.title, 'late')
      c.close()
    } finally {
      blocker.close()
      await app.stop()
    }
  })

  test('a bad option: init succeeds, one error naming the option, no server', async () => {
    const app = await startApp(await freePort(), { REALTIME_PATH: 'no-slash' })
    try {
      await app.waitFor(/options are invalid; fix the plugin options/, 5000)
      assert.match(app.output(), /path must start with/)
      assert.doesNotMatch(app.output(), /listening/)
    } finally {
      await app.stop()
    }
  })
})

describe('only serving processes serve', () => {
  test('`next build` (NEXT_PHASE) never binds the port, says why, and an event there is warned about', async () => {
    const port = await freePort()
    const app = await startApp(port, { NEXT_PHASE: 'phase-production-build' })
    try {
      await app.waitFor(/WebSocket server not started in this process: `next build`/, 5000)
      app.child.stdin.write('create during build\n')
      await app.waitFor(/not delivered.*this process does not serve WebSockets/, 5000)
      // Nothing listens: the port is free.
      const srv = net.createServer()
      await new Promise((resolve, reject) => {
        srv.once('error', reject)
        srv.listen(port, '127.0.0.1', resolve)
      })
      srv.close()
    } finally {
      await app.stop()
    }
  })

  test('PAYLOAD_REALTIME=off never binds either', async () => {
    const app = await startApp(await freePort(), { PAYLOAD_REALTIME: 'off' })
    try {
      await app.waitFor(/not started in this process: PAYLOAD_REALTIME=off/, 5000)
    } finally {
      await app.stop()
    }
  })
})

describe('SIGTERM', () => {
  test('sockets get 1001 and the process exits by the signal when the app has no handler', async () => {
    const port = await freePort()
    const app = await startApp(port)
    await app.waitFor(/listening/, 5000)
    const c = await connect(`ws://127.0.0.1:${port}/`)
    const closed = c.expectClose(10_000)
    const exit = await app.stop('SIGTERM')
    assert.equal(await closed, 1001)
    assert.deepEqual(exit, { code: null, signal: 'SIGTERM' })
  })

  test("the app's own SIGTERM handler still runs (and its exit waits for the 1001 close)", async () => {
    const port = await freePort()
    const app = await startApp(port, { APP_SIGNAL_HANDLER: '1' })
    await app.waitFor(/listening/, 5000)
    const c = await connect(`ws://127.0.0.1:${port}/`)
    const closed = c.expectClose(10_000)
    const exit = await app.stop('SIGTERM')
    assert.equal(await closed, 1001)
    assert.match(app.output(), /APP HANDLER RAN/)
    assert.deepEqual(exit, { code: 0, signal: null })
  })
})

describe('hot reload (Payload `reload`, as `next dev` runs it)', () => {
  test('same options: the server and its sockets stay and events flow from the new config; changed options restart it with a log line', async () => {
    const app = await startPayload({ realtime: { includeCollections: ['posts'] } })
    // Payload keeps its logger across reloads: listen to its info lines.
    const logs = []
    const info = app.payload.logger.info.bind(app.payload.logger)
    app.payload.logger.info = (...args) => {
      logs.push(args.map((a) => (typeof a === 'string' ? a : (a?.msg ?? ''))).join(' '))
      return info(...args)
    }
    const first = app.manager
    const c = await app.client()
    await c.joinCollection('posts')
    // A reloaded config: the same collections and a new plugin instance (the db is Payload's own,
    // kept across reloads; the adapter given here is never connected).
    const configFor = (realtime) =>
      buildConfig({
        secret: SECRET,
        telemetry: false,
        typescript: { autoGenerate: false },
        graphQL: { disable: true },
        db: sqliteAdapter({ client: { url: 'file::memory:' } }),
        collections: testCollections(),
        plugins: [uWebSocketPlugin({ port: 0, host: '127.0.0.1', ...realtime })],
      })
    try {
      // Reload with the same server options: same server, socket kept, events flow.
      await reload(await configFor({ includeCollections: ['posts'] }), app.payload, true)
      assert.equal(getUWebSocketManager(), first, 'same server')
      assert.ok(
        logs.some((l) => /config reloaded: WebSocket server and sockets kept/.test(l)),
        'reload logged',
      )
      await app.payload.create({ collection: 'posts', data: { title: 'after reload' } })
      assert.equal((await c.next('update')).doc.title, 'after reload')

      // Reload with a changed server option: restarted, said so; the old socket got 1001.
      await reload(await configFor({ includeCollections: ['posts'], maxConnections: 7 }), app.payload, true)
      const second = getUWebSocketManager()
      assert.notEqual(second, first, 'restarted')
      assert.equal(await c.expectClose(5000), 1001)
      assert.ok(
        logs.some((l) => /server options changed \(maxConnections\): restarting/.test(l)),
        `restart logged:\n${logs.join('')}`,
      )
      const c2 = await connect(`ws://127.0.0.1:${second.port}/`)
      await c2.joinCollection('posts')
      await app.payload.create({ collection: 'posts', data: { title: 'after restart' } })
      assert.equal((await c2.next('update')).doc.title, 'after restart')
      c2.close()
    } finally {
      await app.stop()
    }
  })
})
