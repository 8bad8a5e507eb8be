import { RealtimeError } from './errors.js'
import type { WebSocketLike } from './types.js'

/** At most `messages` frames in any `windowMs` (a sliding window). */
export interface RateLimitOptions {
  messages: number
  windowMs: number
}

/** Below the server's default (100 per 1000 ms) with room for timing jitter. */
export const DEFAULT_RATE_LIMIT: Readonly<RateLimitOptions> = Object.freeze({ messages: 80, windowMs: 1000 })

export interface OutFrame {
  frame: string
  /** The app's send/request: counts against maxQueue and survives a reconnect unsent. */
  user: boolean
  /** Called when the frame is written to a socket. */
  onWrite?: () => void
}

/**
 * Every frame the client writes goes through here: written at once while a socket is attached and
 * the rate allows, otherwise held in order. The app's frames wait across reconnects (bounded by
 * maxQueue); protocol frames (joins, pings, auth) belong to one socket and go with it. Pacing keeps
 * a burst (a reconnect re-joining many rooms, a flushed queue) under the server's rate limit, which
 * would otherwise drop frames and then close the socket 4008.
 */
export class Outbox {
  private entries: OutFrame[] = []
  private userCount = 0
  /** Write times within the current window, oldest first. */
  private sentAt: number[] = []
  private ws: WebSocketLike | null = null
  private timer: ReturnType<typeof setTimeout> | null = null

  constructor(
    private readonly maxQueue: number,
    private readonly rate: RateLimitOptions | null,
  ) {}

  /** A socket opened: `first` (re-joins) go out before what waited; the rate window restarts. */
  attach(ws: WebSocketLike, first: OutFrame[]): void {
    this.ws = ws
    this.sentAt = []
    this.entries = [...first, ...this.entries]
    this.drain()
  }

  /** The socket is gone: returns the protocol frames that were still waiting (now dropped). */
  detach(): OutFrame[] {
    this.ws = null
    this.stopTimer()
    const dropped = this.entries.filter((e) => !e.user)
    this.entries = this.entries.filter((e) => e.user)
    return dropped
  }

  /** Empties everything (the client is closing); returns what was waiting. */
  clear(): OutFrame[] {
    this.detach()
    const all = this.entries
    this.entries = []
    this.userCount = 0
    return all
  }

  /**
   * Writes or holds `entry`; returns true when written now. An app frame over the bound throws
   * `queue_full`; a protocol frame without a socket is dropped (returns false).
   */
  push(entry: OutFrame, state: string): boolean {
    if (this.entries.length === 0 && this.writable() && this.budget()) {
      this.write(entry)
      return true
    }
    if (!entry.user) {
      if (!this.ws) return false
    } else if (this.userCount >= this.maxQueue) {
      throw new RealtimeError('queue_full', `send queue is full (${this.maxQueue} frames while ${state})`)
    } else {
      this.userCount++
    }
    this.entries.push(entry)
    if (this.ws) this.drain()
    return false
  }

  /** Takes a waiting entry back (its request timed out); false when it was already written. */
  remove(entry: OutFrame): boolean {
    const i = this.entries.indexOf(entry)
    if (i < 0) return false
    this.entries.splice(i, 1)
    if (entry.user) this.userCount--
    return true
  }

  private writable(): boolean {
    return this.ws !== null && this.ws.readyState === 1
  }

  private budget(): boolean {
    if (!this.rate) return true
    const horizon = Date.now() - this.rate.windowMs
    while (this.sentAt.length && this.sentAt[0] <= horizon) this.sentAt.shift()
    return this.sentAt.length < this.rate.messages
  }

  private write(entry: OutFrame): void {
    this.ws?.send(entry.frame)
    if (this.rate) this.sentAt.push(Date.now())
    entry.onWrite?.()
  }

  private drain(): void {
    this.stopTimer()
    while (this.entries.length && this.writable() && this.budget()) {
      const entry = this.entries.shift()!
      if (entry.user) this.userCount--
      this.write(entry)
    }
    if (this.entries.length && this.writable() && this.rate) {
      const wait = Math.max(1, this.sentAt[0] + this.rate.windowMs - Date.now() + 1)
      this.timer = setTimeout(() => {
        this.timer = null
        this.drain()
      }, wait)
    }
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }
}
