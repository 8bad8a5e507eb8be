# Shared steps of scripts/*.sh: install what is missing, build what is stale.
step() { printf '\n=== %s ===\n' "$*"; }

# npm ci only when package-lock.json changed since the last install (or never ran).
# Optional argument: the package directory (default: the repo root).
ensure_node_modules() {
  local dir=${1:-.}
  local stamp=$dir/node_modules/.lock-stamp
  local want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    step "npm ci ($dir)"
    # npm ci refuses a lock without entries for optional platform packages the registry here
    # does not serve (e.g. @napi-rs/lzma-android-*); then install from the same lock, unsaved.
    (cd "$dir" && { npm ci --no-audit --no-fund || npm install --no-save --no-audit --no-fund; })
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
