// The JS-facing manager over the native server: socket handles, handler normalization and
// message serialization. Everything socket-related that runs in JS lives here; the Payload
// plugin only calls the manager.
import { isMainThread } from 'node:worker_threads'

import { normalizeServerOptions } from './compat/options.js'
import { holdFanOut } from './fan-out.js'
import { native } from './native.js'
import { processState } from './state.js'

type NativeServer = InstanceType<typeof native.NativeServer>

/** A message: objects are JSON-serialized once; strings go as text frames, bytes as binary. */
export type Message = object | string | Buffer | Uint8Array

/** Claims of an authenticated socket's user (from the verified Payload JWT, or the resolver). */
export interface UserClaims {
  id: string | number
  collection: string
  email?: string
  sid?: string
  exp?: number
  [claim: string]: unknown
}

/** Options of the WebSocket server. Defaults in brackets. */
export interface ServerOptions {
  /** Port to listen on; 0 picks a free one. [3002] */
  port?: number
  /** Address to bind. ['0.0.0.0'] */
  host?: string
  /** WebSocket path, exact or with a trailing `*`; an array serves each. [any path] */
  path?: string | string[]
  /** Allowed Origins: exact, `https://*.example.com`, `/regex/` or a RegExp. [all] */
  allowOrigins?: string | RegExp | (string | RegExp)[]
  /**
   * Origins (same forms) whose upgrades may authenticate with the auth cookie, besides
   * `allowOrigins` and the request's own host; from any other Origin the cookie is ignored
   * (WebSockets have no CORS). Header and query tokens are not affected. The plugin fills it
   * from Payload's `csrf`, `cors` and `serverURL`. [none]
   */
  trustedOrigins?: string[]
  /**
   * `/healthz` and `/metrics`: `false` serves neither; `health`/`metrics: false` drops one;
   * `host`/`port` serve both on that address instead of the WebSocket port (port 0 = any free
   * one, see `monitoringPort`); `token` requires `Authorization: Bearer <token>`.
   * [both served, without a token, on the WebSocket port]
   */
  monitoring?: false | { health?: boolean; metrics?: boolean; host?: string; port?: number; token?: string }
  /** Open sockets at once; more get HTTP 503; `Infinity` = no limit. [100000] */
  maxConnections?: number
  /** Largest message in bytes (all fragments); larger closes 1009. [1048576] */
  maxMessageSize?: number
  /** Server ping interval; 0 = no pings. [30000] */
  heartbeatMs?: number
  /** A peer silent this long after a ping is dropped. [10000] */
  pongTimeoutMs?: number
  /** Close sockets that send no message for this long; 0 = off. [0] */
  idleTimeoutMs?: number
  /**
   * Bytes queued per socket before it is closed 1013; a single message larger than this is
   * refused to the app (`EMSGSIZE`) instead. A client that keeps reading is never closed by a
   * burst below it. [16777216]
   */
  maxBackpressure?: number
  /** A socket with data queued that takes nothing for this long is closed 1013. [10000] */
  slowConsumerMs?: number
  /** Longest a client may take to send its HTTP request headers; then it is dropped. [10000] */
  headerTimeoutMs?: number
  /**
   * Fan-out calls (`emitEvent`, `broadcastToRoom`, `sendToSocket`) waiting at once; past it they
   * throw `EBUSY`. Past half, they return false: `await manager.drained()`. [65536]
   */
  maxPendingCommands?: number
  /** Payload bytes of waiting fan-out calls; past it they throw `EBUSY`. [268435456] */
  maxPendingBytes?: number
  /**
   * Memory budget of all client input held at once (incomplete frames and messages, messages
   * waiting for a handler): a socket growing past it is closed 1013, a message past it is
   * answered `busy`. [1/8 of RAM]
   */
  maxInputBytes?: number
  /** Rooms per socket. [256] */
  maxRoomsPerSocket?: number
  /** Messages per window per socket (then `rate_limited`, then close 4008); false = off. [100 / 1000 ms] */
  rateLimit?: { messages: number; windowMs: number } | false
  /** Refuse upgrades without valid credentials (401). [false] */
  requireAuth?: boolean
  /** HS256 key of Payload JWTs: sha256(secret) hex, first 32 chars (the plugin derives it). [none] */
  jwtKey?: string
  /** Required `authVersion` JWT header. [none] */
  authVersion?: number
  /** Cookie carrying the token. ['payload-token'] */
  authCookie?: string
  /** `join-room` names allowed without asking the room policy (`*` wildcard). [none] */
  roomPatterns?: string[]
  /** Accepted subprotocols (the first offered one is echoed when empty). [any] */
  protocols?: string[]
  /** Longest a JS handler/hook may take before `handler_timeout`. [10000] */
  handlerTimeoutMs?: number
  /** Graceful shutdown deadline. [5000] */
  shutdownTimeoutMs?: number
  /** Tokio worker threads, 1-1024. [available cores] */
  workerThreads?: number
  /** Prefix of socket ids. [random] */
  instanceId?: string
  /** Run several instances behind Redis or Valkey. [none: one process] */
  redis?: {
    /** `redis://host:port`, `rediss://…`, or `redis-cluster://host:port` (sharded pub/sub). */
    url: string
    /** Prefix of channels and keys, so apps can share one Redis. ['prt'] */
    prefix?: string
    /** A dead instance leaves presence within this long. [15000] */
    presenceTtlMs?: number
    /** Messages waiting to be published before they are dropped (counted). [65536] */
    publishQueue?: number
  }
  /** SO_REUSEPORT: several processes on one host serve one port. [false] */
  reusePort?: boolean
  /** Rooms (`*` globs, full names like `room:chat:*`) whose members get `presence` joined/left events. [none] */
  presenceEvents?: string[]
  /** More WebSocket paths besides `path` (exact, or a prefix ending in `*`). [none] */
  extraPaths?: string[]
  /** Socket.IO (v3/v4 clients, WebSocket transport) on this path; false = off. ['/socket.io/'] */
  socketIoPath?: string | false
  /** Socket.IO event names: ours (`update`, `delete`, …) or payload-real-time's `realtime:<slug>`. ['native'] */
  socketIoEvents?: 'native' | 'payload-real-time'
  /** Collection events as ours or as the uWebSockets.js plugin's `payload:event`. ['native'] */
  eventFormat?: 'native' | 'uwebsocket-plugin'
  /** Route `{type, action}` to the handler `type:action` when one is registered (PXL style). [false] */
  actionRouting?: boolean
  /**
   * Presence changes in a room within this long after one was sent are merged into one frame
   * whose `joined`/`left` are arrays (a join and leave of the same socket cancel out). [1000]
   */
  presenceIntervalMs?: number
}

