/** Reconnection policy. Every field is optional in the client's options; these are the defaults. */
export interface BackoffOptions {
  /** Delay before the first retry. */
  initialDelayMs: number
  /** Upper bound of any delay. */
  maxDelayMs: number
  /** Growth per attempt: delay(n) = initialDelayMs * factor^n, capped at maxDelayMs. */
  factor: number
  /** 0..1: the delay is drawn uniformly from [delay * (1 - jitter), delay]. */
  jitter: number
  /** Consecutive failed attempts before giving up (state 'failed'); Infinity = never. */
  maxRetries: number
  /** A connection that stayed open this long resets the attempt counter. */
  resetAfterMs: number
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  factor: 2,
  jitter: 0.5,
  maxRetries: Infinity,
  resetAfterMs: 5_000,
})

/**
 * Delay before retry number `attempt` (0-based). `random` returns [0, 1) and is injectable
 * for tests. The result is always within [0, maxDelayMs] and finite.
 */
export function backoffDelay(
  attempt: number,
  opts: Pick<BackoffOptions, 'initialDelayMs' | 'maxDelayMs' | 'factor' | 'jitter'>,
  random: () => number = Math.random,
): number {
  const max = Math.max(0, opts.maxDelayMs)
  const initial = Math.min(Math.max(0, opts.initialDelayMs), max)
  const factor = Math.max(1, opts.factor)
  // Grow in the log domain so a large attempt number cannot overflow to Infinity/NaN.
  const exp = Math.log(initial) + Math.max(0, attempt) * Math.log(factor)
  const base = initial === 0 ? 0 : exp >= Math.log(max) ? max : Math.exp(exp)
  const jitter = Math.min(1, Math.max(0, opts.jitter))
  return Math.round(base * (1 - jitter * random()))
}
