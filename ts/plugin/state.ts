// Process-wide state, kept on `globalThis`: `next dev` re-evaluates modules on every hot reload
// (and Next may load this package once per bundle layer), so a module-level singleton would be
// lost or duplicated, and with it the running server. One object per process, whatever copy of
// this module asks.

/** What survives module re-evaluation. */
export interface ProcessState {
  /** The running manager (typed loosely here to keep this file free of imports). */
  manager: unknown
  /** After-commit bookkeeping, summed over every Payload instance of the process. */
  afterCommit: { pending: number; dropped: number }
  /** Events emitted while no server ran (warned about, rate-limited). */
  droppedNoServer: number
  /** The plugin's lifecycle (runtime.ts). */
  lifecycle: Record<string, unknown>
}

const KEY = Symbol.for('payload-realtime-rs.process-state')

/** The one state object of this process. */
export function processState(): ProcessState {
  const g = globalThis as Record<symbol, ProcessState | undefined>
  let s = g[KEY]
  if (!s) {
    s = { manager: null, afterCommit: { pending: 0, dropped: 0 }, droppedNoServer: 0, lifecycle: {} }
    g[KEY] = s
  }
  return s
}
