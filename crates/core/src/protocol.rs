//! Wire protocol v1: parsing client messages and building server messages (JSON text frames).

mod join_shapes;

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::frame;

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 256;

/// Error codes sent in `{"type":"error","code":…}` frames.
pub mod codes {
    pub const BAD_JSON: &str = "bad_json";
    pub const BAD_MESSAGE: &str = "bad_message";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const INVALID_ROOM: &str = "invalid_room";
    pub const FORBIDDEN: &str = "forbidden";
    pub const TOO_MANY_ROOMS: &str = "too_many_rooms";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const AUTH_FAILED: &str = "auth_failed";
    pub const HANDLER_FAILED: &str = "handler_failed";
    pub const HANDLER_TIMEOUT: &str = "handler_timeout";
    pub const BINARY_UNSUPPORTED: &str = "binary_unsupported";
    /// Client input is over the server's memory budget: the message was not handled; retry.
    pub const BUSY: &str = "busy";
}

/// Close codes the server sends.
pub mod close_codes {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const SLOW_CONSUMER: u16 = 1013;
    /// Same code as `SLOW_CONSUMER`: "try again later" (the app was too busy to decide).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const AUTH_EXPIRED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    pub const RATE_LIMITED: u16 = 4008;
}

/// Close codes an app may ask for: 1000, 1008 (policy violation, which the client SDK treats as
/// final) and the 3000-4999 range for libraries and apps.
pub fn app_close_code(code: u16) -> bool {
    code == close_codes::NORMAL || code == 1008 || (3000..=4999).contains(&code)
}

/// The fields of a client message the core reads; everything else is left to the app.
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub collection: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
    /// Read only by other clients' join shapes (`join_shapes`).
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    /// PXL-style sub-type (`ServerConfig::action_routing`).
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
}

/// What a client asked for.
pub(crate) enum Request<'a> {
    Join(String),
    Leave(String),
    /// One or more `collection:` rooms (other clients' join shapes may name several).
    JoinMany(Vec<String>),
    LeaveMany(Vec<String>),
    /// `join-room` / `leave-room`: the app's room policy decides joins.
    JoinRoom(String),
    LeaveRoom(String),
    Ping,
    Auth(Cow<'a, str>),
    /// Any other type: for the app's handler.
    Custom(Cow<'a, str>),
}

/// Why a message could not be understood; becomes an error frame.
pub(crate) struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused { code, message: message.into() }
}

/// A doc id given as a JSON string or number, as text for a room name.
fn id_text(raw: &RawValue) -> Option<String> {
    let s = raw.get();
    if s.starts_with('"') {
        serde_json::from_str::<String>(s).ok()
    } else if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !s.is_empty() {
        Some(s.to_string())
    } else {
        None
    }
}

/// Checks a room name's length and charset: ASCII letters, digits and `_ - . : @ / + =`.
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@/+=".contains(&b))
}

fn room_or_refuse(name: String) -> Result<String, Refused> {
    if valid_room(&name) {
        Ok(name)
    } else {
        Err(refused(codes::INVALID_ROOM, "room names are 1-256 chars of [A-Za-z0-9_-.:@/+=]"))
    }
}

impl<'a> Envelope<'a> {
    /// Parses one text message.
    pub(crate) fn parse(text: &'a str) -> Result<Self, Refused> {
        serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                refused(codes::BAD_MESSAGE, "a message is a JSON object with a string \"type\"")
            } else {
                refused(codes::BAD_JSON, format!("invalid JSON: {e}"))
            }
        })
    }

    /// Maps the envelope to a request, validating the room it names.
    pub(crate) fn request(&self) -> Result<Request<'a>, Refused> {
        let collection = || -> Result<&str, Refused> {
            self.collection
                .as_deref()
                .ok_or_else(|| refused(codes::BAD_MESSAGE, format!("{} needs \"collection\"", self.kind)))
        };
        let doc_room = || -> Result<String, Refused> {
            let c = collection()?;
            let id = self.id.and_then(id_text).ok_or_else(|| {
                refused(codes::BAD_MESSAGE, format!("{} needs \"id\" (string or integer)", self.kind))
            })?;
            room_or_refuse(format!("doc:{c}:{id}"))
        };
        let app_room = || -> Result<String, Refused> {
            let r = self
                .room
                .as_deref()
                .ok_or_else(|| refused(codes::BAD_MESSAGE, format!("{} needs \"room\"", self.kind)))?;
            room_or_refuse(format!("room:{r}"))
        };
        let collection_rooms = || -> Result<Vec<String>, Refused> {
            join_shapes::collection_slugs(&self.kind, self.collection.as_deref(), self.data)?
                .into_iter()
                .map(|c| room_or_refuse(format!("collection:{c}")))
                .collect()
        };
        Ok(match join_shapes::canonical_type(&self.kind) {
            "join-collection" => Request::JoinMany(collection_rooms()?),
            "leave-collection" => Request::LeaveMany(collection_rooms()?),
            "join-doc" => Request::Join(doc_room()?),
            "leave-doc" => Request::Leave(doc_room()?),
            "join-room" => Request::JoinRoom(app_room()?),
            "leave-room" => Request::LeaveRoom(app_room()?),
            "ping" => Request::Ping,
            "auth" => match &self.token {
                Some(t) => Request::Auth(t.clone()),
                None => return Err(refused(codes::BAD_MESSAGE, "auth needs \"token\"")),
            },
            _ => Request::Custom(self.kind.clone()),
        })
    }
}

