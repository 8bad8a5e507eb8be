//! Membership: a socket entering and leaving the registry and its rooms, with what follows a
//! room change (presence events, backplane interest, cluster-wide presence), and a socket
//! taking on a user.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::auth::UserClaims;
use crate::config::glob_match;
use crate::dispatch::Command;
use crate::frame;
use crate::hub::Hub;
use crate::presence::Presence;
use crate::protocol;
use crate::rooms::{JoinError, Member};
use crate::socket::Conn;

impl Hub {
    fn member_of(&self, conn: &Conn) -> Member {
        let u = conn.user();
        Member {
            socket_id: conn.id.to_string(),
            user_id: u.as_ref().map(|u| u.id.clone()),
            user_collection: u.as_ref().map(|u| u.collection.clone()),
            instance: self.instance.clone(),
        }
    }

    /// Bookkeeping after a socket entered (`on`) or left a room: presence events, backplane
    /// interest, cluster-wide presence.
    fn room_changed(&self, conn: &Conn, room: &str, on: bool, room_created_or_removed: bool) {
        self.audience.invalidate();
        if !self.config.presence_events.is_empty()
            && self.config.presence_events.iter().any(|p| glob_match(p, room))
        {
            let user = conn.user().map_or_else(|| "null".to_string(), |u| u.id_json.clone());
            let interval = self.config.presence_interval;
            if let Presence::Now(json, delay) = self.presence.change(room, &conn.id, &user, on, interval) {
                self.broadcast_queued(room, frame::text(json.as_bytes()), Some(&conn.id));
                self.schedule_presence_flush(room.to_string(), delay);
            }
        }
        if !self.distributed() {
            return;
        }
        if room_created_or_removed {
            self.backplane().interest(room, on);
        }
        self.backplane().presence(room, &self.member_of(conn), on);
    }

    /// A broadcast of the server's own (presence): through the fan-out queue like the app's, so
    /// members get it in order with what was sent to the room before it, and the fan-out, not
    /// the caller (a joining socket's task), pushes it to every member. When the queue refuses
    /// it (full, or the server stopping) it goes out at once instead: out of order, not lost.
    fn broadcast_queued(&self, room: &str, frame: Bytes, except: Option<&str>) {
        let cmd = Command::Broadcast {
            room: room.to_string(),
            frame: frame.clone(),
            except: except.map(str::to_string),
        };
        if self.dispatch.submit(cmd, false).is_err() {
            self.broadcast_everywhere(room, frame, except);
        }
    }

    /// Sends a room's merged presence changes when its interval ends (on the server's runtime:
    /// joins also come from the JS thread, which has none).
    fn schedule_presence_flush(&self, room: String, delay: Duration) {
        let (Some(rt), Some(me)) = (self.runtime.get(), self.me.get().and_then(std::sync::Weak::upgrade))
        else {
            return;
        };
        rt.spawn(async move {
            let mut delay = delay;
            loop {
                tokio::time::sleep(delay).await;
                let (frame, again) = me.presence.flush(&room, me.config.presence_interval);
                if let Some(json) = frame {
                    me.broadcast_queued(&room, frame::text(json.as_bytes()), None);
                }
                match again {
                    Some(d) => delay = d,
                    None => return,
                }
            }
        });
    }

    pub(crate) fn register(&self, conn: &Arc<Conn>) {
        self.sockets.insert(conn);
        self.stats.connections.fetch_add(1, Relaxed);
        self.stats.connects.fetch_add(1, Relaxed);
    }

    /// Removes a socket from every room and from the registry (idempotent).
    pub(crate) fn unregister(&self, conn: &Arc<Conn>) {
        // Without discarding: a close frame (and what precedes it) may still be on its way out.
        conn.out.close(None, false);
        let rooms: Vec<Arc<str>> = conn.rooms.lock().take();
        for r in &rooms {
            let removed = self.rooms.remove(r, conn.key);
            self.room_changed(conn, r, false, removed);
        }
        if self.sockets.remove(conn.key) {
            self.stats.connections.fetch_sub(1, Relaxed);
            self.stats.disconnects.fetch_add(1, Relaxed);
            self.slots.fetch_sub(1, Relaxed);
            let (code, reason) = conn.close_status();
            self.hooks.on_close(&conn.id, code, &reason);
        }
    }

    pub(crate) fn join(&self, conn: &Arc<Conn>, room: &str) -> Result<bool, JoinError> {
        if !protocol::valid_room(room) {
            return Err(JoinError::Invalid);
        }
        let mut mine = conn.rooms.lock();
        if mine.contains(room) {
            return Ok(false);
        }
        if mine.len() >= self.config.max_rooms_per_socket {
            return Err(JoinError::TooMany);
        }
        if conn.out.is_closed() {
            return Ok(false);
        }
        let name: Arc<str> = Arc::from(room);
        mine.insert(name.clone());
        let created = self.rooms.insert(&name, conn);
        drop(mine);
        self.room_changed(conn, room, true, created);
        Ok(true)
    }

    pub(crate) fn leave(&self, conn: &Arc<Conn>, room: &str) -> bool {
        let mut mine = conn.rooms.lock();
        if !mine.remove(room) {
            return false;
        }
        let removed = self.rooms.remove(room, conn.key);
        drop(mine);
        self.room_changed(conn, room, false, removed);
        true
    }

    pub(crate) fn members(&self, room: &str) -> Vec<Member> {
        let Some(r) = self.rooms.get(room) else { return Vec::new() };
        r.members().iter().map(|c| self.member_of(c)).collect()
    }
}

/// Makes `claims` the socket's user (verified by the caller) and moves its expiry.
pub(crate) fn adopt_user(hub: &Hub, conn: &Conn, claims: UserClaims) {
    let exp = claims.exp.unwrap_or(0);
    *conn.user.write() = Some(Arc::new(claims));
    hub.audience.invalidate();
    conn.exp_s.store(exp, Relaxed);
    conn.out.notify.notify_one(); // the writer re-reads the expiry
}
