// Socket.IO peer (websocket transport only): rooms are Socket.IO rooms, events go out with
// io.to(room).emit (encoded once per broadcast); JWT checked at upgrade (allowRequest).
// App messages travel as the 'message' event: 42["message",{…}].
const http = require('node:http')
const { Server } = require('socket.io')
const {
  PORT,
  MODE,
  AUTHORIZE,
  verifyJwt,
  eventMessage,
  authorizeHalf,
  dispatch,
  control,
} = require('./common')

const httpServer = http.createServer()
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 1 << 20,
  allowRequest: (req, cb) => {
    const user = verifyJwt(req.headers.authorization)
    if (!user && MODE === 'app') return cb('unauthorized', false)
    req.user = user
    cb(null, true)
  },
})

io.on('connection', (socket) => {
  if (MODE === 'echo') return socket.on('message', (m) => socket.emit('message', m))
  socket.data.user = socket.request.user
  delete socket.request.user
  const adapter = {
    send: (obj) => socket.emit('message', obj),
    join: (room) => socket.join(room),
    leave: (room) => socket.leave(room),
  }
  socket.on('message', (msg) => dispatch(adapter, msg))
})

function emit(event) {
  const room = `collection:${event.collection}`
  const msg = eventMessage(event)
  if (!AUTHORIZE) return void io.to(room).emit('message', msg)
  const ids = [...(io.sockets.adapter.rooms.get(room) || [])]
  const ok = authorizeHalf(
    ids.map((id) => io.sockets.sockets.get(id)?.data.user),
    event,
  )
  const allowed = ids.filter((_, i) => ok[i])
  if (allowed.length) io.to(allowed).emit('message', msg)
}

httpServer.listen(PORT, '127.0.0.1', () => control(emit))
