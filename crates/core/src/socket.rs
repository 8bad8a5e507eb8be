//! The record of one open socket (`Conn`): identity, user, liveness stamps, its rooms and its
//! outbound queue. Shared by the socket's tasks, the rooms it is in and the app's handle; knows
//! nothing of the hub.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio::task::AbortHandle;

use crate::auth::UserClaims;
use crate::frame;
use crate::outbound::Outbound;
use crate::socketio_framing::Session;

/// State of one socket, shared by its tasks, the rooms it is in and the app.
pub struct Conn {
    pub(crate) key: u64,
    pub(crate) id: Arc<str>,
    pub(crate) user: RwLock<Option<Arc<UserClaims>>>,
    /// Shared by sockets that asked for the same URL (the upgrade reuses its thread's last one).
    pub(crate) url: Arc<str>,
    pub(crate) remote: SocketAddr,
    /// When the socket opened, ms since the Unix epoch.
    pub(crate) connected_ms: u64,
    /// Last frame of any kind from the peer (ms since the hub's epoch).
    pub(crate) last_seen_ms: AtomicU64,
    /// Last application message from the peer (ms since the hub's epoch).
    pub(crate) last_app_ms: AtomicU64,
    /// Credential expiry, seconds since the Unix epoch; 0 = none.
    pub(crate) exp_s: AtomicU64,
    pub(crate) rooms: Mutex<RoomSet>,
    pub(crate) out: Outbound,
    /// The socket's task (see `writer::run`).
    pub(crate) task: OnceLock<AbortHandle>,
    /// The first close code and reason (ours or the peer's), for the app's disconnect hook.
    pub(crate) close_status: Mutex<Option<(u16, Box<str>)>>,
    /// Set once, before the socket is registered, when it speaks Socket.IO. Boxed: every other
    /// socket would carry the session's bytes inline for nothing.
    pub(crate) socketio: OnceLock<Box<Session>>,
}

impl Conn {
    pub(crate) fn new(
        key: u64,
        id: Arc<str>,
        url: Arc<str>,
        remote: SocketAddr,
        user: Option<UserClaims>,
        max_backpressure: usize,
        now_ms: u64,
    ) -> Self {
        let exp = user.as_ref().and_then(|u| u.exp).unwrap_or(0);
        Self {
            key,
            id,
            user: RwLock::new(user.map(Arc::new)),
            url,
            remote,
            connected_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            last_seen_ms: AtomicU64::new(now_ms),
            last_app_ms: AtomicU64::new(now_ms),
            exp_s: AtomicU64::new(exp),
            rooms: Mutex::new(RoomSet::default()),
            out: Outbound::new(max_backpressure),
            task: OnceLock::new(),
            close_status: Mutex::new(None),
            socketio: OnceLock::new(),
        }
    }

    /// The socket's authenticated user, if any.
    pub fn user(&self) -> Option<Arc<UserClaims>> {
        self.user.read().clone()
    }

    pub(crate) fn set_task(&self, h: AbortHandle) {
        let _ = self.task.set(h);
    }

    /// Stops the socket's task at once (shutdown's last step); its guard unregisters the socket.
    pub(crate) fn kill(&self) {
        if let Some(h) = self.task.get() {
            h.abort();
        }
        self.out.close(None, true);
    }

    /// Starts the closing handshake with `code`; false if already closing.
    pub(crate) fn close(&self, code: u16, reason: &str, discard: bool) -> bool {
        self.note_close(code, reason);
        self.out.close(Some(frame::close(code, reason)), discard)
    }

    /// Remembers the first close code and reason seen.
    pub(crate) fn note_close(&self, code: u16, reason: &str) {
        let mut s = self.close_status.lock();
        if s.is_none() {
            *s = Some((code, reason.into()));
        }
    }

    /// The close code and reason (1006 and "" when the connection dropped without a close).
    pub(crate) fn close_status(&self) -> (u16, Box<str>) {
        self.close_status.lock().clone().unwrap_or((1006, "".into()))
    }
}

/// The rooms a socket is in: a short list while it is in few (most sockets are in their
/// user's room and a handful more: a one-entry hash set holds 96 B of heap, a one-entry list
/// 16 B), a hash set past `FEW`.
#[derive(Default)]
pub(crate) struct RoomSet(Set);

enum Set {
    Few(Vec<Arc<str>>),
    /// Boxed: the list's 24 bytes, not a map's 48, in every socket (the extra allocation is
    /// paid only by sockets in more than `FEW` rooms).
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<Arc<str>>>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Few(Vec::new())
    }
}

/// Rooms kept in a list (searched linearly) before the set switches to hashing.
const FEW: usize = 16;

impl RoomSet {
    pub(crate) fn contains(&self, room: &str) -> bool {
        match &self.0 {
            Set::Few(v) => v.iter().any(|r| &**r == room),
            Set::Many(h) => h.contains(room),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.0 {
            Set::Few(v) => v.len(),
            Set::Many(h) => h.len(),
        }
    }

    /// Adds `room`; false if it was there.
    pub(crate) fn insert(&mut self, room: Arc<str>) -> bool {
        if self.contains(&room) {
            return false;
        }
        match &mut self.0 {
            Set::Few(v) if v.len() < FEW => {
                // Grown one at a time while short: most sockets stay at one or two rooms.
                if v.len() == v.capacity() {
                    v.reserve_exact(if v.len() < 4 { 1 } else { v.len() });
                }
                v.push(room);
            }
            Set::Few(v) => {
                let mut h: HashSet<Arc<str>> = v.drain(..).collect();
                h.insert(room);
                self.0 = Set::Many(Box::new(h));
            }
            Set::Many(h) => {
                h.insert(room);
            }
        }
        true
    }

    /// Removes `room`; false if it was not there.
    pub(crate) fn remove(&mut self, room: &str) -> bool {
        match &mut self.0 {
            Set::Few(v) => match v.iter().position(|r| &**r == room) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            Set::Many(h) => h.remove(room),
        }
    }

    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &Arc<str>> + '_> {
        match &self.0 {
            Set::Few(v) => Box::new(v.iter()),
            Set::Many(h) => Box::new(h.iter()),
        }
    }

    /// Takes every room out.
    pub(crate) fn take(&mut self) -> Vec<Arc<str>> {
        match std::mem::take(&mut self.0) {
            Set::Few(v) => v,
            Set::Many(h) => (*h).into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_set_keeps_its_rooms_across_the_switch_to_hashing() {
        let mut s = RoomSet::default();
        let name = |i: usize| -> Arc<str> { Arc::from(format!("room:{i}")) };
        for i in 0..FEW + 5 {
            assert!(s.insert(name(i)));
            assert!(!s.insert(name(i)), "a second join of the same room");
            assert_eq!(s.len(), i + 1);
        }
        assert!((0..FEW + 5).all(|i| s.contains(&name(i))) && !s.contains("room:x"));
        assert!(s.remove("room:3") && !s.remove("room:3") && !s.contains("room:3"));
        assert_eq!(s.iter().count(), FEW + 4);
        let mut all = s.take();
        all.sort();
        assert_eq!(all.len(), FEW + 4);
        assert_eq!(s.len(), 0);
        let mut few = RoomSet::default();
        assert!(few.insert(name(1)) && few.insert(name(2)) && few.remove("room:1"));
        assert!(few.contains("room:2") && !few.contains("room:1") && few.len() == 1);
    }
}
