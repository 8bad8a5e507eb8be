//! Socket.IO framing of what the server sends: a frame for a Socket.IO socket is rewritten
//! into a Socket.IO packet once per fan-out and thread (not once per recipient), and the state
//! a socket record keeps for Socket.IO. Below the fan-out, which calls `outbound` per socket;
//! the session handling (client packets, CONNECT) is `socketio`, on the connection's side.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{ServerConfig, SocketIoEvents};
use crate::frame;
use crate::protocol::{codes, json_str};

/// Socket.IO state of one socket.
#[derive(Default)]
pub(crate) struct Session {
    /// The client's CONNECT to the main namespace was accepted.
    pub(crate) connected: AtomicBool,
    /// Acks of joins and leaves waiting for their answers, oldest first: (ack id, answers
    /// still to come). Our protocol answers joins by `joined`/`left`/`error` frames without an
    /// id, in request order, so the next such frame answers the oldest one.
    room_acks: Mutex<VecDeque<(String, usize)>>,
    /// `room_acks.len()`, read without the lock on every outbound frame.
    room_acks_len: AtomicUsize,
}

impl Session {
    /// A join or leave with the Socket.IO ack `ack` was sent on; `answers` frames answer it.
    pub(crate) fn expect_room_answers(&self, ack: &str, answers: usize) {
        let mut q = self.room_acks.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back((ack.to_string(), answers.max(1)));
        self.room_acks_len.store(q.len(), Relaxed);
    }

    /// The ack id that an answer to a join or leave completes, if any: an error ends its
    /// request; a multi-collection join acks on its last answer.
    fn room_answer(&self, error: bool) -> Option<String> {
        let mut q = self.room_acks.lock().unwrap_or_else(|e| e.into_inner());
        let front = q.front_mut()?;
        front.1 -= 1;
        let done = (error || front.1 == 0).then(|| q.pop_front().map(|(id, _)| id)).flatten();
        self.room_acks_len.store(q.len(), Relaxed);
        done
    }
}

/// Error codes that can answer a join or leave (others answer other messages).
const ROOM_ERRORS: &[&str] = &[
    codes::BAD_MESSAGE,
    codes::INVALID_ROOM,
    codes::FORBIDDEN,
    codes::HANDLER_TIMEOUT,
    codes::TOO_MANY_ROOMS,
    codes::RATE_LIMITED,
];

/// A text frame carrying one Engine.IO packet.
pub(crate) fn packet(parts: &[&[u8]]) -> Bytes {
    frame::encode_parts(frame::OP_TEXT, parts)
}

/// The engine.io ping, as the writer's heartbeat for Socket.IO sockets.
const PING: &[u8] = &[0x81, 1, b'2'];

thread_local! {
    /// The last frame translated on this thread and its translation: a fan-out pushes one
    /// frame to many sockets in a row, so it is translated once per fan-out and thread.
    static LAST: RefCell<Option<(Bytes, Option<Bytes>)>> = const { RefCell::new(None) };
}

/// A frame for a Socket.IO socket in its framing; `None`: nothing to send to it.
pub(crate) fn outbound(cfg: &ServerConfig, s: &Session, f: Bytes) -> Option<Bytes> {
    match f[0] & 0x0f {
        frame::OP_TEXT | frame::OP_BINARY => {}
        frame::OP_PING => return Some(Bytes::from_static(PING)),
        _ => return Some(f), // close and pong frames are the WebSocket's own
    }
    // A join's or leave's answer also completes its ack (only while one waits: fan-outs skip this).
    let ack = if s.room_acks_len.load(Relaxed) > 0 { room_ack_packet(s, &f) } else { None };
    let out = translated(cfg, f);
    match ack {
        None => out,
        Some(a) => {
            let mut both = BytesMut::new();
            if let Some(o) = out {
                both.extend_from_slice(&o);
            }
            both.extend_from_slice(&a);
            Some(both.freeze())
        }
    }
}

