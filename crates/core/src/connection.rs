//! One WebSocket connection's read side: frames in (fragments reassembled within the input
//! budget, UTF-8 checked, control frames answered), the welcome, and each complete message
//! handed to `messages`. The socket's task (`writer`) drives it, one frame at a time; its
//! guard unregisters the socket once reading is over, however the task ends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fastwebsockets::OpCode;
use tokio::time::timeout;

use crate::frame;
use crate::hooks::{BoxFuture, UpgradeInfo};
use crate::hub::Hub;
use crate::messages::{on_message, RateWindow};
use crate::protocol::{self, close_codes};
use crate::reader::{FrameReader, Held, InFrame, ReadError};
use crate::refusals::{fail, invalid_utf8, over_budget, protocol_error, too_big};
use crate::socket::Conn;
use crate::socketio;

/// Unregisters the socket however its task ends (return, error, abort, or dropped unpolled).
pub(crate) struct ConnGuard {
    pub(crate) hub: Arc<Hub>,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.hub.unregister(&self.conn);
        // The task is over: the waker its queue's wake-up slot keeps would keep the finished
        // task's allocation alive for as long as anyone holds the socket.
        self.conn.out.notify.clear();
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

/// What the socket's task does after a frame or a read error.
pub(crate) enum Flow {
    /// Read on.
    Continue,
    /// We are closing (a protocol violation, a message too big, the input budget): read on and
    /// discard until the peer closes its side, within `close_timeout`. Closing with its data
    /// unread would make the kernel reset the connection and drop our close frame if it was not
    /// sent yet.
    Drain,
    /// Reading is over (the peer's close frame, or the connection is gone).
    Done,
}

/// The read side of a socket's task, between frames: a message being reassembled, the rate
/// window, and an answer that must finish before the next message is read. Kept small: it
/// lives in the socket's future for the socket's whole life.
pub(crate) struct ReadSide {
    partial: Option<Box<Partial>>,
    pub(crate) rate: RateWindow,
    /// An answer that must go out before the next message is handled (ordering); the open
    /// check first. The task polls it instead of reading while it is set.
    pub(crate) wait: Option<BoxFuture<()>>,
}

impl ReadSide {
    /// Starts a socket: the app's open check (if any) runs as the first `wait`; the welcome (or
    /// Socket.IO's open packet) follows it. `info` is dropped once the open hook has it: the
    /// request's headers are not kept for the socket's life.
    pub(crate) fn open(hub: &Arc<Hub>, conn: &Arc<Conn>, info: Box<UpgradeInfo>) -> Self {
        let check = hub.hooks.on_open(&hub.handle(conn.clone()), &info);
        drop(info);
        let wait: Option<BoxFuture<()>> = match check {
            None => {
                welcome(hub, conn);
                None
            }
            Some(check) => {
                let (hub, conn) = (hub.clone(), conn.clone());
                Some(Box::pin(async move {
                    match timeout(hub.config.hook_timeout, check).await {
                        Ok(true) => {}
                        Ok(false) => {
                            conn.close(close_codes::FORBIDDEN, "forbidden", false);
                        }
                        // The app was too busy to decide: 1013 (try again later), not a policy
                        // refusal.
                        Err(_) => {
                            hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                            conn.close(close_codes::TRY_AGAIN_LATER, "server busy, try again later", false);
                        }
                    }
                    welcome(&hub, &conn);
                }))
            }
        };
        Self { partial: None, rate: RateWindow { started_ms: hub.now_ms(), count: 0, warned: false }, wait }
    }

    /// Handles one frame from the peer.
    pub(crate) fn on_frame(
        &mut self,
        hub: &Arc<Hub>,
        conn: &Arc<Conn>,
        reader: &mut FrameReader,
        frame: InFrame,
    ) -> Flow {
        let cfg = &hub.config;
        conn.last_seen_ms.store(hub.now_ms(), Relaxed);
        match frame.opcode {
            OpCode::Close => {
                on_close_frame(hub, conn, &frame.payload);
                return Flow::Done;
            }
            OpCode::Ping => {
                hub.deliver(conn, frame::pong(&frame.payload));
            }
            OpCode::Pong => {}
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    protocol_error(hub, conn, "new message inside a fragmented one");
                    return self.stop();
                }
                if frame.fin {
                    if !on_message(hub, conn, frame.opcode, frame.payload, &mut self.rate, &mut self.wait) {
                        return self.stop();
                    }
                } else {
                    let mut p = Box::new(Partial {
                        opcode: frame.opcode,
                        buf: BytesMut::from(&frame.payload[..]),
                        utf8_checked: 0,
                        held: reader.share(),
                    });
                    if !p.held.resize(p.buf.capacity()) {
                        over_budget(hub, conn);
                        return self.stop();
                    }
                    if p.opcode == OpCode::Text && !check_utf8(&mut p) {
                        invalid_utf8(hub, conn);
                        return self.stop();
                    }
                    self.partial = Some(p);
                }
            }
            OpCode::Continuation => {
                let Some(p) = self.partial.as_mut() else {
                    protocol_error(hub, conn, "continuation without a message");
                    return self.stop();
                };
                if p.buf.len() + frame.payload.len() > cfg.max_message_size {
                    too_big(hub, conn);
                    return self.stop();
                }
                p.buf.extend_from_slice(&frame.payload);
                if !p.held.resize(p.buf.capacity()) {
                    over_budget(hub, conn);
                    return self.stop();
                }
                if p.opcode == OpCode::Text && !check_utf8(p) {
                    invalid_utf8(hub, conn);
                    return self.stop();
                }
                if frame.fin {
                    let p = self.partial.take().expect("checked above");
                    if p.opcode == OpCode::Text && p.utf8_checked != p.buf.len() {
                        invalid_utf8(hub, conn);
                        return self.stop();
                    }
                    let Partial { opcode, buf, held, .. } = *p;
                    let go_on = on_message(hub, conn, opcode, buf.freeze(), &mut self.rate, &mut self.wait);
                    drop(held);
                    if !go_on {
                        return self.stop();
                    }
                }
            }
        }
        Flow::Continue
    }

    /// A read error: the connection is gone, or the peer broke the protocol (we close).
    pub(crate) fn on_error(&mut self, hub: &Hub, conn: &Conn, e: ReadError) -> Flow {
        if e == ReadError::Gone {
            return Flow::Done;
        }
        fail(hub, conn, e);
        self.stop()
    }

    /// Stops reading messages: what was being reassembled gives its share of the input budget
    /// back, and the task drains the peer's input.
    fn stop(&mut self) -> Flow {
        self.partial = None;
        self.wait = None;
        Flow::Drain
    }
}

/// The first frame: the welcome (our protocol) or Socket.IO's open packet, unless the socket
/// is already closing (refused by the open check).
fn welcome(hub: &Arc<Hub>, conn: &Arc<Conn>) {
    let cfg = &hub.config;
    if conn.socketio.get().is_some() {
        if !conn.out.is_closed() {
            socketio::start(hub, conn);
        }
    } else if !conn.out.is_closed() && !cfg.echo {
        let user = conn.user();
        let user_json = user.as_ref().map_or_else(|| "null".to_string(), |u| u.summary_json());
        let welcome = format!(
            "{{\"type\":\"welcome\",\"socketId\":{},\"user\":{}}}",
            protocol::json_str(&conn.id),
            user_json
        );
        hub.deliver(conn, frame::text(welcome.as_bytes()));
        if let Some(u) = user {
            let _ = hub.join(conn, &u.user_room());
        }
    }
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
