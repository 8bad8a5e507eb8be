// The process-wide native manager and the plugin's wiring of it (notes/native-api.md).
// The native addon owns the singleton; this module starts it with the options the plugin derived
// from the Payload config and registers the plugin's JS hooks on it exactly once per manager.
import type { Payload } from 'payload'
import { claimsOf, credentialResolver, sessionIsLive } from './auth.js'
import { native } from './native.js'
import type { RealtimeEvent, RealtimeSocket, RealtimeUser, ServerLimits, UpgradeRequestInfo, UWebSocketPluginOptions } from './types.js'

/** Server options understood by the native `initUWebSocket` (see the README for defaults). */
export interface ServerOptions extends ServerLimits {
  port?: number
  requireAuth?: boolean
  /** HS256 key as Payload signs with: sha256(secret) hex, first 32 chars. */
  jwtKey?: string
  /** Cookie carrying the token. Default `'payload-token'`. */
  authCookie?: string
  workerThreads?: number
  redis?: { url?: string; [key: string]: unknown }
}

/** The native manager (a process-wide singleton), as the plugin uses it. */
export interface UWebSocketManager {
  readonly port: number
  emitEvent(e: RealtimeEvent): void
  broadcastToRoom(room: string, msg: object | string | Buffer, opts?: { except?: string }): void
  sendToSocket(socketOrId: string | RealtimeSocket, msg: object | string | Buffer): boolean
  registerCustomHandler(type: string, handler: (socket: RealtimeSocket, data: unknown, message: any) => unknown): void
  use(mw: (socket: RealtimeSocket, req: UpgradeRequestInfo) => unknown): void
  setAuthorize(collection: string, fn: (users: (RealtimeUser | null)[], event: RealtimeEvent) => boolean[] | Promise<boolean[]>): void
  setRoomPolicy(policy: { patterns?: string[]; canJoin?: (user: RealtimeUser | null, room: string) => boolean | Promise<boolean> }): void
  setVerifyClient(fn: (info: { origin?: string; url: string; headers: Record<string, string>; remoteAddress: string }) => boolean | Promise<boolean>): void
  setCredentialResolver(fn: (req: { headers: Record<string, string>; token?: string }) => Promise<RealtimeUser | null>): void
  setSessionValidator?(fn: (claims: RealtimeUser) => boolean | Promise<boolean>): void
  getStats(): Record<string, unknown>
  getRoomMembers(room: string): { socketId: string; userId: string | null; instance: string }[]
  disconnectUser(userId: string, code?: number, collection?: string): number
  disconnectSession(sid: string, code?: number): number
  close(): Promise<void>
}

const nativeApi = native as unknown as {
  initUWebSocket(portOrOptions: number | ServerOptions): Promise<UWebSocketManager>
  getUWebSocketManager(): UWebSocketManager | null
}

/** What one Payload instance's plugin contributes to the manager. */
export interface Runtime {
  payload: Payload
  options: UWebSocketPluginOptions
  serverOptions: ServerOptions
  log: (msg: string) => void
  onError: (err: unknown, what: string) => void
}

let runtime: Runtime | null = null
const configured = new WeakMap<object, Runtime>()

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

/** The running manager, or `null` before `initUWebSocket` (or after `close()`). */
export function getUWebSocketManager(): UWebSocketManager | null {
  return nativeApi.getUWebSocketManager()
}

/**
 * Starts the WebSocket server (once per process) and returns the manager. Call it after
 * `getPayload()` so it picks up the plugin's auth settings (JWT key, cookie name, `requireAuth`)
 * and hooks; a number is the port, an object overrides any server option of the plugin.
 * Default port: the plugin's `port`, else 3002. A second call returns the running manager.
 */
export async function initUWebSocket(portOrOptions?: number | ServerOptions): Promise<UWebSocketManager> {
  const given: ServerOptions = typeof portOrOptions === 'number' ? { port: portOrOptions } : (portOrOptions ?? {})
  let manager = nativeApi.getUWebSocketManager()
  if (!manager) {
    const opts = withoutUndefined({ ...runtime?.serverOptions, ...given })
    manager = await nativeApi.initUWebSocket(opts)
    runtime?.log(`WebSocket server listening on port ${manager.port}`)
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

  if (options.rooms) {
    manager.setRoomPolicy({ patterns: options.rooms.patterns, canJoin: options.rooms.canJoin })
  }
  if (options.verifyClient) manager.setVerifyClient(options.verifyClient)
  manager.setCredentialResolver(credentialResolver(payload))

  if (options.checkSessions !== false) {
    if (typeof manager.setSessionValidator === 'function') {
      manager.setSessionValidator((claims) => sessionIsLive(payload, claims))
    } else {
      // Fallback until the native server can ask before accepting: close right after open.
      manager.use(async (socket) => {
        if (!(await sessionIsLive(payload, socket.user))) {
          r.log(`closing socket ${socket.id}: session ${socket.user?.sid} is not live`)
          socket.close(4001, 'session revoked')
        }
      })
    }
  }

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
  for (const [type, handler] of Object.entries(options.handlers ?? {})) {
    manager.registerCustomHandler(type, handler)
  }
}

/** Closes the sockets of a logged-out session (or of every session of the user). */
export function disconnectLogout(user: Record<string, any> | null | undefined, allSessions: boolean, log: (m: string) => void): void {
  const manager = nativeApi.getUWebSocketManager()
  if (!manager || !user) return
  const claims = claimsOf(user)
  const n =
    allSessions || !claims.sid
      ? manager.disconnectUser(claims.id, 4001, claims.collection)
      : manager.disconnectSession(claims.sid, 4001)
  log(`logout of ${claims.collection}:${claims.id} closed ${n} socket(s)`)
}

/** Closes every socket of a deleted user. */
export function disconnectDeletedUser(collection: string, id: string | number, log: (m: string) => void): void {
  const manager = nativeApi.getUWebSocketManager()
  if (!manager) return
  const n = manager.disconnectUser(String(id), 4001, collection)
  log(`deletion of ${collection}:${id} closed ${n} socket(s)`)
}

function withoutUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}
