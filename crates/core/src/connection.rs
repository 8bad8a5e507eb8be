//! One WebSocket connection's reader task: frames in (fragments reassembled within the input
//! budget, UTF-8 checked, control frames answered), the welcome, and each complete message
//! handed to `messages`. Its guard unregisters the socket however the task ends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fastwebsockets::OpCode;
use tokio::time::timeout;

use crate::frame;
use crate::hooks::{BoxFuture, UpgradeInfo};
use crate::hub::Hub;
use crate::messages::{on_message, RateWindow};
use crate::protocol::{self, close_codes};
use crate::reader::{FrameReader, Held, ReadError};
use crate::refusals::{fail, invalid_utf8, over_budget, protocol_error, too_big};
use crate::socket::Conn;
use crate::socketio;

/// Unregisters the socket however its reader ends (return, error or abort).
pub(crate) struct ConnGuard {
    pub(crate) hub: Arc<Hub>,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.hub.unregister(&self.conn);
        self.conn.reader_finished();
    }
}

/// Close codes a peer may send (RFC 6455 §7.4).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A message being reassembled from fragments.
struct Partial {
    opcode: OpCode,
    buf: BytesMut,
    utf8_checked: usize,
    /// `buf`'s capacity, taken from the server's input budget.
    held: Held,
}

/// The reader task: reads frames until the peer closes or breaks the protocol. `info` is boxed:
/// a task's arguments keep their place in its future for its whole life, and the request's
/// details are needed only until the open hook answered.
pub(crate) async fn read_loop(guard: ConnGuard, mut reader: FrameReader, info: Box<UpgradeInfo>) {
    let hub = guard.hub.clone();
    let conn = guard.conn.clone();
    let cfg = &hub.config;

    let check = hub.hooks.on_open(&hub.handle(conn.clone()), &info);
    drop(info); // the request's headers are not kept for the socket's life
    if let Some(check) = check {
        match timeout(cfg.hook_timeout, check).await {
            Ok(true) => {}
            Ok(false) => {
                conn.close(close_codes::FORBIDDEN, "forbidden", false);
            }
            // The app was too busy to decide: 1013 (try again later), not a policy refusal.
            Err(_) => {
                hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                conn.close(close_codes::TRY_AGAIN_LATER, "server busy, try again later", false);
            }
        }
    }
    if conn.socketio.get().is_some() {
        if !conn.out.is_closed() {
            socketio::start(&hub, &conn);
        }
    } else if !conn.out.is_closed() && !cfg.echo {
        let user = conn.user();
        let user_json = user.as_ref().map_or_else(|| "null".to_string(), |u| u.summary_json());
        let welcome = format!(
            "{{\"type\":\"welcome\",\"socketId\":{},\"user\":{}}}",
            protocol::json_str(&conn.id),
            user_json
        );
        hub.deliver(&conn, frame::text(welcome.as_bytes()));
        if let Some(u) = user {
            let _ = hub.join(&conn, &u.user_room());
        }
    }

    let mut partial: Option<Partial> = None;
    let mut rate = RateWindow { started: Instant::now(), count: 0, warned: false };
    let mut wait: Option<BoxFuture<()>> = None;

    loop {
        // An answer that must go out before the next message is handled (ordering).
        if let Some(w) = wait.take() {
            w.await;
        }
        let frame = match reader.next().await {
            Ok(f) => f,
            Err(ReadError::Gone) => return,
            Err(e) => {
                fail(&hub, &conn, e);
                break;
            }
        };
        conn.last_seen_ms.store(hub.now_ms(), Relaxed);
        match frame.opcode {
            OpCode::Close => {
                on_close_frame(&hub, &conn, &frame.payload);
                return;
            }
            OpCode::Ping => {
                hub.deliver(&conn, frame::pong(&frame.payload));
            }
            OpCode::Pong => {}
            OpCode::Text | OpCode::Binary => {
                if partial.is_some() {
                    protocol_error(&hub, &conn, "new message inside a fragmented one");
                    break;
                }
                if frame.fin {
                    if !on_message(&hub, &conn, frame.opcode, frame.payload, &mut rate, &mut wait) {
                        break;
                    }
                } else {
                    let mut p = Partial {
                        opcode: frame.opcode,
                        buf: BytesMut::from(&frame.payload[..]),
                        utf8_checked: 0,
                        held: reader.share(),
                    };
                    if !p.held.resize(p.buf.capacity()) {
                        over_budget(&hub, &conn);
                        break;
                    }
                    if p.opcode == OpCode::Text && !check_utf8(&mut p) {
                        invalid_utf8(&hub, &conn);
                        break;
                    }
                    partial = Some(p);
                }
            }
            OpCode::Continuation => {
                let Some(p) = partial.as_mut() else {
                    protocol_error(&hub, &conn, "continuation without a message");
                    break;
                };
                if p.buf.len() + frame.payload.len() > cfg.max_message_size {
                    too_big(&hub, &conn);
                    break;
                }
                p.buf.extend_from_slice(&frame.payload);
                if !p.held.resize(p.buf.capacity()) {
                    over_budget(&hub, &conn);
                    break;
                }
                if p.opcode == OpCode::Text && !check_utf8(p) {
                    invalid_utf8(&hub, &conn);
                    break;
                }
                if frame.fin {
                    let p = partial.take().expect("checked above");
                    if p.opcode == OpCode::Text && p.utf8_checked != p.buf.len() {
                        invalid_utf8(&hub, &conn);
                        break;
                    }
                    if !on_message(&hub, &conn, p.opcode, p.buf.freeze(), &mut rate, &mut wait) {
                        break;
                    }
                }
            }
        }
    }
    // We closed (a protocol violation, a message too big, the input budget): read on until
    // the peer closes its side, within `close_timeout`. Closing with its data unread would make
    // the kernel reset the connection and drop our close frame if it was not sent yet.
    drop(partial); // its share of the input budget
    reader.drain(cfg.close_timeout).await;
}

/// Validates the UTF-8 added since the last check; a sequence cut at the end may complete later.
fn check_utf8(p: &mut Partial) -> bool {
    match std::str::from_utf8(&p.buf[p.utf8_checked..]) {
        Ok(_) => {
            p.utf8_checked = p.buf.len();
            true
        }
        Err(e) if e.error_len().is_none() => {
            p.utf8_checked += e.valid_up_to();
            true
        }
        Err(_) => false,
    }
}

/// Answers the peer's close frame (same code, no reason) unless we started the close.
fn on_close_frame(hub: &Hub, conn: &Conn, payload: &[u8]) {
    let reply = match payload.len() {
        0 => {
            conn.note_close(1005, "");
            Bytes::from_static(&[0x88, 0])
        }
        1 => {
            hub.stats.protocol_errors.fetch_add(1, Relaxed);
            frame::close(close_codes::PROTOCOL_ERROR, "bad close frame")
        }
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                hub.stats.protocol_errors.fetch_add(1, Relaxed);
                frame::close(close_codes::PROTOCOL_ERROR, "bad close code")
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                hub.stats.protocol_errors.fetch_add(1, Relaxed);
                frame::close(close_codes::INVALID_PAYLOAD, "invalid UTF-8")
            } else {
                let reason = std::str::from_utf8(&payload[2..]).unwrap_or("");
                conn.note_close(code, reason);
                frame::close(code, "")
            }
        }
    };
    conn.out.close(Some(reply), false);
}
