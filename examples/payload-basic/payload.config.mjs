// A headless Payload 3 app (SQLite, no Next.js) with real-time events from payload-realtime-rs.
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { buildConfig } from 'payload'
import { uWebSocketPlugin } from 'payload-realtime-rs'

const dir = path.dirname(fileURLToPath(import.meta.url))

export default buildConfig({
  secret: process.env.PAYLOAD_SECRET || 'change-me-in-production',
  telemetry: false,
  typescript: { autoGenerate: false },
  graphQL: { disable: true },
  db: sqliteAdapter({
    client: { url: process.env.DATABASE_URL || `file:${path.join(dir, 'demo.db')}` },
    transactionOptions: {}, // real transactions: events are sent only after commit
  }),
  collections: [
    { slug: 'users', auth: true, fields: [{ name: 'name', type: 'text' }] },
    {
      slug: 'posts',
      access: {
        read: () => true,
        create: ({ req }) => Boolean(req.user),
        update: ({ req }) => Boolean(req.user),
        delete: ({ req }) => Boolean(req.user),
      },
      fields: [
        { name: 'title', type: 'text', required: true },
        { name: 'team', type: 'text' },
        { name: 'membersOnly', type: 'checkbox', defaultValue: false },
        { name: 'author', type: 'relationship', relationTo: 'users' },
      ],
    },
  ],
  plugins: [
    uWebSocketPlugin({
      port: Number(process.env.WS_PORT || 3002),
      collections: {
        posts: { room: (doc) => (doc.team ? `team:${doc.team}` : undefined) },
      },
      rooms: { patterns: ['team:*'] },
      authorize: { posts: (user, event) => !event.doc.membersOnly || user !== null },
      handlers: { whoami: (socket) => socket.user },
    }),
  ],
})
