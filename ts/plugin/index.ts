export { native } from './native.js'
export * from './manager.js'
