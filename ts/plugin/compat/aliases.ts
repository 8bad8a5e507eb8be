// Method names other real-time servers gave their managers, as aliases on UWebSocketManager:
// the uWebSockets.js Payload plugin's `on`, `joinRoom`, `leaveRoom`, `getSocketsInRoom`,
// `getSockets`, and PXL's `sendMessageToAll`. Each forwards to the manager's own method.
import {
  type CustomHandler,
  type DisconnectHandler,
  type Message,
  type Middleware,
  type SocketHandle,
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
    /** Handles of this instance's sockets in `room`. */
    getSocketsInRoom(room: string): SocketHandle[]
    /** Handles of every socket open on this instance. */
    getSockets(): SocketHandle[]
    /** PXL's name for `broadcast(msg)`: every socket on every instance. */
    sendMessageToAll(msg: Message): void
  }
}

const idOf = (s: string | SocketHandle) => (typeof s === 'string' ? s : s.id)

const aliases: Pick<
  UWebSocketManager,
  'on' | 'joinRoom' | 'leaveRoom' | 'getSocketsInRoom' | 'getSockets' | 'sendMessageToAll'
> = {
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
    return this.getLocalRoomMembers(room).map((m) => this.socket(m.socketId))
  },
  getSockets(this: UWebSocketManager) {
    return this.socketIds().map((id) => this.socket(id))
  },
  sendMessageToAll(this: UWebSocketManager, msg) {
    this.broadcast(msg)
  },
}

Object.assign(UWebSocketManager.prototype, aliases)
