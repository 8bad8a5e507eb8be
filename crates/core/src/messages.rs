//! One complete message from a client: counting, rate limit, Socket.IO translation, then our
//! protocol's requests (joins and leaves with their access checks, `auth`, `ping`); a type the
//! protocol does not know goes to the app's handler (`handler`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::OpCode;
use tokio::time::{timeout, timeout_at};

use crate::auth::UserClaims;
use crate::config::glob_match;
use crate::frame;
use crate::handler;
use crate::hooks::BoxFuture;
use crate::hub::Hub;
use crate::membership::adopt_user;
use crate::protocol::{self, close_codes, codes, Envelope, Request};
use crate::refusals::{invalid_utf8, refuse};
use crate::rooms::JoinError;
use crate::socket::Conn;
use crate::socketio;
use crate::socketio_framing::RoomAck;

/// Fixed-window message counter (in every socket's task: hub ms, not an `Instant`, 8 bytes less).
pub(crate) struct RateWindow {
    /// When the window started, in hub ms (`Hub::now_ms`).
    pub(crate) started_ms: u64,
    pub(crate) count: u32,
    pub(crate) warned: bool,
}

/// Handles one complete data message; false stops the reader (the socket is being closed).
/// `wait`: an answer the reader must finish before it reads on (a join behind a backplane).
pub(crate) fn on_message(
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
    // Engine.IO's pong only proves the peer alive (noted by the reader): not an app message.
    if conn.socketio.get().is_some() && data[..] == *b"3" {
        return true;
    }
    let now = hub.now_ms();
    conn.last_app_ms.store(now, Relaxed);
    if let Some(limit) = cfg.rate_limit {
        if now.saturating_sub(rate.started_ms) >= limit.window.as_millis() as u64 {
            *rate = RateWindow { started_ms: now, count: 0, warned: false };
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
            let error = protocol::error_frame(codes::RATE_LIMITED, "too many messages; slow down", None);
            if conn.socketio.get().is_some() && opcode == OpCode::Text {
                // A Socket.IO ack of the dropped message gets the refusal (not a later answer).
                socketio::refuse_ack(conn, &data, &error);
            }
            if !rate.warned {
                rate.warned = true;
                hub.deliver(conn, error);
            }
            return true;
        }
    }
    // Socket.IO packets become our messages here, after the rate limit (CONNECT verifies a token).
    // A join or leave from Socket.IO may carry the ack its answers go to.
    let (opcode, data, ack) = match conn.socketio.get() {
        None => (opcode, data, None),
        Some(_) => match socketio::inbound(hub, conn, opcode == OpCode::Binary, &data) {
            Some((ours, ack)) => (OpCode::Text, ours, ack),
            None => return true,
        },
    };
    let ack = ack.as_ref();
    if opcode == OpCode::Binary {
        handler::on_binary(hub, conn, data);
        return true;
    }
    let Ok(text) = std::str::from_utf8(&data) else { return false }; // checked above
    let env = match Envelope::parse(text) {
        Ok(env) => env,
        Err(r) => {
            refuse_room(hub, conn, r.code, &r.message, ack);
            return true;
        }
    };
    // In join-doc/leave-doc "id" names the doc, not a request to answer.
    let req_id = env.id.filter(|_| !matches!(env.kind.as_ref(), "join-doc" | "leave-doc")).map(|r| r.get());
    let request = match env.request() {
        Ok(r) => r,
        Err(r) if ack.is_some() => {
            refuse_room(hub, conn, r.code, &r.message, ack);
            return true;
        }
        Err(r) => {
            refuse(hub, conn, r.code, &r.message, req_id);
            return true;
        }
    };
    match request {
        Request::Join(room) => *wait = join_event_room(hub, conn, room, ack),
        Request::JoinMany(rooms) => {
            // Each collection passes the same access check as a single join, in order.
            if let Some(a) = ack {
                a.expect(rooms.len());
            }
            let waits: Vec<_> =
                rooms.into_iter().filter_map(|r| join_event_room(hub, conn, r, ack)).collect();
            if !waits.is_empty() {
                *wait = Some(Box::pin(async move {
                    for w in waits {
                        w.await;
                    }
                }));
            }
        }
        Request::LeaveMany(rooms) => {
            if let Some(a) = ack {
                a.expect(rooms.len());
            }
            for room in rooms {
                leave_in_order(hub, conn, room, ack);
            }
        }
        Request::Leave(room) | Request::LeaveRoom(room) => leave_in_order(hub, conn, room, ack),
        Request::JoinRoom(room) => {
            let name = &room["room:".len()..];
            if cfg.room_patterns.iter().any(|p| glob_match(p, name)) {
                *wait = join_and_ack(hub, conn, &room, ack);
            } else if let Some(fut) = hub.hooks.can_join(conn.user(), name) {
                let verdict = Verdict {
                    forbidden: "not allowed to join this room",
                    timed_out: "room policy timed out",
                };
                // Not awaited (a slow policy holds back nothing else of the socket's), but in
                // turn: a later leave or join of this room applies after this join.
                let turn = hub.room_order.turn(conn.key, &room);
                let deadline = tokio::time::Instant::now() + cfg.hook_timeout;
                let (hub, conn, ack) = (hub.clone(), conn.clone(), ack.cloned());
                tokio::spawn(async move {
                    let mut turn = turn;
                    let (allowed, ()) = tokio::join!(timeout_at(deadline, fut), turn.ready());
                    apply_verdict(&hub, &conn, &room, allowed.ok(), verdict, ack.as_ref()).await;
                    drop(turn);
                });
            } else {
                refuse_room(hub, conn, codes::FORBIDDEN, "not allowed to join this room", ack);
            }
        }
        Request::Ping => {
            hub.deliver(conn, Bytes::from_static(b"\x81\x0f{\"type\":\"pong\"}"));
        }
        Request::Auth(token) => refresh_auth(hub, conn, &token),
        Request::Custom(kind) => handler::on_custom(hub, conn, kind, env.action.as_deref(), &data, req_id),
    }
    true
}

