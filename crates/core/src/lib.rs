//! realtime-core: the WebSocket server of payload-realtime-rs. Knows nothing of Node or Payload.
//!
//! Start one with [`Server::start`]; fan out through the returned [`ServerHandle`]; plug app
//! logic in through [`AppHooks`].

// Modules grouped by layer, bottom first; within a group rustfmt sorts them. The exact order,
// and the test that keeps imports running one way, are in `layers.rs`.
//
// Base: wire format, configuration, credentials, counters, client input, a socket's queue.
mod auth;
mod config;
mod error;
pub mod frame;
mod outbound;
mod presence;
pub mod protocol;
mod reader;
mod socketio_framing;
mod stats;
mod supervise;
mod wake;
// Socket state and the room registry.
mod audience;
mod cork;
mod event;
mod handler_call;
mod room_order;
mod rooms;
mod socket;
mod socket_ref;
mod sockets;
// The app's hooks and the backplane, behind traits; the fan-out queue.
mod backplane;
mod dispatch;
mod hooks;
mod http_conns;
// The shared state, then what the server does with it.
mod commands;
mod emit;
mod fanout;
mod hub;
mod lanes;
mod links;
mod membership;
// Connection tasks: reader, message handling, the app's handlers, writer.
mod connection;
mod handler;
mod messages;
mod refusals;
mod socketio;
mod writer;
// HTTP, upgrade, accept loop, server.
mod accept;
mod http;
mod server;
mod trim;
mod upgrade;

pub use audience::UserList;
pub use auth::{AuthError, JwtVerifier, UserClaims};
pub use config::{EventFormat, Monitoring, RateLimit, RedisConfig, ServerConfig, SocketIoEvents};
pub use error::{CoreError, Result};
pub use event::Event;
pub use handler_call::{AnswerPass, HandlerCall, HandlerOutcome};
pub use hooks::{AppHooks, BoxFuture, EventInfo, NoHooks, UpgradeInfo, Verdicts};
pub use protocol::Operation;
pub use rooms::{Member, ALL_SOCKETS};
pub use server::{Message, Server, ServerHandle};
pub use socket_ref::SocketRef;
pub use stats::{BackplaneStats, RefusalCounts, StatsSnapshot};

/// Crate version, reported by the binding.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod layers;
