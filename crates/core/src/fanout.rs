//! Fan-out: putting one encoded frame on many sockets (each `Bytes` shared, never copied),
//! locally and through the backplane, and closing sockets by user or session. A command's pass
//! holds its frames in a `Cork`, written once per socket when the pass ends; consecutive frames
//! for one room go out together, each member visited once for all of them (`settle`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::auth::UserClaims;
use crate::backplane::Remote;
use crate::config::ServerConfig;
use crate::cork::{self, Cork, Pacer, Run};
use crate::hub::Hub;
use crate::outbound::Push;
use crate::protocol::close_codes;
use crate::rooms::{Room, ALL_SOCKETS, SPLIT_AT};
use crate::socket::Conn;
use crate::socketio_framing::{self, FanFrame};
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
        // Socket.IO sockets get the frame in their framing.
        let frame = match conn.socketio.get() {
            None => frame,
            Some(_) => match socketio_framing::outbound(&self.config, frame) {
                Some(f) => f,
                None => return true, // nothing for Socket.IO clients (e.g. `welcome`)
            },
        };
        self.queue(conn, frame)
    }

    /// `push` of one fan-out's frame (translated once for all its Socket.IO recipients).
    fn push_fan(&self, conn: &Conn, frame: &FanFrame) -> bool {
        match frame.for_socket(&self.config, conn.socketio.get().is_some()) {
            Some(f) => self.queue(conn, f),
            None => true,
        }
    }

    /// Queues a frame already in the socket's framing.
    fn queue(&self, conn: &Conn, frame: Bytes) -> bool {
        match conn.out.push(frame) {
            Push::Queued => true,
            Push::Overflow => {
                self.close_slow_consumer(conn);
                false
            }
            Push::Closed => false,
        }
    }

    /// Closes a socket whose queue would pass `maxBackpressure` (1013, counted once).
    pub(crate) fn close_slow_consumer(&self, conn: &Conn) {
        if conn.close(close_codes::SLOW_CONSUMER, "slow consumer", true) {
            self.stats.slow_consumer_closes.fetch_add(1, Relaxed);
        }
    }

    /// `push` for a fan-out pass: the frame is held in the socket's queue (written when the
    /// pass's cork is flushed); a socket seen first in this pass joins `held`.
    /// Socket.IO sockets get `frame`'s translation, built once for the fan-out.
    pub(crate) fn push_held(&self, conn: &Arc<Conn>, frame: &FanFrame, held: &mut Vec<Arc<Conn>>) -> bool {
        let Some(frame) = frame.for_socket(&self.config, conn.socketio.get().is_some()) else { return true };
        self.put(conn, std::slice::from_ref(&frame), None, false, held)
    }

    /// `Outbound::put` of frames already in the socket's framing: a socket seen first in this
    /// pass joins `held`; one over its byte bound is closed 1013. False when nothing was taken.
    fn put(
        &self,
        conn: &Arc<Conn>,
        frames: &[Bytes],
        joined: Option<&Bytes>,
        write: bool,
        held: &mut Vec<Arc<Conn>>,
    ) -> bool {
        match conn.out.put(frames, joined, write) {
            Ok(first) => {
                if first {
                    held.push(conn.clone());
                }
                true
            }
            Err(Push::Overflow) => {
                self.close_slow_consumer(conn);
                false
            }
            Err(_) => false,
        }
    }

    pub(crate) fn count_fanout(&self, n: u64, frame_len: usize) {
        self.count_deliveries(n, n * frame_len as u64);
    }

    /// `n` deliveries of `bytes` in all, counted once (every core would contend per socket).
    fn count_deliveries(&self, n: u64, bytes: u64) {
        if n > 0 {
            self.stats.messages_out.fetch_add(n, Relaxed);
            self.stats.bytes_out.fetch_add(bytes, Relaxed);
            self.stats.deliveries.fetch_add(n, Relaxed);
        }
    }

    /// Delivers `frame` to every member of `room` but `except`; returns how many got it.
    pub(crate) fn broadcast(&self, room: &str, frame: Bytes, except: Option<u64>) -> usize {
        if room == ALL_SOCKETS {
            return self.broadcast_all(frame, except);
        }
        let Some(r) = self.rooms.get(room) else { return 0 };
        let (mut n, len, frame) = (0, frame.len(), FanFrame::new(frame));
        r.for_each(|c| {
            if Some(c.key) != except && self.push_fan(c, &frame) {
                n += 1;
            }
        });
        self.count_fanout(n as u64, len);
        n
    }

    /// Every open socket of this instance but `except`.
    fn broadcast_all(&self, frame: Bytes, except: Option<u64>) -> usize {
        let (mut n, len, frame) = (0, frame.len(), FanFrame::new(frame));
        for c in self.all_conns() {
            if Some(c.key) != except && self.push_fan(&c, &frame) {
                n += 1;
            }
        }
        self.count_fanout(n as u64, len);
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
    /// worker at once (see `settle`).
    pub(crate) async fn broadcast_spread(
        self: &Arc<Self>,
        room: &str,
        frame: Bytes,
        except: Option<u64>,
        cork: &mut Cork,
    ) {
        if room == ALL_SOCKETS {
            self.settle(cork, false).await;
            let (mut n, frame) = (0u64, FanFrame::new(frame));
            for c in self.all_conns() {
                if Some(c.key) != except && self.push_held(&c, &frame, cork.group_of(c.key)) {
                    n += 1;
                }
            }
            self.count_fanout(n, frame.frame().len());
        } else if let Some(r) = self.rooms.get(room) {
            self.deliver_room(r, frame, except, cork).await;
        }
    }

    /// Gives `frame` to the members of `room` but `except`, in the pass's pending run for that
    /// room (a run for another room, or a full one, is settled first). Delivered when the run
    /// is settled: see `settle`.
    pub(crate) async fn deliver_room(
        self: &Arc<Self>,
        room: Arc<Room>,
        frame: Bytes,
        except: Option<u64>,
        cork: &mut Cork,
    ) {
        if let Err(frame) = cork.extend(&room, frame, except) {
            self.settle(cork, false).await;
            let started = cork.extend(&room, frame, except);
            debug_assert!(started.is_ok(), "a settled cork takes a new run");
        }
    }

    /// Delivers the pass's pending run, if any: each member of its room once, with all the
    /// run's frames. `write`: the pass's last delivery, written from the member loop (a member
    /// with frames held earlier in the pass gets them queued behind those); otherwise held for
    /// the cork's flush. A large room's parts run on every worker at once, one task per part
    /// (a fan-out reaches each worker once, and no one task or lock carries every delivery);
    /// this returns once every part is done, so the next command for the room comes after it.
    pub(crate) async fn settle(self: &Arc<Self>, cork: &mut Cork, write: bool) {
        let Some(run) = cork.take_run() else { return };
        let parts = run.room.parts();
        let run = Arc::new(Prepared::new(run));
        let room = &run.run.room;
        // Below `SPLIT_AT` members (a room split earlier may have shrunk), handing parts to other
        // workers costs more than it saves.
        if parts == 1 || room.len() < SPLIT_AT {
            for i in 0..parts {
                let mut held = Vec::new();
                self.deliver_part(&run, i, write, &mut held);
                cork.absorb(i, held);
            }
            return;
        }
        let tasks: Vec<_> = (1..parts)
            .map(|i| {
                let (hub, run) = (self.clone(), run.clone());
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    hub.deliver_part(&run, i, write, &mut held);
                    (i, held)
                })
            })
            .collect();
        let mut held = Vec::new();
        self.deliver_part(&run, 0, write, &mut held);
        cork.absorb(0, held);
        for t in tasks {
            if let Ok((i, held)) = t.await {
                cork.absorb(i, held);
            }
        }
    }

    /// Ends a pass: delivers its pending run (written now), then writes what it held.
    pub(crate) async fn finish(self: &Arc<Self>, mut cork: Cork) {
        self.settle(&mut cork, true).await;
        cork.flush().await;
    }

    /// One part of a run's room: the members are copied out of the part's lock first, so no
    /// send happens under it (a join would wait for the whole pass).
    fn deliver_part(&self, prepared: &Prepared, i: usize, write: bool, held: &mut Vec<Arc<Conn>>) {
        let Prepared { run, joined, size, excepts, .. } = prepared;
        let members = run.room.members_in(i);
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut own: Vec<Bytes> = Vec::new();
        let mut pacer = Pacer::new();
        for c in &members {
            pacer.step();
            // Socket.IO members get the run in their framing (translated once per run).
            let sio = c.socketio.get().map(|_| prepared.socketio(&self.config));
            let (frames, joined, k, len) = if *excepts && run.skips(c.key) {
                // A member skipped by a frame gets its own list of frames.
                own.clear();
                let mut len = 0;
                for (j, (f, e)) in run.frames.iter().zip(&run.except).enumerate() {
                    if *e == Some(c.key) {
                        continue;
                    }
                    let f = match sio {
                        None => f.clone(),
                        Some(s) => match &s.frames[j] {
                            Some(f) => f.clone(),
                            None => continue,
                        },
                    };
                    len += f.len();
                    own.push(f);
                }
                if own.is_empty() {
                    continue;
                }
                (own.as_slice(), None, own.len() as u64, len as u64)
            } else if let Some(s) = sio {
                if s.present.is_empty() {
                    continue;
                }
                (s.present.as_slice(), s.joined.as_ref(), s.present.len() as u64, s.size)
            } else {
                (run.frames.as_slice(), joined.as_ref(), run.frames.len() as u64, *size)
            };
            if self.put(c, frames, joined, write, held) {
                n += k;
                bytes += len;
            }
        }
        self.count_deliveries(n, bytes);
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

/// A run ready to deliver: its frames, and the same back to back when small (one buffer for
/// every member that gets them all: `Run::join`).
struct Prepared {
    run: Run,
    joined: Option<Bytes>,
    /// Bytes of all the frames.
    size: u64,
    /// Some frame skips a socket.
    excepts: bool,
    /// The run in Socket.IO framing, built for its first Socket.IO member.
    socketio: OnceLock<SocketIoRun>,
}

/// A run's frames translated for Socket.IO sockets, once for all of them.
struct SocketIoRun {
    /// Per frame of the run: its translation (`None`: nothing for Socket.IO sockets).
    frames: Vec<Option<Bytes>>,
    /// The translations there are, and the same back to back when small (`cork::join`).
    present: Vec<Bytes>,
    joined: Option<Bytes>,
    /// Bytes of `present`.
    size: u64,
}

impl Prepared {
    fn new(mut run: Run) -> Self {
        let (joined, size) = run.join();
        Self { joined, size, excepts: run.except.iter().any(Option::is_some), run, socketio: OnceLock::new() }
    }

    fn socketio(&self, cfg: &ServerConfig) -> &SocketIoRun {
        self.socketio.get_or_init(|| {
            let frames: Vec<Option<Bytes>> =
                self.run.frames.iter().map(|f| socketio_framing::framed(cfg, f)).collect();
            let mut present: Vec<Bytes> = frames.iter().flatten().cloned().collect();
            let (joined, size) = cork::join(&mut present);
            SocketIoRun { frames, present, joined, size }
        })
    }
}
