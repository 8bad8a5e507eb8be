//! One WebSocket connection's task: its read side (`connection`), draining what producers could
//! not write directly (see `outbound`) with vectored writes, and the socket's timers (heartbeat
//! ping and pong deadline, idle and credential expiry, the slow-consumer stall check, the
//! closing handshake's deadlines).

use std::future::Future;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::SockRef;
use tokio::time::sleep_until;

use crate::connection::{ConnGuard, Flow, ReadSide};
use crate::frame;
use crate::hooks::UpgradeInfo;
use crate::hub::Hub;
use crate::outbound::{Batch, Next};
use crate::protocol::close_codes;
use crate::reader::{FrameReader, InFrame, ReadError};
use crate::socket::Conn;

/// Timers the writer keeps.
struct Timers {
    next_ping: Instant,
    /// When a ping is unanswered: sent at, in hub ms (its deadline is `pong_timeout` later).
    pong: Option<u64>,
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
        if let Some(sent) = self.pong {
            d = d.min(hub.instant_of(sent) + hub.config.pong_timeout);
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
                hub.close_slow_consumer(conn);
                self.note(hub, true, true);
            } else {
                self.stall_check = self.progress + limit;
            }
        }
        if let Some(sent_ms) = self.pong {
            if conn.last_seen_ms.load(Relaxed) >= sent_ms {
                self.pong = None;
            } else if now >= hub.instant_of(sent_ms) + cfg.pong_timeout {
                hub.stats.pong_timeouts.fetch_add(1, Relaxed);
                return Tick::Kill;
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + cfg.heartbeat;
            if self.pong.is_none() && hub.deliver(conn, frame::ping()) {
                self.pong = Some(hub.now_ms());
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

/// Clears the queue's wake-up slot however the task ends: the waker it keeps would keep the
/// finished task's allocation alive for as long as anyone holds the socket.
struct ForgetWaker<'a>(&'a Conn);

impl Drop for ForgetWaker<'_> {
    fn drop(&mut self) {
        self.0.out.notify.clear();
    }
}

/// Where the socket's task is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Frames in, one at a time (or the pending `wait` first).
    Frames,
    /// Discarding the peer's input until it closes its side, within `close_timeout`.
    Drain,
    /// Nothing more to read: the socket is unregistered.
    Done,
}

/// A deadline that never comes (about 30 years away: `Instant` has no maximum).
fn far() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}

/// What woke the task.
enum Wake {
    Timer,
    Queue,
    Writable(bool),
    Waited,
    Frame(Result<InFrame, ReadError>),
    Drained(bool),
}

