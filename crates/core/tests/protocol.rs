//! Wire protocol v1: welcome, rooms, events, broadcasts, handlers, errors.
mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use realtime_core::{Event, HandlerOutcome, Message, NoHooks, Operation, ServerConfig, ServerHandle};
use serde_json::json;

fn event(op: Operation, id: &str, doc: serde_json::Value) -> Event {
    Event {
        collection: "posts".into(),
        id_json: id.into(),
        operation: op,
        doc_json: Bytes::from(doc.to_string()),
        extra_rooms: vec![],
    }
}

#[tokio::test]
async fn welcome_has_unique_instance_prefixed_ids() {
    let s = start(ServerConfig { instance_id: Some("node-a".into()), ..config() }, Arc::new(NoHooks));
    let mut a = Client::connect(s.port()).await;
    let mut b = Client::connect(s.port()).await;
    let (wa, wb) = (a.welcome().await, b.welcome().await);
    let (ia, ib) = (wa["socketId"].as_str().unwrap(), wb["socketId"].as_str().unwrap());
    assert!(ia.starts_with("node-a-") && ib.starts_with("node-a-") && ia != ib);
    assert_eq!(wa["user"], serde_json::Value::Null);
    assert!(s.socket(ia).is_some());
}

#[tokio::test]
async fn events_reach_collection_and_doc_rooms_once() {
    let s = start(config(), Arc::new(NoHooks));
    let mut coll = Client::connect(s.port()).await;
    coll.join_collection("posts").await;
    let mut doc = Client::connect(s.port()).await;
    doc.send_json(json!({"type":"join-doc","collection":"posts","id":42})).await;
    assert_eq!(doc.recv_type("joined").await["room"], "doc:posts:42");
    let mut both = Client::connect(s.port()).await;
    both.join_collection("posts").await;
    both.send_json(json!({"type":"join-doc","collection":"posts","id":"42"})).await;
    both.recv_type("joined").await;
    let mut other = Client::connect(s.port()).await;
    other.join_collection("pages").await;

    s.emit_event(event(Operation::Create, "42", json!({"title": "hello", "n": 1}))).unwrap();
    for c in [&mut coll, &mut doc, &mut both] {
        let e = c.recv_json().await;
        assert_eq!(
            e,
            json!({"type":"update","operation":"create","collection":"posts","id":42,"doc":{"title":"hello","n":1}})
        );
    }
    s.emit_event(event(Operation::Update, "7", json!({"title": "other doc"}))).unwrap();
    assert_eq!(coll.recv_json().await["id"], 7);
    assert_eq!(both.recv_json().await["id"], 7);
    doc.expect_silence(Duration::from_millis(200)).await;
    s.emit_event(event(Operation::Delete, "42", json!({"id": 42}))).unwrap();
    let d = doc.recv_json().await;
    assert_eq!((d["type"].as_str(), d["operation"].as_str()), (Some("delete"), Some("delete")));
    // `both` got each event exactly once.
    assert_eq!(both.recv_json().await["type"], "delete");
    both.expect_silence(Duration::from_millis(200)).await;
    other.expect_silence(Duration::from_millis(100)).await;

    // Leaving stops delivery.
    coll.send_json(json!({"type":"leave-collection","collection":"posts"})).await;
    assert_eq!(coll.recv_type("left").await["room"], "collection:posts");
    s.emit_event(event(Operation::Update, "1", json!({}))).unwrap();
    coll.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(s.stats().events_emitted, 4);
}

#[tokio::test]
async fn extra_rooms_and_string_ids() {
    let s = start(ServerConfig { room_patterns: vec!["team:*".into()], ..config() }, Arc::new(NoHooks));
    let mut c = Client::connect(s.port()).await;
    c.send_json(json!({"type":"join-room","room":"team:red"})).await;
    assert_eq!(c.recv_type("joined").await["room"], "room:team:red");
    let mut ev = event(Operation::Update, "\"abc\"", json!({"x": 1}));
    ev.extra_rooms = vec!["room:team:red".into()];
    s.emit_event(ev).unwrap();
    let e = c.recv_json().await;
    assert_eq!(e["id"], "abc");
}

