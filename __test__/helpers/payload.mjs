// Payload side of the shared test helpers: boots a real Payload 3 (SQLite in a temp dir) with
// the plugin, creates users with real logins, connects clients (TestClient from ws.mjs).
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { buildConfig, getPayload, handleEndpoints, logoutOperation } from 'payload'
import { getUWebSocketManager, initUWebSocket, payloadJwtKey, uWebSocketPlugin } from 'payload-realtime-rs'
import { signToken, TestClient } from './ws.mjs'

export { TestClient }
process.env.DISABLE_PAYLOAD_HMR = 'true'
process.env.PAYLOAD_TELEMETRY_DISABLED = 'true' // belt and braces next to `telemetry: false`
// Payload skips the dev schema push when the schema equals the previous one in this process;
// every test Payload has a fresh database file, so always push.
process.env.PAYLOAD_FORCE_DRIZZLE_PUSH = 'true'

export const SECRET = 'realtime-test-secret-0123456789'
export const PASSWORD = 'correct horse battery'
export { getUWebSocketManager, initUWebSocket, uWebSocketPlugin }

let seq = 0

/**
 * Test collections: users (auth, API keys), posts (relations, hidden fields, blocks), notes,
 * articles (drafts). Posts, notes and articles are readable by anyone (`access.read: () => true`)
 * so that their events reach anonymous sockets too; users keep Payload's default (logged in).
 */
export function testCollections() {
  return [
    {
      slug: 'users',
      auth: { useAPIKey: true },
      fields: [
        { name: 'name', type: 'text' },
        { name: 'role', type: 'select', options: ['admin', 'editor', 'reader'], defaultValue: 'reader' },
        { name: 'secretNote', type: 'text', hidden: true },
      ],
    },
    {
      slug: 'posts',
      access: { read: () => true },
      fields: [
        { name: 'title', type: 'text', required: true },
        { name: 'team', type: 'text' },
        { name: 'author', type: 'relationship', relationTo: 'users' },
        { name: 'internal', type: 'text', hidden: true },
        {
          name: 'meta',
          type: 'group',
          fields: [
            { name: 'summary', type: 'text' },
            { name: 'reviewToken', type: 'text', hidden: true },
          ],
        },
        {
          type: 'row',
          fields: [
            { name: 'rowHidden', type: 'text', hidden: true },
            { name: 'rowShown', type: 'text' },
          ],
        },
        {
          name: 'content',
          type: 'blocks',
          blocks: [
            {
              slug: 'quote',
              fields: [
                { name: 'text', type: 'text' },
                { name: 'by', type: 'relationship', relationTo: 'users' },
                { name: 'blockSecret', type: 'text', hidden: true },
              ],
            },
          ],
        },
      ],
    },
    { slug: 'notes', access: { read: () => true }, fields: [{ name: 'text', type: 'text' }] },
    {
      slug: 'articles',
      access: { read: () => true },
      versions: { drafts: true },
      fields: [{ name: 'title', type: 'text' }],
    },
  ]
}

/**
 * Boots Payload with the plugin. `realtime`: plugin options (default `{ port: 0 }` semantics are
 * the caller's). `transactions`: SQLite transactions on (default true). `plugins`: extra Payload
 * plugins placed after ours. `hooks`: `{ [slug]: hooks }` merged into the test collections.
 * `collections`: replaces the test collections. `config`: extra Payload config (csrf, cors, …).
 * `realtimePlugin`: a ready plugin used instead of `uWebSocketPlugin(realtime)` (compat tests).
 * `custom`: `{ [slug]: custom }` set as the test collections' `custom`.
 * `db`: a database adapter (default: SQLite in a temp dir).
 * Returns `{ payload, manager, url, client, rest, stop }`; `rest(path, init)` runs a request
 * through Payload's own REST API (`handleEndpoints`); `stop()` closes clients, the manager and
 * Payload.
 */
