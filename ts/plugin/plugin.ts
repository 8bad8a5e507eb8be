// uWebSocketPlugin: adds realtime hooks to a Payload config. Writes become events only after the
// request's transaction commits; documents lose hidden and auth fields before they leave.
import type { CollectionConfig, Config, Payload, PayloadRequest } from 'payload'
import { ReadAccess } from './access.js'
import { payloadAuthCookie, payloadJwtKey, payloadTrustedOrigins } from './auth.js'
import { getUWebSocketManager, type EmitEvent, type ServerOptions } from './manager.js'
import {
  disconnectDeletedUser,
  disconnectLogout,
  startFromPlugin,
  type Runtime,
  warnNoServer,
} from './runtime.js'
import { stripHiddenFields } from './sanitize.js'
import { processState } from './state.js'
import { afterCommit, installTransactionHooks } from './transactions.js'
import type {
  CollectionRealtimeOptions,
  EventOperation,
  ServerLimits,
  UWebSocketPluginOptions,
} from './types.js'

const ALL_EVENTS: EventOperation[] = ['create', 'update', 'delete']
const ROOM_PREFIXES = ['room:', 'user:', 'collection:', 'doc:']
/** Longest a write waits for a saturated fan-out queue to drain before emitting anyway. */
const DRAIN_WAIT_MS = 5_000
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref())

/** Fully qualified room name for a `collections[slug].room` result. */
export function qualifyRoom(name: string): string {
  return ROOM_PREFIXES.some((p) => name.startsWith(p)) ? name : `room:${name}`
}

/**
 * The Payload plugin. Add it to `plugins` in `buildConfig`; then either set `port` or call
 * `initUWebSocket()` after `getPayload()`.
 */