/// `43<id>[answer]` when `f` answers the oldest waiting join or leave.
fn room_ack_packet(s: &Session, f: &Bytes) -> Option<Bytes> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, rename = "type")]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        code: Option<Cow<'a, str>>,
        #[serde(default)]
        id: Option<&'a RawValue>,
    }
    let payload = frame::payload_of(f);
    let a: Answer = serde_json::from_slice(&payload).ok()?;
    let error = match (a.kind.as_ref(), a.code.as_deref()) {
        ("joined" | "left", _) => false,
        ("error", Some(code)) if a.id.is_none() && ROOM_ERRORS.contains(&code) => true,
        _ => return None,
    };
    let id = s.room_answer(error)?;
    Some(if error {
        packet(&[b"43", id.as_bytes(), b"[{\"error\":", &payload, b"}]"])
    } else {
        packet(&[b"43", id.as_bytes(), b"[", &payload, b"]"])
    })
}

/// The translation of `f`, built once per fan-out and thread.
fn translated(cfg: &ServerConfig, f: Bytes) -> Option<Bytes> {
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((src, out)) = last.as_ref() {
            // `src` is held, so its memory cannot be reused by another frame meanwhile.
            if src.as_ptr() == f.as_ptr() && src.len() == f.len() {
                return out.clone();
            }
        }
        let out = translate(cfg, &f);
        *last = Some((f, out.clone()));
        out
    })
}

/// The fields of a server message that decide its Socket.IO shape.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    collection: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    doc: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// An app message that is exactly `{"type":t,"data":d}` (`sendToSocket(ws, event, data)`,
/// `broadcastToRoom(room, data, event)`): Socket.IO clients get `d` as the event's argument, as
/// `io.to(room).emit(t, d)` would have sent it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn translate(cfg: &ServerConfig, f: &Bytes) -> Option<Bytes> {
    let payload = frame::payload_of(f);
    if f[0] & 0x0f == frame::OP_BINARY {
        let mut out = BytesMut::new();
        out.extend_from_slice(&packet(&[b"451-[\"message\",{\"_placeholder\":true,\"num\":0}]"]));
        out.extend_from_slice(&frame::binary(&payload));
        return Some(out.freeze());
    }
    if let Ok(w) = serde_json::from_slice::<Wrapped>(&payload) {
        return Some(event(&w.kind, w.data.get().as_bytes()));
    }
    let Ok(head) = serde_json::from_slice::<Head>(&payload) else {
        // Not one of our messages: valid JSON goes as it is, other text as a string.
        let arg = match serde_json::from_slice::<&RawValue>(&payload) {
            Ok(_) => Cow::Borrowed(&payload[..]),
            Err(_) => Cow::Owned(json_str(&String::from_utf8_lossy(&payload)).into_bytes()),
        };
        return Some(packet(&[b"42[\"message\",", &arg, b"]"]));
    };
    let ack = head.id.map(|i| i.get()).filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
    match (head.kind.as_ref(), ack) {
        ("welcome", _) => None,
        ("reply", Some(id)) => {
            let data = head.data.map_or(&b"null"[..], |d| d.get().as_bytes());
            Some(packet(&[b"43", id.as_bytes(), b"[", data, b"]"]))
        }
        ("error", Some(id)) => Some(packet(&[b"43", id.as_bytes(), b"[{\"error\":", &payload, b"}]"])),
        ("update" | "delete", _) if cfg.socketio_events == SocketIoEvents::PayloadRealTime => {
            match (&head.collection, head.doc) {
                (Some(c), Some(doc)) => {
                    let name = json_str(&format!("realtime:{c}"));
                    let body = &payload[..payload.len() - 1];
                    Some(packet(&[
                        b"42[",
                        name.as_bytes(),
                        b",",
                        body,
                        b",\"data\":",
                        doc.get().as_bytes(),
                        b"}]",
                    ]))
                }
                _ => Some(event(&head.kind, &payload)),
            }
        }
        (kind, _) => Some(event(kind, &payload)),
    }
}

