// The live demo page: logs in over Payload's REST API, keeps the post list live with the client
// SDK (onCollection, the login's JWT as token), writes through REST, and shows the connection
// state and the socket's round trip (ping → pong).
import { applyDocEvent, createClient } from '/client/index.js'

const $ = (id) => document.getElementById(id)
const TOKEN_KEY = 'live-demo-token'
const PING_EVERY_MS = 2000
const MAX_ACTIVITY = 50
const STATE_LABELS = {
  connecting: 'connecting…',
  open: 'live',
  reconnecting: 'reconnecting…',
  closed: 'offline',
  failed: 'offline',
}
const OPERATION_LABELS = { create: 'created', update: 'edited', delete: 'deleted' }

const { wsPort, wsPath } = await (await fetch('/config.json')).json()
const wsUrl = (() => {
  const u = new URL('/', location.href) // the page's host, the socket server's port
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:'
  u.port = String(wsPort)
  u.pathname = wsPath
  return u.toString()
})()

let token = sessionStorage.getItem(TOKEN_KEY)
let client = null
let pingTimer = null
/** The list as shown, newest first. */
let posts = []
/** Events that arrived while the list was (re)loading; applied on top of the loaded list. */
let pending = null
let loadSeq = 0
/** id → <li>, so a change touches one element and keeps any edit form that is open. */
const items = new Map()

// ------------------------------------------------------------------ REST

/** Calls Payload's REST API with the JWT (never a cookie); throws an Error with `status`. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = {}
  if (token) headers.authorization = `JWT ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`/api${path}`, {
    method,
    headers,
    credentials: 'omit',
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const data = await res.json().catch(() => null)
  if (!res.ok) {
    const message = data?.errors?.[0]?.message ?? `${res.status} ${res.statusText}`
    throw Object.assign(new Error(message), { status: res.status })
  }
  return data
}

/** Runs a write for the page; a refused session logs out, other errors show under the form. */
async function write(fn, errorEl = $('app-error')) {
  errorEl.textContent = ''
  try {
    return await fn()
  } catch (err) {
    if (err.status === 401 || err.status === 403) signOut('Your session ended. Log in again.')
    else errorEl.textContent = err.message
    return null
  }
}

function setToken(value) {
  token = value
  if (value) sessionStorage.setItem(TOKEN_KEY, value)
  else sessionStorage.removeItem(TOKEN_KEY)
}

/** getToken of the client: a fresh JWT for the same session (before `exp`, or after a 4001). */
async function refreshToken() {
  try {
    const { refreshedToken } = await api('/users/refresh-token', { method: 'POST' })
    setToken(refreshedToken)
    return refreshedToken
  } catch (err) {
    if (err.status === 401 || err.status === 403) signOut('Your session ended. Log in again.')
    throw err
  }
}

// ------------------------------------------------------------------ session

async function start() {
  let user = null
  try {
    user = (await api('/users/me')).user
  } catch {
    /* treated as logged out */
  }
  if (!user) return signOut(token ? 'Your session ended. Log in again.' : '')
  $('who').textContent = user.email
  $('login-view').hidden = true
  $('app-view').hidden = false
  $('status').hidden = false

  client = createClient({
    url: wsUrl,
    token,
    getToken: refreshToken,
    autoConnect: false,
    reconnect: { maxDelayMs: 5000 },
  })
  client.onStateChange(showState)
  client.onError((err) => {
    if (err.code === 'unauthorized') signOut('Your session ended. Log in again.')
    else console.warn('[live demo]', err.code, err.message)
  })
  // (Re)load the list each time the collection room is joined, so nothing missed while the socket
  // was down stays missing; events arriving meanwhile wait in `pending`.
  client.on('joined', (m) => m.room === 'collection:posts' && loadPosts())
  client.onCollection('posts', onEvent)
  client.connect()
  pingTimer = setInterval(measureLatency, PING_EVERY_MS)
  loadPosts() // show the posts even before (or without) the socket
}

function signOut(message = '') {
  client?.close()
  client = null
  clearInterval(pingTimer)
  setToken(null)
  posts = []
  pending = null
  loadSeq++
  items.clear()
  $('posts').replaceChildren()
  $('activity').replaceChildren()
  $('app-view').hidden = true
  $('status').hidden = true
  $('login-view').hidden = false
  $('login-error').textContent = message
  showState('closed')
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  const form = ev.currentTarget
  const button = form.querySelector('button')
  button.disabled = true
  $('login-error').textContent = ''
  try {
    setToken(null)
    const { token: jwt } = await api('/users/login', {
      method: 'POST',
      body: { email: form.email.value, password: form.password.value },
    })
    setToken(jwt)
    form.password.value = ''
    await start()
  } catch (err) {
    $('login-error').textContent = err.message
  } finally {
    button.disabled = false
  }
})

$('logout').addEventListener('click', () => {
  const jwt = token
  signOut()
  // Ends the session in Payload; the plugin would close its sockets (4001) if any were left.
  fetch('/api/users/logout', {
    method: 'POST',
    credentials: 'omit',
    headers: { authorization: `JWT ${jwt}` },
  }).catch(() => {})
})

// ------------------------------------------------------------------ live state

function showState(state) {
  const pill = $('state')
  pill.dataset.state = state
  $('state-label').textContent = STATE_LABELS[state] ?? state
  pill.title = state === 'open' && client?.socketId ? `socket ${client.socketId}` : ''
  if (state === 'open') measureLatency()
  else showLatency(null)
}

async function measureLatency() {
  if (client?.state !== 'open') return
  try {
    showLatency(await client.ping({ timeoutMs: 5000 }))
  } catch {
    showLatency(null) // dropped or timed out: the state pill tells why
  }
}