export const uWebSocketPlugin =
  (pluginOptions: UWebSocketPluginOptions = {}) =>
  (incomingConfig: Config): Config => {
    const options = pluginOptions
    if (options.enabled === false || options.disabled === true) return incomingConfig

    // Filled in onInit; hooks never run before it.
    let state: Runtime | null = null
    const log = (msg: string) => {
      if (options.debug) state?.payload.logger.info(`[realtime] ${msg}`)
    }
    const onError = (err: unknown, what: string) => {
      const logger = state?.payload.logger
      if (logger) logger.error({ err, msg: `[realtime] ${what} failed` })
      else console.error(`[realtime] ${what} failed`, err)
    }

    const enabled = new Map<string, CollectionRealtimeOptions>()
    for (const slug of options.includeCollections ?? []) enabled.set(slug, {})
    for (const [slug, c] of Object.entries(options.collections ?? {})) enabled.set(slug, c ?? {})

    const emit = (event: EmitEvent) => {
      let e: EmitEvent | undefined = event
      if (options.shouldEmit && !options.shouldEmit(e))
        return log(`dropped by shouldEmit: ${e.collection}:${e.id}`)
      if (options.transformEvent) e = options.transformEvent(e)
      if (!e) return
      const manager = getUWebSocketManager()
      if (!manager) return warnNoServer(`${e.operation} ${e.collection}:${e.id}`, state?.payload.logger)
      try {
        manager.emitEvent(e)
      } catch (err) {
        // EBUSY (queue full even after waiting) or EMSGSIZE (larger than maxBackpressure): this
        // event is lost; say so instead of failing the write that caused it.
        onError(err, `emit ${e.operation} ${e.collection}:${e.id}`)
        return
      }
      log(
        `emitted ${e.operation} ${e.collection}:${e.id}${e.rooms?.length ? ` +rooms ${e.rooms.join(',')}` : ''}`,
      )
    }

    // Never lets a realtime failure (a throwing `room()`, say) fail the write itself.
    const queue = async (
      req: PayloadRequest,
      slug: string,
      operation: EventOperation,
      doc: any,
      previousDoc: any,
    ) => {
      try {
        // Backpressure: while the server's fan-out queue is over half full, writes wait for it
        // to drain (bounded) instead of piling up events it would refuse with EBUSY.
        const manager = getUWebSocketManager()
        if (manager?.isSaturated) await Promise.race([manager.drained(), sleep(DRAIN_WAIT_MS)])
        await buildAndQueue(req, slug, operation, doc, previousDoc)
      } catch (err) {
        onError(err, `${operation} event for ${slug}:${doc?.id}`)
      }
    }

    const buildAndQueue = (
      req: PayloadRequest,
      slug: string,
      operation: EventOperation,
      doc: any,
      previousDoc: any,
    ) => {
      const settings = enabled.get(slug)!
      if (req.context?.realtime === false)
        return log(`skipped ${operation} ${slug}:${doc?.id}: context.realtime === false`)
      // Unpublished content stays on the server; a deleted draft is announced by id only.
      const hideDraft = doc?._status === 'draft' && !settings.drafts
      if (hideDraft && operation !== 'delete') return log(`skipped draft ${slug}:${doc.id}`)
      const rooms = new Set<string>()
      if (settings.room) {
        try {
          const r = settings.room(doc, { operation, previousDoc, user: req.user, req })
          for (const name of Array.isArray(r) ? r : r ? [r] : [])
            if (name) rooms.add(qualifyRoom(String(name)))
        } catch (err) {
          onError(err, `room() of ${slug}:${doc?.id}`) // the event still reaches collection and doc rooms
        }
      }
      const event: EmitEvent = {
        operation,
        collection: slug,
        id: doc.id,
        doc: hideDraft ? { id: doc.id } : stripHiddenFields(req.payload, slug, doc),
      }
      if (rooms.size) event.rooms = [...rooms]
      return afterCommit(
        req,
        () => emit(event),
        (err) => onError(err, `emit ${operation} ${slug}`),
      )
    }

    const collections = (incomingConfig.collections ?? []).map((collection): CollectionConfig => {
      const slug = collection.slug
      const settings = enabled.get(slug)
      const events = new Set(settings?.events ?? ALL_EVENTS)
      const hooks = { ...collection.hooks }
      if (settings && (events.has('create') || events.has('update'))) {
        hooks.afterChange = [
          ...(hooks.afterChange ?? []),
          async ({ doc, previousDoc, operation, req }) => {
            if (events.has(operation))
              await queue(req, slug, operation, doc, operation === 'update' ? previousDoc : undefined)
          },
        ]
      }
      const isAuth = Boolean(collection.auth)
      if ((settings && events.has('delete')) || isAuth) {
        hooks.afterDelete = [
          ...(hooks.afterDelete ?? []),
          async ({ doc, id, req }) => {
            if (isAuth) state?.access.forgetUser(slug, id ?? doc?.id)
            if (isAuth) disconnectDeletedUser(slug, id ?? doc?.id, log)
            if (settings && events.has('delete'))
              await queue(req, slug, 'delete', { ...doc, id: doc?.id ?? id }, undefined)
          },
        ]
      }
      if (isAuth) {
        // A changed user (a new role, say) is read again by the next access check.
        hooks.afterChange = [
          ...(hooks.afterChange ?? []),
          ({ doc }) => {
            if (doc?.id !== undefined) state?.access.forgetUser(slug, doc.id)
          },
        ]
        hooks.afterLogout = [
          ...(hooks.afterLogout ?? []),
          ({ req }) => {
            const all = req.searchParams?.get?.('allSessions') === 'true'
            disconnectLogout(req.user as Record<string, any> | null, all, log)
          },
        ]
      }
      return { ...collection, hooks }
    })

    const unknown = [...enabled.keys()].filter((slug) => !collections.some((c) => c.slug === slug))
    if (unknown.length) console.warn(`[realtime] no such collection(s): ${unknown.join(', ')}`)

    // Starts (or re-wires) realtime for `payload` with this config's options. Called from onInit
    // and, after a hot reload in `next dev` (Payload reloads the config without running onInit
    // again), from the wrapped `payload.db.connect`. Never throws.
    const start = async (payload: Payload) => {
      try {
        state = {
          payload,
          options,
          serverOptions: serverOptionsFor(options, payload),
          access: new ReadAccess(payload),
          log,
          onError,
        }
        installTransactionHooks(payload, (err) => onError(err, 'after-commit task'))
        watchHotReload(payload)
      } catch (err) {
        onError(err, 'init')
        return
      }
      await startFromPlugin(state)
    }

    return {
      ...incomingConfig,
      collections,
      custom: { ...incomingConfig.custom, [CUSTOM_KEY]: { start } },
      onInit: async (payload: Payload) => {
        await start(payload)
        if (incomingConfig.onInit) await incomingConfig.onInit(payload)
      },
    }
  }

