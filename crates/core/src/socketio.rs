//! Socket.IO clients (`socket.io-client` 3 and 4: Engine.IO v4, Socket.IO protocol v5) over
//! the WebSocket transport, on `ServerConfig::socketio_path`.
//!
//! A Socket.IO socket is an ordinary socket of the server: same rooms, auth, handlers, limits
//! and fan-out. This module only translates at its edges: a client packet becomes a message of
//! our protocol (then handled as any other), and a frame for the socket is rewritten into a
//! Socket.IO packet once per fan-out (not once per recipient; see `socketio_framing`).
//! Long-polling is not offered: the upgrade refuses `transport=polling` and plain GETs get a
//! 400 saying so.
//!
//! Mapping (client → server): `emit('join-collection', 'posts' | ['posts', …] | {collection})`,
//! `leave-collection`, `subscribe`/`unsubscribe` (same), `join-doc`/`leave-doc` (`{collection,
//! id}`), `join-room`/`leave-room` and `join`/`leave` (a room name), `auth` (a token), `ping`,
//! and any other event name → the app handler of that type with the first argument as `data`;
//! an ack callback gets the handler's reply, or `{error:{code,message}}`; the ack of a join or
//! leave gets its answer (`{type:'joined'|'left', room}`, or `{error}` when refused).
//! Server → client: every message `{"type":t,…}` becomes the event `t` with the whole object
//! as its argument (`reply`/`error` answering an ack go to that ack), other text the event
//! `message` with the text, bytes the event `message` with one binary attachment.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::timeout;

use crate::auth::UserClaims;
use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::protocol::{close_codes, codes, json_str};
use crate::socket::Conn;
use crate::socketio_framing::{packet, RoomAck, Session};

/// Whether `path` is the Socket.IO endpoint (with or without its trailing slash).
pub(crate) fn serves(cfg: &ServerConfig, path: &str) -> bool {
    cfg.socketio_path.as_deref().is_some_and(|p| path.trim_end_matches('/') == p.trim_end_matches('/'))
}

/// Why an upgrade on the Socket.IO path is refused (HTTP 400), if it is.
pub(crate) fn refuse_query(query: Option<&str>) -> Option<&'static str> {
    let param = |name: &str| {
        query.unwrap_or("").split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    };
    if param("EIO") != Some("4") {
        return Some("only Engine.IO v4 (socket.io-client 3 or later) is supported");
    }
    if param("transport") != Some("websocket") {
        return Some(LONG_POLLING_REFUSED);
    }
    None
}

/// The answer to anything but a WebSocket upgrade on the Socket.IO path.
pub const LONG_POLLING_REFUSED: &str =
    "long-polling is not supported: connect with transports: ['websocket'] (socket.io-client option)";

/// Starts a Socket.IO socket: Engine.IO's open packet (its first frame) and the CONNECT deadline.
pub(crate) fn start(hub: &Arc<Hub>, conn: &Arc<Conn>) {
    let cfg = &hub.config;
    let json = format!(
        "0{{\"sid\":{},\"upgrades\":[],\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
        json_str(&conn.id),
        cfg.heartbeat.as_millis(),
        cfg.pong_timeout.as_millis(),
        cfg.max_message_size
    );
    send_raw(conn, packet(&[json.as_bytes()]));
    // A client that never sends CONNECT must not hold a connection slot (Socket.IO's own
    // server waits 45 s; we wait the hook timeout, 10 s by default).
    let (hub, conn) = (hub.clone(), conn.clone());
    tokio::spawn(async move {
        tokio::time::sleep(hub.config.hook_timeout).await;
        if !session(&conn).connected.load(Relaxed) {
            conn.close(close_codes::PROTOCOL_ERROR, "no Socket.IO CONNECT in time", false);
        }
    });
}

/// Queues a frame that is already in Socket.IO framing (no translation).
fn send_raw(conn: &Conn, f: Bytes) {
    let _ = conn.out.push(f);
}

/// Sends a join's or leave's answer (`refused`: an error); the Socket.IO ack waiting for that
/// request, if any, gets it too (see `RoomAck`).
pub(crate) fn answer_room(hub: &Hub, conn: &Conn, frame: Bytes, refused: bool, ack: Option<&Arc<RoomAck>>) {
    let done = ack.and_then(|a| a.answer(&frame, refused));
    hub.deliver(conn, frame);
    if let Some(p) = done {
        send_raw(conn, p);
    }
}

