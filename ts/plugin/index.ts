// payload-realtime-rs: the Payload plugin and the process-wide WebSocket manager.
export { uWebSocketPlugin, qualifyRoom } from './plugin.js'
export { initUWebSocket, getUWebSocketManager } from './manager.js'
export type { ServerOptions, UWebSocketManager } from './manager.js'
export { stripHiddenFields, AUTH_SECRET_KEYS } from './sanitize.js'
export { payloadJwtKey, payloadAuthCookie } from './auth.js'
export { native } from './native.js'
export type * from './types.js'
