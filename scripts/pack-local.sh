#!/usr/bin/env bash
# Packs what `npm publish` would ship, from this checkout, for this machine: the root package and
# the platform package of the built addon (napi's layout: the binary lives in
# payload-realtime-rs-<platform>, and the root declares every platform package as an
# optionalDependency, so npm installs only the one matching the machine). Writes fixed names:
#   <out>/payload-realtime-rs.tgz  <out>/payload-realtime-rs-<platform>.tgz   (out: .pack/)
# Install both into an app:
#   npm install ./.pack/payload-realtime-rs.tgz ./.pack/payload-realtime-rs-<platform>.tgz
#
# The optionalDependencies are written into the packed package.json only (as `napi prepublish`
# does at publish time), and name only the platform packed here: the repository's lock, and the
# lock of an app installing these tarballs, cannot refer to platform packages that are not
# published, and `npm ci` refuses a lock that lacks a declared dependency. A release packs every
# platform's binary and declares all of them (npm/*/package.json).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-.pack}" && cd "${1:-.pack}" && pwd)
addon=$(ls payload-realtime-rs.*.node 2>/dev/null | head -1 || true)
if [ -z "$addon" ]; then
  echo "no built addon (payload-realtime-rs.<platform>.node): run npm run build first" >&2
  exit 1
fi
platform=${addon#payload-realtime-rs.}
platform=${platform%.node}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# The platform package: its package.json from npm/<platform>, plus the binary.
mkdir -p "$stage/platform" "$stage/root"
cp "npm/$platform/package.json" "npm/$platform/README.md" "$addon" "$stage/platform/"

# The root package: the files `files` lists, plus the optionalDependency on the platform package.
cp -r package.json README.md index.js index.d.ts dist "$stage/root/"
node -e '
  const fs = require("node:fs")
  const p = process.argv[1] + "/package.json"
  const pkg = JSON.parse(fs.readFileSync(p, "utf8"))
  const platforms = [process.argv[2]]
  pkg.optionalDependencies = Object.fromEntries(
    platforms.map((d) => [JSON.parse(fs.readFileSync(`npm/${d}/package.json`, "utf8")).name, pkg.version]),
  )
  delete pkg.devDependencies
  delete pkg.scripts
  fs.writeFileSync(p, JSON.stringify(pkg, null, 2) + "\n")
' "$stage/root" "$platform"

pack() { # dir name
  local file
  file=$(cd "$1" && npm pack --silent --pack-destination "$out" | tail -1)
  mv -f "$out/$file" "$out/$2.tgz"
  echo "$out/$2.tgz"
}
pack "$stage/platform" "payload-realtime-rs-$platform"
pack "$stage/root" payload-realtime-rs
