//! Fan-out: putting one encoded frame on many sockets (each `Bytes` shared, never copied),
//! locally and through the backplane, and closing sockets by user or session. A command's pass
//! holds its frames in a `Cork`, written once per socket when the pass ends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::UserClaims;
use crate::backplane::Remote;
use crate::cork::Cork;
use crate::hub::Hub;
use crate::outbound::Push;
use crate::protocol::close_codes;
use crate::rooms::{Room, ALL_SOCKETS, SPLIT_AT};
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

    /// `push` for a fan-out pass: the frame is held in the socket's queue (written when the
    /// pass's cork is flushed); a socket seen first in this pass joins `held`.
    pub(crate) fn push_held(&self, conn: &Arc<Conn>, frame: Bytes, held: &mut Vec<Arc<Conn>>) -> bool {
        let frame = match conn.socketio.get() {
            None => frame,
            Some(s) => match socketio_framing::outbound(&self.config, s, frame) {
                Some(f) => f,
                None => return true,
            },
        };
        match conn.out.hold(frame) {
            Ok(first) => {
                if first {
                    held.push(conn.clone());
                }
                true
            }
            Err(Push::Overflow) => {
                if conn.close(close_codes::SLOW_CONSUMER, "slow consumer", true) {
                    self.stats.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                false
            }
            Err(_) => false,
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
        self.publish_broadcast(room, &frame, except);
        self.broadcast(room, frame, except.and_then(|id| self.key_of(id)));
    }

    /// The other instances' share of a broadcast: one publish (nothing without a backplane).
    pub(crate) fn publish_broadcast(&self, room: &str, frame: &Bytes, except: Option<&str>) {
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
    }

    /// `broadcast` for a fan-out pass: frames held in `cork`, a large room's parts run on every
    /// worker at once (see `deliver_room`).
    pub(crate) async fn broadcast_spread(
        self: &Arc<Self>,
        room: &str,
        frame: Bytes,
        except: Option<u64>,
        cork: &mut Cork,
    ) {
        if room == ALL_SOCKETS {
            let mut n = 0u64;
            for c in self.all_conns() {
                if Some(c.key) != except && self.push_held(&c, frame.clone(), cork.group_of(c.key)) {
                    n += 1;
                }
            }
            self.count_fanout(n, frame.len());
        } else if let Some(r) = self.rooms.get(room) {
            self.deliver_room(r, frame, except, cork).await;
        }
    }

    /// Holds `frame` for the members of `room` but `except` (written when `cork` is flushed);
    /// returns how many got it. A large room's parts are spread over the runtime's workers, one
    /// task per part (a fan-out reaches each worker once, and no one task or lock carries every
    /// delivery). The pass ends only once every part is done, so the next command for the room
    /// starts after it: order holds.
    pub(crate) async fn deliver_room(
        self: &Arc<Self>,
        room: Arc<Room>,
        frame: Bytes,
        except: Option<u64>,
        cork: &mut Cork,
    ) -> usize {
        let parts = room.parts();
        // Below `SPLIT_AT` members (a room split earlier may have shrunk), handing parts to other
        // workers costs more than it saves.
        if parts == 1 || room.len() < SPLIT_AT {
            let mut n = 0;
            for i in 0..parts {
                room.for_each_in(i, |c| {
                    if Some(c.key) != except && self.push_held(c, frame.clone(), cork.group_of(c.key)) {
                        n += 1;
                    }
                });
            }
            self.count_fanout(n as u64, frame.len());
            return n;
        }
        let tasks: Vec<_> = (1..parts)
            .map(|i| {
                let (hub, room, frame) = (self.clone(), room.clone(), frame.clone());
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    let n = hub.deliver_part(&room, i, &frame, except, &mut held);
                    (i, n, held)
                })
            })
            .collect();
        let mut n = self.deliver_part(&room, 0, &frame, except, cork.group_of(0));
        for t in tasks {
            if let Ok((i, k, held)) = t.await {
                n += k;
                cork.absorb(i, held);
            }
        }
        n
    }

    /// One part of a room's pass (counted once for the part).
    fn deliver_part(
        &self,
        room: &Room,
        i: usize,
        frame: &Bytes,
        except: Option<u64>,
        held: &mut Vec<Arc<Conn>>,
    ) -> usize {
        let mut n = 0;
        room.for_each_in(i, |c| {
            if Some(c.key) != except && self.push_held(c, frame.clone(), held) {
                n += 1;
            }
        });
        self.count_fanout(n as u64, frame.len());
        n
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
