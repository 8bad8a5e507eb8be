import type { DocEvent, DocId } from './types.js'

export interface ApplyOptions {
  /** Where a document not yet in the list goes. Default 'end'. */
  insertAt?: 'start' | 'end'
}

const sameId = (a: unknown, b: DocId): boolean => a !== undefined && a !== null && String(a) === String(b)

/**
 * Applies one create/update/delete event to a list of documents, matching by `id` (compared as
 * strings, so 42 and "42" match). Create and update replace the document with that id or add it;
 * delete removes it. Returns the same array when nothing changed, a new one otherwise.
 */
export function applyDocEvent<D>(
  list: readonly D[],
  event: DocEvent<string, D>,
  options: ApplyOptions = {},
): D[] {
  const index = list.findIndex((d) => sameId((d as { id?: unknown } | null)?.id, event.id))
  if (event.type === 'delete') {
    return index < 0 ? (list as D[]) : list.filter((_, i) => i !== index)
  }
  if (index >= 0) {
    const next = list.slice()
    next[index] = event.doc
    return next
  }
  return options.insertAt === 'start' ? [event.doc, ...list] : [...list, event.doc]
}
