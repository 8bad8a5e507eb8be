# Shared steps of scripts/*.sh: install what is missing, build what is stale.
step() { printf '\n=== %s ===\n' "$*"; }

# Install only when package-lock.json changed since the last install (or never ran).
# `npm install` rather than `npm ci`: npm 11 leaves the optional per-platform packages of
# @napi-rs/cli's lzma dependency out of the lock, which `npm ci` then rejects; with a lock
# present `npm install` installs exactly the locked versions.
# Optional argument: the package directory (default: the repo root).
ensure_node_modules() {
  local dir=${1:-.}
  local stamp=$dir/node_modules/.lock-stamp
  local want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    step "npm install in $dir (locked versions)"
    (cd "$dir" && npm install --no-audit --no-fund)
    echo "$want" >"$stamp"
  fi
}

# napi build is incremental through cargo; it regenerates index.js / index.d.ts.
build_addon() {
  step "build the native addon (release)"
  npx napi build --platform --release
}

build_ts() {
  if [ -f tsconfig.json ]; then
    step "compile TypeScript"
    npx tsc -p tsconfig.json
    cp ts/package.json dist/package.json
  fi
}

# What every entry script needs first: root npm deps, the addon, the compiled TypeScript.
prepare_build() {
  ensure_node_modules
  build_addon
  build_ts
}

# Every strict TypeScript project the gates type-check: the package sources, the typing test, and
# each example that has a tsconfig.json of its own.
typescript_projects() {
  echo tsconfig.json
  echo __test__/types/tsconfig.json
  local f
  for f in examples/*/tsconfig.json; do
    [ -f "$f" ] && echo "$f"
  done
}