#[tokio::test]
async fn broadcast_except_and_send() {
    let s = start(config(), Arc::new(NoHooks));
    let mut a = Client::connect(s.port()).await;
    let ida = a.welcome().await["socketId"].as_str().unwrap().to_string();
    a.join_collection("posts").await;
    let mut b = Client::connect(s.port()).await;
    b.join_collection("posts").await;
    s.broadcast("collection:posts", &Message::text(br#"{"type":"note","n":1}"#), Some(&ida)).unwrap();
    assert_eq!(b.recv_json().await, json!({"type":"note","n":1}));
    a.expect_silence(Duration::from_millis(200)).await;
    assert!(s.send(&ida, &Message::text(br#"{"type":"direct"}"#)).unwrap());
    assert_eq!(a.recv_json().await["type"], "direct");
    assert!(!s.send("nope-1", &Message::text(b"{}")).unwrap());
    // Order from one caller is kept.
    for i in 0..200 {
        s.broadcast(
            "collection:posts",
            &Message::text(format!(r#"{{"type":"seq","i":{i}}}"#).as_bytes()),
            None,
        )
        .unwrap();
    }
    for i in 0..200 {
        assert_eq!(b.recv_json().await["i"], i);
        assert_eq!(a.recv_json().await["i"], i);
    }
    // Binary broadcasts stay binary.
    s.broadcast("collection:posts", &Message::binary(&[1, 2, 3]), None).unwrap();
    let f = a.recv().await.unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (2, &[1u8, 2, 3][..]));
}

#[tokio::test]
async fn authorize_is_one_call_per_event_with_distinct_users() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.authorize.lock() =
        Some(("posts".into(), Arc::new(|u| u.is_some_and(|u| u.id.parse::<u64>().unwrap() % 2 == 0))));
    let s = start(config(), hooks.clone());
    let mut clients = Vec::new();
    for id in [1u64, 2, 2, 3, 4] {
        let mut c = Client::connect_with(s.port(), &format!("/?token={}", token(id, 60)), &[]).await.unwrap();
        c.join_collection("posts").await;
        clients.push((id, c));
    }
    let mut anon = Client::connect(s.port()).await;
    anon.join_collection("posts").await;
    s.emit_event(event(Operation::Create, "1", json!({"t": 1}))).unwrap();
    for (id, c) in clients.iter_mut() {
        if *id % 2 == 0 {
            assert_eq!(c.recv_json().await["type"], "update");
        } else {
            c.expect_silence(Duration::from_millis(200)).await;
        }
    }
    anon.expect_silence(Duration::from_millis(100)).await;
    // users 1, 2, 3, 4 and the anonymous one: five distinct, one call.
    assert_eq!(hooks.authorize_calls.lock().clone(), vec![("posts".to_string(), 5)]);
    assert_eq!(s.stats().unauthorized_skips, 3);
}

#[tokio::test]
async fn authorize_user_list_is_reused_until_membership_or_claims_change() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.authorize.lock() =
        Some(("posts".into(), Arc::new(|u| u.is_some_and(|u| u.id.parse::<u64>().unwrap() % 2 == 0))));
    let s = start(config(), hooks.clone());
    let connect = |id: u64, ttl: i64| {
        let port = s.port();
        async move {
            let mut c =
                Client::connect_with(port, &format!("/?token={}", token(id, ttl)), &[]).await.unwrap();
            c.welcome().await;
            c.join_collection("posts").await;
            c
        }
    };
    let mut two = connect(2, 60).await;
    let three = connect(3, 60).await;
    let mut n = 0;
    // Each event names its own doc room (nobody is in those): the list still holds.
    let mut emit = || {
        n += 1;
        s.emit_event(event(Operation::Update, &n.to_string(), json!({"n": n}))).unwrap();
        n
    };
    let last = |hooks: &TestHooks| hooks.authorize_lists.lock().last().cloned().unwrap();
    let exp = |c: &str| c.split(' ').nth(1).unwrap().parse::<u64>().unwrap();

    let e1 = emit();
    assert_eq!(two.recv_json().await["doc"]["n"], e1);
    let e2 = emit();
    assert_eq!(two.recv_json().await["doc"]["n"], e2);
    let calls = hooks.authorize_lists.lock().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], calls[1], "unchanged room: the same list, same id");
    assert_eq!(calls[0].1.len(), 2);

    // A join: a new list with the newcomer, who gets the next event.
    let mut four = connect(4, 60).await;
    let e3 = emit();
    assert_eq!(four.recv_json().await["doc"]["n"], e3);
    assert_eq!(two.recv_json().await["doc"]["n"], e3);
    let (id3, users3) = last(&hooks);
    assert!(id3 != calls[1].0 && users3.len() == 3, "{users3:?}");

    // New claims (a refreshed token): a new list carrying them.
    let old_exp = exp(users3.iter().find(|u| u.starts_with("2 ")).unwrap());
    two.send_json(json!({"type": "auth", "token": token(2, 3600)})).await;
    two.recv_type("authenticated").await;
    let e4 = emit();
    assert_eq!(two.recv_json().await["doc"]["n"], e4);
    assert_eq!(four.recv_json().await["doc"]["n"], e4);
    let (id4, users4) = last(&hooks);
    assert!(id4 != id3);
    assert!(exp(users4.iter().find(|u| u.starts_with("2 ")).unwrap()) > old_exp + 1000, "{users4:?}");

    // A member of the next event's doc room only: a new list with it.
    let mut reader = Client::connect_with(s.port(), &format!("/?token={}", token(6, 60)), &[]).await.unwrap();
    reader.welcome().await;
    reader.send_json(json!({"type": "join-doc", "collection": "posts", "id": 5})).await;
    reader.recv_type("joined").await;
    let e = emit();
    assert_eq!(e, 5);
    assert_eq!(reader.recv_json().await["doc"]["n"], 5);
    assert_eq!(two.recv_json().await["doc"]["n"], 5);
    assert_eq!(four.recv_json().await["doc"]["n"], 5);
    assert_eq!(last(&hooks).1.len(), 4);
    drop(reader);

    // A leave and a close: lists without them.
    four.send_json(json!({"type": "leave-collection", "collection": "posts"})).await;
    four.recv_type("left").await;
    drop(three);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e5 = emit();
    assert_eq!(two.recv_json().await["doc"]["n"], e5);
    let (id5, users5) = last(&hooks);
    assert!(id5 != id4);
    assert_eq!(users5.len(), 1, "{users5:?}");
    four.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(s.stats().unauthorized_skips, 5, "user 3 was skipped while it was there");
}

#[tokio::test]
async fn join_room_policy() {
    let hooks = Arc::new(TestHooks::default());
    let s = start(ServerConfig { room_patterns: vec!["public:*".into()], ..config() }, hooks.clone());
    let mut c = Client::connect(s.port()).await;
    c.send_json(json!({"type":"join-room","room":"secret"})).await;
    assert_eq!(c.recv_type("error").await["code"], "forbidden");
    c.send_json(json!({"type":"join-room","room":"public:news"})).await;
    assert_eq!(c.recv_type("joined").await["room"], "room:public:news");
    *hooks.can_join.lock() = Some(Arc::new(|_, room| room.starts_with("vip")));
    c.send_json(json!({"type":"join-room","room":"vip-lounge"})).await;
    assert_eq!(c.recv_type("joined").await["room"], "room:vip-lounge");
    c.send_json(json!({"type":"join-room","room":"secret"})).await;
    assert_eq!(c.recv_type("error").await["code"], "forbidden");
    c.send_json(json!({"type":"leave-room","room":"vip-lounge"})).await;
    assert_eq!(c.recv_type("left").await["room"], "room:vip-lounge");
    assert_eq!(s.room_members("room:vip-lounge").len(), 0);
}

/// With an async room policy the join was spawned and not awaited, so a `leave-room` sent
/// right after `join-room` applied first: the socket stayed in the room (and got its events)
/// after asking to leave it. Changes to one socket's rooms apply in the order it sent them;
/// the slow policy still holds back nothing else (a `ping` behind the join is answered first).
#[tokio::test]
async fn a_leave_right_after_a_join_awaiting_the_room_policy_applies_after_it() {
    let hooks = Arc::new(TestHooks::default());
    *hooks.can_join.lock() = Some(Arc::new(|_, _| true));
    *hooks.join_delay.lock() = Duration::from_millis(300);
    let s = start(config(), hooks);
    let mut c = Client::connect(s.port()).await;
    c.welcome().await;
    let join = json!({"type":"join-room","room":"lounge"}).to_string();
    let leave = json!({"type":"leave-room","room":"lounge"}).to_string();
    let ping = json!({"type":"ping"}).to_string();
    c.send_burst(&[join.clone(), leave.clone(), ping.clone(), join, leave, ping]).await;
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let v = c.recv_json().await;
        seen.push(v["type"].as_str().unwrap().to_string());
    }
    // The pongs need not wait for the policy; the room answers come in the order asked.
    let rooms: Vec<_> = seen.iter().filter(|t| *t != "pong").cloned().collect();
    assert_eq!(rooms, ["joined", "left", "joined", "left"], "answers: {seen:?}");
    assert_eq!(seen[0], "pong", "a slow policy does not hold back the socket's other messages: {seen:?}");
    assert_eq!(s.room_members("room:lounge").len(), 0);
    s.broadcast("room:lounge", &Message::text(br#"{"type":"late"}"#), None).unwrap();
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn custom_handlers_reply_fail_and_time_out() {
    let hooks = Arc::new(TestHooks::default());
    hooks.handler("echo", |_, v| {
        let data = Bytes::from(v["data"].to_string());
        Box::pin(async move { HandlerOutcome::Reply(Some(data)) })
    });
    hooks.handler("boom", |_, _| {
        Box::pin(async {
            HandlerOutcome::Error { code: "handler_failed".into(), message: "it threw".into() }
        })
    });
    hooks.handler("slow", |_, _| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            HandlerOutcome::Reply(None)
        })
    });
    hooks.handler("join-me", |socket, _| {
        let ok = socket.join("room:handled").is_ok();
        Box::pin(async move { HandlerOutcome::Reply(Some(Bytes::from(ok.to_string()))) })
    });
    let s = start(ServerConfig { hook_timeout: Duration::from_millis(300), ..config() }, hooks);
    let mut c = Client::connect(s.port()).await;
    c.send_json(json!({"type":"echo","id":"r1","data":{"a":[1,2]}})).await;
    assert_eq!(c.recv_type("reply").await, json!({"type":"reply","id":"r1","data":{"a":[1,2]}}));
    c.send_json(json!({"type":"boom","id":2})).await;
    assert_eq!(
        c.recv_type("error").await,
        json!({"type":"error","id":2,"code":"handler_failed","message":"it threw"})
    );
    c.send_json(json!({"type":"slow","id":"s"})).await;
    let e = c.recv_type("error").await;
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("handler_timeout"), Some("s")));
    c.send_json(json!({"type":"join-me","id":1})).await;
    assert_eq!(c.recv_type("reply").await["data"], true);
    assert_eq!(s.room_members("room:handled").len(), 1);
    c.send_json(json!({"type":"nobody-handles-this","id":"u"})).await;
    let e = c.recv_type("error").await;
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("unknown_type"), Some("u")));
    let st = s.stats();
    assert_eq!((st.handler_errors, st.handler_timeouts), (1, 1));
}