/**
 * Upgrade request as seen by `verifyClient` and middleware. It never carries a token: `url` has
 * no `token` query parameter, `headers.authorization` is `[redacted]` and the auth cookie is
 * removed from `headers.cookie`; `socket.user` says who authenticated.
 */
export interface UpgradeRequest {
  url: string
  origin?: string | null
  headers: Record<string, string>
  remoteAddress: string
}

export type CustomHandler = (socket: SocketHandle, data: any, message: any) => unknown | Promise<unknown>
/** A socket closed: its handle (with `data`), the close code (1006: dropped) and reason. */
export type DisconnectHandler = (socket: SocketHandle, code: number, reason: string) => void
/** A binary message; the return value (awaited) is sent back as the reply. */
export type BinaryHandler = (socket: SocketHandle, data: Buffer) => unknown | Promise<unknown>
export type Middleware = (
  socket: SocketHandle,
  req: UpgradeRequest,
  // biome-ignore lint/suspicious/noConfusingVoidType: a middleware may return nothing, sync or async
) => void | boolean | Promise<void | boolean>
/**
 * One call per event with the distinct users among its recipients; one verdict per user. The
 * array and the claims are frozen and shared by successive events while the recipients stay
 * the same: derive and cache per user, do not mutate.
 */
export type BatchAuthorize = (
  users: readonly (UserClaims | null)[],
  event: RealtimeEvent,
) => boolean[] | AuthorizeViews | Promise<boolean[] | AuthorizeViews>

/**
 * An authorize answer with views of the document: `verdicts[i]` is 0 (user i does not get the
 * event), 1 (gets it as emitted) or k ≥ 2 (gets it with `docs[k - 2]` as its `doc`). Each
 * view is serialized and encoded once, whatever the number of its recipients.
 */
export interface AuthorizeViews {
  verdicts: number[]
  docs: unknown[]
}

/** The event every subscriber receives. */
export interface RealtimeEvent {
  type: 'update' | 'delete'
  operation: 'create' | 'update' | 'delete'
  collection: string
  id: string | number
  doc: any
}

/** A member of a room, on this or another instance. */
export interface RoomMember {
  socketId: string
  userId: string | null
  collection: string | null
  instance: string
}

/** Arguments of `emitEvent`. */
export interface EmitEvent {
  operation: 'create' | 'update' | 'delete'
  collection: string
  id: string | number
  doc: unknown
  /** Rooms to deliver to besides `collection:<slug>` and `doc:<slug>:<id>` (full names). */
  rooms?: string[]
}

