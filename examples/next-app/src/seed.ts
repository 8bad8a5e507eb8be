// `npm run payload run src/seed.ts`: creates the demo author (and, outside production, the
// schema). The payload CLI never starts the realtime server, even while the app runs.
import config from '@payload-config'
import { getPayload } from 'payload'

const payload = await getPayload({ config })
const found = await payload.find({ collection: 'users', where: { email: { equals: 'ann@example.com' } } })
const author =
  found.docs[0] ??
  (await payload.create({
    collection: 'users',
    data: { email: 'ann@example.com', password: 'correct horse battery', name: 'Ann' },
  }))
console.log(`SEEDED author ${author.id}`)
process.exit(0)
