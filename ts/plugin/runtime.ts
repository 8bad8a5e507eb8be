// The plugin's wiring of the process-wide manager (manager.ts): starts it with the settings the
// plugin derived from the Payload config and registers the plugin's JS hooks on it, once per
// manager. Nothing here touches sockets other than through the manager.
import type { Payload } from 'payload'
import { installReadAccess, type ReadAccess } from './access.js'
import { claimsOf, credentialResolver, sessionIsLive } from './auth.js'
import {
  getUWebSocketManager,
  initUWebSocket as startManager,
  type ServerOptions,
  type UWebSocketManager,
} from './manager.js'
import { installSignalHandlers } from './signals.js'
import { processState } from './state.js'
import type { UWebSocketPluginOptions } from './types.js'

/** What one Payload instance's plugin contributes to the manager. */
export interface Runtime {
  payload: Payload
  options: UWebSocketPluginOptions
  serverOptions: ServerOptions
  /** The default read check of events and joins (users cached per Payload instance). */
  access: ReadAccess
  log: (msg: string) => void
  onError: (err: unknown, what: string) => void
}

/** The plugin's lifecycle, on globalThis so hot reloads (re-evaluated modules) keep it. */
interface Lifecycle {
  /** The Payload instance whose settings `initUWebSocket()` uses. */
  runtime: Runtime | null
  /** Server options of the server the plugin started (JSON), to see changes on hot reload. */
  serverKey: string | null
  retry: { timer: NodeJS.Timeout; attempt: number } | null
  /** The last failure logged at error level (code + options), so it is logged once. */
  failureLogged: string | null
  /** When the last "no server" warning was logged, and how many events went since. */
  noServer: { lastWarn: number; since: number }
  configured: WeakMap<UWebSocketManager, Runtime>
  /** Payload instances whose destroy() ran. */
  destroyed: WeakSet<object>
}

const life = processState().lifecycle as unknown as Lifecycle
life.runtime ??= null
life.serverKey ??= null
life.retry ??= null
life.failureLogged ??= null
life.noServer ??= { lastWarn: 0, since: 0 }
life.configured ??= new WeakMap()
life.destroyed ??= new WeakSet()

/** Called from the plugin's onInit: later `initUWebSocket()` calls use this Payload's settings. */
export function setRuntime(r: Runtime): void {
  life.runtime = r
  // Forget the instance when it is destroyed, so a later Payload in this process starts clean.
  const destroy = r.payload.destroy?.bind(r.payload)
  if (destroy && !(destroy as { realtimeWrapped?: boolean }).realtimeWrapped) {
    const wrapped = async () => {
      life.destroyed.add(r.payload)
      if (life.runtime?.payload === r.payload) {
        life.runtime = null
        clearRetry()
      }
      return destroy()
    }
    r.payload.destroy = Object.assign(wrapped, { realtimeWrapped: true })
  }
}

/**
 * Why this process must not serve WebSockets, or null when it should. A build or a CLI command
 * loads Payload too (and runs `onInit`), but only serving processes may hold the port:
 * - `next build` sets `NEXT_PHASE=phase-production-build` in every worker that prerenders;
 * - the `payload` CLI (`migrate`, `run`, `generate:*`, …) runs from `payload/bin.js`;
 * - `PAYLOAD_REALTIME=off` (or `autoStart: false`) turns it off explicitly.
 */
export function notServingReason(options: UWebSocketPluginOptions): string | null {
  if (options.autoStart === false) return '`autoStart: false`'
  if (/^(off|false|0)$/i.test(process.env.PAYLOAD_REALTIME ?? '')) return 'PAYLOAD_REALTIME=off'
  if (process.env.NEXT_PHASE === 'phase-production-build') return '`next build` (NEXT_PHASE)'
  if (/(^|[\\/])(payload[\\/]bin\.js|\.bin[\\/]payload(\.cmd)?)$/.test(process.argv[1] ?? ''))
    return 'the `payload` CLI (migrate, run, generate:*)'
  return null
}

/**
 * The plugin's start, from `onInit` and after a hot reload: never throws. In a serving process
 * with a port (the `port` option or PAYLOAD_REALTIME_PORT) it starts the server, restarts it when
 * its options changed, or re-registers the hooks of a reloaded config on the running one.
 */
export async function startFromPlugin(r: Runtime): Promise<void> {
  try {
    setRuntime(r)
    const why = notServingReason(r.options)
    const running = getUWebSocketManager()
    if (why) {
      r.payload.logger.info(`[realtime] WebSocket server not started in this process: ${why}`)
      if (running) configureManager(running, r)
      return
    }
    if (r.serverOptions.port === undefined) {
      if (running) {
        if (!life.configured.has(running))
          // Started before Payload: its JWT key, cookie name and requireAuth were not ours.
          r.payload.logger.warn(
            '[realtime] the WebSocket server was started before Payload; call initUWebSocket() after getPayload() so it verifies Payload tokens',
          )
        configureManager(running, r)
      }
      return
    }
    await ensureServer(r)
  } catch (err) {
    r.onError(err, 'start') // a realtime failure never fails Payload's init
  }
}

