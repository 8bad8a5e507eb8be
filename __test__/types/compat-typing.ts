// Compile-time checks of the compatibility surface (other systems' names and types) against the
// built declarations (dist/plugin). Every `@ts-expect-error` must hit an error, or tsc fails.
import { type UWebSocketManager, withWebSocket } from '../../dist/plugin/index.js'

export function uwebsocketPlugin(manager: UWebSocketManager): void {
  // The uWebSockets.js plugin's types: ids from getSocketsInRoom, a Map from getSockets.
  const ids: string[] = manager.getSocketsInRoom('room:a')
  const _sockets: Map<string, { id: string }> = manager.getSockets()
  manager.on('chat', (ws, data) => {
    const { id, user, rooms } = ws.getUserData()
    const room: boolean = rooms.has('collection:posts')
    manager.sendToSocket(ws, 'chat', { from: user?.id ?? id, data, room })
  })
  // @ts-expect-error getSockets is a Map, not an array
  manager.getSockets().map((s) => s.id)
  void ids, _sockets
}

export function pxl(manager: UWebSocketManager): void {
  manager.sendMessageToAll({ data: { type: 'notification', action: 'alert' } })
}

export function nextrush(manager: UWebSocketManager): void {
  const wsApp = withWebSocket(manager)
  wsApp
    .ws('/chat', (socket) => {
      socket.join('general')
      socket.onClose((code: number, reason: string) => void [code, reason])
    })
    .wsUse((_socket, _req, next) => next())
    .wsBroadcast(JSON.stringify({ type: 'x' }), 'general')
  const { totalConnections, rooms, handlers } = wsApp.getStats()
  const n: number = totalConnections + handlers + rooms.length
  // @ts-expect-error NextRush's `rooms` is a list of names
  const _r: number = wsApp.getStats().rooms
  void n, _r
}
