#!/usr/bin/env bash
# Runs examples/payload-basic: installs and builds what it needs, then starts Payload (REST on
# HTTP_PORT, default 3000) with the plugin's WebSocket server (WS_PORT, default 3002) and prints
# the ws URL and a login. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_node_modules
build_addon
build_ts

step "install examples/payload-basic"
(
  cd examples/payload-basic
  stamp=node_modules/.lock-stamp
  want=$(sha256sum package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    npm install --prefer-offline --no-audit --no-fund
    want=$(sha256sum package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
    echo "$want" >"$stamp"
  fi
)

step "start examples/payload-basic"
cd examples/payload-basic
exec node server.mjs
