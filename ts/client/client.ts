import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js'
import { RealtimeError } from './errors.js'
import { jwtExpiry, refreshDelay } from './jwt.js'
import { DEFAULT_RATE_LIMIT, Outbox, type OutFrame, type RateLimitOptions } from './outbox.js'
import type {
  CollectionSlug,
  ConnectionState,
  DocEvent,
  DocId,
  DocOf,
  KnownFrames,
  RealtimeSchema,
  UntypedSchema,
  Unsubscribe,
  WebSocketConstructor,
  WebSocketLike,
  SocketUser,
} from './types.js'

/** Where the client connects when given no `url`: the one-origin path. */
export const DEFAULT_URL = '/realtime'

export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>

export interface RealtimeClientOptions {
  /**
   * `ws://` or `wss://` URL of the realtime server, e.g. `wss://example.com/realtime`. In a browser
   * it may be relative (`/realtime`) or http(s): it is resolved against the page and mapped to ws(s).
   * Default `/realtime`: the app's own origin, where `withRealtime` (next dev/start) or the
   * documented reverse proxy serves it.
   */
  url?: string
  /**
   * A fixed credential. Sent as the `token` query parameter at connect (browsers cannot set
   * headers on a WebSocket). Without `getToken` it cannot be refreshed: a 4001 close then fails.
   */
  token?: string | null
  /**
   * Called for a token before the first connect (when `token` is absent), before each JWT's `exp`
   * (the new token is sent as `{"type":"auth"}` on the live socket), and after a 4001 close / 401.
   */
  getToken?: TokenSource
  /** WebSocket constructor; default `globalThis.WebSocket`. In Node 20 pass `ws`'s default export. */
  WebSocket?: WebSocketConstructor
  /** Subprotocols passed to the WebSocket constructor. */
  protocols?: string | string[]
  /** Backoff policy, or `false` to never reconnect. */
  reconnect?: Partial<BackoffOptions> | false
  /** Sends and requests held while not connected (or paced); beyond it they are refused. Default 100. */
  maxQueue?: number
  /**
   * Client-side pacing of every frame it writes, so bursts (re-joining many rooms, a flushed queue)
   * stay under the server's `rateLimit`, which drops frames past it and closes 4008 at twice it.
   * Default 80 per 1000 ms (server default: 100 per 1000 ms); `false` writes without pacing.
   */
  rateLimit?: RateLimitOptions | false
  /** Default timeout of `request()` and `ping()`. Default 10000 ms. */
  requestTimeoutMs?: number
  /** Refresh a JWT this long before its `exp` (at most half its remaining life). Default 60000 ms. */
  refreshBeforeExpMs?: number
  /** Connect in the constructor. Default true; otherwise call `connect()`. */
  autoConnect?: boolean
}

export interface RequestOptions {
  timeoutMs?: number
}

type Listener = (msg: any) => void
type PendingRequest = {
  resolve: (value: any) => void
  reject: (err: RealtimeError) => void
  timer: ReturnType<typeof setTimeout>
  entry: OutFrame
  sent: boolean
}
type PendingPing = {
  /** When written (null while waiting in the outbox). */
  started: number | null
  resolve: (ms: number) => void
  reject: (err: RealtimeError) => void
  timer: ReturnType<typeof setTimeout>
}
type Room = { join: object; leave: object; count: number }

/** Closes that end reconnection. Every other close (1013 try-again-later, 1001, 1006, …) and
 * every upgrade status but 401/403 (503 busy or shutting down) reconnects with backoff. */
const FAIL_CODES = new Set([4003, 1008])
const UNAUTHORIZED_CODE = 4001

/**
 * WebSocket client for payload-realtime-rs (wire protocol v1). One instance holds one socket,
 * reconnects it, re-joins its rooms and keeps its credentials fresh.
 *
 * Errors: `send()` throws a {@link RealtimeError}; `request()` and `ping()` never throw but return
 * a promise rejected with one. Connection-level errors go to `onError` listeners.
 */
