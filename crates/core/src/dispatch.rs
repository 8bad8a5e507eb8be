//! Scheduling of fan-out commands (`emitEvent`, `broadcastToRoom`, `sendToSocket`, deliveries
//! from other instances). Order is kept per room, not globally: a command that needs no JS
//! runs at once on the dispatcher task, unless an earlier command for one of its rooms still
//! waits; an event that needs the app's `authorize` goes to its collection's lane, a task of its
//! own, and later commands for the rooms it holds queue behind it in that lane. So a slow
//! authorize delays only what a subscriber of those rooms could see out of order.
//!
//! Bounded: at most `maxPendingCommands` commands and `maxPendingBytes` payload bytes wait at
//! once; past either the app's call is refused with EBUSY (nothing queued). Past half of
//! either the call succeeds but reports saturation (`false`), and `drained` resolves once the
//! queue is back under a quarter.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::backplane::Remote;
use crate::hub::{Command, Hub};

/// Why a command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Over `maxPendingCommands` or `maxPendingBytes`.
    Busy,
    /// The dispatcher is gone (the server stopped).
    Closed,
}

struct Queued {
    cmd: Command,
    rooms: Vec<String>,
}

#[derive(Default)]
struct Lanes {
    /// Commands waiting per lane; a lane is present while its task runs.
    queues: HashMap<Arc<str>, VecDeque<Queued>>,
    /// Rooms with a command waiting in a lane: the lane, and how many of its commands name it.
    owners: HashMap<String, (Arc<str>, usize)>,
}

/// The bounded queue of fan-out commands and its lanes.
pub(crate) struct Dispatch {
    tx: mpsc::UnboundedSender<Command>,
    pending: AtomicUsize,
    pending_bytes: AtomicUsize,
    max: usize,
    max_bytes: usize,
    drained: Notify,
    lanes: Mutex<Lanes>,
}

impl Command {
    /// Payload bytes the command holds while it waits.
    fn bytes(&self) -> usize {
        match self {
            Command::Broadcast { frame, .. } | Command::Send { frame, .. } => frame.len(),
            Command::Emit(ev) => ev.doc_json.len() + ev.id_json.len() + 64,
            Command::Remote(
                Remote::Room { frame, .. } | Remote::Event { frame, .. } | Remote::Socket { frame, .. },
            ) => frame.len(),
            Command::Remote(_) => 64,
        }
    }
}

impl Dispatch {
    pub(crate) fn new(max: usize, max_bytes: usize) -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let d = Self {
            tx,
            pending: AtomicUsize::new(0),
            pending_bytes: AtomicUsize::new(0),
            max,
            max_bytes,
            drained: Notify::new(),
            lanes: Mutex::new(Lanes::default()),
        };
        (d, rx)
    }

    /// Queues `cmd`; `Ok(false)` when the queue is more than half full (slow down).
    pub(crate) fn submit(&self, cmd: Command) -> Result<bool, Refused> {
        let bytes = cmd.bytes();
        let n = self.pending.fetch_add(1, Relaxed) + 1;
        let b = self.pending_bytes.fetch_add(bytes, Relaxed) + bytes;
        if n > self.max || b > self.max_bytes {
            self.pending.fetch_sub(1, Relaxed);
            self.pending_bytes.fetch_sub(bytes, Relaxed);
            return Err(Refused::Busy);
        }
        if self.tx.send(cmd).is_err() {
            self.pending.fetch_sub(1, Relaxed);
            self.pending_bytes.fetch_sub(bytes, Relaxed);
            return Err(Refused::Closed);
        }
        Ok(n <= self.max / 2 && b <= self.max_bytes / 2)
    }

    fn done(&self, bytes: usize) {
        let n = self.pending.fetch_sub(1, Relaxed) - 1;
        let b = self.pending_bytes.fetch_sub(bytes, Relaxed) - bytes;
        if n <= self.max / 4 && b <= self.max_bytes / 4 {
            self.drained.notify_waiters();
        }
    }

    /// Commands queued and not yet run.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// Resolves once at most `n` commands wait.
    pub(crate) async fn wait_until(&self, n: usize) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(Relaxed) <= n {
                return;
            }
            // `done` only notifies under a quarter; poll past that for smaller targets.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(5), notified).await;
        }
    }

    /// Resolves once the queue is back under a quarter of its bounds.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(Relaxed) <= self.max / 4
                && self.pending_bytes.load(Relaxed) <= self.max_bytes / 4
            {
                return;
            }
            notified.await;
        }
    }
}