async function ensureServer(r: Runtime): Promise<void> {
  clearRetry()
  const key = optionsKey(r.serverOptions)
  const running = getUWebSocketManager()
  if (running) {
    if (life.serverKey === null || life.serverKey === key) {
      // Same options (a hot reload), or a server the app started itself: keep it and its sockets.
      const previous = life.configured.get(running)
      if (previous && previous !== r && previous.payload === r.payload)
        r.payload.logger.info(
          '[realtime] Payload config reloaded: WebSocket server and sockets kept (options unchanged)',
        )
      configureManager(running, r)
      return
    }
    r.payload.logger.info(
      `[realtime] server options changed (${changedKeys(life.serverKey, key).join(', ')}): restarting the WebSocket server`,
    )
    life.serverKey = null
    await running.close()
  }
  await tryStart(r, key)
}

async function tryStart(r: Runtime, key: string): Promise<void> {
  const opts = withoutUndefined(r.serverOptions) as ServerOptions
  try {
    const manager = await startManager(opts)
    life.serverKey = key
    life.failureLogged = null
    life.retry = null
    r.payload.logger.info(
      `[realtime] WebSocket server listening on ${opts.host ?? '0.0.0.0'}:${manager.port}${opts.path ?? ''}`,
    )
    configureManager(manager, r)
    installSignalHandlers(() => getUWebSocketManager(), opts.shutdownTimeoutMs ?? 5000)
  } catch (err) {
    const code = String((err as { code?: unknown }).code ?? 'ERROR')
    const retryable = code !== 'ECONFIG'
    const attempt = (life.retry?.attempt ?? 0) + 1
    if (life.failureLogged !== `${code} ${key}`) {
      life.failureLogged = `${code} ${key}`
      r.payload.logger.error({ err, msg: `[realtime] ${explainStartFailure(code, opts, retryable)}` })
    }
    if (!retryable) return
    // Backoff 0.5 s, 1 s, 2 s … capped at 30 s; unref'd so a script's process can still exit.
    const delay = Math.min(30_000, 500 * 2 ** (attempt - 1))
    const timer = setTimeout(() => {
      if (life.runtime !== r || getUWebSocketManager()) return
      void tryStart(r, key)
    }, delay)
    timer.unref()
    life.retry = { timer, attempt }
  }
}

function explainStartFailure(code: string, o: ServerOptions, retrying: boolean): string {
  const where = `${o.host ?? '0.0.0.0'}:${o.port}`
  const fix =
    code === 'EADDR'
      ? `could not listen on ${where}: another process holds the port (a second server of this app, a dev server, or an old process). Stop it or give the plugin another \`port\` (or PAYLOAD_REALTIME_PORT)`
      : code === 'ECONFIG'
        ? 'the WebSocket server options are invalid; fix the plugin options (the message says which)'
        : `the WebSocket server could not start on ${where}`
  return `${fix}. Payload runs on without realtime${retrying ? '; retrying with backoff (0.5 s doubling to 30 s)' : ' until the options change'}.`
}

function clearRetry(): void {
  if (life.retry) clearTimeout(life.retry.timer)
  life.retry = null
}

// Functions (hooks) are not server options; everything else decides whether to restart.
function optionsKey(o: ServerOptions): string {
  return JSON.stringify(withoutUndefined(o), (_k, v) => (typeof v === 'function' ? undefined : v))
}

function changedKeys(before: string, after: string): string[] {
  const a = JSON.parse(before) as Record<string, unknown>
  const b = JSON.parse(after) as Record<string, unknown>
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(
    (k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]),
  )
}

/**
 * An event found no server: logged at warn level at most once a minute, with the count since
 * the last warning and why no server runs here; counted in stats as `droppedNoServer`.
 */
export function warnNoServer(what: string, logger?: { warn: (msg: string) => void }): void {
  processState().droppedNoServer++
  life.noServer.since++
  const now = Date.now()
  if (now - life.noServer.lastWarn < 60_000) return
  const n = life.noServer.since
  life.noServer = { lastWarn: now, since: 0 }
  const why = life.runtime ? notServingReason(life.runtime.options) : null
  const reason = why
    ? `this process does not serve WebSockets (${why}); use \`redis\` to reach the serving process`
    : life.retry
      ? 'the server could not start and is retrying (see the error above)'
      : 'no server was started (set the plugin `port`, or call initUWebSocket())'
  const msg = `[realtime] ${n} event(s) not delivered, the last ${what}: ${reason}. (At most one such warning a minute.)`
  if (logger) logger.warn(msg)
  else console.warn(msg)
}

