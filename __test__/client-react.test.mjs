// React hooks of the client SDK against the real native server, rendered with react-test-renderer
// (React 19: rendering is concurrent and scheduled, so the tests wait for what they expect).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Component, createElement as h } from 'react'
import TestRenderer from 'react-test-renderer'
import WebSocket from 'ws'
import { createClient } from '../dist/client/index.js'
import {
  RealtimeProvider,
  useCollection,
  useDoc,
  useRealtime,
  useRealtimeState,
} from '../dist/react/index.js'
import { startServer, waitFor } from './helpers/server.mjs'

const members = (srv, room) => srv.manager.getLocalRoomMembers(room).length
const ids = (list) => list.map((d) => String(d.id))

test('useCollection keeps a live list and useDoc follows one document', async (t) => {
  const srv = await startServer()
  t.after(() => srv.close())
  const client = createClient({ url: srv.url(), WebSocket })
  t.after(() => client.close())
  const initial = [
    { id: 1, title: 'one' },
    { id: 2, title: 'two' },
  ]
  const seen = {}
  function Probe() {
    seen.posts = useCollection('posts', { initial })
    seen.doc = useDoc('posts', 2, { initial: initial[1] })
    seen.state = useRealtimeState()
    return null
  }
  const r = TestRenderer.create(h(RealtimeProvider, { client }, h(Probe)))
  await waitFor(() => seen.posts, { message: 'first render' })
  assert.deepEqual(ids(seen.posts), ['1', '2'])
  assert.deepEqual(seen.doc, { id: 2, title: 'two' })
  await waitFor(() => members(srv, 'collection:posts') === 1 && members(srv, 'doc:posts:2') === 1, {
    message: 'joins',
  })
  await waitFor(() => seen.state === 'open', { message: 'state open' })

  srv.manager.emitEvent({ operation: 'create', collection: 'posts', id: 3, doc: { id: 3, title: 'three' } })
  srv.manager.emitEvent({ operation: 'update', collection: 'posts', id: 2, doc: { id: 2, title: 'TWO' } })
  srv.manager.emitEvent({ operation: 'delete', collection: 'posts', id: 1, doc: { id: 1 } })
  await waitFor(() => ids(seen.posts).join() === '2,3', { message: `live list (${ids(seen.posts)})` })
  assert.deepEqual(seen.posts, [
    { id: 2, title: 'TWO' },
    { id: 3, title: 'three' },
  ])
  assert.deepEqual(seen.doc, { id: 2, title: 'TWO' })
  srv.manager.emitEvent({ operation: 'delete', collection: 'posts', id: 2, doc: { id: 2 } })
  await waitFor(() => seen.doc === null, { message: 'doc deleted' })
  assert.deepEqual(ids(seen.posts), ['3'])

  r.unmount()
  await waitFor(() => members(srv, 'collection:posts') === 0 && members(srv, 'doc:posts:2') === 0, {
    message: 'leaves',
  })
  assert.equal(client.state, 'open', 'a client passed in is not closed by the provider')
})

test('RealtimeProvider with options owns its client: connects on mount, closes on unmount', async (t) => {
  const srv = await startServer()
  t.after(() => srv.close())
  const seen = {}
  function Probe() {
    seen.client = useRealtime()
    seen.state = useRealtimeState()
    return null
  }
  const r = TestRenderer.create(h(RealtimeProvider, { options: { url: srv.url(), WebSocket } }, h(Probe)))
  await waitFor(() => seen.state === 'open', { message: 'open' })
  assert.equal(srv.manager.getStats().connections, 1)
  r.unmount()
  await waitFor(() => seen.client.state === 'closed', { message: 'client closed' })
  await waitFor(() => srv.manager.getStats().connections === 0, { message: 'server saw the close' })
})

class Catch extends Component {
  state = { error: null }
  static getDerivedStateFromError(error) {
    return { error }
  }
  componentDidCatch(error) {
    this.props.onError(error)
  }
  render() {
    return this.state.error ? null : this.props.children
  }
}

test('useRealtime outside a provider throws', async (t) => {
  function Probe() {
    useRealtime()
    return null
  }
  const orig = console.error
  console.error = () => {} // React logs the caught render error
  t.after(() => (console.error = orig))
  let caught = null
  TestRenderer.create(h(Catch, { onError: (e) => (caught = e) }, h(Probe)))
  await waitFor(() => caught, { message: 'render error' })
  assert.match(caught.message, /inside <RealtimeProvider>/)
})
