//! Fan-out across instances. `Local` (the default) does nothing: one process holds every socket.
//! `Redis` routes by interest: an instance subscribes to a room's channel only while it has
//! local members there, so a message for a room nobody else serves costs one PUBLISH.
//!
//! Messages travel as envelopes carrying the already-encoded WebSocket frame, so receivers
//! forward bytes without re-serializing, plus the origin instance (its own messages coming back
//! are ignored: no echo) and the `except` socket.

pub(crate) mod redis;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::hooks::BoxFuture;
use crate::protocol::Operation;
use crate::rooms::Member;

/// What crosses instances.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Remote {
    /// A broadcast to a room.
    Room {
        room: String,
        except: Option<String>,
        frame: Bytes,
    },
    /// A collection event, published on each of its rooms' channels; `index` says which.
    /// Receivers skip sockets in `rooms[..index]`: those get the copy of an earlier room.
    Event {
        operation: Operation,
        collection: String,
        id_json: String,
        rooms: Vec<String>,
        index: u8,
        frame: Bytes,
    },
    /// A message for one socket (on the instance that holds it).
    Socket {
        socket_id: String,
        frame: Bytes,
    },
    DisconnectUser {
        id: String,
        collection: Option<String>,
        code: u16,
    },
    DisconnectSession {
        sid: String,
        code: u16,
    },
}

pub(crate) use crate::stats::BackplaneStats;

/// One way to reach the other instances.
pub(crate) trait Backplane: Send + Sync + 'static {
    /// The first local member joined `room` (`true`) or the last one left (`false`).
    fn interest(&self, room: &str, on: bool);
    /// Publishes to the instances interested in `room`.
    fn publish_room(&self, room: &str, origin: &str, msg: &Remote);
    /// Publishes to one instance.
    fn publish_instance(&self, instance: &str, origin: &str, msg: &Remote);
    /// Publishes to every instance.
    fn publish_all(&self, origin: &str, msg: &Remote);
    /// A socket joined (`true`) or left a room, for cluster-wide presence.
    fn presence(&self, room: &str, member: &Member, on: bool);
    /// Members of `room` on every instance; `None` when there are no other instances. The
    /// future yields `None` when the shared view cannot be read (an outage).
    fn members(&self, room: &str) -> Option<BoxFuture<Option<Vec<Member>>>>;
    /// Resolves once the room subscriptions asked for so far are in place (or failed); `None`:
    /// nothing to wait for.
    fn settled(&self) -> Option<BoxFuture<()>> {
        None
    }
    fn stats(&self) -> BackplaneStats;
    /// Stops background work (presence heartbeat, subscriptions).
    fn shutdown(&self) -> BoxFuture<()>;
}

/// Where a backplane hands what other instances published: the hub seen from below (a broker
/// never reaches into the hub itself; the hub implements this, see `links`).
pub(crate) trait Inbox: Send + Sync + 'static {
    /// Largest frame (bytes) an envelope from another instance may carry.
    fn max_frame(&self) -> usize;
    /// Queues a message from another instance for delivery here; false when refused (the
    /// fan-out queue is full or gone).
    fn receive(&self, msg: Remote) -> bool;
    /// This instance's rooms with local members, with their sizes.
    fn room_sizes(&self) -> Vec<(String, usize)>;
    /// The local members of `room`.
    fn members(&self, room: &str) -> Vec<Member>;
    /// Counters (a required backplane task that ends reports here).
    fn stats(&self) -> &crate::stats::Stats;
    /// The server is shutting down (a task ending now is not a failure).
    fn stopping(&self) -> bool;
}

/// Single-process default.
pub(crate) struct Local;

