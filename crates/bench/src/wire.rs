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

/// The unsigned integer after the last `key` (e.g. `"_ts":`) in `buf`. The generator's
/// `_seq`/`_ts` sit at the end of the event document in every server's encoding, so a plain
/// backward scan touches a few dozen bytes where a forward search would read the whole message.
/// (The last occurrence wins; the benchmark documents hold one.)
pub fn u64_after_rev(buf: &[u8], key: &[u8]) -> Option<u64> {
    let at = rfind(buf, key)? + key.len();
    parse_u64(&buf[at..])
}

/// `(_seq, _ts)` of an event message: `_ts` searched from the end, then `_seq` before it (they
/// are adjacent in every server's encoding, so the whole lookup reads ~35 bytes).
pub fn seq_ts(buf: &[u8]) -> Option<(u64, u64)> {
    const SEQ: &[u8] = b"\"_seq\":";
    const TS: &[u8] = b"\"_ts\":";
    let ts_at = rfind(buf, TS)?;
    let ts = parse_u64(&buf[ts_at + TS.len()..])?;
    let seq = u64_after_rev(&buf[..ts_at], SEQ).or_else(|| u64_after_rev(buf, SEQ))?;
    Some((seq, ts))
}

/// Where the last `key` starts in `buf` (a backward byte loop: cheaper than a SIMD searcher's
/// set-up when the match is near the end).
pub fn rfind(buf: &[u8], key: &[u8]) -> Option<usize> {
    let (&last, _) = key.split_last()?;
    let mut i = buf.len();
    while i >= key.len() {
        i -= 1;
        if buf[i] == last && buf[i + 1 - key.len()..=i] == *key {
            return Some(i + 1 - key.len());
        }
    }
    None
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    // 19 digits stay below u64::MAX (1.8e19): no overflow check per digit.
    Some(digits[..n].iter().fold(0u64, |acc, &d| acc * 10 + (d - b'0') as u64))
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

/// WebSocket opcodes the generator handles (RFC 6455 §5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// One complete frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// Where the payload starts and ends in the buffer.
    pub start: usize,
    pub end: usize,
}

/// Parses one server-to-client frame at the start of `buf`: `Ok(None)` when it is not all there
/// yet. Servers never mask (RFC 6455 §5.1) and the generator negotiates no extension, so a mask
/// bit, RSV bits or a payload over `max` are protocol errors.
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Option<FrameHead>, String> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(format!("frame with RSV bits {:#04x}", b0 & 0x70));
    }
    if b1 & 0x80 != 0 {
        return Err("masked frame from the server".into());
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8])), 10),
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    if len > max as u64 {
        return Err(format!("frame of {len} bytes (limit {max})"));
    }
    let end = at + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(FrameHead { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, start: at, end }))
}

/// Appends one final client-to-server frame (masked with `mask`, as RFC 6455 §5.3 requires of
/// clients) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    push_head(out, opcode, payload.len(), 0x80);
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[at..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one final server-to-client frame (unmasked: servers never mask) to `out`.
pub fn encode_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_head(out, opcode, payload.len(), 0);
    out.extend_from_slice(payload);
}

/// A final frame's first bytes: FIN and `opcode`, then the length with the mask bit `masked`.
fn push_head(out: &mut Vec<u8>, opcode: u8, len: usize, masked: u8) {
    out.push(0x80 | opcode);
    match len {
        n if n < 126 => out.push(masked | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
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
        u64_after_rev(buf, key)
    }

    #[test]
    fn fields() {
        let m = br#"{"type":"update","doc":{"title":"posts","_seq":42,"_ts":1700000000123456},"id":"c3-9"}"#;
        assert_eq!(u64_field(m, b"\"_seq\":"), Some(42));
        assert_eq!(u64_field(m, b"\"_ts\":"), Some(1_700_000_000_123_456));
        assert_eq!(u64_field(m, b"\"nope\":"), None);
        let sorted = br#"{"doc":{"_seq":7,"_ts":9,"title":"t:x"},"type":"update"}"#;
        assert_eq!(u64_field(sorted, b"\"_seq\":"), Some(7));
        assert_eq!(u64_field(sorted, b"\"_ts\":"), Some(9));
        assert_eq!(u64_field(b"\"_ts\":", b"\"_ts\":"), None);
        assert_eq!(u64_field(b"", b"\"_ts\":"), None);
        assert_eq!(seq_ts(m), Some((42, 1_700_000_000_123_456)));
        assert_eq!(seq_ts(sorted), Some((7, 9)));
        assert_eq!(seq_ts(br#"{"_ts":5,"x":{"_seq":6}}"#), Some((6, 5)));
        assert_eq!(seq_ts(br#"{"_ts":5}"#), None);
        assert_eq!(seq_ts(br#"{"_seq":5}"#), None);
        assert_eq!(rfind(b"abcabc", b"abc"), Some(3));
        assert_eq!(rfind(b"abcab", b"abc"), Some(0));
        assert_eq!(rfind(b"ab", b"abc"), None);
        assert_eq!(rfind(b"abc", b""), None);
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

    #[test]
    fn frames_parse_at_every_length_form() {
        assert_eq!(parse_frame(b"", 100), Ok(None));
        assert_eq!(parse_frame(b"\x81", 100), Ok(None));
        assert_eq!(parse_frame(b"\x81\x02h", 100), Ok(None));
        let f = parse_frame(b"\x81\x02hi\x89\x00", 100).unwrap().unwrap();
        assert_eq!(f, FrameHead { fin: true, opcode: op::TEXT, start: 2, end: 4 });
        let mut long = vec![0x82, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(parse_frame(&long[..200], 1000), Ok(None));
        assert_eq!(parse_frame(&long, 1000).unwrap().unwrap().end, 260);
        assert!(parse_frame(&long, 255).is_err());
        let mut huge = vec![0x01, 127];
        huge.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(parse_frame(&huge, 1 << 20), Ok(None));
        huge.extend(std::iter::repeat_n(b'y', 70_000));
        let f = parse_frame(&huge, 1 << 20).unwrap().unwrap();
        assert_eq!((f.fin, f.opcode, f.start, f.end), (false, op::TEXT, 10, 70_010));
        assert!(parse_frame(b"\x81\x82abcdxx", 100).is_err(), "masked");
        assert!(parse_frame(b"\xc1\x00", 100).is_err(), "RSV1");
    }

    #[test]
    fn client_frames_are_masked_and_round_trip() {
        for n in [0usize, 5, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_frame(&mut out, op::TEXT, &payload, [1, 2, 3, 4]);
            assert_eq!(out[0], 0x81);
            assert_ne!(out[1] & 0x80, 0, "mask bit");
            let (len, at) = match out[1] & 0x7f {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize, 10),
                l => (l as usize, 2),
            };
            assert_eq!(len, n);
            let mask = &out[at..at + 4];
            let unmasked: Vec<u8> = out[at + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(unmasked, payload);
        }
    }
}
