//! Secure defaults at upgrade: cookie credentials only from trusted Origins, `nbf`/`iat`,
//! another `Authorization` scheme next to the cookie, no token handed to hooks, the
//! `/healthz`/`/metrics` options, and the app's refusal of `join-collection`/`join-doc`.
mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use parking_lot::Mutex;
use realtime_core::{Event, Monitoring, NoHooks, Operation, ServerConfig, UserClaims, Verdicts};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cookie(t: &str) -> String {
    format!("a=1; payload-token={t}; b=2")
}

/// The user id the welcome names, or None for an anonymous socket.
async fn welcome_user(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Option<u64>, u16> {
    let mut c = Client::connect_with(port, path, headers).await?;
    Ok(c.welcome().await["user"]["id"].as_u64())
}

#[tokio::test]
async fn cookie_counts_only_from_a_trusted_origin() {
    let cfg = ServerConfig { trusted_origins: vec!["https://app.example".into()], ..config() };
    let s = start(cfg, Arc::new(NoHooks));
    let t = token(7, 60);
    let c = cookie(&t);
    let evil = ("Origin", "https://evil.example");
    // Cross-site: the cookie is ignored (anonymous), and counted.
    assert_eq!(welcome_user(s.port(), "/", &[("Cookie", &c), evil]).await, Ok(None));
    assert_eq!(s.stats().untrusted_cookies, 1);
    // Trusted origin, the request's own host (any port), and no Origin at all (not a browser).
    assert_eq!(
        welcome_user(s.port(), "/", &[("Cookie", &c), ("Origin", "https://app.example")]).await,
        Ok(Some(7))
    );
    assert_eq!(
        welcome_user(s.port(), "/", &[("Cookie", &c), ("Origin", "http://LOCALHOST:3000")]).await,
        Ok(Some(7))
    );
    assert_eq!(welcome_user(s.port(), "/", &[("Cookie", &c)]).await, Ok(Some(7)));
    // A look-alike host is not the same host.
    assert_eq!(
        welcome_user(s.port(), "/", &[("Cookie", &c), ("Origin", "http://localhost.evil:80")]).await,
        Ok(None)
    );
    // Header and query tokens are not ambient: any Origin.
    let bearer = format!("Bearer {t}");
    assert_eq!(welcome_user(s.port(), "/", &[("Authorization", &bearer), evil]).await, Ok(Some(7)));
    assert_eq!(welcome_user(s.port(), &format!("/?token={t}"), &[evil]).await, Ok(Some(7)));

    // With requireAuth the ignored cookie is a missing credential: 401.
    let strict = ServerConfig { require_auth: true, ..config() };
    let s = start(strict, Arc::new(NoHooks));
    assert_eq!(welcome_user(s.port(), "/", &[("Cookie", &c), evil]).await, Err(401));
    assert_eq!(
        welcome_user(s.port(), "/", &[("Cookie", &c), ("Origin", "http://localhost:3000")]).await,
        Ok(Some(7))
    );
    // allowOrigins entries are trusted too.
    let allowed = ServerConfig { allow_origins: vec!["https://*.example".into()], ..config() };
    let s = start(allowed, Arc::new(NoHooks));
    assert_eq!(
        welcome_user(s.port(), "/", &[("Cookie", &c), ("Origin", "https://a.example")]).await,
        Ok(Some(7))
    );
}

#[tokio::test]
async fn nbf_and_future_iat_are_refused() {
    let s = start(ServerConfig { require_auth: true, ..config() }, Arc::new(NoHooks));
    let header = r#"{"alg":"HS256","typ":"JWT","authVersion":1}"#;
    let now = now_s();
    let with = |extra: serde_json::Value| {
        let mut claims = json!({"id": 3, "collection": "users", "exp": now + 600});
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        format!("JWT {}", sign_with(header, &claims, KEY))
    };
    for (what, extra, want) in [
        ("nbf in the future", json!({"nbf": now + 60}), Err(401)),
        ("iat in the future", json!({"iat": now + 60}), Err(401)),
        ("nbf and iat past", json!({"nbf": now - 5, "iat": now - 5}), Ok(Some(3))),
    ] {
        let h = with(extra);
        assert_eq!(welcome_user(s.port(), "/", &[("Authorization", &h)]).await, want, "{what}");
    }
}

#[tokio::test]
async fn cookie_still_counts_next_to_another_authorization_scheme() {
    let t = token(5, 60);
    let c = cookie(&t);
    let basic = ("Authorization", "Basic dXNlcjpwYXNz");
    // No resolver for other schemes.
    let s = start(config(), Arc::new(NoHooks));
    assert_eq!(welcome_user(s.port(), "/", &[basic, ("Cookie", &c)]).await, Ok(Some(5)));
    // A resolver that does not know the scheme: the cookie still counts; alone it is a 401.
    let hooks = Arc::new(TestHooks::default());
    *hooks.resolve.lock() = Some(Arc::new(|_| None));
    let s = start(ServerConfig { require_auth: true, ..config() }, hooks);
    assert_eq!(welcome_user(s.port(), "/", &[basic, ("Cookie", &c)]).await, Ok(Some(5)));
    assert_eq!(welcome_user(s.port(), "/", &[basic]).await, Err(401));
}

#[tokio::test]
async fn hooks_never_see_a_token() {
    let hooks = Arc::new(TestHooks::default());
    let urls = Arc::new(Mutex::new(Vec::<String>::new()));
    let u = urls.clone();
    *hooks.on_open.lock() = Some(Arc::new(move |s| {
        u.lock().push(s.url().to_string());
        true
    }));
    let s = start(config(), hooks.clone());
    let t = token(9, 60);
    let bearer = format!("Bearer {t}");
    let c = cookie(&t);
    let mut a = Client::connect_with(s.port(), &format!("/ws?room=1&token={t}&x=2"), &[]).await.unwrap();
    a.welcome().await;
    let mut b =
        Client::connect_with(s.port(), "/ws?token=abc", &[("Authorization", &bearer), ("Cookie", &c)])
            .await
            .unwrap();
    b.welcome().await;
    assert_eq!(*urls.lock(), vec!["/ws?room=1&x=2".to_string(), "/ws".to_string()]);
    let seen = hooks.seen.lock();
    let headers = &seen[1].headers;
    let h = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(h("authorization"), Some("[redacted]"));
    assert_eq!(h("cookie"), Some("a=1; b=2"));
    for info in seen.iter() {
        let all = format!("{info:?}");
        assert!(!all.contains(&t), "a hook saw the token: {all}");
    }
}

async fn get(port: u16, path: &str, auth: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out)[9..12].parse().unwrap()
}

