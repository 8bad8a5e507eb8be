#!/usr/bin/env bash
# Benchmarks against the peers, in one run: every scenario for every server, in alternating
# order, REPS repetitions; the server pinned to core 0 and the generator to core 1, plus a set
# with our server on both cores. Raw lines go to bench-results/<stamp>.jsonl, medians and
# ratios against uWebSockets.js to BENCHMARKS.md.
#
#   npm run bench               # full: 3 repetitions, < 25 min on 2 cores
#   npm run bench -- --quick    # 1 repetition, small sizes, < 3 min
#   BENCH_REPS=5 BENCH_ONLY="fanout idle" npm run bench
#   npm run bench -- --server-cpus 0-7 --gen-cpus 8   # adds the `wide` set (a bigger machine):
#                               # ours and uWS on the listed cores, the generator on its own
#
# Loopback only; every server is a child of the generator, killed by it when its run ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

quick=0 wide_server="" wide_gen=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --server-cpus) wide_server=${2:?--server-cpus needs a cpu list}; shift ;;
    --gen-cpus) wide_gen=${2:?--gen-cpus needs a cpu list}; shift ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$wide_server" ] && [ -z "$wide_gen" ]; then
  echo "bench: --server-cpus needs --gen-cpus (the generator's own cores)" >&2
  exit 2
fi
reps=${BENCH_REPS:-$([ $quick = 1 ] && echo 1 || echo 3)}
only=${BENCH_ONLY:-}
out=${BENCH_OUT:-BENCHMARKS.md}
if [ "$(nproc)" -lt 2 ]; then echo "bench: needs 2 cores (server on one, generator on the other)" >&2; exit 1; fi

step "build the generator and the core's echo example (release)"
cargo build --release --locked -p realtime-bench
cargo build --release --locked -p realtime-core --example echo
gen=target/release/realtime-bench

step "install the peers (crates/bench/peers, pinned by its package-lock.json)"
(cd crates/bench/peers && ensure_node_modules)

have_ours=0
ensure_node_modules
build_addon
build_ts
if node --input-type=module -e "const m = await import('./dist/plugin/index.js'); process.exit(typeof m.initUWebSocket === 'function' ? 0 : 1)" 2>/dev/null; then
  have_ours=1
else
  echo "!!! dist/plugin has no initUWebSocket: our Node server is left out (echo still runs) !!!"
fi

# Scenario table: name, generator arguments. fanout-rate is the generator's fanout at a fixed
# event rate (equal work per second for every server: the headline's CPU per delivery).
if [ $quick = 1 ]; then
  scenarios=(
    "fanout-rate|--clients 1000 --rate 100 --duration 1 --warmup 0.5"
    "fanout|--clients 1000 --duration 1 --warmup 0.5"
    "fanout-authorized|--clients 1000 --duration 1 --warmup 0.5"
    "fanout-access|--clients 1000 --duration 1 --warmup 0.5"
    "fanout-redis|--clients 1000 --duration 1 --warmup 0.5"
    "handler|--clients 100 --depth 16 --duration 1 --warmup 0.5"
    "echo|--clients 50 --depth 16 --duration 1 --warmup 0.5"
    "idle|--clients 2000"
    "churn|--cycles 5000 --first-cycles 500 --concurrency 32"
  )
else
  scenarios=(
    "fanout-rate|--clients 1000 --rate 100 --duration 4 --warmup 1"
    "fanout-rate|--clients 10000 --rate 100 --duration 4 --warmup 1"
    "fanout|--clients 1000 --duration 3 --warmup 1"
    "fanout|--clients 10000 --duration 3 --warmup 1"
    "fanout-authorized|--clients 1000 --duration 3 --warmup 1"
    "fanout-authorized|--clients 10000 --duration 3 --warmup 1"
    "fanout-access|--clients 1000 --duration 3 --warmup 1"
    "fanout-access|--clients 10000 --duration 3 --warmup 1"
    "fanout-redis|--clients 1000 --duration 3 --warmup 1"
    "fanout-redis|--clients 10000 --duration 3 --warmup 1"
    "handler|--clients 100 --depth 16 --duration 3 --warmup 1"
    "handler|--clients 1000 --depth 1 --duration 3 --warmup 1"
    "echo|--clients 100 --depth 16 --duration 3 --warmup 1"
    "idle|--clients 10000"
    "idle|--clients 19000"
    "churn|--cycles 20000 --first-cycles 5000 --concurrency 32"
  )
