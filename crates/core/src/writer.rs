//! One WebSocket connection's writer task: drains what producers could not write directly
//! (see `outbound`) with vectored writes, and runs the socket's timers (heartbeat ping and pong deadline, idle and credential expiry, the
//! slow-consumer stall check, the closing handshake's deadlines).

use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::SockRef;
use tokio::time::{sleep_until, timeout};

use crate::frame;
use crate::hub::Hub;
use crate::outbound::{Batch, Next};
use crate::protocol::close_codes;
use crate::socket::Conn;

/// Timers the writer keeps.
struct Timers {
    next_ping: Instant,
    /// When a ping is unanswered: (sent at, in hub ms; deadline).
    pong: Option<(u64, Instant)>,
    /// The queue holds data the writer has not got onto the wire yet.
    busy: bool,
    /// The socket is closing (its close frame is queued).
    closing: bool,
    /// Last time the writer got bytes out (or became busy).
    progress: Instant,
    /// When to look at `progress` again while busy; moved only at a busy transition or when
    /// it fires, not per write, so a steady stream does not churn the timer wheel.
    stall_check: Instant,
    /// `exp_s` as an `Instant`, recomputed only when `exp_s` changes (a re-auth): reading both
    /// clocks on every wake-up of the writer cost ~3 % of a fan-out's CPU.
    expiry: (u64, Instant),
}

enum Tick {
    Continue,
    Kill,
}

fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `now + secs`, saturating far in the future instead of overflowing (an `exp` near `u64::MAX`).
fn instant_in(now: Instant, secs: u64) -> Instant {
    now.checked_add(Duration::from_secs(secs.min(100 * 365 * 24 * 3600))).unwrap_or(now)
}

impl Timers {
    /// How long the writer may make no progress: a reading peer always does. Past it an open
    /// socket is closed 1013 (queue dropped); a closing one that still takes nothing is dropped.
    /// (Once its close frame is out, a peer gets `close_timeout` to answer: see `write_loop`.)
    fn stall_limit(&self, hub: &Hub) -> Duration {
        hub.config.slow_consumer_timeout
    }

    /// Records what the last refill saw.
    fn note(&mut self, hub: &Hub, busy: bool, closing: bool) {
        if closing && !self.closing {
            self.closing = true;
            self.stall_check = Instant::now() + self.stall_limit(hub);
        }
        if busy && !self.busy {
            self.progress = Instant::now();
            self.stall_check = self.progress + self.stall_limit(hub);
        }
        self.busy = busy;
    }

    fn deadline(&mut self, hub: &Hub, conn: &Conn) -> Instant {
        let cfg = &hub.config;
        let mut d = self.next_ping;
        if let Some((_, p)) = self.pong {
            d = d.min(p);
        }
        if self.busy || self.closing {
            d = d.min(self.stall_check);
        }
        if self.closing {
            // Closing: idle and expiry have done their part; their past deadlines would spin.
            return d;
        }
        if let Some(idle) = cfg.idle_timeout {
            let last = conn.last_app_ms.load(Relaxed);
            d = d.min(hub.instant_of(last) + idle);
        }
        let exp = conn.exp_s.load(Relaxed);
        if exp != 0 {
            if self.expiry.0 != exp {
                let left = exp.saturating_sub(unix_now_s());
                self.expiry = (exp, instant_in(Instant::now(), left));
            }
            d = d.min(self.expiry.1);
        }
        d
    }

