//! Socket.IO framing of what the server sends: a frame for a Socket.IO socket is rewritten
//! into a Socket.IO packet once per fan-out and thread (not once per recipient), and the state
//! a socket record keeps for Socket.IO. Below the fan-out, which calls `outbound` per socket;
//! the session handling (client packets, CONNECT) is `socketio`, on the connection's side.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::AtomicBool;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{ServerConfig, SocketIoEvents};
use crate::frame;
use crate::protocol::json_str;

/// Socket.IO state of one socket.
#[derive(Default)]
pub(crate) struct Session {
    /// The client's CONNECT to the main namespace was accepted.
    pub(crate) connected: AtomicBool,
}

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
pub(crate) fn outbound(cfg: &ServerConfig, f: Bytes) -> Option<Bytes> {
    match f[0] & 0x0f {
        frame::OP_TEXT | frame::OP_BINARY => {}
        frame::OP_PING => return Some(Bytes::from_static(PING)),
        _ => return Some(f), // close and pong frames are the WebSocket's own
    }
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
        let t = |s: &str| outbound(&cfg, frame::text(s.as_bytes())).map(|b| text_of(&b));
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
        let ping = outbound(&cfg, frame::ping()).unwrap();
        assert_eq!(&ping[..], PING);
        let pr = ServerConfig { socketio_events: SocketIoEvents::PayloadRealTime, ..ServerConfig::default() };
        let f = frame::text(
            br#"{"type":"update","operation":"create","collection":"posts","id":1,"doc":{"t":1}}"#,
        );
        assert_eq!(
            text_of(&outbound(&pr, f).unwrap()),
            r#"42["realtime:posts",{"type":"update","operation":"create","collection":"posts","id":1,"doc":{"t":1},"data":{"t":1}}]"#
        );
    }

    #[test]
    fn translation_is_cached_per_frame() {
        let cfg = ServerConfig::default();
        let f = frame::text(br#"{"type":"x"}"#);
        let a = outbound(&cfg, f.clone()).unwrap();
        let b = outbound(&cfg, f).unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr());
    }
}
