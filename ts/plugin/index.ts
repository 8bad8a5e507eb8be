// payload-realtime-rs: the Payload plugin and the process-wide WebSocket manager.
export { native } from './native.js'
export * from './manager.js'
// Other servers' method names on the manager (side effect: installs them).
import './compat/aliases.js'
import './compat/pxl.js'
// The plugin-aware start (uses the Payload config's JWT key, cookie and limits); shadows the
// manager's own `initUWebSocket` re-exported above.
export { initUWebSocket } from './runtime.js'
export { uWebSocketPlugin, qualifyRoom } from './plugin.js'
export { payloadRealTime } from './compat/payload-real-time.js'
export { withWebSocket } from './compat/nextrush.js'
export type { NextRushStats, WebSocketApp, WSHandler, WSMiddleware } from './compat/nextrush.js'
export type {
  PayloadRealTimeOptions,
  PayloadRealTimeCollection,
  PayloadIoShim,
} from './compat/payload-real-time.js'
export { stripHiddenFields, AUTH_SECRET_KEYS } from './sanitize.js'
export { payloadJwtKey, payloadAuthCookie, payloadTrustedOrigins } from './auth.js'
export { ReadAccess, realtimeAccessStats, type AccessStats } from './access.js'
export { evaluateWhere, type Where } from './where.js'
export type * from './types.js'
