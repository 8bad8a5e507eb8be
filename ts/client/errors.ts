/**
 * Error codes raised by the client itself. Server error frames keep the server's code
 * (`forbidden`, `rate_limited`, `handler_failed`, `handler_timeout`, `unknown_type`, …).
 */
export type ClientErrorCode =
  | 'queue_full' // a send/request was made while disconnected and the queue is at `maxQueue`
  | 'closed' // the client is closed or failed; nothing more can be sent
  | 'disconnected' // a request/ping was on the wire when the socket dropped (never re-sent)
  | 'not_open' // ping() while the socket is not open
  | 'timeout' // request/ping got no answer within its timeout
  | 'forbidden' // close 4003 / 1008 / HTTP 403 at upgrade: reconnection stops
  | 'unauthorized' // close 4001 / HTTP 401 and no getToken() to obtain a new token
  | 'token_failed' // getToken() threw or returned nothing usable
  | 'max_retries' // reconnection gave up after `reconnect.maxRetries` attempts
  | 'connection_lost' // socket dropped and `reconnect: false`
  | 'listener_failed' // one of your callbacks threw

export class RealtimeError extends Error {
  override readonly name = 'RealtimeError'
  /** A {@link ClientErrorCode} or the server's error code. */
  readonly code: string
  /** WebSocket close code, when the error comes from a close. */
  declare readonly closeCode?: number
  /** The server frame, when the error comes from an `error` frame. */
  declare readonly frame?: unknown

  constructor(
    code: string,
    message: string,
    extra: { closeCode?: number; frame?: unknown; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause })
    this.code = code
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode
    if (extra.frame !== undefined) this.frame = extra.frame
  }
}
