//! The scenarios. Each connects its clients, measures a fixed window and returns the figures as a
//! JSON object; `main` adds what every run reports (server, generator CPU, lower-bound flag).
//!
//! Everything runs on one thread (a current-thread runtime in a `LocalSet`), so shared state is
//! `Rc<Cell/RefCell>` and the generator's CPU use is one core's worth at most.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{spawn_local, JoinHandle};

use crate::client::{connect, Conn, Result, Target};
use crate::hist::Histogram;
use crate::server::{self, Server};
use crate::wire;

#[derive(Clone, Debug)]
pub struct Params {
    pub clients: usize,
    /// Measured window, seconds.
    pub duration: f64,
    /// Unmeasured load before the window, seconds.
    pub warmup: f64,
    /// Fanout: events in flight (credits) at most.
    pub window: usize,
    /// Fanout: when > 0, events are emitted at this fixed rate (events/s, open loop) instead of
    /// one per completed event; CPU per delivery is then compared at equal rates.
    pub rate: f64,
    /// Echo and handler: messages in flight per connection (`--depth`; 16 for echo, 1 for handler).
    pub depth: usize,
    /// Churn: total cycles, and the cycle count of the first RSS reading.
    pub cycles: usize,
    pub first_cycles: usize,
    /// Handshakes in flight at most while connecting.
    pub concurrency: usize,
    /// Fanout: only even user ids receive events (the server's authorize allows half).
    pub authorized: bool,
    /// JWT per client: the HS256 key the server was given.
    pub jwt_key: String,
}

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// CPU of the server and of the generator over a wall-clock window.
/// Also the time each side waited for a CPU while runnable: the machine is shared, and a side
/// that was starved did not set the pace by its own cost.
pub struct Meter {
    t: Instant,
    pids: Vec<u32>,
    server_cpu: u64,
    gen_cpu: u64,
    server_wait: u64,
    gen_wait: u64,
}

#[derive(Default)]
pub struct Window {
    pub secs: f64,
    pub server_cpu_us: u64,
    pub gen_cpu_us: u64,
    pub server_wait_us: u64,
    pub gen_wait_us: u64,
}

impl Meter {
    pub fn start(s: &Server) -> Result<Meter> {
        Self::of(&[s.pid])
    }
    /// A meter over several server processes (instances behind Redis): their CPU is summed.
    pub fn of(pids: &[u32]) -> Result<Meter> {
        Ok(Meter {
            t: Instant::now(),
            pids: pids.to_vec(),
            server_cpu: cpu_of(pids)?,
            gen_cpu: server::self_cpu_us(),
            server_wait: wait_of(pids),
            gen_wait: server::proc_runq_wait_ns(std::process::id()),
        })
    }
    pub fn stop(&self) -> Result<Window> {
        Ok(Window {
            secs: self.t.elapsed().as_secs_f64(),
            server_cpu_us: cpu_of(&self.pids)?.saturating_sub(self.server_cpu),
            gen_cpu_us: server::self_cpu_us().saturating_sub(self.gen_cpu),
            server_wait_us: wait_of(&self.pids).saturating_sub(self.server_wait) / 1000,
            gen_wait_us: server::proc_runq_wait_ns(std::process::id()).saturating_sub(self.gen_wait) / 1000,
        })
    }
}

fn cpu_of(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|&p| server::proc_cpu_us(p)).sum()
}

fn wait_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| server::proc_runq_wait_ns(p)).sum()
}