/** A TypeError naming the bad argument or option (`code: 'ERR_INVALID_ARG_TYPE'`). */
function invalid(name: string, expected: string, value: unknown): TypeError {
  let shown: string
  try {
    shown = typeof value === 'string' ? JSON.stringify(value) : String(value)
  } catch {
    shown = typeof value
  }
  return Object.assign(new TypeError(`${name} must be ${expected} (got ${shown.slice(0, 60)})`), {
    code: 'ERR_INVALID_ARG_TYPE',
  })
}

function checkString(name: string, v: unknown, { empty = false } = {}): string {
  if (typeof v !== 'string' || (!empty && v === '')) throw invalid(name, 'a non-empty string', v)
  return v
}

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw invalid(name, `an integer from ${min} to ${max}`, v)
  return v
}

function checkFunction(name: string, v: unknown): void {
  if (typeof v !== 'function') throw invalid(name, 'a function', v)
}

function checkStrings(name: string, v: unknown): void {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw invalid(name, 'an array of strings', v)
}

/** Close codes an app may send: 1000, 1008 (policy: final for the client SDK), or 3000-4999. */
function checkCloseCode(name: string, code: unknown): number {
  if (
    typeof code !== 'number' ||
    !Number.isInteger(code) ||
    (code !== 1000 && code !== 1008 && (code < 3000 || code > 4999))
  )
    throw invalid(name, '1000, 1008 or an integer from 3000 to 4999', code)
  return code
}

function checkMessage(name: string, msg: unknown): void {
  if (msg === null || msg === undefined || (typeof msg !== 'string' && typeof msg !== 'object'))
    throw invalid(name, 'an object, a string, a Buffer or a Uint8Array', msg)
}

const U32 = 0xffff_ffff
/** Integer options: [min, max]. */
const INT_OPTIONS: Record<string, [number, number]> = {
  port: [0, 65535],
  maxConnections: [1, U32],
  maxMessageSize: [1, U32],
  heartbeatMs: [1, U32],
  pongTimeoutMs: [1, U32],
  idleTimeoutMs: [0, U32],
  maxBackpressure: [1, U32],
  slowConsumerMs: [1, U32],
  headerTimeoutMs: [1, U32],
  maxPendingCommands: [1, U32],
  maxPendingBytes: [1, U32],
  maxInputBytes: [1, Number.MAX_SAFE_INTEGER],
  maxRoomsPerSocket: [1, U32],
  authVersion: [0, U32],
  handlerTimeoutMs: [1, U32],
  shutdownTimeoutMs: [0, U32],
  workerThreads: [1, 1024],
  presenceIntervalMs: [1, U32],
}
const STRING_OPTIONS = ['host', 'path', 'jwtKey', 'authCookie', 'instanceId']
const STRING_LIST_OPTIONS = ['allowOrigins', 'roomPatterns', 'protocols', 'presenceEvents']
const BOOLEAN_OPTIONS = ['requireAuth', 'reusePort', 'echo']

/** Checks every option before anything starts; throws a TypeError naming the first bad one. */
function checkOptions(o: ServerOptions): void {
  if (o === null || typeof o !== 'object') throw invalid('options', 'an object or a port number', o)
  const rec = o as Record<string, unknown>
  for (const [key, [min, max]] of Object.entries(INT_OPTIONS))
    if (rec[key] !== undefined) checkInt(`options.${key}`, rec[key], min, max)
  for (const key of STRING_OPTIONS) if (rec[key] !== undefined) checkString(`options.${key}`, rec[key])
  for (const key of STRING_LIST_OPTIONS) if (rec[key] !== undefined) checkStrings(`options.${key}`, rec[key])
  for (const key of BOOLEAN_OPTIONS)
    if (rec[key] !== undefined && typeof rec[key] !== 'boolean')
      throw invalid(`options.${key}`, 'a boolean', rec[key])
  if (o.rateLimit !== undefined && o.rateLimit !== false) {
    if (o.rateLimit === null || typeof o.rateLimit !== 'object')
      throw invalid('options.rateLimit', 'false or { messages, windowMs }', o.rateLimit)
    checkInt('options.rateLimit.messages', o.rateLimit.messages, 1, U32)
    checkInt('options.rateLimit.windowMs', o.rateLimit.windowMs, 1, U32)
  }
  if (o.redis !== undefined) {
    if (o.redis === null || typeof o.redis !== 'object') throw invalid('options.redis', 'an object', o.redis)
    checkString('options.redis.url', o.redis.url)
    if (o.redis.prefix !== undefined) checkString('options.redis.prefix', o.redis.prefix)
    if (o.redis.presenceTtlMs !== undefined)
      checkInt('options.redis.presenceTtlMs', o.redis.presenceTtlMs, 1000, U32)
    if (o.redis.publishQueue !== undefined)
      checkInt('options.redis.publishQueue', o.redis.publishQueue, 1, U32)
  }
}

