// Secure defaults of the plugin on a real Payload 3 (SQLite): the auth cookie counts only from
// a trusted Origin (Payload's csrf list, the request's own host), header and query tokens from
// any Origin; nbf / future iat refused; a Basic header does not hide the cookie; hooks never see
// a token; /healthz and /metrics options.
import assert from 'node:assert/strict'
import http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { connect, createUser, decodeJwt, refusedStatus, signJwt, startPayload } from './helpers/payload.mjs'

/** GET on 127.0.0.1:`port` → { status, body }. */
function get(port, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers }, (res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
    req.setTimeout(5000, () => req.destroy(new Error('timeout')))
  })
}

describe('cookie credentials only from trusted origins', () => {
  let app
  let token
  const seen = { urls: [], headers: [] }
  before(async () => {
    app = await startPayload({
      config: {
        csrf: ['https://app.example'],
        cors: ['https://cors.example'],
        serverURL: 'https://cms.example/base',
      },
      realtime: {
        includeCollections: ['posts'],
        monitoring: { token: 'metrics-secret' },
        middleware: [
          (socket, req) => {
            seen.urls.push(socket.url, req.url)
            seen.headers.push(req.headers)
          },
        ],
      },
    })
    ;({ token } = await createUser(app.payload, 'cookie@x.io'))
  })
  after(() => app?.stop())

  const cookie = () => ({ cookie: `other=1; payload-token=${token}` })
  const userOf = async (opts) => {
    const c = await connect(app.url, opts)
    c.close()
    return c.welcome.user
  }

  test('cross-site cookie → anonymous; csrf, cors, serverURL and own-host origins → authenticated', async () => {
    assert.equal(await userOf({ headers: cookie(), origin: 'https://evil.example' }), null)
    assert.equal(app.manager.getStats().untrustedCookies, 1)
    for (const origin of [
      'https://app.example',
      'https://cors.example',
      'https://cms.example',
      'http://127.0.0.1:3000',
      undefined,
    ]) {
      const user = await userOf({ headers: cookie(), origin })
      assert.equal(user?.collection, 'users', `origin ${origin}`)
    }
  })

  test('Bearer, JWT and query tokens count from any origin', async () => {
    const evil = 'https://evil.example'
    assert.ok(await userOf({ headers: { authorization: `Bearer ${token}` }, origin: evil }))
    assert.ok(await userOf({ token, origin: evil }))
    assert.ok(await userOf({ path: `/?token=${token}`, origin: evil }))
  })

  test('a Basic Authorization header does not hide a valid cookie', async () => {
    const user = await userOf({ headers: { authorization: 'Basic dXNlcjpwYXNz', ...cookie() } })
    assert.equal(user?.collection, 'users')
  })

  test('nbf in the future and iat in the future are refused', async () => {
    const { claims } = decodeJwt(token)
    const now = Math.floor(Date.now() / 1000)
    for (const extra of [{ nbf: now + 120 }, { iat: now + 120 }]) {
      const t = signJwt({ ...claims, ...extra })
      const opts = { token: t }
      const strict = await connect(app.url, opts).then(
        (c) => (c.close(), c.welcome.user),
        (e) => e.status,
      )
      assert.ok(strict === 401, `${JSON.stringify(extra)} → ${JSON.stringify(strict)}`)
    }
    // The same claims without them are fine.
    assert.ok(await userOf({ token: signJwt({ ...claims, iat: now - 5, nbf: now - 5 }) }))
  })

  test('tokens never reach socket.url or the headers hooks see', async () => {
    seen.urls.length = 0
    seen.headers.length = 0
    await userOf({ path: `/?a=1&token=${token}`, headers: { authorization: `JWT ${token}`, ...cookie() } })
    assert.deepEqual(seen.urls, ['/?a=1', '/?a=1'])
    assert.equal(seen.headers[0].authorization, '[redacted]')
    assert.equal(seen.headers[0].cookie, 'other=1')
    assert.ok(!JSON.stringify(seen).includes(token))
  })

  test('/metrics and /healthz need the configured bearer token', async () => {
    const port = app.manager.port
    assert.equal((await get(port, '/metrics')).status, 401)
    assert.equal((await get(port, '/healthz', { authorization: 'Bearer nope' })).status, 401)
    const ok = await get(port, '/metrics', { authorization: 'Bearer metrics-secret' })
    assert.equal(ok.status, 200)
    assert.match(ok.body, /realtime_untrusted_cookies_total/)
  })
})

describe('requireAuth with a cross-site cookie', () => {
  let app
  let token
  before(async () => {
    app = await startPayload({
      config: { csrf: ['https://app.example'] },
      realtime: {
        includeCollections: ['posts'],
        requireAuth: true,
        monitoring: { port: 0, host: '127.0.0.1' },
      },
    })
    ;({ token } = await createUser(app.payload, 'strict@x.io'))
  })
  after(() => app?.stop())

  test('401 from an untrusted origin, accepted from a csrf origin', async () => {
    const headers = { cookie: `payload-token=${token}` }
    assert.equal(await refusedStatus(app.url, { headers, origin: 'https://evil.example' }), 401)
    const c = await connect(app.url, { headers, origin: 'https://app.example' })
    assert.equal(c.welcome.user.collection, 'users')
    c.close()
  })

  test('monitoring on its own port: served there, not on the WebSocket port', async () => {
    const mp = app.manager.monitoringPort
    assert.ok(mp && mp !== app.manager.port)
    assert.equal((await get(mp, '/healthz')).status, 200)
    assert.equal((await get(mp, '/metrics')).status, 200)
    assert.notEqual((await get(app.manager.port, '/metrics')).status, 200)
  })
})
