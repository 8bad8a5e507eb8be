#!/usr/bin/env bash
# Runs every test of the project. On a fresh clone it installs and builds what it needs;
# a second run reuses node_modules and the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
locks_before=$(lock_digests)

ensure_node_modules
bash scripts/gates.sh

prepare_build
ensure_node_modules examples/payload-basic   # the example app, run by __test__/example.test.mjs
prepare_next_app                             # examples/next-app, run by __test__/next-app.test.mjs

step "Rust tests (core unit + integration)"
cargo test --workspace --locked

step "Autobahn|Testsuite against the core's echo mode"
bash scripts/autobahn.sh

step "Node tests (addon + plugin against real Payload)"
# The files, not the folder: Node 22 and later take `node --test` arguments as files or globs and
# no longer search a folder given by name, so `__test__/` only works on Node 20.
if compgen -G "__test__/*.test.*js" >/dev/null; then
  node --test --test-concurrency=1 __test__/*.test.*js
else
  echo "no Node tests yet"
fi

# Silent when it holds, so the test runner's summary stays the run's closing lines.
if [ "$(lock_digests)" != "$locks_before" ]; then
  echo "a step of this run rewrote a package-lock.json (npm install instead of npm ci?):" >&2
  git status --short -- '*package-lock.json' >&2
  exit 1
fi
