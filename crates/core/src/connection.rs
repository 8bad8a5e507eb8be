//! One WebSocket connection: its shared state (`Conn`), the handle apps get (`SocketRef`),
//! and its two tasks: the reader (frames in, protocol) and the writer (queue out, timers).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use fastwebsockets::OpCode;
use parking_lot::{Mutex, RwLock};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::{sleep_until, timeout};

use crate::auth::UserClaims;
use crate::frame;
use crate::hooks::{BoxFuture, HandlerOutcome, UpgradeInfo};
use crate::hub::{Hub, JoinError};
use crate::outbound::{Batch, Next, Outbound};
use crate::protocol::{self, close_codes, codes, Envelope, Request};
use crate::reader::{FrameReader, Held, ReadError};

/// State of one socket, shared by its tasks, the rooms it is in and the app.
pub struct Conn {
    pub(crate) key: u64,
    pub(crate) id: Arc<str>,
    user: RwLock<Option<Arc<UserClaims>>>,
    pub(crate) url: Box<str>,
    pub(crate) remote: SocketAddr,
    pub(crate) connected_at: SystemTime,
    /// Last frame of any kind from the peer (ms since the hub's epoch).
    last_seen_ms: AtomicU64,
    /// Last application message from the peer (ms since the hub's epoch).
    last_app_ms: AtomicU64,
    /// Credential expiry, seconds since the Unix epoch; 0 = none.
    exp_s: AtomicU64,
    pub(crate) rooms: Mutex<HashSet<Arc<str>>>,
    pub(crate) out: Outbound,
    reader: OnceLock<AbortHandle>,
    reader_done: Notify,
}

impl Conn {
    pub(crate) fn new(
        key: u64,
        id: Arc<str>,
        info: &UpgradeInfo,
        user: Option<UserClaims>,
        max_backpressure: usize,
        now_ms: u64,
    ) -> Self {
        let exp = user.as_ref().and_then(|u| u.exp).unwrap_or(0);
        Self {
            key,
            id,
            user: RwLock::new(user.map(Arc::new)),
            url: info.url.clone().into_boxed_str(),
            remote: info.remote,
            connected_at: SystemTime::now(),
            last_seen_ms: AtomicU64::new(now_ms),
            last_app_ms: AtomicU64::new(now_ms),
            exp_s: AtomicU64::new(exp),
            rooms: Mutex::new(HashSet::new()),
            out: Outbound::new(max_backpressure),
            reader: OnceLock::new(),
            reader_done: Notify::new(),
        }
    }

    /// The socket's authenticated user, if any.
    pub fn user(&self) -> Option<Arc<UserClaims>> {
        self.user.read().clone()
    }

    pub(crate) fn set_reader(&self, h: AbortHandle) {
        let _ = self.reader.set(h);
    }

    /// Stops the reader at once (dead peer, stuck close); its guard unregisters the socket.
    pub(crate) fn kill(&self) {
        if let Some(h) = self.reader.get() {
            h.abort();
        }
        self.out.close(None, true);
    }

    /// Starts the closing handshake with `code`; false if already closing.
    pub(crate) fn close(&self, code: u16, reason: &str, discard: bool) -> bool {
        self.out.close(Some(frame::close(code, reason)), discard)
    }

    pub(crate) fn reader_finished(&self) {
        self.reader_done.notify_one();
    }
}

/// What the app holds of a socket: read its state, send to it, move it between rooms.
#[derive(Clone)]
pub struct SocketRef {
    pub(crate) conn: Arc<Conn>,
    pub(crate) hub: Arc<Hub>,
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
        self.conn.connected_at
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

/// Unregisters the socket however its reader ends (return, error or abort).
pub(crate) struct ConnGuard {
    pub(crate) hub: Arc<Hub>,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.hub.unregister(&self.conn);
        self.conn.reader_finished();
    }
}

/// Close codes a peer may send (RFC 6455 §7.4).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A message being reassembled from fragments.
struct Partial {
    opcode: OpCode,
    buf: BytesMut,
    utf8_checked: usize,
    /// `buf`'s capacity, taken from the server's input budget.
    held: Held,
}

/// Fixed-window message counter.
struct RateWindow {
    started: Instant,
    count: u32,
    warned: bool,
}

