// payload-realtime-rs/next: what a Next.js app needs for realtime, in one wrapper (like Payload's
// `withPayload`). It knows Next, never sockets.
//
// - Standalone output (`output: 'standalone'`) traces only what the bundles import statically;
//   the addon is imported at run time by package name (see plugin/native.ts), so its loader and
//   this platform's binary package are added to the trace.
// - One origin: a rewrite of `path` (default `/realtime`) to the WebSocket server on loopback, so
//   browsers reach it at `wss://<app>/realtime`. Next proxies the upgrade in `next dev` and
//   `next start` (in JS: fine for development; in production put a reverse proxy in front, see the
//   README).
// - PAYLOAD_REALTIME_PORT/PATH/HOST are set for the plugin (when not set already), so the
//   server listens where the rewrite points.
//
// The package is deliberately NOT added to `serverExternalPackages`: bundled, the client SDK and
// the React hooks use the app's React (external, they would load a second copy and fail in
// server rendering); only the addon stays outside the bundle.

/** The part of a Next.js config this wrapper reads and extends (any Next 15/16 config fits). */
export interface NextConfigLike {
  outputFileTracingIncludes?: Record<string, string[]>
  rewrites?: () => Promise<RewritesLike> | RewritesLike
  [key: string]: unknown
}

interface Rewrite {
  source: string
  destination: string
  [key: string]: unknown
}

type RewritesLike = Rewrite[] | { beforeFiles?: Rewrite[]; afterFiles?: Rewrite[]; fallback?: Rewrite[] }

/** Options of `withRealtime`. */
export interface WithRealtimeOptions {
  /** Port of the WebSocket server (the plugin's `port`). [PAYLOAD_REALTIME_PORT, else 3002] */
  port?: number
  /** Path of the WebSocket on the app's origin and on the server. [PAYLOAD_REALTIME_PATH, else '/realtime'] */
  path?: string
  /** Address the server binds. [PAYLOAD_REALTIME_HOST, else '127.0.0.1': reached through the app's origin] */
  host?: string
  /** Add the rewrite of `path` to the server (one origin in `next dev` / `next start`). [true] */
  rewrite?: boolean
}

/** Defaults shared with the plugin (which reads the same environment variables). */
export const DEFAULT_PORT = 3002
export const DEFAULT_PATH = '/realtime'
export const DEFAULT_HOST = '127.0.0.1'

/** Files of the package the standalone output needs at run time (globs, relative to the app). */
export const TRACED_FILES = [
  './node_modules/payload-realtime-rs/package.json',
  './node_modules/payload-realtime-rs/index.js',
  './node_modules/payload-realtime-rs-*/package.json',
  './node_modules/payload-realtime-rs-*/*.node',
]

/**
 * Wraps a Next.js config: `export default withRealtime(withPayload(nextConfig))`. Returns a new
 * config; the given one is not modified.
 */
export function withRealtime<T extends NextConfigLike>(
  nextConfig: T = {} as T,
  options: WithRealtimeOptions = {},
): T {
  const env = process.env
  const port = options.port ?? (numberOr(env.PAYLOAD_REALTIME_PORT) || DEFAULT_PORT)
  const path = options.path ?? env.PAYLOAD_REALTIME_PATH ?? DEFAULT_PATH
  const host = options.host ?? env.PAYLOAD_REALTIME_HOST ?? DEFAULT_HOST
  env.PAYLOAD_REALTIME_PORT ??= String(port)
  env.PAYLOAD_REALTIME_PATH ??= path
  env.PAYLOAD_REALTIME_HOST ??= host

  const includes = { ...nextConfig.outputFileTracingIncludes }
  includes['/*'] = [...(includes['/*'] ?? []), ...TRACED_FILES] // '/*' matches every route

  const config: T = { ...nextConfig, outputFileTracingIncludes: includes }
  if (options.rewrite !== false) {
    const target = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${port}${path}`
    const ours: Rewrite = { source: path, destination: target }
    const theirs = nextConfig.rewrites
    config.rewrites = async () => {
      const r = theirs ? await theirs() : []
      if (Array.isArray(r)) return { beforeFiles: [ours], afterFiles: r, fallback: [] }
      return { ...r, beforeFiles: [ours, ...(r.beforeFiles ?? [])] }
    }
  }
  return config
}

function numberOr(v: string | undefined): number {
  return v && /^\d+$/.test(v) ? Number(v) : 0
}
