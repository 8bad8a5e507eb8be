//! The order of one socket's changes to one room while an async room policy (`can_join`)
//! decides: a join that waits for the app is not awaited by the reader (a slow policy must not
//! hold back the socket's other messages), so a `leave-room` sent right after it would apply
//! first and leave the socket in the room. Each change to a (socket, room) that has one in
//! flight takes a `Turn` behind it; the reader goes on with everything else.
//!
//! Bounded: a turn lives as long as the change before it plus its own work, and a policy's wait
//! is bounded by `hookTimeout` counted from the message's arrival, so a socket's chain for a
//! room ends at most `hookTimeout` after its last join; the map holds one entry per (socket,
//! room) with a change in flight and is empty when none is.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Per (socket key, room): the number of the last change queued, and what resolves once it
/// is done (taken by the next change).
type Tails = HashMap<(u64, Arc<str>), (u64, Option<oneshot::Receiver<()>>)>;

/// Changes in flight per (socket, room), in the order the socket sent them.
#[derive(Default)]
pub(crate) struct RoomOrder {
    tails: Arc<Mutex<(u64, Tails)>>,
}

/// One change's place in its (socket, room) chain: `ready` resolves once the change before it
/// is done; dropping the turn marks this one done.
pub(crate) struct Turn {
    tails: Arc<Mutex<(u64, Tails)>>,
    at: (u64, Arc<str>),
    seq: u64,
    prev: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl RoomOrder {
    /// Whether a change to `room` of socket `key` is in flight (a new one must take a turn).
    pub(crate) fn busy(&self, key: u64, room: &str) -> bool {
        let g = self.tails.lock();
        !g.1.is_empty() && g.1.contains_key(&(key, Arc::from(room)))
    }

    /// Queues a change to `room` of socket `key` behind the one in flight, if any.
    pub(crate) fn turn(&self, key: u64, room: &str) -> Turn {
        let (tx, rx) = oneshot::channel();
        let at = (key, Arc::<str>::from(room));
        let mut g = self.tails.lock();
        g.0 += 1;
        let seq = g.0;
        let prev = match g.1.insert(at.clone(), (seq, Some(rx))) {
            Some((_, prev)) => prev,
            None => None,
        };
        drop(g);
        Turn { tails: self.tails.clone(), at, seq, prev, _done: tx }
    }

    /// Changes in flight (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tails.lock().1.len()
    }
}

impl Turn {
    /// Resolves once the change before this one is done (at once if there is none).
    pub(crate) async fn ready(&mut self) {
        if let Some(prev) = self.prev.take() {
            // Err: the change before was dropped (its task ended), which also means done.
            let _ = prev.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut g = self.tails.lock();
        if g.1.get(&self.at).is_some_and(|(seq, _)| *seq == self.seq) {
            g.1.remove(&self.at);
        }
        // `_done` drops after this: the next change's `ready` resolves.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_to_one_room_run_in_order_and_leave_nothing_behind() {
        let order = RoomOrder::default();
        assert!(!order.busy(1, "room:a"));
        let mut first = order.turn(1, "room:a");
        let mut second = order.turn(1, "room:a");
        let mut other = order.turn(2, "room:a");
        assert!(order.busy(1, "room:a") && order.busy(2, "room:a") && !order.busy(1, "room:b"));
        first.ready().await;
        other.ready().await; // another socket's change does not wait
        let waiting = tokio::spawn(async move {
            second.ready().await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second change waits for the first");
        drop(first);
        let second = waiting.await.unwrap();
        assert!(order.busy(1, "room:a"), "the second is still in flight");
        drop(second);
        drop(other);
        assert_eq!(order.len(), 0);
    }
}