    fn tick(&mut self, hub: &Hub, conn: &Conn) -> Tick {
        let cfg = &hub.config;
        let now = Instant::now();
        self.note(hub, self.busy, conn.out.is_closed());
        if (self.busy || self.closing) && now >= self.stall_check {
            let limit = self.stall_limit(hub);
            if self.closing && (!self.busy || now >= self.progress + limit) {
                return Tick::Kill; // a closing peer that stopped reading (or never answers)
            }
            if self.busy && now >= self.progress + limit {
                // Not a burst: this peer has taken nothing for `slow_consumer_timeout`.
                if conn.close(close_codes::SLOW_CONSUMER, "slow consumer", true) {
                    hub.stats.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                self.note(hub, true, true);
            } else {
                self.stall_check = self.progress + limit;
            }
        }
        if let Some((sent_ms, due)) = self.pong {
            if conn.last_seen_ms.load(Relaxed) >= sent_ms {
                self.pong = None;
            } else if now >= due {
                hub.stats.pong_timeouts.fetch_add(1, Relaxed);
                return Tick::Kill;
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + cfg.heartbeat;
            if self.pong.is_none() && hub.deliver(conn, frame::ping()) {
                self.pong = Some((hub.now_ms(), now + cfg.pong_timeout));
            }
        }
        if let Some(idle) = cfg.idle_timeout {
            if hub.now_ms().saturating_sub(conn.last_app_ms.load(Relaxed)) >= idle.as_millis() as u64
                && conn.close(close_codes::NORMAL, "idle timeout", false)
            {
                hub.stats.idle_closes.fetch_add(1, Relaxed);
            }
        }
        let exp = conn.exp_s.load(Relaxed);
        if exp != 0
            && unix_now_s() >= exp
            && conn.close(close_codes::AUTH_EXPIRED, "credentials expired", false)
        {
            hub.stats.auth_expired_closes.fetch_add(1, Relaxed);
        }
        Tick::Continue
    }
}

/// The writer task: drains what producers could not write directly (vectored writes, once the
/// socket is writable) and runs the socket's timers.
pub(crate) async fn write_loop(hub: Arc<Hub>, conn: Arc<Conn>) {
    let cfg = &hub.config;
    let Some(sock) = conn.out.sock() else {
        conn.kill();
        return;
    };
    let mut batch = Batch::new();
    let now = Instant::now();
    let mut timers = Timers {
        next_ping: now + cfg.heartbeat,
        pong: None,
        busy: false,
        closing: false,
        progress: now,
        stall_check: now,
        expiry: (0, now),
    };
    // One timer for the task's life, moved only when the deadline changes: a fresh `sleep_until`
    // per wake-up would register and cancel a timer-wheel entry for every delivery.
    let timer = sleep_until(timers.next_ping.into());
    tokio::pin!(timer);
    loop {
        // One look at the queue per wake-up: refill also reports whether the socket is closing.
        let next = batch.refill(&conn.out);
        timers.note(&hub, matches!(next, Next::Write), batch.closing);
        let deadline = timers.deadline(&hub, &conn).into();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match next {
            Next::Done => break,
            Next::Wait => {
                tokio::select! {
                    _ = conn.out.notify.notified() => {}
                    _ = &mut timer => {
                        if let Tick::Kill = timers.tick(&hub, &conn) { conn.kill(); return; }
                    }
                }
            }
            Next::Write => match batch.try_write(sock) {
                Ok(0) => {
                    conn.kill();
                    return;
                }
                Ok(n) => {
                    timers.progress = Instant::now();
                    if batch.advance(&conn.out, n) && batch.ends {
                        break;
                    }
                    // A socket that keeps taking everything never waits below: its timers
                    // (ping, idle, expiry) still run when due.
                    if timer.deadline() <= timers.progress.into() {
                        if let Tick::Kill = timers.tick(&hub, &conn) {
                            conn.kill();
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    tokio::select! {
                        r = sock.writable() => if r.is_err() { conn.kill(); return; },
                        _ = &mut timer => {
                            if let Tick::Kill = timers.tick(&hub, &conn) { conn.kill(); return; }
                        }
                        _ = conn.out.notify.notified() => {}
                    }
                }
                Err(_) => {
                    conn.kill();
                    return;
                }
            },
        }
    }
    // Close frame written (or nothing left to say): half-close, then give the peer a moment
    // to answer before the reader is stopped.
    let _ = SockRef::from(sock.as_ref()).shutdown(Shutdown::Write);
    let _ = timeout(cfg.close_timeout, conn.reader_done.notified()).await;
    conn.kill();
}