/// Escapes `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `{"type":"error","code":…,"message":…[,"id":…]}` as a frame.
pub(crate) fn error_frame(code: &str, message: &str, id: Option<&str>) -> Bytes {
    let msg = json_str(message);
    match id {
        Some(id) => frame::encode_parts(
            frame::OP_TEXT,
            &[
                b"{\"type\":\"error\",\"id\":",
                id.as_bytes(),
                b",\"code\":\"",
                code.as_bytes(),
                b"\",\"message\":",
                msg.as_bytes(),
                b"}",
            ],
        ),
        None => frame::encode_parts(
            frame::OP_TEXT,
            &[b"{\"type\":\"error\",\"code\":\"", code.as_bytes(), b"\",\"message\":", msg.as_bytes(), b"}"],
        ),
    }
}

/// `{"type":"joined"|"left","room":…}` as a frame.
pub(crate) fn room_ack(kind: &str, room: &str) -> Bytes {
    frame::encode_parts(
        frame::OP_TEXT,
        &[b"{\"type\":\"", kind.as_bytes(), b"\",\"room\":", json_str(room).as_bytes(), b"}"],
    )
}

/// `{"type":"reply","id":…,"data":…}` as a frame; `data` is JSON text (`null` when absent).
pub(crate) fn reply_frame(id: &str, data: Option<&[u8]>) -> Bytes {
    frame::encode_parts(
        frame::OP_TEXT,
        &[b"{\"type\":\"reply\",\"id\":", id.as_bytes(), b",\"data\":", data.unwrap_or(b"null"), b"}"],
    )
}

/// The event frame of a create/update/delete: one allocation, the doc copied once.
pub fn event_frame(operation: Operation, collection: &str, id_json: &str, doc_json: &[u8]) -> Bytes {
    let kind: &[u8] = if operation == Operation::Delete { b"delete" } else { b"update" };
    frame::encode_parts(
        frame::OP_TEXT,
        &[
            b"{\"type\":\"",
            kind,
            b"\",\"operation\":\"",
            operation.as_str().as_bytes(),
            b"\",\"collection\":",
            json_str(collection).as_bytes(),
            b",\"id\":",
            id_json.as_bytes(),
            b",\"doc\":",
            doc_json,
            b"}",
        ],
    )
}

/// The event frame in the uWebSockets.js Payload plugin's shape (its `RealtimeEventPayload`:
/// `type` is the operation, `timestamp` an ISO 8601 string), plus our `operation`:
/// `{"type":"payload:event","data":{"type","operation","collection","id","doc","timestamp"}}`.
pub fn uws_plugin_event_frame(
    operation: Operation,
    collection: &str,
    id_json: &str,
    doc_json: &[u8],
    timestamp_ms: u64,
) -> Bytes {
    let ts = iso8601_utc(timestamp_ms);
    frame::encode_parts(
        frame::OP_TEXT,
        &[
            b"{\"type\":\"payload:event\",\"data\":{\"type\":\"",
            operation.as_str().as_bytes(),
            b"\",\"operation\":\"",
            operation.as_str().as_bytes(),
            b"\",\"collection\":",
            json_str(collection).as_bytes(),
            b",\"id\":",
            id_json.as_bytes(),
            b",\"doc\":",
            doc_json,
            b",\"timestamp\":\"",
            ts.as_bytes(),
            b"\"}}",
        ],
    )
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (JavaScript's
/// `Date.prototype.toISOString`), by the proleptic Gregorian civil-from-days conversion.
fn iso8601_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64 + 719_468; // days since 0000-03-01
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let sod = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms % 1000
    )
}

