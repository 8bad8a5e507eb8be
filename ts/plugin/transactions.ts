// Runs work only once the request's database transaction committed; drops it on rollback.
//
// Payload starts a transaction per operation (`req.transactionID`, shared by nested operations
// that pass `req`) and ends it through `payload.db.commitTransaction(id)` or
// `payload.db.rollbackTransaction(id)`. Hooks run before the commit, so the plugin wraps those two
// adapter methods once per Payload instance and keeps a queue per transaction id.
import type { Payload, PayloadRequest } from 'payload'

type Task = () => void

interface Queues {
  pending: Map<string | number, Task[]>
}

const installed = new WeakMap<object, Queues>()

/** Wraps the adapter's commit/rollback of `payload.db` (idempotent). */
export function installTransactionHooks(payload: Payload, onError: (err: unknown) => void): void {
  const db = payload.db as any
  if (!db || installed.has(db)) return
  const queues: Queues = { pending: new Map() }
  installed.set(db, queues)

  const origCommit = db.commitTransaction
  const origRollback = db.rollbackTransaction
  if (typeof origCommit === 'function') {
    db.commitTransaction = async function (this: unknown, incoming: unknown, ...rest: unknown[]) {
      const id = incoming instanceof Promise ? await incoming : incoming
      // Throws if the commit failed: then the queued work is dropped with the transaction.
      try {
        const result = await origCommit.call(this ?? db, id, ...rest)
        run(queues.pending.get(id as string), onError)
        return result
      } finally {
        queues.pending.delete(id as string)
      }
    }
  }
  if (typeof origRollback === 'function') {
    db.rollbackTransaction = async function (this: unknown, incoming: unknown, ...rest: unknown[]) {
      const id = incoming instanceof Promise ? await incoming : incoming
      queues.pending.delete(id as string)
      return origRollback.call(this ?? db, id, ...rest)
    }
  }
}

/**
 * Runs `task` after `req`'s transaction commits, or now when the request has no transaction
 * (adapters or calls without transactions write immediately).
 */
export async function afterCommit(
  req: PayloadRequest,
  task: Task,
  onError: (err: unknown) => void,
): Promise<void> {
  let id: unknown = req.transactionID
  if (id instanceof Promise) id = await id
  const queues = installed.get(req.payload?.db as object)
  if (!id || !queues) {
    run([task], onError)
    return
  }
  const key = id as string
  let list = queues.pending.get(key)
  if (!list) queues.pending.set(key, (list = []))
  list.push(task)
}

/** Number of transactions with queued work (for tests and leak checks). */
export function pendingTransactions(payload: Payload): number {
  return installed.get(payload.db as object)?.pending.size ?? 0
}

function run(tasks: Task[] | undefined, onError: (err: unknown) => void): void {
  if (!tasks) return
  for (const task of tasks) {
    try {
      task()
    } catch (err) {
      onError(err)
    }
  }
}