export class RealtimeClient<S extends RealtimeSchema = UntypedSchema> {
  private readonly opts: RealtimeClientOptions
  private readonly WS: WebSocketConstructor | null
  private readonly backoff: BackoffOptions | null
  private readonly requestTimeoutMs: number
  private readonly refreshLeadMs: number

  private _state: ConnectionState = 'closed'
  private ws: WebSocketLike | null = null
  /** Bumped on every connect attempt and on close(); stale callbacks compare and bail out. */
  private generation = 0
  private attempt = 0
  private openedAt = 0
  private needFreshToken = false
  private token: string | null
  private httpStatus: number | null = null
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private refreshTimer: ReturnType<typeof setTimeout> | null = null
  private nextId = 0

  private readonly outbox: Outbox
  private readonly pending = new Map<string, PendingRequest>()
  /** Ids of requests that timed out, whose late answer is ignored (bounded, oldest dropped). */
  private readonly timedOut = new Set<unknown>()
  private readonly pings: PendingPing[] = []
  private readonly rooms = new Map<string, Room>()
  private readonly listeners = new Map<string, Set<Listener>>()
  private readonly stateListeners = new Set<(s: ConnectionState, prev: ConnectionState) => void>()
  private readonly errorListeners = new Set<(e: RealtimeError) => void>()

  /** From the server's `welcome` (and `authenticated`) on the current connection; null between connections. */
  socketId: string | null = null
  user: SocketUser | null = null

  constructor(options: RealtimeClientOptions) {
    if (!options || (options.url !== undefined && typeof options.url !== 'string'))
      throw new TypeError('RealtimeClient: options.url must be a string')
    this.opts = options
    // Resolved here but required only by connect(), so a client can be built where no WebSocket
    // exists (server-side rendering) as long as it is connected elsewhere.
    this.WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? null
    this.backoff = options.reconnect === false ? null : { ...DEFAULT_BACKOFF, ...options.reconnect }
    const rate = options.rateLimit === false ? null : (options.rateLimit ?? DEFAULT_RATE_LIMIT)
    if (rate && !(rate.messages >= 1 && rate.windowMs > 0))
      throw new TypeError('RealtimeClient: rateLimit needs messages >= 1 and windowMs > 0')
    this.outbox = new Outbox(options.maxQueue ?? 100, rate)
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000
    this.refreshLeadMs = options.refreshBeforeExpMs ?? 60_000
    this.token = options.token ?? null
    if (options.autoConnect !== false) this.connect()
  }

  get state(): ConnectionState {
    return this._state
  }

  /** Rooms (wire names, e.g. `collection:posts`) this client keeps joined across reconnects. */
  get joinedRooms(): string[] {
    return [...this.rooms.keys()]
  }

  /** The socket when it can take a frame now (a closing socket would drop it silently). */
  private live(): WebSocketLike | null {
    const ws = this.ws
    return ws && this._state === 'open' && ws.readyState === 1 ? ws : null
  }

  // ---------------------------------------------------------------- connection lifecycle

  /**
   * Opens the connection (no-op unless 'closed' or 'failed'). Subscriptions made before are kept.
   * Throws a TypeError when there is no WebSocket constructor.
   */
  connect(): void {
    if (this._state !== 'closed' && this._state !== 'failed') return
    if (!this.WS) {
      throw new TypeError(
        'RealtimeClient: no global WebSocket; pass options.WebSocket (e.g. the `ws` package)',
      )
    }
    this.attempt = 0
    this.setState('connecting')
    void this.openSocket()
  }

  /** Closes the socket for good (state 'closed'); queued sends and open requests are rejected. */
  close(code = 1000, reason = ''): void {
    this.shutdown('closed', new RealtimeError('closed', 'client closed'), code, reason)
  }