impl Backplane for Local {
    fn interest(&self, _room: &str, _on: bool) {}
    fn publish_room(&self, _room: &str, _origin: &str, _msg: &Remote) {}
    fn publish_instance(&self, _instance: &str, _origin: &str, _msg: &Remote) {}
    fn publish_all(&self, _origin: &str, _msg: &Remote) {}
    fn presence(&self, _room: &str, _member: &Member, _on: bool) {}
    fn members(&self, _room: &str) -> Option<BoxFuture<Option<Vec<Member>>>> {
        None
    }
    fn stats(&self) -> BackplaneStats {
        BackplaneStats { kind: "local", connected: true, ..Default::default() }
    }
    fn shutdown(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// 2: a per-channel sequence number follows the version (receivers count gaps as `lost`).
const VERSION: u8 = 2;

/// Set in a sequence number handed out again: the message first sent under it got no answer
/// from Redis (counted dropped by its publisher), so it may or may not have arrived.
pub(crate) const REISSUED: u64 = 1 << 63;

/// Where the sequence number sits in an encoded envelope.
const SEQ_AT: std::ops::Range<usize> = 1..9;

/// Writes the channel's sequence number into an encoded envelope (in place when not shared).
pub(crate) fn with_seq(payload: Bytes, seq: u64) -> Bytes {
    let mut b = payload.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    if b.len() >= SEQ_AT.end {
        b[SEQ_AT].copy_from_slice(&seq.to_be_bytes());
    }
    b.freeze()
}

fn put_str8(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(255)];
    b.put_u8(s.len() as u8);
    b.put_slice(s);
}

fn put_str16(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(65535)];
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

fn get_str(b: &mut Bytes, len: usize) -> Option<String> {
    if b.remaining() < len {
        return None;
    }
    String::from_utf8(b.split_to(len).to_vec()).ok()
}

fn get_str8(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 1 {
        return None;
    }
    let n = b.get_u8() as usize;
    get_str(b, n)
}

fn get_str16(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_u16() as usize;
    get_str(b, n)
}

fn op_byte(op: Operation) -> u8 {
    match op {
        Operation::Create => 0,
        Operation::Update => 1,
        Operation::Delete => 2,
    }
}

impl Remote {
    /// `[version][seq][kind][origin]…[frame]`; the sequence number (0 here) is set by the
    /// publisher, per channel, with `with_seq`.
    pub(crate) fn encode(&self, origin: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(64 + self.frame_len());
        b.put_u8(VERSION);
        b.put_u64(0);
        match self {
            Remote::Room { room, except, frame } => {
                b.put_u8(1);
                put_str8(&mut b, origin);
                put_str8(&mut b, except.as_deref().unwrap_or(""));
                put_str16(&mut b, room);
                b.put_slice(frame);
            }
            Remote::Event { operation, collection, id_json, rooms, index, frame } => {
                b.put_u8(2);
                put_str8(&mut b, origin);
                b.put_u8(op_byte(*operation));
                put_str16(&mut b, collection);
                put_str16(&mut b, id_json);
                b.put_u8(*index);
                b.put_u8(rooms.len().min(255) as u8);
                for r in rooms.iter().take(255) {
                    put_str16(&mut b, r);
                }
                b.put_slice(frame);
            }
            Remote::Socket { socket_id, frame } => {
                b.put_u8(3);
                put_str8(&mut b, origin);
                put_str16(&mut b, socket_id);
                b.put_slice(frame);
            }
            Remote::DisconnectUser { id, collection, code } => {
                b.put_u8(4);
                put_str8(&mut b, origin);
                put_str16(&mut b, id);
                put_str16(&mut b, collection.as_deref().unwrap_or(""));
                b.put_u16(*code);
            }
            Remote::DisconnectSession { sid, code } => {
                b.put_u8(5);
                put_str8(&mut b, origin);
                put_str16(&mut b, sid);
                b.put_u16(*code);
            }
        }
        b.freeze()
    }

    fn frame_len(&self) -> usize {
        match self {
            Remote::Room { frame, .. } | Remote::Event { frame, .. } | Remote::Socket { frame, .. } => {
                frame.len()
            }
            _ => 0,
        }
    }

