// Option forms other servers accepted (NextRush's among them), turned into the native server's:
// `Infinity` for "no limit", 0 for "off", a path array, RegExp origins. Each form is documented
// in docs/migrating/nextrush.md; everything else passes through unchanged.
import type { ServerOptions, UpgradeRequest } from '../manager.js'

declare module '../manager.js' {
  interface ServerOptions {
    /**
     * PXL's inactivity cleanup: with `enabled`, `inactiveTime` becomes `idleTimeoutMs`
     * (`intervalCheckTime` and `log` are not needed: the core times each socket). [off]
     */
    disconnectInactiveClients?: {
      enabled?: boolean
      inactiveTime?: number
      intervalCheckTime?: number
      log?: boolean
    }
    /** `@nextrush/websocket`'s name for `heartbeatMs` (0 = off). [30000] */
    heartbeatInterval?: number
    /** `@nextrush/websocket`'s name for `maxMessageSize`. [1048576] */
    maxPayload?: number
    /** `@nextrush/websocket`'s name for `allowOrigins` (`https://*.example.com` wildcards). [all] */
    allowedOrigins?: string[]
    /**
     * NextRush's option form of `manager.setVerifyClient(fn)`: `false` refuses the upgrade (403).
     * The request has no credentials (see `UpgradeRequest`). [none]
     */
    verifyClient?: (req: UpgradeRequest) => boolean | Promise<boolean>
  }
}

/** The largest value a native u32 option takes: "no limit" in practice. */
const U32_MAX = 0xffff_ffff

/** A limit given as `Infinity` (or above the native range) becomes the largest native value. */
function limit(v: number | undefined): number | undefined {
  if (v === undefined) return undefined
  if (v === Number.POSITIVE_INFINITY || v > U32_MAX) return U32_MAX
  return v
}

/** A RegExp origin rule becomes the native `/source/` form (case-insensitive flag kept). */
function originRule(o: string | RegExp): string {
  if (typeof o === 'string') return o
  return `/${o.flags.includes('i') ? '(?i)' : ''}${o.source}/`
}

/** Native options from the accepted forms. */
export function normalizeServerOptions(given: ServerOptions): Record<string, unknown> {
  const {
    disconnectInactiveClients: inactive,
    heartbeatInterval,
    maxPayload,
    allowedOrigins,
    ...rest
  } = given
  // Other servers' names for our options; ours win when both are given.
  const o: ServerOptions = {
    heartbeatMs: heartbeatInterval,
    maxMessageSize: maxPayload,
    allowOrigins: allowedOrigins,
    idleTimeoutMs: inactive?.enabled ? inactive.inactiveTime : undefined,
    ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)),
  }
  const out: Record<string, unknown> = { ...o }
  if (Array.isArray(o.path)) {
    const [first, ...more] = o.path
    out.path = first
    out.extraPaths = [...more, ...(o.extraPaths ?? [])]
  }
  if (o.allowOrigins !== undefined) {
    const list = Array.isArray(o.allowOrigins) ? o.allowOrigins : [o.allowOrigins]
    // NextRush and others read `'*'` as "any origin": that is our default (no list).
    out.allowOrigins = list.includes('*') ? undefined : list.map(originRule)
  }
  out.maxConnections = limit(o.maxConnections)
  out.maxMessageSize = limit(o.maxMessageSize)
  out.maxBackpressure = limit(o.maxBackpressure)
  out.maxRoomsPerSocket = limit(o.maxRoomsPerSocket)
  // 0 = off: a ping every ~49 days is none in practice (the core needs an interval).
  if (o.heartbeatMs === 0 || o.heartbeatMs === Number.POSITIVE_INFINITY) out.heartbeatMs = U32_MAX
  if (o.idleTimeoutMs === Number.POSITIVE_INFINITY) out.idleTimeoutMs = 0
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k]
  return out
}
