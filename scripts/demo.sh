#!/usr/bin/env bash
# Runs examples/payload-basic: installs and builds what it needs, then starts Payload (REST on
# HTTP_PORT, default 3000) with the plugin's WebSocket server (WS_PORT, default 3002) and prints
# the ws URL and a login. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

prepare_build

ensure_node_modules examples/payload-basic

step "start examples/payload-basic"
cd examples/payload-basic
exec node server.mjs