#[tokio::test]
async fn bad_input_gets_error_frames_and_harms_no_one() {
    let s = start(config(), Arc::new(NoHooks));
    let mut bystander = Client::connect(s.port()).await;
    bystander.join_collection("posts").await;
    let mut c = Client::connect(s.port()).await;
    c.welcome().await;
    for (msg, code) in [
        ("{not json", "bad_json"),
        ("[1,2,3]", "bad_message"),
        (r#"{"type":42}"#, "bad_message"),
        (r#"{"type":"join-collection"}"#, "bad_message"),
        (r#"{"type":"join-collection","collection":"has space"}"#, "invalid_room"),
        (r#"{"type":"whatever"}"#, "unknown_type"),
    ] {
        c.send_text(msg).await;
        assert_eq!(c.recv_type("error").await["code"], code, "{msg}");
    }
    c.send_frame(true, 2, &[0xde, 0xad]).await;
    assert_eq!(c.recv_type("error").await["code"], "binary_unsupported");
    c.send_json(json!({"type":"ping"})).await;
    assert_eq!(c.recv_json().await, json!({"type":"pong"}));
    assert_eq!(s.stats().bad_messages, 7);
    s.emit_event(event(Operation::Create, "1", json!({}))).unwrap();
    assert_eq!(bystander.recv_json().await["type"], "update");
}

#[tokio::test]
async fn disconnect_user_and_session() {
    let hooks = Arc::new(TestHooks::default());
    let s = start(config(), hooks.clone());
    let mut a1 = Client::connect_with(s.port(), &format!("/?token={}", token(5, 60)), &[]).await.unwrap();
    let mut a2 = Client::connect_with(s.port(), &format!("/?token={}", token(5, 60)), &[]).await.unwrap();
    let mut b = Client::connect_with(s.port(), &format!("/?token={}", token(6, 60)), &[]).await.unwrap();
    for c in [&mut a1, &mut a2, &mut b] {
        c.welcome().await;
    }
    assert_eq!(s.disconnect_user("5", Some("users"), None), 2);
    assert_eq!(a1.expect_close().await, Some(4001));
    assert_eq!(a2.expect_close().await, Some(4001));
    assert_eq!(s.disconnect_session("s6", Some(4003)), 1);
    assert_eq!(b.expect_close().await, Some(4003));
    eventually("all closed", || s.stats().connections == 0).await;
    assert_eq!(hooks.closed.load(Ordering::SeqCst), 3);
}

/// A server with presence events in `room:chat:*` (merged over 100 ms) and a client in
/// `room:chat:1`.
async fn presence_room() -> (ServerHandle, Client) {
    let cfg = ServerConfig {
        presence_events: vec!["room:chat:*".into()],
        room_patterns: vec!["*".into()],
        presence_interval: Duration::from_millis(100),
        ..config()
    };
    let s = start(cfg, Arc::new(NoHooks));
    let mut a = Client::connect(s.port()).await;
    a.welcome().await;
    a.send_json(json!({"type":"join-room","room":"chat:1"})).await;
    a.recv_type("joined").await;
    (s, a)
}

#[tokio::test]
async fn presence_events_in_enabled_rooms() {
    let (s, mut a) = presence_room().await;
    let mut b = Client::connect_with(s.port(), &format!("/?token={}", token(3, 60)), &[]).await.unwrap();
    let idb = b.welcome().await["socketId"].clone();
    b.send_json(json!({"type":"join-room","room":"chat:1"})).await;
    b.recv_type("joined").await;
    // a's own join went out at once (to nobody else); b's, within the interval, is merged.
    let p = a.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type":"presence","room":"room:chat:1","joined":[{"socketId": idb, "userId": 3}],"left":[]})
    );
    drop(b);
    assert_eq!(a.recv_type("presence").await["left"][0]["socketId"], idb);
    // A quiet room's next change goes out at once, in the single-change shape.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut d = Client::connect(s.port()).await;
    let idd = d.welcome().await["socketId"].clone();
    d.send_json(json!({"type":"join-room","room":"chat:1"})).await;
    d.recv_type("joined").await;
    let p = a.recv_type("presence").await;
    assert_eq!(p, json!({"type":"presence","room":"room:chat:1","joined":{"socketId": idd, "userId": null}}));
    // Rooms not enabled stay quiet.
    a.send_json(json!({"type":"join-room","room":"other"})).await;
    a.recv_type("joined").await;
    let mut c = Client::connect(s.port()).await;
    c.send_json(json!({"type":"join-room","room":"other"})).await;
    c.recv_type("joined").await;
    a.expect_silence(Duration::from_millis(200)).await;
}

/// A presence change reaches the room's members in order with what the app sent the room
/// before it: it goes through the fan-out queue like a broadcast (before, it was written at once
/// from the joining socket's task, ahead of anything the queue still held, and a join to a big
/// room cost that task one push per member).
#[tokio::test]
async fn presence_goes_out_in_order_with_the_rooms_broadcasts() {
    let (s, mut a) = presence_room().await;
    // A quiet room: b's join goes out at once (not merged into a later flush).
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The app's broadcast waits in the queue (held until flushed) when b joins.
    let held = s.holding();
    held.broadcast("room:chat:1", &Message::text(br#"{"type":"note","i":1}"#), None).unwrap();
    let mut b = Client::connect(s.port()).await;
    let idb = b.welcome().await["socketId"].clone();
    b.send_json(json!({"type":"join-room","room":"chat:1"})).await;
    b.recv_type("joined").await;
    held.flush();
    assert_eq!(a.recv_json().await, json!({"type":"note","i":1}), "the broadcast made first comes first");
    let p = a.recv_json().await;
    assert_eq!((p["type"].clone(), p["joined"]["socketId"].clone()), (json!("presence"), idb));
}
