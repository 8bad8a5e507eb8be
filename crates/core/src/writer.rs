//! One WebSocket connection's task: its read side (`connection`), draining what producers could
//! not write directly (see `outbound`) with vectored writes, and the socket's timers (heartbeat
//! ping and pong deadline, idle and credential expiry, the slow-consumer stall check, the
//! closing handshake's deadlines).

use std::future::Future;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Timers the writer keeps, in hub ms (`Hub::now_ms`): 8 bytes each where an `Instant` takes
/// 16, in every idle socket's future (timers fire at ms precision anyway).
struct Timers {
    next_ping: u64,
    /// When a ping is unanswered: sent at (its deadline is `pong_timeout` later); `NONE`.
    pong: u64,
    /// The queue holds data the writer has not got onto the wire yet.
    busy: bool,
    /// The socket is closing (its close frame is queued).
    closing: bool,
    /// Last time the writer got bytes out (or became busy).
    progress: u64,
    /// When to look at `progress` again while busy; moved only at a busy transition or when
    /// it fires, not per write, so a steady stream does not churn the timer wheel.
    stall_check: u64,
    /// `exp_s` in hub ms, recomputed only when `exp_s` changes (a re-auth): reading both clocks
    /// on every wake-up of the writer cost ~3 % of a fan-out's CPU.
    expiry: (u64, u64),
}

/// No time set (an unanswered ping, a drain deadline).
const NONE: u64 = u64::MAX;

/// A deadline that never comes (about 30 years after the hub started; as an `Instant` it must
/// not overflow, so not `NONE`).
const FAR: u64 = 30 * 365 * 24 * 3600 * 1000;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(FAR)
}

enum Tick {
    Continue,
    Kill,
}

fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Timers {
    /// How long the writer may make no progress: a reading peer always does. Past it an open
    /// socket is closed 1013 (queue dropped); a closing one that still takes nothing is dropped.
    /// (Once its close frame is out, a peer gets `close_timeout` to answer: see `write_loop`.)
    fn stall_limit(&self, hub: &Hub) -> u64 {
        ms(hub.config.slow_consumer_timeout)
    }

    /// Records what the last refill saw.
    fn note(&mut self, hub: &Hub, busy: bool, closing: bool) {
        if closing && !self.closing {
            self.closing = true;
            self.stall_check = hub.now_ms() + self.stall_limit(hub);
        }
        if busy && !self.busy {
            self.progress = hub.now_ms();
            self.stall_check = self.progress + self.stall_limit(hub);
        }
        self.busy = busy;
    }

    /// The next time a timer is due, in hub ms.
    fn deadline(&mut self, hub: &Hub, conn: &Conn) -> u64 {
        let cfg = &hub.config;
        let mut d = self.next_ping;
        if self.pong != NONE {
            d = d.min(self.pong + ms(cfg.pong_timeout));
        }
        if self.busy || self.closing {
            d = d.min(self.stall_check);
        }
        if self.closing {
            // Closing: idle and expiry have done their part; their past deadlines would spin.
            return d;
        }
        if let Some(idle) = cfg.idle_timeout {
            d = d.min(conn.last_app_ms.load(Relaxed) + ms(idle));
        }
        let exp = conn.exp_s.load(Relaxed);
        if exp != 0 {
            if self.expiry.0 != exp {
                // Saturating far off rather than overflowing (an `exp` near `u64::MAX`).
                let left = exp.saturating_sub(unix_now_s()).min(FAR / 1000);
                self.expiry = (exp, hub.now_ms().saturating_add(left * 1000));
            }
            d = d.min(self.expiry.1);
        }
        d
    }

    fn tick(&mut self, hub: &Hub, conn: &Conn) -> Tick {
        let cfg = &hub.config;
        let now = hub.now_ms();
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
        if self.pong != NONE {
            if conn.last_seen_ms.load(Relaxed) >= self.pong {
                self.pong = NONE;
            } else if now >= self.pong + ms(cfg.pong_timeout) {
                hub.stats.pong_timeouts.fetch_add(1, Relaxed);
                return Tick::Kill;
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + ms(cfg.heartbeat);
            if self.pong == NONE && hub.deliver(conn, frame::ping()) {
                self.pong = hub.now_ms();
            }
        }
        if let Some(idle) = cfg.idle_timeout {
            if now.saturating_sub(conn.last_app_ms.load(Relaxed)) >= ms(idle)
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

/// Refills the task's batch from the queue (see `Batch::refill`), making the batch only when
/// there is something to write; also says whether the socket is closing.
fn refill(batch: &mut Option<Box<Batch>>, out: &crate::outbound::Outbound) -> (Next, bool) {
    if let Some(b) = batch {
        return (b.refill(out), b.closing);
    }
    let mut b = Batch::new();
    let next = b.refill(out);
    let closing = b.closing;
    // Nothing to write: the fresh batch holds nothing worth keeping.
    if !matches!(next, Next::Wait) {
        *batch = Some(Box::new(b));
    }
    (next, closing)
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
    let Some(sock) = conn.out.sock() else {
        conn.out.close(None, true);
        return;
    };
    let mut read = ReadSide::open(hub, conn, info);
    let mut reading = Reading::Frames;
    // What the task is writing: boxed and made only once the socket first has something to
    // write that producers could not (most idle sockets never do: 48 bytes off their future).
    let mut batch: Option<Box<Batch>> = None;
    let now = hub.now_ms();
    let mut timers = Timers {
        next_ping: now + ms(hub.config.heartbeat),
        pong: NONE,
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
    // went out, or after we stopped reading to drain (whichever came first); `NONE` until then.
    let mut give_up = NONE;
    // The kernel refused the last write: wait until the socket is writable.
    let mut blocked = false;
    // One timer for the task's life, moved only when the deadline changes: a fresh `sleep_until`
    // per wake-up would register and cancel a timer-wheel entry for every delivery.
    let timer = sleep_until(hub.instant_of(timers.next_ping).into());
    tokio::pin!(timer);
    loop {
        if !lingering {
            // Write as much as the kernel takes now; one look at the queue per refill (it also
            // reports whether the socket is closing).
            loop {
                let (next, closing) = refill(&mut batch, &conn.out);
                timers.note(hub, matches!(next, Next::Write), closing);
                match next {
                    Next::Done => {
                        lingering = true;
                        break;
                    }
                    Next::Wait => {
                        blocked = false;
                        break;
                    }
                    Next::Write => {
                        let b = batch.as_deref_mut().expect("refill keeps the batch it has frames in");
                        match b.try_write(sock) {
                            Ok(0) => {
                                conn.out.close(None, true);
                                return;
                            }
                            Ok(n) => {
                                timers.progress = hub.now_ms();
                                if b.advance(&conn.out, n) && b.ends {
                                    lingering = true;
                                    break;
                                }
                                // A socket that keeps taking everything never waits below: its
                                // timers (ping, idle, expiry) still run when due.
                                if timer.deadline() <= hub.instant_of(timers.progress).into() {
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
                        }
                    }
                }
            }
            if lingering {
                // Close frame written (or nothing left to say): half-close; the peer gets
                // `close_timeout` to answer before the socket is dropped.
                let _ = SockRef::from(sock.as_ref()).shutdown(Shutdown::Write);
                give_up = give_up.min(hub.now_ms() + ms(hub.config.close_timeout));
            }
        }
        if reading == Reading::Done && lingering {
            return;
        }
        let deadline = if lingering { FAR } else { timers.deadline(hub, conn) };
        let deadline = hub.instant_of(deadline.min(give_up).min(FAR)).into();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let writing = !lingering;
        // One poll over everything the task waits for, in this order (timers first, reading
        // last): no branch keeps a future of its own in the task's future.
        // The closure takes the flags by value and the rest by one reference each: what it
        // captures sits in every idle socket's future.
        let (mut timer_now, read_now, reader_now) = (timer.as_mut(), &mut read, &mut reader);
        let (pong, blocked_now, reading_now) = (timers.pong, blocked, reading);
        let wake = std::future::poll_fn(move |cx| {
            if timer_now.as_mut().poll(cx).is_ready() {
                // A pong may already sit in the socket's buffer (the task was held up past its
                // deadline: a stalled runtime): read before the deadline is judged, while the
                // ping is unanswered (one frame from the peer answers it: no flood starves the
                // timers).
                let unanswered = pong != NONE && conn.last_seen_ms.load(Relaxed) < pong;
                if unanswered && reading_now == Reading::Frames && read_now.wait.is_none() {
                    if let Poll::Ready(f) = reader_now.poll_next(cx) {
                        return Poll::Ready(Wake::Frame(f));
                    }
                }
                return Poll::Ready(Wake::Timer);
            }
            if writing {
                if conn.out.notify.poll_notified(cx).is_ready() {
                    return Poll::Ready(Wake::Queue);
                }
                if blocked_now {
                    if let Poll::Ready(r) = sock.as_ref().poll_write_ready(cx) {
                        return Poll::Ready(Wake::Writable(r.is_ok()));
                    }
                }
            }
            match reading_now {
                Reading::Frames => match read_now.wait.as_mut() {
                    Some(w) => w.as_mut().poll(cx).map(|()| Wake::Waited),
                    None => reader_now.poll_next(cx).map(Wake::Frame),
                },
                Reading::Drain => reader_now.poll_discard(cx).map(Wake::Drained),
                Reading::Done => Poll::Pending,
            }
        })
        .await;
        let flow = match wake {
            Wake::Timer => {
                if hub.now_ms() >= give_up {
                    if lingering {
                        return; // the peer never closed its side
                    }
                    give_up = NONE;
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
                give_up = give_up.min(hub.now_ms() + ms(hub.config.close_timeout));
            }
            Flow::Done => {
                reading = Reading::Done;
                hub.unregister(conn);
            }
        }
    }
}
