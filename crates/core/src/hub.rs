//! Shared server state: open sockets, rooms, stats, hooks, and fan-out.
//! Fan-out commands from the app go through one dispatcher task so that messages from one
//! caller reach each room in the order they were sent, and never run on the caller's thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::auth::{JwtVerifier, UserClaims};
use crate::config::{OriginRule, ServerConfig};
use crate::connection::{Conn, SocketRef};
use crate::hooks::{AppHooks, EventInfo};
use crate::outbound::Push;
use crate::protocol::{self, close_codes, Operation};
use crate::rooms::RoomRegistry;
use crate::stats::{Stats, StatsSnapshot};

/// Why a join failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinError {
    Invalid,
    TooMany,
}

/// A create/update/delete to deliver.
#[derive(Debug, Clone)]
pub struct Event {
    /// Collection slug.
    pub collection: String,
    /// Doc id as JSON (`42` or `"abc"`).
    pub id_json: String,
    pub operation: Operation,
    /// The doc as JSON text.
    pub doc_json: Bytes,
    /// Rooms to deliver to besides `collection:<slug>` and `doc:<slug>:<id>`.
    pub extra_rooms: Vec<String>,
}

impl Event {
    /// The id as text for room names.
    fn id_text(&self) -> String {
        if self.id_json.starts_with('"') {
            serde_json::from_str::<String>(&self.id_json).unwrap_or_default()
        } else {
            self.id_json.clone()
        }
    }
}

/// A member of a room, as reported to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub user_collection: Option<String>,
    pub instance: String,
}

pub(crate) enum Command {
    Broadcast { room: String, frame: Bytes, except: Option<u64> },
    Send { key: u64, frame: Bytes },
    Emit(Event),
}

pub(crate) struct Hub {
    pub config: ServerConfig,
    pub hooks: Arc<dyn AppHooks>,
    pub stats: Stats,
    pub rooms: RoomRegistry,
    pub verifier: JwtVerifier,
    pub origins: Vec<OriginRule>,
    pub instance: String,
    pub epoch: Instant,
    pub shutting_down: AtomicBool,
    /// Sockets open or being upgraded (checked against `maxConnections`).
    pub slots: AtomicUsize,
    conns: RwLock<HashMap<u64, Arc<Conn>>>,
    next_key: AtomicU64,
    dispatch: mpsc::UnboundedSender<Command>,
}

