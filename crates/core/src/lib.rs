//! realtime-core: the WebSocket server of payload-realtime-rs. Knows nothing of Node or Payload.

/// Crate version, reported by the binding.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
