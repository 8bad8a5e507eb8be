#!/usr/bin/env bash
# The live demo (examples/live-demo): installs and builds what it needs (a second run reuses it),
# then starts Payload on SQLite with its REST API and a page on HTTP_PORT (default 3000) and the
# plugin's WebSocket server on WS_PORT (default 3002), on loopback unless HOST says otherwise.
# First start seeds a user and a few posts; it prints the page's URL and the login. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

prepare_build   # root npm packages (Payload, SQLite adapter), the addon, dist/ (plugin, client SDK)

step "start examples/live-demo"
exec node examples/live-demo/server.mjs
