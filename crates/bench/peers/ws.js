// ws + bufferutil peer: rooms are Sets kept in JS; the event is serialized once and the same
// Buffer is sent to every member; JWT checked at upgrade.
const http = require('node:http')
const { WebSocketServer } = require('ws')
const { PORT, MODE, verifyJwt, eventMessage, Rooms, dispatchText, control } = require('./common')

const rooms = new Rooms()
const server = http.createServer((_req, res) => res.writeHead(404).end())
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 })

server.on('upgrade', (req, socket, head) => {
  const user = verifyJwt(req.headers.authorization)
  if (!user && MODE === 'app') {
    socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
    return
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (MODE === 'echo') return ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    const joined = new Set()
    const adapter = {
      send: (obj) => ws.send(JSON.stringify(obj)),
      join: (room) => (joined.add(room), rooms.join(room, ws, user)),
      leave: (room) => (joined.delete(room), rooms.leave(room, ws)),
    }
    ws.on('message', (data) => dispatchText(adapter, data))
    ws.on('close', () => {
      for (const room of joined) rooms.leave(room, ws)
    })
  })
})

function emit(event) {
  const payload = Buffer.from(JSON.stringify(eventMessage(event)))
  for (const ws of rooms.recipients(`collection:${event.collection}`, event)) {
    ws.send(payload, { binary: false })
  }
}

server.listen(PORT, '127.0.0.1', () => control(emit))
