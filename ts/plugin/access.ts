// The default read check of events and joins: what a socket receives is what its user could
// read through Payload's REST API. Per event, once per distinct recipient user (the core hands
// over the distinct users of the audience in one call): the collection's `access.read` (true,
// false or a Where evaluated against the document, in memory when it can be, else by a counted
// database query), then field-level `access.read` and the read access of populated relations,
// which shape the user's view of the document. Users with the same view share one frame.
import type { CollectionConfig, Payload, PayloadRequest, Where as PayloadWhere } from 'payload'
import type { AuthorizeViews, RealtimeEvent, UserClaims, UWebSocketManager } from './manager.js'
import type { CollectionRealtimeOptions, UWebSocketPluginOptions } from './types.js'
import { evaluateWhere, type Where } from './where.js'

type Obj = Record<string, unknown>
type AnyField = Record<string, any>

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Counters of the default read check (`realtimeAccessStats()`). */
export interface AccessStats {
  /** Collection `access.read` calls (one per distinct user per event at most). */
  readCalls: number
  /** Where results decided in memory (identical Where results of one event count once). */
  whereInMemory: number
  /** Where results decided by a database query (operators or paths not handled in memory). */
  whereQueries: number
  /** Where results that needed the database but had no document to ask about (deletes): denied. */
  whereUndecided: number
  /** Field-level `access.read` calls. */
  fieldCalls: number
  /** User documents loaded from the database (cached until the user changes). */
  userLoads: number
}

const stats: AccessStats = {
  readCalls: 0,
  whereInMemory: 0,
  whereQueries: 0,
  whereUndecided: 0,
  fieldCalls: 0,
  userLoads: 0,
}

/** A copy of the default read check's counters (process-wide). */
export function realtimeAccessStats(): AccessStats {
  return { ...stats }
}

/** User documents kept at most; past it the cache starts over. */
const MAX_USERS = 100_000

/** A Payload user document as `req.user` carries it. */
type UserDoc = Obj & { id: string | number; collection: string }

/**
 * Payload's read access for one Payload instance: user documents (loaded in one query per
 * collection, cached until the user is changed or deleted) and the requests access functions
 * receive.
 */
export class ReadAccess {
  private readonly users = new Map<string, Promise<UserDoc | null>>()
  private readonly reqs = new WeakMap<object, Promise<PayloadRequest>>()
  private anonymousReq: Promise<PayloadRequest> | null = null
  private createLocalReq: Promise<(o: { user?: any }, p: Payload) => Promise<PayloadRequest>> | null = null

  constructor(private readonly payload: Payload) {}

  private config(slug: string): CollectionConfig | undefined {
    return this.payload.collections?.[slug]?.config as CollectionConfig | undefined
  }

  /** A user changed or was deleted: its next event loads it again. */
  forgetUser(collection: string, id: string | number): void {
    this.users.delete(`${collection}\u0000${id}`)
  }

  /** The user documents of `claims` (null for anonymous or vanished users), one query per collection. */
  async userDocs(claims: readonly (UserClaims | null)[]): Promise<(UserDoc | null)[]> {
    const missing = new Map<string, Map<string, UserClaims>>()
    for (const c of claims) {
      if (!c) continue
      const key = `${c.collection}\u0000${c.id}`
      if (this.users.has(key)) continue
      let m = missing.get(c.collection)
      if (!m) missing.set(c.collection, (m = new Map()))
      m.set(String(c.id), c)
    }
    if (this.users.size > MAX_USERS) this.users.clear()
    for (const [collection, byId] of missing) {
      const loaded = this.loadUsers(collection, [...byId.keys()])
      for (const [id, c] of byId) {
        this.users.set(
          `${collection}\u0000${id}`,
          loaded.then((docs) => {
            const doc = docs.get(id)
            if (!doc) return null
            // As Payload's JWT strategy sets them on req.user.
            const user: UserDoc = { ...doc, collection } as UserDoc
            user._strategy = c.sid ? 'local-jwt' : 'api-key'
            if (c.sid) user._sid = c.sid
            return user
          }),
        )
      }
    }
    return Promise.all(claims.map((c) => (c ? this.users.get(`${c.collection}\u0000${c.id}`)! : null)))
  }

