// uWebSockets.js peer: rooms are uWS topics (subscribe/publish, fan-out in C++ on the JS thread);
// JWT checked in JS at upgrade. With BENCH_AUTHORIZE=half the topic cannot be filtered per
// socket, so members are kept in JS and each allowed socket is sent to individually.
const uWS = require('uwebsockets')
const { PORT, MODE, AUTHORIZE, verifyJwt, eventMessage, Rooms, dispatchText, control } = require('./common')

const rooms = new Rooms()
const decoder = new TextDecoder()

const app = uWS.App().ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1 << 20,
  maxBackpressure: 1 << 20,
  idleTimeout: 0,
  upgrade: (res, req, context) => {
    const user = verifyJwt(req.getHeader('authorization'))
    if (!user && MODE === 'app') return res.writeStatus('401 Unauthorized').end()
    res.upgrade(
      { user, rooms: new Set(), adapter: null },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    )
  },
  open: (ws) => {
    const d = ws.getUserData()
    d.adapter = {
      send: (obj) => ws.send(JSON.stringify(obj), false),
      join: (room) => {
        d.rooms.add(room)
        if (AUTHORIZE) rooms.join(room, ws, d.user)
        else ws.subscribe(room)
      },
      leave: (room) => {
        d.rooms.delete(room)
        if (AUTHORIZE) rooms.leave(room, ws)
        else ws.unsubscribe(room)
      },
    }
  },
  message: (ws, message, isBinary) => {
    if (MODE === 'echo') return void ws.send(message, isBinary)
    dispatchText(ws.getUserData().adapter, decoder.decode(message))
  },
  close: (ws) => {
    const d = ws.getUserData()
    if (AUTHORIZE) for (const room of d.rooms) rooms.leave(room, ws)
  },
})

function emit(event) {
  const payload = JSON.stringify(eventMessage(event))
  const room = `collection:${event.collection}`
  if (!AUTHORIZE) return void app.publish(room, payload, false)
  for (const ws of rooms.recipients(room, event)) ws.send(payload, false)
}

app.listen('127.0.0.1', PORT, (listenSocket) => {
  if (!listenSocket) {
    console.error('uws: cannot listen on', PORT)
    process.exit(1)
  }
  control(emit)
})
