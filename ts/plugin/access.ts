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

  /**
   * `makeReq` builds the request access functions receive for a user document (default:
   * Payload's `createLocalReq`, so `req.payload`, `req.t`, … work as in a request).
   */
  constructor(
    private readonly payload: Payload,
    private readonly makeReq?: (user: UserDoc | null) => PayloadRequest | Promise<PayloadRequest>,
  ) {}

  private config(slug: string): CollectionConfig | undefined {
    return this.payload.collections?.[slug]?.config as CollectionConfig | undefined
  }

  /** A user changed or was deleted: its next event loads it again. */
  forgetUser(collection: string, id: string | number): void {
    this.users.delete(`${collection}\u0000${id}`)
    this.gen++
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
    const make = async () => {
      if (this.makeReq) return this.makeReq(user)
      this.createLocalReq ??= import('payload').then((m) => m.createLocalReq as any)
      return (await this.createLocalReq)({ user: user ?? undefined }, this.payload)
    }
    if (!user) return (this.anonymousReq ??= make())
    let r = this.reqs.get(user)
    if (!r) this.reqs.set(user, (r = make()))
    return r
  }

  private readonly readFns = new Map<string, ((args: any) => unknown) | null>()

  /** The collection's `access.read` function (null: Payload's default, any logged-in user). */
  private readFn(slug: string): ((args: any) => unknown) | null {
    let f = this.readFns.get(slug)
    if (f === undefined) {
      f = ((this.config(slug)?.access as AnyField | undefined)?.read as (args: any) => unknown) ?? null
      this.readFns.set(slug, f)
    }
    return f
  }

  /**
   * The collection's `access.read` for `req`, as Payload's executeAccess reads it: falsy
   * denies, an object is a Where, anything else allows. Synchronous when the function is; a
   * throw denies.
   */
  private readResult(
    slug: string,
    req: PayloadRequest,
    id?: string | number,
  ): boolean | Where | Promise<boolean | Where> {
    const read = this.readFn(slug)
    stats.readCalls++
    if (!read) return Boolean(req.user)
    let r: unknown
    try {
      r = read({ id, req })
    } catch {
      return false
    }
    return isThenable(r) ? Promise.resolve(r).then(readVerdict, () => false) : readVerdict(r)
  }

  /** The collection's `access.read` for `req` (Payload's default: any logged-in user). */
  async collectionRead(slug: string, req: PayloadRequest, id?: string | number): Promise<boolean | Where> {
    return this.readResult(slug, req, id)
  }

  /**
   * Whether `doc` (of `slug`) matches `where`: in memory when the operators and paths allow,
   * else one `count` query (none when the document is gone, as for a delete: no). Within one
   * event a Where object is evaluated once per document, and database queries are shared by
   * identical Where results (same JSON).
   */
  private match(
    ctx: EventCtx,
    slug: string,
    where: Where,
    doc: Obj,
    exists: boolean,
  ): boolean | Promise<boolean> {
    let byWhere = ctx.byDoc.get(doc)
    if (!byWhere) ctx.byDoc.set(doc, (byWhere = new Map()))
    const known = byWhere.get(where)
    if (known !== undefined) return known
    let r: boolean | Promise<boolean>
    const inMemory = evaluateWhere(where, doc)
    if (inMemory !== undefined) {
      stats.whereInMemory++
      r = inMemory
    } else if (!exists || doc.id === undefined || doc.id === null) {
      stats.whereUndecided++
      r = false
    } else {
      const key = `${slug}\u0000${doc.id}\u0000${JSON.stringify(where)}`
      let q = ctx.byJson.get(key)
      if (!q) {
        stats.whereQueries++
        q = this.payload
          .count({
            collection: slug,
            where: { and: [{ id: { equals: doc.id as string | number } }, where as PayloadWhere] },
            overrideAccess: true,
          })
          .then((c) => c.totalDocs > 0)
          .catch(() => false)
        ctx.byJson.set(key, q)
      }
      r = q
    }
    byWhere.set(where, r)
    return r
  }

  /** Whether `user` may read document `id` of `slug` now (join-doc): REST's findByID rule. */
  async canReadDoc(slug: string, id: string, user: UserDoc | null): Promise<boolean> {
    const req = await this.reqFor(user)
    const r = await this.readResult(slug, req, id)
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

  /** User documents and requests of a user list, kept while the list and its users stay the same. */
  private readonly lists = new WeakMap<
    object,
    { gen: number; users: (UserDoc | null)[]; reqs: PayloadRequest[] }
  >()
  /** Bumped when a user changes: cached lists are rebuilt. */
  private gen = 0

  private async usersAndReqs(claims: readonly (UserClaims | null)[]) {
    const cached = this.lists.get(claims)
    if (cached && cached.gen === this.gen) return cached
    const gen = this.gen
    const users = await this.userDocs(claims)
    const reqs = await Promise.all(users.map((u) => this.reqFor(u)))
    const entry = { gen, users, reqs }
    this.lists.set(claims, entry)
    return entry
  }

  /**
   * Decides one event for the distinct users of its audience: verdict 0 (not readable), 1
   * (readable as emitted) or a view index (readable with some fields or relations hidden).
   * Synchronous per user as long as the access functions are.
   */
  async decide(
    slug: string,
    claims: readonly (UserClaims | null)[],
    event: RealtimeEvent,
  ): Promise<AuthorizeViews> {
    const doc: Obj = isObj(event.doc) ? event.doc : { id: event.id }
    const { users, reqs } = await this.usersAndReqs(claims)
    const ctx: EventCtx = {
      slug,
      doc,
      id: event.id,
      exists: event.operation !== 'delete',
      byDoc: new Map(),
      byJson: new Map(),
      sites: this.needsView(slug) ? findSites(this, slug, doc) : [],
      views: [],
      viewIndex: new Map(),
    }
    const verdicts: number[] = new Array(claims.length).fill(0)
    const pending: Promise<unknown>[] = []
    for (let i = 0; i < claims.length; i++) {
      let v: number | Promise<number>
      try {
        v = claims[i] && !users[i] ? 0 : this.decideUser(ctx, reqs[i])
      } catch {
        v = 0
      }
      if (typeof v === 'number') verdicts[i] = v
      else pending.push(v.then((x) => (verdicts[i] = x)).catch(() => (verdicts[i] = 0)))
    }
    if (pending.length) await Promise.all(pending)
    return { verdicts, docs: ctx.views }
  }

  private decideUser(ctx: EventCtx, req: PayloadRequest): number | Promise<number> {
    const after = (r: boolean | Where): number | Promise<number> => {
      if (r === false) return 0
      if (r === true) return this.view(ctx, req)
      const m = this.match(ctx, ctx.slug, r, ctx.doc, ctx.exists)
      if (typeof m === 'boolean') return m ? this.view(ctx, req) : 0
      return m.then((ok) => (ok ? this.view(ctx, req) : 0))
    }
    const r = this.readResult(ctx.slug, req, ctx.id)
    return isThenable(r) ? r.then(after) : after(r)
  }

  /** 1 when the user sees the document as emitted, else the index of its view (built once per distinct view). */
  private view(ctx: EventCtx, req: PayloadRequest): number | Promise<number> {
    if (ctx.sites.length === 0) return 1
    const dec: number[] = new Array(ctx.sites.length)
    const pick = (): number => {
      if (dec.every((d) => d === 1)) return 1
      const key = dec.join('')
      let k = ctx.viewIndex.get(key)
      if (k === undefined) {
        ctx.views.push(buildView(ctx.doc, ctx.sites, dec))
        k = ctx.views.length + 1
        ctx.viewIndex.set(key, k)
      }
      return k
    }
    const run = (from: number): number | Promise<number> => {
      for (let i = from; i < ctx.sites.length; i++) {
        const d = this.siteDecision(ctx, ctx.sites[i], dec, req)
        if (typeof d !== 'number') {
          return d.then((v) => {
            dec[i] = v
            return run(i + 1)
          })
        }
        dec[i] = d
      }
      return pick()
    }
    return run(0)
  }

  /** 1 when the user may see this site (a field, a populated relation), else 0. */
  private siteDecision(
    ctx: EventCtx,
    site: Site,
    dec: number[],
    req: PayloadRequest,
  ): number | Promise<number> {
    if (site.parent >= 0 && dec[site.parent] === 0) return 0 // inside something already hidden
    if (site.kind === 'field') {
      stats.fieldCalls++
      const top = site.top!
      let r: unknown
      try {
        r = site.read!({ id: top.id, data: top, doc: top, req, siblingData: site.sibling })
      } catch {
        return 0
      }
      return isThenable(r)
        ? Promise.resolve(r).then(
            (x) => (x ? 1 : 0),
            () => 0,
          )
        : r
          ? 1
          : 0
    }
    const related = site.related!
    const after = (r: boolean | Where): number | Promise<number> => {
      if (r === false) return 0
      if (r === true) return 1
      const m = this.match(ctx, site.slug!, r, related, true)
      return typeof m === 'boolean' ? (m ? 1 : 0) : m.then((ok) => (ok ? 1 : 0))
    }
    const r = this.readResult(site.slug!, req, related.id as string | number)
    return isThenable(r) ? r.then(after) : after(r)
  }

  /** For the site finder: the config of a collection. */
  collection(slug: string): AnyField | undefined {
    return this.config(slug) as AnyField | undefined
  }
}

