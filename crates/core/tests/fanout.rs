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
