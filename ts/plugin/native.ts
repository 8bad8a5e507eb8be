// Loads the napi addon (the CommonJS loader `index.js` that `napi build` generates, which picks
// the binary of this platform) without letting a bundler see it.
//
// Next.js bundles this package (so the client SDK and React hooks share the app's React); a
// bundler must not follow the addon: Turbopack cannot place a `.node` file in a chunk, and
// webpack would bake this file's absolute build path into `createRequire(import.meta.url)`. So
// the addon is imported by package name (`payload-realtime-rs/native`) through an import both
// bundlers leave to Node at run time (resolved from wherever the code then lives);
// `withRealtime()` makes Next's standalone output trace the files it needs.

type Native = typeof import('../../index.js')

/** The platform's name in napi's package layout (`linux-x64-gnu`, `darwin-arm64`, …). */
export function platformName(): string {
  const { platform, arch } = process
  if (platform === 'linux') {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)
      ?.header
    return `linux-${arch}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** Our own error when the binary is missing: which platform, which package, what to do. */
export function missingBinaryError(cause: unknown): Error {
  const platform = platformName()
  const pkg = `payload-realtime-rs-${platform}`
  const err = new Error(
    `payload-realtime-rs: no native binary for this platform (${platform}). It ships in the package ` +
      `${pkg}, an optional dependency of payload-realtime-rs that was not installed. To fix: ` +
      `reinstall without --omit=optional/--no-optional; if the lockfile was made on another platform, ` +
      `run \`npm install ${pkg}\` (or delete node_modules and the lockfile and install again); ` +
      'in Docker use a glibc base image (node:22-slim) or install the -musl package on Alpine; ' +
      'in Next.js standalone output wrap next.config with withRealtime() so the binary is traced. ' +
      'Platforms: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl, darwin-x64, darwin-arm64, win32-x64-msvc.',
    { cause },
  )
  return Object.assign(err, { code: 'ENATIVE', platform, package: pkg })
}

// By package name first (how an app, bundled or not, finds it in node_modules), then relative to
// this file (inside this repository, where dist/package.json scopes dist/ and hides the name).
const CANDIDATES = ['payload-realtime-rs/native', '../../index.js']

async function load(): Promise<Native> {
  const errors: unknown[] = []
  for (const specifier of CANDIDATES) {
    try {
      const mod = (await import(/* webpackIgnore: true */ /* turbopackIgnore: true */ specifier)) as {
        default?: Native
      } & Native
      return (mod.default ?? mod) as Native
    } catch (err) {
      errors.push(err)
    }
  }
  // The loader's own error (binary missing) says more than "package not found" for the other path.
  const notFound = (e: unknown) => (e as { code?: string })?.code === 'ERR_MODULE_NOT_FOUND'
  throw missingBinaryError(errors.find((e) => !notFound(e)) ?? errors[0])
}

/** The addon's exports (`NativeServer`, …). */
export const native: Native = await load()