/// The reader task: reads frames until the peer closes or breaks the protocol.
pub(crate) async fn read_loop(guard: ConnGuard, mut reader: FrameReader, info: UpgradeInfo) {
    let hub = guard.hub.clone();
    let conn = guard.conn.clone();
    let cfg = &hub.config;

    let check = hub.hooks.on_open(&SocketRef { conn: conn.clone(), hub: hub.clone() }, &info);
    drop(info); // the request's headers are not kept for the socket's life
    if let Some(check) = check {
        match timeout(cfg.hook_timeout, check).await {
            Ok(true) => {}
            Ok(false) => {
                conn.close(close_codes::FORBIDDEN, "forbidden", false);
            }
            // The app was too busy to decide: 1013 (try again later), not a policy refusal.
            Err(_) => {
                hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                conn.close(close_codes::TRY_AGAIN_LATER, "server busy, try again later", false);
            }
        }
    }
    if !conn.out.is_closed() && !cfg.echo {
        let user = conn.user();
        let user_json = user.as_ref().map_or_else(|| "null".to_string(), |u| u.summary_json());
        let welcome = format!(
            "{{\"type\":\"welcome\",\"socketId\":{},\"user\":{}}}",
            protocol::json_str(&conn.id),
            user_json
        );
        hub.deliver(&conn, frame::text(welcome.as_bytes()));
        if let Some(u) = user {
            let _ = hub.join(&conn, &u.user_room());
        }
    }

    let mut partial: Option<Partial> = None;
    let mut rate = RateWindow { started: Instant::now(), count: 0, warned: false };
    let mut wait: Option<BoxFuture<()>> = None;

    loop {
        // An answer that must go out before the next message is handled (ordering).
        if let Some(w) = wait.take() {
            w.await;
        }
        let frame = match reader.next().await {
            Ok(f) => f,
            Err(e) => {
                fail(&hub, &conn, e);
                return;
            }
        };
        conn.last_seen_ms.store(hub.now_ms(), Relaxed);
        match frame.opcode {
            OpCode::Close => {
                on_close_frame(&hub, &conn, &frame.payload);
                return;
            }
            OpCode::Ping => {
                hub.deliver(&conn, frame::pong(&frame.payload));
            }
            OpCode::Pong => {}
            OpCode::Text | OpCode::Binary => {
                if partial.is_some() {
                    protocol_error(&hub, &conn, "new message inside a fragmented one");
                    return;
                }
                if frame.fin {
                    if !on_message(&hub, &conn, frame.opcode, frame.payload, &mut rate, &mut wait) {
                        return;
                    }
                } else {
                    let mut p = Partial {
                        opcode: frame.opcode,
                        buf: BytesMut::from(&frame.payload[..]),
                        utf8_checked: 0,
                        held: hub.input.share(),
                    };
                    if !p.held.resize(p.buf.capacity()) {
                        over_budget(&hub, &conn);
                        return;
                    }
                    if p.opcode == OpCode::Text && !check_utf8(&mut p) {
                        invalid_utf8(&hub, &conn);
                        return;
                    }
                    partial = Some(p);
                }
            }
            OpCode::Continuation => {
                let Some(p) = partial.as_mut() else {
                    protocol_error(&hub, &conn, "continuation without a message");
                    return;
                };
                if p.buf.len() + frame.payload.len() > cfg.max_message_size {
                    too_big(&hub, &conn);
                    return;
                }
                p.buf.extend_from_slice(&frame.payload);
                if !p.held.resize(p.buf.capacity()) {
                    over_budget(&hub, &conn);
                    return;
                }
                if p.opcode == OpCode::Text && !check_utf8(p) {
                    invalid_utf8(&hub, &conn);
                    return;
                }
                if frame.fin {
                    let p = partial.take().expect("checked above");
                    if p.opcode == OpCode::Text && p.utf8_checked != p.buf.len() {
                        invalid_utf8(&hub, &conn);
                        return;
                    }
                    if !on_message(&hub, &conn, p.opcode, p.buf.freeze(), &mut rate, &mut wait) {
                        return;
                    }
                }
            }
        }
    }
}

