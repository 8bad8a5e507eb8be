//! The hub seen through the traits the layers below it define: what a socket handle may ask
//! (`SocketOps`, behind the app's `SocketRef`) and where a backplane delivers what other
//! instances published (`Inbox`). Those layers never name the hub itself.

use std::sync::Arc;

use bytes::Bytes;

use crate::backplane::{Inbox, Remote};
use crate::dispatch::Command;
use crate::hub::Hub;
use crate::rooms::{JoinError, Member};
use crate::socket::Conn;
use crate::socket_ref::{SocketOps, SocketRef};
use crate::socketio_framing::FanFrame;
use crate::stats::Stats;

impl SocketOps for Hub {
    fn deliver(&self, conn: &Conn, frame: Bytes) -> bool {
        Hub::deliver(self, conn, frame)
    }
    fn deliver_held(&self, conn: &Arc<Conn>, frame: Bytes, held: &mut Vec<Arc<Conn>>) -> bool {
        let len = frame.len() as u64;
        let queued = self.push_held(conn, &FanFrame::new(frame), held);
        if queued {
            self.stats.messages_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.stats.bytes_out.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        }
        queued
    }
    fn join(&self, conn: &Arc<Conn>, room: &str) -> Result<bool, JoinError> {
        Hub::join(self, conn, room)
    }
    fn leave(&self, conn: &Arc<Conn>, room: &str) -> bool {
        Hub::leave(self, conn, room)
    }
    fn broadcast_everywhere(&self, room: &str, frame: Bytes, except: Option<&str>) {
        Hub::broadcast_everywhere(self, room, frame, except)
    }
    fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Inbox for Hub {
    fn max_frame(&self) -> usize {
        self.config.max_backpressure
    }
    fn receive(&self, msg: Remote) -> bool {
        self.dispatch.submit(Command::Remote(msg), false).is_ok()
    }
    fn room_sizes(&self) -> Vec<(String, usize)> {
        self.rooms.sizes()
    }
    fn members(&self, room: &str) -> Vec<Member> {
        Hub::members(self, room)
    }
    fn stats(&self) -> &Stats {
        &self.stats
    }
    fn stopping(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Hub {
    /// The app's handle on one of this instance's sockets.
    pub(crate) fn socket_ref(self: &Arc<Self>, id: &str) -> Option<SocketRef> {
        self.conn(id).map(|conn| self.handle(conn))
    }

    /// The app's handle on `conn`.
    pub(crate) fn handle(self: &Arc<Self>, conn: Arc<Conn>) -> SocketRef {
        SocketRef { conn, hub: self.clone() }
    }
}