function payload(msg: Message): string | Buffer {
  if (typeof msg === 'string') return msg
  if (Buffer.isBuffer(msg)) return msg
  if (msg instanceof Uint8Array) return Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength)
  return JSON.stringify(msg)
}

/** Claims as the core took them: a token with only `sub` is user `sub` of `users`. */
function userClaims(raw: Record<string, unknown>): UserClaims {
  if (raw.id !== undefined || raw.sub === undefined) return raw as UserClaims
  return { ...raw, id: raw.sub as string | number, collection: (raw.collection as string) ?? 'users' }
}

/** A thrown value's message; never throws itself, whatever was thrown (a hostile object). */
function errorMessage(e: unknown): string {
  try {
    const m = e instanceof Error ? e.message : String(e)
    return typeof m === 'string' ? m : 'handler failed'
  } catch {
    return 'handler failed (the thrown value could not be read)'
  }
}

/** A JS predicate over a JSON argument, for the native side: a throw counts as false. */
function jsonPredicate<T>(fn: (value: T) => boolean | Promise<boolean>): (json: string) => Promise<boolean> {
  return async (json: string) => {
    try {
      return (await fn(JSON.parse(json) as T)) === true
    } catch {
      return false
    }
  }
}

function roomMember(m: {
  socketId: string
  userId?: string | null
  userCollection?: string | null
  instance: string
}): RoomMember {
  return {
    socketId: m.socketId,
    userId: m.userId ?? null,
    collection: m.userCollection ?? null,
    instance: m.instance,
  }
}

/** A handler's answer for the native side: `R` + reply JSON (none = null). */
function encodeReply(result: unknown): string {
  try {
    const json = result === undefined ? undefined : JSON.stringify(result)
    return json === undefined ? 'R' : `R${json}`
  } catch (e) {
    return failure(e)
  }
}

/** A handler's failure for the native side: `E` + code + newline + message. */
function failure(e: unknown): string {
  return `Ehandler_failed\n${errorMessage(e)}`
}

function globMatch(pattern: string, text: string): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .split('*')
        .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*') +
      '$',
  )
  return re.test(text)
}

/** A socket, as handlers and middleware see it. */
export class SocketHandle {
  /** App-owned state, kept for the socket's life. */
  data: Record<string, unknown> = {}
  readonly url: string
  readonly remoteAddress: string

  constructor(
    private readonly server: NativeServer,
    readonly id: string,
  ) {
    const info = server.socketInfo(id)
    this.url = info?.url ?? ''
    this.remoteAddress = info?.remoteAddress ?? ''
  }

  /** The user now (a `{"type":"auth"}` refresh may have renewed the claims); null if anonymous. */
  get user(): UserClaims | null {
    const json = this.server.socketInfo(this.id)?.user
    return json ? userClaims(JSON.parse(json)) : null
  }

  /** Rooms the socket is in now. */
  get rooms(): string[] {
    return this.server.socketInfo(this.id)?.rooms ?? []
  }

  send(msg: Message): boolean {
    checkMessage('msg', msg)
    return this.server.send(this.id, payload(msg))
  }

  /** Joins a room by full name (`room:chat:1`, `collection:posts`). */
  join(room: string): boolean {
    return this.server.join(this.id, checkString('room', room))
  }

  leave(room: string): boolean {
    return this.server.leave(this.id, checkString('room', room))
  }

  /** Sends to everyone in `room` but this socket. */
  broadcast(room: string, msg: Message): void {
    checkMessage('msg', msg)
    this.server.socketBroadcast(this.id, checkString('room', room), payload(msg))
  }

  /** Closes with `code` (1000, 1008 or 3000-4999) after what is queued; `reason` at most 123 bytes. */
  close(code = 1000, reason = ''): void {
    checkCloseCode('code', code)
    if (typeof reason !== 'string' || Buffer.byteLength(reason) > 123)
      throw invalid('reason', 'a string of at most 123 bytes', reason)
    this.server.closeSocket(this.id, code, reason)
  }
}

/** The running server. One per process; get it with `initUWebSocket` or `getUWebSocketManager`. */
export class UWebSocketManager {
  private readonly handlers = new Map<string, CustomHandler>()
  private readonly middleware: Middleware[] = []
  private readonly authorizers = new Map<string, BatchAuthorize>()
  /** The last user list the core sent to authorize, kept across setAuthorize calls. */
  private authorizeUsers: { id: number; users: readonly (UserClaims | null)[] } | null = null
  private readonly sockets = new Map<string, SocketHandle>()
  private readonly disconnectHandlers: DisconnectHandler[] = []
  private closeHandlerSet = false
  private keepAlive: NodeJS.Timeout | null = setInterval(() => {}, 1 << 30)
  private closing: Promise<void> | null = null
  private saturated = false

