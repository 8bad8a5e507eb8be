// payload-real-time's React hook `useRealtime(userId, token)` over PayloadRealtimeClient.
import { useEffect, useState } from 'react'
import { PayloadRealtimeClient } from './index.js'

export { PayloadRealtimeClient } from './index.js'
export type { CollectionEventData, PayloadRealtimeClientOptions } from './index.js'

/**
 * Creates a client for `userId` with `token` (URL: `NEXT_PUBLIC_WEBSOCKET_URL`, else
 * `ws://localhost:3001`, as payload-real-time did), closes it on unmount or when either changes.
 * Returns null until it exists.
 */
export function useRealtime(userId: string, token?: string): PayloadRealtimeClient | null {
  const [client, setClient] = useState<PayloadRealtimeClient | null>(null)
  useEffect(() => {
    const url = (typeof process !== 'undefined' && process.env?.NEXT_PUBLIC_WEBSOCKET_URL) || undefined
    const c = new PayloadRealtimeClient({ url, token })
    c.identify(userId)
    setClient(c)
    return () => {
      c.disconnect()
      setClient(null)
    }
  }, [userId, token])
  return client
}
