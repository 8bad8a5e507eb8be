//! HTTP endpoints and admission at upgrade: method, path, Origin, capacity, subprotocol, verify.
mod common;

use std::sync::Arc;

use common::*;
use realtime_core::{NoHooks, ServerConfig};

#[tokio::test]
async fn binds_a_free_port_and_serves_health_and_metrics() {
    let s = start(config(), Arc::new(NoHooks));
    assert_ne!(s.port(), 0);
    let mut c = Client::connect(s.port()).await;
    c.welcome().await;
    let (status, body) = http_get(s.port(), "/healthz").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["connections"], 1);
    assert!(v["uptime"].as_f64().unwrap() >= 0.0);
    let (status, body) = http_get(s.port(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE realtime_connections gauge\nrealtime_connections 1\n"), "{body}");
    assert!(body.contains("realtime_upgrade_refusals_total{reason=\"origin\"} 0"));
    // Not an upgrade on a WebSocket path: 426.
    assert_eq!(http_get(s.port(), "/").await.0, 426);
}

#[tokio::test]
async fn path_method_and_handshake_are_checked() {
    let s = start(ServerConfig { path: Some("/ws*".into()), ..config() }, Arc::new(NoHooks));
    assert!(Client::connect_with(s.port(), "/ws", &[]).await.is_ok());
    assert!(Client::connect_with(s.port(), "/ws/deep?x=1", &[]).await.is_ok());
    assert_eq!(Client::connect_with(s.port(), "/other", &[]).await.err(), Some(404));
    assert_eq!(http_get(s.port(), "/other").await.0, 404);
    assert_eq!(http_get(s.port(), "/ws").await.0, 426);
    assert_eq!(Client::request(s.port(), "POST", "/ws", &[]).await.err(), Some(405));
    let exact = start(ServerConfig { path: Some("/socket".into()), ..config() }, Arc::new(NoHooks));
    assert!(Client::connect_with(exact.port(), "/socket?token=", &[]).await.is_ok());
    assert_eq!(Client::connect_with(exact.port(), "/socket/x", &[]).await.err(), Some(404));
    let st = s.stats();
    assert_eq!((st.refusals.path, st.refusals.method), (1, 1));
}

#[tokio::test]
async fn origin_allow_list() {
    let cfg = ServerConfig {
        allow_origins: vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
            r"/^http:\/\/localhost:\d+$/".into(),
        ],
        ..config()
    };
    let s = start(cfg, Arc::new(NoHooks));
    for ok in ["https://app.example.com", "https://a.example.org", "http://localhost:3000"] {
        assert!(Client::connect_with(s.port(), "/", &[("Origin", ok)]).await.is_ok(), "{ok} allowed");
    }
    for bad in ["https://evil.com", "https://example.org", "http://localhost.evil.com:80"] {
        assert_eq!(
            Client::connect_with(s.port(), "/", &[("Origin", bad)]).await.err(),
            Some(403),
            "{bad} refused"
        );
    }
    // No Origin header at all is refused when a list is configured.
    assert_eq!(Client::connect_with(s.port(), "/", &[]).await.err(), Some(403));
    assert_eq!(s.stats().refusals.origin, 4);
}

#[tokio::test]
async fn max_connections_gives_503_and_frees_slots() {
    let s = start(ServerConfig { max_connections: 2, ..config() }, Arc::new(NoHooks));
    let a = Client::connect(s.port()).await;
    let _b = Client::connect(s.port()).await;
    assert_eq!(Client::connect_with(s.port(), "/", &[]).await.err(), Some(503));
    assert_eq!(s.stats().refusals.capacity, 1);
    drop(a);
    eventually("slot freed", || s.stats().connections == 1).await;
    assert!(Client::connect_with(s.port(), "/", &[]).await.is_ok());
}

#[tokio::test]
async fn echoes_one_subprotocol_and_never_advertises_deflate() {
    let s = start(config(), Arc::new(NoHooks));
    let c = Client::connect_with(
        s.port(),
        "/",
        &[
            ("Sec-WebSocket-Protocol", "v1.realtime, json"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(c.handshake.headers.get("sec-websocket-protocol").map(String::as_str), Some("v1.realtime"));
    assert!(!c.handshake.headers.contains_key("sec-websocket-extensions"));
    let only = start(ServerConfig { protocols: vec!["json".into()], ..config() }, Arc::new(NoHooks));
    let c = Client::connect_with(only.port(), "/", &[("Sec-WebSocket-Protocol", "xml, json")]).await.unwrap();
    assert_eq!(c.handshake.headers.get("sec-websocket-protocol").map(String::as_str), Some("json"));
    let c = Client::connect_with(only.port(), "/", &[]).await.unwrap();
    assert!(!c.handshake.headers.contains_key("sec-websocket-protocol"));
}

#[tokio::test]
async fn verify_hook_may_refuse() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.verify.lock() =
        Some(Arc::new(|info| info.headers.iter().any(|(k, v)| k == "x-app" && v == "yes")));
    let s = start(config(), hooks);
    assert!(Client::connect_with(s.port(), "/", &[("X-App", "yes")]).await.is_ok());
    assert_eq!(Client::connect_with(s.port(), "/", &[("X-App", "no")]).await.err(), Some(403));
    assert_eq!(s.stats().refusals.verify, 1);
}

#[tokio::test]
async fn middleware_refusal_closes_4003_after_open() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.on_open.lock() = Some(Arc::new(|s| !s.url().contains("bad")));
    let s = start(config(), hooks);
    let mut bad = Client::connect_with(s.port(), "/?bad=1", &[]).await.unwrap();
    assert_eq!(bad.expect_close().await, Some(4003));
    let mut good = Client::connect(s.port()).await;
    good.welcome().await;
}

#[tokio::test]
async fn reuse_port_lets_two_servers_share_a_port() {
    let first = start(ServerConfig { reuse_port: true, ..config() }, Arc::new(NoHooks));
    let second = realtime_core::Server::start(
        ServerConfig {
            host: "127.0.0.1".into(),
            port: first.port(),
            reuse_port: true,
            worker_threads: Some(1),
            ..config()
        },
        Arc::new(NoHooks),
    )
    .expect("second server binds the same port");
    assert_eq!(first.port(), second.port());
    let mut c = Client::connect(first.port()).await;
    c.welcome().await;
    // Without reusePort the port is taken.
    let err = realtime_core::Server::start(
        ServerConfig { host: "127.0.0.1".into(), port: first.port(), ..config() },
        Arc::new(NoHooks),
    )
    .err()
    .unwrap();
    assert_eq!(err.code(), "EADDR");
}

/// `header_timeout` (`headerTimeoutMs`; it was a fixed 10 s): a connection that has not sent
/// its request headers within it is dropped, one that sends them in time is served.
#[tokio::test]
async fn a_client_slower_than_header_timeout_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);
    let s = start(ServerConfig { header_timeout: HEADER_TIMEOUT, ..config() }, Arc::new(NoHooks));
    for partial in [&b""[..], b"GET / HTTP/1.1\r\nHost: localhost\r\n"] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port())).await.unwrap();
        tcp.write_all(partial).await.unwrap();
        let t0 = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        // Dropped: EOF (or a reset, or hyper's 408) well before the old fixed 10 s.
        let r = tokio::time::timeout(WAIT / 2, async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "{partial:?}: still open after {:?}", t0.elapsed());
        assert!(t0.elapsed() >= HEADER_TIMEOUT / 2, "{partial:?}: dropped too early: {:?}", t0.elapsed());
    }
    let mut c = Client::connect(s.port()).await;
    c.welcome().await;
}