/// Validates the UTF-8 added since the last check; a sequence cut at the end may complete later.
fn check_utf8(p: &mut Partial) -> bool {
    match std::str::from_utf8(&p.buf[p.utf8_checked..]) {
        Ok(_) => {
            p.utf8_checked = p.buf.len();
            true
        }
        Err(e) if e.error_len().is_none() => {
            p.utf8_checked += e.valid_up_to();
            true
        }
        Err(_) => false,
    }
}

fn protocol_error(hub: &Hub, conn: &Conn, why: &str) {
    hub.stats.protocol_errors.fetch_add(1, Relaxed);
    conn.close(close_codes::PROTOCOL_ERROR, why, false);
}

fn invalid_utf8(hub: &Hub, conn: &Conn) {
    hub.stats.protocol_errors.fetch_add(1, Relaxed);
    conn.close(close_codes::INVALID_PAYLOAD, "invalid UTF-8", false);
}

fn too_big(hub: &Hub, conn: &Conn) {
    hub.stats.oversized_messages.fetch_add(1, Relaxed);
    conn.close(close_codes::TOO_BIG, "message too big", true);
}

/// Client input went over the server's memory budget while this socket was growing its share.
fn over_budget(hub: &Hub, conn: &Conn) {
    hub.stats.input_budget_closes.fetch_add(1, Relaxed);
    conn.close(close_codes::TRY_AGAIN_LATER, "server input memory budget exceeded", true);
}

fn fail(hub: &Hub, conn: &Conn, e: ReadError) {
    match e {
        ReadError::Gone => {}
        ReadError::OverBudget => over_budget(hub, conn),
        ReadError::TooBig => too_big(hub, conn),
        ReadError::Protocol(why) => protocol_error(hub, conn, why),
    }
}

/// Answers the peer's close frame (same code, no reason) unless we started the close.
fn on_close_frame(hub: &Hub, conn: &Conn, payload: &[u8]) {
    let reply = match payload.len() {
        0 => Bytes::from_static(&[0x88, 0]),
        1 => {
            hub.stats.protocol_errors.fetch_add(1, Relaxed);
            frame::close(close_codes::PROTOCOL_ERROR, "bad close frame")
        }
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                hub.stats.protocol_errors.fetch_add(1, Relaxed);
                frame::close(close_codes::PROTOCOL_ERROR, "bad close code")
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                hub.stats.protocol_errors.fetch_add(1, Relaxed);
                frame::close(close_codes::INVALID_PAYLOAD, "invalid UTF-8")
            } else {
                frame::close(code, "")
            }
        }
    };
    conn.out.close(Some(reply), false);
}