/**
 * Starts the WebSocket server (once per process) and returns the manager. Call it after
 * `getPayload()` so it picks up the plugin's auth settings (JWT key, cookie name, `requireAuth`,
 * limits) and hooks; a number is the port, an object overrides any server option of the plugin.
 * Port: the given one, else the plugin's `port`, else 3002. While a server runs, a call without
 * a port (or with its port) returns it; another port throws `EALREADY`.
 */
export async function initUWebSocket(portOrOptions?: number | ServerOptions): Promise<UWebSocketManager> {
  const given: ServerOptions =
    typeof portOrOptions === 'number' ? { port: portOrOptions } : (portOrOptions ?? {})
  const runtime = life.runtime
  const running = getUWebSocketManager()
  let manager: UWebSocketManager
  if (running && given.port === undefined) {
    manager = running
  } else {
    const opts = withoutUndefined({ ...runtime?.serverOptions, ...given }) as ServerOptions
    manager = await startManager(opts)
    if (manager !== running) {
      runtime?.log(`WebSocket server listening on port ${manager.port}`)
      installSignalHandlers(() => getUWebSocketManager(), opts.shutdownTimeoutMs ?? 5000)
    }
  }
  if (runtime) configureManager(manager, runtime)
  // NextRush passed `verifyClient` with the server options; the plugin's own option wins.
  if (given.verifyClient && !runtime?.options.verifyClient) manager.setVerifyClient(given.verifyClient)
  return manager
}

/** Registers the plugin's JS hooks on `manager` (once per manager and Payload instance). */
export function configureManager(manager: UWebSocketManager, r: Runtime): void {
  const previous = life.configured.get(manager)
  if (previous === r) return
  if (previous) {
    // A hot reload (same Payload, new config) replaces the hooks; a second Payload may not.
    if (previous.payload !== r.payload && !life.destroyed.has(previous.payload)) {
      r.onError(
        new Error('another Payload instance already configured this process-wide manager'),
        'configure',
      )
      return
    }
    manager.resetHooks()
  }
  life.configured.set(manager, r)
  const { payload, options } = r

  installReadAccess(manager, r.access, options, r.onError)
  for (const [slug, fn] of Object.entries(options.authorize ?? {})) {
    manager.setAuthorize(slug, (users, event) =>
      Promise.all(
        users.map(async (user) => {
          try {
            return (await fn(user, event, { payload })) === true
          } catch (err) {
            r.onError(err, `authorize(${slug})`)
            return false
          }
        }),
      ),
    )
  }

  if (options.rooms)
    manager.setRoomPolicy({ patterns: options.rooms.patterns, canJoin: options.rooms.canJoin })
  if (options.verifyClient) manager.setVerifyClient(options.verifyClient)
  manager.setCredentialResolver(credentialResolver(payload))

  // A verified JWT whose session was logged out: 401 at upgrade, close 4001 on an `auth` refresh.
  if (options.checkSessions !== false) manager.setSessionValidator((claims) => sessionIsLive(payload, claims))

  for (const mw of options.middleware ?? []) manager.use(mw)
  if (options.onSocketConnection) {
    const cb = options.onSocketConnection
    manager.use(async (socket) => {
      try {
        await cb(socket, manager, payload)
      } catch (err) {
        r.onError(err, 'onSocketConnection')
      }
    })
  }
  for (const [type, handler] of Object.entries(options.handlers ?? {}))
    manager.registerCustomHandler(type, handler)
  const { onDisconnect, onBinary } = options
  if (onDisconnect)
    manager.onDisconnect((socket, code, reason) => onDisconnect(socket, code, reason, manager))
  if (onBinary) manager.onBinary(onBinary)
}

/** Closes the sockets of a logged-out session (or of every session of the user). */
export function disconnectLogout(
  user: Record<string, any> | null | undefined,
  allSessions: boolean,
  log: (m: string) => void,
): void {
  const manager = getUWebSocketManager()
  if (!manager || !user) return
  const claims = claimsOf(user)
  const n =
    allSessions || !claims.sid
      ? manager.disconnectUser(claims.id, 4001, claims.collection)
      : manager.disconnectSession(claims.sid, 4001)
  log(`logout of ${claims.collection}:${claims.id} closed ${n} socket(s)`)
}

/** Closes every socket of a deleted user. */
export function disconnectDeletedUser(
  collection: string,
  id: string | number,
  log: (m: string) => void,
): void {
  const manager = getUWebSocketManager()
  if (!manager) return
  const n = manager.disconnectUser(String(id), 4001, collection)
  log(`deletion of ${collection}:${id} closed ${n} socket(s)`)
}

function withoutUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}
