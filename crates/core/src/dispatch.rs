//! The bounded queue of fan-out commands (`emitEvent`, `broadcastToRoom`, `sendToSocket`,
//! presence frames, deliveries from other instances) and the lanes' bookkeeping. Order is kept
//! per room, not globally (`lanes` runs them), so a slow authorize delays only what a
//! subscriber of those rooms could see out of order.
//!
//! Bounded: at most `maxPendingCommands` commands and `maxPendingBytes` payload bytes wait at
//! once; past either the app's call is refused with EBUSY (nothing queued). Past half of
//! either the call succeeds but reports saturation (`false`), and `drained` resolves once the
//! queue is back under a quarter.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::backplane::Remote;
use crate::event::Event;
use crate::hooks::AppHooks;

/// A fan-out the app (or another instance) asked for.
pub(crate) enum Command {
    Broadcast {
        room: String,
        frame: Bytes,
        except: Option<String>,
    },
    Send {
        socket_id: String,
        frame: Bytes,
    },
    Emit(Event),
    /// Something another instance published.
    Remote(Remote),
}

/// Why a command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Over `maxPendingCommands` or `maxPendingBytes`.
    Busy,
    /// The dispatcher is gone (the server stopped).
    Closed,
}

pub(crate) struct Queued {
    pub(crate) cmd: Command,
    pub(crate) rooms: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Lanes {
    /// Commands waiting per lane; a lane is present while its task runs.
    pub(crate) queues: HashMap<Arc<str>, VecDeque<Queued>>,
    /// Rooms with a command waiting in a lane: the lane, and how many of its commands name it.
    pub(crate) owners: HashMap<String, (Arc<str>, usize)>,
}

/// The bounded queue of fan-out commands and its lanes.
pub(crate) struct Dispatch {
    tx: mpsc::UnboundedSender<Command>,
    pending: AtomicUsize,
    pending_bytes: AtomicUsize,
    max: usize,
    max_bytes: usize,
    drained: Notify,
    /// Commands submitted with `hold` (an app thread's burst), waiting for `flush`. The lock is
    /// held while they are sent, so the queue keeps submission order.
    held: Mutex<Vec<Command>>,
    pub(crate) lanes: Mutex<Lanes>,
}

impl Command {
    /// Payload bytes the command holds while it waits.
    pub(crate) fn bytes(&self) -> usize {
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
            held: Mutex::new(Vec::new()),
            lanes: Mutex::new(Lanes::default()),
        };
        (d, rx)
    }

    /// Queues `cmd` (`hold`: it waits for `flush`, counted against the bounds already);
    /// `Ok(false)` when the queue is more than half full (slow down).
    pub(crate) fn submit(&self, cmd: Command, hold: bool) -> Result<bool, Refused> {
        let bytes = cmd.bytes();
        let n = self.pending.fetch_add(1, Relaxed) + 1;
        let b = self.pending_bytes.fetch_add(bytes, Relaxed) + bytes;
        if n > self.max || b > self.max_bytes {
            self.release(bytes);
            return Err(Refused::Busy);
        }
        let mut held = self.held.lock();
        if hold {
            held.push(cmd);
        } else {
            // Held commands were submitted first: they go first.
            self.send_held(&mut held);
            if self.tx.send(cmd).is_err() {
                self.release(bytes);
                return Err(Refused::Closed);
            }
        }
        Ok(n <= self.max / 2 && b <= self.max_bytes / 2)
    }

    /// Sends the held commands on, in order.
    pub(crate) fn flush(&self) {
        self.send_held(&mut self.held.lock());
    }

    /// Returns once no flush is sending (see `lanes::run`).
    pub(crate) fn wait_for_flush(&self) {
        drop(self.held.lock());
    }

    fn send_held(&self, held: &mut Vec<Command>) {
        for cmd in held.drain(..) {
            let bytes = cmd.bytes();
            if self.tx.send(cmd).is_err() {
                self.release(bytes); // the dispatcher is gone: the server has stopped
            }
        }
    }

    /// Gives back one command's share of the bounds (refused, or never to run).
    fn release(&self, bytes: usize) {
        self.pending.fetch_sub(1, Relaxed);
        self.pending_bytes.fetch_sub(bytes, Relaxed);
    }

    /// `cmds` commands holding `bytes` finished (their frames are in the sockets' queues or
    /// on the wire): their share of the bounds is free again.
    pub(crate) fn done(&self, cmds: usize, bytes: usize) {
        if cmds == 0 {
            return;
        }
        let n = self.pending.fetch_sub(cmds, Relaxed) - cmds;
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
pub(crate) fn rooms_of(hooks: &dyn AppHooks, cmd: &Command) -> (Vec<String>, Option<Arc<str>>) {
    match cmd {
        Command::Broadcast { room, .. } | Command::Remote(Remote::Room { room, .. }) => {
            (vec![room.clone()], None)
        }
        Command::Emit(ev) => {
            let js = hooks.authorizes(&ev.collection).then(|| Arc::from(ev.collection.as_str()));
            (ev.rooms(), js)
        }
        Command::Remote(Remote::Event { collection, rooms, index, .. }) => {
            let js = hooks.authorizes(collection).then(|| Arc::from(collection.as_str()));
            (rooms.iter().take(usize::from(*index) + 1).cloned().collect(), js)
        }
        Command::Send { .. } | Command::Remote(_) => (Vec::new(), None),
    }
}