/// Handles one complete data message; false stops the reader (the socket is being closed).
/// `wait`: an answer the reader must finish before it reads on (a join behind a backplane).
fn on_message(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    opcode: OpCode,
    data: Bytes,
    rate: &mut RateWindow,
    wait: &mut Option<BoxFuture<()>>,
) -> bool {
    let cfg = &hub.config;
    hub.stats.messages_in.fetch_add(1, Relaxed);
    hub.stats.bytes_in.fetch_add(data.len() as u64, Relaxed);
    if conn.out.is_closed() {
        return true; // closing: drain the peer's frames until its close reply
    }
    if opcode == OpCode::Text && std::str::from_utf8(&data).is_err() {
        invalid_utf8(hub, conn);
        return false;
    }
    if cfg.echo {
        let f = if opcode == OpCode::Text { frame::text(&data) } else { frame::binary(&data) };
        hub.deliver(conn, f);
        return true;
    }
    conn.last_app_ms.store(hub.now_ms(), Relaxed);
    if let Some(limit) = cfg.rate_limit {
        if rate.started.elapsed() >= limit.window {
            *rate = RateWindow { started: Instant::now(), count: 0, warned: false };
        }
        rate.count += 1;
        if rate.count > limit.messages.saturating_mul(2) {
            hub.stats.rate_limit_closes.fetch_add(1, Relaxed);
            // Not discarding: the `rate_limited` warning queued a moment ago tells the peer why,
            // and the queue is bounded (maxBackpressure, then close_timeout). Reading on (the
            // peer's further frames are dropped above) until its close reply keeps the rest of
            // its burst from lying unread at the close, where the kernel would answer with a reset
            // that can destroy the close frame before the peer reads it.
            conn.close(close_codes::RATE_LIMITED, "rate limited", false);
            return true;
        }
        if rate.count > limit.messages {
            hub.stats.rate_limited.fetch_add(1, Relaxed);
            if !rate.warned {
                rate.warned = true;
                hub.deliver(
                    conn,
                    protocol::error_frame(codes::RATE_LIMITED, "too many messages; slow down", None),
                );
            }
            return true;
        }
    }
    if opcode == OpCode::Binary {
        let Some(held) = hold_for_js(hub, conn, data.len(), None) else { return true };
        let socket = SocketRef { conn: conn.clone(), hub: hub.clone() };
        match hub.hooks.on_binary(socket, data) {
            Some(fut) => spawn_outcome(hub, conn, None, fut, held),
            None => refuse(hub, conn, codes::BINARY_UNSUPPORTED, "binary messages are not accepted", None),
        }
        return true;
    }
    let Ok(text) = std::str::from_utf8(&data) else { return false }; // checked above
    let env = match Envelope::parse(text) {
        Ok(env) => env,
        Err(r) => {
            refuse(hub, conn, r.code, &r.message, None);
            return true;
        }
    };
    // In join-doc/leave-doc "id" names the doc, not a request to answer.
    let req_id = env.id.filter(|_| !matches!(env.kind.as_ref(), "join-doc" | "leave-doc")).map(|r| r.get());
    let request = match env.request() {
        Ok(r) => r,
        Err(r) => {
            refuse(hub, conn, r.code, &r.message, req_id);
            return true;
        }
    };
    match request {
        Request::Join(room) => *wait = join_event_room(hub, conn, room),
        Request::Leave(room) | Request::LeaveRoom(room) => {
            hub.leave(conn, &room);
            hub.deliver(conn, protocol::room_ack("left", &room));
        }
        Request::JoinRoom(room) => {
            let name = &room["room:".len()..];
            if cfg.room_patterns.iter().any(|p| crate::config::glob_match(p, name)) {
                *wait = join_and_ack(hub, conn, &room);
            } else if let Some(fut) = hub.hooks.can_join(conn.user(), name) {
                let (hub, conn, t) = (hub.clone(), conn.clone(), cfg.hook_timeout);
                tokio::spawn(async move {
                    match timeout(t, fut).await {
                        Ok(true) => {
                            if let Some(ack) = join_and_ack(&hub, &conn, &room) {
                                ack.await;
                            }
                        }
                        Ok(false) => {
                            refuse(&hub, &conn, codes::FORBIDDEN, "not allowed to join this room", None)
                        }
                        Err(_) => {
                            hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                            refuse(&hub, &conn, codes::HANDLER_TIMEOUT, "room policy timed out", None)
                        }
                    }
                });
            } else {
                refuse(hub, conn, codes::FORBIDDEN, "not allowed to join this room", None);
            }
        }
        Request::Ping => {
            hub.deliver(conn, Bytes::from_static(b"\x81\x0f{\"type\":\"pong\"}"));
        }
        Request::Auth(token) => refresh_auth(hub, conn, &token),
        Request::Custom(kind) => {
            if hub.hooks.has_handler(&kind) {
                let Some(held) = hold_for_js(hub, conn, data.len(), req_id) else { return true };
                let socket = SocketRef { conn: conn.clone(), hub: hub.clone() };
                let fut = hub.hooks.on_message(socket, &kind, data.clone());
                spawn_outcome(hub, conn, req_id.map(str::to_string), fut, held);
            } else {
                refuse(hub, conn, codes::UNKNOWN_TYPE, &format!("no handler for type {kind:?}"), req_id);
            }
        }
    }
    true
}

fn refuse(hub: &Hub, conn: &Arc<Conn>, code: &str, message: &str, id: Option<&str>) {
    hub.stats.bad_messages.fetch_add(1, Relaxed);
    hub.deliver(conn, protocol::error_frame(code, message, id));
}

