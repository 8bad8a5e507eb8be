//! A fan-out pass's cork: the sockets it held frames for (see `Outbound::put`), grouped by the
//! part of a room a socket falls in (its key modulo the worker count), written at the pass's
//! end: one vectored write per socket per pass, the groups on every worker at once when the
//! pass touched many sockets.
//!
//! Consecutive deliveries to one room wait in the cork as a `Run` (one room, its frames in
//! order): the pass then visits each member once for all of them, under one lock of its queue,
//! instead of once per frame. A run ends when the pass delivers anything else (it is then held,
//! like every other delivery: `Hub::settle`) or when the pass ends: the last run is written
//! straight from the member loop (one send per member, nothing queued unless the kernel
//! refuses), before the held groups are flushed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rooms::Room;
use crate::socket::Conn;

/// A pass that held frames for this many sockets or more flushes them on every worker at once.
const SPREAD_AT: usize = 256;

/// Most frames in one run: what one vectored write takes (and `PASS_MAX`).
pub(crate) const RUN_MAX: usize = 64;

/// Frames for every member of one room (but each frame's `except`), in order.
pub(crate) struct Run {
    pub(crate) room: Arc<Room>,
    pub(crate) frames: Vec<Bytes>,
    /// Per frame: the socket key it skips.
    pub(crate) except: Vec<Option<u64>>,
}

impl Run {
    /// Whether some frame skips the socket with `key`.
    pub(crate) fn skips(&self, key: u64) -> bool {
        self.except.contains(&Some(key))
    }

    /// The frames joined into one buffer (see `join`), and their size.
    pub(crate) fn join(&mut self) -> (Option<Bytes>, u64) {
        join(&mut self.frames)
    }
}

/// The frames back to back in one buffer, copied once for a whole run so that each member's
/// write is one iovec, not one per frame (the kernel's per-segment copy cost 7 % of a
/// 10,000-socket fan-out); the frames then become slices of it, for what is queued. Not for a
/// single frame, nor past `JOIN_MAX` bytes: a queued slice keeps the whole buffer alive, and
/// copying large frames saves nothing. Also returns the frames' size in bytes.
pub(crate) fn join(frames: &mut [Bytes]) -> (Option<Bytes>, u64) {
    let len: usize = frames.iter().map(Bytes::len).sum();
    if frames.len() < 2 || len > JOIN_MAX {
        return (None, len as u64);
    }
    let mut all = Vec::with_capacity(len);
    for f in frames.iter() {
        all.extend_from_slice(f);
    }
    let all = Bytes::from(all);
    let mut at = 0;
    for f in frames.iter_mut() {
        let end = at + f.len();
        *f = all.slice(at..end);
        at = end;
    }
    (Some(all), len as u64)
}

/// Most bytes a run's frames are joined into one buffer for (see `Run::join`).
const JOIN_MAX: usize = 64 * 1024;

/// The sockets a pass holds frames for, and the run waiting to be delivered.
pub(crate) struct Cork {
    groups: Vec<Vec<Arc<Conn>>>,
    run: Option<Run>,
}

impl Cork {
    /// A cork for a runtime of `parts` workers.
    pub(crate) fn new(parts: usize) -> Self {
        Self { groups: (0..parts.max(1)).map(|_| Vec::new()).collect(), run: None }
    }

    /// The group a socket with `key` belongs to (the same part as in a split room). The pending
    /// run must have been settled first (`Hub::settle`), or its frames would come later.
    pub(crate) fn group_of(&mut self, key: u64) -> &mut Vec<Arc<Conn>> {
        debug_assert!(self.run.is_none(), "a delivery overtook the pending run");
        let n = self.groups.len() as u64;
        &mut self.groups[(key % n) as usize]
    }

    /// Adds `frame` for `room`'s members but `except` to the pending run; `Err` gives it back
    /// when it cannot join (another room's run, or a full one): settle, then extend again.
    pub(crate) fn extend(
        &mut self,
        room: &Arc<Room>,
        frame: Bytes,
        except: Option<u64>,
    ) -> Result<(), Bytes> {
        match &mut self.run {
            Some(r) if Arc::ptr_eq(&r.room, room) && r.frames.len() < RUN_MAX => {
                r.frames.push(frame);
                r.except.push(except);
                Ok(())
            }
            None => {
                self.run = Some(Run { room: room.clone(), frames: vec![frame], except: vec![except] });
                Ok(())
            }
            Some(_) => Err(frame),
        }
    }

    /// Takes the pending run (to deliver it).
    pub(crate) fn take_run(&mut self) -> Option<Run> {
        self.run.take()
    }

    /// Takes the sockets a part task of a split room held frames for (part `i`).
    pub(crate) fn absorb(&mut self, i: usize, held: Vec<Arc<Conn>>) {
        let n = self.groups.len();
        let group = &mut self.groups[i % n];
        if group.is_empty() {
            *group = held;
        } else {
            group.extend(held);
        }
    }

    /// Writes every held socket's frames; returns once all are written (or left to the
    /// sockets' writers), so the next pass's frames come after them. The run must have been
    /// delivered (`Hub::finish`).
    pub(crate) async fn flush(self) {
        debug_assert!(self.run.is_none(), "the pending run was never delivered");
        let total: usize = self.groups.iter().map(Vec::len).sum();
        let mut groups = self.groups.into_iter().filter(|g| !g.is_empty());
        if total < SPREAD_AT {
            groups.for_each(|g| flush_group(&g));
            return;
        }
        let Some(first) = groups.next() else { return };
        let tasks: Vec<_> = groups.map(|g| tokio::spawn(async move { flush_group(&g) })).collect();
        flush_group(&first);
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Writes each socket's held frames (one vectored write per socket).
pub(crate) fn flush_group(group: &[Arc<Conn>]) {
    let mut pacer = Pacer::new();
    for c in group {
        c.out.flush();
        pacer.step();
    }
}

/// Most time a pass spends writing before it lets a thread that waits for its core run.
const YIELD_EVERY: Duration = Duration::from_micros(250);

/// Keeps a long pass from holding its core: the app's JS thread, when it shares the core with
/// a worker, would otherwise wait until the kernel preempts the worker, a scheduler tick away
/// (4 ms at 250 Hz; seen as 3-10 ms event-loop delays with `perf sched timehist` at 1,000
/// fast readers, the worker running 5-10 ms while Node was runnable). A yield costs a syscall
/// every `YIELD_EVERY` and returns at once when nothing else waits.
pub(crate) struct Pacer {
    since: Instant,
    steps: u32,
}

impl Pacer {
    pub(crate) fn new() -> Self {
        Self { since: Instant::now(), steps: 0 }
    }

    /// One socket written; now and then the time is checked, and the thread yields.
    pub(crate) fn step(&mut self) {
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(16) && self.since.elapsed() >= YIELD_EVERY {
            std::thread::yield_now();
            self.since = Instant::now();
        }
    }
}