  private async loadUsers(collection: string, ids: string[]): Promise<Map<string, Obj>> {
    const config = this.config(collection) as AnyField | undefined
    const out = new Map<string, Obj>()
    if (!config?.auth) return out
    stats.userLoads += ids.length
    const res = await this.payload.find({
      collection,
      where: { id: { in: ids } },
      depth: config.auth.depth ?? 0,
      overrideAccess: true,
      pagination: false,
    })
    for (const d of res.docs as Obj[]) out.set(String(d.id), d)
    return out
  }

  /** The request an access function receives for `user` (one per user document). */
  async reqFor(user: UserDoc | null): Promise<PayloadRequest> {
    this.createLocalReq ??= import('payload').then((m) => m.createLocalReq as any)
    const make = async () => (await this.createLocalReq!)({ user: user ?? undefined }, this.payload)
    if (!user) return (this.anonymousReq ??= make())
    let r = this.reqs.get(user)
    if (!r) this.reqs.set(user, (r = make()))
    return r
  }

  /** The collection's `access.read` for `req` (Payload's default: any logged-in user). */
  async collectionRead(slug: string, req: PayloadRequest, id?: string | number): Promise<boolean | Where> {
    const read = (this.config(slug)?.access as AnyField | undefined)?.read
    stats.readCalls++
    if (!read) return Boolean(req.user)
    const r = await read({ id, req })
    if (!r) return false
    return isObj(r) ? (r as Where) : true
  }

  /**
   * Whether the document `doc` (`id` of `slug`) matches `where`: in memory when the operators
   * and paths allow, else one `count` query (`exists` false: the document is gone, as for a
   * delete, and the answer is no). Identical Where results of one event share `memo`.
   */
  matches(
    slug: string,
    where: Where,
    doc: Obj,
    memo: Map<string, Promise<boolean>>,
    exists = true,
  ): Promise<boolean> {
    const key = `${slug}\u0000${doc.id}\u0000${JSON.stringify(where)}`
    let r = memo.get(key)
    if (r) return r
    const inMemory = evaluateWhere(where, doc)
    if (inMemory !== undefined) {
      stats.whereInMemory++
      r = Promise.resolve(inMemory)
    } else if (!exists || doc.id === undefined || doc.id === null) {
      stats.whereUndecided++
      r = Promise.resolve(false)
    } else {
      stats.whereQueries++
      r = this.payload
        .count({
          collection: slug,
          where: { and: [{ id: { equals: doc.id as string | number } }, where as PayloadWhere] },
          overrideAccess: true,
        })
        .then((c) => c.totalDocs > 0)
        .catch(() => false)
    }
    memo.set(key, r)
    return r
  }

  /** Whether `user` may read document `id` of `slug` now (join-doc): REST's findByID rule. */
  async canReadDoc(slug: string, id: string, user: UserDoc | null): Promise<boolean> {
    const req = await this.reqFor(user)
    const r = await this.collectionRead(slug, req, id)
    if (r === false) return false
    if (r === true) return true
    stats.whereQueries++
    const c = await this.payload.count({
      collection: slug,
      where: { and: [{ id: { equals: id } }, r as PayloadWhere] },
      overrideAccess: true,
    })
    return c.totalDocs > 0
  }

  /** Whether a collection's documents may look different to different readers (field access or relations). */
  private shaped = new Map<string, boolean>()
  needsView(slug: string): boolean {
    let v = this.shaped.get(slug)
    if (v === undefined) {
      v = hasShapingFields((this.config(slug) as AnyField | undefined)?.fields ?? [])
      this.shaped.set(slug, v)
    }
    return v
  }