/// Longest a `joined` answer waits for this instance's subscription to the room.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// Joins and answers `joined`. Behind a backplane the answer waits (≤ `SUBSCRIBE_WAIT`) until
/// this instance's subscription to the room is in place, so whatever any instance publishes
/// after `joined` reaches the socket; that wait is returned for the caller to await.
fn join_and_ack(hub: &Arc<Hub>, conn: &Arc<Conn>, room: &str) -> Option<BoxFuture<()>> {
    match hub.join(conn, room) {
        Ok(_) => {
            let ack = protocol::room_ack("joined", room);
            let Some(settled) = hub.backplane_settled() else {
                hub.deliver(conn, ack);
                return None;
            };
            let (hub, conn) = (hub.clone(), conn.clone());
            Some(Box::pin(async move {
                let _ = timeout(SUBSCRIBE_WAIT, settled).await;
                hub.deliver(&conn, ack);
            }))
        }
        Err(JoinError::TooMany) => {
            refuse(hub, conn, codes::TOO_MANY_ROOMS, "maxRoomsPerSocket reached", None);
            None
        }
        Err(JoinError::Invalid) => {
            refuse(hub, conn, codes::INVALID_ROOM, "invalid room name", None);
            None
        }
    }
}

/// Takes a message's bytes from the input budget while it waits for the app's handler; past
/// half the budget (the other half stays for frames being read) the message is answered `busy`
/// (not queued) and counted.
fn hold_for_js(hub: &Hub, conn: &Arc<Conn>, len: usize, id: Option<&str>) -> Option<Held> {
    let mut held = hub.input.share();
    if held.resize_within(len, hub.input.max() / 2) {
        return Some(held);
    }
    hub.stats.busy_messages.fetch_add(1, Relaxed);
    hub.deliver(conn, protocol::error_frame(codes::BUSY, "server busy; retry later", id));
    None
}

/// `join-collection`/`join-doc`: joins unless the app's `can_subscribe` refuses (`forbidden`, no
/// `joined`). The answer is awaited before the next message is read, so a `leave-*` sent after
/// it applies after it.
fn join_event_room(hub: &Arc<Hub>, conn: &Arc<Conn>, room: String) -> Option<BoxFuture<()>> {
    let Some(check) = hub.hooks.can_subscribe(conn.user(), &room) else {
        return join_and_ack(hub, conn, &room);
    };
    let (hub, conn, t) = (hub.clone(), conn.clone(), hub.config.hook_timeout);
    Some(Box::pin(async move {
        match timeout(t, check).await {
            Ok(true) => {
                if let Some(ack) = join_and_ack(&hub, &conn, &room) {
                    ack.await;
                }
            }
            Ok(false) => {
                refuse(&hub, &conn, codes::FORBIDDEN, "not allowed to read this collection or document", None)
            }
            Err(_) => {
                hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                refuse(&hub, &conn, codes::HANDLER_TIMEOUT, "access check timed out", None)
            }
        }
    }))
}

/// Runs an app handler off the reader, answering with its reply or error within the timeout.
/// `held` (the message's share of the input budget) is given back when it is answered.
fn spawn_outcome(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    id: Option<String>,
    fut: crate::hooks::BoxFuture<HandlerOutcome>,
    held: Held,
) {
    let (hub, conn) = (hub.clone(), conn.clone());
    tokio::spawn(async move {
        let _held = held;
        let t = hub.config.hook_timeout;
        match timeout(t, fut).await {
            Ok(HandlerOutcome::Reply(data)) => {
                if let Some(id) = &id {
                    hub.deliver(&conn, protocol::reply_frame(id, data.as_deref()));
                }
            }
            Ok(HandlerOutcome::Error { code, message }) => {
                hub.stats.handler_errors.fetch_add(1, Relaxed);
                hub.deliver(&conn, protocol::error_frame(&code, &message, id.as_deref()));
            }
            Err(_) => {
                hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                let msg = format!("handler took longer than {} ms", t.as_millis());
                hub.deliver(&conn, protocol::error_frame(codes::HANDLER_TIMEOUT, &msg, id.as_deref()));
            }
        }
    });
}

