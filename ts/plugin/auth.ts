// Payload authentication facts the native server needs: the JWT key, the cookie name, a resolver
// for credentials that are not JWTs (API keys), and a session-liveness check for JWTs.
import { createHash } from 'node:crypto'
import type { Payload } from 'payload'
import type { UserClaims } from './manager.js'

/** Payload signs its JWTs (HS256) with the UTF-8 of the first 32 hex chars of sha256(secret). */
export function payloadJwtKey(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 32)
}

/** Name of Payload's auth cookie: `<cookiePrefix>-token`. */
export function payloadAuthCookie(cookiePrefix: string | undefined): string {
  return `${cookiePrefix || 'payload'}-token`
}

/** Claims the native server attaches to a socket, from a Payload user document. */
export function claimsOf(user: Record<string, any>): UserClaims {
  const claims: UserClaims = { id: String(user.id), collection: String(user.collection) }
  if (typeof user.email === 'string') claims.email = user.email
  if (typeof user._sid === 'string') claims.sid = user._sid
  return claims
}

/**
 * Resolves credentials the native JWT check did not handle (API keys:
 * `Authorization: <slug> API-Key <key>`, or a token given outside the headers) through
 * `payload.auth`, i.e. every auth strategy the app configured. Only the credential itself is
 * handed to Payload, never the request's cookies: the native server already decided whether
 * the cookie counts (trusted Origin), and hooks see headers with credentials redacted.
 */
export function credentialResolver(payload: Payload) {
  return async (req: { headers: Record<string, string>; token?: string }): Promise<UserClaims | null> => {
    if (!req.token) return null
    // A whole Authorization value (scheme and key) stays as it is; a bare token is a JWT.
    const authorization = req.token.includes(' ') ? req.token : `JWT ${req.token}`
    const { user } = await payload.auth({ headers: new Headers({ authorization }) })
    return user ? claimsOf(user as Record<string, any>) : null
  }
}

/**
 * Origins whose upgrades may authenticate with Payload's auth cookie: Payload's `csrf` list, its
 * `cors` list (not `'*'`), and the `serverURL` origin. The native server adds `allowOrigins`
 * and the request's own host.
 */
export function payloadTrustedOrigins(config: {
  csrf?: unknown
  cors?: unknown
  serverURL?: unknown
}): string[] {
  const out = new Set<string>()
  const add = (o: unknown) => {
    if (typeof o === 'string' && o !== '' && o !== '*') out.add(o.replace(/\/+$/, ''))
  }
  if (Array.isArray(config.csrf)) config.csrf.forEach(add)
  const cors = config.cors as unknown
  if (Array.isArray(cors)) cors.forEach(add)
  else if (cors && typeof cors === 'object' && Array.isArray((cors as { origins?: unknown }).origins))
    (cors as { origins: unknown[] }).origins.forEach(add)
  if (typeof config.serverURL === 'string' && config.serverURL) {
    try {
      add(new URL(config.serverURL).origin)
    } catch {
      // not a URL: nothing to trust
    }
  }
  return [...out]
}

/**
 * True when a socket's JWT session is still live: the user exists and, for collections with
 * sessions (Payload's default), `claims.sid` is among the user's unexpired sessions.
 */
export async function sessionIsLive(payload: Payload, claims: UserClaims | null): Promise<boolean> {
  if (!claims) return true
  const collection = payload.collections?.[claims.collection]?.config as any
  if (!collection?.auth) return true // not a Payload auth user (custom resolver)
  if (collection.auth.useSessions === false) return true
  if (!claims.sid) return claims.exp === undefined // an API-key user has neither sid nor exp
  const doc = (await payload.db.findOne({
    collection: claims.collection,
    where: { id: { equals: claims.id } },
  })) as { sessions?: { id: string; expiresAt?: string | Date }[] } | null
  if (!doc) return false
  const now = Date.now()
  return (doc.sessions ?? []).some(
    (s) => s.id === claims.sid && (!s.expiresAt || new Date(s.expiresAt).getTime() > now),
  )
}
