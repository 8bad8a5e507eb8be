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

let runtime: Runtime | null = null
const configured = new WeakMap<UWebSocketManager, Runtime>()

/** Called from the plugin's onInit: later `initUWebSocket()` calls use this Payload's settings. */
export function setRuntime(r: Runtime): void {
  runtime = r
  // Forget the instance when it is destroyed, so a later Payload in this process starts clean.
  const destroy = r.payload.destroy?.bind(r.payload)
  if (destroy) {
    r.payload.destroy = async () => {
      if (runtime === r) runtime = null
      return destroy()
    }
  }
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
  const running = getUWebSocketManager()
  let manager: UWebSocketManager
  if (running && given.port === undefined) {
    manager = running
  } else {
    manager = await startManager(withoutUndefined({ ...runtime?.serverOptions, ...given }) as ServerOptions)
    if (manager !== running) runtime?.log(`WebSocket server listening on port ${manager.port}`)
  }
  if (runtime) configureManager(manager, runtime)
  return manager
}

/** Registers the plugin's JS hooks on `manager` (once per manager and Payload instance). */
export function configureManager(manager: UWebSocketManager, r: Runtime): void {
  if (configured.get(manager) === r) return
  if (configured.has(manager)) {
    r.onError(new Error('another Payload instance already configured this process-wide manager'), 'configure')
    return
  }
  configured.set(manager, r)
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
