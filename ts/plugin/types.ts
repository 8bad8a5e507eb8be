// Public types of the Payload plugin. The manager's own types (UWebSocketManager, SocketHandle,
// UserClaims, ServerOptions, RealtimeEvent, EmitEvent, …) live in manager.ts.
import type { Payload, PayloadRequest } from 'payload'
import type {
  CustomHandler,
  EmitEvent,
  Middleware,
  RealtimeEvent,
  ServerOptions,
  SocketHandle,
  UpgradeRequest,
  UserClaims,
  UWebSocketManager,
} from './manager.js'

/** A write operation that produces a real-time event. */
export type EventOperation = 'create' | 'update' | 'delete'

/** Second argument of a `collections[slug].room` function. */
export interface RoomContext {
  operation: EventOperation
  /** The document before the change (`undefined` on create and delete). */
  previousDoc?: Record<string, unknown>
  /** The Payload user who made the change, if any. */
  user?: PayloadRequest['user'] | null
  req: PayloadRequest
}

/** Per-collection settings. */
export interface CollectionRealtimeOptions {
  /** Which operations emit. Default: all of `['create', 'update', 'delete']`. */
  events?: EventOperation[]
  /**
   * Extra rooms this event also goes to, besides `collection:<slug>` and `doc:<slug>:<id>`.
   * A name without one of the prefixes `room:`, `user:`, `collection:`, `doc:` is taken as a
   * `join-room` name and sent to `room:<name>`; so `'team:7'` reaches clients that sent
   * `{"type":"join-room","room":"team:7"}`, and `'user:users:3'` reaches user 3's sockets.
   * Receives the full hook document (before hidden fields are removed). Default: none.
   */
  room?: (doc: Record<string, unknown>, ctx: RoomContext) => string | string[] | undefined | null
  /**
   * Emit saves of drafts (`_status: 'draft'`) of a collection with `versions.drafts`. Default
   * `false`: unpublished content never reaches subscribers (publishing emits; deleting a draft
   * sends `doc: { id }` only). Skip any single write with `context: { realtime: false }`.
   */
  drafts?: boolean
  /**
   * Who receives this collection's events and may join its rooms. `'read'` (default): what the
   * user could read through Payload's REST API — the collection's `access.read` per recipient
   * (anonymous sockets as `user: null`; a `Where` is checked against the document), field-level
   * `access.read`, and the read access of populated relations; `join-collection`/`join-doc` are
   * refused (`forbidden`) to users who may not read. An `authorize` function for the collection
   * replaces this. `'none'`: everyone in the rooms receives every event (opt-out; hidden and
   * auth fields are still removed).
   */
  access?: 'read' | 'none'
}

/**
 * Decides whether one user may receive one event of a collection. `user` is `null` for an
 * anonymous socket. Throwing counts as `false`.
 */
export type CollectionAuthorizationHandler = (
  user: UserClaims | null,
  event: RealtimeEvent,
  ctx: { payload: Payload },
) => boolean | Promise<boolean>

/** Decides at upgrade whether a client may connect; `false` answers HTTP 403. */
export type VerifyClient = (info: UpgradeRequest) => boolean | Promise<boolean>

/** Which `join-room` names a client may join. Safe default (no policy): every join-room is refused. */
export interface RoomPolicy {
  /** Room-name patterns a client may join; `*` matches any run of characters (`'chat:*'`). */
  patterns?: string[]
  /** Called when no pattern matched (or none given); return `true` to allow. */
  canJoin?: (user: UserClaims | null, room: string) => boolean | Promise<boolean>
}

/** Listener settings and limits of the server that the plugin passes through (documented in `ServerOptions`). */
export type ServerLimits = Pick<
  ServerOptions,
  | 'host'
  | 'path'
  | 'allowOrigins'
  | 'maxConnections'
  | 'maxMessageSize'
  | 'heartbeatMs'
  | 'pongTimeoutMs'
  | 'idleTimeoutMs'
  | 'maxBackpressure'
  | 'maxRoomsPerSocket'
  | 'rateLimit'
  | 'handlerTimeoutMs'
  | 'reusePort'
>

