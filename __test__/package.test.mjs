// Packaging: `npm pack` of the root package (plus the platform package carrying the built addon)
// installs into a fresh Payload app, whose own script imports the plugin by package name, boots
// Payload and receives an event over a WebSocket; without the platform package the import fails
// with our own error.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const rootPkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const dev = rootPkg.devDependencies

const APP = `
import { buildConfig, getPayload } from 'payload'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { uWebSocketPlugin, getUWebSocketManager } from 'payload-realtime-rs'
import WebSocket from 'ws'
process.env.DISABLE_PAYLOAD_HMR = 'true'
const config = buildConfig({
  secret: 'pack-test-secret',
  telemetry: false,
  typescript: { autoGenerate: false },
  graphQL: { disable: true },
  db: sqliteAdapter({ client: { url: 'file:./pack.db' } }),
  collections: [{ slug: 'posts', access: { read: () => true }, fields: [{ name: 'title', type: 'text' }] }],
  plugins: [uWebSocketPlugin({ port: 0, host: '127.0.0.1', includeCollections: ['posts'] })],
})
const payload = await getPayload({ config, key: 'pack' })
const manager = getUWebSocketManager()
const ws = new WebSocket('ws://127.0.0.1:' + manager.port + '/')
const got = new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('no event')), 5000)
  ws.on('message', async (raw) => {
    const m = JSON.parse(raw.toString())
    if (m.type === 'welcome') ws.send(JSON.stringify({ type: 'join-collection', collection: 'posts' }))
    if (m.type === 'joined') await payload.create({ collection: 'posts', data: { title: 'packed' } })
    if (m.type === 'update') { clearTimeout(t); resolve(m) }
  })
})
const event = await got
console.log('EVENT ' + JSON.stringify({ operation: event.operation, title: event.doc.title }))
ws.close()
await manager.close()
await payload.destroy()
`

test('npm pack → install into a fresh Payload app → plugin works from the tarball', {
  timeout: 120_000,
}, () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-pack-'))
  try {
    const npm = (args, cwd) =>
      execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    const rootTgz = path.join(
      work,
      npm(['pack', '--silent', '--pack-destination', work], root).trim().split('\n').pop(),
    )
    const files = execFileSync('tar', ['-tzf', rootTgz], { encoding: 'utf8' })
    for (const f of ['package/index.js', 'package/dist/plugin/index.js', 'package/dist/package.json']) {
      assert.ok(files.includes(f), `${f} is packed`)
    }

    // The addon ships in a per-platform package (napi layout); build that one from the local binary.
    const addon = fs.readdirSync(root).find((f) => f.endsWith('.node'))
    assert.ok(addon, 'built addon (*.node) present at the package root')
    const triple = addon.split('.').slice(-2, -1)[0]
    const platDir = path.join(work, 'platform')
    fs.cpSync(path.join(root, 'npm', triple), platDir, { recursive: true })
    fs.copyFileSync(path.join(root, addon), path.join(platDir, addon))
    const platTgz = path.join(
      work,
      npm(['pack', '--silent', '--pack-destination', work], platDir).trim().split('\n').pop(),
    )

    const app = path.join(work, 'app')
    fs.mkdirSync(app)
    fs.writeFileSync(
      path.join(app, 'package.json'),
      JSON.stringify({
        name: 'pack-test-app',
        private: true,
        type: 'module',
        dependencies: {
          'payload-realtime-rs': `file:${rootTgz}`,
          [`payload-realtime-rs-${triple}`]: `file:${platTgz}`,
          payload: dev.payload,
          '@payloadcms/db-sqlite': dev['@payloadcms/db-sqlite'],
          graphql: dev.graphql,
          ws: dev.ws,
        },
      }),
    )
    npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], app)
    fs.writeFileSync(path.join(app, 'app.mjs'), APP)
    const out = execFileSync(process.execPath, ['app.mjs'], { cwd: app, encoding: 'utf8', timeout: 60_000 })
    const line = out.split('\n').find((l) => l.startsWith('EVENT '))
    assert.ok(line, `app printed an event; output:\n${out}`)
    assert.deepEqual(JSON.parse(line.slice(6)), { operation: 'create', title: 'packed' })
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
})

test('without its platform package the import fails with our error: platform, package, what to do', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-nobinary-'))
  try {
    // The root package as installed with --omit=optional: no binary anywhere.
    const pkg = path.join(work, 'node_modules/payload-realtime-rs')
    fs.mkdirSync(pkg, { recursive: true })
    for (const f of ['package.json', 'index.js', 'index.d.ts', 'dist'])
      fs.cpSync(path.join(root, f), path.join(pkg, f), { recursive: true })
    fs.writeFileSync(
      path.join(work, 'app.mjs'),
      `try { await import('payload-realtime-rs') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, package: e.package })) }`,
    )
    const out = execFileSync(process.execPath, ['app.mjs'], { cwd: work, encoding: 'utf8' })
    const err = JSON.parse(out.trim().split('\n').pop())
    assert.equal(err.code, 'ENATIVE')
    // This machine's platform, as the built addon's file name says (payload-realtime-rs.<platform>.node).
    const platform = fs
      .readdirSync(root)
      .find((f) => f.endsWith('.node'))
      .split('.')
      .slice(-2, -1)[0]
    assert.ok(err.message.includes(`no native binary for this platform (${platform})`), err.message)
    assert.ok(err.message.includes(`payload-realtime-rs-${platform}`), err.message)
    assert.match(err.message, /reinstall without --omit=optional/)
    assert.doesNotMatch(err.message, /npm has a bug/)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
})
