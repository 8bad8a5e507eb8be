// `payloadRealTime(options)`: the options and server-side API of the payload-real-time plugin
// (Socket.IO) on top of uWebSocketPlugin, so its apps switch by changing the import. Its
// clients (socket.io-client, `transports: ['websocket']`) get what they listened to: events
// `realtime:<slug>` with `{operation, collection, data}`, to everyone when the collection has no
// `room`, else to that room (`user:<id>` reaches that user's sockets); `payload.io.to(room).emit`
// and `payload.io.emit` keep working. See docs/migrating/payload-real-time.md.
import type { Config, Payload } from 'payload'
import { getUWebSocketManager } from '../manager.js'
import { qualifyRoom, uWebSocketPlugin } from '../plugin.js'
import type { EventOperation, UWebSocketPluginOptions } from '../types.js'
import { expandUserRoom } from './rooms.js'

/** One collection, as payload-real-time configured it. */
export interface PayloadRealTimeCollection {
  /** Default `['create', 'update']` (payload-real-time never sent deletes). */
  events?: EventOperation[]
  /** Scopes the collection's events to one room (e.g. `user:<id>`); none: everyone gets them. */
  room?: (doc: any, operation: EventOperation, previousDoc?: any) => string | undefined | null
  /** Ours: `'none'` sends events whatever the reader's read access (as payload-real-time did). Default `'read'`. */
  access?: 'read' | 'none'
}

/** payload-real-time's options. */
export interface PayloadRealTimeOptions {
  collections?: Record<string, PayloadRealTimeCollection>
  /** `port` (default 3001) and `cors.origin` (`'*'`: any). */
  serverOptions?: { port?: number; cors?: { origin?: string | string[] } }
  /** Refuse clients without a valid token (in `auth.token`). Default `false`. */
  requireAuth?: boolean
  disabled?: boolean
}

/** What `payload.io` offers: payload-real-time attached its Socket.IO server there. */
export interface PayloadIoShim {
  to(room: string): { emit(event: string, data?: unknown): void }
  emit(event: string, data?: unknown): void
}

/**
 * The payload-real-time plugin's signature. `more` takes any uWebSocketPlugin option on top
 * (e.g. `rooms` to let clients `join` app rooms, which payload-real-time allowed for any name).
 */
export const payloadRealTime =
  (options: PayloadRealTimeOptions = {}, more: UWebSocketPluginOptions = {}) =>
  (config: Config): Config => {
    if (options.disabled) return config
    const everyone = new Set<string>() // collections whose events went to every socket
    const collections: UWebSocketPluginOptions['collections'] = {}
    for (const [slug, c] of Object.entries(options.collections ?? {})) {
      const room = c?.room
      if (!room) everyone.add(slug)
      collections[slug] = {
        events: c?.events ?? ['create', 'update'],
        ...(c?.access ? { access: c.access } : {}),
        ...(room ? { room: (doc, ctx) => room(doc, ctx.operation, ctx.previousDoc) ?? undefined } : {}),
      }
    }
    const origin = options.serverOptions?.cors?.origin
    const plugin = uWebSocketPlugin({
      port: options.serverOptions?.port ?? 3001,
      allowOrigins: origin === undefined || origin === '*' ? undefined : origin,
      requireAuth: options.requireAuth ?? false,
      socketIoEvents: 'payload-real-time',
      collections,
      ...more,
      middleware: [
        // Events of a collection without `room` reached every socket: every socket joins it.
        (socket) => {
          for (const slug of everyone) socket.join(`collection:${slug}`)
        },
        ...(more.middleware ?? []),
      ],
    })
    const out = plugin(config)
    const onInit = out.onInit
    return {
      ...out,
      onInit: async (payload: Payload) => {
        const authSlugs = payload.config.collections.filter((c) => Boolean(c.auth)).map((c) => c.slug)
        ;(payload as Payload & { io?: PayloadIoShim }).io = payloadIo(authSlugs)
        if (onInit) await onInit(payload)
      },
    }
  }

/** `io.to(room).emit(event, data)` → the room's sockets get `event` with `data`. */
function payloadIo(authSlugs: string[]): PayloadIoShim {
  const send = (rooms: string[], event: string, data: unknown) => {
    const manager = getUWebSocketManager()
    for (const room of rooms) manager?.broadcastToRoom(room, data, event)
  }
  return {
    to: (room) => ({
      emit: (event, data) => send(expandUserRoom(room, authSlugs).map(qualifyRoom), event, data),
    }),
    emit: (event, data) => send(['*'], event, data),
  }
}
