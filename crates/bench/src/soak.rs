//! `realtime-bench soak --duration S`: two core instances in this process sharing a spawned
//! `redis-server`, at a fixed rate: events emitted on A (100/s to `collection:posts`, 10/s to
//! `collection:slow`, whose authorize hook takes 200 ms), client churn on both (20 sessions/s:
//! connect, join both collections, one handler request, read for a second, leave, close), and
//! one Redis restart at half time. Long-lived witnesses on each instance count the posts events
//! they get. Prints one JSON line: emitted, per-witness received/missing, the instances'
//! backplane counters, churn sessions and errors, and RSS (after warm-up against the last tenth;
//! see `rss_rule`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use realtime_core::{
    AppHooks, BoxFuture, Event, EventInfo, HandlerOutcome, Operation, RedisConfig, Server, ServerConfig,
    ServerHandle, SocketRef, UserList,
};
use serde_json::json;

use crate::client::{connect, Result, Target};

/// Authorize on `slow` takes this long (a slow app hook).
const SLOW_AUTHORIZE: Duration = Duration::from_millis(200);

struct SoakHooks;

impl AppHooks for SoakHooks {
    fn has_handler(&self, kind: &str) -> bool {
        kind == "work"
    }
    fn on_message(&self, _socket: SocketRef, _kind: &str, _text: Bytes) -> BoxFuture<HandlerOutcome> {
        Box::pin(async { HandlerOutcome::Reply(Some(Bytes::from_static(b"\"done\""))) })
    }
    fn authorizes(&self, collection: &str) -> bool {
        collection == "slow"
    }
    fn authorize(&self, _event: &EventInfo, users: Arc<UserList>) -> BoxFuture<realtime_core::Verdicts> {
        let n = users.users.len();
        Box::pin(async move {
            tokio::time::sleep(SLOW_AUTHORIZE).await;
            vec![true; n].into()
        })
    }
}

