//! Fan-out passes over a room large enough to be split into a part per worker: every member
//! gets every message once and in order, broadcasts and events interleaved, and the counters
//! see each delivery once.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use realtime_core::{Event, Message, NoHooks, Operation};
use serde_json::json;

use common::{config, start, Client};

/// Above the room size at which a room is split (256) with the test servers' 2 workers.
const MEMBERS: usize = 300;
const MESSAGES: usize = 60;

#[tokio::test]
async fn a_split_room_gets_every_message_once_and_in_order() {
    let server = start(config(), Arc::new(NoHooks));
    let mut clients = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        let mut c = Client::connect(server.port()).await;
        c.welcome().await;
        c.join_collection("posts").await;
        clients.push(c);
    }
    assert_eq!(server.room_members("collection:posts").len(), MEMBERS);
    for i in 0..MESSAGES {
        if i % 2 == 0 {
            let msg = json!({"type": "note", "i": i}).to_string();
            server.broadcast("collection:posts", &Message::text(msg.as_bytes()), None).unwrap();
        } else {
            server
                .emit_event(Event {
                    collection: "posts".into(),
                    id_json: "1".into(),
                    operation: Operation::Update,
                    doc_json: Bytes::from(json!({"i": i}).to_string()),
                    extra_rooms: vec![],
                })
                .unwrap();
        }
    }
    for c in &mut clients {
        for i in 0..MESSAGES {
            let v = c.recv_json().await;
            let got = if i % 2 == 0 { &v["i"] } else { &v["doc"]["i"] };
            assert_eq!(got, &json!(i), "every message once, in order: {v}");
        }
    }
    assert_eq!(server.stats().deliveries, (MEMBERS * MESSAGES) as u64);
    assert_eq!(server.stats().slow_consumer_closes, 0);
}

/// Commands given back to back (so passes hold several): two rooms, broadcasts that skip a
/// socket and direct sends. Each socket gets exactly the messages meant for it, once, in the
/// order they were given.
#[tokio::test]
async fn a_pass_mixing_rooms_skips_and_sends_keeps_each_sockets_order() {
    let server = start(config(), Arc::new(NoHooks));
    let mut a = Client::connect(server.port()).await;
    let id_a = a.welcome().await["socketId"].as_str().unwrap().to_string();
    a.join_collection("posts").await;
    a.join_collection("pages").await;
    let mut b = Client::connect(server.port()).await;
    let id_b = b.welcome().await["socketId"].as_str().unwrap().to_string();
    b.join_collection("posts").await;
    let mut c = Client::connect(server.port()).await;
    c.welcome().await;
    c.join_collection("pages").await;
    const N: usize = 200;
    for i in 0..N {
        let msg = Message::text(json!({"type": "n", "i": i}).to_string().as_bytes());
        match i % 5 {
            0 => server.broadcast("collection:posts", &msg, None),
            1 => server.broadcast("collection:posts", &msg, Some(&id_a)),
            2 => server.broadcast("collection:pages", &msg, None),
            3 => server.send(&id_b, &msg),
            _ => server.broadcast("collection:posts", &msg, Some(&id_b)),
        }
        .unwrap();
    }
    let wants: [(&mut Client, &[usize]); 3] = [(&mut a, &[0, 2, 4]), (&mut b, &[0, 1, 3]), (&mut c, &[2])];
    for (client, kinds) in wants {
        for i in (0..N).filter(|i| kinds.contains(&(i % 5))) {
            assert_eq!(client.recv_json().await["i"], json!(i), "kinds {kinds:?}: in order, none skipped");
        }
        client.expect_silence(std::time::Duration::from_millis(100)).await;
    }
}

/// A holding handle's fan-out calls are checked at once but wait for `flush`; then they go out
/// in the order they were made, interleaved with what other handles sent meanwhile as it was
/// submitted (a plain call flushes what was held before it). `close()` flushes too: what was
/// held reaches every member ahead of its 1001.
#[tokio::test]
async fn held_fan_out_waits_for_flush_then_goes_out_in_order() {
    let server = start(config(), Arc::new(NoHooks));
    let mut c = Client::connect(server.port()).await;
    c.welcome().await;
    c.join_collection("posts").await;
    let held = server.holding();
    let note = |i: usize| Message::text(json!({"type": "note", "i": i}).to_string().as_bytes());
    for i in 0..3 {
        assert!(held.broadcast("collection:posts", &note(i), None).unwrap());
    }
    c.expect_silence(std::time::Duration::from_millis(200)).await;
    held.flush();
    for i in 0..3 {
        assert_eq!(c.recv_json().await["i"], json!(i), "held calls in order once flushed");
    }
    // Held, then a plain call: the plain call sends what was held first.
    held.broadcast("collection:posts", &note(3), None).unwrap();
    server.broadcast("collection:posts", &note(4), None).unwrap();
    for i in 3..5 {
        assert_eq!(c.recv_json().await["i"], json!(i), "submission order across handles");
    }
    // Held and never flushed by the app: close() sends it before the 1001.
    held.broadcast("collection:posts", &note(5), None).unwrap();
    let closing = server.close();
    assert_eq!(c.recv_json().await["i"], json!(5), "close flushes what was held");
    assert_eq!(c.expect_close().await, Some(1001));
    closing.await;
}