// Where a config carries its plugin instance's start, for the hot-reload path.
const CUSTOM_KEY = 'payload-realtime-rs'
// On globalThis: a hot reload re-evaluates this module, and the db must be wrapped once.
const watched = ((processState().lifecycle as { watchedDbs?: WeakSet<object> }).watchedDbs ??=
  new WeakSet<object>())

/**
 * Payload's hot reload swaps `payload.config` and reconnects the same `payload.db` with
 * `{ hotReload: true }`, without onInit: after that reconnect, start the new config's plugin.
 */
function watchHotReload(payload: Payload): void {
  const db = payload.db as { connect?: (args?: { hotReload?: boolean }) => Promise<unknown> }
  if (!db?.connect || watched.has(db)) return
  watched.add(db)
  const connect = db.connect.bind(db)
  db.connect = async (args) => {
    const result = await connect(args)
    if (args?.hotReload) {
      const custom = payload.config.custom as Record<string, { start?: (p: Payload) => Promise<void> }>
      const start = custom?.[CUSTOM_KEY]?.start
      if (start) await start(payload)
    }
    return result
  }
}

/** Native server options derived from the plugin options and the Payload config. */
function serverOptionsFor(o: UWebSocketPluginOptions, payload: Payload): Runtime['serverOptions'] {
  const secret = payload.config.secret
  const compatOrigin = o.uWebSocket?.cors?.origin
  let allowOrigins = o.allowOrigins
  if (!allowOrigins && typeof compatOrigin === 'string' && compatOrigin !== '*') allowOrigins = [compatOrigin]
  if (!allowOrigins && Array.isArray(compatOrigin)) allowOrigins = compatOrigin.map(String)
  const limits: ServerLimits = {}
  for (const key of SERVER_LIMIT_KEYS) (limits as Record<string, unknown>)[key] = o[key]
  return {
    ...limits,
    // Inside Next.js (bundled code: NEXT_RUNTIME is 'nodejs') the defaults are withRealtime's, so
    // the server listens where its rewrite points, even in standalone output (no next.config).
    port: o.port ?? envPort() ?? (underNext() ? 3002 : undefined),
    path:
      o.path ??
      o.uWebSocket?.path ??
      process.env.PAYLOAD_REALTIME_PATH ??
      (underNext() ? '/realtime' : undefined),
    host: o.host ?? process.env.PAYLOAD_REALTIME_HOST ?? (underNext() ? '127.0.0.1' : undefined),
    allowOrigins,
    // Cookies count only from these (plus allowOrigins and the request's own host).
    trustedOrigins: [...payloadTrustedOrigins(payload.config), ...(o.trustedOrigins ?? [])],
    monitoring: o.monitoring,
    requireAuth: o.requireAuth,
    jwtKey: secret ? payloadJwtKey(secret) : payload.secret,
    authVersion: 1, // Payload rejects JWTs without this header, so does the server
    authCookie: payloadAuthCookie(payload.config.cookiePrefix),
    roomPatterns: o.rooms?.patterns, // matched natively, without a JS call per join
    redis: redisOptions(o.redis, payload),
  }
}

function underNext(): boolean {
  return process.env.NEXT_RUNTIME === 'nodejs'
}

/** PAYLOAD_REALTIME_PORT (set by `withRealtime`), when it is a port number. */
function envPort(): number | undefined {
  const v = process.env.PAYLOAD_REALTIME_PORT
  if (!v || !/^\d+$/.test(v)) return undefined
  return Number(v)
}

/** `redis` with its `url` defaulting to REDIS_URL; without any url, Redis stays off (warned). */
function redisOptions(r: UWebSocketPluginOptions['redis'], payload: Payload): ServerOptions['redis'] {
  if (!r) return undefined
  const url = r.url ?? process.env.REDIS_URL
  if (!url) {
    payload.logger.warn(
      '[realtime] `redis` has no url and REDIS_URL is not set: running as a single instance',
    )
    return undefined
  }
  return { ...r, url }
}

const SERVER_LIMIT_KEYS = [
  'host',
  'path',
  'allowOrigins',
  'maxConnections',
  'maxMessageSize',
  'heartbeatMs',
  'pongTimeoutMs',
  'idleTimeoutMs',
  'maxBackpressure',
  'maxRoomsPerSocket',
  'rateLimit',
  'handlerTimeoutMs',
  'reusePort',
] as const satisfies readonly (keyof ServerLimits)[]
