#!/usr/bin/env bash
# The fast gates: formatting, lints and types. scripts/test.sh runs them first and stops at the
# first failure; run alone with `npm run gates` (needs node_modules: `npm ci`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "gate: cargo fmt --check"
cargo fmt --all --check

step "gate: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "gate: tsc --noEmit (strict) over every TypeScript project"
for project in $(typescript_projects); do
  echo "tsc -p $project"
  npx tsc -p "$project" --noEmit
done

step "gate: biome ci (lint + format of JS/TS/JSON)"
npx biome ci --error-on-warnings .