fn event(name: &str, payload: &[u8]) -> Bytes {
    packet(&[b"42[", json_str(name).as_bytes(), b",", payload, b"]"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(b: &Bytes) -> String {
        String::from_utf8(frame::payload_of(b).to_vec()).unwrap()
    }

    #[test]
    fn translates_server_messages() {
        let cfg = ServerConfig::default();
        let sess = Session::default();
        let t = |s: &str| outbound(&cfg, &sess, frame::text(s.as_bytes())).map(|b| text_of(&b));
        assert_eq!(t(r#"{"type":"welcome","socketId":"a"}"#), None);
        assert_eq!(
            t(r#"{"type":"joined","room":"collection:posts"}"#).unwrap(),
            r#"42["joined",{"type":"joined","room":"collection:posts"}]"#
        );
        assert_eq!(t(r#"{"type":"reply","id":7,"data":{"a":1}}"#).unwrap(), r#"437[{"a":1}]"#);
        assert_eq!(
            t(r#"{"type":"error","id":3,"code":"x","message":"m"}"#).unwrap(),
            r#"433[{"error":{"type":"error","id":3,"code":"x","message":"m"}}]"#
        );
        assert_eq!(t("hello").unwrap(), r#"42["message","hello"]"#);
        assert_eq!(t(r#"{"type":"chat","data":{"a":1}}"#).unwrap(), r#"42["chat",{"a":1}]"#);
        assert_eq!(
            t(r#"{"type":"chat","data":1,"x":2}"#).unwrap(),
            r#"42["chat",{"type":"chat","data":1,"x":2}]"#
        );
        assert_eq!(t("[1,2]").unwrap(), r#"42["message",[1,2]]"#);
        let ping = outbound(&cfg, &sess, frame::ping()).unwrap();
        assert_eq!(&ping[..], PING);
        let pr = ServerConfig { socketio_events: SocketIoEvents::PayloadRealTime, ..ServerConfig::default() };
        let f = frame::text(
            br#"{"type":"update","operation":"create","collection":"posts","id":1,"doc":{"t":1}}"#,
        );
        assert_eq!(
            text_of(&outbound(&pr, &sess, f).unwrap()),
            r#"42["realtime:posts",{"type":"update","operation":"create","collection":"posts","id":1,"doc":{"t":1},"data":{"t":1}}]"#
        );
    }

    #[test]
    fn translation_is_cached_per_frame() {
        let cfg = ServerConfig::default();
        let f = frame::text(br#"{"type":"x"}"#);
        let sess = Session::default();
        let a = outbound(&cfg, &sess, f.clone()).unwrap();
        let b = outbound(&cfg, &sess, f).unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn join_answers_complete_their_acks_in_order() {
        let cfg = ServerConfig::default();
        let sess = Session::default();
        sess.expect_room_answers("4", 2); // join-collection ['a', 'b']
        sess.expect_room_answers("5", 1); // join-room, refused below
                                          // Every frame written for one outbound frame, as text (the ack is a second frame).
        let out = |s: &str| {
            String::from_utf8_lossy(&outbound(&cfg, &sess, frame::text(s.as_bytes())).unwrap()).into_owned()
        };
        let first = out(r#"{"type":"joined","room":"collection:a"}"#);
        assert!(first.ends_with(r#"42["joined",{"type":"joined","room":"collection:a"}]"#), "{first}");
        let last = out(r#"{"type":"joined","room":"collection:b"}"#);
        assert!(last.ends_with(r#"434[{"type":"joined","room":"collection:b"}]"#), "{last}");
        // An error that answers another message leaves the join waiting; a refusal answers it.
        assert!(!out(r#"{"type":"error","code":"unknown_type","message":"m"}"#).contains("435"));
        let refused = out(r#"{"type":"error","code":"forbidden","message":"m"}"#);
        assert!(
            refused.ends_with(r#"435[{"error":{"type":"error","code":"forbidden","message":"m"}}]"#),
            "{refused}"
        );
        assert_eq!(sess.room_acks_len.load(Relaxed), 0);
    }
}