/** Options of `uWebSocketPlugin(options)`. Every option is optional. */
export interface UWebSocketPluginOptions extends ServerLimits {
  /** Turn the plugin on or off. Default `true`. When off, the config is returned unchanged. */
  enabled?: boolean
  /** Alias: `disabled: true` is `enabled: false`. Default `false`. */
  disabled?: boolean
  /**
   * Collections whose create/update/delete are broadcast (all operations). Merged with the keys
   * of `collections`. Default `[]`: with neither option, no collection emits.
   */
  includeCollections?: string[]
  /** Per-collection settings (`events`, `room`, `drafts`); a key here also enables that collection. Default `{}`. */
  collections?: Record<string, CollectionRealtimeOptions>
  /**
   * Per-collection per-user filter, replacing the default read check (`collections[slug].access`)
   * for that collection.
   * Called once per event for each distinct recipient user (`null` = anonymous sockets), in one
   * batched native call. Default `{}`.
   */
  authorize?: Record<string, CollectionAuthorizationHandler>
  /** Refuse upgrades without valid credentials (HTTP 401). Default `false`. */
  requireAuth?: boolean
  /**
   * Start the WebSocket server from Payload's `onInit` on this port (0 = any free port), in
   * serving processes only (never in `next build` or the `payload` CLI). Default: the
   * PAYLOAD_REALTIME_PORT environment variable, else 3002 inside Next.js; elsewhere without
   * either, not started: call `initUWebSocket()` yourself. (Inside Next.js `path` defaults to
   * PAYLOAD_REALTIME_PATH or '/realtime' and `host` to PAYLOAD_REALTIME_HOST or '127.0.0.1',
   * where `withRealtime`'s rewrite points.)
   */
  port?: number
  /**
   * `false`: never start the server from `onInit`, even with a `port` (the environment variable
   * PAYLOAD_REALTIME=off does the same). Default `true`.
   */
  autoStart?: boolean
  /**
   * Run several instances behind Redis or Valkey: events, broadcasts and disconnects reach
   * sockets on every instance (options as in `ServerOptions.redis`). `url` defaults to
   * `process.env.REDIS_URL`, as in the uWebSockets.js plugin. Default: off (one process).
   */
  redis?: Partial<NonNullable<ServerOptions['redis']>>
  /** Policy for `join-room`. Default: refuse every `join-room`. */
  rooms?: RoomPolicy
  /** Extra check at upgrade; `false` answers HTTP 403. Default: none. */
  verifyClient?: VerifyClient
  /** Custom message types and their handlers (`registerCustomHandler`). Default `{}`. */
  handlers?: Record<string, CustomHandler>
  /** Socket middleware, run in order on each new socket before its first message is read; `false` or a throw closes it 4003. Default `[]`. */
  middleware?: Middleware[]
  /**
   * Called for each new socket with the manager and Payload (runs as middleware that never
   * rejects). Default: none.
   */
  onSocketConnection?: (
    socket: SocketHandle,
    manager: UWebSocketManager,
    payload: Payload,
  ) => void | Promise<void>
  /** Drop events for which this returns `false`. Default: emit all. */
  shouldEmit?: (event: EmitEvent) => boolean
  /** Rewrite an event before it is sent (after hidden fields are removed). Default: none. */
  transformEvent?: (event: EmitEvent) => EmitEvent
  /**
   * Refuse sockets whose JWT session was logged out (checks `sid` against the user's sessions
   * in the database once per socket). Default `true`.
   */
  checkSessions?: boolean
  /**
   * Origins (exact, `https://*.example.com` or `/regex/`) whose upgrades may authenticate with
   * Payload's auth cookie, added to Payload's `csrf`, `cors` and `serverURL` origins,
   * `allowOrigins` and the request's own host. A cookie from any other Origin is ignored.
   * Default: none.
   */
  trustedOrigins?: string[]
  /** `/healthz` and `/metrics` (see `ServerOptions.monitoring`). Default: both, public, on the WebSocket port. */
  monitoring?: ServerOptions['monitoring']
  /** Compatibility with the uWebSockets.js plugin: `cors.origin` (string or array) and `path`. */
  uWebSocket?: {
    cors?: { origin?: string | string[] | unknown; credentials?: boolean }
    path?: string
    [key: string]: unknown
  }
  /** Log plugin activity (events, server start, disconnects) through `payload.logger.info`. Default `false`. */
  debug?: boolean
}
