//! The record of one open socket (`Conn`): identity, user, liveness stamps, its rooms and its
//! outbound queue. Shared by the socket's tasks, the rooms it is in and the app's handle; knows
//! nothing of the hub.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

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
    pub(crate) url: Box<str>,
    pub(crate) remote: SocketAddr,
    pub(crate) connected_at: SystemTime,
    /// Last frame of any kind from the peer (ms since the hub's epoch).
    pub(crate) last_seen_ms: AtomicU64,
    /// Last application message from the peer (ms since the hub's epoch).
    pub(crate) last_app_ms: AtomicU64,
    /// Credential expiry, seconds since the Unix epoch; 0 = none.
    pub(crate) exp_s: AtomicU64,
    pub(crate) rooms: Mutex<HashSet<Arc<str>>>,
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
        url: &str,
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
            url: url.into(),
            remote,
            connected_at: SystemTime::now(),
            last_seen_ms: AtomicU64::new(now_ms),
            last_app_ms: AtomicU64::new(now_ms),
            exp_s: AtomicU64::new(exp),
            rooms: Mutex::new(HashSet::new()),
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