const isThenable = <T>(v: unknown): v is Promise<T> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function'

function readVerdict(r: unknown): boolean | Where {
  if (!r) return false
  return isObj(r) ? (r as Where) : true
}

/** What the decisions of one event share. */
interface EventCtx {
  slug: string
  doc: Obj
  id: string | number
  exists: boolean
  /** In-memory Where results per document and Where object. */
  byDoc: Map<object, Map<object, boolean | Promise<boolean>>>
  /** Database answers per identical Where (JSON). */
  byJson: Map<string, Promise<boolean>>
  sites: Site[]
  views: unknown[]
  viewIndex: Map<string, number>
}

/** A place in the document whose visibility depends on the reader. */
interface Site {
  kind: 'field' | 'relation'
  /** Keys from the event's document to the field, or to the relation's value. */
  path: (string | number)[]
  /** The enclosing site (a field with access, a populated relation), or -1. */
  parent: number
  /** Field: its `access.read`, the document it belongs to, the object holding it. */
  read?: (args: any) => unknown
  top?: Obj
  sibling?: Obj
  /** Relation: the related collection and the populated document. */
  slug?: string
  related?: Obj
}

/** Fields that make a document's view depend on the reader: field access, relations. */
function hasShapingFields(fields: AnyField[]): boolean {
  return fields.some(
    (f) =>
      Boolean(f.access?.read) ||
      ['relationship', 'upload'].includes(f.type) ||
      (Array.isArray(f.fields) && hasShapingFields(f.fields)) ||
      (Array.isArray(f.tabs) && f.tabs.some((t: AnyField) => hasShapingFields(t.fields ?? []))) ||
      (Array.isArray(f.blocks) && f.blocks.some((b: AnyField) => hasShapingFields(b.fields ?? []))),
  )
}