function showLatency(ms) {
  const el = $('latency')
  if (ms === null) {
    delete el.dataset.ms
    el.textContent = '– ms'
    return
  }
  el.dataset.ms = String(ms)
  el.textContent = `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`
}

// ------------------------------------------------------------------ posts

async function loadPosts() {
  const seq = ++loadSeq
  pending ??= []
  let docs
  try {
    ;({ docs } = await api('/posts?limit=100&depth=1&sort=-createdAt'))
  } catch (err) {
    if (seq !== loadSeq) return
    pending = null
    if (err.status === 401 || err.status === 403) signOut('Your session ended. Log in again.')
    else $('app-error').textContent = `Could not load posts: ${err.message}`
    return
  }
  if (seq !== loadSeq) return // a newer load runs and keeps the buffer
  posts = docs
  const buffered = pending
  pending = null
  for (const event of buffered) apply(event)
  render()
}

function onEvent(event) {
  logActivity(event)
  if (pending) pending.push(event)
  else if (apply(event)) render(String(event.id))
}

/**
 * Applies a create/update/delete to `posts`; false when nothing changed (the list already holds
 * this version or a newer one, e.g. from a REST answer, or the deleted post is gone already).
 */
function apply(event) {
  if (event.type !== 'delete') {
    const current = posts.find((p) => String(p.id) === String(event.id))
    if (current?.updatedAt && event.doc?.updatedAt && current.updatedAt >= event.doc.updatedAt) return false
  }
  const next = applyDocEvent(posts, event, { insertAt: 'start' })
  const changed = next !== posts
  posts = next
  return changed
}

/** Brings the <ul> in line with `posts`, touching only what changed; `changedId` flashes. */
function render(changedId) {
  const list = $('posts')
  const keep = new Set()
  posts.forEach((doc, i) => {
    const id = String(doc.id)
    keep.add(id)
    let li = items.get(id)
    if (!li) items.set(id, (li = newItem(id)))
    if (li.dataset.version !== String(doc.updatedAt)) fill(li, doc)
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null)
  })
  for (const [id, li] of items) {
    if (keep.has(id)) continue
    li.remove()
    items.delete(id)
  }
  const li = changedId && items.get(changedId)
  if (li) {
    li.classList.remove('changed')
    void li.offsetWidth // restart the animation
    li.classList.add('changed')
  }
  $('count').textContent = posts.length ? `(${posts.length})` : ''
  $('empty').hidden = posts.length > 0
}

function fill(li, doc) {
  li.dataset.version = String(doc.updatedAt)
  li.querySelector('.title').textContent = doc.title
  li.querySelector('.body').textContent = doc.body ?? ''
  const author = typeof doc.author === 'object' && doc.author ? doc.author.name || doc.author.email : null
  const when = new Date(doc.updatedAt).toLocaleString()
  li.querySelector('.meta').textContent = author ? `${author} · ${when}` : when
}

function newItem(id) {
  const li = $('post-template').content.firstElementChild.cloneNode(true)
  li.dataset.id = id
  const view = li.querySelector('.view')
  const form = li.querySelector('.edit')
  const errorEl = $('app-error')
  const current = () => posts.find((p) => String(p.id) === id)
  const editing = (on) => {
    view.hidden = on
    form.hidden = !on
  }
  li.querySelector('[data-action="edit"]').addEventListener('click', () => {
    const doc = current()
    form.title.value = doc?.title ?? ''
    form.body.value = doc?.body ?? ''
    editing(true)
    form.title.focus()
  })
  li.querySelector('[data-action="cancel"]').addEventListener('click', () => editing(false))
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const res = await write(
      () =>
        api(`/posts/${id}`, { method: 'PATCH', body: { title: form.title.value, body: form.body.value } }),
      errorEl,
    )
    if (!res) return
    editing(false)
    // The socket brings the same change; applying the answer too keeps the page right without it.
    if (apply({ type: 'update', operation: 'update', collection: 'posts', id: res.doc.id, doc: res.doc }))
      render(id)
  })
  li.querySelector('[data-action="delete"]').addEventListener('click', async (ev) => {
    const button = ev.currentTarget
    button.disabled = true
    const res = await write(() => api(`/posts/${id}`, { method: 'DELETE' }), errorEl)
    button.disabled = false
    if (res && apply({ type: 'delete', operation: 'delete', collection: 'posts', id, doc: res.doc })) render()
  })
  return li
}

$('create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  const form = ev.currentTarget
  const button = form.querySelector('button')
  button.disabled = true
  const res = await write(() =>
    api('/posts', { method: 'POST', body: { title: form.title.value, body: form.body.value } }),
  )
  button.disabled = false
  if (!res) return
  form.reset()
  if (apply({ type: 'update', operation: 'create', collection: 'posts', id: res.doc.id, doc: res.doc }))
    render(String(res.doc.id))
})

// ------------------------------------------------------------------ activity feed

function logActivity(event) {
  const li = document.createElement('li')
  li.dataset.op = event.operation
  li.dataset.id = String(event.id)
  const time = document.createElement('time')
  const at = new Date()
  time.dateTime = at.toISOString()
  time.textContent = at.toLocaleTimeString()
  const op = document.createElement('span')
  op.className = `op ${event.operation}`
  op.textContent = OPERATION_LABELS[event.operation] ?? event.operation
  const what = document.createElement('span')
  what.className = 'what'
  what.textContent = event.doc?.title ? `#${event.id} ${event.doc.title}` : `#${event.id}`
  what.title = what.textContent
  li.append(time, op, what)
  const list = $('activity')
  list.prepend(li)
  while (list.children.length > MAX_ACTIVITY) list.lastElementChild.remove()
}

// ------------------------------------------------------------------ boot

if (token) start()
else signOut()
