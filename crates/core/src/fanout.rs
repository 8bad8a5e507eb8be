//! Fan-out: putting one encoded frame on many sockets' queues (each `Bytes` shared, never
//! copied), locally and through the backplane, and closing sockets by user or session.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use crate::auth::UserClaims;
use crate::backplane::Remote;
use crate::hub::Hub;
use crate::outbound::Push;
use crate::protocol::close_codes;
use crate::rooms::ALL_SOCKETS;
use crate::socket::Conn;
use crate::socketio_framing;
use crate::sockets::Sockets;

impl Hub {
    /// Queues a frame to one socket; a socket over its byte bound is closed 1013.
    pub(crate) fn deliver(&self, conn: &Conn, frame: Bytes) -> bool {
        let len = frame.len() as u64;
        let queued = self.push(conn, frame);
        if queued {
            self.stats.messages_out.fetch_add(1, Relaxed);
            self.stats.bytes_out.fetch_add(len, Relaxed);
        }
        queued
    }

    /// Queues without counting: a fan-out counts its `n` deliveries of one frame once
    /// (`count_fanout`), not per socket, since every core would contend on those counters.
    pub(crate) fn push(&self, conn: &Conn, frame: Bytes) -> bool {
        // Socket.IO sockets get the frame in their framing (built once per fan-out and thread).
        let frame = match conn.socketio.get() {
            None => frame,
            Some(s) => match socketio_framing::outbound(&self.config, s, frame) {
                Some(f) => f,
                None => return true, // nothing for Socket.IO clients (e.g. `welcome`)
            },
        };
        match conn.out.push(frame) {
            Push::Queued => true,
            Push::Overflow => {
                if conn.close(close_codes::SLOW_CONSUMER, "slow consumer", true) {
                    self.stats.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                false
            }
            Push::Closed => false,
        }
    }

    pub(crate) fn count_fanout(&self, n: u64, frame_len: usize) {
        if n > 0 {
            self.stats.messages_out.fetch_add(n, Relaxed);
            self.stats.bytes_out.fetch_add(n * frame_len as u64, Relaxed);
            self.stats.deliveries.fetch_add(n, Relaxed);
        }
    }

    /// Delivers `frame` to every member of `room` but `except`; returns how many got it.
    pub(crate) fn broadcast(&self, room: &str, frame: Bytes, except: Option<u64>) -> usize {
        if room == ALL_SOCKETS {
            return self.broadcast_all(frame, except);
        }
        let Some(r) = self.rooms.get(room) else { return 0 };
        let mut n = 0;
        r.for_each(|c| {
            if Some(c.key) != except && self.push(c, frame.clone()) {
                n += 1;
            }
        });
        self.count_fanout(n as u64, frame.len());
        n
    }

    /// Every open socket of this instance but `except`.
    fn broadcast_all(&self, frame: Bytes, except: Option<u64>) -> usize {
        let mut n = 0;
        for c in self.all_conns() {
            if Some(c.key) != except && self.push(&c, frame.clone()) {
                n += 1;
            }
        }
        self.count_fanout(n as u64, frame.len());
        n
    }

    /// Local delivery plus one publish to the other instances.
    pub(crate) fn broadcast_everywhere(&self, room: &str, frame: Bytes, except: Option<&str>) {
        let except_key = except.and_then(|id| self.key_of(id));
        if self.distributed() {
            let msg = Remote::Room {
                room: room.to_string(),
                except: except.map(str::to_string),
                frame: frame.clone(),
            };
            if room == ALL_SOCKETS {
                self.backplane().publish_all(&self.instance, &msg);
            } else {
                self.backplane().publish_room(room, &self.instance, &msg);
            }
        }
        self.broadcast(room, frame, except_key);
    }

    /// To a socket here, or through the backplane to the instance that holds it.
    pub(crate) fn send_anywhere(&self, socket_id: &str, frame: Bytes) {
        if let Some(c) = self.conn(socket_id) {
            if self.deliver(&c, frame) {
                self.stats.deliveries.fetch_add(1, Relaxed);
            }
        } else if self.distributed() {
            if let Some(instance) = Sockets::instance_of(socket_id).filter(|i| *i != self.instance) {
                let msg = Remote::Socket { socket_id: socket_id.to_string(), frame };
                self.backplane().publish_instance(instance, &self.instance, &msg);
            }
        }
    }

    /// Closes matching sockets here and asks every other instance to do the same.
    pub(crate) fn disconnect_everywhere(&self, msg: Remote) -> usize {
        if self.distributed() {
            self.backplane().publish_all(&self.instance, &msg);
        }
        self.disconnect_local(&msg)
    }

    pub(crate) fn disconnect_local(&self, msg: &Remote) -> usize {
        match msg {
            Remote::DisconnectUser { id, collection, code } => self.close_where(*code, "disconnected", |u| {
                &u.id == id && collection.as_deref().is_none_or(|c| c == u.collection)
            }),
            Remote::DisconnectSession { sid, code } => {
                self.close_where(*code, "session ended", |u| u.sid.as_deref() == Some(sid.as_str()))
            }
            _ => 0,
        }
    }

    /// Closes every socket matching `pred` with `code`; returns how many.
    pub(crate) fn close_where(&self, code: u16, reason: &str, pred: impl Fn(&UserClaims) -> bool) -> usize {
        let mut n = 0;
        for c in self.all_conns() {
            if c.user().is_some_and(|u| pred(&u)) && c.close(code, reason, false) {
                if code == close_codes::AUTH_EXPIRED {
                    self.stats.auth_expired_closes.fetch_add(1, Relaxed);
                }
                n += 1;
            }
        }
        n
    }
}