/// The socket's one task: reads frames (`connection::ReadSide`), drains what producers could
/// not write directly (vectored writes, once the socket is writable), and runs the socket's
/// timers. One task, not a reader and a writer: an idle socket then holds one small future
/// (its waits use the stream's readiness slots and the queue's `Notify`, one timer), about
/// 900 B less than the two tasks did. Reading pauses while an answer the protocol orders
/// before the next message (`ReadSide::wait`) is pending; writing and timers go on.
pub(crate) async fn run(guard: ConnGuard, mut reader: FrameReader, info: Box<UpgradeInfo>) {
    // Borrowed, not cloned: every byte here is in every idle socket's future. The guard
    // unregisters the socket when the task ends (or is aborted, or dropped before it ran);
    // reading over, it is unregistered at once (again at the end: a no-op).
    let (hub, conn) = (&guard.hub, &guard.conn);
    let _forget = ForgetWaker(conn);
    let cfg = &hub.config;
    let Some(sock) = conn.out.sock() else {
        conn.out.close(None, true);
        return;
    };
    let mut read = ReadSide::open(hub, conn, info);
    let mut reading = Reading::Frames;
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
    // Set once the queue is done (close frame written, or nothing left to say): the write half
    // is shut down, and the task ends once reading is over too.
    let mut lingering = false;
    // When to stop waiting for the peer to close its side: `close_timeout` after our close frame
    // went out, or after we stopped reading to drain (whichever came first).
    let mut give_up: Option<Instant> = None;
    // The kernel refused the last write: wait until the socket is writable.
    let mut blocked = false;
    // One timer for the task's life, moved only when the deadline changes: a fresh `sleep_until`
    // per wake-up would register and cancel a timer-wheel entry for every delivery.
    let timer = sleep_until(timers.next_ping.into());
    tokio::pin!(timer);
    loop {
        if !lingering {
            // Write as much as the kernel takes now; one look at the queue per refill (it also
            // reports whether the socket is closing).
            loop {
                let next = batch.refill(&conn.out);
                timers.note(hub, matches!(next, Next::Write), batch.closing);
                match next {
                    Next::Done => {
                        lingering = true;
                        break;
                    }
                    Next::Wait => {
                        blocked = false;
                        break;
                    }
                    Next::Write => match batch.try_write(sock) {
                        Ok(0) => {
                            conn.out.close(None, true);
                            return;
                        }
                        Ok(n) => {
                            timers.progress = Instant::now();
                            if batch.advance(&conn.out, n) && batch.ends {
                                lingering = true;
                                break;
                            }
                            // A socket that keeps taking everything never waits below: its
                            // timers (ping, idle, expiry) still run when due.
                            if timer.deadline() <= timers.progress.into() {
                                if let Tick::Kill = timers.tick(hub, conn) {
                                    conn.out.close(None, true);
                                    return;
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            blocked = true;
                            break;
                        }
                        Err(_) => {
                            conn.out.close(None, true);
                            return;
                        }
                    },
                }
            }
            if lingering {
                // Close frame written (or nothing left to say): half-close; the peer gets
                // `close_timeout` to answer before the socket is dropped.
                let _ = SockRef::from(sock.as_ref()).shutdown(Shutdown::Write);
                give_up = Some(give_up.unwrap_or(far()).min(Instant::now() + cfg.close_timeout));
            }
        }
        if reading == Reading::Done && lingering {
            return;
        }
        let mut deadline = if lingering { far() } else { timers.deadline(hub, conn) };
        if let Some(d) = give_up {
            deadline = deadline.min(d);
        }
        let deadline = deadline.into();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let writing = !lingering;
        // One poll over everything the task waits for, in this order (timers first, reading
        // last): no branch keeps a future of its own in the task's future.
        let wake = std::future::poll_fn(|cx| {
            if timer.as_mut().poll(cx).is_ready() {
                // A pong may already sit in the socket's buffer (the task was held up past its
                // deadline: a stalled runtime): read before the deadline is judged, while the
                // ping is unanswered (one frame from the peer answers it: no flood starves the
                // timers).
                let unanswered = timers.pong.is_some_and(|sent| conn.last_seen_ms.load(Relaxed) < sent);
                if unanswered && reading == Reading::Frames && read.wait.is_none() {
                    if let Poll::Ready(f) = reader.poll_next(cx) {
                        return Poll::Ready(Wake::Frame(f));
                    }
                }
                return Poll::Ready(Wake::Timer);
            }
            if writing {
                if conn.out.notify.poll_notified(cx).is_ready() {
                    return Poll::Ready(Wake::Queue);
                }
                if blocked {
                    if let Poll::Ready(r) = sock.as_ref().poll_write_ready(cx) {
                        return Poll::Ready(Wake::Writable(r.is_ok()));
                    }
                }
            }
            match reading {
                Reading::Frames => match read.wait.as_mut() {
                    Some(w) => w.as_mut().poll(cx).map(|()| Wake::Waited),
                    None => reader.poll_next(cx).map(Wake::Frame),
                },
                Reading::Drain => reader.poll_discard(cx).map(Wake::Drained),
                Reading::Done => Poll::Pending,
            }
        })
        .await;
        let flow = match wake {
            Wake::Timer => {
                let now = Instant::now();
                if give_up.is_some_and(|g| now >= g) {
                    if lingering {
                        return; // the peer never closed its side
                    }
                    give_up = None;
                    Flow::Done // stop draining; what is left to write still goes out
                } else {
                    if writing {
                        if let Tick::Kill = timers.tick(hub, conn) {
                            conn.out.close(None, true);
                            return;
                        }
                    }
                    continue;
                }
            }
            Wake::Queue => continue,
            Wake::Writable(ok) => {
                if !ok {
                    conn.out.close(None, true);
                    return;
                }
                continue;
            }
            Wake::Waited => {
                read.wait = None;
                continue;
            }
            Wake::Frame(Ok(f)) => read.on_frame(hub, conn, &mut reader, f),
            Wake::Frame(Err(e)) => read.on_error(hub, conn, e),
            Wake::Drained(gone) => {
                if gone {
                    Flow::Done
                } else {
                    continue;
                }
            }
        };
        match flow {
            Flow::Continue => {}
            Flow::Drain => {
                reader.release();
                reading = Reading::Drain;
                give_up = Some(give_up.unwrap_or(far()).min(Instant::now() + cfg.close_timeout));
            }
            Flow::Done => {
                reading = Reading::Done;
                hub.unregister(conn);
            }
        }
    }
}