/// The rooms a command delivers to, for ordering, and whether it must ask the app first.
fn rooms_of(hub: &Hub, cmd: &Command) -> (Vec<String>, Option<Arc<str>>) {
    match cmd {
        Command::Broadcast { room, .. } | Command::Remote(Remote::Room { room, .. }) => {
            (vec![room.clone()], None)
        }
        Command::Emit(ev) => {
            let js = hub.hooks.authorizes(&ev.collection).then(|| Arc::from(ev.collection.as_str()));
            (ev.rooms(), js)
        }
        Command::Remote(Remote::Event { collection, rooms, index, .. }) => {
            let js = hub.hooks.authorizes(collection).then(|| Arc::from(collection.as_str()));
            (rooms.iter().take(usize::from(*index) + 1).cloned().collect(), js)
        }
        Command::Send { .. } | Command::Remote(_) => (Vec::new(), None),
    }
}

/// The dispatcher task: runs what can run now, hands the rest to lanes.
pub(crate) async fn run(hub: Arc<Hub>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let _up = crate::supervise::Required {
        stats: &hub.stats,
        name: "fan-out dispatcher",
        stopping: &hub.shutting_down,
    };
    while let Some(cmd) = rx.recv().await {
        let (rooms, js_lane) = rooms_of(&hub, &cmd);
        let spawn = {
            let mut lanes = hub.dispatch.lanes.lock();
            let held = rooms.iter().find_map(|r| lanes.owners.get(r).map(|(l, _)| l.clone()));
            match held.or(js_lane) {
                None => Err(cmd),
                Some(lane) => {
                    for r in &rooms {
                        lanes.owners.entry(r.clone()).or_insert_with(|| (lane.clone(), 0)).1 += 1;
                    }
                    let fresh = !lanes.queues.contains_key(&lane);
                    lanes.queues.entry(lane.clone()).or_default().push_back(Queued { cmd, rooms });
                    Ok(fresh.then_some(lane))
                }
            }
        };
        match spawn {
            Err(cmd) => run_one(&hub, cmd).await,
            Ok(Some(lane)) => {
                tokio::spawn(run_lane(hub.clone(), lane));
            }
            Ok(None) => {}
        }
    }
}

/// One lane: its commands in order, then the lane is removed.
async fn run_lane(hub: Arc<Hub>, lane: Arc<str>) {
    loop {
        let next = {
            let mut lanes = hub.dispatch.lanes.lock();
            match lanes.queues.get_mut(&lane).and_then(VecDeque::pop_front) {
                Some(q) => q,
                None => {
                    lanes.queues.remove(&lane);
                    return;
                }
            }
        };
        run_one(&hub, next.cmd).await;
        let mut lanes = hub.dispatch.lanes.lock();
        for r in next.rooms {
            if let Some(o) = lanes.owners.get_mut(&r) {
                o.1 -= 1;
                if o.1 == 0 {
                    lanes.owners.remove(&r);
                }
            }
        }
    }
}

async fn run_one(hub: &Arc<Hub>, cmd: Command) {
    let bytes = cmd.bytes();
    crate::supervise::guarded(&hub.stats, "a fan-out command", hub.run_command(cmd)).await;
    hub.dispatch.done(bytes);
}
