import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { buildConfig } from 'payload'
import { uWebSocketPlugin } from 'payload-realtime-rs'
import { Posts } from './collections/Posts'
import { Users } from './collections/Users'

const filename = fileURLToPath(import.meta.url)
const dirname = path.dirname(filename)

export default buildConfig({
  admin: { user: Users.slug, importMap: { baseDir: path.resolve(dirname) } },
  collections: [Users, Posts],
  secret: process.env.PAYLOAD_SECRET || 'change-me-in-production',
  typescript: { outputFile: path.resolve(dirname, 'payload-types.ts'), autoGenerate: false },
  // SQLite with its default options, as the template has it.
  db: sqliteAdapter({ client: { url: process.env.DATABASE_URL || 'file:./payload.db' } }),
  plugins: [uWebSocketPlugin({ includeCollections: ['posts'] })],
})