  constructor(
    private readonly server: NativeServer,
    /** The port asked for (0 = any). */
    readonly requestedPort: number,
  ) {}

  /** The bound port. */
  get port(): number {
    return this.server.port
  }

  /** The port of `/healthz` and `/metrics` when `monitoring` gave them their own address, else null. */
  get monitoringPort(): number | null {
    return this.server.monitoringPort ?? null
  }

  /** This instance's id (prefix of its socket ids). */
  get instanceId(): string {
    return this.server.instanceId
  }

  get closed(): boolean {
    return this.closing !== null
  }

  /** A socket handle, the same object for the socket's whole life. */
  socket(id: string): SocketHandle {
    let s = this.sockets.get(id)
    if (!s) {
      this.watchCloses()
      s = new SocketHandle(this.server, id)
      this.sockets.set(id, s)
    }
    return s
  }

  /** Installed once, when handles or disconnect handlers first exist (no JS per close before). */
  private watchCloses(): void {
    if (this.closeHandlerSet) return
    this.closeHandlerSet = true
    this.server.setCloseHandler((closed: string, code: number, reason: string) => {
      const handle = this.sockets.get(closed)
      this.sockets.delete(closed)
      if (this.disconnectHandlers.length === 0) return
      const socket = handle ?? new SocketHandle(this.server, closed)
      for (const h of this.disconnectHandlers) {
        try {
          h(socket, code, reason)
        } catch (e) {
          console.error('[realtime] disconnect handler threw', e)
        }
      }
    })
  }

  /** Called after each socket closes with its handle, close code (1006: dropped) and reason. */
  onDisconnect(handler: DisconnectHandler): void {
    this.disconnectHandlers.push(handler)
    this.watchCloses()
  }

  /** Sends to every socket on every instance (but `except`); the return value is `emitEvent`'s. */
  broadcast(msg: Message, opts?: { except?: string | SocketHandle }): boolean {
    return this.broadcastToRoom('*', msg, opts)
  }

  /**
   * Handles binary messages: the return value (awaited) is sent to the socket as a message (an
   * object as JSON, a string as text, a Buffer as bytes; undefined: nothing); a throw answers
   * an `error` frame `handler_failed`. Null removes it (then binary messages answer
   * `binary_unsupported`).
   */
  onBinary(handler: BinaryHandler | null): void {
    if (!handler) {
      this.server.setBinaryHandler(null)
      return
    }
    this.server.setBinaryHandler(async (socketId: string, data: Buffer) => {
      try {
        // Binary messages carry no request id: what the handler returns is sent as a message.
        const result = await handler(this.socket(socketId), data)
        if (result !== undefined && result !== null) this.sendToSocket(socketId, result as Message)
        return 'R'
      } catch (e) {
        return failure(e)
      }
    })
  }

  /** Ids of every socket open on this instance. */
  socketIds(): string[] {
    return this.server.socketIds()
  }

  /** @internal The native server, for the compatibility layer (ts/plugin/compat). */
  get native(): NativeServer {
    return this.server
  }

  /**
   * Sends a collection event to `collection:<slug>`, `doc:<slug>:<id>` and `rooms`. Returns
   * false when the server's fan-out queue is over half full (`await drained()` before sending
   * more) and after `close()` (the event is dropped: there are no sockets left). Throws `EBUSY`
   * when the queue is full (nothing sent) and `EMSGSIZE` for an event larger than
   * `maxBackpressure`. Fan-out calls made in one JS task leave together, in order, when the
   * task ends (see fan-out.ts).
   */
  emitEvent(event: EmitEvent): boolean {
    if (event === null || typeof event !== 'object') throw invalid('event', 'an object', event)
    if (!['create', 'update', 'delete'].includes(event.operation))
      throw invalid('event.operation', "'create', 'update' or 'delete'", event.operation)
    checkString('event.collection', event.collection)
    if (typeof event.id !== 'string' && !(typeof event.id === 'number' && Number.isFinite(event.id)))
      throw invalid('event.id', 'a string or a finite number', event.id)
    if (event.rooms !== undefined) checkStrings('event.rooms', event.rooms)
    if (this.closed) return false
    return this.accepted(
      this.server.emitEvent(
        event.collection,
        JSON.stringify(event.id),
        event.operation,
        JSON.stringify(event.doc ?? null),
        event.rooms,
      ),
    )
  }