/// A write a Payload collection saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "create" => Some(Operation::Create),
            "update" => Some(Operation::Update),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_javascript() {
        // new Date(0).toISOString(), a leap day, and 2026-11-30T01:02:03.456Z.
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_796_000_523_456), "2026-11-30T01:02:03.456Z");
    }

    fn req(text: &str) -> Result<String, &'static str> {
        let env = Envelope::parse(text).map_err(|r| r.code)?;
        Ok(match env.request().map_err(|r| r.code)? {
            Request::Join(r) => format!("join {r}"),
            Request::Leave(r) => format!("leave {r}"),
            Request::JoinMany(r) => format!("join {}", r.join(" ")),
            Request::LeaveMany(r) => format!("leave {}", r.join(" ")),
            Request::JoinRoom(r) => format!("join-room {r}"),
            Request::LeaveRoom(r) => format!("leave-room {r}"),
            Request::Ping => "ping".into(),
            Request::Auth(t) => format!("auth {t}"),
            Request::Custom(t) => format!("custom {t}"),
        })
    }

    #[test]
    fn parses_requests() {
        assert_eq!(
            req(r#"{"type":"join-collection","collection":"posts"}"#).unwrap(),
            "join collection:posts"
        );
        assert_eq!(req(r#"{"type":"join-doc","collection":"posts","id":42}"#).unwrap(), "join doc:posts:42");
        assert_eq!(
            req(r#"{"type":"join-collection","data":["posts","users"]}"#).unwrap(),
            "join collection:posts collection:users"
        );
        assert_eq!(req(r#"{"type":"subscribe","data":"posts"}"#).unwrap(), "join collection:posts");
        assert_eq!(req(r#"{"type":"unsubscribe","collection":"posts"}"#).unwrap(), "leave collection:posts");
        assert_eq!(
            req(r#"{"type":"leave-doc","collection":"posts","id":"a\u0062"}"#).unwrap(),
            "leave doc:posts:ab"
        );
        assert_eq!(req(r#"{"type":"join-room","room":"chat:1"}"#).unwrap(), "join-room room:chat:1");
        assert_eq!(req(r#"{"type":"ping"}"#).unwrap(), "ping");
        assert_eq!(req(r#"{"type":"auth","token":"x.y.z"}"#).unwrap(), "auth x.y.z");
        assert_eq!(req(r#"{"type":"echo","id":"1","data":{"a":[1,2]}}"#).unwrap(), "custom echo");
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(req("{nope").unwrap_err(), codes::BAD_JSON);
        assert_eq!(req("[1,2]").unwrap_err(), codes::BAD_MESSAGE);
        assert_eq!(req(r#"{"type":5}"#).unwrap_err(), codes::BAD_MESSAGE);
        assert_eq!(req(r#"{"type":"join-collection"}"#).unwrap_err(), codes::BAD_MESSAGE);
        assert_eq!(
            req(r#"{"type":"join-doc","collection":"p","id":{"x":1}}"#).unwrap_err(),
            codes::BAD_MESSAGE
        );
        assert_eq!(req(r#"{"type":"join-collection","collection":"a b"}"#).unwrap_err(), codes::INVALID_ROOM);
        let long = format!(r#"{{"type":"join-room","room":"{}"}}"#, "x".repeat(300));
        assert_eq!(req(&long).unwrap_err(), codes::INVALID_ROOM);
    }

    #[test]
    fn frames_are_valid_json() {
        let f = event_frame(Operation::Create, "posts", "7", br#"{"title":"t\"q"}"#);
        let v: serde_json::Value = serde_json::from_slice(&f[2..]).unwrap();
        assert_eq!(v["type"], "update");
        assert_eq!(v["operation"], "create");
        assert_eq!(v["id"], 7);
        assert_eq!(v["doc"]["title"], "t\"q");
        let e = error_frame("bad_json", "quote \" here", Some("\"r1\""));
        let v: serde_json::Value = serde_json::from_slice(&e[2..]).unwrap();
        assert_eq!(v["id"], "r1");
        assert_eq!(v["message"], "quote \" here");
    }
}
