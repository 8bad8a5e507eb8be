import type React from 'react'

export const metadata = { title: 'Live posts', description: 'Payload 3 + payload-realtime-rs' }

export default function RootLayout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en">
      <body>
        <main>{children}</main>
      </body>
    </html>
  )
}
