// examples/payload-basic as a user runs it: its server prints the URLs, a REST login gives a
// token, a REST create reaches the WebSocket, a REST logout closes the socket 4001.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { connect } from './helpers/payload.mjs'

const exampleDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../examples/payload-basic')
let child
let out = ''
let tmp
let api
let wsUrl

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-example-'))
  child = spawn(process.execPath, ['server.mjs'], {
    cwd: exampleDir,
    env: { ...process.env, HTTP_PORT: '0', WS_PORT: '0', DATABASE_URL: `file:${path.join(tmp, 'demo.db')}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const deadline = Date.now() + 30_000
  while (!/WebSocket\s+ws:/.test(out)) {
    if (child.exitCode !== null) throw new Error(`example exited ${child.exitCode}:\n${out}`)
    if (Date.now() > deadline) throw new Error(`example did not start:\n${out}`)
    await new Promise((r) => setTimeout(r, 100))
  }
  api = /REST API\s+(http:\S+)/.exec(out)[1]
  wsUrl = /WebSocket\s+(ws:\S+)/.exec(out)[1]
})

after(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGTERM')
    await exited
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

const post = (url, body, token) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `JWT ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })

test('example: REST login → ws events on REST creates (authorize, handler) → REST logout closes 4001', async () => {
  const printed = /login\s+(\S+) \/ (\S+)/.exec(out)
  assert.ok(printed, 'the example prints a login')
  const res = await post(`${api}/users/login`, { email: printed[1], password: printed[2] })
  assert.equal(res.status, 200)
  const { token, user } = await res.json()

  const c = await connect(wsUrl, { token })
  assert.equal(String(c.welcome.user.id), String(user.id))
  await c.joinCollection('posts')
  assert.equal((await post(`${api}/posts`, { title: 'from REST', author: user.id }, token)).status, 201)
  const ev = await c.next('update')
  assert.equal(ev.doc.title, 'from REST')
  assert.equal(ev.doc.author.email, printed[1])
  assert.equal(ev.doc.author.sessions, undefined)
  assert.equal(ev.doc.author.hash, undefined)

  // authorize: members-only posts reach logged-in sockets only
  const anon = await connect(wsUrl)
  await anon.joinCollection('posts')
  await post(`${api}/posts`, { title: 'members', membersOnly: true }, token)
  await post(`${api}/posts`, { title: 'everyone' }, token)
  assert.equal((await c.next('update')).doc.title, 'members')
  assert.equal((await anon.next('update')).doc.title, 'everyone')
  const who = await c.request('whoami')
  assert.equal(String(who.data.id), String(user.id))
  anon.close()

  assert.equal((await post(`${api}/users/logout`, undefined, token)).status, 200)
  assert.equal(await c.expectClose(), 4001)
})
