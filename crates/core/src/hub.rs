//! Shared server state: open sockets, rooms, stats, hooks, and fan-out.
//! Fan-out commands from the app are scheduled by `dispatch` (order kept per room, bounded,
//! never run on the caller's thread) and run here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::dispatch::Dispatch;
use crate::presence::Presence;

use crate::audience::{Audience, AudienceCache};
use crate::auth::{JwtVerifier, UserClaims};
use crate::backplane::{Backplane, Local, Remote};
use crate::config::{OriginRule, ServerConfig};
use crate::connection::{Conn, SocketRef};
use crate::hooks::{AppHooks, EventInfo};
use crate::outbound::Push;
use crate::protocol::{self, close_codes, Operation};
use crate::rooms::RoomRegistry;
use crate::stats::{Stats, StatsSnapshot};

/// The pseudo-room naming every socket on every instance (`broadcast`); no socket can join it
/// (`*` is not a room-name character).
pub const ALL_SOCKETS: &str = "*";

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
    /// The rooms it goes to: `collection:<slug>`, `doc:<slug>:<id>`, then the valid extra rooms.
    pub(crate) fn rooms(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(2 + self.extra_rooms.len());
        names.push(format!("collection:{}", self.collection));
        names.push(format!("doc:{}:{}", self.collection, self.id_text()));
        names.extend(self.extra_rooms.iter().filter(|r| protocol::valid_room(r)).cloned());
        names
    }

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
    Broadcast {
        room: String,
        frame: Bytes,
        except: Option<String>,
    },
    Send {
        socket_id: String,
        frame: Bytes,
    },
    Emit(Event),
    /// Something another instance published.
    Remote(Remote),
}

pub(crate) struct Hub {
    pub config: ServerConfig,
    pub hooks: Arc<dyn AppHooks>,
    pub stats: Stats,
    pub rooms: RoomRegistry,
    pub verifier: JwtVerifier,
    pub origins: Vec<OriginRule>,
    /// Origins whose auth cookies count (`trusted_origins`, checked by `validate`).
    pub trusted_origins: Vec<OriginRule>,
    pub instance: String,
    pub epoch: Instant,
    pub shutting_down: AtomicBool,
    /// Sockets open or being upgraded (checked against `maxConnections`).
    pub slots: AtomicUsize,
    conns: RwLock<HashMap<u64, Arc<Conn>>>,
    next_key: AtomicU64,
    pub(crate) dispatch: Dispatch,
    /// Memory budget of client input (incomplete frames and messages, messages awaiting JS).
    pub(crate) input: Arc<crate::reader::InputBudget>,
    /// Presence changes being merged per room.
    presence: crate::presence::PresenceCoalescer,
    /// The server's runtime and the hub itself, for timers started from any thread.
    pub(crate) runtime: OnceLock<tokio::runtime::Handle>,
    pub(crate) me: OnceLock<std::sync::Weak<Hub>>,
    /// HTTP connections not upgraded (shed oldest first when out of descriptors).
    pub(crate) http_conns: crate::accept::HttpConns,
    /// Set once at start when instances share a backplane; `Local` otherwise.
    backplane: OnceLock<Arc<dyn Backplane>>,
    /// The last authorized event's recipients, kept while membership and claims stand still.
    pub audience: AudienceCache,
}

impl Hub {
    pub(crate) fn new(
        config: ServerConfig,
        hooks: Arc<dyn AppHooks>,
        instance: String,
        origins: Vec<OriginRule>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (dispatch, rx) = Dispatch::new(config.max_pending_commands, config.max_pending_bytes);
        let input = crate::reader::InputBudget::new(config.max_input_bytes);
        let verifier = JwtVerifier::new(config.jwt_key.as_deref(), config.auth_version);
        let trusted_origins =
            config.trusted_origins.iter().filter_map(|o| OriginRule::parse(o).ok()).collect();
        let hub = Arc::new(Self {
            config,
            hooks,
            stats: Stats::default(),
            rooms: RoomRegistry::default(),
            verifier,
            origins,
            trusted_origins,
            instance,
            epoch: Instant::now(),
            shutting_down: AtomicBool::new(false),
            slots: AtomicUsize::new(0),
            conns: RwLock::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            dispatch,
            input,
            http_conns: Default::default(),
            presence: Default::default(),
            runtime: OnceLock::new(),
            me: OnceLock::new(),
            backplane: OnceLock::new(),
            audience: AudienceCache::default(),
        });
        let _ = hub.me.set(Arc::downgrade(&hub));
        (hub, rx)
    }