#[tokio::test]
async fn monitoring_endpoints_can_be_disabled_moved_or_protected() {
    let off = ServerConfig {
        monitoring: Monitoring { health: false, metrics: false, ..Monitoring::default() },
        ..config()
    };
    let s = start(off, Arc::new(NoHooks));
    assert_eq!(get(s.port(), "/metrics", None).await, 426, "the WebSocket path, not metrics");
    assert!(get(s.port(), "/healthz", None).await != 200);

    let token = Monitoring { token: Some("s3cret".into()), ..Monitoring::default() };
    let s = start(ServerConfig { monitoring: token, ..config() }, Arc::new(NoHooks));
    assert_eq!(get(s.port(), "/metrics", None).await, 401);
    assert_eq!(get(s.port(), "/metrics", Some("Bearer wrong!")).await, 401);
    assert_eq!(get(s.port(), "/healthz", Some("Bearer s3cret")).await, 200);
    assert_eq!(get(s.port(), "/metrics", Some("Bearer s3cret")).await, 200);

    let moved = Monitoring { listen: Some(("127.0.0.1".into(), 0)), ..Monitoring::default() };
    let s = start(ServerConfig { monitoring: moved, ..config() }, Arc::new(NoHooks));
    let mp = s.monitoring_port().expect("a monitoring port");
    assert_ne!(mp, s.port());
    assert_eq!(get(mp, "/metrics", None).await, 200);
    assert_eq!(get(mp, "/healthz", None).await, 200);
    assert_eq!(get(mp, "/", None).await, 404);
    assert_ne!(get(s.port(), "/metrics", None).await, 200);
    assert!(Client::connect_with(mp, "/", &[]).await.is_err(), "no WebSocket on the monitoring port");
    let mut c = Client::connect(s.port()).await;
    c.welcome().await;
}

