// PXL's WebSocket module (`@scpxl/nodejs-framework`), as its clients and server code rely on it:
// a routed message `{type, action, data}` without an `id` is answered `{type, action, response}`
// (the handler's return value) and a throwing handler `{type:'error', action:'message',
// data:{error}}`; `sendMessageToAll({ data })` sends `data` to every socket. Routing itself
// (`actionRouting`) is native; docs/migrating/pxl.md shows each before/after.
import { type CustomHandler, type Message, type SocketHandle, UWebSocketManager } from '../manager.js'

declare module '../manager.js' {
  interface UWebSocketManager {
    /**
     * PXL's `sendMessageToAll({ data })`: `data` to every socket on every instance. Any other
     * argument is sent as it is (= `broadcast(msg)`).
     */
    sendMessageToAll(msg: { data: Message } | Message): void
  }
}

/** `{ data }` and nothing else: PXL's argument shape. */
const isPxlEnvelope = (m: unknown): m is { data: Message } =>
  m !== null && typeof m === 'object' && Object.keys(m).length === 1 && 'data' in m

UWebSocketManager.prototype.sendMessageToAll = function sendMessageToAll(
  this: UWebSocketManager,
  msg: { data: Message } | Message,
): void {
  this.broadcast(isPxlEnvelope(msg) ? msg.data : msg)
}

/**
 * A handler named `type:action` answers a message routed to it by `type` and `action` (PXL's
 * route) the way PXL's server did when the message has no `id`. Messages with an `id` keep our
 * reply (`{type:'reply', id, data}`); messages sent with the full name as `type` are ours too.
 */
function answeringLikePxl(route: string, handler: CustomHandler): CustomHandler {
  // Not async: handlers that are not answered here keep their synchronous replies.
  return (socket: SocketHandle, data: unknown, message: any) => {
    const pxl =
      message !== null &&
      typeof message === 'object' &&
      message.id === undefined &&
      typeof message.type === 'string' &&
      typeof message.action === 'string' &&
      `${message.type}:${message.action}` === route
    if (!pxl) return handler(socket, data, message)
    return (async () => {
      try {
        const response = await handler(socket, data, message)
        socket.send({ type: message.type, action: message.action, response })
      } catch (e) {
        socket.send({ type: 'error', action: 'message', data: { error: (e as Error)?.message ?? String(e) } })
      }
      return undefined
    })()
  }
}

const register = UWebSocketManager.prototype.registerCustomHandler
UWebSocketManager.prototype.registerCustomHandler = function registerCustomHandler(
  this: UWebSocketManager,
  type: string,
  handler: CustomHandler,
): void {
  // Only names with a `:` can be routes; every other handler is registered untouched.
  const routed = typeof type === 'string' && type.includes(':') && typeof handler === 'function'
  register.call(this, type, routed ? answeringLikePxl(type, handler) : handler)
}
