// The fan-out calls one JS task makes reach the core together. A Payload operation or a
// handler often emits several events or messages in one go; each native call used to hand its
// command to the core's fan-out thread at once, which started a pass on the first while the
// rest were still being made, so a burst went out in several passes and every socket got
// several writes. Now the calls are checked and counted at once (bounds, EBUSY, EMSGSIZE stay
// synchronous) and held, and one microtask per JS task sends them on, in order.
import type { native } from './native.js'

type NativeServer = InstanceType<typeof native.NativeServer>

/** The native calls that hand a command to the fan-out. */
const FAN_OUT = ['emitEvent', 'broadcast', 'send', 'socketBroadcast'] as const

/** Makes `server`'s fan-out calls wait for the end of the current JS task (see above); returns it. */
export function holdFanOut(server: NativeServer): NativeServer {
  server.holdFanOut()
  let queued = false
  const flush = (): void => {
    queued = false
    server.flush()
  }
  const soon = (): void => {
    if (queued) return
    queued = true
    queueMicrotask(flush)
  }
  // Own properties shadow the class's methods on this one object; a throw held nothing, but a
  // flush is queued anyway (harmless, and earlier calls of the task may be waiting).
  for (const name of FAN_OUT) {
    const call = server[name] as (...args: unknown[]) => boolean
    Object.defineProperty(server, name, {
      value: (...args: unknown[]): boolean => {
        soon()
        return call.apply(server, args)
      },
    })
  }
  return server
}