  /**
   * Sends to every socket in `room` (full name; `'*'`: every socket on every instance), but
   * `except`; the return value is `emitEvent`'s. The uWebSockets.js plugin's form
   * `broadcastToRoom(room, data, event, exceptId?)` sends `{type: event, data}`.
   */
  broadcastToRoom(room: string, msg: Message, opts?: { except?: string | SocketHandle }): boolean
  broadcastToRoom(room: string, data: unknown, event: string, except?: string | SocketHandle): boolean
  broadcastToRoom(
    room: string,
    msg: unknown,
    optsOrEvent?: { except?: string | SocketHandle } | string,
    exceptArg?: string | SocketHandle,
  ): boolean {
    checkString('room', room)
    const wrapped = typeof optsOrEvent === 'string'
    const ex = wrapped ? exceptArg : optsOrEvent?.except
    const except = typeof ex === 'string' ? ex : ex?.id
    const body = wrapped ? { type: optsOrEvent, data: msg } : (msg as Message)
    checkMessage('msg', body)
    if (this.closed) return false
    return this.accepted(this.server.broadcast(room, payload(body), except))
  }

  /**
   * Sends to one socket; false if it is not open on this instance (or after `close()`). The
   * uWebSockets.js plugin's form `sendToSocket(socket, event, data)` sends `{type: event, data}`.
   */
  sendToSocket(socketOrId: string | SocketHandle, msg: Message): boolean
  sendToSocket(socketOrId: string | SocketHandle, event: string, data: unknown): boolean
  sendToSocket(socketOrId: string | SocketHandle, msg: Message, ...rest: unknown[]): boolean {
    const id = typeof socketOrId === 'string' ? socketOrId : socketOrId?.id
    checkString('socket', id)
    const body = rest.length > 0 && typeof msg === 'string' ? { type: msg, data: rest[0] } : msg
    checkMessage('msg', body)
    if (this.closed) return false
    return this.server.send(id, payload(body))
  }

  private accepted(relaxed: boolean): boolean {
    if (!relaxed) this.saturated = true
    return relaxed
  }

  /** Whether the last fan-out call found the queue over half full (and it has not drained since). */
  get isSaturated(): boolean {
    return this.saturated
  }

  /** Resolves once the fan-out queue is back under a quarter of its bounds (at once if it is). */
  async drained(): Promise<void> {
    if (this.closed) return
    await this.server.drained()
    this.saturated = false
  }

  /**
   * Handles messages `{type, id?, data?}` of `type`. The return value (awaited) is the reply
   * `{type:'reply', id, data}` when the message had an `id`; a throw answers `handler_failed`.
   */
  registerCustomHandler(type: string, handler: CustomHandler): void {
    checkString('type', type)
    checkFunction('handler', handler)
    this.handlers.set(type, handler)
    // One call per batch of messages (those that arrived while JS was busy), as one JSON text
    // `[socketId, type, message, …]` parsed once; one answer each, a string at once for
    // synchronous handlers, a promise for asynchronous ones.
    this.server.setMessageHandler([...this.handlers.keys()], (batch: string) => {
      const a = JSON.parse(batch) as unknown[]
      const answers: (string | Promise<string>)[] = new Array(a.length / 3)
      for (let i = 0, j = 0; i < a.length; i += 3, j++) {
        answers[j] = this.dispatch(a[i] as string, a[i + 1] as string, a[i + 2] as Record<string, unknown>)
      }
      return answers
    })
  }

  private dispatch(
    socketId: string,
    kind: string,
    message: Record<string, unknown>,
  ): string | Promise<string> {
    try {
      const handler = this.handlers.get(kind)
      if (!handler) return `Eunknown_type\nno handler for ${kind}`
      const result = handler(this.socket(socketId), message.data, message)
      if (
        result !== null &&
        typeof result === 'object' &&
        typeof (result as PromiseLike<unknown>).then === 'function'
      ) {
        return Promise.resolve(result).then(encodeReply, failure)
      }
      return encodeReply(result)
    } catch (e) {
      return failure(e)
    }
  }

  /** Runs on every new socket before its first message; throw or return false to close it 4003. */
  use(mw: Middleware): void {
    checkFunction('middleware', mw)
    this.middleware.push(mw)
    this.server.setOpenHandler(async (socketId: string, infoJson: string) => {
      try {
        const info = JSON.parse(infoJson) as UpgradeRequest
        const socket = this.socket(socketId)
        for (const m of this.middleware) {
          if ((await m(socket, info)) === false) return false
        }
        return true
      } catch {
        return false
      }
    })
  }