  /**
   * Decides one event for the distinct users of its audience: verdict 0 (not readable), 1
   * (readable as emitted) or a view index (readable with some fields or relations hidden).
   */
  async decide(
    slug: string,
    claims: readonly (UserClaims | null)[],
    event: RealtimeEvent,
  ): Promise<AuthorizeViews> {
    const doc: Obj = isObj(event.doc) ? event.doc : { id: event.id }
    const exists = event.operation !== 'delete'
    const users = await this.userDocs(claims)
    const memo = new Map<string, Promise<boolean>>()
    const views: unknown[] = []
    const viewIndex = new Map<string, number>()
    const shaped = this.needsView(slug)
    const verdicts = await Promise.all(
      users.map(async (user, i) => {
        if (claims[i] && !user) return 0 // the user no longer exists
        const req = await this.reqFor(user)
        const r = await this.collectionRead(slug, req, event.id)
        if (r === false) return 0
        if (r !== true && !(await this.matches(slug, r, doc, memo, exists))) return 0
        if (!shaped) return 1
        const view = await new Viewer(this, req, memo).doc(slug, doc)
        if (!view.changed) return 1
        const signature = view.decisions.join('')
        let k = viewIndex.get(signature)
        if (k === undefined) {
          views.push(view.doc)
          k = views.length + 1
          viewIndex.set(signature, k)
        }
        return k
      }),
    )
    return { verdicts, docs: views }
  }

  /** For the viewer: the config of a collection. */
  collection(slug: string): AnyField | undefined {
    return this.config(slug) as AnyField | undefined
  }
}

/** Fields that make a document's view depend on the reader: field access, relations. */
function hasShapingFields(fields: AnyField[]): boolean {
  return fields.some(
    (f) =>
      Boolean(f.access?.read) ||
      ['relationship', 'upload', 'join'].includes(f.type) ||
      (Array.isArray(f.fields) && hasShapingFields(f.fields)) ||
      (Array.isArray(f.tabs) && f.tabs.some((t: AnyField) => hasShapingFields(t.fields ?? []))) ||
      (Array.isArray(f.blocks) && f.blocks.some((b: AnyField) => hasShapingFields(b.fields ?? []))) ||
      (Array.isArray(f.blockReferences) && f.blockReferences.length > 0),
  )
}

/**
 * One user's view of a document, as REST's afterRead would shape it: a field whose
 * `access.read` denies is removed; a populated relation the user may not read becomes its id,
 * one it may read is shaped by its own collection's field access. `decisions` lists every
 * decision in walking order (the same document walked for two users with the same decisions
 * gives the same view).
 */
class Viewer {
  readonly decisions: number[] = []
  changed = false

  constructor(
    private readonly access: ReadAccess,
    private readonly req: PayloadRequest,
    private readonly memo: Map<string, Promise<boolean>>,
  ) {}

  async doc(slug: string, doc: Obj): Promise<{ doc: Obj; decisions: number[]; changed: boolean }> {
    const out = await this.document(slug, doc, new Set())
    return { doc: out, decisions: this.decisions, changed: this.changed }
  }

  private async document(slug: string, doc: Obj, seen: Set<object>): Promise<Obj> {
    const config = this.access.collection(slug)
    if (!config || seen.has(doc)) return doc
    seen.add(doc)
    const out = await this.fields(doc, config.fields ?? [], doc, seen)
    seen.delete(doc)
    return out
  }

  private async fields(data: Obj, fields: AnyField[], top: Obj, seen: Set<object>): Promise<Obj> {
    const out: Obj = { ...data }
    await this.apply(out, fields, top, seen)
    return out
  }

  /** Applies `fields` to `out` in place; layout fields keep their children at this level. */
  private async apply(out: Obj, fields: AnyField[], top: Obj, seen: Set<object>): Promise<void> {
    for (const field of fields) {
      if (!field.name) {
        if (field.type === 'tabs') {
          for (const tab of field.tabs ?? []) {
            if (tab.name) await this.named(out, { ...tab, type: 'group' }, top, seen)
            else await this.apply(out, tab.fields ?? [], top, seen)
          }
        } else if (Array.isArray(field.fields)) {
          await this.apply(out, field.fields, top, seen)
        }
        continue
      }
      await this.named(out, field, top, seen)
    }
  }

  private async named(out: Obj, field: AnyField, top: Obj, seen: Set<object>): Promise<void> {
    const name: string = field.name
    if (!(name in out)) return
    if (field.access?.read) {
      stats.fieldCalls++
      let ok = false
      try {
        ok = Boolean(
          await field.access.read({ id: top.id, data: top, doc: top, req: this.req, siblingData: out }),
        )
      } catch {
        ok = false
      }
      this.decisions.push(ok ? 1 : 0)
      if (!ok) {
        delete out[name]
        this.changed = true
        return
      }
    }
    const value = out[name]
    if (value === null || value === undefined) return
    out[name] = await this.value(field, value, top, seen)
  }

