// The release wiring of .github/workflows/release.yml, run here with the real napi CLI on a copy of
// the package: `npm run artifacts` moves each target's binary (as the workflow downloads them) into
// its npm/ package, and `npm run prepublishOnly` (what `npm publish` runs first) publishes the seven
// platform packages and adds them to the root's optionalDependencies. The npm client napi calls is
// replaced by a recorder, so nothing leaves the machine.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const rootPkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const { binaryName, targets } = rootPkg.napi

/** npm's platform suffix for a Rust target triple, as napi names the packages, and its os/cpu/libc. */
function platformOf(triple) {
  const [arch, , sys, abi] = triple.split('-')
  const cpu = { x86_64: 'x64', aarch64: 'arm64' }[arch]
  assert.ok(cpu, triple)
  if (sys === 'linux')
    return { suffix: `linux-${cpu}-${abi}`, os: 'linux', cpu, libc: abi === 'gnu' ? 'glibc' : abi }
  if (sys === 'windows') return { suffix: `win32-${cpu}-${abi}`, os: 'win32', cpu }
  assert.equal(sys, 'darwin', triple)
  return { suffix: `darwin-${cpu}`, os: 'darwin', cpu }
}

const RECORDER = `
import fs from 'node:fs'
import path from 'node:path'
const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'))
const files = Object.fromEntries(fs.readdirSync('.').filter((f) => f.endsWith('.node')).map((f) => [f, fs.readFileSync(f, 'utf8')]))
fs.appendFileSync(process.env.PUBLISH_LOG, JSON.stringify({ args: process.argv.slice(2), name: pkg.name, version: pkg.version, files }) + '\\n')
`

test('npm/ has one package per napi target, with the os, cpu and libc npm selects it by', () => {
  const dirs = fs.readdirSync(path.join(root, 'npm')).sort()
  assert.deepEqual(dirs, targets.map((t) => platformOf(t).suffix).sort())
  for (const triple of targets) {
    const p = platformOf(triple)
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'npm', p.suffix, 'package.json'), 'utf8'))
    assert.equal(pkg.name, `${rootPkg.name}-${p.suffix}`)
    assert.equal(pkg.version, rootPkg.version, `${p.suffix}: same version as the root (napi version)`)
    assert.deepEqual(pkg.os, [p.os], p.suffix)
    assert.deepEqual(pkg.cpu, [p.cpu], p.suffix)
    assert.deepEqual(pkg.libc, p.libc && [p.libc], p.suffix)
    assert.equal(pkg.main, `${binaryName}.${p.suffix}.node`)
    assert.deepEqual(pkg.files, [pkg.main])
    assert.deepEqual(pkg.engines, rootPkg.engines)
  }
})

test('artifacts → prepublishOnly publishes every platform package and adds it to optionalDependencies', {
  timeout: 60_000,
}, () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prt-release-'))
  try {
    fs.cpSync(path.join(root, 'npm'), path.join(work, 'npm'), { recursive: true })
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'), 'dir')
    fs.writeFileSync(path.join(work, 'record-publish.mjs'), RECORDER)
    const pkg = structuredClone(rootPkg)
    pkg.napi.npmClient = `node ${path.join(work, 'record-publish.mjs')}`
    fs.writeFileSync(path.join(work, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`)
    // As actions/download-artifact lays them out: one folder per build job.
    for (const triple of targets) {
      const dir = path.join(work, 'artifacts', `bindings-${triple}`)
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(
        path.join(dir, `${binaryName}.${platformOf(triple).suffix}.node`),
        `binary for ${triple}`,
      )
    }
    const log = path.join(work, 'publish.log')
    const env = { ...process.env, PUBLISH_LOG: log }
    for (const script of ['artifacts', 'prepublishOnly']) {
      execFileSync('npm', ['run', script], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] })
    }

    const published = fs
      .readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    assert.deepEqual(
      published.map((p) => p.name).sort(),
      targets.map((t) => `${rootPkg.name}-${platformOf(t).suffix}`).sort(),
    )
    for (const triple of targets) {
      const { suffix } = platformOf(triple)
      const p = published.find((x) => x.name === `${rootPkg.name}-${suffix}`)
      assert.deepEqual(p.args, ['publish'])
      assert.equal(p.version, rootPkg.version)
      assert.deepEqual(p.files, { [`${binaryName}.${suffix}.node`]: `binary for ${triple}` }, suffix)
    }
    // Each platform package at exactly this version; other optional dependencies stay as they were.
    const platforms = targets.map((t) => `${rootPkg.name}-${platformOf(t).suffix}`)
    const others = Object.entries(rootPkg.optionalDependencies ?? {}).filter(([n]) => !platforms.includes(n))
    const after = JSON.parse(fs.readFileSync(path.join(work, 'package.json'), 'utf8'))
    assert.deepEqual(after.optionalDependencies, {
      ...Object.fromEntries(others),
      ...Object.fromEntries(platforms.map((n) => [n, rootPkg.version])),
    })
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
})
