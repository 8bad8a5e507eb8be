//! Socket.IO framing of what the server sends: a frame for a Socket.IO socket is rewritten
//! into a Socket.IO packet once per fan-out (`FanFrame`, not once per recipient), and the state
//! a socket record keeps for Socket.IO. Below the fan-out, which asks `FanFrame` per socket;
//! the session handling (client packets, CONNECT) is `socketio`, on the connection's side.

use std::borrow::Cow;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

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

/// A Socket.IO ack waiting for the answers to one join or leave. Whoever answers the request
/// hands it each answer, so the ack gets its own request's answer whatever else the socket is
/// sent meanwhile and in whatever order requests are answered (an async room policy may answer
/// a later join first; a refusal of another message carries no id either).
pub(crate) struct RoomAck {
    id: String,
    /// Answers still to come, and the first refusal among those that came.
    state: Mutex<(usize, Option<Bytes>)>,
}

impl RoomAck {
    /// An ack (`id`: the client's digits) that one answer completes unless `expect` says more.
    pub(crate) fn new(id: &str) -> Arc<Self> {
        Arc::new(Self { id: id.to_string(), state: Mutex::new((1, None)) })
    }

    /// The request will be answered `n` times (a list of collections: once per collection).
    pub(crate) fn expect(&self, n: usize) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = n.max(1);
    }

    /// One answer (`frame`: our protocol's `joined`/`left`, or an `error` when `refused`). Once
    /// the last came: `43<id>[answer]`, the answer being the first refusal if any (`{"error":…}`)
    /// or else the last answer. Answers after that are ignored.
    pub(crate) fn answer(&self, frame: &Bytes, refused: bool) -> Option<Bytes> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 == 0 {
            return None;
        }
        st.0 -= 1;
        if refused && st.1.is_none() {
            st.1 = Some(frame.clone());
        }
        if st.0 > 0 {
            return None;
        }
        let id = self.id.as_bytes();
        Some(match &st.1 {
            Some(err) => packet(&[b"43", id, b"[{\"error\":", &frame::payload_of(err), b"}]"]),
            None => packet(&[b"43", id, b"[", &frame::payload_of(frame), b"]"]),
        })
    }
}

/// A text frame carrying one Engine.IO packet.
pub(crate) fn packet(parts: &[&[u8]]) -> Bytes {
    frame::encode_parts(frame::OP_TEXT, parts)
}

/// The engine.io ping, as the writer's heartbeat for Socket.IO sockets.
const PING: &[u8] = &[0x81, 1, b'2'];

/// One fan-out's frame and its Socket.IO translation, built for the first Socket.IO recipient
/// and shared by the rest: the member loop clones one of two `Bytes` per socket, as for our own
/// protocol (no per-recipient lookup, no clone and drop of the untranslated frame).
pub(crate) struct FanFrame {
    frame: Bytes,
    sio: OnceLock<Option<Bytes>>,
}

impl FanFrame {
    pub(crate) fn new(frame: Bytes) -> Self {
        Self { frame, sio: OnceLock::new() }
    }

    /// The frame as our protocol sends it.
    pub(crate) fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The frame for a socket that speaks Socket.IO (`sio`) or our protocol; `None`: nothing to
    /// send to it. A fan-out frame never answers one socket's join, so no ack is looked for.
    #[inline]
    pub(crate) fn for_socket(&self, cfg: &ServerConfig, sio: bool) -> Option<Bytes> {
        if sio {
            self.sio.get_or_init(|| framed(cfg, &self.frame)).clone()
        } else {
            Some(self.frame.clone())
        }
    }
}

/// `f` in Socket.IO framing (control frames mapped, data frames translated); `None`: nothing to
/// send to a Socket.IO socket. For a frame many sockets get, call once (see `FanFrame`).
pub(crate) fn framed(cfg: &ServerConfig, f: &Bytes) -> Option<Bytes> {
    match f[0] & 0x0f {
        frame::OP_TEXT | frame::OP_BINARY => translate(cfg, f),
        frame::OP_PING => Some(Bytes::from_static(PING)),
        _ => Some(f.clone()), // close and pong frames are the WebSocket's own
    }
}

/// A frame for one Socket.IO socket in its framing; `None`: nothing to send to it. (A fan-out
/// translates once for all its recipients: `FanFrame`.)
pub(crate) fn outbound(cfg: &ServerConfig, f: Bytes) -> Option<Bytes> {
    match f[0] & 0x0f {
        frame::OP_TEXT | frame::OP_BINARY => {}
        frame::OP_PING => return Some(Bytes::from_static(PING)),
        _ => return Some(f), // close and pong frames are the WebSocket's own
    }
    translate(cfg, &f)
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
    fn a_fan_out_translates_once() {
        let cfg = ServerConfig::default();
        let f = FanFrame::new(frame::text(br#"{"type":"x"}"#));
        let (a, b) = (f.for_socket(&cfg, true).unwrap(), f.for_socket(&cfg, true).unwrap());
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(text_of(&a), r#"42["x",{"type":"x"}]"#);
        assert_eq!(f.for_socket(&cfg, false).unwrap().as_ptr(), f.frame().as_ptr());
        let welcome = FanFrame::new(frame::text(br#"{"type":"welcome"}"#));
        assert!(welcome.for_socket(&cfg, true).is_none());
        assert_eq!(&FanFrame::new(frame::ping()).for_socket(&cfg, true).unwrap()[..], PING);
    }

    #[test]
    fn a_room_ack_takes_its_requests_answers_only() {
        let ack = RoomAck::new("4");
        ack.expect(3); // join-collection ['a', 'b', 'c'], b refused
        let joined =
            |r: &str| frame::text(format!(r#"{{"type":"joined","room":"collection:{r}"}}"#).as_bytes());
        let refusal = frame::text(br#"{"type":"error","code":"too_many_rooms","message":"m"}"#);
        assert!(ack.answer(&joined("a"), false).is_none());
        assert!(ack.answer(&refusal, true).is_none());
        let done = ack.answer(&joined("c"), false).unwrap();
        assert_eq!(
            text_of(&done),
            r#"434[{"error":{"type":"error","code":"too_many_rooms","message":"m"}}]"#
        );
        assert!(ack.answer(&joined("d"), false).is_none(), "answers after the last are ignored");
        let one = RoomAck::new("12");
        assert_eq!(
            text_of(&one.answer(&joined("x"), false).unwrap()),
            r#"4312[{"type":"joined","room":"collection:x"}]"#
        );
    }
}
