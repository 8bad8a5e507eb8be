// Graceful stop on SIGTERM/SIGINT (how `next start`, Docker and process managers stop a server):
// sockets get a 1001 close frame after their queued messages flush, bounded by the server's
// `shutdownTimeoutMs`, before the process exits. The app's own signal handlers still run.
//
// Adding a listener disables Node's default exit on the signal, so: when ours is the only
// listener, the process exits after the close by re-raising the signal (same exit status as
// without us); when the app (Next, say) has handlers, they run right after ours and any
// `process.exit()` they call waits for the close first.
import { processState } from './state.js'

interface Closable {
  close(): Promise<void>
}

interface SignalState {
  installed: boolean
  current: () => Closable | null
  timeoutMs: number
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const

/** Installs the handlers once per process; later calls only update what they close. */
export function installSignalHandlers(current: () => Closable | null, shutdownTimeoutMs: number): void {
  const state = processState().lifecycle as { signals?: SignalState }
  if (state.signals) {
    state.signals.current = current
    state.signals.timeoutMs = shutdownTimeoutMs
    return
  }
  const s: SignalState = { installed: true, current, timeoutMs: shutdownTimeoutMs }
  state.signals = s
  for (const signal of SIGNALS) {
    const onSignal = () => {
      const server = s.current()
      const others = process.listeners(signal).filter((l) => l !== onSignal).length
      if (!server) {
        if (!others) reraise(signal, onSignal)
        return
      }
      // A margin over the core's own deadline, so a stuck close cannot hold the process for ever.
      const closed = Promise.race([
        server.close().catch(() => {}),
        new Promise<void>((r) => setTimeout(r, s.timeoutMs + 1000).unref()),
      ])
      if (others) {
        delayExit(closed)
      } else {
        void closed.then(() => reraise(signal, onSignal))
      }
    }
    // First in line: the close starts before the app's handlers run (and maybe exit).
    process.prependListener(signal, onSignal)
  }
}

function reraise(signal: (typeof SIGNALS)[number], listener: () => void): void {
  process.removeListener(signal, listener)
  process.kill(process.pid, signal)
}

// `process.exit()` called by the app's handler while sockets close: exit once they are closed.
function delayExit(closed: Promise<void>): void {
  const exit = process.exit
  let exiting = false
  process.exit = ((code?: number | string | null) => {
    if (exiting) return undefined as never
    exiting = true
    void closed.then(() => exit.call(process, code ?? process.exitCode))
    return undefined as never
  }) as typeof process.exit
  void closed.then(() => {
    if (!exiting) process.exit = exit
  })
}
