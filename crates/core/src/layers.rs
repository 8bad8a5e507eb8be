//! Keeps the crate's imports running one way: a file may name (`crate::x`) only modules listed
//! before its own in `ORDER`, the layering, bottom first. A child file (`backplane/redis.rs`)
//! belongs to its parent's layer. Every module `lib.rs` declares must be placed in `ORDER`.

use std::collections::HashMap;
use std::path::Path;

/// The modules, bottom first (the groups are the layers of ARCHITECTURE.md section 2).
const ORDER: &[&str] = &[
    // Base: errors, wire format, configuration, credentials, counters, client input, a
    // socket's outbound queue, presence merging, Socket.IO framing of outbound frames.
    "error",
    "frame",
    "protocol",
    "config",
    "auth",
    "stats",
    "supervise",
    "wake",
    "reader",
    "outbound",
    "presence",
    "socketio_framing",
    // Socket state (the record, the registry) and rooms (+ members); the app's socket handle
    // (behind `SocketOps`); who an authorized event goes to; the event itself.
    "socket",
    "sockets",
    "rooms",
    "room_order",
    "cork",
    "socket_ref",
    "audience",
    "event",
    // A custom message waiting for the app's answer.
    "handler_call",
    // The app's hooks and the backplane, as traits (`backplane/redis` reaches the hub only as
    // an `Inbox`); the bounded fan-out queue; unupgraded HTTP connections.
    "hooks",
    "backplane",
    "dispatch",
    "http_conns",
    // The shared state, then fan-out, events (+ authorize), commands, membership, the trait
    // impls, the per-room lanes.
    "hub",
    "fanout",
    "emit",
    "commands",
    "membership",
    "links",
    "lanes",
    // Connection tasks: refusals, the JS handler path, Socket.IO sessions, message handling,
    // the reader, the writer.
    "refusals",
    "handler",
    "socketio",
    "messages",
    "connection",
    "writer",
    // Upgrade, HTTP, accept loop, server.
    "upgrade",
    "http",
    "accept",
    "trim",
    "server",
];

/// The modules `lib.rs` declares.
fn declared(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|l| l.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// Every `crate::<module>` a source text names, comments left out.
fn named(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in src.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
            rest = after;
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = code[i + "crate::{".len()..].split('}').next().unwrap_or("");
            out.extend(group.split(',').map(|p| p.trim().split("::").next().unwrap_or("").to_string()));
        }
    }
    out.retain(|n| n.chars().next().is_some_and(|c| c.is_lowercase()));
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Back edges: (file, module it names that sits above it).
fn back_edges(src_dir: &Path) -> Vec<(String, String)> {
    let lib = std::fs::read_to_string(src_dir.join("lib.rs")).expect("lib.rs");
    let rank: HashMap<String, usize> = ORDER.iter().enumerate().map(|(i, m)| (m.to_string(), i)).collect();
    for m in declared(&lib).into_iter().filter(|m| m != "layers") {
        assert!(rank.contains_key(&m), "module {m} is not placed in layers::ORDER");
    }
    let mut all = Vec::new();
    files(src_dir, &mut all);
    let mut bad = Vec::new();
    for path in all {
        let rel = path.strip_prefix(src_dir).expect("under src").to_string_lossy().replace('\\', "/");
        let unit = rel.split('/').next().unwrap_or("").trim_end_matches(".rs").to_string();
        let Some(&mine) = rank.get(&unit) else { continue }; // lib.rs, and this test
        let src = std::fs::read_to_string(&path).expect("readable");
        for name in named(&src) {
            match rank.get(&name) {
                Some(&theirs) if theirs > mine => bad.push((rel.clone(), name)),
                _ => {}
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = back_edges(&src);
    assert!(bad.is_empty(), "files naming a module above theirs in layers::ORDER: {bad:?}");
}

#[test]
fn the_scan_sees_uses_and_paths() {
    let src = "use crate::{hub::Hub, rooms};\nlet x = crate::fanout::push(); // crate::server\n";
    assert_eq!(named(src), ["hub", "rooms", "fanout"]);
    assert_eq!(declared("mod a;\npub mod b;\n#[cfg(test)]\nmod c;\n"), ["a", "b", "c"]);
}
