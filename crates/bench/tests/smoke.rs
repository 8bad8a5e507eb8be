//! Smoke test of the generator: a short `echo` run against the bare fastwebsockets echo server
//! (both from this crate's binary; no Node, no peers). Loopback, well under a second of load.

use std::process::Command;

#[test]
fn echo_run_against_the_reference_server_prints_one_json_line() {
    let bin = env!("CARGO_BIN_EXE_realtime-bench");
    let out = Command::new(bin)
        .args(["run", "--scenario", "echo", "--server", "fws", "--clients", "4", "--depth", "4"])
        .args(["--duration", "0.3", "--warmup", "0.1", "--no-control", "--"])
        .args([bin, "echo-server", "127.0.0.1:{port}"])
        .output()
        .expect("run realtime-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["scenario"], "echo");
    assert_eq!(v["errors"], 0);
    assert!(v["message_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v.get("server_cpu_us_per_message").is_some());
    assert!(v["gen_saturated"].is_boolean());
}