  private async value(field: AnyField, value: unknown, top: Obj, seen: Set<object>): Promise<unknown> {
    switch (field.type) {
      case 'group':
      case 'tab':
        return isObj(value) ? this.fields(value, field.fields ?? [], top, seen) : value
      case 'array':
        return Array.isArray(value)
          ? Promise.all(
              value.map((row) => (isObj(row) ? this.fields(row, field.fields ?? [], top, seen) : row)),
            )
          : value
      case 'blocks':
        return Array.isArray(value)
          ? Promise.all(
              value.map((row) => {
                if (!isObj(row)) return row
                const block = (field.blocks ?? []).find((b: AnyField) => b?.slug === row.blockType)
                return block ? this.fields(row, block.fields ?? [], top, seen) : row
              }),
            )
          : value
      case 'relationship':
      case 'upload':
        return Array.isArray(value)
          ? Promise.all(value.map((v) => this.relation(field.relationTo, v, seen)))
          : this.relation(field.relationTo, value, seen)
      default:
        return value
    }
  }

  /** A populated relation the user may not read becomes its id (REST shows ids regardless). */
  private async relation(relationTo: string | string[], value: unknown, seen: Set<object>): Promise<unknown> {
    if (!isObj(value)) return value
    if (Array.isArray(relationTo)) {
      if (typeof value.relationTo !== 'string' || !isObj(value.value)) return value
      return { ...value, value: await this.related(value.relationTo, value.value, seen) }
    }
    return this.related(relationTo, value, seen)
  }

  private async related(slug: string, doc: Obj, seen: Set<object>): Promise<unknown> {
    if (!this.access.collection(slug)) return doc
    const r = await this.access.collectionRead(slug, this.req, doc.id as string | number)
    const ok = r === true || (r !== false && (await this.access.matches(slug, r, doc, this.memo)))
    this.decisions.push(ok ? 1 : 0)
    if (!ok) {
      this.changed = true
      return doc.id
    }
    return this.document(slug, doc, seen)
  }
}

/** The collections whose writes emit events (`includeCollections` and the keys of `collections`). */
export function enabledCollections(options: UWebSocketPluginOptions): Map<string, CollectionRealtimeOptions> {
  const enabled = new Map<string, CollectionRealtimeOptions>()
  for (const slug of options.includeCollections ?? []) enabled.set(slug, {})
  for (const [slug, c] of Object.entries(options.collections ?? {})) enabled.set(slug, c ?? {})
  return enabled
}

/**
 * Installs the default read check on `manager`: for every enabled collection without an
 * `authorize` function and without `access: 'none'`, events go through `ReadAccess.decide`;
 * `join-collection`/`join-doc` are refused for collections without events and for users the
 * collection's read access refuses (`join-doc`: who cannot read that document).
 */
export function installReadAccess(
  manager: UWebSocketManager,
  access: ReadAccess,
  options: UWebSocketPluginOptions,
  onError: (err: unknown, what: string) => void,
): void {
  const enabled = enabledCollections(options)
  const custom = options.authorize ?? {}
  const checked = (slug: string) => enabled.get(slug)?.access !== 'none' && !custom[slug]
  for (const slug of enabled.keys()) {
    if (!checked(slug)) continue
    manager.setAuthorize(slug, async (users, event) => {
      try {
        return await access.decide(slug, users, event)
      } catch (err) {
        onError(err, `read access of ${slug}`)
        return users.map(() => false)
      }
    })
  }
  manager.setSubscribePolicy(async (claims, room) => {
    const doc = room.startsWith('doc:')
    const rest = room.slice(doc ? 4 : room.indexOf(':') + 1)
    const cut = doc ? rest.indexOf(':') : -1
    const slug = doc ? rest.slice(0, cut) : rest
    if (!enabled.has(slug)) return false
    if (!checked(slug)) return true
    try {
      const [user] = await access.userDocs([claims])
      if (claims && !user) return false
      if (doc) return await access.canReadDoc(slug, rest.slice(cut + 1), user)
      return (await access.collectionRead(slug, await access.reqFor(user))) !== false
    } catch (err) {
      onError(err, `read access for ${room}`)
      return false
    }
  })
}
