# Shared steps of scripts/*.sh: install what is missing, build what is stale.
step() { printf '\n=== %s ===\n' "$*"; }

# Install only when package-lock.json changed since the last install (or never ran).
# `npm ci`: exactly the locked versions, and it never writes the lock (it fails instead when
# package.json and the lock disagree; `npm install` would silently rewrite the lock). The stamp
# lives inside node_modules, which `npm ci` recreates, so a fresh install always writes it anew.
# Optional argument: the package directory (default: the repo root).
ensure_node_modules() {
  local dir=${1:-.}
  local stamp=$dir/node_modules/.lock-stamp
  local want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    step "npm ci in $dir (locked versions)"
    (cd "$dir" && npm ci --no-audit --no-fund)
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

# examples/next-app consumes the package as `npm run pack:local` tarballs (vendor/), the way an
# app installs it: packs them, then installs the example's locked dependencies when its lock
# changed (npm ci) or refreshes only the two tarballs (they change with every build).
prepare_next_app() {
  local dir=examples/next-app
  step "pack the package into $dir/vendor and install $dir"
  bash scripts/pack-local.sh "$dir/vendor" >/dev/null
  local stamp=$dir/node_modules/.lock-stamp want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
    echo "$want" >"$stamp"
  else
    (cd "$dir" && npm install --no-save --no-audit --no-fund ./vendor/payload-realtime-rs*.tgz)
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
    [ -f "$f" ] || continue
    # An example with dependencies of its own (examples/next-app: Next.js) is type-checked once
    # they are installed; its test's `next build` type-checks it too.
    if [ -f "$(dirname "$f")/package.json" ] && [ ! -d "$(dirname "$f")/node_modules" ]; then
      echo "note: $(dirname "$f") has no node_modules yet; not type-checked here" >&2
      continue
    fi
    echo "$f"
  done
}

# Digests of every tracked package-lock.json: scripts/test.sh compares them before and after the
# run, so a step that rewrites a lock (an `npm install` somewhere) fails the run.
lock_digests() {
  git ls-files -z -- '*package-lock.json' | xargs -0 -r sha256sum
}