/// `{"type":"auth","token"}`: a fresh token for the same user moves the expiry.
fn refresh_auth(hub: &Arc<Hub>, conn: &Arc<Conn>, token: &str) {
    let claims = match hub.verifier.verify(token) {
        Ok(c) => c,
        Err(e) => return refuse(hub, conn, codes::AUTH_FAILED, &e.to_string(), None),
    };
    if let Some(cur) = conn.user() {
        if !cur.same_user(&claims) {
            return refuse(hub, conn, codes::AUTH_FAILED, "token is for another user", None);
        }
    }
    match hub.hooks.validate_session(&claims) {
        None => apply_auth(hub, conn, claims),
        Some(check) => {
            let (hub, conn, t) = (hub.clone(), conn.clone(), hub.config.hook_timeout);
            tokio::spawn(async move {
                match timeout(t, check).await {
                    Ok(true) => apply_auth(&hub, &conn, claims),
                    Ok(false) => {
                        if conn.close(close_codes::AUTH_EXPIRED, "session revoked", false) {
                            hub.stats.auth_expired_closes.fetch_add(1, Relaxed);
                        }
                    }
                    // Too busy to check: the socket keeps its current credentials; the client
                    // may send the token again.
                    Err(_) => {
                        hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                        refuse(&hub, &conn, codes::HANDLER_TIMEOUT, "session check timed out; retry", None);
                    }
                }
            });
        }
    }
}

fn apply_auth(hub: &Hub, conn: &Arc<Conn>, claims: UserClaims) {
    let first = conn.user().is_none();
    let exp = claims.exp.unwrap_or(0);
    let summary = claims.summary_json();
    let room = claims.user_room();
    *conn.user.write() = Some(Arc::new(claims));
    hub.audience.invalidate();
    conn.exp_s.store(exp, Relaxed);
    conn.out.notify.notify_one(); // the writer re-reads the expiry
    if first {
        let _ = hub.join(conn, &room);
    }
    let msg = format!("{{\"type\":\"authenticated\",\"user\":{summary},\"exp\":{exp}}}");
    hub.deliver(conn, frame::text(msg.as_bytes()));
}

/// Timers the writer keeps.
struct Timers {
    next_ping: Instant,
    /// When a ping is unanswered: (sent at, in hub ms; deadline).
    pong: Option<(u64, Instant)>,
    /// The queue holds data the writer has not got onto the wire yet.
    busy: bool,
    /// The socket is closing (its close frame is queued).
    closing: bool,
    /// Last time the writer got bytes out (or became busy).
    progress: Instant,
    /// When to look at `progress` again while busy; moved only at a busy transition or when
    /// it fires, not per write, so a steady stream does not churn the timer wheel.
    stall_check: Instant,
    /// `exp_s` as an `Instant`, recomputed only when `exp_s` changes (a re-auth): reading both
    /// clocks on every wake-up of the writer cost ~3 % of a fan-out's CPU.
    expiry: (u64, Instant),
}

enum Tick {
    Continue,
    Kill,
}

fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `now + secs`, saturating far in the future instead of overflowing (an `exp` near `u64::MAX`).
fn instant_in(now: Instant, secs: u64) -> Instant {
    now.checked_add(Duration::from_secs(secs.min(100 * 365 * 24 * 3600))).unwrap_or(now)
}

impl Timers {
    /// How long the writer may make no progress: a reading peer always does. Past it an open
    /// socket is closed 1013 (queue dropped); a closing one that still takes nothing is dropped.
    /// (Once its close frame is out, a peer gets `close_timeout` to answer: see `write_loop`.)
    fn stall_limit(&self, hub: &Hub) -> Duration {
        hub.config.slow_consumer_timeout
    }

    /// Records what the last refill saw.
    fn note(&mut self, hub: &Hub, busy: bool, closing: bool) {
        if closing && !self.closing {
            self.closing = true;
            self.stall_check = Instant::now() + self.stall_limit(hub);
        }
        if busy && !self.busy {
            self.progress = Instant::now();
            self.stall_check = self.progress + self.stall_limit(hub);
        }
        self.busy = busy;
    }

    fn deadline(&mut self, hub: &Hub, conn: &Conn) -> Instant {
        let cfg = &hub.config;
        let mut d = self.next_ping;
        if let Some((_, p)) = self.pong {
            d = d.min(p);
        }
        if self.busy || self.closing {
            d = d.min(self.stall_check);
        }
        if self.closing {
            // Closing: idle and expiry have done their part; their past deadlines would spin.
            return d;
        }
        if let Some(idle) = cfg.idle_timeout {
            let last = conn.last_app_ms.load(Relaxed);
            d = d.min(hub.instant_of(last) + idle);
        }
        let exp = conn.exp_s.load(Relaxed);
        if exp != 0 {
            if self.expiry.0 != exp {
                let left = exp.saturating_sub(unix_now_s());
                self.expiry = (exp, instant_in(Instant::now(), left));
            }
            d = d.min(self.expiry.1);
        }
        d
    }