/// A message dropped before it was read (the rate limit): an ack it asked for gets `error` (our
/// protocol's error message), so no callback waits for an answer that will not come.
pub(crate) fn refuse_ack(conn: &Conn, data: &[u8], error: &Bytes) {
    let Some(rest) = data.strip_prefix(b"42") else { return };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if (1..=15).contains(&digits) {
        let payload = crate::frame::payload_of(error);
        send_raw(conn, packet(&[b"43", &rest[..digits], b"[{\"error\":", &payload, b"}]"]));
    }
}

/// Our protocol's message for a client packet, and the ack its answers go to when it is a join
/// or leave that asked for one.
pub(crate) type Inbound = (Bytes, Option<Arc<RoomAck>>);

fn session(conn: &Conn) -> &Session {
    conn.socketio.get().expect("called for Socket.IO sockets only")
}

/// A client data message. Returns our protocol's message to handle as usual, or `None` when
/// it was handled here (Engine.IO pong, CONNECT, DISCONNECT) or refused (counted, answered).
pub(crate) fn inbound(hub: &Arc<Hub>, conn: &Arc<Conn>, binary: bool, data: &[u8]) -> Option<Inbound> {
    if binary {
        // Attachments of a binary event already refused when its header packet came.
        hub.stats.bad_messages.fetch_add(1, Relaxed);
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let (eio, rest) = text.split_at(text.len().min(1));
    match eio {
        "3" => None, // pong (normally taken before the rate limit, see messages::on_message)
        "2" => {
            send_raw(conn, packet(&[b"3", rest.as_bytes()]));
            None
        }
        "1" => {
            conn.close(close_codes::NORMAL, "", false);
            None
        }
        "4" => socket_packet(hub, conn, rest),
        _ => {
            bad(hub, conn, "not an Engine.IO packet");
            None
        }
    }
}

fn bad(hub: &Hub, conn: &Conn, why: &str) {
    hub.stats.bad_messages.fetch_add(1, Relaxed);
    send_raw(conn, error_event(codes::BAD_MESSAGE, why));
}

/// `42["error",{"type":"error","code":…,"message":…}]`.
fn error_event(code: &str, message: &str) -> Bytes {
    packet(&[b"42[\"error\",", error_event_json(code, message).as_bytes(), b"]"])
}

/// `{"type":"error","code":…,"message":…}`.
fn error_event_json(code: &str, message: &str) -> String {
    format!("{{\"type\":\"error\",\"code\":{},\"message\":{}}}", json_str(code), json_str(message))
}

/// Splits `"/nsp,rest"` into (`"/nsp"`, `"rest"`); no namespace is `/`.
fn namespace(p: &str) -> (&str, &str) {
    if p.starts_with('/') {
        match p.split_once(',') {
            Some((n, rest)) => (n, rest),
            None => (p, ""),
        }
    } else {
        ("/", p)
    }
}

fn socket_packet(hub: &Arc<Hub>, conn: &Arc<Conn>, p: &str) -> Option<Inbound> {
    let (kind, rest) = p.split_at(p.len().min(1));
    let (nsp, rest) = namespace(rest);
    if nsp != "/" {
        if kind == "0" {
            let msg = format!("44{nsp},{{\"message\":\"Invalid namespace\"}}");
            send_raw(conn, packet(&[msg.as_bytes()]));
        }
        hub.stats.bad_messages.fetch_add(1, Relaxed);
        return None;
    }
    match kind {
        "0" => {
            connect(hub, conn, rest);
            None
        }
        "1" => {
            conn.close(close_codes::NORMAL, "client namespace disconnect", false);
            None
        }
        "2" => {
            if !session(conn).connected.load(Relaxed) {
                hub.stats.bad_messages.fetch_add(1, Relaxed);
                return None;
            }
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (ack, args) = rest.split_at(digits);
            let ack = (!ack.is_empty() && ack.len() <= 15).then_some(ack);
            match event_message(hub, conn, args, ack) {
                Ok(m) => m,
                Err(why) => {
                    bad(hub, conn, why);
                    // The ack (a join's too) gets the refusal: nothing else will answer it.
                    if let Some(id) = ack {
                        let e = error_event_json(codes::BAD_MESSAGE, why);
                        send_raw(conn, packet(&[b"43", id.as_bytes(), b"[{\"error\":", e.as_bytes(), b"}]"]));
                    }
                    None
                }
            }
        }
        "3" => None, // an ack for the server: the server never asks for one
        "5" | "6" => {
            hub.stats.bad_messages.fetch_add(1, Relaxed);
            send_raw(
                conn,
                error_event(codes::BINARY_UNSUPPORTED, "binary attachments are not accepted over Socket.IO"),
            );
            None
        }
        _ => {
            bad(hub, conn, "unknown Socket.IO packet type");
            None
        }
    }
}

/// CONNECT: `auth.token` (a JWT) authenticates, as a token at upgrade would.
fn connect(hub: &Arc<Hub>, conn: &Arc<Conn>, payload: &str) {
    if session(conn).connected.load(Relaxed) {
        return;
    }
    #[derive(Deserialize)]
    struct Auth {
        #[serde(default)]
        token: Option<String>,
    }
    let token = serde_json::from_str::<Auth>(payload).ok().and_then(|a| a.token);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        if conn.user().is_none() && hub.config.require_auth {
            return connect_error(hub, conn, "unauthorized");
        }
        return accept(hub, conn, None);
    };
    let claims = match hub.verifier.verify(&token) {
        Ok(c) => c,
        Err(_) => return connect_error(hub, conn, "invalid token"),
    };
    if conn.user().is_some_and(|cur| !cur.same_user(&claims)) {
        return connect_error(hub, conn, "token is for another user");
    }
    match hub.hooks.validate_session(&claims) {
        None => accept(hub, conn, Some(claims)),
        Some(check) => {
            let (hub, conn, t) = (hub.clone(), conn.clone(), hub.config.hook_timeout);
            tokio::spawn(async move {
                if timeout(t, check).await.unwrap_or(false) {
                    accept(&hub, &conn, Some(claims));
                } else {
                    connect_error(&hub, &conn, "session revoked");
                }
            });
        }
    }
}