/// Longest a `joined` answer waits for this instance's subscription to the room: as long as
/// connecting to Redis and one command may take (2 s each, backplane/redis.rs), plus a margin.
/// A shorter wait let `joined` out before the subscription whenever Redis was slow (an instance
/// starting on a loaded machine), and the next event was lost. During an outage joins do not
/// wait at all (`settled` is `None`).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// Joins and answers `joined`. Behind a backplane the answer waits (≤ `SUBSCRIBE_WAIT`) until
/// this instance's subscription to the room is in place, so whatever any instance publishes
/// after `joined` reaches the socket; that wait is returned for the caller to await.
/// `sio_ack`: a Socket.IO ack waiting for this join's answer.
fn join_and_ack(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    room: &str,
    sio_ack: Option<&Arc<RoomAck>>,
) -> Option<BoxFuture<()>> {
    match hub.join(conn, room) {
        Ok(_) => {
            let ack = protocol::room_ack("joined", room);
            let Some(settled) = hub.backplane_settled() else {
                socketio::answer_room(hub, conn, ack, false, sio_ack);
                return None;
            };
            let (hub, conn, sio_ack) = (hub.clone(), conn.clone(), sio_ack.cloned());
            Some(Box::pin(async move {
                let _ = timeout(SUBSCRIBE_WAIT, settled).await;
                socketio::answer_room(&hub, &conn, ack, false, sio_ack.as_ref());
            }))
        }
        Err(JoinError::TooMany) => {
            refuse_room(hub, conn, codes::TOO_MANY_ROOMS, "maxRoomsPerSocket reached", sio_ack);
            None
        }
        Err(JoinError::Invalid) => {
            refuse_room(hub, conn, codes::INVALID_ROOM, "invalid room name", sio_ack);
            None
        }
    }
}

