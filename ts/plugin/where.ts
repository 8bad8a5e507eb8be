// In-memory evaluation of a Payload `Where` (what a collection's `access.read` may return)
// against one document, for the operators Payload documents: equals, not_equals, in, not_in,
// exists, greater_than(_equal), less_than(_equal), like, contains, and/or, dotted paths into
// populated relations. Anything it cannot decide exactly as the database would (another
// operator, a path through a relation that is only an id, a field the document lacks) answers
// `undefined`: the caller then asks the database.

/** A Payload `Where` clause. */
export type Where = { [key: string]: unknown }

type Obj = Record<string, unknown>

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Sentinel: this path cannot be followed in memory. */
const UNKNOWN = Symbol('unknown')

/** Operators decided in memory; every other one sends the query to the database. */
export const MEMORY_OPERATORS: ReadonlySet<string> = new Set([
  'equals',
  'not_equals',
  'in',
  'not_in',
  'exists',
  'greater_than',
  'greater_than_equal',
  'less_than',
  'less_than_equal',
  'like',
  'contains',
])

/**
 * `true` when `doc` matches `where`, `false` when it does not, `undefined` when it cannot be
 * decided in memory (ask the database).
 */
export function evaluateWhere(where: Where, doc: Obj): boolean | undefined {
  let unknown = false
  for (const key in where) {
    const cond = where[key]
    let r: boolean | undefined
    if (key === 'and' || key === 'or') {
      if (!Array.isArray(cond)) return undefined
      r = combine(key, cond, doc)
    } else if (isObj(cond)) {
      r = evaluatePath(key, cond, doc)
    } else {
      return undefined
    }
    if (r === false) return false // a conjunction: one false decides
    if (r === undefined) unknown = true
  }
  return unknown ? undefined : true
}

function combine(kind: 'and' | 'or', clauses: unknown[], doc: Obj): boolean | undefined {
  let unknown = false
  for (const c of clauses) {
    const r = isObj(c) ? evaluateWhere(c, doc) : undefined
    if (kind === 'and' && r === false) return false
    if (kind === 'or' && r === true) return true
    if (r === undefined) unknown = true
  }
  if (unknown) return undefined
  return kind === 'and'
}

/** Split paths, kept (access functions return the same few paths over and over). */
const paths = new Map<string, string[]>()

function segmentsOf(path: string): string[] {
  let s = paths.get(path)
  if (!s) {
    s = path.split('.')
    if (paths.size < 10_000) paths.set(path, s)
  }
  return s
}

function evaluatePath(path: string, ops: Obj, doc: Obj): boolean | undefined {
  const values = resolve(doc, segmentsOf(path))
  if (values === UNKNOWN) return undefined
  let unknown = false
  for (const op in ops) {
    if (!MEMORY_OPERATORS.has(op)) return undefined
    const r = apply(op, ops[op], values)
    if (r === false) return false
    if (r === undefined) unknown = true
  }
  return unknown ? undefined : true
}

/**
 * The values at `segments` under `value` (several when the path crosses arrays or a hasMany
 * field), or UNKNOWN when a segment is missing from the document or the path continues through
 * a relation that is only an id.
 */
function resolve(value: unknown, segments: readonly string[], from = 0): unknown[] | typeof UNKNOWN {
  if (from === segments.length) return [idOf(value)]
  if (value === null || value === undefined) return [null]
  if (Array.isArray(value)) {
    const out: unknown[] = []
    for (const v of value) {
      const r = resolve(v, segments, from)
      if (r === UNKNOWN) return UNKNOWN
      out.push(...r)
    }
    return out
  }
  if (!isObj(value)) {
    // An unpopulated relation: only `<rel>.id` is known.
    return from === segments.length - 1 && segments[from] === 'id' ? [value] : UNKNOWN
  }
  const head = segments[from]
  // A polymorphic relation `{relationTo, value}` is queried through its value.
  if (!(head in value)) {
    if (typeof value.relationTo === 'string' && 'value' in value && head !== 'relationTo')
      return resolve(value.value, segments, from)
    return UNKNOWN
  }
  const next = value[head]
  // A hasMany value read as a whole (`tags: {in: […]}`) is a set of values.
  if (from === segments.length - 1 && Array.isArray(next)) return next.map(idOf)
  return resolve(next, segments, from + 1)
}

