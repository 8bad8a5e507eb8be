/**
 * The app's collection types. Payload's generated `Config` (from `payload-types.ts`) fits as is:
 * `createClient<Config>(…)`, or `RealtimeClient<{ collections: { posts: Post } }>`.
 */
export interface RealtimeSchema {
  collections: object
}

/** Used when no schema is given: any slug, `doc: any`. */
export interface UntypedSchema {
  collections: Record<string, any>
}

export type CollectionSlug<S extends RealtimeSchema> = Extract<keyof S['collections'], string>
export type DocOf<S extends RealtimeSchema, C extends CollectionSlug<S>> = S['collections'][C]
export type DocId = string | number

/** `{type:'update'|'delete', …}` frames the server sends for afterChange / afterDelete. */
export type DocEvent<C extends string = string, D = unknown> =
  | { type: 'update'; operation: 'create' | 'update'; collection: C; id: DocId; doc: D }
  | { type: 'delete'; operation: 'delete'; collection: C; id: DocId; doc: D }

/** Every DocEvent of schema S, discriminated by `collection`. */
export type AnyDocEvent<S extends RealtimeSchema> = {
  [C in CollectionSlug<S>]: DocEvent<C, DocOf<S, C>>
}[CollectionSlug<S>]

/** The user a socket is authenticated as (`id` as in the token's claims). */
export interface SocketUser {
  id: string | number
  collection: string
}
export interface WelcomeFrame {
  type: 'welcome'
  socketId: string
  user: SocketUser | null
}
/** The server's answer to `{"type":"auth"}` (a refused token gets an `error` frame `auth_failed`). */
export interface AuthenticatedFrame {
  type: 'authenticated'
  user: SocketUser
  exp: number
}
export interface RoomAckFrame {
  type: 'joined' | 'left'
  room: string
}
export interface ErrorFrame {
  type: 'error'
  code: string
  message: string
  id?: string
}
export interface PongFrame {
  type: 'pong'
}

/** What `on(type, cb)` hands to `cb` for the protocol's own types; anything else is the app's. */
export interface KnownFrames<S extends RealtimeSchema> {
  welcome: WelcomeFrame
  authenticated: AuthenticatedFrame
  joined: RoomAckFrame
  left: RoomAckFrame
  error: ErrorFrame
  pong: PongFrame
  update: Extract<AnyDocEvent<S>, { type: 'update' }>
  delete: Extract<AnyDocEvent<S>, { type: 'delete' }>
}

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed' | 'failed'

/** The few members of the WHATWG WebSocket the client uses; browsers', Node's and `ws` fit. */
export interface WebSocketLike {
  readonly readyState: number
  binaryType?: string
  send(data: string): void
  close(code?: number, reason?: string): void
  onopen: ((ev: any) => void) | null
  onclose: ((ev: any) => void) | null
  onmessage: ((ev: any) => void) | null
  onerror: ((ev: any) => void) | null
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike

export type Unsubscribe = () => void