fi

# server:set → generator arguments after the scenario's (`--` then the server command).
# ours-socketio is our server with Socket.IO-protocol subscribers (fan-out scenarios only).
# fanout-redis is the generator's fanout with K instances of ours sharing a spawned redis-server
# (`ours-redisK`); its single-instance baseline is the plain fanout run of ours.
server_args() {
  local server=$1 set=$2 scenario=$3
  local cpus
  case "$set" in
    pinned) cpus="--server-cpus 0 --gen-cpus 1" ;;
    both)
      # Quick mode: the 2-core set only where the targets read it.
      if [ $quick = 1 ]; then case "$scenario" in fanout | fanout-rate | handler) ;; *) return 1 ;; esac; fi
      cpus="--server-cpus 0,1 --gen-cpus 1" ;;
    # 1 vs 2 workers: our server on both cores with one tokio worker (fan-out only).
    both-w1)
      [ "$server:$scenario" = ours:fanout ] || return 1
      cpus="--server-cpus 0,1 --gen-cpus 1 --server-workers 1" ;;
    # A bigger machine (--server-cpus/--gen-cpus): ours and uWS, fan-out and handler.
    wide)
      [ -n "$wide_server" ] || return 1
      case "$server:$scenario" in ours:fanout | ours:fanout-rate | ours:handler | uws:fanout | uws:fanout-rate | uws:handler) ;; *) return 1 ;; esac
      cpus="--server-cpus $wide_server --gen-cpus $wide_gen" ;;
  esac
  case "$server:$scenario" in
    ours-redis?:fanout-redis)
      [ $have_ours = 1 ] && [ $have_redis = 1 ] || return 1
      echo "$cpus --redis --instances ${server#ours-redis} -- node crates/bench/peers/ours.js" ;;
    ours-redis?:* | *:fanout-redis) return 1 ;;
    # Socket.IO subscribers of ours: at a fixed rate too (equal work per write: issue 14's row).
    ours-socketio:fanout | ours-socketio:fanout-rate | ours-socketio:fanout-authorized)
      [ $have_ours = 1 ] || return 1
      echo "$cpus --socket-io -- node crates/bench/peers/ours.js"
      return ;;
    ours-socketio:*) return 1 ;;
    # The floor: one send per subscriber per batch and nothing else (floor_server.rs), fan-out only.
    floor:fanout | floor:fanout-rate)
      echo "$cpus -- $gen floor-server"
      return ;;
    floor:*) return 1 ;;
    # At a fixed rate: ours (both sets), the core alone, uWS (and ours-socketio above).
    ours:fanout-rate | ours-core:fanout-rate | uws:fanout-rate) ;;
    *:fanout-rate) return 1 ;;
    ours-core:fanout) ;;
    ours-core:*) return 1 ;;
    # Kept to the rows the targets and comparisons use, for a full run within 25 minutes on 2 cores.
    ws:fanout-authorized | socketio:fanout-authorized | ws:echo | socketio:echo) return 1 ;;
    ours:fanout-access) ;;
    *:fanout-access) return 1 ;; # the plugin's read check exists in ours only
    ours:echo)
      echo "$cpus --no-control -- target/release/examples/echo 127.0.0.1:{port}"
      return ;;
    fws:echo)
      echo "$cpus --no-control -- $gen echo-server 127.0.0.1:{port}"
      return ;;
    fws:*) return 1 ;;
    socketio:*)
      echo "$cpus --socket-io -- node crates/bench/peers/socketio.js"
      return ;;
  esac
  case "$server" in
    ours-core) echo "$cpus -- $gen core-server" ;;
    ours) [ $have_ours = 1 ] || return 1; echo "$cpus -- node crates/bench/peers/ours.js" ;;
    *) echo "$cpus -- node crates/bench/peers/$server.js" ;;
  esac
}