    fn tick(&mut self, hub: &Hub, conn: &Conn) -> Tick {
        let cfg = &hub.config;
        let now = Instant::now();
        self.note(hub, self.busy, conn.out.is_closed());
        if (self.busy || self.closing) && now >= self.stall_check {
            let limit = self.stall_limit(hub);
            if self.closing && (!self.busy || now >= self.progress + limit) {
                return Tick::Kill; // a closing peer that stopped reading (or never answers)
            }
            if self.busy && now >= self.progress + limit {
                // Not a burst: this peer has taken nothing for `slow_consumer_timeout`.
                if conn.close(close_codes::SLOW_CONSUMER, "slow consumer", true) {
                    hub.stats.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                self.note(hub, true, true);
            } else {
                self.stall_check = self.progress + limit;
            }
        }
        if let Some((sent_ms, due)) = self.pong {
            if conn.last_seen_ms.load(Relaxed) >= sent_ms {
                self.pong = None;
            } else if now >= due {
                hub.stats.pong_timeouts.fetch_add(1, Relaxed);
                return Tick::Kill;
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + cfg.heartbeat;
            if self.pong.is_none() && hub.deliver(conn, frame::ping()) {
                self.pong = Some((hub.now_ms(), now + cfg.pong_timeout));
            }
        }
        if let Some(idle) = cfg.idle_timeout {
            if hub.now_ms().saturating_sub(conn.last_app_ms.load(Relaxed)) >= idle.as_millis() as u64
                && conn.close(close_codes::NORMAL, "idle timeout", false)
            {
                hub.stats.idle_closes.fetch_add(1, Relaxed);
            }
        }
        let exp = conn.exp_s.load(Relaxed);
        if exp != 0
            && unix_now_s() >= exp
            && conn.close(close_codes::AUTH_EXPIRED, "credentials expired", false)
        {
            hub.stats.auth_expired_closes.fetch_add(1, Relaxed);
        }
        Tick::Continue
    }
}

/// The writer task: drains the queue with vectored writes and runs the socket's timers.
pub(crate) async fn write_loop(hub: Arc<Hub>, conn: Arc<Conn>, mut w: OwnedWriteHalf) {
    let cfg = &hub.config;
    let mut batch = Batch::new();
    let now = Instant::now();
    let mut timers = Timers {
        next_ping: now + cfg.heartbeat,
        pong: None,
        busy: false,
        closing: false,
        progress: now,
        stall_check: now,
        expiry: (0, now),
    };
    // One timer for the task's life, moved only when the deadline changes: a fresh `sleep_until`
    // per wake-up would register and cancel a timer-wheel entry for every delivery.
    let timer = sleep_until(timers.next_ping.into());
    tokio::pin!(timer);
    loop {
        // One look at the queue per wake-up: refill also reports whether the socket is closing.
        let next = batch.refill(&conn.out);
        timers.note(&hub, matches!(next, Next::Write), batch.closing);
        let deadline = timers.deadline(&hub, &conn).into();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match next {
            Next::Done => break,
            Next::Wait => {
                tokio::select! {
                    _ = conn.out.notify.notified() => {}
                    _ = &mut timer => {
                        if let Tick::Kill = timers.tick(&hub, &conn) { conn.kill(); return; }
                    }
                }
            }
            Next::Write => {
                tokio::select! {
                    r = batch.write_some(&mut w) => match r {
                        Ok(0) | Err(_) => { conn.kill(); return; }
                        Ok(n) => {
                            timers.progress = Instant::now();
                            if batch.advance(&conn.out, n) && batch.ends { break; }
                        }
                    },
                    _ = &mut timer => {
                        if let Tick::Kill = timers.tick(&hub, &conn) { conn.kill(); return; }
                    }
                    _ = conn.out.notify.notified() => {}
                }
            }
        }
    }
    // Close frame written (or nothing left to say): half-close, then give the peer a moment
    // to answer before the reader is stopped.
    let _ = timeout(cfg.close_timeout, w.shutdown()).await;
    let _ = timeout(cfg.close_timeout, conn.reader_done.notified()).await;
    conn.kill();
}
