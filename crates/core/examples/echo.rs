//! The core's native echo mode: every data message is sent back unchanged.
//! Used by the Autobahn|Testsuite run and the benchmarks.
//!
//! `cargo run --release -p realtime-core --example echo -- 127.0.0.1:9001`

use std::sync::Arc;

use realtime_core::{NoHooks, Server, ServerConfig};

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let (host, port) = addr.rsplit_once(':').expect("address as HOST:PORT");
    let config = ServerConfig {
        host: host.to_string(),
        port: port.parse().expect("numeric port"),
        echo: true,
        rate_limit: None,
        // Autobahn sends messages up to 16 MiB and floods of small ones.
        max_message_size: 64 << 20,
        max_backpressure: 256 << 20,
        worker_threads: std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()),
        ..ServerConfig::default()
    };
    let server = Server::start(config, Arc::new(NoHooks)).expect("start echo server");
    println!("echo server listening on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
