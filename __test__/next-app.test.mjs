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

function reuseBuild() {
  return (
    process.env.NEXT_APP_REUSE_BUILD === '1' &&
    process.env.CI !== 'true' &&
    fs.existsSync(path.join(app, '.next/test-realtime-port'))
  )
}

async function rest(base, method, p, body, token) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `JWT ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  assert.ok(res.ok, `${method} ${p}: HTTP ${res.status} ${await res.clone().text()}`)
  return res.json()
}

// Not prepared: a loud skip locally; in CI (CI=true) the before hook fails instead.
const notPrepared = 'examples/next-app is not prepared: run scripts/test.sh (prepare_next_app) first'
if (!ready && process.env.CI !== 'true') console.log(`\n!!! SKIPPED: ${notPrepared} !!!\n`)
describe('examples/next-app on Next.js 16', {
  skip: !ready && process.env.CI !== 'true' && notPrepared,
}, () => {
  let rtPort
  let author
  before(
    async () => {
      assert.ok(ready, notPrepared)
      // withRealtime's rewrite is fixed at build time (Next's routes manifest): a reused build
      // keeps the realtime port it was built with.
      const portFile = path.join(app, '.next/test-realtime-port')
      rtPort = reuseBuild() ? Number(fs.readFileSync(portFile, 'utf8')) : await freePort()
      // The app "already runs": its realtime port is held while the build runs.
      // NEXT_APP_REUSE_BUILD=1 (local iteration only, never in CI) keeps an existing build.
      const reuse = reuseBuild()
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
        fs.writeFileSync(portFile, String(rtPort))
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
      // Next awaits register() before it says Ready, so the port is open by then: 1 s, as specified.
      await listening(rtPort, 1000)
      const base = `http://127.0.0.1:${port}`
      // Ann logs in: users are not public, so only sockets and requests with her token see her
      // populated as the author (anonymous sockets get the post without the author's fields).
      const { token } = await rest(base, 'POST', '/api/users/login', {
        email: 'ann@example.com',
        password: 'correct horse battery',
      })
      const direct = await connect(`ws://127.0.0.1:${rtPort}`, { path: '/realtime', token })
      await direct.joinCollection('posts')
      const viaOrigin = await connect(`ws://127.0.0.1:${port}`, { path: '/realtime', token })
      await viaOrigin.joinCollection('posts')

      if (browser) {
        const page = await browser.context.newPage()
        const res = await page.goto(base, { waitUntil: 'domcontentloaded' })
        assert.equal(res.status(), 200)
        assert.match(await res.text(), /realtime: /, 'the hooks rendered on the server')
        await page.waitForSelector('#state[data-state="open"]', { timeout: 15_000 })
        // Sync point: the page's join-collection may still be on its way when the socket is open;
        // post until one shows up (bounded), then time create/edit/delete against the 1 s bound.
        const deadline = Date.now() + 15_000
        for (let i = 0; ; i++) {
          const warm = (await rest(base, 'POST', '/api/posts', { title: `warm-up ${i}` })).doc
          try {
            await page.waitForSelector(`li[data-id="${warm.id}"]`, { timeout: 1000 })
            break
          } catch (err) {
            if (Date.now() > deadline) throw new Error(`${err.message}\n${await page.content()}`)
          }
        }
        const created = (await rest(base, 'POST', '/api/posts', { title: 'live one', author }, token)).doc
        await page
          .waitForSelector(`li[data-id="${created.id}"]:has-text("live one")`, { timeout: 1000 })
          .catch(async (err) => {
            throw new Error(`${err.message}\nlist: ${await page.locator('#posts').textContent()}`)
          })
        await rest(base, 'PATCH', `/api/posts/${created.id}`, { title: 'live two' })
        await page.waitForSelector(`li[data-id="${created.id}"]:has-text("live two")`, { timeout: 1000 })
        await rest(base, 'DELETE', `/api/posts/${created.id}`)
        await page.waitForSelector(`li[data-id="${created.id}"]`, { state: 'detached', timeout: 1000 })
      } else {
        await rest(base, 'POST', '/api/posts', { title: 'live one', author }, token)
      }
      for (const c of [direct, viaOrigin]) {
        const m = await c.next((e) => e.type === 'update' && e.doc.title === 'live one', 1000)
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

  for (const bundler of ['turbopack', 'webpack']) {
    test(
      `next dev (${bundler}): events flow across hot reloads of payload.config.ts; an option change restarts the server, logged`,
      {
        timeout: 240_000,
      },
      () => devHotReload(bundler),
    )
  }

  /** One `next dev` run (Turbopack, Next's default, or `--webpack`) through two config edits. */
  async function devHotReload(bundler) {
    const configFile = path.join(app, 'src/payload.config.ts')
    const original = fs.readFileSync(configFile, 'utf8')
    const port = await freePort()
    const rt = await freePort()
    const flags = bundler === 'webpack' ? ['--webpack'] : []
    const dev = await startProcess(bin('next'), ['dev', ...flags, '-p', String(port), '-H', '127.0.0.1'], {
      cwd: app,
      env: {
        PORT: String(port), // Payload's HMR listener finds Next's dev server by it
        DISABLE_PAYLOAD_HMR: '', // the shared helpers turn Payload's HMR off for in-process tests
        DATABASE_URL: `file:${path.join(tmp, `dev-${bundler}.db`)}`,
        PAYLOAD_REALTIME_PORT: String(rt),
        NEXT_TELEMETRY_DISABLED: '1',
      },
      ready: /Ready in/,
      timeoutMs: 60_000,
    })
    const base = `http://127.0.0.1:${port}`
    try {
      // Next's banner names the bundler it runs (`▲ Next.js 16.x (webpack)`).
      assert.match(
        dev.output(),
        bundler === 'webpack' ? /Next\.js .*\(webpack\)/ : /Next\.js .*\(Turbopack\)/,
      )
      // Compiling instrumentation and Payload's first init in dev (schema push) on 2 busy cores.
      await listening(rt, 60_000)
      const c = await connect(`ws://127.0.0.1:${port}`, { path: '/realtime' }) // the dev rewrite
      await c.joinCollection('posts')
      await rest(base, 'POST', '/api/posts', { title: 'dev 1' }) // first call compiles the route
      assert.equal((await c.next('update', 5000)).doc.title, 'dev 1')
      // Payload reloads its config on Next's `serverComponentChanges` HMR message, which Next sends
      // for compiled server components only: render the page that imports the config (the admin
      // panel's pages do that in a full app). Also: the hooks render on the server in dev.
      const home = await fetch(`${base}/`)
      assert.equal(home.status, 200, await home.text())

      // An edit that changes no server option: same server, same socket, events still flow.
      // Payload reloads at the first getPayload after Next's HMR message: poll the API meanwhile.
      // Writes `text` to the config, then polls the API until `re` is logged; Next's watcher may
      // miss a write right after a compile, so the write is repeated every 15 s (90 s in all).
      const edit = async (text, re) => {
        const from = dev.output().length
        const deadline = Date.now() + 90_000
        let n = 0
        let rewriteAt = 0
        while (!re.test(dev.output().slice(from))) {
          const log = dev
            .output()
            .slice(from)
            .replace(/.*GET \/api.*\n/g, '')
          assert.ok(Date.now() < deadline, `no ${re} logged:\n${log.slice(-3000)}`)
          if (Date.now() >= rewriteAt) {
            fs.writeFileSync(configFile, `${text}\n// edited by next-app.test.mjs (${++n})\n`)
            rewriteAt = Date.now() + 15_000
          }
          await fetch(`${base}/api/posts?limit=1`)
          await new Promise((r) => setTimeout(r, 500))
        }
      }
      await edit(original, /config reloaded: WebSocket server and sockets kept/)
      await rest(base, 'POST', '/api/posts', { title: 'dev 3' })
      assert.equal((await c.next('update', 5000)).doc.title, 'dev 3')

      // An edit that changes a server option: restarted with a log line; the socket got 1001.
      await edit(
        original.replace(
          "uWebSocketPlugin({ includeCollections: ['posts'] })",
          "uWebSocketPlugin({ includeCollections: ['posts'], maxConnections: 5000 })",
        ),
        /server options changed \(maxConnections\): restarting/,
      )
      assert.equal(await c.expectClose(10_000), 1001)
      await listening(rt, 10_000)
      const c2 = await connect(`ws://127.0.0.1:${port}`, { path: '/realtime' })
      await c2.joinCollection('posts')
      await rest(base, 'POST', '/api/posts', { title: 'dev 4' })
      assert.equal((await c2.next('update', 5000)).doc.title, 'dev 4')
      c2.close()
    } finally {
      fs.writeFileSync(configFile, original)
      await dev.stop()
    }
  }
})
