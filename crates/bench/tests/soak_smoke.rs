//! A short run of the soak (the 10-minute one is not for CI: see BENCHMARKS.md): two instances on
//! a spawned redis-server, fixed-rate events with a slow authorize, client churn, one Redis
//! restart. Checks that nothing errs, nothing panics and local delivery misses nothing.

use std::process::Command;

#[test]
fn a_short_soak_runs_clean() {
    if Command::new("redis-server").arg("--version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "redis-server is needed in CI");
        eprintln!("!!! SKIPPED soak smoke: redis-server not found !!!");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_realtime-bench");
    let out = Command::new(bin).args(["soak", "--duration", "6"]).output().expect("run realtime-bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("one JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(v["emitted"].as_u64().unwrap() > 100, "{v}");
    assert_eq!(v["emit_errors"], 0, "{v}");
    assert_eq!(v["session_errors"], 0, "{v}");
    assert!(v["sessions"].as_u64().unwrap() > 50, "{v}");
    assert_eq!((&v["a"]["panics"], &v["b"]["panics"]), (&0.into(), &0.into()), "{v}");
    for w in v["witnesses"].as_array().unwrap() {
        assert_eq!(w["failed"], false, "{v}");
        if w["instance"] == "a" {
            assert_eq!(w["missing"], 0, "local delivery loses nothing: {v}");
        }
    }
}
