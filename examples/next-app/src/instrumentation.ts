// Starts Payload (and with it the realtime server) when the Next.js server starts, not at the
// first request. Next calls register() once per server process; never during `next build`.
export async function register() {
  if (process.env.NEXT_RUNTIME === 'nodejs') {
    const { getPayload } = await import('payload')
    const { default: config } = await import('@payload-config')
    await getPayload({ config })
  }
}
