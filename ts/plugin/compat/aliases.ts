// Method names other real-time servers gave their managers, as aliases on UWebSocketManager:
// the uWebSockets.js Payload plugin's `on`, `joinRoom`, `leaveRoom`, `getSocketsInRoom`,
// `getSockets`, and its sockets' `getUserData()`. Each forwards to the manager's own methods.
import {
  type CustomHandler,
  type DisconnectHandler,
  type Middleware,
  SocketHandle,
  UWebSocketManager,
} from '../manager.js'

declare module '../manager.js' {
  interface UWebSocketManager {
    /**
     * `on('disconnect' | 'close', (socket, code, reason) => …)`, `on('connection' | 'open',
     * (socket, req) => …)` (never refuses; use `use()` to refuse), or `on(type, handler)` for
     * messages of `type` (as `registerCustomHandler`).
     */
    on(event: 'disconnect' | 'close', handler: DisconnectHandler): void
    on(event: 'connection' | 'open', handler: Middleware): void
    on(type: string, handler: CustomHandler): void
    /** Puts a socket in a room (full name); false if it was already in it or is gone. */
    joinRoom(socket: string | SocketHandle, room: string): boolean
    /** Takes a socket out of a room; false if it was not in it. */
    leaveRoom(socket: string | SocketHandle, room: string): boolean
    /** Ids of this instance's sockets in `room` (the plugin's `string[]`). */
    getSocketsInRoom(room: string): string[]
    /** Every socket open on this instance by id (the plugin's `Map<socketId, ws>`). */
    getSockets(): Map<string, SocketHandle>
  }
  interface SocketHandle {
    /**
     * The uWebSockets.js plugin's `ws.getUserData()`: `{ id, user, rooms }`, `user` being the
     * token's `{ id, email, collection, role }` (those present) or undefined when anonymous.
     */
    getUserData(): UwsUserData
  }
}

/** What the uWebSockets.js plugin's handlers read from `ws.getUserData()`. */
export interface UwsUserData {
  id: string
  user?: { id: string | number; collection: string; email?: string; role?: unknown }
  rooms: Set<string>
}

const idOf = (s: string | SocketHandle) => (typeof s === 'string' ? s : s.id)

const aliases: Pick<UWebSocketManager, 'on' | 'joinRoom' | 'leaveRoom' | 'getSocketsInRoom' | 'getSockets'> =
  {
    on(this: UWebSocketManager, event: string, handler: (...args: any[]) => any): void {
      if (event === 'disconnect' || event === 'close') {
        this.onDisconnect(handler as DisconnectHandler)
      } else if (event === 'connection' || event === 'open') {
        this.use(async (socket, req) => {
          try {
            await handler(socket, req)
          } catch (e) {
            console.error(`[realtime] ${event} handler threw`, e)
          }
        })
      } else {
        this.registerCustomHandler(event, handler as CustomHandler)
      }
    },
    joinRoom(this: UWebSocketManager, socket, room) {
      try {
        return this.native.join(idOf(socket), room)
      } catch {
        return false
      }
    },
    leaveRoom(this: UWebSocketManager, socket, room) {
      return this.native.leave(idOf(socket), room)
    },
    getSocketsInRoom(this: UWebSocketManager, room) {
      return this.getLocalRoomMembers(room).map((m) => m.socketId)
    },
    getSockets(this: UWebSocketManager) {
      return new Map(this.socketIds().map((id) => [id, this.socket(id)]))
    },
  }

Object.assign(UWebSocketManager.prototype, aliases)

SocketHandle.prototype.getUserData = function getUserData(this: SocketHandle): UwsUserData {
  const u = this.user
  const user = u ? { id: u.id, collection: u.collection } : undefined
  if (u && user) {
    // Only the fields the token has: the plugin read them from the user's document.
    for (const k of ['email', 'role'] as const) if (u[k] !== undefined) Object.assign(user, { [k]: u[k] })
  }
  return { id: this.id, user, rooms: new Set(this.rooms) }
}
