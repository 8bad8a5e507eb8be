import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { withPayload } from '@payloadcms/next/withPayload'
import { withRealtime } from 'payload-realtime-rs/next'

const dirname = path.dirname(fileURLToPath(import.meta.url))

/** @type {import('next').NextConfig} */
const nextConfig = {
  // Your Next.js config here
  output: process.env.NEXT_OUTPUT === 'standalone' ? 'standalone' : undefined,
  // This example lives inside the package's repository (which has a lockfile of its own): pin the
  // app's root so Next does not take the repository for a monorepo root.
  turbopack: { root: dirname },
  outputFileTracingRoot: dirname,
}

export default withRealtime(withPayload(nextConfig, { devBundleServerPackages: false }))
