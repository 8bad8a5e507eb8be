// NextRush's WebSocketPlugin API (nextrush 2's `withWebSocket(app)`), over the manager: per-path
// connection handlers `ws(path, handler)`, `wsUse(mw)` with `next()`, `wsBroadcast(message,
// room?)`, `getStats()` with NextRush's field names, and the socket's `onClose(listener)`. Raw
// `onMessage` is not offered: messages reach JS by type (registerCustomHandler), see
// docs/migrating/nextrush.md.
import {
  getUWebSocketManager,
  type Message,
  SocketHandle,
  type UpgradeRequest,
  type UWebSocketManager,
} from '../manager.js'

declare module '../manager.js' {
  interface SocketHandle {
    /** NextRush's `socket.onClose((code, reason) => …)`: called once, when this socket closes. */
    onClose(listener: (code: number, reason: string) => void): void
  }
}

/** A connection handler of one path: NextRush's `WSHandler`. */
export type WSHandler = (socket: SocketHandle, req: UpgradeRequest) => void | Promise<void>
/** NextRush's `WSMiddleware`: call `next()` to go on; not calling it refuses the socket. */
export type WSMiddleware = (
  socket: SocketHandle,
  req: UpgradeRequest,
  next: () => void,
) => void | Promise<void>

/** `getStats()` as NextRush's WebSocketPlugin reported it. */
export interface NextRushStats {
  /** Sockets open on this instance now. */
  totalConnections: number
  /** Names of the rooms this instance's sockets are in. */
  rooms: string[]
  /** Paths registered with `ws()`. */
  handlers: number
}

/** What `withWebSocket(manager)` returns: NextRush's WebSocket application methods. */
export interface WebSocketApp {
  /** Runs `handler` for each socket whose path is `path` (exact, or a prefix ending in `*`). */
  ws(path: string, handler: WSHandler): WebSocketApp
  /** Runs before the path's handler, in order; a middleware that does not call `next` closes the socket (4003). */
  wsUse(middleware: WSMiddleware): WebSocketApp
  /** `message` to every socket (every instance), or to the room's. */
  wsBroadcast(message: Message, room?: string): WebSocketApp
  /** NextRush's field names; `manager.getStats()` has ours. */
  getStats(): NextRushStats
  /** The manager underneath. */
  readonly manager: UWebSocketManager
}

/** The handler of `path`: an exact route first, then the first prefix route (`/game/*`). */
function route(routes: Map<string, WSHandler>, path: string): WSHandler | undefined {
  const exact = routes.get(path)
  if (exact) return exact
  for (const [p, h] of routes) if (p.endsWith('*') && path.startsWith(p.slice(0, -1))) return h
  return undefined
}

/** NextRush's `withWebSocket(app)` for our manager. */
export function withWebSocket(manager: UWebSocketManager): WebSocketApp {
  const routes = new Map<string, WSHandler>()
  const middleware: WSMiddleware[] = []
  let installed = false
  const install = () => {
    if (installed) return
    installed = true
    manager.use(async (socket, req) => {
      const handler = route(routes, new URL(req.url, 'http://x').pathname)
      if (!handler) return true
      for (const mw of middleware) {
        let next = false
        await mw(socket, req, () => {
          next = true
        })
        if (!next) return false
      }
      await handler(socket, req)
      return true
    })
  }
  const app: WebSocketApp = {
    manager,
    ws(path, handler) {
      routes.set(path, handler)
      install()
      return app
    },
    wsUse(mw) {
      middleware.push(mw)
      return app
    },
    wsBroadcast(message, room) {
      if (room === undefined) manager.broadcast(message)
      else manager.broadcastToRoom(room, message)
      return app
    },
    getStats() {
      const ids = manager.socketIds()
      const rooms = new Set(ids.flatMap((id) => manager.native.socketInfo(id)?.rooms ?? []))
      return { totalConnections: ids.length, rooms: [...rooms], handlers: routes.size }
    },
  }
  return app
}

/** Close listeners by socket id; one disconnect handler per manager serves them all. */
const closeListeners = new Map<string, ((code: number, reason: string) => void)[]>()
const watching = new WeakSet<UWebSocketManager>()

SocketHandle.prototype.onClose = function onClose(
  this: SocketHandle,
  listener: (code: number, reason: string) => void,
): void {
  const manager = getUWebSocketManager()
  if (!manager) return
  if (!watching.has(manager)) {
    watching.add(manager)
    manager.onDisconnect((socket, code, reason) => {
      const listeners = closeListeners.get(socket.id)
      closeListeners.delete(socket.id)
      for (const l of listeners ?? []) {
        try {
          l(code, reason)
        } catch (e) {
          console.error('[realtime] onClose listener threw', e)
        }
      }
    })
  }
  // A socket already gone never closes again: nothing to keep.
  if (!manager.native.socketInfo(this.id)) return
  const list = closeListeners.get(this.id)
  if (list) list.push(listener)
  else closeListeners.set(this.id, [listener])
}