/// Leaves `room` and answers `left`, after a change to it still in flight (a join waiting for
/// the app's room policy), so the socket's changes apply in the order it sent them.
fn leave_in_order(hub: &Arc<Hub>, conn: &Arc<Conn>, room: String, sio_ack: Option<&Arc<RoomAck>>) {
    if !hub.room_order.busy(conn.key, &room) {
        hub.leave(conn, &room);
        socketio::answer_room(hub, conn, protocol::room_ack("left", &room), false, sio_ack);
        return;
    }
    let mut turn = hub.room_order.turn(conn.key, &room);
    let (hub, conn, sio_ack) = (hub.clone(), conn.clone(), sio_ack.cloned());
    tokio::spawn(async move {
        turn.ready().await;
        hub.leave(&conn, &room);
        socketio::answer_room(&hub, &conn, protocol::room_ack("left", &room), false, sio_ack.as_ref());
        drop(turn);
    });
}

/// Refuses a join or leave (counted, like `refuse`); a Socket.IO ack waiting for it gets it.
fn refuse_room(hub: &Hub, conn: &Arc<Conn>, code: &str, message: &str, sio_ack: Option<&Arc<RoomAck>>) {
    match sio_ack {
        None => refuse(hub, conn, code, message, None),
        Some(_) => {
            hub.stats.bad_messages.fetch_add(1, Relaxed);
            socketio::answer_room(hub, conn, protocol::error_frame(code, message, None), true, sio_ack);
        }
    }
}

/// `join-collection`/`join-doc`: joins unless the app's `can_subscribe` refuses (`forbidden`, no
/// `joined`). The answer is awaited before the next message is read, so a `leave-*` sent after
/// it applies after it.
fn join_event_room(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    room: String,
    sio_ack: Option<&Arc<RoomAck>>,
) -> Option<BoxFuture<()>> {
    let Some(check) = hub.hooks.can_subscribe(conn.user(), &room) else {
        return join_and_ack(hub, conn, &room, sio_ack);
    };
    let verdict = Verdict {
        forbidden: "not allowed to read this collection or document",
        timed_out: "access check timed out",
    };
    Some(Box::pin(join_if_allowed(hub.clone(), conn.clone(), room, check, verdict, sio_ack.cloned())))
}

/// What a refused or timed-out join policy answers.
struct Verdict {
    forbidden: &'static str,
    timed_out: &'static str,
}

/// Joins `room` (and acks it) once the app's policy `check` allows it within the hook timeout;
/// otherwise answers `forbidden` or `handler_timeout` (counted).
async fn join_if_allowed(
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    room: String,
    check: BoxFuture<bool>,
    verdict: Verdict,
    sio_ack: Option<Arc<RoomAck>>,
) {
    let allowed = timeout(hub.config.hook_timeout, check).await.ok();
    apply_verdict(&hub, &conn, &room, allowed, verdict, sio_ack.as_ref()).await;
}

/// Joins (and acks, after the backplane's subscription) on the policy's `Some(true)`; answers
/// `forbidden` on `Some(false)` and `handler_timeout` (counted) on `None` (no answer in time).
async fn apply_verdict(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    room: &str,
    allowed: Option<bool>,
    verdict: Verdict,
    sio_ack: Option<&Arc<RoomAck>>,
) {
    match allowed {
        Some(true) => {
            if let Some(ack) = join_and_ack(hub, conn, room, sio_ack) {
                ack.await;
            }
        }
        Some(false) => refuse_room(hub, conn, codes::FORBIDDEN, verdict.forbidden, sio_ack),
        None => {
            hub.stats.handler_timeouts.fetch_add(1, Relaxed);
            refuse_room(hub, conn, codes::HANDLER_TIMEOUT, verdict.timed_out, sio_ack)
        }
    }
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
    adopt_user(hub, conn, claims);
    if first {
        let _ = hub.join(conn, &room);
    }
    let msg = format!("{{\"type\":\"authenticated\",\"user\":{summary},\"exp\":{exp}}}");
    hub.deliver(conn, frame::text(msg.as_bytes()));
}
