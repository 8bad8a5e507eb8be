//! What the app holds of a socket (`SocketRef`) and what such a handle may ask of the server
//! (`SocketOps`). The trait keeps this layer below the hub: the app's hooks take a `SocketRef`,
//! the hub calls the hooks, and the hub implements `SocketOps` (see `links`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::auth::UserClaims;
use crate::rooms::JoinError;
use crate::socket::Conn;
use crate::stats::Stats;

/// The server as a socket handle sees it.
pub(crate) trait SocketOps: Send + Sync + 'static {
    /// Queues a frame to `conn` (counted in messages out); false if it is closing or over its bound.
    fn deliver(&self, conn: &Conn, frame: Bytes) -> bool;
    /// `deliver` for a pass: the frame is held in the socket's queue, written when the pass
    /// flushes `held` (a socket seen first in the pass joins it).
    fn deliver_held(&self, conn: &Arc<Conn>, frame: Bytes, held: &mut Vec<Arc<Conn>>) -> bool;
    /// Joins `conn` to `room`; `Ok(false)`: already in it (or closing).
    fn join(&self, conn: &Arc<Conn>, room: &str) -> Result<bool, JoinError>;
    /// Leaves `room`; false if not in it.
    fn leave(&self, conn: &Arc<Conn>, room: &str) -> bool;
    /// Sends to every member of `room` on every instance but the socket `except`.
    fn broadcast_everywhere(&self, room: &str, frame: Bytes, except: Option<&str>);
    /// The server's counters (a handler's answer counts its errors and timeouts).
    fn stats(&self) -> &Stats;
}

/// What the app holds of a socket: read its state, send to it, move it between rooms.
#[derive(Clone)]
pub struct SocketRef {
    pub(crate) conn: Arc<Conn>,
    /// The server, through what a handle may ask of it (the hub implements it, above).
    pub(crate) hub: Arc<dyn SocketOps>,
}

impl SocketRef {
    /// Unique id (`<instance>-<n>`).
    pub fn id(&self) -> &str {
        &self.conn.id
    }
    /// The authenticated user, if any.
    pub fn user(&self) -> Option<Arc<UserClaims>> {
        self.conn.user()
    }
    /// Request URL (path and query) of the upgrade.
    pub fn url(&self) -> &str {
        &self.conn.url
    }
    /// Peer address.
    pub fn remote(&self) -> SocketAddr {
        self.conn.remote
    }
    /// When the socket opened.
    pub fn connected_at(&self) -> SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.conn.connected_ms)
    }
    /// Rooms the socket is in.
    pub fn rooms(&self) -> Vec<String> {
        self.conn.rooms.lock().iter().map(|r| r.to_string()).collect()
    }
    /// Queues an encoded frame; false if the socket is closing.
    pub fn send_frame(&self, frame: Bytes) -> bool {
        self.hub.deliver(&self.conn, frame)
    }
    /// Joins a room by its full name (`room:chat:1`, `collection:posts`, …).
    pub fn join(&self, room: &str) -> crate::Result<bool> {
        self.hub.join(&self.conn, room).map_err(|e| match e {
            JoinError::Invalid | JoinError::TooMany => crate::CoreError::InvalidRoom(room.to_string()),
        })
    }
    /// Leaves a room; false if not in it.
    pub fn leave(&self, room: &str) -> bool {
        self.hub.leave(&self.conn, room)
    }
    /// Sends to everyone in `room` but this socket.
    pub fn broadcast(&self, room: &str, frame: Bytes) {
        self.hub.broadcast_everywhere(room, frame, Some(&self.conn.id));
    }
    /// Closes with `code` and `reason` after queued frames are written.
    pub fn close(&self, code: u16, reason: &str) {
        self.conn.close(code, reason, false);
    }
}