export async function startPayload({
  realtime = {},
  transactions = true,
  plugins = [],
  hooks = {},
  onInit,
  startServer = 'port',
  collections: baseCollections = testCollections(),
  config: extraConfig = {},
  realtimePlugin,
  custom = {},
  db,
} = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-payload-'))
  const collections = baseCollections.map((c) => ({
    ...c,
    hooks: { ...c.hooks, ...hooks[c.slug] },
    ...(custom[c.slug] ? { custom: custom[c.slug] } : {}),
  }))
  const pluginOptions = startServer === 'port' ? { port: 0, host: '127.0.0.1', ...realtime } : realtime
  const config = buildConfig({
    ...extraConfig,
    secret: SECRET,
    telemetry: false,
    typescript: { autoGenerate: false },
    graphQL: { disable: true },
    logger: { options: { level: process.env.TEST_LOG_LEVEL || 'error' } },
    db:
      db ??
      sqliteAdapter({
        client: { url: `file:${path.join(dir, 'test.db')}` },
        ...(transactions ? { transactionOptions: {} } : {}),
      }),
    collections,
    onInit,
    plugins: [realtimePlugin ?? uWebSocketPlugin(pluginOptions), ...plugins],
  })
  const key = `test-${process.pid}-${++seq}`
  const payload = await withoutSchemaSpinner(() => getPayload({ config, key }))
  const rest = (p, init) =>
    handleEndpoints({
      config,
      payloadInstanceCacheKey: key,
      request: new Request(`http://localhost/api${p}`, init),
    })
  let manager = getUWebSocketManager()
  if (startServer === 'manual') manager = await initUWebSocket({ port: 0, host: '127.0.0.1' })
  const url = manager ? `ws://127.0.0.1:${manager.port}/` : null
  const clients = []
  /** `connect(url, opts)` to this app's server; `stop()` closes the client. */
  const client = async (opts) => {
    const c = await connect(url, opts)
    clients.push(c)
    return c
  }
  const stop = async () => {
    for (const c of clients) c.close()
    await getUWebSocketManager()?.close()
    await payload.destroy()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { payload, manager, url, client, rest, stop }
}

/**
 * Runs `fn` while dropping drizzle-kit's "Pulling schema" spinner from stdout: Node 20's test
 * runner reads each test file's stdout as its message channel, and the spinner's raw terminal
 * writes can corrupt it ("Unable to deserialize cloned data").
 */
async function withoutSchemaSpinner(fn) {
  const write = process.stdout.write
  process.stdout.write = function (chunk, ...rest) {
    if (typeof chunk === 'string' && chunk.includes('Pulling schema')) {
      const cb = rest.find((a) => typeof a === 'function')
      if (cb) process.nextTick(cb)
      return true
    }
    return write.call(this, chunk, ...rest)
  }
  try {
    return await fn()
  } finally {
    process.stdout.write = write
  }
}

/** Creates a user and logs in; returns `{ user, token }` (a real Payload JWT). */
export async function createUser(payload, email, data = {}) {
  const user = await payload.create({ collection: 'users', data: { email, password: PASSWORD, ...data } })
  const { token } = await payload.login({ collection: 'users', data: { email, password: PASSWORD } })
  return { user, token }
}

/** Logs a session out the way Payload's REST /logout does (req.user carries `_sid`). */
export async function logout(payload, token, { allSessions = false } = {}) {
  const { user } = await payload.auth({ headers: new Headers({ authorization: `JWT ${token}` }) })
  assert.ok(user, 'token authenticates before logout')
  const searchParams = new URLSearchParams(allSessions ? { allSessions: 'true' } : {})
  await logoutOperation({
    allSessions,
    collection: payload.collections.users,
    req: { payload, user, searchParams },
  })
}

/** Decodes a JWT without verifying: `{ header, claims }`. */
export function decodeJwt(token) {
  const [h, c] = token.split('.')
  return { header: JSON.parse(Buffer.from(h, 'base64url')), claims: JSON.parse(Buffer.from(c, 'base64url')) }
}

/** Signs a JWT exactly as Payload does (its header key order), with the key derived from `secret`. */
export function signJwt(claims, secret = SECRET) {
  return signToken(claims, {
    key: payloadJwtKey(secret),
    header: { alg: 'HS256', authVersion: 1, typ: 'JWT' },
  })
}

/**
 * Opens a WebSocket and waits for `welcome` (kept as `client.welcome`). Options: `token` (sent as
 * `Authorization: JWT …`), `headers`, `origin`, `path` (with query). Rejects with `err.status`
 * when the upgrade is refused.
 */
export async function connect(url, { token, headers = {}, origin, path: p = '/', waitWelcome = true } = {}) {
  const h = { ...headers }
  if (token) h.authorization = `JWT ${token}`
  const client = await TestClient.connect(url.replace(/\/$/, '') + p, { headers: h, origin })
  if (waitWelcome) client.welcome = await client.next('welcome')
  return client
}

/** Expects the upgrade to be refused; returns the HTTP status. */
export async function refusedStatus(url, opts) {
  try {
    const c = await connect(url, opts)
    c.close()
  } catch (err) {
    if (err.status) return err.status
    throw err
  }
  assert.fail('upgrade was accepted')
}

/** JSON of `value` (a sent doc) never contains any of `keys` as a property, at any depth. */
export function assertNoKeys(value, keys) {
  const found = []
  const walk = (v, at) => {
    if (Array.isArray(v)) {
      for (const [i, x] of v.entries()) walk(x, `${at}[${i}]`)
    } else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (keys.includes(k)) found.push(`${at}.${k}`)
        walk(x, `${at}.${k}`)
      }
    }
  }
  walk(value, '$')
  assert.deepEqual(found, [], `secret keys leaked: ${found.join(', ')}`)
}

