// examples/next-app (Payload 3 on Next.js 16, the official blank template's shape, SQLite with its
// default options) built and run for real: one Turbopack `next build` (standalone output) while
// another process holds the realtime port, `payload run` (the CLI never binds), `next start`
// (server listening without any request, Chromium sees posts with their author live through the
// one-origin path, SIGTERM gives 1001), then the standalone server with the build's node_modules
// moved away. The package comes in as `npm run pack:local` tarballs (scripts/test.sh:
// prepare_next_app).
import assert from 'node:assert/strict'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { connect, freePort, launchChromium, startProcess } from './helpers/payload.mjs'

const app = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../examples/next-app')
const bin = (name) => path.join(app, 'node_modules/.bin', name)
const ready = fs.existsSync(path.join(app, 'node_modules/payload-realtime-rs/dist/next/index.js'))
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-next-'))
const DB = `file:${path.join(tmp, 'app.db')}`

/** Resolves when something accepts TCP connections on `port` (polling every 25 ms), else throws after `ms`. */
async function listening(port, ms) {
  const deadline = Date.now() + ms
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

async function rest(base, method, p, body) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  })
  assert.ok(res.ok, `${method} ${p}: HTTP ${res.status} ${await res.clone().text()}`)
  return res.json()
}

describe('examples/next-app on Next.js 16', {
  skip: !ready && 'run scripts/test.sh (prepare_next_app) first',
}, () => {
  let rtPort
  let author
  before(
    async () => {
      if (!ready) return
      assert.notEqual(process.env.CI === 'true' && !ready, true)
      rtPort = await freePort()
      // The app "already runs": its realtime port is held while the build runs.
      // NEXT_APP_REUSE_BUILD=1 (local iteration only, never in CI) keeps an existing build.
      const reuse =
        process.env.NEXT_APP_REUSE_BUILD === '1' && fs.existsSync(path.join(app, '.next/standalone'))
      const holder = net.createServer()
      await new Promise((r) => holder.listen(rtPort, '127.0.0.1', r))
      try {
        if (!reuse) await buildWhilePortHeld()
      } finally {
        holder.close()
      }
      async function buildWhilePortHeld() {
        const build = await startProcess(bin('next'), ['build'], {
          cwd: app,
          env: {
            NEXT_OUTPUT: 'standalone',
            PAYLOAD_REALTIME_PORT: String(rtPort),
            NEXT_TELEMETRY_DISABLED: '1',
          },
        })
        const exit = await build.exited
        assert.equal(exit.code, 0, `next build failed:\n${build.output().slice(-4000)}`)
        assert.doesNotMatch(build.output(), /WebSocket server listening|EADDR/)
      }
      // Schema (outside production Payload pushes it) and the author, through the payload CLI.
      const seed = await startProcess(bin('payload'), ['run', 'src/seed.ts'], {
        cwd: app,
        env: { DATABASE_URL: DB, PAYLOAD_REALTIME_PORT: String(rtPort) },
      })
      assert.equal((await seed.exited).code, 0, seed.output())
      assert.match(seed.output(), /SEEDED author (\d+)/)
      assert.doesNotMatch(seed.output(), /listening/, 'the CLI never serves')
      author = Number(/SEEDED author (\d+)/.exec(seed.output())[1])
    },
    { timeout: 400_000 },
  )
  after(() => fs.rmSync(tmp, { recursive: true, force: true }))

  test('no absolute build path in any server bundle', () => {
    const hits = []
    const walk = (d) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const f = path.join(d, e.name)
        if (e.isDirectory()) walk(f)
        else if (f.endsWith('.js') && fs.readFileSync(f, 'utf8').includes(app)) hits.push(f)
      }
    }
    walk(path.join(app, '.next/server'))
    assert.deepEqual(hits, [])
  })

  test('next start: listening without a request; Chromium sees a post with its author live (one origin); SIGTERM gives 1001', {
    timeout: 120_000,
  }, async () => {
    const port = await freePort()
    const server = await startProcess(bin('next'), ['start', '-p', String(port), '-H', '127.0.0.1'], {
      cwd: app,
      env: { DATABASE_URL: DB, PAYLOAD_REALTIME_PORT: String(rtPort) },
      ready: /Ready in/,
      timeoutMs: 60_000,
    })
    const browser = await launchChromium('next-app live page')
    try {
      // instrumentation.ts starts Payload at server start: the port opens without any request.
      await listening(rtPort, 1000 + 15_000) // Payload's init on a loaded 2-core machine: margin
      const base = `http://127.0.0.1:${port}`
      const direct = await connect(`ws://127.0.0.1:${rtPort}`, { path: '/realtime' })
      await direct.joinCollection('posts')
      const viaOrigin = await connect(`ws://127.0.0.1:${port}`, { path: '/realtime' })
      await viaOrigin.joinCollection('posts')

      if (browser) {
        const page = await browser.context.newPage()
        const res = await page.goto(base, { waitUntil: 'domcontentloaded' })
        assert.equal(res.status(), 200)
        assert.match(await res.text(), /realtime: /, 'the hooks rendered on the server')
        await page.waitForSelector('#state[data-state="open"]', { timeout: 15_000 })
        const created = (await rest(base, 'POST', '/api/posts', { title: 'live one', author })).doc
        await page.waitForSelector(`li[data-id="${created.id}"]:has-text("live one by Ann")`, {
          timeout: 1000,
        })
        await rest(base, 'PATCH', `/api/posts/${created.id}`, { title: 'live two' })
        await page.waitForSelector(`li[data-id="${created.id}"]:has-text("live two")`, { timeout: 1000 })
        await rest(base, 'DELETE', `/api/posts/${created.id}`)
        await page.waitForSelector(`li[data-id="${created.id}"]`, { state: 'detached', timeout: 1000 })
      } else {
        await rest(base, 'POST', '/api/posts', { title: 'live one', author })
      }
      for (const c of [direct, viaOrigin]) {
        const m = await c.next('update', 1000)
        assert.equal(m.doc.author.name, 'Ann', 'populated author (SQLite default options)')
      }
      const closed = direct.expectClose(10_000)
      await server.stop('SIGTERM')
      assert.equal(await closed, 1001)
    } finally {
      await browser?.stop()
      await server.stop('SIGKILL')
    }
  })

  test('standalone output runs with the build node_modules moved away', { timeout: 120_000 }, async () => {
    const away = path.join(tmp, 'node_modules.away')
    fs.renameSync(path.join(app, 'node_modules'), away)
    let server
    try {
      const standalone = path.join(app, '.next/standalone')
      const port = await freePort()
      server = await startProcess(process.execPath, ['server.js'], {
        cwd: standalone,
        env: {
          PORT: String(port),
          HOSTNAME: '127.0.0.1',
          DATABASE_URL: DB,
          PAYLOAD_REALTIME_PORT: String(rtPort),
        },
        ready: /Ready in/,
        timeoutMs: 60_000,
      })
      await listening(rtPort, 15_000)
      const c = await connect(`ws://127.0.0.1:${port}`, { path: '/realtime' })
      await c.joinCollection('posts')
      await rest(`http://127.0.0.1:${port}`, 'POST', '/api/posts', { title: 'standalone', author })
      const m = await c.next('update', 2000)
      assert.equal(m.doc.title, 'standalone')
      c.close()
    } finally {
      await server?.stop()
      fs.renameSync(away, path.join(app, 'node_modules'))
    }
  })
})