    /// (origin, message); `None` for anything malformed or of another version, and for anything
    /// that would not be safe to hand to a socket: every envelope comes from outside the
    /// process (anyone who can PUBLISH on the channel), so its frame must be one whole data
    /// frame of at most `max_frame` payload bytes, its origin an instance id, its rooms valid
    /// room names and its close codes ones an app may use.
    pub(crate) fn decode(b: Bytes, max_frame: usize) -> Option<(String, u64, Remote)> {
        let (origin, seq, msg) = Self::parse(b)?;
        let valid_origin = !origin.is_empty()
            && origin.len() <= 64
            && origin.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c));
        let ok = valid_origin
            && match &msg {
                Remote::Room { room, frame, .. } => {
                    crate::protocol::valid_room(room) && crate::frame::is_data_frame(frame, max_frame)
                }
                Remote::Event { collection, rooms, frame, .. } => {
                    !collection.is_empty()
                        && rooms.iter().all(|r| crate::protocol::valid_room(r))
                        && frame.first() == Some(&(0x80 | crate::frame::OP_TEXT))
                        && crate::frame::is_data_frame(frame, max_frame)
                }
                Remote::Socket { frame, .. } => crate::frame::is_data_frame(frame, max_frame),
                Remote::DisconnectUser { code, .. } | Remote::DisconnectSession { code, .. } => {
                    crate::protocol::app_close_code(*code)
                }
            };
        ok.then_some((origin, seq, msg))
    }

    fn parse(mut b: Bytes) -> Option<(String, u64, Remote)> {
        if b.remaining() < 10 || b.get_u8() != VERSION {
            return None;
        }
        let seq = b.get_u64();
        let kind = b.get_u8();
        let origin = get_str8(&mut b)?;
        let msg = match kind {
            1 => {
                let except = get_str8(&mut b)?;
                let room = get_str16(&mut b)?;
                Remote::Room { room, except: (!except.is_empty()).then_some(except), frame: b }
            }
            2 => {
                if b.remaining() < 1 {
                    return None;
                }
                let operation = match b.get_u8() {
                    0 => Operation::Create,
                    1 => Operation::Update,
                    2 => Operation::Delete,
                    _ => return None,
                };
                let collection = get_str16(&mut b)?;
                let id_json = get_str16(&mut b)?;
                if b.remaining() < 2 {
                    return None;
                }
                let index = b.get_u8();
                let n = b.get_u8();
                let rooms = (0..n).map(|_| get_str16(&mut b)).collect::<Option<Vec<_>>>()?;
                if usize::from(index) >= rooms.len() {
                    return None;
                }
                Remote::Event { operation, collection, id_json, rooms, index, frame: b }
            }
            3 => {
                let socket_id = get_str16(&mut b)?;
                Remote::Socket { socket_id, frame: b }
            }
            4 => {
                let id = get_str16(&mut b)?;
                let collection = get_str16(&mut b)?;
                if b.remaining() < 2 {
                    return None;
                }
                Remote::DisconnectUser {
                    id,
                    collection: (!collection.is_empty()).then_some(collection),
                    code: b.get_u16(),
                }
            }
            5 => {
                let sid = get_str16(&mut b)?;
                if b.remaining() < 2 {
                    return None;
                }
                Remote::DisconnectSession { sid, code: b.get_u16() }
            }
            _ => return None,
        };
        Some((origin, seq, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let msgs = [
            Remote::Room {
                room: "collection:posts".into(),
                except: Some("a-1".into()),
                frame: Bytes::from_static(b"\x81\x02{}"),
            },
            Remote::Room { room: "r".into(), except: None, frame: Bytes::from_static(b"\x82\x00") },
            Remote::Event {
                operation: Operation::Delete,
                collection: "posts".into(),
                id_json: "\"x\"".into(),
                rooms: vec!["collection:posts".into(), "doc:posts:x".into()],
                index: 1,
                frame: Bytes::from_static(b"\x81\x02{}"),
            },
            Remote::Socket { socket_id: "b-2".into(), frame: Bytes::from_static(b"\x81\x01f") },
            Remote::DisconnectUser { id: "7".into(), collection: None, code: 4001 },
            Remote::DisconnectUser { id: "7".into(), collection: Some("users".into()), code: 4003 },
            Remote::DisconnectSession { sid: "s".into(), code: 4001 },
        ];
        for m in msgs {
            let (origin, seq, back) =
                Remote::decode(with_seq(m.encode("inst"), 7), 1 << 20).expect("decodes");
            assert_eq!((origin.as_str(), seq), ("inst", 7));
            assert_eq!(back, m);
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [&b""[..], b"\x02\x01", b"\x01\x09\x00", b"\x01\x02\x01a\x07", b"\x01\x01\xffab"] {
            assert!(Remote::decode(Bytes::copy_from_slice(bad), 1 << 20).is_none(), "{bad:?}");
        }
        let e = Remote::Event {
            operation: Operation::Create,
            collection: "c".into(),
            id_json: "1".into(),
            rooms: vec!["a".into()],
            index: 0,
            frame: Bytes::from_static(b"\x81\x00"),
        };
        assert!(Remote::decode(e.encode("o"), 1 << 20).is_some());
        let mut raw = e.encode("o").to_vec();
        // From the end: the frame (2 bytes), room "a" (3 bytes), the room count (1), the index.
        let at = raw.len() - 7;
        raw[at] = 5; // an index past the room list
        assert!(Remote::decode(Bytes::from(raw), 1 << 20).is_none());
        // Well-formed envelopes with hostile contents.
        let room = |frame: &'static [u8]| Remote::Room {
            room: "r".into(),
            except: None,
            frame: Bytes::from_static(frame),
        };
        for (m, origin) in [
            (room(b"\x88\x02\x0f\xa0"), "o"),
            (room(b"\x81\x02{}"), ""),
            (room(b"\x81\x02{}"), "a b"),
            (room(b"\x81\x04{}"), "o"),
            (Remote::DisconnectUser { id: "1".into(), collection: None, code: 1005 }, "o"),
            (Remote::DisconnectSession { sid: "s".into(), code: 2000 }, "o"),
            (Remote::Socket { socket_id: "x".into(), frame: Bytes::from_static(b"\x89\x00") }, "o"),
        ] {
            assert!(Remote::decode(m.encode(origin), 1 << 20).is_none(), "{m:?} from {origin:?}");
        }
        let big = Remote::Socket { socket_id: "x".into(), frame: crate::frame::text(&[b'a'; 100]) };
        assert!(Remote::decode(big.encode("o"), 99).is_none(), "over the size budget");
    }
}