impl Window {
    /// Figures common to every scenario; `work` is the unit count (deliveries, messages, …).
    pub fn report(&self, work: u64, unit: &str) -> Value {
        let per = |x: f64| if work == 0 { Value::Null } else { json!(round2(x / work as f64)) };
        let frac = |us: u64| round2(us as f64 / 1e6 / self.secs);
        json!({
            "server_runq_wait_frac": frac(self.server_wait_us),
            "gen_runq_wait_frac": frac(self.gen_wait_us),
            "loadavg": server::loadavg(),
            "window_s": round2(self.secs),
            format!("{unit}_per_s"): round2(work as f64 / self.secs),
            format!("server_cpu_us_per_{unit}"): per(self.server_cpu_us as f64),
            "server_cpu_cores": round2(self.server_cpu_us as f64 / 1e6 / self.secs),
            "gen_cpu_frac": frac(self.gen_cpu_us),
            // The generator's own cost per unit: 1 / this is its ceiling on one core.
            format!("gen_cpu_us_per_{unit}"): if work == 0 { Value::Null } else {
                json!((self.gen_cpu_us as f64 / work as f64 * 1000.0).round() / 1000.0)
            },
        })
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn token_for(p: &Params, user: usize) -> Result<String> {
    crate::jwt::mint(&p.jwt_key, user)
}

/// Merges `b` into the object `a`.
pub fn merge(a: &mut Value, b: Value) {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
}

/// Waits until `done()` or the deadline; Err names what was awaited.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done()? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Counts connections that are up and those that failed; the first error is kept.
#[derive(Default)]
struct Joined {
    ok: Cell<usize>,
    failed: Cell<usize>,
    first_error: RefCell<Option<String>>,
}

impl Joined {
    fn fail(&self, e: &dyn std::fmt::Display) {
        self.failed.set(self.failed.get() + 1);
        self.first_error.borrow_mut().get_or_insert_with(|| e.to_string());
    }
    /// Awaits a connection attempt and counts it as up or failed; None when it failed.
    async fn track<T>(&self, attempt: impl std::future::Future<Output = Result<T>>) -> Option<T> {
        match attempt.await {
            Ok(c) => {
                self.ok.set(self.ok.get() + 1);
                Some(c)
            }
            Err(e) => {
                self.fail(&e);
                None
            }
        }
    }
    /// Ok(true) once `n` are up; Err as soon as one failed.
    fn all(&self, n: usize) -> Result<bool> {
        if let Some(e) = self.first_error.borrow().as_ref() {
            return Err(format!("{} connection(s) failed; first: {e}", self.failed.get()).into());
        }
        Ok(self.ok.get() >= n)
    }
}

/// Connects with at most the semaphore's count of handshakes in flight.
async fn connect_limited(target: &Target, token: Option<&str>, sem: &Semaphore) -> Result<Conn> {
    let _permit = sem.acquire().await?;
    connect(target, token).await
}

/// Connects (handshakes bounded by the semaphore) and joins `collection:posts`.
async fn connect_joined(target: &Target, token: &str, sem: &Semaphore) -> Result<Conn> {
    let _permit = sem.acquire().await?;
    let mut c = connect(target, Some(token)).await?;
    c.send(br#"{"type":"join-collection","collection":"posts"}"#).await?;
    c.wait_type(b"joined").await?;
    Ok(c)
}

/// What the control writer sends: a command to every server, or credits dealt among them.
enum Line {
    All(Value),
    Credit(u64),
}

/// Writes control lines to the servers' stdin from one task: commands from a channel, and
/// credits whenever the fan-out state has completed events to hand back. With several servers
/// (instances behind Redis) credits are dealt round-robin, so each instance emits its share.
struct Writer {
    tx: mpsc::UnboundedSender<Line>,
    task: JoinHandle<()>,
}

/// Splits `n` credits over `k` servers starting at `*next`; returns each server's share.
fn deal(n: u64, k: usize, next: &mut usize) -> Vec<u64> {
    let mut share = vec![n / k as u64; k];
    for _ in 0..n % k as u64 {
        share[*next] += 1;
        *next = (*next + 1) % k;
    }
    share
}

impl Writer {
    fn start(servers: &mut [Server], fan: Rc<Fan>) -> Result<Writer> {
        let mut stdins = Vec::with_capacity(servers.len());
        for s in servers.iter_mut() {
            stdins.push(s.take_stdin().ok_or("server has no control channel")?);
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
        let task = spawn_local(async move {
            let k = stdins.len();
            let mut next = 0usize;
            loop {
                let line = tokio::select! {
                    biased;
                    c = rx.recv() => match c { Some(l) => l, None => break },
                    _ = fan.credit.notified() => {
                        let n = fan.completed.take();
                        if n == 0 || fan.stopped.get() { continue }
                        Line::Credit(n)
                    }
                };
                let lines: Vec<Option<Value>> = match line {
                    Line::All(v) => vec![Some(v); k],
                    Line::Credit(n) => {
                        let shares = deal(n, k, &mut next);
                        fan.note_credits(&shares, now_us());
                        shares
                            .into_iter()
                            .map(|n| (n > 0).then(|| json!({"cmd": "credit", "n": n})))
                            .collect()
                    }
                };
                for (stdin, v) in stdins.iter_mut().zip(lines) {
                    let Some(v) = v else { continue };
                    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
                    bytes.push(b'\n');
                    if stdin.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Writer { tx, task })
    }
    fn send(&self, v: Value) -> Result<()> {
        self.tx.send(Line::All(v)).map_err(|_| "control writer ended".into())
    }
    fn credit(&self, n: u64) -> Result<()> {
        self.tx.send(Line::Credit(n)).map_err(|_| "control writer ended".into())
    }
}

/// Fan-out bookkeeping shared by the subscribers and the credit writer.
#[derive(Default)]
struct Fan {
    /// Deliveries per event sequence number.
    per_seq: RefCell<Vec<u32>>,
    /// Deliveries each event should make.
    expected: u32,
    delivered: Cell<u64>,
    /// Subscriber reads during the window that brought at least one message: deliveries per
    /// read shows how many frames the server wrote per socket at once (its batching level,
    /// which CPU per delivery at max rate depends on).
    reads: Cell<u64>,
    /// Deliveries of an event beyond the recipient count (a message delivered twice).
    duplicates: Cell<u64>,
    /// Closed loop: a fully delivered event returns a credit (false at a fixed rate).
    closed_loop: bool,
    /// Deliveries to a subscriber that `authorize` should have excluded.
    leaked: Cell<u64>,
    /// Messages carrying no `_seq` / `_ts` although they were not acks, or a `_seq` no credit
    /// asked for.
    malformed: Cell<u64>,
    /// Subscribers whose connection ended during the run.
    dropped: Cell<u64>,
    measuring: Cell<bool>,
    /// Per server, when the generator sent each credit it dealt that server, in order: server
    /// `j` of `k` numbers its events `j, j + k, …`, one per credit, so event `s` was asked for
    /// at `credited[s % k][s / k]`. Latency counts from there.
    credited: RefCell<Vec<Vec<u64>>>,
    latency: RefCell<Histogram>,
    /// Fully delivered events not yet handed back as credits.
    completed: Cell<u64>,
    credit: Notify,
    stopped: Cell<bool>,
}

impl Fan {
    /// When the generator sent the credit of event `seq` (see `credited`).
    fn asked_at(&self, seq: u64) -> Option<u64> {
        let credited = self.credited.borrow();
        let k = credited.len() as u64;
        (k > 0).then(|| credited[(seq % k) as usize].get((seq / k) as usize).copied()).flatten()
    }

    /// Notes that `shares[j]` credits went to server `j` at `now`.
    fn note_credits(&self, shares: &[u64], now: u64) {
        let mut credited = self.credited.borrow_mut();
        credited.resize_with(shares.len(), Vec::new);
        for (sent, &n) in credited.iter_mut().zip(shares) {
            sent.extend(std::iter::repeat_n(now, n as usize));
        }
    }

    /// Counts one message a subscriber read at `now` (µs; one clock read per batch of reads).
    fn deliver(&self, json: &[u8], allowed: bool, now: u64) {
        let Some((seq, _)) = wire::seq_ts(json) else {
            if !wire::is_type(json, b"joined") && !wire::is_type(json, b"welcome") {
                self.malformed.set(self.malformed.get() + 1);
            }
            return;
        };
        // An event no credit asked for (a server numbering its events wrong) is malformed.
        let Some(asked) = self.asked_at(seq) else {
            self.malformed.set(self.malformed.get() + 1);
            return;
        };
        if !allowed {
            self.leaked.set(self.leaked.get() + 1);
            return;
        }
        self.delivered.set(self.delivered.get() + 1);
        if self.measuring.get() {
            self.latency.borrow_mut().record(now.saturating_sub(asked));
        }
        let mut per_seq = self.per_seq.borrow_mut();
        let i = seq as usize;
        if i >= per_seq.len() {
            per_seq.resize(i + 1024, 0);
        }
        per_seq[i] += 1;
        if per_seq[i] > self.expected {
            self.duplicates.set(self.duplicates.get() + 1);
        } else if per_seq[i] == self.expected && self.closed_loop {
            self.completed.set(self.completed.get() + 1);
            self.credit.notify_one();
        }
    }
}

/// `fanout` / `fanout-authorized`: C subscribers of collection:posts, the server's Node process
/// emits one event per credit; a credit comes back when an event reached every recipient, so at
/// most `window` events are in flight and the server is never pushed past what it absorbs.
///
/// With several servers (instances sharing a Redis backplane, `redis` its pid) subscriber `u`
/// connects to instance `u % k` and credits are dealt among the instances, so every event is
/// emitted on one instance and delivered by all of them.
pub async fn fanout(
    servers: &mut [Server],
    targets: &[Target],
    p: &Params,
    redis: Option<u32>,
) -> Result<Value> {
    let allowed = |user: usize| !p.authorized || user.is_multiple_of(2);
    let expected = (0..p.clients).filter(|&u| allowed(u)).count() as u32;
    let fan = Rc::new(Fan { expected, closed_loop: p.rate <= 0.0, ..Fan::default() });
    let joined = Rc::new(Joined::default());
    let sem = Rc::new(Semaphore::new(p.concurrency));
    for user in 0..p.clients {
        let target = targets[user % targets.len()].clone();
        let (fan, joined, sem) = (fan.clone(), joined.clone(), sem.clone());
        let token = token_for(p, user)?;
        let ok = allowed(user);
        spawn_local(async move {
            let Some(mut conn) = joined.track(connect_joined(&target, &token, &sem)).await else { return };
            // Every message one read brought, at once; one clock read per batch.
            let mut now = 0;
            while let Ok(true) = conn
                .read_batch(|m| {
                    if now == 0 {
                        now = now_us();
                    }
                    fan.deliver(m, ok, now)
                })
                .await
            {
                if now != 0 && fan.measuring.get() {
                    fan.reads.set(fan.reads.get() + 1);
                }
                now = 0;
            }
            fan.dropped.set(fan.dropped.get() + 1);
        });
    }
    until("subscribers to join", Duration::from_secs(180), || joined.all(p.clients)).await?;

    let writer = Writer::start(servers, fan.clone())?;
    if p.rate > 0.0 {
        // Open loop: the credits due at `rate` events/s since the start, every 10 ms.
        let (tx, fan, rate) = (writer.tx.clone(), fan.clone(), p.rate);
        spawn_local(async move {
            let start = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !fan.stopped.get() {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if due > sent && tx.send(Line::Credit(due - sent)).is_err() {
                    return;
                }
                sent = sent.max(due);
            }
        });
    } else {
        writer.credit(p.window as u64)?;
    }
    tokio::time::sleep(Duration::from_secs_f64(p.warmup)).await;
    writer.send(json!({"cmd": "start"}))?;
    for s in servers.iter_mut() {
        s.reply().await?;
    }
    let d0 = fan.delivered.get();
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let meter = Meter::of(&pids)?;
    let redis_meter = redis.map(|pid| Meter::of(&[pid])).transpose()?;
    fan.measuring.set(true);
    tokio::time::sleep(Duration::from_secs_f64(p.duration)).await;
    fan.measuring.set(false);
    let w = meter.stop()?;
    let rw = redis_meter.map(|m| m.stop()).transpose()?;
    let work = fan.delivered.get() - d0;
    fan.stopped.set(true);
    writer.send(json!({"cmd": "stop"}))?;
    let mut stats = Vec::with_capacity(servers.len());
    for s in servers.iter_mut() {
        stats.push(s.reply().await?);
    }
    let emitted: u64 = stats.iter().filter_map(|s| s.get("emitted")?.as_u64()).sum();
    let want = emitted * expected as u64;
    // Let what is in flight arrive (bounded), then count what never did.
    let _ = until("in-flight deliveries", Duration::from_secs(3), || Ok(fan.delivered.get() >= want)).await;
    drop(writer.tx);
    let _ = writer.task.await;

    let lat = fan.latency.borrow();
    let mut out = w.report(work, "delivery");
    merge(
        &mut out,
        json!({
            "events_per_s": round2(work as f64 / expected.max(1) as f64 / w.secs),
            "recipients_per_event": expected,
            "latency_p50_us": lat.quantile(0.50),
            "latency_p99_us": lat.quantile(0.99),
            "latency_mean_us": lat.mean().round(),
            "latency_max_us": lat.max(),
            "events_emitted": emitted,
            "lost": want.saturating_sub(fan.delivered.get().saturating_sub(fan.duplicates.get())),
            "duplicates": fan.duplicates.get(),
            "deliveries_per_read": if fan.reads.get() == 0 { Value::Null } else {
                json!(round2(work as f64 / fan.reads.get() as f64))
            },
            "rate": p.rate,
            "leaked": fan.leaked.get(),
            "malformed": fan.malformed.get(),
            "dropped_connections": fan.dropped.get(),
        }),
    );
    if let Some(rw) = rw {
        let per = if work == 0 { Value::Null } else { json!(round2(rw.server_cpu_us as f64 / work as f64)) };
        merge(
            &mut out,
            json!({"redis_cpu_us_per_delivery": per, "redis_cpu_cores": round2(rw.server_cpu_us as f64 / 1e6 / rw.secs)}),
        );
    }
    // The worst instance's event loop.
    merge(&mut out, eld_worst(&stats));
    Ok(out)
}

/// The largest of each event-loop-delay figure over several `stop` replies.
fn eld_worst(stats: &[Value]) -> Value {
    let mut o = json!({});
    for k in ["eld_p50_us", "eld_p99_us", "eld_max_us"] {
        if let Some(v) = stats.iter().filter_map(|s| s.get(k)?.as_u64()).max() {
            o[k] = json!(v);
        }
    }
    o
}

/// The event-loop-delay figures of a `stop` reply.
fn eld(stats: &Value) -> Value {
    eld_worst(std::slice::from_ref(stats))
}

/// Resets the event-loop-delay histogram of a Node server (no-op for the others).
async fn eld_start(server: &mut Server) -> Result<()> {
    if server.has_control() {
        server.request(&json!({"cmd": "start"})).await?;
    }
    Ok(())
}

async fn eld_stop(server: &mut Server) -> Result<Value> {
    if server.has_control() {
        return Ok(eld(&server.request(&json!({"cmd": "stop"})).await?));
    }
    Ok(json!({}))
}

/// Shared by the closed-loop scenarios (handler, echo): a message counter and an RTT histogram
/// that only count inside the window.
struct Loop {
    /// Flipped once every client is connected: no traffic slows the others' handshakes.
    go: tokio::sync::watch::Sender<bool>,
    measuring: Cell<bool>,
    done: Cell<bool>,
    count: Cell<u64>,
    rtt: RefCell<Histogram>,
    errors: Cell<u64>,
}

impl Loop {
    fn new() -> Rc<Loop> {
        Rc::new(Loop {
            go: tokio::sync::watch::channel(false).0,
            measuring: Cell::default(),
            done: Cell::default(),
            count: Cell::default(),
            rtt: RefCell::default(),
            errors: Cell::default(),
        })
    }
    async fn ready(&self) {
        let _ = self.go.subscribe().wait_for(|go| *go).await;
    }
    fn record(&self, sent: Instant) {
        if self.measuring.get() {
            self.count.set(self.count.get() + 1);
            self.rtt.borrow_mut().record(sent.elapsed().as_micros() as u64);
        }
    }
}

/// Warmup, then the measured window; returns the window and the message count in it.
async fn measure_loop(server: &mut Server, state: &Loop, p: &Params) -> Result<(Window, Value)> {
    state.go.send_replace(true);
    tokio::time::sleep(Duration::from_secs_f64(p.warmup)).await;
    eld_start(server).await?;
    let meter = Meter::start(server)?;
    state.measuring.set(true);
    tokio::time::sleep(Duration::from_secs_f64(p.duration)).await;
    state.measuring.set(false);
    let w = meter.stop()?;
    state.done.set(true);
    let eld = eld_stop(server).await?;
    let rtt = state.rtt.borrow();
    let mut out = w.report(state.count.get(), "message");
    merge(
        &mut out,
        json!({"rtt_p50_us": rtt.quantile(0.5), "rtt_p99_us": rtt.quantile(0.99), "errors": state.errors.get()}),
    );
    merge(&mut out, eld);
    Ok((w, out))
}

/// `handler`: C clients, each keeps `depth` messages `{type:'echo',id,data}` in flight (1 by
/// default) and sends the next as each JS handler reply comes back. Replies are matched by id:
/// a server may answer a socket's messages out of order.
pub async fn handler(server: &mut Server, target: &Target, p: &Params) -> Result<Value> {
    let state = Loop::new();
    let joined = Rc::new(Joined::default());
    let sem = Rc::new(Semaphore::new(p.concurrency));
    for client in 0..p.clients {
        let (state, joined, sem, target, depth) =
            (state.clone(), joined.clone(), sem.clone(), target.clone(), p.depth.max(1));
        let token = token_for(p, client)?;
        spawn_local(async move {
            let Some(mut conn) = joined.track(connect_limited(&target, Some(&token), &sem)).await else {
                return;
            };
            state.ready().await;
            let mut n = 0u64;
            // Send time of each message in flight, by its number n (the id is "{client}-{n}").
            let mut sent = std::collections::HashMap::with_capacity(depth);
            let prefix = format!("{client}-");
            let mut msg = String::with_capacity(160);
            while !state.done.get() {
                // Top up to `depth` in flight: this round's messages leave in one write.
                if sent.len() < depth {
                    let now = Instant::now();
                    while sent.len() < depth {
                        n += 1;
                        msg.clear();
                        let _ = write!(
                            msg,
                            r#"{{"type":"echo","id":"{client}-{n}","data":{{"n":{n},"text":"the quick brown fox jumps over the lazy dog 0123456789"}}}}"#
                        );
                        conn.queue(msg.as_bytes());
                        sent.insert(n, now);
                    }
                    if conn.flush().await.is_err() {
                        return state.errors.set(state.errors.get() + 1);
                    }
                }
                // Every reply one read brought; others (acks, pushes) are skipped.
                let mut wrong_type = 0;
                let open = conn
                    .read_batch(|m| {
                        let Some(at) = wire::str_field(m, b"\"id\":\"")
                            .and_then(|id| id.strip_prefix(prefix.as_bytes()))
                            .and_then(|k| std::str::from_utf8(k).ok()?.parse::<u64>().ok())
                            .and_then(|k| sent.remove(&k))
                        else {
                            return;
                        };
                        if !wire::is_type(m, b"reply") {
                            wrong_type += 1;
                        }
                        state.record(at);
                    })
                    .await;
                state.errors.set(state.errors.get() + wrong_type);
                if !matches!(open, Ok(true)) {
                    return state.errors.set(state.errors.get() + 1);
                }
            }
        });
    }
    until("clients to connect", Duration::from_secs(120), || joined.all(p.clients)).await?;
    let (_, mut out) = measure_loop(server, &state, p).await?;
    merge(&mut out, json!({"depth": p.depth}));
    Ok(out)
}

/// `echo`: raw transport; C connections each keep `depth` messages in flight.
pub async fn echo(server: &mut Server, target: &Target, p: &Params) -> Result<Value> {
    let state = Loop::new();
    let joined = Rc::new(Joined::default());
    let sem = Rc::new(Semaphore::new(p.concurrency));
    let payload = br#""0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd""#;
    for _ in 0..p.clients {
        let (state, joined, sem, target, depth) =
            (state.clone(), joined.clone(), sem.clone(), target.clone(), p.depth);
        spawn_local(async move {
            let Some(mut conn) = joined.track(connect_limited(&target, None, &sem)).await else { return };
            state.ready().await;
            // Replies come back in order, so the send time of each is at the front of the queue.
            let mut sent = std::collections::VecDeque::with_capacity(depth);
            while !state.done.get() {
                // Top up to `depth` in flight: this round's messages leave in one write.
                if sent.len() < depth {
                    let now = Instant::now();
                    while sent.len() < depth {
                        conn.queue(payload);
                        sent.push_back(now);
                    }
                    if conn.flush().await.is_err() {
                        return state.errors.set(state.errors.get() + 1);
                    }
                }
                let open = conn
                    .read_batch(|_| {
                        let at = sent.pop_front().unwrap_or_else(Instant::now);
                        state.record(at);
                    })
                    .await;
                if !matches!(open, Ok(true)) {
                    return state.errors.set(state.errors.get() + 1);
                }
            }
        });
    }
    until("clients to connect", Duration::from_secs(60), || joined.all(p.clients)).await?;
    let (_, mut out) = measure_loop(server, &state, p).await?;
    merge(&mut out, json!({"depth": p.depth}));
    Ok(out)
}

/// `idle`: open C authenticated connections as fast as the server accepts them, then hold them.
pub async fn idle(server: &mut Server, target: &Target, p: &Params) -> Result<Value> {
    let tokens: Vec<String> = (0..p.clients).map(|u| token_for(p, u)).collect::<Result<_>>()?;
    let held: Rc<RefCell<Vec<Conn>>> = Rc::new(RefCell::new(Vec::with_capacity(p.clients)));
    let joined = Rc::new(Joined::default());
    let sem = Rc::new(Semaphore::new(p.concurrency));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = server.rss()?;
    eld_start(server).await?;
    let overflows = server::listen_overflows();
    let meter = Meter::start(server)?;
    for token in tokens {
        let (held, joined, sem, target) = (held.clone(), joined.clone(), sem.clone(), target.clone());
        spawn_local(async move {
            if let Some(c) = joined.track(connect_limited(&target, Some(&token), &sem)).await {
                held.borrow_mut().push(c);
            }
        });
    }
    until("connections", Duration::from_secs(180), || joined.all(p.clients)).await?;
    let w = meter.stop()?;
    let eld = eld_stop(server).await?;
    tokio::time::sleep(Duration::from_secs_f64(p.warmup.max(0.5))).await;
    let rss1 = server.rss()?;
    let n = held.borrow().len() as u64;
    let mut out = w.report(n, "connect");
    merge(
        &mut out,
        json!({
            "connections": n,
            "rss_before": rss0,
            "rss_after": rss1,
            "bytes_per_conn": (rss1.saturating_sub(rss0)) / n.max(1),
            "listen_overflows": server::listen_overflows().saturating_sub(overflows),
        }),
    );
    merge(&mut out, eld);
    Ok(out)
}

/// `churn`: connect, join, leave, close in `concurrency` parallel loops; RSS after the first
/// `first_cycles` and after all `cycles`.
pub async fn churn(server: &mut Server, target: &Target, p: &Params) -> Result<Value> {
    let started = Rc::new(Cell::new(0usize));
    let finished = Rc::new(Cell::new(0usize));
    let failed = Rc::new(Joined::default());
    let tokens: Rc<Vec<String>> =
        Rc::new((0..p.concurrency).map(|u| token_for(p, u)).collect::<Result<_>>()?);
    let rss0 = server.rss()?;
    let overflows = server::listen_overflows();
    let mut phases = Vec::new();
    for goal in [p.first_cycles.min(p.cycles), p.cycles] {
        let meter = Meter::start(server)?;
        let before = finished.get();
        let loops: Vec<_> = (0..p.concurrency)
            .map(|l| {
                let (started, finished, failed, tokens, target) =
                    (started.clone(), finished.clone(), failed.clone(), tokens.clone(), target.clone());
                spawn_local(async move {
                    while started.get() < goal {
                        started.set(started.get() + 1);
                        match cycle(&target, &tokens[l]).await {
                            Ok(()) => finished.set(finished.get() + 1),
                            Err(e) => failed.fail(&e),
                        }
                    }
                })
            })
            .collect();
        for l in loops {
            let _ = l.await;
        }
        let w = meter.stop()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        phases.push((w, finished.get() - before, server.rss()?));
    }
    let (n1, rss1) = (phases[0].1, phases[0].2);
    let (n2, rss2) = (phases[1].1, phases[1].2);
    let total = Window {
        secs: phases.iter().map(|(w, _, _)| w.secs).sum(),
        server_cpu_us: phases.iter().map(|(w, _, _)| w.server_cpu_us).sum(),
        gen_cpu_us: phases.iter().map(|(w, _, _)| w.gen_cpu_us).sum(),
        server_wait_us: phases.iter().map(|(w, _, _)| w.server_wait_us).sum(),
        gen_wait_us: phases.iter().map(|(w, _, _)| w.gen_wait_us).sum(),
    };
    let mut out = total.report((n1 + n2) as u64, "cycle");
    merge(
        &mut out,
        json!({
            "cycles": n1 + n2,
            "failed": failed.failed.get(),
            "first_error": failed.first_error.borrow().clone(),
            "rss_start": rss0,
            "rss_first": rss1,
            "rss_last": rss2,
            "rss_drift_pct": round2((rss2 as f64 - rss1 as f64) / rss1.max(1) as f64 * 100.0),
            "listen_overflows": server::listen_overflows().saturating_sub(overflows),
        }),
    );
    Ok(out)
}

async fn cycle(target: &Target, token: &str) -> Result<()> {
    let mut c = connect(target, Some(token)).await?;
    c.send(br#"{"type":"join-collection","collection":"posts"}"#).await?;
    c.wait_type(b"joined").await?;
    c.send(br#"{"type":"leave-collection","collection":"posts"}"#).await?;
    c.wait_type(b"left").await?;
    c.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Server `j` of `k` numbers its events `j, j + k, …`, one per credit it was dealt: event
    /// `s` was asked for when server `s % k` got its `s / k`-th credit.
    #[test]
    fn an_events_latency_counts_from_its_credit() {
        let fan = Fan::default();
        assert_eq!(fan.asked_at(0), None);
        let mut next = 0;
        fan.note_credits(&deal(3, 2, &mut next), 100); // server 0: 2 credits, server 1: 1
        fan.note_credits(&deal(3, 2, &mut next), 200); // server 0: 1, server 1: 2
        let asked: Vec<Option<u64>> = (0..8).map(|s| fan.asked_at(s)).collect();
        // seq 0 2 4 6 on server 0 (credits at 100 100 200 -), 1 3 5 7 on server 1 (100 200 200 -)
        assert_eq!(asked, [Some(100), Some(100), Some(100), Some(200), Some(200), Some(200), None, None]);
    }

    #[test]
    fn credits_are_dealt_evenly_and_the_remainder_rotates() {
        let mut next = 0;
        assert_eq!(deal(16, 1, &mut next), vec![16]);
        assert_eq!(deal(16, 2, &mut next), vec![8, 8]);
        assert_eq!(deal(1, 2, &mut next), vec![1, 0]);
        assert_eq!(deal(1, 2, &mut next), vec![0, 1]);
        assert_eq!(deal(3, 2, &mut next), vec![2, 1]);
        assert_eq!(next, 1);
        assert_eq!(deal(0, 3, &mut next), vec![0, 0, 0]);
    }

    #[test]
    fn worst_event_loop_figures_of_several_instances() {
        let v = eld_worst(&[
            json!({"eld_p99_us": 5, "eld_max_us": 9}),
            json!({"eld_p99_us": 7, "eld_p50_us": 1}),
        ]);
        assert_eq!(v, json!({"eld_p50_us": 1, "eld_p99_us": 7, "eld_max_us": 9}));
        assert_eq!(eld(&json!({"emitted": 3})), json!({}));
    }
}
