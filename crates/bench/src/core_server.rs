//! `realtime-bench core-server`: the Rust core alone (no Node, no addon), speaking the generator's
//! control protocol (see server.rs). It serves two purposes: the generator's own tests drive the
//! fan-out path against a real server without Node, and the `ours-core` row shows what the
//! core costs per delivery before the binding and the JS thread add theirs.
//!
//! Configuration from the environment, as for the Node servers: `PORT`, `BENCH_JWT_KEY`
//! (upgrades need a valid token when set), `BENCH_SEQ_START` / `BENCH_SEQ_STEP`, and
//! `BENCH_WORKERS` (tokio worker threads; default: the cores this process may run on).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use realtime_core::{Event, NoHooks, Operation, Server, ServerConfig};
use serde_json::{json, Value};

use crate::client::Result;
use crate::scenarios::now_us;

/// Pads each document to about 300 bytes, as the Node peers' `makeEvent` does.
const EXCERPT: &str = "Pads the document to about 300 bytes.";

/// The event document of `seq`: the Node peers' shape, `_seq` and `_ts` last.
pub fn event_doc(seq: u64, ts_us: u64) -> String {
    let at = "2026-11-30T00:00:00.000Z";
    format!(
        r#"{{"id":"{seq}","title":"Benchmark post {seq}","slug":"benchmark-post-{seq}","status":"published","author":{{"id":"7","name":"Bench Author"}},"excerpt":"{EXCERPT}","createdAt":"{at}","updatedAt":"{at}","_seq":{seq},"_ts":{ts_us}}}"#
    )
}

pub(crate) fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("bad {name}={v:?}").into()),
        Err(_) => Ok(default),
    }
}

/// One control-protocol reply line on stdout.
pub(crate) fn out(v: Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "@bench {v}");
    let _ = stdout.flush();
}

/// Runs until stdin closes.
pub fn run() -> Result<()> {
    let port = env_u64("PORT", 0)? as u16;
    let workers = env_u64("BENCH_WORKERS", 0)? as usize;
    let key = std::env::var("BENCH_JWT_KEY").unwrap_or_default();
    let config = ServerConfig {
        host: "127.0.0.1".into(),
        port,
        worker_threads: (workers > 0).then_some(workers),
        require_auth: !key.is_empty(),
        jwt_key: (!key.is_empty()).then(|| key.into_bytes()),
        // The benchmark measures throughput, not the per-socket rate limiter.
        rate_limit: None,
        max_backpressure: 1 << 20,
        heartbeat: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let server = Server::start(config, Arc::new(NoHooks))?;
    let (mut seq, step) = (env_u64("BENCH_SEQ_START", 0)?, env_u64("BENCH_SEQ_STEP", 1)?.max(1));
    let mut emitted = 0u64;
    out(json!({"ready": true}));
    for line in std::io::stdin().lock().lines() {
        let cmd: Value = serde_json::from_str(&line?)?;
        match cmd["cmd"].as_str() {
            Some("start") => out(json!({"ok": true})),
            Some("credit") => {
                for _ in 0..cmd["n"].as_u64().unwrap_or(0) {
                    let event = Event {
                        collection: "posts".into(),
                        id_json: format!("\"{seq}\""),
                        operation: Operation::Create,
                        doc_json: Bytes::from(event_doc(seq, now_us())),
                        extra_rooms: vec![],
                    };
                    server.emit_event(event)?;
                    seq += step;
                    emitted += 1;
                }
            }
            Some("stop") => out(json!({"emitted": emitted})),
            _ => return Err(format!("unknown control command {cmd}").into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_end_with_seq_and_ts_and_parse() {
        let d = event_doc(42, 1_700_000_000_000_001);
        let v: Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["_seq"], 42);
        assert!(d.ends_with(r#""_seq":42,"_ts":1700000000000001}"#), "{d}");
        assert_eq!(crate::wire::seq_ts(d.as_bytes()), Some((42, 1_700_000_000_000_001)));
        assert!((280..340).contains(&d.len()), "{}", d.len());
    }
}