impl Hub {
    pub(crate) fn new(config: ServerConfig, hooks: Arc<dyn AppHooks>, instance: String, origins: Vec<OriginRule>) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let verifier = JwtVerifier::new(config.jwt_key.as_deref(), config.auth_version);
        let hub = Arc::new(Self {
            config,
            hooks,
            stats: Stats::default(),
            rooms: RoomRegistry::default(),
            verifier,
            origins,
            instance,
            epoch: Instant::now(),
            shutting_down: AtomicBool::new(false),
            slots: AtomicUsize::new(0),
            conns: RwLock::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            dispatch: tx,
        });
        (hub, rx)
    }

    /// Milliseconds since the hub started (cheap monotonic clock for per-frame stamps).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Relaxed)
    }

    pub(crate) fn socket_id(&self, key: u64) -> Arc<str> {
        Arc::from(format!("{}-{key:x}", self.instance))
    }

    /// The key of a socket id of this instance.
    fn key_of(&self, id: &str) -> Option<u64> {
        let (inst, n) = id.rsplit_once('-')?;
        (inst == self.instance).then(|| u64::from_str_radix(n, 16).ok()).flatten()
    }

    pub(crate) fn register(&self, conn: &Arc<Conn>) {
        self.conns.write().insert(conn.key, conn.clone());
        self.stats.connections.fetch_add(1, Relaxed);
        self.stats.connects.fetch_add(1, Relaxed);
    }

    /// Removes a socket from every room and from the registry (idempotent).
    pub(crate) fn unregister(&self, conn: &Arc<Conn>) {
        // Without discarding: a close frame (and what precedes it) may still be on its way out.
        conn.out.close(None, false);
        let rooms: Vec<Arc<str>> = conn.rooms.lock().drain().collect();
        for r in &rooms {
            self.rooms.remove(r, conn.key);
        }
        if self.conns.write().remove(&conn.key).is_some() {
            self.stats.connections.fetch_sub(1, Relaxed);
            self.stats.disconnects.fetch_add(1, Relaxed);
            self.slots.fetch_sub(1, Relaxed);
            self.hooks.on_close(&conn.id);
        }
    }

    pub(crate) fn conn(&self, id: &str) -> Option<Arc<Conn>> {
        let key = self.key_of(id)?;
        self.conns.read().get(&key).cloned()
    }

    pub(crate) fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.conns.read().values().cloned().collect()
    }

    /// Queues a frame to one socket; a socket over its byte bound is closed 1013.
    pub(crate) fn deliver(&self, conn: &Conn, frame: Bytes) -> bool {
        let len = frame.len() as u64;
        match conn.out.push(frame) {
            Push::Queued => {
                self.stats.messages_out.fetch_add(1, Relaxed);
                self.stats.bytes_out.fetch_add(len, Relaxed);
                true
            }
            Push::Overflow => {
                if conn.close(close_codes::SLOW_CONSUMER, "slow consumer", true) {
                    self.stats.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                false
            }
            Push::Closed => false,
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
        self.rooms.insert(&name, conn);
        Ok(true)
    }

    pub(crate) fn leave(&self, conn: &Arc<Conn>, room: &str) -> bool {
        let mut mine = conn.rooms.lock();
        if !mine.remove(room) {
            return false;
        }
        self.rooms.remove(room, conn.key);
        true
    }

    /// Delivers `frame` to every member of `room` but `except`; returns how many got it.
    pub(crate) fn broadcast(&self, room: &str, frame: Bytes, except: Option<u64>) -> usize {
        let Some(r) = self.rooms.get(room) else { return 0 };
        let mut n = 0;
        r.for_each(|c| {
            if Some(c.key) != except && self.deliver(c, frame.clone()) {
                n += 1;
            }
        });
        self.stats.deliveries.fetch_add(n as u64, Relaxed);
        n
    }

    pub(crate) fn command(&self, cmd: Command) -> bool {
        self.dispatch.send(cmd).is_ok()
    }

    /// Runs one fan-out command (on the dispatcher task).
    pub(crate) async fn run_command(self: &Arc<Self>, cmd: Command) {
        match cmd {
            Command::Broadcast { room, frame, except } => {
                self.broadcast(&room, frame, except);
            }
            Command::Send { key, frame } => {
                let conn = self.conns.read().get(&key).cloned();
                if let Some(c) = conn {
                    if self.deliver(&c, frame) {
                        self.stats.deliveries.fetch_add(1, Relaxed);
                    }
                }
            }
            Command::Emit(ev) => self.emit(ev).await,
        }
    }

    async fn emit(self: &Arc<Self>, ev: Event) {
        self.stats.events_emitted.fetch_add(1, Relaxed);
        let id = ev.id_text();
        let frame = protocol::event_frame(ev.operation, &ev.collection, &ev.id_json, &ev.doc_json);
        let mut rooms = Vec::with_capacity(2 + ev.extra_rooms.len());
        for name in [format!("collection:{}", ev.collection), format!("doc:{}:{id}", ev.collection)].into_iter().chain(ev.extra_rooms.iter().cloned()) {
            if let Some(r) = self.rooms.get(&name) {
                rooms.push(r);
            }
        }
        let authorizes = self.hooks.authorizes(&ev.collection);
        if rooms.len() == 1 && !authorizes {
            let mut n = 0u64;
            rooms[0].for_each(|c| n += u64::from(self.deliver(c, frame.clone())));
            self.stats.deliveries.fetch_add(n, Relaxed);
            return;
        }
        // A socket in several of the event's rooms gets the event once.
        let mut recipients: HashMap<u64, Arc<Conn>> = HashMap::new();
        for r in &rooms {
            r.for_each(|c| {
                recipients.entry(c.key).or_insert_with(|| c.clone());
            });
        }
        if recipients.is_empty() {
            return;
        }
        let allowed: Vec<Arc<Conn>> = if authorizes {
            self.authorized(&ev, &frame, recipients.into_values().collect()).await
        } else {
            recipients.into_values().collect()
        };
        let mut n = 0u64;
        for c in &allowed {
            n += u64::from(self.deliver(c, frame.clone()));
        }
        self.stats.deliveries.fetch_add(n, Relaxed);
    }

    /// Asks the app once about the distinct users among `recipients`; fails closed.
    async fn authorized(&self, ev: &Event, frame: &Bytes, recipients: Vec<Arc<Conn>>) -> Vec<Arc<Conn>> {
        let mut index: HashMap<Option<(String, String)>, usize> = HashMap::new();
        let mut users: Vec<Option<Arc<UserClaims>>> = Vec::new();
        let mut slot_of = Vec::with_capacity(recipients.len());
        for c in &recipients {
            let u = c.user();
            let k = u.as_ref().map(|u| (u.collection.clone(), u.id.clone()));
            let i = *index.entry(k).or_insert_with(|| {
                users.push(u.clone());
                users.len() - 1
            });
            slot_of.push(i);
        }
        let info = EventInfo {
            collection: Arc::from(ev.collection.as_str()),
            operation: ev.operation,
            id_json: Arc::from(ev.id_json.as_str()),
            json: crate::frame::payload_of(frame),
        };
        let n_users = users.len();
        let verdicts = match tokio::time::timeout(self.config.hook_timeout, self.hooks.authorize(&info, users)).await {
            Ok(v) if v.len() == n_users => v,
            Ok(_) => {
                self.stats.handler_errors.fetch_add(1, Relaxed);
                vec![false; n_users]
            }
            Err(_) => {
                self.stats.handler_timeouts.fetch_add(1, Relaxed);
                vec![false; n_users]
            }
        };
        let mut allowed = Vec::with_capacity(recipients.len());
        for (c, i) in recipients.into_iter().zip(slot_of) {
            if verdicts[i] {
                allowed.push(c);
            } else {
                self.stats.unauthorized_skips.fetch_add(1, Relaxed);
            }
        }
        allowed
    }

    /// Snapshot of the counters, with room totals.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot();
        let (rooms, members, largest) = self.rooms.totals();
        s.rooms = rooms;
        s.room_members = members;
        s.largest_room = largest;
        s.uptime_ms = self.now_ms();
        s
    }

    pub(crate) fn members(&self, room: &str) -> Vec<Member> {
        let Some(r) = self.rooms.get(room) else { return Vec::new() };
        r.members()
            .into_iter()
            .map(|c| {
                let u = c.user();
                Member {
                    socket_id: c.id.to_string(),
                    user_id: u.as_ref().map(|u| u.id.clone()),
                    user_collection: u.as_ref().map(|u| u.collection.clone()),
                    instance: self.instance.clone(),
                }
            })
            .collect()
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

    pub(crate) fn socket_ref(self: &Arc<Self>, id: &str) -> Option<SocketRef> {
        self.conn(id).map(|conn| SocketRef { conn, hub: self.clone() })
    }
}