have_redis=1
if ! command -v redis-server >/dev/null; then
  have_redis=0
  echo "!!! redis-server not on PATH: the fanout-redis scenario is left out !!!"
fi

servers=(ours:pinned ours-core:pinned floor:pinned ours-socketio:pinned uws:pinned ws:pinned socketio:pinned fws:pinned
  ours:both ours:both-w1 ours:wide uws:wide ours-redis1:pinned ours-redis2:pinned)
mkdir -p bench-results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=bench-results/$stamp.jsonl
meta=bench-results/$stamp.meta.json
command="npm run bench" mode=full
if [ $quick = 1 ]; then command="npm run bench -- --quick" mode=quick; fi

node -e '
  const [cmd, mode, reps, stamp] = process.argv.slice(1)
  const os = require("os"), cp = require("child_process")
  const sh = (c) => { try { return cp.execSync(c, { encoding: "utf8" }).trim() } catch { return "?" } }
  const v = (p) => require("./crates/bench/peers/node_modules/" + p + "/package.json").version
  console.log(JSON.stringify({
    date: new Date().toISOString(), stamp, command: cmd, mode, reps: Number(reps),
    machine: `${os.cpus()[0].model}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}`,
    loadavg_at_start: os.loadavg()[0],
    versions: {
      "payload-realtime-rs": sh("git describe --always --dirty"), node: process.version,
      rustc: sh("rustc --version"), "uwebsockets (npm)": v("uwebsockets"), ws: v("ws"),
      bufferutil: v("bufferutil"), "socket.io": v("socket.io"), fastwebsockets: "0.10",
      "redis-server": (sh("redis-server --version").match(/v=(\S+)/) || [, "?"])[1],
    },
  }))' "$command" "$([ $quick = 1 ] && echo quick || echo full)" "$reps" "$stamp" >"$meta"

runs=0 failed=0
t0=$(date +%s)
for rep in $(seq "$reps"); do
  for i in "${!scenarios[@]}"; do
    entry=${scenarios[$i]}
    scenario=${entry%%|*}
    gargs=${entry#*|}
    if [ -n "$only" ] && [[ " $only " != *" $scenario "* ]]; then continue; fi
    # Alternate the order: rotate the server list by repetition and scenario.
    n=${#servers[@]}
    for k in $(seq 0 $((n - 1))); do
      pair=${servers[$(((k + rep + i) % n))]}
      server=${pair%%:*} set=${pair#*:}
      sargs=$(server_args "$server" "$set" "$scenario") || continue
      printf '[%4ss] rep %s  %-18s %-28s %-11s %s\n' $(($(date +%s) - t0)) "$rep" "$scenario" "$gargs" "$server" "$set"
      runs=$((runs + 1))
      gscenario=$scenario gserver=$server
      [ "$scenario" = fanout-redis ] && gscenario=fanout gserver=ours
      [ "$scenario" = fanout-rate ] && gscenario=fanout
      # shellcheck disable=SC2086
      if ! timeout 600 "$gen" run --scenario "$gscenario" --server "$gserver" --set "$set" --rep "$rep" \
        $gargs $sargs >>"$results"; then
        failed=$((failed + 1))
        tail -n1 "$results" | cut -c1-300
      fi
      sleep "$([ $quick = 1 ] && echo 0.2 || echo 0.5)"
    done
  done
done

step "report ($runs runs, $failed failed, $(($(date +%s) - t0)) s)"
"$gen" report --meta "$meta" --out "$out" "$results"
echo "wrote $out from $results"