/** A populated relation compares as its id. */
function idOf(v: unknown): unknown {
  if (isObj(v)) {
    if ('id' in v) return v.id
    if (typeof v.relationTo === 'string' && 'value' in v) return idOf(v.value)
  }
  return v
}

const isNil = (v: unknown) => v === null || v === undefined

/** Equality as the database sees it: ids and numbers compare as text ("7" equals 7). */
function same(a: unknown, b: unknown): boolean {
  if (isNil(a) || isNil(b)) return isNil(a) && isNil(b)
  if (typeof a === 'object' || typeof b === 'object') return JSON.stringify(a) === JSON.stringify(b)
  return String(a) === String(b)
}

function list(operand: unknown): unknown[] | undefined {
  if (Array.isArray(operand)) return operand
  if (typeof operand === 'string') return operand.split(',')
  return undefined
}

/** Orders numbers as numbers and dates (ISO text or Date) as instants; else undefined. */
function compare(a: unknown, b: unknown): number | undefined {
  if (typeof a === 'number' && typeof b === 'number') return a - b
  const num = (v: unknown) =>
    typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN
  if ((typeof a === 'number' || typeof b === 'number') && !Number.isNaN(num(a)) && !Number.isNaN(num(b)))
    return num(a) - num(b)
  const time = (v: unknown) =>
    v instanceof Date
      ? v.getTime()
      : typeof v === 'string' && /^\d{4}-\d\d-\d\d/.test(v)
        ? Date.parse(v)
        : NaN
  const ta = time(a)
  const tb = time(b)
  if (!Number.isNaN(ta) && !Number.isNaN(tb)) return ta - tb
  return undefined
}

function apply(op: string, operand: unknown, values: unknown[]): boolean | undefined {
  const many = values.length !== 1
  const v = values[0]
  switch (op) {
    case 'equals':
      if (isNil(operand)) return many ? undefined : isNil(v)
      return values.some((x) => same(x, operand))
    case 'in': {
      const l = list(operand)
      return l ? values.some((x) => !isNil(x) && l.some((o) => same(x, o))) : undefined
    }
    case 'not_equals':
      // The database also matches a missing value (`IS NULL OR <>`); hasMany sets are left to it.
      if (many || isNil(operand)) return undefined
      return isNil(v) || !same(v, operand)
    case 'not_in': {
      const l = list(operand)
      if (many || !l) return undefined
      return isNil(v) || !l.some((o) => same(v, o))
    }
    case 'exists': {
      if (many) return undefined
      const want = operand === true || operand === 'true'
      if (!want && operand !== false && operand !== 'false') return undefined
      return want ? !isNil(v) : isNil(v)
    }
    case 'greater_than':
    case 'greater_than_equal':
    case 'less_than':
    case 'less_than_equal': {
      if (many) return undefined
      if (isNil(v)) return false // a NULL never compares
      const c = compare(v, operand)
      if (c === undefined) return undefined
      if (op === 'greater_than') return c > 0
      if (op === 'greater_than_equal') return c >= 0
      if (op === 'less_than') return c < 0
      return c <= 0
    }
    case 'like': {
      // Every space-separated word, case-insensitively, anywhere in the text. On numbers and
      // relations the database compares for equality instead: left to it.
      if (typeof operand !== 'string' || values.some((x) => !isNil(x) && typeof x !== 'string'))
        return undefined
      const words = operand.toLowerCase().split(' ')
      return values.some((x) => typeof x === 'string' && words.every((w) => x.toLowerCase().includes(w)))
    }
    case 'contains': {
      if (typeof operand !== 'string' || values.some((x) => !isNil(x) && typeof x !== 'string'))
        return undefined
      const needle = operand.toLowerCase()
      return values.some((x) => typeof x === 'string' && x.toLowerCase().includes(needle))
    }
    default:
      return undefined
  }
}
