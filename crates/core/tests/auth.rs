//! JWT verification at upgrade and on live sockets.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use realtime_core::{NoHooks, ServerConfig, UserClaims};
use serde_json::json;

fn required() -> ServerConfig {
    ServerConfig { require_auth: true, auth_version: Some(1), ..config() }
}

#[tokio::test]
async fn token_sources_in_order() {
    let s = start(required(), Arc::new(NoHooks));
    let t = token(7, 60);
    let mut open = Vec::new();
    for (k, v) in [
        ("Authorization", format!("JWT {t}")),
        ("Authorization", format!("Bearer {t}")),
        ("Cookie", format!("a=1; payload-token={t}")),
    ] {
        let mut c = Client::connect_with(s.port(), "/", &[(k, &v)])
            .await
            .unwrap_or_else(|st| panic!("{k} refused {st}"));
        assert_eq!(c.welcome().await["user"], json!({"id": 7, "collection": "users"}));
        open.push(c);
    }
    let mut c = Client::connect_with(s.port(), &format!("/?token={t}"), &[]).await.unwrap();
    let w = c.welcome().await;
    assert_eq!(w["user"]["id"], 7);
    // The user room is joined automatically.
    eventually("user room", || s.room_members("user:users:7").len() == 4).await;
    // Authorization wins over a bad cookie.
    let bad = token(8, -10);
    assert!(Client::connect_with(
        s.port(),
        "/",
        &[("Authorization", &format!("JWT {t}")), ("Cookie", &format!("payload-token={bad}"))]
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let s = start(required(), Arc::new(NoHooks));
    let claims = json!({"id": 1, "collection": "users", "exp": now_s() + 60});
    let good_header = r#"{"alg":"HS256","typ":"JWT","authVersion":1}"#;
    let tampered = {
        let t = token(1, 60);
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = sign_with(good_header, &json!({"id": 2, "collection": "users", "exp": now_s() + 60}), KEY)
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        parts.join(".")
    };
    let none_alg = {
        let t = sign_with(r#"{"alg":"none","typ":"JWT","authVersion":1}"#, &claims, KEY);
        format!("{}.", t.rsplit_once('.').unwrap().0)
    };
    let cases = [
        ("missing", None),
        ("expired", Some(token(1, -5))),
        ("tampered", Some(tampered)),
        ("alg none", Some(none_alg)),
        ("RS256 header", Some(sign_with(r#"{"alg":"RS256","typ":"JWT","authVersion":1}"#, &claims, KEY))),
        ("wrong key", Some(sign_with(good_header, &claims, b"another key entirely, 32 bytes!!"))),
        ("no authVersion", Some(sign_with(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, KEY))),
        ("no collection", Some(sign_with(good_header, &json!({"id": 1, "exp": now_s() + 60}), KEY))),
        ("garbage", Some("a.b.c".to_string())),
    ];
    for (what, tok) in &cases {
        let h = tok.as_ref().map(|t| format!("JWT {t}"));
        let headers: Vec<(&str, &str)> = h.iter().map(|h| ("Authorization", h.as_str())).collect();
        assert_eq!(Client::connect_with(s.port(), "/", &headers).await.err(), Some(401), "{what}");
    }
    assert_eq!(s.stats().refusals.auth, cases.len() as u64);
    assert_eq!(s.stats().connections, 0);
}

#[tokio::test]
async fn stale_cookie_is_anonymous_unless_auth_is_required() {
    let s = start(config(), Arc::new(NoHooks));
    let stale = format!("payload-token={}", token(3, -5));
    let mut c = Client::connect_with(s.port(), "/", &[("Cookie", &stale)]).await.unwrap();
    assert_eq!(c.welcome().await["user"], serde_json::Value::Null);
    // A stale cookie does not hide a fresh query token.
    let mut c = Client::connect_with(s.port(), &format!("/?token={}", token(4, 60)), &[("Cookie", &stale)])
        .await
        .unwrap();
    assert_eq!(c.welcome().await["user"]["id"], 4);
    // An explicit bad token is refused even without requireAuth.
    assert_eq!(
        Client::connect_with(s.port(), "/", &[("Authorization", &format!("Bearer {}", token(3, -5)))])
            .await
            .err(),
        Some(401)
    );
}

#[tokio::test]
async fn expiry_closes_4001_unless_refreshed() {
    let s = start(config(), Arc::new(NoHooks));
    let mut short = Client::connect_with(s.port(), &format!("/?token={}", token(1, 2)), &[]).await.unwrap();
    short.welcome().await;
    let mut refreshed =
        Client::connect_with(s.port(), &format!("/?token={}", token(2, 2)), &[]).await.unwrap();
    refreshed.welcome().await;
    refreshed.send_json(json!({"type":"auth","token": token(2, 60)})).await;
    let ok = refreshed.recv_type("authenticated").await;
    assert!(ok["exp"].as_u64().unwrap() > now_s() + 30);
    // Another user's token is refused and changes nothing.
    refreshed.send_json(json!({"type":"auth","token": token(9, 60)})).await;
    assert_eq!(refreshed.recv_type("error").await["code"], "auth_failed");
    assert_eq!(short.expect_close().await, Some(4001));
    refreshed.expect_silence(Duration::from_millis(1500)).await;
    assert_eq!(s.stats().auth_expired_closes, 1);
}

#[tokio::test]
async fn api_keys_go_to_the_resolver() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.resolve.lock() = Some(Arc::new(|cred| {
        (cred == "users API-Key secret-key")
            .then(|| UserClaims::from_json(r#"{"id":"k1","collection":"users"}"#).unwrap())
    }));
    let s = start(required(), hooks);
    let mut c =
        Client::connect_with(s.port(), "/", &[("Authorization", "users API-Key secret-key")]).await.unwrap();
    assert_eq!(c.welcome().await["user"]["id"], "k1");
    assert_eq!(
        Client::connect_with(s.port(), "/", &[("Authorization", "users API-Key wrong")]).await.err(),
        Some(401)
    );
}

#[tokio::test]
async fn revoked_sessions_are_refused_and_cannot_refresh() {
    let hooks = Arc::new(TestHooks::default());
    // Sessions of user 6 are revoked (the token's sid is "s6").
    *hooks.session.lock() = Some(Arc::new(|u: &UserClaims| u.sid.as_deref() != Some("s6")));
    let s = start(config(), hooks.clone());
    assert_eq!(
        Client::connect_with(s.port(), &format!("/?token={}", token(6, 60)), &[]).await.err(),
        Some(401)
    );
    let mut ok = Client::connect_with(s.port(), &format!("/?token={}", token(5, 60)), &[]).await.unwrap();
    ok.welcome().await;
    // The session ends while the socket is open: a refresh with a token of it closes 4001.
    *hooks.session.lock() = Some(Arc::new(|_: &UserClaims| false));
    ok.send_json(json!({"type":"auth","token": token(5, 120)})).await;
    assert_eq!(ok.expect_close().await, Some(4001));
}
