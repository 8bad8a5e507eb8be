//! One server instance behind Redis, driven over its own WebSocket (the multi-instance tests
//! run several of these as separate processes). Custom message types:
//! `emit` {collection, id, operation, doc}, `broadcast` {room, msg}, `send` {socketId, msg},
//! `members` {room}, `disconnect-user` {id}, `stats`.
//!
//! `backplane_node --redis redis://127.0.0.1:6379 [--port 0] [--instance a] [--jwt-key K] [--presence-ttl-ms 15000] [--reuse-port]`
//! prints `listening <port>` once bound.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use realtime_core::{
    AppHooks, BoxFuture, Event, HandlerOutcome, Message, Operation, RateLimit, RedisConfig, Server,
    ServerConfig, ServerHandle, SocketRef,
};
use serde_json::Value;

struct Control(OnceLock<ServerHandle>);

fn reply(v: Value) -> HandlerOutcome {
    HandlerOutcome::Reply(Some(Bytes::from(v.to_string())))
}

impl AppHooks for Control {
    fn has_handler(&self, kind: &str) -> bool {
        matches!(kind, "emit" | "broadcast" | "send" | "members" | "disconnect-user" | "stats")
    }

    fn on_message(&self, _socket: SocketRef, kind: &str, text: Bytes) -> BoxFuture<HandlerOutcome> {
        let Some(h) = self.0.get().cloned() else { return Box::pin(async { reply(Value::Null) }) };
        let m: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        let d = m["data"].clone();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let kind = kind.to_string();
        Box::pin(async move {
            match kind.as_str() {
                "emit" => {
                    let ev = Event {
                        collection: s(&d["collection"]),
                        id_json: d["id"].to_string(),
                        operation: Operation::parse(d["operation"].as_str().unwrap_or("update"))
                            .unwrap_or(Operation::Update),
                        doc_json: Bytes::from(d["doc"].to_string()),
                        extra_rooms: vec![],
                    };
                    reply(Value::Bool(h.emit_event(ev).is_ok()))
                }
                "broadcast" => reply(Value::Bool(
                    h.broadcast(&s(&d["room"]), &Message::text(d["msg"].to_string().as_bytes()), None)
                        .is_ok(),
                )),
                "send" => reply(Value::Bool(
                    h.send(&s(&d["socketId"]), &Message::text(d["msg"].to_string().as_bytes()))
                        .unwrap_or(false),
                )),
                "members" => {
                    let members = h.room_members_everywhere(&s(&d["room"])).await;
                    let list: Vec<Value> = members
                        .into_iter()
                        .map(|m| serde_json::json!({"socketId": m.socket_id, "userId": m.user_id, "instance": m.instance}))
                        .collect();
                    reply(Value::Array(list))
                }
                "disconnect-user" => reply(Value::from(h.disconnect_user(&s(&d["id"]), None, None))),
                _ => reply(serde_json::to_value(h.stats()).unwrap_or(Value::Null)),
            }
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let mut redis = RedisConfig::new(arg("--redis").expect("--redis URL"));
    if let Some(ms) = arg("--presence-ttl-ms") {
        redis.presence_ttl = Duration::from_millis(ms.parse().expect("ms"));
    }
    if let Some(p) = arg("--prefix") {
        redis.prefix = p;
    }
    let config = ServerConfig {
        host: "127.0.0.1".into(),
        port: arg("--port").map_or(0, |p| p.parse().expect("port")),
        instance_id: arg("--instance"),
        jwt_key: arg("--jwt-key").map(String::into_bytes),
        room_patterns: vec!["*".into()],
        rate_limit: Some(RateLimit { messages: 100_000, window: Duration::from_secs(1) }),
        worker_threads: Some(2),
        redis: Some(redis),
        reuse_port: args.iter().any(|a| a == "--reuse-port"),
        ..ServerConfig::default()
    };
    let hooks = Arc::new(Control(OnceLock::new()));
    let server = Server::start(config, hooks.clone()).expect("server starts");
    let _ = hooks.0.set(server.clone());
    println!("listening {}", server.port());
    loop {
        std::thread::park();
    }
}
