#!/usr/bin/env bash
# Autobahn|Testsuite (cases 1-10) against the core's native echo mode.
set -euo pipefail
cd "$(dirname "$0")/.."
runner=../shared/tools/autobahn/run_autobahn.sh
if [ ! -f "$runner" ]; then
  if [ "${CI:-}" = "true" ]; then echo "autobahn: $runner missing" >&2; exit 1; fi
  echo "!!! SKIPPED autobahn: $runner not found (needs ../shared beside the clone) !!!"; exit 0
fi
cargo build --release --locked -p realtime-core --example echo
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
./target/release/examples/echo "127.0.0.1:$port" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
out=$(bash "$runner" "ws://127.0.0.1:$port/")
echo "$out"
# Every closing handshake must be clean: the runner appends ", close: …" otherwise.
case "$out" in
  *", close:"*) echo "autobahn: unclean closing handshake" >&2; exit 1 ;;
esac
