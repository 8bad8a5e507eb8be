//! Server-to-client frame encoding. Server frames are unmasked, so one encoded frame is
//! byte-identical for every recipient: it is built once and its `Bytes` shared.

use bytes::{BufMut, Bytes, BytesMut};

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

fn put_header(buf: &mut BytesMut, opcode: u8, payload_len: usize) {
    buf.put_u8(0x80 | opcode);
    match payload_len {
        0..=125 => buf.put_u8(payload_len as u8),
        126..=65535 => {
            buf.put_u8(126);
            buf.put_u16(payload_len as u16);
        }
        _ => {
            buf.put_u8(127);
            buf.put_u64(payload_len as u64);
        }
    }
}

/// Encodes one final frame whose payload is the concatenation of `parts` (one allocation, one copy).
pub fn encode_parts(opcode: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = BytesMut::with_capacity(header_len(len) + len);
    put_header(&mut buf, opcode, len);
    for p in parts {
        buf.put_slice(p);
    }
    buf.freeze()
}

/// A text frame carrying `payload`.
pub fn text(payload: &[u8]) -> Bytes {
    encode_parts(OP_TEXT, &[payload])
}

/// A binary frame carrying `payload`.
pub fn binary(payload: &[u8]) -> Bytes {
    encode_parts(OP_BINARY, &[payload])
}

/// A close frame. The reason is cut (on a char boundary) so the payload stays within the
/// 125 bytes a control frame may carry.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    encode_parts(OP_CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..cut]])
}

/// A ping with no payload.
pub fn ping() -> Bytes {
    Bytes::from_static(&[0x80 | OP_PING, 0])
}

/// A pong echoing the ping's payload (at most 125 bytes, checked by the reader).
pub fn pong(payload: &[u8]) -> Bytes {
    encode_parts(OP_PONG, &[payload])
}

/// The payload of a frame built by this module (empty for anything shorter than a header).
pub(crate) fn payload_of(frame: &Bytes) -> Bytes {
    let start = match frame.get(1).map(|b| b & 0x7f) {
        None => return Bytes::new(),
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
    };
    frame.slice(start.min(frame.len())..)
}

/// Whether `frame` is exactly one frame as this module builds them for apps: final, unmasked,
/// no reserved bits, text (valid UTF-8) or binary, header length matching the bytes, payload at
/// most `max` bytes. Frames from outside the process (the backplane) must pass this before any
/// socket sees them, so nobody can inject a close, a ping or half a frame into a stream.
pub(crate) fn is_data_frame(frame: &[u8], max: usize) -> bool {
    let (Some(&b0), Some(&b1)) = (frame.first(), frame.get(1)) else { return false };
    let opcode = b0 & 0x0f;
    if b0 & 0xf0 != 0x80 || b1 & 0x80 != 0 || !matches!(opcode, OP_TEXT | OP_BINARY) {
        return false;
    }
    let (len, header) = match b1 & 0x7f {
        126 => match frame.get(2..4) {
            Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
            None => return false,
        },
        127 => match frame.get(2..10) {
            Some(l) => (u64::from_be_bytes(l.try_into().unwrap_or([0xff; 8])), 10),
            None => return false,
        },
        n => (u64::from(n), 2),
    };
    if len > max as u64 || frame.len() as u64 != header as u64 + len {
        return false;
    }
    opcode == OP_BINARY || std::str::from_utf8(&frame[header..]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let f = text(&[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        assert_eq!(f.len(), 204);
        let f = binary(&vec![0u8; 70_000]);
        assert_eq!(f[0], 0x82);
        assert_eq!(f[1], 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn only_whole_data_frames_pass() {
        assert!(is_data_frame(&text(b"{}"), 10));
        assert!(is_data_frame(&text(&[b'a'; 300]), 300));
        assert!(is_data_frame(&binary(&vec![0xffu8; 70_000]), 70_000));
        assert!(!is_data_frame(&text(&[b'a'; 300]), 299), "over max");
        for bad in [
            &b""[..],
            b"\x81",
            b"\x81\x03{}",       // shorter than announced
            b"\x81\x01{}",       // trailing bytes
            b"\x88\x02\x0f\xa0", // close
            b"\x89\x00",         // ping
            b"\x01\x02{}",       // not final
            b"\xc1\x02{}",       // reserved bit
            b"\x81\x82abcd{}",   // masked
            b"\x81\x02\xff\xfe", // invalid UTF-8
            b"\x81\x7e\x00",     // cut header
            b"\x81\x7f\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert!(!is_data_frame(bad, 1 << 20), "{bad:?}");
        }
        assert_eq!(payload_of(&Bytes::new()), Bytes::new());
        assert_eq!(payload_of(&Bytes::from_static(b"\x81\x7e")), Bytes::new());
    }

    #[test]
    fn close_reason_is_capped_on_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let f = close(1000, &long);
        assert_eq!(f[0], 0x88);
        let len = f[1] as usize;
        assert!(len <= 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
