//! Finding 11: with a small descriptor limit, idle TCP connections (no request sent) used to
//! lock out upgrades until their 10 s header timeout: accept failed with EMFILE and the loop
//! only slept. Now the oldest idle HTTP connection is dropped to make room. The server runs as
//! a separate process (the echo example) under `prlimit --nofile`, so the test's own clients do
//! not share its limit. (A plain `cargo test` builds the example; with `--test fd_limit` alone,
//! build it first: `cargo build -p realtime-core --example echo`.)
mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn idle_connections_cannot_lock_out_upgrades_when_out_of_descriptors() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "prlimit is needed in CI");
        eprintln!("!!! SKIPPED: prlimit not found !!!");
        return;
    }
    // 64 descriptors: the runtime, the listener and a few dozen connections.
    let mut child = Command::new("prlimit")
        .args(["--nofile=64:64", "--"])
        .arg(example_binary("echo"))
        .arg("127.0.0.1:0")
        .env("WORKERS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the echo example under prlimit");
    let stdout = child.stdout.take().unwrap();
    let server = Killed(child);
    let port: u16 = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        line.trim().rsplit(':').next().unwrap().parse().unwrap()
    })
    .await
    .unwrap();

    // More idle connections than the server has descriptors.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let mut c = tokio::time::timeout(Duration::from_secs(5), Client::connect(port))
        .await
        .expect("the upgrade is served well before the 10 s header timeout frees anything");
    c.send_text("hello").await;
    let f = c.recv().await.expect("echo");
    assert_eq!(f.payload, b"hello");
    // Bound: far below the 10 s header timeout the old loop waited for.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(server);
}
