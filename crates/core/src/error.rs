//! Typed errors of the core; the binding turns them into JS `Error`s carrying `code()`.

use thiserror::Error;

/// Everything that can go wrong when calling into the core.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("could not bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("could not start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid room name {0:?}")]
    InvalidRoom(String),
    #[error("the server is shut down")]
    Closed,
    #[error("no socket with id {0}")]
    NoSuchSocket(String),
    #[error("the fan-out queue is full (maxPendingCommands/maxPendingBytes); retry after drained()")]
    Busy,
    #[error("message of {size} bytes is larger than maxBackpressure ({max} bytes): no socket could take it")]
    TooBig { size: usize, max: usize },
}

impl CoreError {
    /// Stable machine-readable code, used as `error.code` in JS.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Bind { .. } => "EADDR",
            CoreError::Runtime(_) => "ERUNTIME",
            CoreError::Config(_) => "ECONFIG",
            CoreError::InvalidRoom(_) => "EROOM",
            CoreError::Closed => "ECLOSED",
            CoreError::NoSuchSocket(_) => "ENOSOCKET",
            CoreError::Busy => "EBUSY",
            CoreError::TooBig { .. } => "EMSGSIZE",
        }
    }
}

/// Result alias of the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