/**
 * A fresh PostgreSQL database of this run's own on the machine's server (PG_URL, default
 * postgres://postgres@127.0.0.1:5432): `{ url, stop }`, `stop()` drops it. Without a reachable
 * server it returns null and says so loudly; in CI (CI=true) that is an error.
 */
export async function createPostgresDatabase() {
  const base = process.env.PG_URL ?? 'postgres://postgres@127.0.0.1:5432'
  const name = `prt_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  const psql = (sql) =>
    spawnSync('psql', [`${base}/postgres`, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' })
  const created = psql(`CREATE DATABASE ${name}`)
  if (created.error || created.status !== 0) {
    skipWithout('PostgreSQL at PG_URL (psql)', 'PostgreSQL adapter test', created.stderr?.trim())
    return null
  }
  return {
    url: `${base}/${name}`,
    stop: async () => void psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort() {
  const srv = net.createServer()
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address()
  await new Promise((resolve) => srv.close(resolve))
  return port
}

/** Waits for `exit` of a child process, killing it if it does not leave within `ms`. */
async function stopChild(child, ms = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const t = setTimeout(() => child.kill('SIGKILL'), ms)
  await exited
  clearTimeout(t)
}

/** Says loudly that `tool` is missing so `what` does not run; in CI (CI=true) that is a failure. */
function skipWithout(tool, what, hint) {
  assert.notEqual(process.env.CI, 'true', `${tool} is required in CI`)
  console.log(`\n!!! SKIPPED: ${tool} not found; ${what} did not run${hint ? ` (${hint})` : ''} !!!\n`)
}

/**
 * The Redis of a multi-instance test: `{ options, stop }`, `options` being the manager's `redis`
 * option. With REDIS_URL set, that Redis under a prefix of this run's own (it may be shared);
 * else a `redis-server` on a free loopback port. Without either it returns null and says so
 * loudly; in CI (CI=true) that is an error.
 */
export async function startRedis() {
  if (process.env.REDIS_URL) {
    const prefix = `prt-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
    return { options: { url: process.env.REDIS_URL, prefix }, stop: async () => {} }
  }
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    skipWithout('redis-server on PATH (or REDIS_URL)', 'multi-instance plugin test')
    return null
  }
  const port = await freePort()
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  )
  const deadline = Date.now() + 10_000
  for (;;) {
    const pong = await new Promise((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write('PING\r\n'))
      sock.once('data', (d) => (sock.destroy(), resolve(d.toString().startsWith('+PONG'))))
      sock.once('error', () => resolve(false))
    })
    if (pong) break
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    options: { url: `redis://127.0.0.1:${port}` },
    stop: () => (child.kill('SIGTERM'), stopChild(child)),
  }
}

const pluginEntry = new URL('../../dist/plugin/index.js', import.meta.url).href

/**
 * A second realtime instance in a child process (no Payload): verifies tokens signed with
 * `secret`, joins `redis`. Returns `{ url, stop }`.
 */
export async function spawnInstance({ secret, redis }) {
  const script = `
    import { initUWebSocket, payloadJwtKey } from ${JSON.stringify(pluginEntry)}
    const m = await initUWebSocket({ port: 0, host: '127.0.0.1', jwtKey: payloadJwtKey(${JSON.stringify(secret)}), authVersion: 1, redis: ${JSON.stringify(redis)} })
    console.log('PORT ' + m.port)
    process.stdin.on('end', async () => { await m.close(); process.exit(0) })
    process.stdin.resume()
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  let out = ''
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d
      const m = /PORT (\d+)/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    child.once('exit', (code) => reject(new Error(`instance exited ${code}: ${out}`)))
  })
  return {
    url: `ws://127.0.0.1:${port}/`,
    stop: () => (child.stdin.end(), stopChild(child)),
  }
}