fn accept(hub: &Hub, conn: &Arc<Conn>, claims: Option<UserClaims>) {
    if let Some(c) = claims {
        crate::membership::adopt_user(hub, conn, c);
    }
    session(conn).connected.store(true, Relaxed);
    let ack = format!("40{{\"sid\":{}}}", json_str(&conn.id));
    send_raw(conn, packet(&[ack.as_bytes()]));
    if let Some(u) = conn.user() {
        let _ = hub.join(conn, &u.user_room());
    }
}

/// CONNECT_ERROR, then close (4001: the client may retry with other credentials).
fn connect_error(hub: &Hub, conn: &Conn, message: &str) {
    hub.stats.refused(crate::stats::Refusal::Auth);
    let m = format!("44{{\"message\":{}}}", json_str(message));
    send_raw(conn, packet(&[m.as_bytes()]));
    conn.close(close_codes::AUTH_EXPIRED, message, false);
}

/// `["name", arg…]` → our message, or `None` when nothing is left to do.
fn event_message(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    args: &str,
    ack: Option<&str>,
) -> Result<Option<Inbound>, &'static str> {
    let args: Vec<&RawValue> =
        serde_json::from_str(args).map_err(|_| "an event is a JSON array [name, …args]")?;
    let name: Cow<str> = args
        .first()
        .and_then(|n| serde_json::from_str(n.get()).ok())
        .ok_or("an event's first element is its name (a string)")?;
    let arg = args.get(1).map(|a| a.get());
    let is_string = arg.is_some_and(|a| a.starts_with('"'));
    let is_object = arg.is_some_and(|a| a.starts_with('{'));
    let name_json = json_str(&name);
    // An object argument is merged into the message: `{"type":name,` + its fields.
    let merged = |a: &str| {
        let fields = a[1..].trim_start();
        if fields.starts_with('}') {
            format!("{{\"type\":{name_json}}}")
        } else {
            format!("{{\"type\":{name_json},{fields}")
        }
    };
    // A join's or leave's ack waits for that request's answers (how many: the request's
    // handler says, see `RoomAck::expect`); other acks are answered by `reply`/`error` with the id.
    let room_ack = ack.filter(|_| ROOM_EVENTS.contains(&name.as_ref())).map(RoomAck::new);
    let msg = match name.as_ref() {
        "join-collection" | "leave-collection" | "subscribe" | "unsubscribe" | "join-doc" | "leave-doc"
            if is_object =>
        {
            merged(arg.unwrap_or("{}"))
        }
        "join-collection" | "leave-collection" | "subscribe" | "unsubscribe" => {
            format!("{{\"type\":{name_json},\"data\":{}}}", arg.unwrap_or("null"))
        }
        "join-room" | "leave-room" | "join" | "leave" => {
            let kind = if name.starts_with("join") { "join-room" } else { "leave-room" };
            if is_object {
                let m = merged(arg.unwrap_or("{}"));
                format!("{{\"type\":\"{kind}\",{}", &m[m.find(',').map_or(m.len() - 1, |i| i + 1)..])
            } else if is_string {
                let room: String = serde_json::from_str(arg.unwrap_or("\"\"")).unwrap_or_default();
                if own_user_room(conn, &room) {
                    // Rooms `user:<id>` (payload-real-time) and `user:<collection>:<id>`: the
                    // socket is in its user's room already; nobody may join another user's.
                    let u = conn.user().expect("checked");
                    let answer = crate::protocol::room_ack(
                        if kind == "join-room" { "joined" } else { "left" },
                        &u.user_room(),
                    );
                    answer_room(hub, conn, answer, false, room_ack.as_ref());
                    return Ok(None);
                }
                // payload-real-time clients join everything with `join(name)`: full collection
                // and doc room names are joins of those.
                let verb = &kind[..kind.len() - "-room".len()];
                if let Some(c) = room.strip_prefix("collection:") {
                    format!("{{\"type\":\"{verb}-collection\",\"collection\":{}}}", json_str(c))
                } else if let Some((c, id)) = room.strip_prefix("doc:").and_then(|d| d.split_once(':')) {
                    format!(
                        "{{\"type\":\"{verb}-doc\",\"collection\":{},\"id\":{}}}",
                        json_str(c),
                        json_str(id)
                    )
                } else {
                    format!("{{\"type\":\"{kind}\",\"room\":{}}}", arg.unwrap_or("null"))
                }
            } else {
                return Err("join/leave needs a room name");
            }
        }
        // `emit('message', {type, …})`: a message of our own protocol, as it is.
        "message" if is_object && !hub.hooks.has_handler("message") => arg.unwrap_or("{}").to_string(),
        "auth" if is_string => format!("{{\"type\":\"auth\",\"token\":{}}}", arg.unwrap_or("null")),
        "ping" => "{\"type\":\"ping\"}".to_string(),
        // payload-real-time's presence call: the identity comes from the token instead.
        "identify" if !hub.hooks.has_handler("identify") => return Ok(None),
        _ => match ack {
            Some(id) => format!("{{\"type\":{name_json},\"id\":{id},\"data\":{}}}", arg.unwrap_or("null")),
            None => format!("{{\"type\":{name_json},\"data\":{}}}", arg.unwrap_or("null")),
        },
    };
    Ok(Some((Bytes::from(msg), room_ack)))
}

/// Events answered by `joined`/`left` (or an error): their acks wait for that answer.
const ROOM_EVENTS: &[&str] = &[
    "join-collection",
    "leave-collection",
    "subscribe",
    "unsubscribe",
    "join-doc",
    "leave-doc",
    "join-room",
    "leave-room",
    "join",
    "leave",
];

fn own_user_room(conn: &Conn, room: &str) -> bool {
    let Some(u) = conn.user() else { return false };
    room == format!("user:{}", u.id) || room == u.user_room()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_checks() {
        assert_eq!(refuse_query(Some("EIO=4&transport=websocket")), None);
        assert_eq!(refuse_query(Some("EIO=4&transport=polling&t=x")), Some(LONG_POLLING_REFUSED));
        assert!(refuse_query(Some("EIO=3&transport=websocket")).is_some());
        assert!(refuse_query(None).is_some());
    }
}
