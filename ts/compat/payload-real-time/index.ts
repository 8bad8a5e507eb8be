// payload-real-time's client API (`PayloadRealtimeClient`: identify, join, leave, onCollection,
// on, emit, disconnect) on our client and protocol, so its apps switch by changing the import.
// No socket.io-client needed. docs/migrating/payload-real-time.md.
import { createClient, type RealtimeClient, type RealtimeClientOptions } from '../../client/index.js'

/** payload-real-time's constructor options, plus any of ours (`WebSocket`, `getToken`, …). */
export type PayloadRealtimeClientOptions = Partial<RealtimeClientOptions> & {
  /** Server URL. Default `ws://localhost:3001` (payload-real-time's). */
  url?: string
  /** A Payload JWT. */
  token?: string
}

/** What `onCollection` callbacks get: payload-real-time's `{operation, collection, data}` (+ `id`, `doc`). */
export interface CollectionEventData {
  operation: 'create' | 'update' | 'delete'
  collection: string
  id: string | number
  data: any
  doc: any
}

type Off = () => void

/** payload-real-time's client, over payload-realtime-rs's WebSocket protocol. */
export class PayloadRealtimeClient {
  /** The underlying client (`payload-realtime-rs/client`), for everything else it offers. */
  readonly client: RealtimeClient
  private readonly held = new Map<string, Off>()

  constructor({ url = 'ws://localhost:3001', ...options }: PayloadRealtimeClientOptions = {}) {
    this.client = createClient({ ...options, url })
  }

  /** Accepted for compatibility; the server knows the user from the token. */
  identify(_userId: string | number): void {}

  /**
   * Joins a room: `user:<id>` is the socket's own room already (nothing to do),
   * `collection:<slug>` / `doc:<slug>:<id>` those rooms, any other name a `join-room` (subject to
   * the server's room policy).
   */
  join(roomId: string): void {
    if (roomId.startsWith('user:') || this.held.has(roomId)) return
    const doc = /^doc:([^:]+):(.+)$/.exec(roomId)
    const off = roomId.startsWith('collection:')
      ? this.client.onCollection(roomId.slice('collection:'.length) as never, () => {})
      : doc
        ? this.client.onDoc(doc[1] as never, doc[2], () => {})
        : this.client.join(roomId)
    this.held.set(roomId, off)
  }

  /** Leaves a room joined with `join`. */
  leave(roomId: string): void {
    this.held.get(roomId)?.()
    this.held.delete(roomId)
  }

  /**
   * Events of a collection that reach this socket (its rooms; with `payloadRealTime` on the
   * server, every socket for collections without `room`). Joins nothing, as before.
   */
  onCollection(slug: string, callback: (event: CollectionEventData) => void): Off {
    const on = (m: any) => {
      if (m?.collection === slug) callback({ ...m, data: m.doc })
    }
    const offs = [this.client.on('update', on), this.client.on('delete', on)]
    return () => {
      for (const off of offs) off()
    }
  }

  /** A custom event: messages `{type: event, data}` call back with `data`, others with the message. */
  on(event: string, callback: (data: any) => void): Off {
    return this.client.on(event, (m: any) => {
      const wrapped = m && typeof m === 'object' && 'data' in m && Object.keys(m).length === 2
      callback(wrapped ? m.data : m)
    })
  }

  /** Sends a custom event (to the server's handler of that type). */
  emit(event: string, data?: unknown): void {
    this.client.send(event, data)
  }

  disconnect(): void {
    this.client.close()
  }
}
