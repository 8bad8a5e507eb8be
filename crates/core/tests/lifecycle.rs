//! Graceful shutdown and the stats of a socket's life.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use realtime_core::{Message, NoHooks};
use serde_json::json;

#[tokio::test]
async fn close_flushes_then_sends_1001_and_frees_the_port() {
    let s = start(config(), Arc::new(NoHooks));
    let port = s.port();
    let mut a = Client::connect(port).await;
    a.join_collection("posts").await;
    let mut b = Client::connect(port).await;
    b.welcome().await;
    for i in 0..50 {
        s.broadcast("collection:posts", &Message::text(format!(r#"{{"i":{i}}}"#).as_bytes()), None).unwrap();
    }
    let closing = s.close();
    for i in 0..50 {
        assert_eq!(a.recv_json().await["i"], i, "queued frames flushed before the close");
    }
    assert_eq!(a.expect_close().await, Some(1001));
    assert_eq!(b.expect_close().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), closing).await.expect("close resolves");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "listener is gone");
    assert!(s.broadcast("collection:posts", &Message::text(b"{}"), None).is_err());
    // Closing twice is harmless.
    tokio::time::timeout(Duration::from_secs(5), s.close()).await.unwrap();
}

#[tokio::test]
async fn close_does_not_wait_forever_for_a_peer_that_never_replies() {
    let mut cfg = config();
    cfg.shutdown_timeout = Duration::from_millis(500);
    cfg.close_timeout = Duration::from_millis(200);
    let s = start(cfg, Arc::new(NoHooks));
    let _mute = Client::connect(s.port()).await; // never reads, never replies
                                                 // Deadlines: 0.5 s to flush, then the mute socket is dropped; generous bounds for a loaded
                                                 // machine, but far below "forever".
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), s.close()).await.expect("close resolves");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(s.stats().connections, 0);
}

#[tokio::test]
async fn counters_follow_traffic() {
    let s = start(config(), Arc::new(NoHooks));
    let mut c = Client::connect(s.port()).await;
    c.welcome().await;
    c.send_json(json!({"type":"ping"})).await;
    c.recv_type("pong").await;
    drop(c);
    eventually("disconnect counted", || s.stats().disconnects == 1).await;
    let st = s.stats();
    assert_eq!((st.connects, st.connections, st.messages_in), (1, 0, 1));
    assert!(st.messages_out >= 2 && st.bytes_out > 0 && st.bytes_in > 0);
}
