// Runs work only once the request's database transaction committed; drops it on rollback.
//
// Payload starts a transaction per operation (`req.transactionID`, shared by nested operations
// that pass `req`) and ends it through `payload.db.commitTransaction(id)` or
// `payload.db.rollbackTransaction(id)`. Hooks run before the commit, so the plugin wraps those two
// adapter methods once per Payload instance and keeps a queue per transaction id.
//
// Only a string or number is a transaction id. Adapters without transactions (SQLite's default
// options) leave a Promise of `null` in `req.transactionID`, and Payload's relationship dataloader
// JSON-round-trips that Promise into `{}` when it populates a relationship: such a value is no
// transaction, and the work runs at once.
import type { Payload, PayloadRequest } from 'payload'
import { processState } from './state.js'

type Task = () => void

/** Transactions with queued work, per adapter; beyond this the oldest is dropped (logged, counted). */
export const MAX_PENDING_TRANSACTIONS = 10_000

interface Queues {
  pending: Map<string | number, Task[]>
  onError: (err: unknown) => void
}

// On globalThis: a hot reload re-evaluates this module, and the adapter must be wrapped once.
const installed = ((
  processState().lifecycle as { transactionQueues?: WeakMap<object, Queues> }
).transactionQueues ??= new WeakMap<object, Queues>())

/** Process-wide counters, shown in the manager's stats (`pendingAfterCommit`, `droppedAfterCommit`). */
const counters = processState().afterCommit

/** Wraps the adapter's commit/rollback of `payload.db` (idempotent). */
export function installTransactionHooks(payload: Payload, onError: (err: unknown) => void): void {
  const db = payload.db as any
  if (!db || installed.has(db)) return
  const queues: Queues = { pending: new Map(), onError }
  installed.set(db, queues)

  const origCommit = db.commitTransaction
  const origRollback = db.rollbackTransaction
  if (typeof origCommit === 'function') {
    db.commitTransaction = async function (this: unknown, incoming: unknown, ...rest: unknown[]) {
      const id = incoming instanceof Promise ? await incoming : incoming
      // Throws if the commit failed: then the queued work is dropped with the transaction.
      let tasks: Task[] | undefined
      try {
        const result = await origCommit.call(this ?? db, id, ...rest)
        tasks = take(queues, id)
        return result
      } finally {
        take(queues, id)
        run(tasks, onError)
      }
    }
  }
  if (typeof origRollback === 'function') {
    db.rollbackTransaction = async function (this: unknown, incoming: unknown, ...rest: unknown[]) {
      const id = incoming instanceof Promise ? await incoming : incoming
      take(queues, id)
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
  if (!isTransactionId(id) || !queues) {
    run([task], onError)
    return
  }
  let list = queues.pending.get(id)
  if (!list) {
    if (queues.pending.size >= MAX_PENDING_TRANSACTIONS) dropOldest(queues)
    queues.pending.set(id, (list = []))
  }
  list.push(task)
  counters.pending++
}

/** A value `beginTransaction` can return: anything else (`{}`, null) is no transaction. */
export function isTransactionId(id: unknown): id is string | number {
  return (typeof id === 'string' && id !== '') || typeof id === 'number'
}

/** Number of transactions with queued work (for tests and leak checks). */
export function pendingTransactions(payload: Payload): number {
  return installed.get(payload.db as object)?.pending.size ?? 0
}

function take(queues: Queues, id: unknown): Task[] | undefined {
  if (!isTransactionId(id)) return undefined
  const tasks = queues.pending.get(id)
  if (tasks) {
    queues.pending.delete(id)
    counters.pending -= tasks.length
  }
  return tasks
}

// A transaction that neither commits nor rolls back (an app bug) must not grow memory for ever.
function dropOldest(queues: Queues): void {
  const oldest = queues.pending.keys().next().value
  if (oldest === undefined) return
  const tasks = take(queues, oldest) ?? []
  counters.dropped += tasks.length
  queues.onError(
    new Error(
      `${MAX_PENDING_TRANSACTIONS} transactions wait for a commit: dropped ${tasks.length} event(s) of the oldest (${oldest})`,
    ),
  )
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
