// Socket.IO acks of joins that are answered more than once (a list of collections) with the
// real socket.io-client: on a server whose room limit refuses part of the list.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { startServer } from './helpers/server.mjs'
import { connectSocketIo } from './helpers/socketio.mjs'
import { JWT_KEY } from './helpers/ws.mjs'

let srv
before(async () => {
  srv = await startServer({ jwtKey: JWT_KEY, maxRoomsPerSocket: 2 })
})
after(() => srv.close())

test('a list join with refused collections acks once, with the first refusal, after all its answers', async () => {
  const s = await connectSocketIo(srv.port)
  try {
    const joined = []
    s.on('joined', (j) => joined.push(j.room))
    // Sent together: the list's later answers must not spill into the next request's ack.
    const list = s.timeout(2000).emitWithAck('join-collection', ['a', 'b', 'c', 'd'])
    const next = s.timeout(2000).emitWithAck('leave-collection', 'a')
    const answer = await list
    assert.equal(answer.error.code, 'too_many_rooms')
    assert.deepEqual(await next, { type: 'left', room: 'collection:a' })
    assert.deepEqual(joined, ['collection:a', 'collection:b'])
  } finally {
    s.close()
  }
})
