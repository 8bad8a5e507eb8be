import type { CollectionConfig } from 'payload'

export const Posts: CollectionConfig = {
  slug: 'posts',
  // Demo only: anyone may read and write posts, so the test (and you) can use REST without login.
  access: { read: () => true, create: () => true, update: () => true, delete: () => true },
  fields: [
    { name: 'title', type: 'text', required: true },
    { name: 'author', type: 'relationship', relationTo: 'users' },
  ],
}
