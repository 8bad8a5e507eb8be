//! `realtime-bench floor-server`: the least work a server can do per fan-out delivery on this
//! machine, as a yardstick for the CPU-per-delivery targets. After a subscriber's join it does
//! nothing for that socket but one blocking `send` of the batch's frames, from one thread: no
//! reads, queues, timers, wake-ups, locks per socket, JSON or Node. Whatever it costs per
//! delivery is the kernel's share (the loopback `send`, including the receiving side's TCP work
//! the kernel does on the sender's core), which every server here pays as well. A target below
//! `floor / uWS` asks for fewer sends per delivery than one per socket per batch, which only
//! holding events back to batch them would give.
//!
//! It speaks the generator's control protocol (see server.rs): the events of every `credit`
//! line that has come in since the last send are one batch, their frames built once and sent to
//! every subscriber back to back in one `send`, as uWS's publish drains its per-socket buffers
//! once per loop iteration (when the sends fall behind the rate, events wait and go together).
//! The handshake and the join go through hyper and fastwebsockets (not measured); after `joined`
//! the socket is handed to the control thread as a plain blocking `std::net::TcpStream`. `PORT`,
//! `BENCH_SEQ_START` and `BENCH_SEQ_STEP` from the environment, as for `core-server`.

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use fastwebsockets::{upgrade, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::client::Result;
use crate::core_server::{env_u64, event_doc, out};
use crate::scenarios::now_us;
use crate::wire;

/// Subscribers that joined, as blocking sockets; only the control thread sends on them.
type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

/// Reads the client's join, answers `joined`, and hands the bare socket over.
async fn join(fut: upgrade::UpgradeFut, subscribers: Subscribers) -> std::result::Result<(), WebSocketError> {
    let mut ws = fut.await?;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text => break,
            _ => {}
        }
    }
    let joined = br#"{"type":"joined","room":"collection:posts"}"#;
    ws.write_frame(Frame::text(Payload::Borrowed(joined))).await?;
    // The client sends nothing after its join, so no read data is left behind in hyper.
    let upgraded = ws.into_inner().into_inner();
    let parts = upgraded
        .downcast::<TokioIo<tokio::net::TcpStream>>()
        .map_err(|_| WebSocketError::ConnectionClosed)?;
    let tcp = parts.io.into_inner().into_std()?;
    tcp.set_nonblocking(false)?;
    subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tcp);
    Ok(())
}

/// Accepts and upgrades on a current-thread runtime of its own, beside the control thread.
fn accept_loop(listener: std::net::TcpListener, subscribers: Subscribers) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let subscribers = subscribers.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let subscribers = subscribers.clone();
                    async move {
                        let (response, fut) = upgrade::upgrade(&mut req)?;
                        tokio::task::spawn_local(async move {
                            let _ = join(fut, subscribers).await;
                        });
                        Ok::<Response<Empty<Bytes>>, WebSocketError>(response)
                    }
                });
                let io = TokioIo::new(stream);
                let _ = http1::Builder::new().serve_connection(io, service).with_upgrades().await;
            });
        }
    })
}

/// The event message of `seq`, shaped like the Node peers' `eventMessage`.
fn event_message(seq: u64) -> String {
    let doc = event_doc(seq, now_us());
    format!(r#"{{"type":"update","operation":"create","collection":"posts","id":"{seq}","doc":{doc}}}"#)
}

/// Whether more control input is waiting on stdin now (never blocks).
fn stdin_ready() -> bool {
    let mut fd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no timeout.
    unsafe { libc::poll(&mut fd, 1, 0) > 0 }
}

/// Sends `batch` to every subscriber, one blocking `send` each (a subscriber that went away is
/// skipped: the generator counts what it lost).
fn send_to_all(subscribers: &Subscribers, batch: &mut Vec<u8>) {
    for mut s in subscribers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = s.write_all(batch);
    }
    batch.clear();
}

/// Runs until stdin closes.
pub fn run() -> Result<()> {
    let port = env_u64("PORT", 0)? as u16;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let subscribers: Subscribers = Arc::default();
    let accepting = subscribers.clone();
    std::thread::spawn(move || accept_loop(listener, accepting));
    // Numbered as the other servers number theirs (the generator maps each to its credit).
    let (mut seq, step) = (env_u64("BENCH_SEQ_START", 0)?, env_u64("BENCH_SEQ_STEP", 1)?.max(1));
    let mut emitted = 0u64;
    let mut batch = Vec::new();
    // Larger than stdin's own buffer, which is then bypassed: what is buffered is all here.
    let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut line = String::new();
    out(json!({"ready": true}));
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd: Value = serde_json::from_str(&line)?;
        match cmd["cmd"].as_str() {
            Some("start") => out(json!({"ok": true})),
            Some("credit") => {
                for _ in 0..cmd["n"].as_u64().unwrap_or(0) {
                    wire::encode_server_frame(&mut batch, wire::op::TEXT, event_message(seq).as_bytes());
                    seq += step;
                    emitted += 1;
                }
            }
            Some("stop") => {
                send_to_all(&subscribers, &mut batch);
                out(json!({"emitted": emitted}));
            }
            _ => return Err(format!("unknown control command {cmd}").into()),
        }
        // Every credit that has come in so far is one batch: when the sends fall behind the
        // rate, events wait together as in any server's queue (uWS drains once per loop turn).
        if !batch.is_empty() && input.buffer().is_empty() && !stdin_ready() {
            send_to_all(&subscribers, &mut batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_event_with_seq_and_ts_last() {
        let mut buf = Vec::new();
        wire::encode_server_frame(&mut buf, wire::op::TEXT, event_message(7).as_bytes());
        let head = wire::parse_frame(&buf, 1 << 20).unwrap().unwrap();
        assert_eq!((head.opcode, head.end), (1, buf.len()));
        let payload = &buf[head.start..head.end];
        assert!(wire::is_type(payload, b"update"));
        assert_eq!(wire::seq_ts(payload).map(|(s, _)| s), Some(7));
    }
}