#[tokio::test]
async fn the_app_may_refuse_collection_and_doc_joins() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.subscribe.lock() = Some(Arc::new(|user, room: &str| {
        room == "collection:public" || (user.is_some() && room == "doc:posts:1")
    }));
    let s = start(config(), hooks);
    let mut anon = Client::connect(s.port()).await;
    anon.welcome().await;
    anon.send_json(json!({"type": "join-doc", "collection": "posts", "id": "1"})).await;
    let e = anon.recv_type("error").await;
    assert_eq!(e["code"], "forbidden");
    anon.send_json(json!({"type": "join-collection", "collection": "secret"})).await;
    assert_eq!(anon.recv_type("error").await["code"], "forbidden");
    anon.send_json(json!({"type": "join-collection", "collection": "public"})).await;
    assert_eq!(anon.recv_json().await, json!({"type": "joined", "room": "collection:public"}));
    assert!(s.room_members("collection:secret").is_empty() && s.room_members("doc:posts:1").is_empty());
    let t = format!("JWT {}", token(2, 60));
    let mut user = Client::connect_with(s.port(), "/", &[("Authorization", &t)]).await.unwrap();
    user.welcome().await;
    user.send_json(json!({"type": "join-doc", "collection": "posts", "id": "1"})).await;
    assert_eq!(user.recv_json().await, json!({"type": "joined", "room": "doc:posts:1"}));
}

#[tokio::test]
async fn authorize_views_give_each_group_its_own_document() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.authorize.lock() = Some(("posts".into(), Arc::new(|_| true)));
    // Users 1 and 2: view 2 (no secret); user 3: as emitted; user 4 and anonymous: nothing.
    *hooks.authorize_views.lock() = Some(Arc::new(|list| Verdicts {
        per_user: list
            .users
            .iter()
            .map(|u| match u.as_ref().map(|u| u.id.as_str()) {
                Some("1") | Some("2") => 2,
                Some("3") => 1,
                _ => 0,
            })
            .collect(),
        docs: vec![Bytes::from_static(br#"{"id":9,"title":"t"}"#)],
    }));
    let s = start(config(), hooks.clone());
    let mut clients = Vec::new();
    for id in [1u64, 2, 3, 4] {
        let mut c = Client::connect_with(s.port(), &format!("/?token={}", token(id, 60)), &[]).await.unwrap();
        c.join_collection("posts").await;
        clients.push((id, c));
    }
    let mut anon = Client::connect(s.port()).await;
    anon.join_collection("posts").await;
    let doc = json!({"id": 9, "title": "t", "secret": "s"});
    let ev = Event {
        collection: "posts".into(),
        id_json: "9".into(),
        operation: Operation::Update,
        doc_json: Bytes::from(doc.to_string()),
        extra_rooms: vec![],
    };
    s.emit_event(ev).unwrap();
    for (id, c) in clients.iter_mut() {
        match id {
            1 | 2 => assert_eq!(c.recv_json().await["doc"], json!({"id": 9, "title": "t"}), "user {id}"),
            3 => assert_eq!(c.recv_json().await["doc"], doc),
            _ => c.expect_silence(std::time::Duration::from_millis(200)).await,
        }
    }
    anon.expect_silence(std::time::Duration::from_millis(100)).await;
    assert_eq!(s.stats().unauthorized_skips, 2);

    // A view index past the docs given is a malformed answer: nobody gets the event.
    *hooks.authorize_views.lock() =
        Some(Arc::new(|list| Verdicts { per_user: vec![3; list.users.len()], docs: vec![] }));
    let ev = Event {
        collection: "posts".into(),
        id_json: "10".into(),
        operation: Operation::Update,
        doc_json: Bytes::from_static(b"{}"),
        extra_rooms: vec![],
    };
    s.emit_event(ev).unwrap();
    for (_, c) in clients.iter_mut() {
        c.expect_silence(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_resolver_sees_a_header_credential_with_its_scheme() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.resolve.lock() = Some(Arc::new(|cred| {
        (cred == "Bearer opaque-key")
            .then(|| UserClaims::from_json(r#"{"id":"o1","collection":"users"}"#).unwrap())
    }));
    let s = start(ServerConfig { require_auth: true, ..config() }, hooks.clone());
    let mut c = Client::connect_with(s.port(), "/", &[("Authorization", "Bearer opaque-key")]).await.unwrap();
    assert_eq!(c.welcome().await["user"]["id"], "o1");
    // What verify_client saw of that upgrade carries no credential.
    assert!(hooks
        .seen
        .lock()
        .iter()
        .all(|i| i.credential.is_none() && !format!("{i:?}").contains("opaque-key")));
}