export const CHROMIUM = '/usr/bin/chromium'

/**
 * Headless Chromium (Debian's `chromium` package, driven by playwright-core; no browser download)
 * for a closed network, with a fresh profile. Returns `{ context, stop }` (a persistent context:
 * that is how a `--user-data-dir` is given), or null, loudly, when /usr/bin/chromium is missing;
 * in CI that is a failure. `what` names the test that needs it.
 */
export async function launchChromium(what) {
  if (!fs.existsSync(CHROMIUM)) {
    skipWithout(CHROMIUM, what, 'apt-get install -y chromium')
    return null
  }
  const { chromium } = await import('playwright-core')
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-chromium-'))
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ]
  let context
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args,
      viewport: { width: 1280, height: 860 },
      timeout: 120_000,
    })
  } catch (err) {
    fs.rmSync(profile, { recursive: true, force: true })
    throw err
  }
  return {
    context,
    stop: async () => {
      await context.close()
      fs.rmSync(profile, { recursive: true, force: true })
    },
  }
}

/**
 * Runs an example's `node server.mjs` (in `dir`) the way a user does, but on free loopback ports
 * (HTTP_PORT=0, WS_PORT=0, HOST=127.0.0.1) with a fresh SQLite file, and waits (up to `timeoutMs`:
 * Payload's first schema push is slow on a loaded machine) until its output matches `ready`.
 * Returns `{ output(), stop() }`; stop() ends it with SIGTERM and removes the database.
 */
export async function startExample(dir, { env = {}, ready = /WebSocket\s+ws:/, timeoutMs = 120_000 } = {}) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-example-'))
  const child = spawn(process.execPath, ['server.mjs'], {
    cwd: dir,
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      HTTP_PORT: '0',
      WS_PORT: '0',
      DATABASE_URL: `file:${path.join(tmp, 'demo.db')}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await stopChild(child, 10_000)
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  const deadline = Date.now() + timeoutMs
  while (!ready.test(out)) {
    const failure =
      child.exitCode !== null
        ? `exited ${child.exitCode}`
        : Date.now() > deadline
          ? `did not start within ${timeoutMs} ms`
          : null
    if (failure) {
      await stop()
      throw new Error(`${path.basename(dir)} ${failure}:\n${out}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return { output: () => out, stop }
}

/**
 * Spawns `cmd args` (in `cwd`, with `env` added to this process's) collecting its output, and
 * waits (up to `timeoutMs`) until the output matches `ready` when given. Returns
 * `{ child, output(), waitFor(re, ms), stop(signal) }`; `waitFor` resolves with the match of `re`
 * in the output after `from` (an offset; default: anywhere), `stop` sends `signal` (SIGTERM) and
 * waits for the exit (SIGKILL after 10 s), resolving with `{ code, signal }`.
 */
export async function startProcess(
  cmd,
  args,
  { cwd, env = {}, ready, timeoutMs = 120_000, stdin = 'ignore' } = {},
) {
  const child = spawn(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: [stdin, 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
    child.once('error', (err) => {
      out += `\nspawn failed: ${err.message}\n`
      resolve({ code: -1, signal: null })
    })
  })
  const waitFor = async (re, ms = 30_000, from = 0) => {
    const deadline = Date.now() + ms
    for (;;) {
      const m = re.exec(out.slice(from))
      if (m) return m
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `${cmd} exited (${child.exitCode ?? child.signalCode}) before ${re}:\n${out.slice(-4000)}`,
        )
      if (Date.now() > deadline) throw new Error(`no ${re} within ${ms} ms:\n${out.slice(-4000)}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const stop = async (signal = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    await stopChild(child, 10_000)
    return exited
  }
  const proc = { child, output: () => out, waitFor, stop, exited }
  if (ready) {
    try {
      await waitFor(ready, timeoutMs)
    } catch (err) {
      await stop('SIGKILL')
      throw err
    }
  }
  return proc
}

/**
 * A Payload plugin placed after ours whose `posts` afterChange throws for the title
 * `explode-late`: the write rolls back after our hook ran (nothing may be emitted).
 */
export const lateFailurePlugin = (config) => ({
  ...config,
  collections: config.collections.map((c) =>
    c.slug !== 'posts'
      ? c
      : {
          ...c,
          hooks: {
            ...c.hooks,
            afterChange: [
              ...(c.hooks?.afterChange ?? []),
              ({ doc }) => {
                if (doc.title === 'explode-late') throw new Error('late hook failure')
              },
            ],
          },
        },
  ),
})
