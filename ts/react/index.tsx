import { createContext, useContext, useEffect, useState, useSyncExternalStore, type ReactNode } from 'react'
import {
  applyDocEvent,
  createClient,
  type CollectionSlug,
  type ConnectionState,
  type DocId,
  type DocOf,
  type RealtimeClient,
  type RealtimeClientOptions,
  type RealtimeSchema,
  type UntypedSchema,
} from '../client/index.js'

const RealtimeContext = createContext<RealtimeClient<any> | null>(null)

export interface RealtimeProviderProps {
  /** A client you own (you close it). */
  client?: RealtimeClient<any>
  /**
   * Or options: the provider creates the client, connects it on mount and closes it on unmount.
   * Default `{}`: the app's own origin at `/realtime`.
   */
  options?: RealtimeClientOptions
  children?: ReactNode
}

/** Makes a RealtimeClient available to the hooks below. Give it `client`, `options`, or nothing. */
export function RealtimeProvider({ client, options, children }: RealtimeProviderProps) {
  // Built during render but connected only in an effect: safe for SSR and StrictMode (the
  // effect's close() is undone by its re-run's connect()).
  const [owned] = useState(() => (client ? null : createClient({ ...options, autoConnect: false })))
  useEffect(() => {
    if (!owned) return
    owned.connect()
    return () => owned.close()
  }, [owned])
  return <RealtimeContext.Provider value={client ?? owned}>{children}</RealtimeContext.Provider>
}

/** The provider's client. Throws outside a RealtimeProvider. */
export function useRealtime<S extends RealtimeSchema = UntypedSchema>(): RealtimeClient<S> {
  const client = useContext(RealtimeContext)
  if (!client) throw new Error('useRealtime() must be used inside <RealtimeProvider>')
  return client as RealtimeClient<S>
}

/** The connection state, re-rendering on every change. */
export function useRealtimeState(): ConnectionState {
  const client = useRealtime()
  return useSyncExternalStore(
    (notify) => client.onStateChange(notify),
    () => client.state,
    () => client.state,
  )
}

export interface UseCollectionOptions<D> {
  /**
   * The list to start from (e.g. from Payload's REST/Local API). When its identity changes the live
   * list restarts from it, so pass a stable value (state, props, fetched data), not a new literal
   * each render; an empty list is treated as equal to any other empty list.
   */
  initial?: readonly D[]
  /** Where created documents go. Default 'end'. */
  insertAt?: 'start' | 'end'
}

/**
 * A live list of a collection's documents: joins `collection:<slug>` while mounted and applies
 * each create / update / delete by `id`. Type the documents with `useCollection<Post>('posts')`,
 * or use {@link createRealtimeHooks} for schema-checked slugs.
 */
export function useCollection<D = any>(slug: string, options: UseCollectionOptions<D> = {}): D[] {
  const client = useRealtime()
  const { initial, insertAt } = options
  const [docs, setDocs] = useState<D[]>(() => (initial ? [...initial] : []))
  const [from, setFrom] = useState(initial)
  if (from !== initial && !(isEmpty(from) && isEmpty(initial))) {
    setFrom(initial)
    setDocs(initial ? [...initial] : [])
  }
  useEffect(
    () => client.onCollection(slug, (event) => setDocs((list) => applyDocEvent(list, event, { insertAt }))),
    [client, slug, insertAt],
  )
  return docs
}

/**
 * One live document: joins `doc:<collection>:<id>` while mounted. `undefined` until known (or
 * `initial`), then the latest `doc` from an update, `null` after a delete.
 */
export function useDoc<D = any>(
  collection: string,
  id: DocId | null | undefined,
  options: { initial?: D } = {},
): D | null | undefined {
  const client = useRealtime()
  const [state, setState] = useState<{ key: string; doc: D | null | undefined }>(() => ({
    key: docKey(collection, id),
    doc: options.initial,
  }))
  const key = docKey(collection, id)
  let current = state
  if (state.key !== key) {
    current = { key, doc: options.initial }
    setState(current)
  }
  useEffect(() => {
    if (id === null || id === undefined) return
    return client.onDoc(collection, id, (event) =>
      setState({ key: docKey(collection, id), doc: event.type === 'delete' ? null : event.doc }),
    )
  }, [client, collection, id])
  return current.doc
}

/**
 * Hooks typed by your schema, e.g. Payload's generated `Config`:
 * `export const { useCollection, useDoc } = createRealtimeHooks<Config>()`; then
 * `useCollection('posts')` is `Post[]` and an unknown slug does not compile.
 */
export function createRealtimeHooks<S extends RealtimeSchema>() {
  return {
    useRealtime: useRealtime<S>,
    useRealtimeState,
    useCollection: <C extends CollectionSlug<S>>(
      slug: C,
      options?: UseCollectionOptions<DocOf<S, C>>,
    ): DocOf<S, C>[] => useCollection<DocOf<S, C>>(slug, options),
    useDoc: <C extends CollectionSlug<S>>(
      collection: C,
      id: DocId | null | undefined,
      options?: { initial?: DocOf<S, C> },
    ): DocOf<S, C> | null | undefined => useDoc<DocOf<S, C>>(collection, id, options),
  }
}

function isEmpty(list: readonly unknown[] | undefined): boolean {
  return !list || list.length === 0
}

function docKey(collection: string, id: DocId | null | undefined): string {
  return `${collection}\u0000${id ?? ''}`
}
