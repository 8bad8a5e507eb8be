// Removes hidden and auth fields from a document before it leaves the server, following the
// collections' field configs, also inside populated relationships, joins, blocks and rich text.
// Never mutates its input: hook documents are returned to Payload's caller.
import type { Payload } from 'payload'

/** Keys an auth collection's documents never broadcast, whatever the field config says. */
export const AUTH_SECRET_KEYS: ReadonlySet<string> = new Set([
  'hash',
  'salt',
  'sessions',
  'apiKey',
  'apiKeyIndex',
  'resetPasswordToken',
  'resetPasswordExpiration',
  '_verificationToken',
  'lockUntil',
  'loginAttempts',
])

type AnyField = Record<string, any>
type Obj = Record<string, unknown>

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Returns a copy of `doc` (a document of collection `slug`) without hidden or auth fields. */
export function stripHiddenFields(payload: Payload, slug: string, doc: unknown): Obj {
  if (!isObj(doc)) return {}
  return new Stripper(payload).doc(slug, doc, new WeakSet())
}

class Stripper {
  constructor(private readonly payload: Payload) {}

  /** A document of collection `slug` (top level, populated relation or join entry). */
  doc(slug: string, doc: Obj, seen: WeakSet<object>): Obj {
    const collection = this.payload.collections?.[slug]?.config as AnyField | undefined
    if (!collection) return this.scrubUnknown(doc, seen)
    if (seen.has(doc)) return {}
    seen.add(doc)
    const out = this.fields(doc, collection.fields ?? [], seen)
    if (collection.auth) for (const key of AUTH_SECRET_KEYS) delete out[key]
    seen.delete(doc)
    return out
  }

  /** Copies `data`, applying `fields` (data-affecting or layout) to it. */
  private fields(data: Obj, fields: AnyField[], seen: WeakSet<object>): Obj {
    const out: Obj = { ...data }
    this.applyFields(out, fields, seen)
    return out
  }

  private applyFields(out: Obj, fields: AnyField[], seen: WeakSet<object>): void {
    for (const field of fields) {
      const name: string | undefined = field.name
      // Layout fields (row, collapsible, unnamed group/tab) keep their children at this level.
      if (!name) {
        if (field.type === 'tabs') {
          for (const tab of field.tabs ?? []) {
            if (tab.name) this.named(out, { ...tab, type: 'group' }, seen)
            else this.applyFields(out, tab.fields ?? [], seen)
          }
        } else if (Array.isArray(field.fields)) {
          this.applyFields(out, field.fields, seen)
        }
        continue
      }
      this.named(out, field, seen)
    }
  }

  private named(out: Obj, field: AnyField, seen: WeakSet<object>): void {
    const name: string = field.name
    if (!(name in out)) return
    if (field.hidden === true) {
      delete out[name]
      return
    }
    const value = out[name]
    if (value === null || value === undefined) return
    out[name] = this.value(field, value, seen)
  }

  private value(field: AnyField, value: unknown, seen: WeakSet<object>): unknown {
    switch (field.type) {
      case 'group':
      case 'tab':
        return isObj(value) ? this.fields(value, field.fields ?? field.flattenedFields ?? [], seen) : value
      case 'array':
        return Array.isArray(value)
          ? value.map((row) =>
              isObj(row) ? this.fields(row, field.fields ?? field.flattenedFields ?? [], seen) : row,
            )
          : value
      case 'blocks':
        return Array.isArray(value) ? value.map((row) => this.block(field, row, seen)) : value
      case 'relationship':
      case 'upload':
        return Array.isArray(value)
          ? value.map((v) => this.relation(field.relationTo, v, seen))
          : this.relation(field.relationTo, value, seen)
      case 'join':
        return this.join(field, value, seen)
      case 'richText':
      case 'json':
        return this.scrubUnknown(value, seen)
      default:
        return value
    }
  }

  private block(field: AnyField, row: unknown, seen: WeakSet<object>): unknown {
    if (!isObj(row)) return row
    const slug = row.blockType
    const candidates: unknown[] = [...(field.blocks ?? []), ...(field.blockReferences ?? [])]
    let block: AnyField | undefined
    for (const c of candidates) {
      const b = typeof c === 'string' ? this.globalBlock(c) : (c as AnyField)
      if (b?.slug === slug) {
        block = b
        break
      }
    }
    if (!block) return this.scrubUnknown(row, seen)
    return this.fields(row, block.fields ?? block.flattenedFields ?? [], seen)
  }

  private globalBlock(slug: string): AnyField | undefined {
    const blocks = (this.payload.config as AnyField)?.blocks as AnyField[] | undefined
    return blocks?.find((b) => b.slug === slug)
  }

  /** A relationship/upload value: an id, a populated doc, or `{relationTo, value}` (polymorphic). */
  private relation(relationTo: string | string[], value: unknown, seen: WeakSet<object>): unknown {
    if (!isObj(value)) return value
    if (Array.isArray(relationTo)) {
      if (typeof value.relationTo === 'string' && isObj(value.value)) {
        return { ...value, value: this.doc(value.relationTo, value.value, seen) }
      }
      return value
    }
    return this.doc(relationTo, value, seen)
  }

  private join(field: AnyField, value: unknown, seen: WeakSet<object>): unknown {
    if (!isObj(value) || !Array.isArray(value.docs)) return value
    const target = field.collection as string | string[]
    const docs = value.docs.map((d) => {
      if (!isObj(d)) return d
      if (Array.isArray(target)) {
        return typeof d.relationTo === 'string' && isObj(d.value)
          ? { ...d, value: this.doc(d.relationTo, d.value, seen) }
          : d
      }
      return this.doc(target, d, seen)
    })
    return { ...value, docs }
  }

  /**
   * Structures without a field config (rich text, JSON, unknown blocks): a nested
   * `{relationTo, value}` with a populated value (Lexical relationship/upload nodes) is stripped
   * with that collection's config, and auth secret keys are removed from any object that looks
   * like an auth document (has `hash` or `salt` or `sessions` next to `email`/`username`).
   */
  private scrubUnknown(value: any, seen: WeakSet<object>): any {
    if (Array.isArray(value)) return value.map((v) => this.scrubUnknown(v, seen))
    if (!isObj(value)) return value
    if (seen.has(value)) return {}
    seen.add(value)
    let out: Obj = {}
    for (const [k, v] of Object.entries(value)) out[k] = this.scrubUnknown(v, seen)
    if (
      typeof out.relationTo === 'string' &&
      isObj(value.value) &&
      this.payload.collections?.[out.relationTo]
    ) {
      out = { ...out, value: this.doc(out.relationTo, value.value as Obj, seen) }
    }
    if (('email' in out || 'username' in out) && ('hash' in out || 'salt' in out || 'sessions' in out)) {
      for (const key of AUTH_SECRET_KEYS) delete out[key]
    }
    seen.delete(value)
    return out
  }
}