fn spawn_redis(port: u16) -> Result<Child> {
    Ok(Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn rss() -> u64 {
    crate::server::proc_rss(std::process::id()).unwrap_or(0)
}

fn instance(redis_port: u16, id: &str) -> Result<ServerHandle> {
    let config = ServerConfig {
        host: "127.0.0.1".into(),
        instance_id: Some(id.into()),
        worker_threads: Some(2),
        redis: Some(RedisConfig::new(format!("redis://127.0.0.1:{redis_port}"))),
        ..ServerConfig::default()
    };
    Ok(Server::start(config, Arc::new(SoakHooks))?)
}

/// A subscriber for the whole run: counts the posts events it gets.
async fn witness(addr: SocketAddr, got: Arc<AtomicU64>, stop: Arc<tokio::sync::Notify>) -> Result<()> {
    let mut c = connect(&Target::new(addr, false), None).await?;
    c.wait_type(b"welcome").await?;
    c.send(br#"{"type":"join-collection","collection":"posts"}"#).await?;
    c.wait_type(b"joined").await?;
    loop {
        tokio::select! {
            _ = stop.notified() => return Ok(()),
            m = c.recv() => match m? {
                Some(m) if crate::wire::is_type(m.json(), b"update") => { got.fetch_add(1, Relaxed); }
                Some(_) => {}
                None => return Err("witness closed".into()),
            }
        }
    }
}

/// One churn session; errors are counted by the caller.
async fn session(addr: SocketAddr) -> Result<()> {
    let mut c = connect(&Target::new(addr, false), None).await?;
    c.wait_type(b"welcome").await?;
    for slug in ["posts", "slow"] {
        c.send(format!(r#"{{"type":"join-collection","collection":"{slug}"}}"#).as_bytes()).await?;
        c.wait_type(b"joined").await?;
    }
    c.send(br#"{"type":"work","id":"w"}"#).await?;
    tokio::time::timeout(Duration::from_secs(5), c.wait_type(b"reply")).await.map_err(|_| "no reply")??;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::timeout_at(until, c.recv()).await.is_ok_and(|m| matches!(m, Ok(Some(_)))) {}
    c.send(br#"{"type":"leave-collection","collection":"posts"}"#).await?;
    c.close().await;
    Ok(())
}

pub fn run(duration_s: f64) -> Result<()> {
    // The generator's client futures are not Send: one thread, a LocalSet (the servers run on
    // their own runtimes).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(tokio::task::LocalSet::new().run_until(soak(Duration::from_secs_f64(duration_s))))
}

async fn soak(duration: Duration) -> Result<()> {
    let redis_port = crate::server::free_port()?;
    let mut redis = spawn_redis(redis_port)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = instance(redis_port, "soak-a")?;
    let b = instance(redis_port, "soak-b")?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut witnesses = Vec::new();
    for (name, server) in [("a", &a), ("b", &b), ("a", &a), ("b", &b)] {
        let got = Arc::new(AtomicU64::new(0));
        let task = tokio::task::spawn_local(witness(server.local_addr(), got.clone(), stop.clone()));
        witnesses.push((name, got, task));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let (emitted, emit_errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (sessions, session_errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let emitter = {
        let (a, emitted, errors) = (a.clone(), emitted.clone(), emit_errors.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while started.elapsed() < duration {
                tick.tick().await;
                n += 1;
                let ev = |slug: &str| Event {
                    collection: slug.into(),
                    id_json: n.to_string(),
                    operation: Operation::Update,
                    doc_json: Bytes::from(json!({"n": n}).to_string()),
                    extra_rooms: vec![],
                };
                match a.emit_event(ev("posts")) {
                    Ok(_) => {
                        emitted.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Relaxed);
                    }
                }
                if n.is_multiple_of(10) && a.emit_event(ev("slow")).is_err() {
                    errors.fetch_add(1, Relaxed);
                }
            }
        })
    };
    let churn = {
        let (addrs, sessions, errors) =
            ([a.local_addr(), b.local_addr()], sessions.clone(), session_errors.clone());
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut i = 0usize;
            while started.elapsed() < duration {
                tick.tick().await;
                i += 1;
                let (addr, sessions, errors) = (addrs[i % 2], sessions.clone(), errors.clone());
                tokio::task::spawn_local(async move {
                    sessions.fetch_add(1, Relaxed);
                    if session(addr).await.is_err() {
                        errors.fetch_add(1, Relaxed);
                    }
                });
            }
        })
    };

    // RSS every 500 ms, and the Redis restart at half time. The rule (see `rss_rule`): the
    // first fifth of the run is warm-up; the baseline is the mean over the next tenth, the end
    // the mean over the last tenth, both under the same load.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut restarted = false;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push((started.elapsed().as_secs_f64(), rss()));
        if !restarted && started.elapsed() >= duration / 2 {
            restarted = true;
            let _ = redis.kill();
            let _ = redis.wait();
            tokio::time::sleep(Duration::from_secs(1)).await;
            redis = spawn_redis(redis_port)?;
        }
    }
    let _ = emitter.await;
    let _ = churn.await;
    // In-flight sessions end within ~1 s; deliveries drain.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_end = rss();
    stop.notify_waiters();
    let emitted = emitted.load(Relaxed);
    let mut report = Vec::new();
    for (name, got, task) in witnesses {
        let got = got.load(Relaxed);
        let ended = task.is_finished();
        report.push(json!({"instance": name, "received": got, "missing": emitted.saturating_sub(got), "failed": ended}));
    }
    let (sa, sb) = (a.stats(), b.stats());
    let line = json!({
        "scenario": "soak",
        "duration_s": duration.as_secs_f64(),
        "emitted": emitted,
        "emit_errors": emit_errors.load(Relaxed),
        "witnesses": report,
        "a": {"published": sa.backplane.published, "dropped": sa.backplane.dropped, "panics": sa.panics, "slow_consumer_closes": sa.slow_consumer_closes, "handler_timeouts": sa.handler_timeouts},
        "b": {"received": sb.backplane.received, "dropped": sb.backplane.dropped, "lost": sb.backplane.lost, "unconfirmed": sb.backplane.unconfirmed, "invalid": sb.backplane.invalid, "reconnects": sb.backplane.reconnects, "panics": sb.panics},
        "sessions": sessions.load(Relaxed),
        "session_errors": session_errors.load(Relaxed),
        "rss": rss_rule(&samples, duration.as_secs_f64(), rss_end),
    });
    println!("{line}");
    a.close().await;
    b.close().await;
    let _ = redis.kill();
    let _ = redis.wait();
    Ok(())
}

const MB: f64 = 1024.0 * 1024.0;

/// The RSS figures of a run from its samples (seconds since start, bytes). Growth compares the
/// mean after warm-up (20 % to 30 % of the run) with the mean over the last tenth: both under
/// the same load, and means so that one sample taken amid a burst of sessions does not decide.
/// The first fifth is warm-up: the allocator's arenas and caches, the runtimes' worker buffers
/// and the room tables reach their working size there. `after_mb` is taken once the load
/// stopped and the last sessions closed (freed memory the allocator keeps counts as RSS).
fn rss_rule(samples: &[(f64, u64)], duration: f64, after: u64) -> serde_json::Value {
    let mean = |from: f64, to: f64| {
        let v: Vec<u64> = samples.iter().filter(|(t, _)| *t >= from && *t <= to).map(|s| s.1).collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64 / MB
        }
    };
    let base = mean(duration * 0.2, duration * 0.3);
    let end = mean(duration * 0.9, duration);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0) as f64 / MB;
    // One figure per tenth of the run, for the record.
    let series: Vec<f64> = (0..10)
        .map(|i| (mean(duration * i as f64 / 10.0, duration * (i + 1) as f64 / 10.0) * 10.0).round() / 10.0)
        .collect();
    json!({
        "baseline_mb": base,
        "end_mb": end,
        "growth_pct": if base > 0.0 { (end / base - 1.0) * 100.0 } else { 0.0 },
        "max_mb": max,
        "after_mb": after as f64 / MB,
        "by_tenth_mb": series,
    })
}