  /** Decides per event which users may receive it; called once per event with the distinct users. */
  setAuthorize(collection: string, fn: BatchAuthorize | null): void {
    checkString('collection', collection)
    if (fn !== null) checkFunction('authorize', fn)
    if (fn) this.authorizers.set(collection, fn)
    else this.authorizers.delete(collection)
    this.server.setAuthorize(
      [...this.authorizers.keys()],
      async (slug: string, usersJson: string, eventJson: string, usersId: number) => {
        // The core sends a list once and then only its id while the recipients stay the same.
        let users: readonly (UserClaims | null)[]
        if (usersJson !== '') {
          users = Object.freeze(
            (JSON.parse(usersJson) as (Record<string, unknown> | null)[]).map((u) =>
              u ? Object.freeze(userClaims(u)) : u,
            ),
          )
          this.authorizeUsers = { id: usersId, users }
        } else if (this.authorizeUsers?.id === usersId) {
          users = this.authorizeUsers.users
        } else {
          // Rejecting makes the core deny this event and send the full list next time.
          throw new Error(`authorize: user list ${usersId} is not held here`)
        }
        try {
          const fn = this.authorizers.get(slug)
          const answer = fn ? await fn(users, nativeEvent(JSON.parse(eventJson))) : []
          if (Array.isArray(answer)) return { verdicts: users.map((_, i) => (answer[i] === true ? 1 : 0)) }
          const docs = answer.docs.map((d) => JSON.stringify(d ?? null))
          const verdicts = users.map((_, i) => {
            const k = answer.verdicts[i]
            return Number.isInteger(k) && k >= 0 && k < docs.length + 2 ? k : 0
          })
          return { verdicts, docs }
        } catch {
          return { verdicts: users.map(() => 0) }
        }
      },
    )
  }

  /** Policy for `join-room`: names matching `patterns`, or those `canJoin` allows. Default: refuse. */
  setRoomPolicy(policy: {
    patterns?: string[]
    canJoin?: (user: UserClaims | null, room: string) => boolean | Promise<boolean>
  }): void {
    if (policy === null || typeof policy !== 'object') throw invalid('policy', 'an object', policy)
    if (policy.patterns !== undefined) checkStrings('policy.patterns', policy.patterns)
    if (policy.canJoin !== undefined) checkFunction('policy.canJoin', policy.canJoin)
    const patterns = policy.patterns ?? []
    this.server.setRoomPolicy(async (userJson: string, room: string) => {
      if (patterns.some((p) => globMatch(p, room))) return true
      try {
        return policy.canJoin
          ? (await policy.canJoin(userJson === 'null' ? null : userClaims(JSON.parse(userJson)), room)) ===
              true
          : false
      } catch {
        return false
      }
    })
  }

  /**
   * Decides `join-collection` (room `collection:<slug>`) and `join-doc` (room
   * `doc:<slug>:<id>`); `false` or a throw answers `{"type":"error","code":"forbidden"}` and
   * no `joined`; null removes the check (every such join allowed). The plugin installs one that
   * follows the collections' read access.
   */
  setSubscribePolicy(
    fn: ((user: UserClaims | null, room: string) => boolean | Promise<boolean>) | null,
  ): void {
    this.server.setSubscribePolicy(
      fn &&
        (async (userJson: string, room: string) => {
          try {
            return (await fn(JSON.parse(userJson), room)) === true
          } catch {
            return false
          }
        }),
    )
  }

  /** May refuse an upgrade (HTTP 403). */
  setVerifyClient(fn: (info: UpgradeRequest) => boolean | Promise<boolean>): void {
    checkFunction('verifyClient', fn)
    this.server.setVerifyClient(jsonPredicate(fn))
  }

  /**
   * Checks that a verified JWT's session is still live (Payload's logout removes the `sid` while
   * the signature stays valid): asked at upgrade (false → 401) and when a socket refreshes its
   * token with `{"type":"auth"}` (false → close 4001). A throw counts as false.
   */
  setSessionValidator(fn: (claims: UserClaims) => boolean | Promise<boolean>): void {
    checkFunction('sessionValidator', fn)
    this.server.setSessionValidator(jsonPredicate(fn))
  }

  /** Resolves credentials that are not JWTs (API keys) to a user, or null to refuse (401). */
  setCredentialResolver(
    fn: (req: {
      headers: Record<string, string>
      token?: string
    }) => UserClaims | null | Promise<UserClaims | null>,
  ): void {
    checkFunction('credentialResolver', fn)
    this.server.setCredentialResolver(async (infoJson: string) => {
      try {
        const info = JSON.parse(infoJson)
        const user = await fn({ headers: info.headers, token: info.credential ?? undefined })
        return user ? JSON.stringify(user) : ''
      } catch {
        return ''
      }
    })
  }

  /**
   * Every counter of the server, plus the plugin's: `pendingAfterCommit` (events waiting for
   * their transaction to commit; 0 when idle), `droppedAfterCommit` (dropped because too many
   * transactions never ended) and `droppedNoServer` (emitted while no server ran).
   */
  getStats(): Record<string, any> {
    const state = processState()
    return {
      ...this.server.stats(),
      pendingAfterCommit: state.afterCommit.pending,
      droppedAfterCommit: state.afterCommit.dropped,
      droppedNoServer: state.droppedNoServer,
    }
  }

