/**
 * Reads the `exp` claim (seconds since the epoch) of a JWT without verifying it: the client only
 * needs to know when to refresh; the server verifies. Returns null for anything that is not a
 * JWT with a finite numeric `exp` (opaque tokens, API keys, malformed input).
 */
export function jwtExpiry(token: string | null | undefined): number | null {
  if (typeof token !== 'string') return null
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1] === '') return null
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0))
    const payload: unknown = JSON.parse(new TextDecoder().decode(bytes))
    if (payload === null || typeof payload !== 'object') return null
    const exp = (payload as { exp?: unknown }).exp
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : null
  } catch {
    return null
  }
}

/** Largest delay setTimeout honours; longer ones fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * When to refresh a token expiring at `expSec`: `leadMs` before expiry, but never later than half
 * way through what is left (so a short-lived token is refreshed in time too). Capped at
 * {@link MAX_TIMER_MS}; 0 when already expired.
 */
export function refreshDelay(expSec: number, nowMs: number, leadMs: number): number {
  const remaining = expSec * 1000 - nowMs
  if (!(remaining > 0)) return 0
  return Math.min(MAX_TIMER_MS, Math.floor(Math.max(remaining - leadMs, remaining / 2)))
}
