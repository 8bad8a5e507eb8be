//! Smoke tests of the generator against real servers over loopback, all from this crate's binary
//! (no Node, no peers): `echo` against the bare fastwebsockets echo server (the per-message
//! read path), and `fanout`, `idle` and `churn` against `core-server`, the Rust core with the
//! control protocol (the batched fan-out read path, the handshake with a JWT, the closing
//! handshake), and `fanout` against `floor-server`. The read paths also run with reads capped to a few bytes (`BENCH_READ_LIMIT`), so
//! frames arrive split at every offset. Each run is well under a few seconds of load.

use std::process::Command;

use serde_json::Value;

/// Runs `realtime-bench run <args> -- <server>` (both split on spaces; `{bin}` is this crate's
/// binary) with the generator's reads capped at `read_limit` bytes, and returns its JSON line.
fn run(args: &str, server: &str, read_limit: Option<usize>) -> Value {
    let bin = env!("CARGO_BIN_EXE_realtime-bench");
    let mut cmd = Command::new(bin);
    if let Some(n) = read_limit {
        cmd.env("BENCH_READ_LIMIT", n.to_string());
    }
    let out = cmd
        .arg("run")
        .args(args.split_whitespace())
        .arg("--")
        .args(server.split_whitespace().map(|a| if a == "{bin}" { bin } else { a }))
        .output()
        .expect("run realtime-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

const CORE: &str = "{bin} core-server";

fn echo_checks(read_limit: Option<usize>) {
    let v = run(
        "--scenario echo --server fws --clients 4 --depth 4 --duration 0.3 --warmup 0.1 --no-control",
        "{bin} echo-server 127.0.0.1:{port}",
        read_limit,
    );
    assert_eq!(v["scenario"], "echo");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["message_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v.get("server_cpu_us_per_message").is_some());
    assert!(v["gen_saturated"].is_boolean());
}

#[test]
fn echo_run_against_the_reference_server_prints_one_json_line() {
    echo_checks(None);
}

/// Reads of 13 bytes: every echoed frame arrives in pieces.
#[test]
fn echo_with_frames_split_across_reads() {
    echo_checks(Some(13));
}

fn fanout_checks(read_limit: Option<usize>) {
    fanout_checks_against(CORE, read_limit);
}

fn fanout_checks_against(server: &str, read_limit: Option<usize>) {
    let v =
        run("--scenario fanout --server core --clients 64 --duration 0.5 --warmup 0.2", server, read_limit);
    assert_eq!(v["recipients_per_event"], 64, "{v}");
    assert!(v["events_emitted"].as_u64().unwrap() > 0, "{v}");
    assert!(v["delivery_per_s"].as_f64().unwrap() > 0.0, "{v}");
    // Every emitted event reached all 64 subscribers, each exactly once, well-formed.
    for k in ["lost", "malformed", "leaked", "duplicates", "dropped_connections"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    assert!(v["latency_p50_us"].as_u64().unwrap() > 0, "{v}");
    assert!(v["gen_cpu_us_per_delivery"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_cpu_us_per_delivery"].as_f64().is_some(), "{v}");
}

#[test]
fn fanout_against_the_core_counts_every_delivery_once() {
    fanout_checks(None);
}

/// Reads of 97 bytes: every event frame (~400 bytes) arrives in pieces, split at every offset
/// over the run, so the batch parser's carry-over of a partial frame is exercised.
#[test]
fn fanout_with_frames_split_across_reads() {
    fanout_checks(Some(97));
}

/// The floor server (one send per subscriber per batch) delivers what the generator counts, at
/// max rate and at a fixed rate, so its CPU per delivery is a yardstick and not a shortcut.
#[test]
fn fanout_against_the_floor_counts_every_delivery_once() {
    fanout_checks_against("{bin} floor-server", None);
    let v = run(
        "--scenario fanout --server floor --clients 64 --rate 200 --duration 0.5 --warmup 0.2",
        "{bin} floor-server",
        None,
    );
    assert!(v["events_emitted"].as_u64().unwrap() >= 50, "{v}");
    // Latency counts from each event's credit: at 200 events/s to 64 readers, well under 1 s.
    let p99 = v["latency_p99_us"].as_u64().unwrap();
    assert!((1..1_000_000).contains(&p99), "{v}");
    for k in ["lost", "malformed", "duplicates", "dropped_connections"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
}

/// Subscribers speaking Socket.IO (Engine.IO open, namespace connect, `42[…]` unwrapping) to
/// the core's Socket.IO endpoint, with reads of 61 bytes.
#[test]
fn fanout_over_socket_io() {
    let v = run(
        "--scenario fanout --server core --clients 32 --duration 0.5 --warmup 0.2 --socket-io",
        CORE,
        Some(61),
    );
    assert!(v["events_emitted"].as_u64().unwrap() > 0, "{v}");
    for k in ["lost", "malformed", "duplicates", "dropped_connections"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
}

#[test]
fn idle_and_churn_against_the_core() {
    let v = run("--scenario idle --server core --clients 50 --warmup 0.1", CORE, None);
    assert_eq!(v["connections"], 50, "{v}");
    let v = run("--scenario churn --server core --cycles 60 --first-cycles 20", CORE, None);
    assert_eq!(v["cycles"], 60, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
}
