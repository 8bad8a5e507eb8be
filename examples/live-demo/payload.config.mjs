// Payload 3 config of the live demo: SQLite (one file, no other server), users who log in, and
// posts whose changes the plugin sends to every logged-in browser.
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sqliteAdapter } from '@payloadcms/db-sqlite'
import { buildConfig } from 'payload'
import { uWebSocketPlugin } from 'payload-realtime-rs'

const dir = path.dirname(fileURLToPath(import.meta.url))
const loggedIn = ({ req }) => Boolean(req.user)

/**
 * `host`/`wsPort`: where the WebSocket server listens. `isPageOrigin(origin, hostHeader)`: which
 * browser pages may open a socket (see server.mjs); a client without an Origin header (not a
 * browser) is let through, it still needs a valid token.
 */
export function demoConfig({ host, wsPort, isPageOrigin }) {
  return buildConfig({
    // Without PAYLOAD_SECRET a random one per start: logins then last until the next restart.
    secret: process.env.PAYLOAD_SECRET || randomBytes(32).toString('hex'),
    telemetry: false,
    typescript: { autoGenerate: false },
    graphQL: { disable: true },
    logger: { options: { level: process.env.LOG_LEVEL || 'warn' } },
    // No mail server: Payload's mails (e.g. forgot-password) are logged.
    email: () => ({
      name: 'log',
      defaultFromAddress: 'demo@localhost',
      defaultFromName: 'live demo',
      sendEmail: async (message) => console.log(`[email to ${message.to}] ${message.subject}`),
    }),
    db: sqliteAdapter({
      client: { url: process.env.DATABASE_URL || `file:${path.join(dir, 'demo.db')}` },
      transactionOptions: {}, // events go out only after the write committed
    }),
    collections: [
      {
        slug: 'users',
        auth: true,
        // A post's populated author shows only these: never the user's sessions to other users.
        defaultPopulate: { name: true, email: true },
        fields: [{ name: 'name', type: 'text' }],
      },
      {
        slug: 'posts',
        defaultSort: '-createdAt',
        access: { read: loggedIn, create: loggedIn, update: loggedIn, delete: loggedIn },
        hooks: {
          beforeChange: [
            ({ data, operation, req }) =>
              operation === 'create' && req.user && !data.author ? { ...data, author: req.user.id } : data,
          ],
        },
        fields: [
          { name: 'title', type: 'text', required: true, maxLength: 200 },
          { name: 'body', type: 'textarea', maxLength: 5000 },
          { name: 'author', type: 'relationship', relationTo: 'users' },
        ],
      },
    ],
    plugins: [
      uWebSocketPlugin({
        port: wsPort,
        host,
        requireAuth: true, // the page connects with the JWT from its REST login
        collections: { posts: {} },
        verifyClient: ({ origin, headers }) => !origin || isPageOrigin(origin, headers.host),
      }),
    ],
  })
}