  /** Ends the connection for good: no reconnect, everything pending rejected with `err`. */
  private shutdown(state: 'closed' | 'failed', err: RealtimeError, code?: number, reason?: string): void {
    this.generation++
    this.clearTimers()
    const ws = this.ws
    this.ws = null
    if (ws) {
      detach(ws)
      try {
        ws.close(code, reason)
      } catch {
        /* already closing */
      }
    }
    this.dropAll(err)
    this.setState(state)
  }

  private async openSocket(): Promise<void> {
    const gen = ++this.generation
    let token: string | null
    try {
      token = await this.resolveToken()
    } catch (err) {
      if (gen !== this.generation) return
      this.emitError(new RealtimeError('token_failed', `getToken() failed: ${describe(err)}`, { cause: err }))
      this.scheduleReconnect()
      return
    }
    if (gen !== this.generation) return
    const exp = jwtExpiry(token)
    if (!this.opts.getToken && exp !== null && exp * 1000 <= Date.now()) {
      this.fail(
        new RealtimeError('unauthorized', 'the token has expired and there is no getToken to renew it'),
      )
      return
    }
    let ws: WebSocketLike
    try {
      ws = new this.WS!(this.urlWithToken(token), this.opts.protocols)
    } catch (err) {
      // A malformed URL will not get better by retrying.
      this.fail(
        new RealtimeError('connection_lost', `cannot open WebSocket: ${describe(err)}`, { cause: err }),
      )
      return
    }
    this.ws = ws
    this.httpStatus = null
    try {
      ws.binaryType = 'arraybuffer'
    } catch {
      /* not settable */
    }
    ws.onopen = () => {
      if (ws !== this.ws) return
      this.openedAt = Date.now()
      this.setState('open')
      this.outbox.attach(
        ws,
        [...this.rooms.values()].map((room) => ({ frame: JSON.stringify(room.join), user: false })),
      )
      this.scheduleRefresh(null)
    }
    ws.onmessage = (ev: { data: unknown }) => {
      if (ws === this.ws) this.handleFrame(ev.data)
    }
    ws.onerror = (ev: { message?: unknown; error?: { message?: unknown } }) => {
      if (ws !== this.ws) return
      // `ws` reports a refused upgrade as "Unexpected server response: 401"; browsers hide it.
      const text = String(ev?.message ?? ev?.error?.message ?? '')
      const m = /Unexpected server response: (\d{3})/.exec(text)
      if (m) this.httpStatus = Number(m[1])
    }
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (ws !== this.ws) return
      this.handleClose(ev?.code ?? 1006, String(ev?.reason ?? ''))
    }
  }

  private async resolveToken(): Promise<string | null> {
    const { getToken } = this.opts
    if (!getToken) return this.token
    const exp = jwtExpiry(this.token)
    const expired = exp !== null && exp * 1000 <= Date.now()
    if (this.token === null || this.needFreshToken || expired) {
      const fresh = await getToken()
      if (fresh != null && typeof fresh !== 'string') throw new TypeError('getToken() must return a string')
      this.token = fresh || null
      this.needFreshToken = false
    }
    return this.token
  }

  /**
   * The URL to open: `url` resolved against the page's location when relative (browsers), with
   * http(s) mapped to ws(s), and the token as the `token` query parameter.
   */
  private urlWithToken(token: string | null): string {
    const base = (globalThis as { location?: { href?: string } }).location?.href
    const u = new URL(this.opts.url ?? DEFAULT_URL, base)
    if (u.protocol === 'http:') u.protocol = 'ws:'
    else if (u.protocol === 'https:') u.protocol = 'wss:'
    if (token) u.searchParams.set('token', token)
    return u.toString()
  }

  private handleClose(code: number, reason: string): void {
    this.ws = null
    this.outbox.detach()
    this.socketId = null
    this.user = null
    if (this.refreshTimer) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    const wasOpen = this.openedAt !== 0
    if (wasOpen && this.backoff && Date.now() - this.openedAt >= this.backoff.resetAfterMs) this.attempt = 0
    this.openedAt = 0
    // What was on the wire is lost with the socket: never re-sent, so fail it now.
    const lost = new RealtimeError('disconnected', `connection closed (${code}) before the answer came`, {
      closeCode: code,
    })
    for (const [id, p] of this.pending) {
      if (!p.sent) continue
      clearTimeout(p.timer)
      this.pending.delete(id)
      p.reject(lost)
    }
    this.rejectPings(lost)

    const status = this.httpStatus
    const why = reason ? `: ${reason}` : ''
    if (FAIL_CODES.has(code) || status === 403) {
      this.fail(
        new RealtimeError('forbidden', `server refused the connection (${status ?? code})${why}`, {
          closeCode: code,
        }),
      )
      return
    }
    if (code === UNAUTHORIZED_CODE || status === 401) {
      if (!this.opts.getToken) {
        this.fail(
          new RealtimeError(
            'unauthorized',
            `credentials rejected (${status ?? code})${why}; no getToken to renew them`,
            { closeCode: code },
          ),
        )
        return
      }
      this.needFreshToken = true
    }
    this.scheduleReconnect(code)
  }

  private scheduleReconnect(closeCode?: number): void {
    const b = this.backoff
    if (!b) {
      this.fail(
        new RealtimeError('connection_lost', `connection closed (${closeCode ?? 'no socket'})`, {
          closeCode,
        }),
      )
      return
    }
    if (this.attempt >= b.maxRetries) {
      this.fail(
        new RealtimeError('max_retries', `gave up after ${this.attempt} reconnection attempts`, {
          closeCode,
        }),
      )
      return
    }
    const delay = backoffDelay(this.attempt++, b)
    this.setState('reconnecting')
    const gen = this.generation
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (gen === this.generation) void this.openSocket()
    }, delay)
  }

  private fail(err: RealtimeError): void {
    this.shutdown('failed', err)
    this.emitError(err)
  }

  private clearTimers(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    if (this.refreshTimer) clearTimeout(this.refreshTimer)
    this.reconnectTimer = this.refreshTimer = null
  }

  private dropAll(err: RealtimeError): void {
    this.outbox.clear()
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.reject(err)
    }
    this.pending.clear()
    this.rejectPings(err)
  }

  private setState(next: ConnectionState): void {
    const prev = this._state
    if (prev === next) return
    this._state = next
    for (const cb of [...this.stateListeners]) this.safeCall(cb, next, prev)
  }

  // ---------------------------------------------------------------- credentials

  /**
   * Schedules the next token refresh for the live socket. `previousExp` is the exp of the token
   * before the last refresh: when getToken() handed back no newer token, wait at least a second.
   */
  private scheduleRefresh(previousExp: number | null): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    const exp = jwtExpiry(this.token)
    if (!this.opts.getToken || exp === null || !this.ws) return
    let delay = refreshDelay(exp, Date.now(), this.refreshLeadMs)
    if (previousExp !== null && exp <= previousExp) delay = Math.max(delay, 1000)
    if (exp * 1000 <= Date.now()) return // expired and not renewed: the server's 4001 takes over
    const gen = this.generation
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null
      if (gen === this.generation) void this.refreshToken()
    }, delay)
  }

  /** Fetches a token with getToken() now and sends it on the live socket as `{"type":"auth"}`. */
  async refreshToken(): Promise<void> {
    const getToken = this.opts.getToken
    if (!getToken) throw new RealtimeError('unauthorized', 'refreshToken() needs options.getToken')
    const gen = this.generation
    const previousExp = jwtExpiry(this.token)
    let fresh: string | null | undefined
    try {
      fresh = await getToken()
    } catch (err) {
      if (gen !== this.generation) return
      this.emitError(new RealtimeError('token_failed', `getToken() failed: ${describe(err)}`, { cause: err }))
      this.scheduleRefresh(previousExp)
      return
    }
    if (gen !== this.generation) return
    if (typeof fresh === 'string' && fresh) {
      const changed = fresh !== this.token
      this.token = fresh
      if (changed) this.control({ type: 'auth', token: fresh })
    }
    this.scheduleRefresh(previousExp)
  }

  // ---------------------------------------------------------------- sending

  /**
   * Sends `{type, data}`. While not connected, or while `rateLimit` paces the socket, the frame
   * waits in a queue (up to `maxQueue`) and is written once, in order; nothing is written twice. Throws RealtimeError `queue_full` when
   * the queue is full and `closed` after close()/failure.
   */
  send(type: string, data?: unknown): void {
    this.transmit({ frame: frameOf(type, data), user: true })
  }

  /**
   * Sends `{type, id, data}` and resolves with the `data` of the matching `reply`; rejects with a
   * RealtimeError carrying the server's `code` on an `error` frame, `timeout` after `timeoutMs`,
   * `disconnected` when the socket drops after the request went out, `queue_full` / `closed` as
   * for send(). Never throws synchronously.
   */
  request<R = unknown>(type: string, data?: unknown, options: RequestOptions = {}): Promise<R> {
    const id = `r${++this.nextId}`
    const frame = JSON.stringify(data === undefined ? { type, id } : { type, id, data })
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs
    return new Promise<R>((resolve, reject) => {
      const entry: OutFrame = {
        frame,
        user: true,
        onWrite: () => {
          const p = this.pending.get(id)
          if (p) p.sent = true
        },
      }
      const timer = setTimeout(() => {
        const p = this.pending.get(id)
        if (!p) return
        this.pending.delete(id)
        this.outbox.remove(entry)
        this.timedOut.add(id)
        if (this.timedOut.size > 256) this.timedOut.delete(this.timedOut.values().next().value)
        reject(new RealtimeError('timeout', `request '${type}' timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve, reject, timer, entry, sent: false })
      try {
        this.transmit(entry)
      } catch (err) {
        clearTimeout(timer)
        this.pending.delete(id)
        reject(err)
      }
    })
  }

  /** Measures a round trip with `{"type":"ping"}` → `{"type":"pong"}` (from its write); resolves in ms. */
  ping(options: RequestOptions = {}): Promise<number> {
    if (!this.live()) {
      return Promise.reject(
        new RealtimeError('not_open', `ping() needs an open connection (state '${this._state}')`),
      )
    }
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs
    return new Promise<number>((resolve, reject) => {
      const ping: PendingPing = {
        started: null,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.pings.indexOf(ping)
          if (i >= 0) this.pings.splice(i, 1)
          this.outbox.remove(entry)
          reject(new RealtimeError('timeout', `ping timed out after ${timeoutMs} ms`))
        }, timeoutMs),
      }
      const entry: OutFrame = {
        frame: '{"type":"ping"}',
        user: false,
        onWrite: () => void (ping.started = now()),
      }
      this.pings.push(ping)
      this.outbox.push(entry, this._state)
    })
  }

  private rejectPings(err: RealtimeError): void {
    for (const p of this.pings.splice(0)) {
      clearTimeout(p.timer)
      p.reject(err)
    }
  }

  /** A protocol frame for the current socket (dropped when there is none: reconnects re-join). */
  private control(msg: object): void {
    this.outbox.push({ frame: JSON.stringify(msg), user: false }, this._state)
  }

  /** Hands an app frame to the outbox; true when written now, false when queued. */
  private transmit(entry: OutFrame): boolean {
    if (this._state === 'closed' || this._state === 'failed') {
      throw new RealtimeError('closed', `cannot send: client is ${this._state}`)
    }
    return this.outbox.push(entry, this._state)
  }

  // ---------------------------------------------------------------- rooms

  /**
   * Joins an app room (`join-room`, allowed only by the server's room policy; a refusal arrives as
   * an `error` frame with code `forbidden`). Reference-counted: the room is left when every
   * returned unsubscribe has been called, or at once with leave(room).
   */
  join(room: string): Unsubscribe {
    return this.hold(`room:${room}`, { type: 'join-room', room }, { type: 'leave-room', room })
  }

  /** Leaves an app room now, whatever holds it. */
  leave(room: string): void {
    this.release(`room:${room}`, true)
  }

  private hold(key: string, join: object, leave: object): Unsubscribe {
    let room = this.rooms.get(key)
    if (!room) {
      room = { join, leave, count: 0 }
      this.rooms.set(key, room)
      this.control(join)
    }
    room.count++
    let held = true
    const entry = room
    return () => {
      if (!held) return
      held = false
      if (this.rooms.get(key) === entry) this.release(key, false)
    }
  }

  private release(key: string, all: boolean): void {
    const room = this.rooms.get(key)
    if (!room) return
    room.count = all ? 0 : room.count - 1
    if (room.count > 0) return
    this.rooms.delete(key)
    this.control(room.leave)
  }

  // ---------------------------------------------------------------- subscriptions

  /** Every create/update/delete of a collection (joins `collection:<slug>` while subscribed). */
  onCollection<C extends CollectionSlug<S>>(
    slug: C,
    cb: (event: DocEvent<C, DocOf<S, C>>) => void,
  ): Unsubscribe {
    const key = `collection:${slug}`
    const off = this.listen(key, cb)
    const release = this.hold(
      key,
      { type: 'join-collection', collection: slug },
      { type: 'leave-collection', collection: slug },
    )
    return once(() => {
      off()
      release()
    })
  }

  /** Changes to one document (joins `doc:<collection>:<id>` while subscribed). */
  onDoc<C extends CollectionSlug<S>>(
    collection: C,
    id: DocId,
    cb: (event: DocEvent<C, DocOf<S, C>>) => void,
  ): Unsubscribe {
    const key = `doc:${collection}:${id}`
    const off = this.listen(key, cb)
    const release = this.hold(
      key,
      { type: 'join-doc', collection, id: String(id) },
      { type: 'leave-doc', collection, id: String(id) },
    )
    return once(() => {
      off()
      release()
    })
  }

  /**
   * Frames of one `type`: the protocol's (`welcome`, `joined`, `left`, `update`, `delete`, `error`,
   * `pong`) or the app's own (from broadcastToRoom / sendToSocket). `'*'` receives every frame,
   * parsed, or as a string when it is not JSON. Joins nothing.
   */
  on<T extends keyof KnownFrames<S>>(type: T, cb: (frame: KnownFrames<S>[T]) => void): Unsubscribe
  on<M = any>(type: string, cb: (frame: M) => void): Unsubscribe
  on(type: string, cb: Listener): Unsubscribe {
    return this.listen(`type:${type}`, cb)
  }

  onStateChange(cb: (state: ConnectionState, previous: ConnectionState) => void): Unsubscribe {
    this.stateListeners.add(cb)
    return () => void this.stateListeners.delete(cb)
  }

  /**
   * Connection-level errors (forbidden, unauthorized, max_retries, token_failed, …) and server
   * `error` frames that answer no pending request (a request's error rejects its promise; the late
   * answer to a timed-out request is seen only by `on('error')`). Without any listener they go to
   * console.error.
   */
  onError(cb: (error: RealtimeError) => void): Unsubscribe {
    this.errorListeners.add(cb)
    return () => void this.errorListeners.delete(cb)
  }

  private listen(key: string, cb: Listener): Unsubscribe {
    // Wrap so the same function subscribed twice counts twice.
    const fn: Listener = (msg) => cb(msg)
    let set = this.listeners.get(key)
    if (!set) this.listeners.set(key, (set = new Set()))
    set.add(fn)
    return once(() => {
      set.delete(fn)
      if (set.size === 0 && this.listeners.get(key) === set) this.listeners.delete(key)
    })
  }

  // ---------------------------------------------------------------- incoming

  private handleFrame(raw: unknown): void {
    const text =
      typeof raw === 'string' ? raw : raw instanceof ArrayBuffer ? new TextDecoder().decode(raw) : String(raw)
    let msg: any
    try {
      msg = JSON.parse(text)
    } catch {
      this.dispatch('type:*', text)
      return
    }
    this.dispatch('type:*', msg)
    if (msg === null || typeof msg !== 'object' || typeof msg.type !== 'string') return
    switch (msg.type) {
      case 'welcome':
        this.socketId = typeof msg.socketId === 'string' ? msg.socketId : null
        this.user = msg.user ?? null
        break
      case 'authenticated':
        this.user = msg.user ?? this.user
        break
      case 'pong': {
        const i = this.pings.findIndex((p) => p.started !== null)
        if (i >= 0) {
          const [p] = this.pings.splice(i, 1)
          clearTimeout(p.timer)
          p.resolve(now() - p.started!)
        }
        break
      }
      case 'reply':
      case 'error': {
        const p = typeof msg.id === 'string' ? this.pending.get(msg.id) : undefined
        if (p) {
          this.pending.delete(msg.id)
          clearTimeout(p.timer)
          if (msg.type === 'reply') p.resolve(msg.data)
          else
            p.reject(
              new RealtimeError(String(msg.code ?? 'error'), String(msg.message ?? 'request failed'), {
                frame: msg,
              }),
            )
          return
        }
        // An answer to a request that timed out is dropped; any other error is the connection's
        // (the server echoes a join-doc's doc `id` in its refusals, so an id alone proves nothing).
        if (msg.type === 'error' && !this.timedOut.delete(msg.id)) {
          this.emitError(
            new RealtimeError(String(msg.code ?? 'error'), String(msg.message ?? 'server error'), {
              frame: msg,
            }),
          )
        }
        break
      }
    }
    this.dispatch(`type:${msg.type}`, msg)
    if ((msg.type === 'update' || msg.type === 'delete') && typeof msg.collection === 'string') {
      this.dispatch(`collection:${msg.collection}`, msg)
      if (msg.id !== undefined && msg.id !== null) this.dispatch(`doc:${msg.collection}:${msg.id}`, msg)
    }
  }

  private dispatch(key: string, msg: unknown): void {
    const set = this.listeners.get(key)
    if (!set) return
    for (const fn of [...set]) this.safeCall(fn, msg)
  }

  private safeCall<A extends unknown[]>(fn: (...args: A) => void, ...args: A): void {
    try {
      fn(...args)
    } catch (err) {
      this.emitError(
        new RealtimeError('listener_failed', `a listener threw: ${describe(err)}`, { cause: err }),
      )
    }
  }

  private emitError(err: RealtimeError): void {
    if (this.errorListeners.size === 0) {
      console.error('[payload-realtime-rs/client]', err)
      return
    }
    for (const cb of [...this.errorListeners]) {
      try {
        cb(err)
      } catch (e) {
        console.error('[payload-realtime-rs/client] onError listener threw', e)
      }
    }
  }
}

/** Creates a {@link RealtimeClient}; `S` types the collections (`createClient<Config>(…)`). */
export function createClient<S extends RealtimeSchema = UntypedSchema>(
  options: RealtimeClientOptions,
): RealtimeClient<S> {
  return new RealtimeClient<S>(options)
}

function frameOf(type: string, data: unknown): string {
  return JSON.stringify(data === undefined ? { type } : { type, data })
}

function detach(ws: WebSocketLike): void {
  ws.onopen = ws.onmessage = ws.onclose = null
  // Keep an error handler: `ws` throws on an 'error' event nobody listens to.
  ws.onerror = () => {}
}

function once(fn: () => void): Unsubscribe {
  let done = false
  return () => {
    if (done) return
    done = true
    fn()
  }
}

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now()
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