/**
 * Every site of `doc` (of `slug`) whose visibility depends on the reader, in document order,
 * as REST's afterRead meets them: fields with `access.read` (also in groups, tabs, rows,
 * arrays, blocks) and populated relations (their collection's read access; inside them, their
 * own fields). Found once per event; decided per user.
 */
function findSites(access: ReadAccess, slug: string, doc: Obj): Site[] {
  const sites: Site[] = []
  const seen = new Set<object>()
  const document = (slug: string, d: Obj, path: (string | number)[], parent: number) => {
    const config = access.collection(slug)
    if (!config || seen.has(d)) return
    seen.add(d)
    fields(config.fields ?? [], d, d, path, parent)
    seen.delete(d)
  }
  const fields = (list: AnyField[], data: Obj, top: Obj, path: (string | number)[], parent: number) => {
    for (const field of list) {
      if (field.name) named(field, data, top, path, parent)
      else if (field.type === 'tabs') {
        for (const tab of field.tabs ?? []) {
          if (tab.name) named({ ...tab, type: 'group' }, data, top, path, parent)
          else fields(tab.fields ?? [], data, top, path, parent)
        }
      } else if (Array.isArray(field.fields)) fields(field.fields, data, top, path, parent)
    }
  }
  const named = (field: AnyField, data: Obj, top: Obj, path: (string | number)[], parent: number) => {
    if (!(field.name in data)) return
    const here = [...path, field.name]
    let p = parent
    if (field.access?.read) {
      sites.push({ kind: 'field', path: here, parent, read: field.access.read, top, sibling: data })
      p = sites.length - 1
    }
    const value = data[field.name]
    if (value === null || value === undefined) return
    switch (field.type) {
      case 'group':
      case 'tab':
        if (isObj(value)) fields(field.fields ?? [], value, top, here, p)
        return
      case 'array':
        if (Array.isArray(value))
          value.forEach((row, i) => {
            if (isObj(row)) fields(field.fields ?? [], row, top, [...here, i], p)
          })
        return
      case 'blocks':
        if (Array.isArray(value))
          value.forEach((row, i) => {
            const block = isObj(row) && (field.blocks ?? []).find((b: AnyField) => b?.slug === row.blockType)
            if (block) fields(block.fields ?? [], row as Obj, top, [...here, i], p)
          })
        return
      case 'relationship':
      case 'upload':
        if (Array.isArray(value))
          value.forEach((v, i) => {
            relation(field.relationTo, v, [...here, i], p)
          })
        else relation(field.relationTo, value, here, p)
        return
    }
  }
  const relation = (
    relationTo: string | string[],
    value: unknown,
    path: (string | number)[],
    parent: number,
  ) => {
    if (!isObj(value)) return
    if (Array.isArray(relationTo)) {
      if (typeof value.relationTo === 'string' && isObj(value.value))
        related(value.relationTo, value.value, [...path, 'value'], parent)
      return
    }
    related(relationTo, value, path, parent)
  }
  const related = (slug: string, d: Obj, path: (string | number)[], parent: number) => {
    if (!access.collection(slug)) return
    sites.push({ kind: 'relation', path, parent, slug, related: d })
    document(slug, d, path, sites.length - 1)
  }
  document(slug, doc, [], -1)
  return sites
}

/**
 * The document as one group of users sees it: a hidden field is removed, a relation they may
 * not read becomes its id (REST shows ids regardless of access).
 */
function buildView(doc: Obj, sites: Site[], dec: number[]): Obj {
  const out = structuredClone(doc)
  for (let i = 0; i < sites.length; i++) {
    const s = sites[i]
    if (dec[i] === 1 || (s.parent >= 0 && dec[s.parent] === 0)) continue
    let holder: any = out
    for (const k of s.path.slice(0, -1)) holder = holder?.[k]
    if (holder === null || typeof holder !== 'object') continue
    const last = s.path[s.path.length - 1]
    if (s.kind === 'field') delete holder[last]
    else holder[last] = s.related!.id
  }
  return out
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