  /** Members of a room on this instance (synchronous). */
  getLocalRoomMembers(room: string): RoomMember[] {
    checkString('room', room)
    return this.server.roomMembers(room).map(roomMember)
  }

  /**
   * Members of a room on every instance (through Redis when configured). During a Redis outage
   * the list holds this instance's members and its (non-enumerable) `partial` is true.
   */
  async getRoomMembers(room: string): Promise<RoomMember[] & { partial: boolean }> {
    checkString('room', room)
    const { members, partial } = await this.server.roomMembersEverywhere(room)
    const list = members.map(roomMember)
    return Object.defineProperty(list, 'partial', { value: partial, enumerable: false }) as RoomMember[] & {
      partial: boolean
    }
  }

  /** Closes every socket of a user (code 4001 by default); returns how many. */
  disconnectUser(userId: string | number, code?: number, collection?: string): number {
    if (typeof userId !== 'string' && typeof userId !== 'number')
      throw invalid('userId', 'a string or a number', userId)
    if (code !== undefined) checkCloseCode('code', code)
    if (collection !== undefined) checkString('collection', collection)
    return this.server.disconnectUser(String(userId), collection, code)
  }

  /** Closes every socket of one login session (`sid` claim); returns how many. */
  disconnectSession(sid: string, code?: number): number {
    checkString('sid', sid)
    if (code !== undefined) checkCloseCode('code', code)
    return this.server.disconnectSession(sid, code)
  }

  /**
   * Forgets every JS hook (handlers, middleware, authorize, room policy, verifyClient, session
   * validator, credential resolver); open sockets stay. The plugin calls it before registering
   * the hooks of a hot-reloaded config, so old closures neither linger nor run twice.
   */
  resetHooks(): void {
    this.handlers.clear()
    this.middleware.length = 0
    this.authorizers.clear()
    this.authorizeUsers = null
    this.server.setMessageHandler([], null)
    this.server.setOpenHandler(null)
    this.server.setAuthorize([], null)
    this.server.setRoomPolicy(null)
    this.server.setVerifyClient(null)
    this.server.setSessionValidator(null)
    this.server.setCredentialResolver(null)
  }

  /** Graceful shutdown: every socket gets 1001 after its queue flushes. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = this.server.close().finally(() => {
        if (this.keepAlive) clearInterval(this.keepAlive)
        this.keepAlive = null
        if (state.manager === this) state.manager = null
      })
    }
    return this.closing
  }
}

// The running manager lives on globalThis (state.ts), so hot reloads find it.
const state = processState() as { manager: UWebSocketManager | null }

function nativeOptions(o: ServerOptions, port: number) {
  return { ...normalizeServerOptions(o), port } as NonNullable<
    Parameters<typeof native.NativeServer.start>[0]
  >
}

/** An event as `authorize` sees it, whatever `eventFormat` the sockets get. */
function nativeEvent(e: any): RealtimeEvent {
  if (e?.type !== 'payload:event') return e
  const d = e.data ?? {}
  return { type: d.operation === 'delete' ? 'delete' : 'update', ...d }
}

/**
 * Starts the WebSocket server (once per process). Calling it again with the same port returns
 * the running manager; another port is an error (code `EALREADY`).
 */
export async function initUWebSocket(portOrOptions: number | ServerOptions = {}): Promise<UWebSocketManager> {
  if (!isMainThread) {
    throw Object.assign(
      new Error('payload-realtime-rs runs on the main thread only, not in worker_threads'),
      { code: 'EWORKER' },
    )
  }
  if (typeof portOrOptions === 'number') checkInt('port', portOrOptions, 0, 65535)
  else if (portOrOptions === null || typeof portOrOptions !== 'object') checkOptions(portOrOptions)
  // Checked in the native forms, after other servers' forms (Infinity, 0 = off, path arrays,
  // RegExp origins; compat/options.ts) are translated, so those stay accepted.
  else checkOptions(normalizeServerOptions(portOrOptions) as ServerOptions)
  const options: ServerOptions =
    typeof portOrOptions === 'number' ? { port: portOrOptions } : { ...portOrOptions }
  const port = options.port ?? 3002
  const current = getUWebSocketManager()
  if (current) {
    if (port === current.requestedPort || port === current.port) return current
    throw Object.assign(new Error(`the realtime server already runs on port ${current.port}`), {
      code: 'EALREADY',
    })
  }
  const server = holdFanOut(native.NativeServer.start(nativeOptions(options, port)))
  const manager = new UWebSocketManager(server, port)
  state.manager = manager
  return manager
}

/** The running manager, or null. */
export function getUWebSocketManager(): UWebSocketManager | null {
  const m = state.manager
  return m && !m.closed ? m : null
}
