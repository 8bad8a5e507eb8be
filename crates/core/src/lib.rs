//! realtime-core: the WebSocket server of payload-realtime-rs. Knows nothing of Node or Payload.
//!
//! Start one with [`Server::start`]; fan out through the returned [`ServerHandle`]; plug app
//! logic in through [`AppHooks`].

mod accept;
mod audience;
mod auth;
mod backplane;
mod config;
mod connection;
mod dispatch;
mod error;
pub mod frame;
mod hooks;
mod http;
mod hub;
mod outbound;
mod presence;
pub mod protocol;
mod reader;
mod rooms;
mod server;
mod stats;
mod supervise;
mod upgrade;

pub use audience::UserList;
pub use auth::{AuthError, JwtVerifier, UserClaims};
pub use backplane::BackplaneStats;
pub use config::{Monitoring, RateLimit, RedisConfig, ServerConfig};
pub use connection::SocketRef;
pub use error::{CoreError, Result};
pub use hooks::{AppHooks, BoxFuture, EventInfo, HandlerOutcome, NoHooks, UpgradeInfo, Verdicts};
pub use hub::{Event, Member};
pub use protocol::Operation;
pub use server::{Message, Server, ServerHandle};
pub use stats::{RefusalCounts, StatsSnapshot};

/// Crate version, reported by the binding.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