    pub(crate) fn set_backplane(&self, bp: Arc<dyn Backplane>) {
        let _ = self.backplane.set(bp);
    }

    pub(crate) fn backplane(&self) -> &dyn Backplane {
        self.backplane.get().map_or(&Local as &dyn Backplane, |b| b.as_ref())
    }

    /// Resolves once this instance's room subscriptions asked for so far are in place.
    pub(crate) fn backplane_settled(&self) -> Option<crate::hooks::BoxFuture<()>> {
        if self.distributed() {
            self.backplane().settled()
        } else {
            None
        }
    }

    /// Whether other instances may exist (a backplane other than `Local`).
    pub(crate) fn distributed(&self) -> bool {
        self.backplane.get().is_some()
    }

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
            && self.config.presence_events.iter().any(|p| crate::config::glob_match(p, room))
        {
            let user = conn.user().map_or_else(|| "null".to_string(), |u| u.id_json.clone());
            let interval = self.config.presence_interval;
            if let Presence::Now(json, delay) = self.presence.change(room, &conn.id, &user, on, interval) {
                self.broadcast_everywhere(room, crate::frame::text(json.as_bytes()), Some(&conn.id));
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
                    me.broadcast_everywhere(&room, crate::frame::text(json.as_bytes()), None);
                }
                match again {
                    Some(d) => delay = d,
                    None => return,
                }
            }
        });
    }

    /// The instance part of a socket id (`<instance>-<n>`).
    pub(crate) fn instance_of(id: &str) -> Option<&str> {
        id.rsplit_once('-').map(|(i, _)| i)
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
            let removed = self.rooms.remove(r, conn.key);
            self.room_changed(conn, r, false, removed);
        }
        if self.conns.write().remove(&conn.key).is_some() {
            self.stats.connections.fetch_sub(1, Relaxed);
            self.stats.disconnects.fetch_add(1, Relaxed);
            self.slots.fetch_sub(1, Relaxed);
            let (code, reason) = conn.close_status();
            self.hooks.on_close(&conn.id, code, &reason);
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
        let queued = self.push(conn, frame);
        if queued {
            self.stats.messages_out.fetch_add(1, Relaxed);
            self.stats.bytes_out.fetch_add(len, Relaxed);
        }
        queued
    }

    /// Queues without counting: a fan-out counts its `n` deliveries of one frame once
    /// (`count_fanout`), not per socket, since every core would contend on those counters.
    fn push(&self, conn: &Conn, frame: Bytes) -> bool {
        // Socket.IO sockets get the frame in their framing (built once per fan-out and thread).
        let frame = match conn.socketio.get() {
            None => frame,
            Some(s) => match crate::socketio::outbound(&self.config, s, frame) {
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

    fn count_fanout(&self, n: u64, frame_len: usize) {
        if n > 0 {
            self.stats.messages_out.fetch_add(n, Relaxed);
            self.stats.bytes_out.fetch_add(n * frame_len as u64, Relaxed);
            self.stats.deliveries.fetch_add(n, Relaxed);
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
    fn send_anywhere(&self, socket_id: &str, frame: Bytes) {
        if let Some(c) = self.conn(socket_id) {
            if self.deliver(&c, frame) {
                self.stats.deliveries.fetch_add(1, Relaxed);
            }
        } else if self.distributed() {
            if let Some(instance) = Self::instance_of(socket_id).filter(|i| *i != self.instance) {
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

    fn disconnect_local(&self, msg: &Remote) -> usize {
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

    /// Runs one fan-out command (on the dispatcher task or a lane).
    pub(crate) async fn run_command(self: &Arc<Self>, cmd: Command) {
        match cmd {
            Command::Broadcast { room, frame, except } => {
                self.broadcast_everywhere(&room, frame, except.as_deref());
            }
            Command::Send { socket_id, frame } => self.send_anywhere(&socket_id, frame),
            Command::Emit(ev) => self.emit(ev).await,
            Command::Remote(msg) => self.on_remote(msg).await,
        }
    }

    /// An event's frame in the configured `event_format`.
    fn event_frame(&self, op: Operation, collection: &str, id_json: &str, doc_json: &[u8]) -> Bytes {
        match self.config.event_format {
            crate::config::EventFormat::Native => protocol::event_frame(op, collection, id_json, doc_json),
            crate::config::EventFormat::UwebsocketPlugin => {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                protocol::uws_plugin_event_frame(op, collection, id_json, doc_json, ts)
            }
        }
    }

    async fn emit(self: &Arc<Self>, ev: Event) {
        self.stats.events_emitted.fetch_add(1, Relaxed);
        let frame = self.event_frame(ev.operation, &ev.collection, &ev.id_json, &ev.doc_json);
        let names = ev.rooms();
        if self.distributed() {
            for (i, room) in names.iter().enumerate().take(255) {
                let msg = Remote::Event {
                    operation: ev.operation,
                    collection: ev.collection.clone(),
                    id_json: ev.id_json.clone(),
                    rooms: names.clone(),
                    index: i as u8,
                    frame: frame.clone(),
                };
                self.backplane().publish_room(room, &self.instance, &msg);
            }
        }
        let info = EventInfo {
            collection: Arc::from(ev.collection.as_str()),
            operation: ev.operation,
            id_json: Arc::from(ev.id_json.as_str()),
            json: crate::frame::payload_of(&frame),
        };
        self.deliver_event(&info, &names, None, frame).await;
    }

    /// Delivers an event frame to the members of `rooms` (each socket once), or, for a copy
    /// from another instance, to the members of `rooms[i]` that are in none of `rooms[..i]`
    /// (those get the copy published on that earlier room).
    async fn deliver_event(&self, info: &EventInfo, rooms: &[String], only: Option<usize>, frame: Bytes) {
        if self.hooks.authorizes(&info.collection) {
            // The cache key: the rooms that have members (each event names its own doc room).
            let upto = only.map_or(rooms.len(), |i| i + 1);
            let present: Vec<String> =
                rooms[..upto].iter().filter(|r| self.rooms.get(r).is_some()).cloned().collect();
            if present.is_empty() || only.is_some_and(|i| present.last() != Some(&rooms[i])) {
                return;
            }
            let audience = self.audience.get(present, only.is_some(), || self.recipients(rooms, only));
            if !audience.recipients.is_empty() {
                self.deliver_authorized(info, &audience, frame).await;
            }
            return;
        }
        if only.is_none() {
            let present: Vec<_> = rooms.iter().filter_map(|r| self.rooms.get(r)).collect();
            if present.len() == 1 {
                let mut n = 0u64;
                present[0].for_each(|c| n += u64::from(self.push(c, frame.clone())));
                self.count_fanout(n, frame.len());
                return;
            }
        }
        let mut n = 0u64;
        for c in &self.recipients(rooms, only) {
            n += u64::from(self.push(c, frame.clone()));
        }
        self.count_fanout(n, frame.len());
    }

    /// Each socket in `rooms` once; with `only`, see `deliver_event`.
    fn recipients(&self, rooms: &[String], only: Option<usize>) -> Vec<Arc<Conn>> {
        let mut recipients: HashMap<u64, Arc<Conn>> = HashMap::new();
        match only {
            Some(i) => {
                let Some(r) = self.rooms.get(&rooms[i]) else { return Vec::new() };
                let earlier = &rooms[..i];
                // Members first, then each socket's rooms, never both locks at once: a join holds
                // its socket's rooms while it takes the room's write lock, so reading a socket's
                // rooms under the room's read lock deadlocked against a concurrent join (found by
                // the soak: a remote event of an authorized collection while sockets joined it).
                for c in r.members() {
                    let seen_earlier = {
                        let mine = c.rooms.lock();
                        earlier.iter().any(|e| mine.contains(e.as_str()))
                    };
                    if !seen_earlier {
                        recipients.insert(c.key, c);
                    }
                }
            }
            None => {
                for r in rooms.iter().filter_map(|r| self.rooms.get(r)) {
                    r.for_each(|c| {
                        recipients.entry(c.key).or_insert_with(|| c.clone());
                    });
                }
            }
        }
        recipients.into_values().collect()
    }

    /// Delivers what another instance published; nothing is published again.
    async fn on_remote(&self, msg: Remote) {
        match msg {
            Remote::Room { room, except, frame } => {
                self.broadcast(&room, frame, except.and_then(|id| self.key_of(&id)));
            }
            Remote::Event { operation, collection, id_json, rooms, index, frame } => {
                let info = EventInfo {
                    collection: Arc::from(collection.as_str()),
                    operation,
                    id_json: Arc::from(id_json.as_str()),
                    json: crate::frame::payload_of(&frame),
                };
                self.deliver_event(&info, &rooms, Some(usize::from(index)), frame).await;
            }
            Remote::Socket { socket_id, frame } => {
                if let Some(c) = self.conn(&socket_id) {
                    if self.deliver(&c, frame) {
                        self.stats.deliveries.fetch_add(1, Relaxed);
                    }
                }
            }
            other => {
                self.disconnect_local(&other);
            }
        }
    }

    /// Asks the app once about the distinct users of `audience` and delivers to the sockets of
    /// the users it allows, each the view of the document it was given (one frame per view);
    /// fails closed (a malformed, failed or late answer allows no one).
    async fn deliver_authorized(&self, info: &EventInfo, audience: &Audience, frame: Bytes) {
        let n_users = audience.users.users.len();
        let verdicts = match tokio::time::timeout(
            self.config.hook_timeout,
            self.hooks.authorize(info, audience.users.clone()),
        )
        .await
        {
            Ok(v) if v.fits(n_users) => v,
            Ok(_) => {
                self.stats.handler_errors.fetch_add(1, Relaxed);
                vec![false; n_users].into()
            }
            Err(_) => {
                self.stats.handler_timeouts.fetch_add(1, Relaxed);
                vec![false; n_users].into()
            }
        };
        // Index 0 is unused (withheld), 1 the frame as emitted, k ≥ 2 the view docs[k - 2].
        let mut frames: Vec<Bytes> = Vec::with_capacity(2 + verdicts.docs.len());
        frames.push(Bytes::new());
        frames.push(frame);
        for doc in &verdicts.docs {
            frames.push(self.event_frame(info.operation, &info.collection, &info.id_json, doc));
        }
        let mut sent = vec![0u64; frames.len()];
        let mut skipped = 0u64;
        for (c, &u) in audience.recipients.iter().zip(&audience.user_of) {
            match verdicts.per_user[u as usize] as usize {
                0 => skipped += 1,
                k => sent[k] += u64::from(self.push(c, frames[k].clone())),
            }
        }
        for (n, f) in sent.iter().zip(&frames) {
            self.count_fanout(*n, f.len());
        }
        self.stats.unauthorized_skips.fetch_add(skipped, Relaxed);
    }

    /// Snapshot of the counters, with room totals.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot();
        let (rooms, members, largest) = self.rooms.totals();
        s.rooms = rooms;
        s.room_members = members;
        s.largest_room = largest;
        s.uptime_ms = self.now_ms();
        s.backplane = self.backplane().stats();
        s.pending_commands = self.dispatch.pending() as u64;
        s.input_bytes = self.input.used() as u64;
        s
    }

    pub(crate) fn members(&self, room: &str) -> Vec<Member> {
        let Some(r) = self.rooms.get(room) else { return Vec::new() };
        r.members().iter().map(|c| self.member_of(c)).collect()
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
