// `custom.socketAccess` of the Payload 2 Socket.IO plugin, read on Payload 3: per operation
// (create, find, findByID, update, updateByID, delete, deleteByID, login, refresh,
// forgotPassword) a function `(args, req, result) => false | { public?, self?, <room>? }` or an
// object `{ public: true, self: true, <room>: value }`. After the operation it sends
// `public.<slug>.<op>` to every socket, `self.<slug>.<op>` to the requesting user's sockets
// and `<room>.<slug>.<op>` to a room's sockets, each with the given value (`true`: the
// operation's result). docs/migrating/payload-plugin-socket-io.md has the differences.
import type { CollectionConfig, PayloadRequest } from 'payload'
import { getUWebSocketManager } from '../manager.js'

type Targets = Record<string, unknown>
type AccessFn = (args: unknown, req: PayloadRequest, result: unknown) => Targets | false | null | undefined
type SocketAccess = Record<string, AccessFn | Targets | false | undefined>

/** Credentials an operation's result may carry (login, refresh): never sent to sockets. */
const CREDENTIAL_KEYS = ['token', 'refreshedToken', 'exp']

function withoutCredentials(result: unknown): unknown {
  if (!result || typeof result !== 'object' || Array.isArray(result)) return result
  const out = { ...(result as Record<string, unknown>) }
  for (const k of CREDENTIAL_KEYS) delete out[k]
  return out
}

/** Adds the afterOperation hook to collections that have `custom.socketAccess`. */
export function withSocketAccess(
  collection: CollectionConfig,
  onError: (err: unknown, what: string) => void,
): CollectionConfig {
  const access = collection.custom?.socketAccess as SocketAccess | undefined
  if (!access || typeof access !== 'object') return collection
  const slug = collection.slug
  const hook = async ({ args, operation, req, result }: any) => {
    try {
      const rule = access[operation]
      if (!rule) return result
      const targets = typeof rule === 'function' ? rule(args, req, result) : rule
      if (!targets) return result
      const manager = getUWebSocketManager()
      if (!manager) return result
      for (const [target, value] of Object.entries(targets)) {
        if (!value) continue
        const data = value === true ? withoutCredentials(result) : value
        const event = `${target}.${slug}.${operation}`
        if (target === 'public') manager.broadcast({ type: event, data })
        else if (target === 'self') {
          const user = req.user as { id?: string | number; collection?: string } | null
          // A user handed to the Local API may lack `collection`: it is then the admin one.
          const coll = user?.collection ?? req.payload.config.admin?.user
          if (user?.id !== undefined && coll) manager.broadcastToRoom(`user:${coll}:${user.id}`, data, event)
        } else manager.broadcastToRoom(`room:${target}`, data, event)
      }
    } catch (err) {
      onError(err, `custom.socketAccess.${operation} of ${slug}`)
    }
    return result
  }
  return {
    ...collection,
    hooks: { ...collection.hooks, afterOperation: [...(collection.hooks?.afterOperation ?? []), hook] },
  }
}
