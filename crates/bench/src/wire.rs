//! Pure byte-level helpers: the opening handshake, the few JSON fields the generator reads, and
//! the minimum of Engine.IO v4 / Socket.IO v5 framing over a websocket.
//!
//! The generator never parses a whole message: it looks for the fields it needs, which every
//! server under test writes the same way (`JSON.stringify` / serde_json, no spaces).

use memchr::memmem;

/// The fixed `Sec-WebSocket-Key`; the generator does not check `Sec-WebSocket-Accept`.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Socket.IO path on the websocket transport.
pub const SIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The HTTP/1.1 upgrade request.
pub fn upgrade_request(host: &str, path: &str, token: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(t) = token {
        r.push_str("Authorization: Bearer ");
        r.push_str(t);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// More bytes needed.
    Partial,
    /// Status code and the length of the head including the blank line.
    Done { status: u16, len: usize },
}

/// Parses the head of an HTTP response from the start of `buf`.
pub fn response_head(buf: &[u8]) -> Result<Head, String> {
    let Some(end) = memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err("response head over 16 KiB".into());
        }
        return Ok(Head::Partial);
    };
    let line_end = memmem::find(buf, b"\r\n").unwrap_or(end);
    let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| "status line not UTF-8")?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {line:?}"));
    }
    let status =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line {line:?}"))?;
    Ok(Head::Done { status, len: end + 4 })
}

/// The unsigned integer after the key `"name":` that `key` searches for (a prebuilt searcher:
/// the per-delivery path builds none).
pub fn u64_after(buf: &[u8], key: &memmem::Finder<'_>) -> Option<u64> {
    let at = key.find(buf)? + key.needle().len();
    let digits = &buf[at..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    digits[..n].iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add((d - b'0') as u64))
}

/// The string after `"key":"` up to the next quote (no escapes expected in the values we read).
pub fn str_field<'a>(buf: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memmem::find(buf, key)? + key.len();
    let len = memchr::memchr(b'"', &buf[at..])?;
    Some(&buf[at..at + len])
}

/// True when the message has `"type":"<ty>"` (anywhere: servers differ in key order).
pub fn is_type(buf: &[u8], ty: &[u8]) -> bool {
    let mut pat = Vec::with_capacity(ty.len() + 10);
    pat.extend_from_slice(b"\"type\":\"");
    pat.extend_from_slice(ty);
    pat.push(b'"');
    memmem::find(buf, &pat).is_some()
}

/// What one websocket message of Socket.IO over Engine.IO 4 carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Sio<'a> {
    /// `0{…}` Engine.IO open.
    Open,
    /// `2` Engine.IO ping: answer `3`.
    Ping,
    /// `40{…}` namespace connected.
    Connected,
    /// `44{…}` namespace connection refused.
    ConnectError,
    /// `42["<event>",<json>]`: the app message (the peers name every event `message`; our
    /// server names it after the message's `type`).
    Message(&'a [u8]),
    /// Anything else (other events, acks, noop).
    Other,
}

const SIO_EVENT: &[u8] = b"42[\"message\",";

pub fn sio_parse(buf: &[u8]) -> Sio<'_> {
    match buf {
        [b'0', ..] => Sio::Open,
        [b'2'] => Sio::Ping,
        [b'4', b'0', ..] => Sio::Connected,
        [b'4', b'4', ..] => Sio::ConnectError,
        _ if buf.starts_with(b"42[\"") && buf.ends_with(b"]") => match event_arg(&buf[4..]) {
            Some(start) => Sio::Message(&buf[4 + start..buf.len() - 1]),
            None => Sio::Other,
        },
        _ => Sio::Other,
    }
}

/// Where the first argument starts after an event name (`name",`), escapes skipped.
fn event_arg(after_quote: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < after_quote.len() {
        match after_quote[i] {
            b'\\' => i += 2,
            b'"' => return (after_quote.get(i + 1) == Some(&b',')).then_some(i + 2),
            _ => i += 1,
        }
    }
    None
}

/// `42["message",<json>]`.
pub fn sio_wrap(json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIO_EVENT.len() + json.len() + 1);
    v.extend_from_slice(SIO_EVENT);
    v.extend_from_slice(json);
    v.push(b']');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_token() {
        let r = String::from_utf8(upgrade_request("127.0.0.1:9", "/", Some("a.b.c"))).unwrap();
        assert!(r.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(r.contains("\r\nAuthorization: Bearer a.b.c\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let r = String::from_utf8(upgrade_request("h", "/x", None)).unwrap();
        assert!(!r.contains("Authorization"));
    }

    #[test]
    fn response_heads() {
        assert_eq!(response_head(b"HTTP/1.1 101 Switching"), Ok(Head::Partial));
        let full = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        assert_eq!(response_head(full), Ok(Head::Done { status: 101, len: full.len() - 4 }));
        assert_eq!(
            response_head(b"HTTP/1.1 401 Unauthorized\r\n\r\n"),
            Ok(Head::Done { status: 401, len: 29 })
        );
        assert!(response_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(response_head(&vec![b'a'; 17 * 1024]).is_err());
    }

    fn u64_field(buf: &[u8], key: &[u8]) -> Option<u64> {
        u64_after(buf, &memmem::Finder::new(key))
    }

    #[test]
    fn fields() {
        let m = br#"{"type":"update","doc":{"title":"posts","_seq":42,"_ts":1700000000123456},"id":"c3-9"}"#;
        assert_eq!(u64_field(m, b"\"_seq\":"), Some(42));
        assert_eq!(u64_field(m, b"\"_ts\":"), Some(1_700_000_000_123_456));
        assert_eq!(u64_field(m, b"\"nope\":"), None);
        assert_eq!(u64_field(br#"{"_seq":"x"}"#, b"\"_seq\":"), None);
        assert_eq!(u64_field(br#"{"_seq":99999999999999999999}"#, b"\"_seq\":"), None);
        assert_eq!(str_field(m, b"\"id\":\""), Some(&b"c3-9"[..]));
        assert_eq!(str_field(br#"{"id":"open"#, b"\"id\":\""), None);
        assert!(is_type(m, b"update"));
        assert!(!is_type(m, b"upd"));
        assert!(!is_type(br#"{"type":"updates"}"#, b"update"));
        assert!(!is_type(b"[]", b"update"));
        assert!(is_type(br#"{"room":"collection:posts","type":"joined"}"#, b"joined"));
    }

    #[test]
    fn socket_io_framing() {
        assert_eq!(sio_parse(br#"0{"sid":"x","pingInterval":25000}"#), Sio::Open);
        assert_eq!(sio_parse(b"2"), Sio::Ping);
        assert_eq!(sio_parse(b"3"), Sio::Other);
        assert_eq!(sio_parse(br#"40{"sid":"y"}"#), Sio::Connected);
        assert_eq!(sio_parse(br#"44{"message":"no"}"#), Sio::ConnectError);
        let w = sio_wrap(br#"{"type":"joined"}"#);
        assert_eq!(w, br#"42["message",{"type":"joined"}]"#);
        assert_eq!(sio_parse(&w), Sio::Message(br#"{"type":"joined"}"#));
        assert_eq!(sio_parse(br#"42["update",{"a":1}]"#), Sio::Message(br#"{"a":1}"#));
        assert_eq!(sio_parse(br#"42["a\"b",2]"#), Sio::Message(b"2"));
        assert_eq!(sio_parse(br#"42["alone"]"#), Sio::Other);
    }
}
