//! Server configuration. Every default is stated on the field and in the README.

use std::time::Duration;

use regex::Regex;

use crate::error::{CoreError, Result};

/// Most tokio worker threads `workerThreads` may ask for (each is an OS thread).
pub const MAX_WORKER_THREADS: usize = 1024;

/// Per-socket message rate limit (fixed window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages allowed per window. Past it a message is dropped with error `rate_limited`;
    /// past twice it the socket is closed 4008 once the frames already queued (the warning
    /// included) are written.
    pub messages: u32,
    /// Window length.
    pub window: Duration,
}

/// Where and how to reach Redis (or Valkey) for running several instances.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, `rediss://…`, or `redis-cluster://host:port` for a cluster
    /// (room channels then use sharded pub/sub).
    pub url: String,
    /// Prefix of every channel and key, so several apps can share one Redis. Default: `prt`.
    pub prefix: String,
    /// A dead instance leaves presence within this long. Default: 15 s.
    pub presence_ttl: Duration,
    /// Messages waiting to be published; past it they are dropped and counted. Default: 65,536.
    pub publish_queue: usize,
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "prt".into(),
            presence_ttl: Duration::from_secs(15),
            publish_queue: 65_536,
        }
    }
}

/// `/healthz` and `/metrics`: whether, where and to whom they are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitoring {
    /// Serve `/healthz` (status, connection count, uptime, instance id). Default: true.
    pub health: bool,
    /// Serve `/metrics` (Prometheus text: every counter). Default: true.
    pub metrics: bool,
    /// Serve both on this separate address (`host`, `port`; port 0 picks a free one) and not on
    /// the WebSocket port, e.g. an internal interface. Default: none (the WebSocket port).
    pub listen: Option<(String, u16)>,
    /// When set, both answer 401 unless the request carries `Authorization: Bearer <token>`.
    /// Default: none (readable by anyone who reaches the port).
    pub token: Option<String>,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self { health: true, metrics: true, listen: None, token: None }
    }
}

/// Everything `Server::start` needs. Build with `ServerConfig::default()` and set fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind. Default: `0.0.0.0`.
    pub host: String,
    /// Port to bind; 0 picks a free one. Default: 0.
    pub port: u16,
    /// Tokio worker threads. Default: available cores.
    pub worker_threads: Option<usize>,
    /// WebSocket path: exact, or a prefix ending in `*`. Default: any path.
    pub path: Option<String>,
    /// Allowed `Origin`s: exact (`https://app.example.com`), host wildcard (`https://*.example.com`)
    /// or a regular expression between slashes (`/^https:\/\/.*\.example\.com$/`).
    /// Default: empty = allow every origin (unsafe when browsers send auth cookies).
    pub allow_origins: Vec<String>,
    /// Origins (same forms as `allow_origins`) whose upgrades may authenticate with the auth
    /// cookie, besides those of `allow_origins` and the request's own host. A cookie from any
    /// other Origin is ignored (the upgrade carries no credentials): browsers attach cookies to
    /// cross-site WebSocket upgrades and WebSockets have no CORS. Header and query tokens are not
    /// affected, nor are requests without an Origin (not a browser). Default: none.
    pub trusted_origins: Vec<String>,
    /// `/healthz` and `/metrics`. Default: both served, unauthenticated, on the WebSocket port.
    pub monitoring: Monitoring,
    /// Open sockets allowed at once; upgrades past it get 503. Default: 100,000.
    pub max_connections: usize,
    /// Largest message (reassembled from all its frames), in bytes; larger closes 1009. Default: 1 MiB.
    pub max_message_size: usize,
    /// Interval of server pings. Default: 30 s.
    pub heartbeat: Duration,
    /// A peer that sends nothing within this long after a ping is dropped. Default: 10 s.
    pub pong_timeout: Duration,
    /// Close (1000, "idle") a socket that sent no application message for this long. Default: off.
    pub idle_timeout: Option<Duration>,
    /// Bytes a socket may have queued for writing; past it the socket is closed 1013. A message
    /// larger than this is refused to the app (`EMSGSIZE`). Default: 16 MiB.
    pub max_backpressure: usize,
    /// A socket with data queued that takes nothing for this long is closed 1013 and its queue
    /// freed; a peer that keeps reading is never closed by a burst below `max_backpressure`.
    /// Default: 10 s.
    pub slow_consumer_timeout: Duration,
    /// Rooms one socket may be in (automatic `user:` room included). Default: 256.
    pub max_rooms_per_socket: usize,
    /// Per-socket message rate limit. Default: 100 messages per 1 s.
    pub rate_limit: Option<RateLimit>,
    /// Refuse upgrades without a valid credential (401). Default: false.
    pub require_auth: bool,
    /// HS256 key for JWT verification (Payload: the UTF-8 of `sha256(secret)` hex, first 32 chars).
    /// Default: none (JWTs are not accepted).
    pub jwt_key: Option<Vec<u8>>,
    /// When set, a JWT must carry this `authVersion` header value. Default: none.
    pub auth_version: Option<u64>,
    /// Cookie holding the token. Default: `payload-token`.
    pub auth_cookie: String,
    /// `join-room` names allowed without asking the app (`*` matches any run of characters).
    /// Default: none (every join-room goes to the app's policy, which refuses by default).
    pub room_patterns: Vec<String>,
    /// Subprotocols the server accepts; when a client offers several, the first accepted is echoed.
    /// Default: empty = echo the client's first offered value.
    pub protocols: Vec<String>,
    /// Longest an app hook (handler, authorize, room policy, verify) may take. Default: 10 s.
    pub hook_timeout: Duration,
    /// How long graceful shutdown waits for queues to flush. Default: 5 s.
    pub shutdown_timeout: Duration,
    /// How long a closing socket waits for the peer's close reply. Default: 2 s.
    pub close_timeout: Duration,
    /// Longest a client may take to send an HTTP request's headers (the upgrade request, or a
    /// `/healthz` probe) before the connection is dropped: a connection sending nothing holds a
    /// descriptor and a task. Default: 10 s.
    pub header_timeout: Duration,
    /// Prefix of socket ids, unique per instance. Default: random 8 hex digits.
    pub instance_id: Option<String>,
    /// Echo every data message back instead of speaking the protocol (Autobahn, benchmarks).
    /// Default: false.
    pub echo: bool,
    /// Run several instances behind Redis. Default: none (one process).
    pub redis: Option<RedisConfig>,
    /// Set SO_REUSEPORT so several processes on one host can serve one port. Default: false.
    pub reuse_port: bool,
    /// Rooms (globs, `*` wildcard) whose members are told of joins and leaves with
    /// `{"type":"presence","room":…,"joined"|"left":{"socketId","userId"}}`. Default: none.
    pub presence_events: Vec<String>,
    /// Presence changes in a room within this long after one was sent are merged into one
    /// frame (`joined`/`left` arrays) at its end. Default: 1 s.
    pub presence_interval: Duration,
    /// Fan-out commands (`emitEvent`, `broadcastToRoom`, `sendToSocket`, remote deliveries)
    /// waiting at once; past it calls are refused with EBUSY. Default: 65,536.
    pub max_pending_commands: usize,
    /// Payload bytes of waiting fan-out commands; past it calls are refused with EBUSY.
    /// Default: 256 MiB.
    pub max_pending_bytes: usize,
    /// Memory budget of all client input held at once: incomplete frames and fragmented
    /// messages (over it, the socket holding the most is closed 1013) and messages waiting for a
    /// JS handler (past it a message is answered `busy`). Default: 1/8 of the machine's RAM
    /// (1 GiB where that is unknown).
    pub max_input_bytes: usize,
    /// More WebSocket paths served besides `path` (each exact or a prefix ending in `*`).
    /// Default: none.
    pub extra_paths: Vec<String>,
    /// Socket.IO (Engine.IO v4 / Socket.IO v5, WebSocket transport only) on this path prefix.
    /// Default: `/socket.io/`; `None` turns it off.
    pub socketio_path: Option<String>,
    /// Event names and shapes Socket.IO clients receive. Default: `Native`.
    pub socketio_events: SocketIoEvents,
    /// Shape of collection events on the native protocol. Default: `Native`.
    pub event_format: EventFormat,
    /// Route `{"type":t,"action":a}` to the handler `t:a` when one is registered (PXL style).
    /// Default: false.
    pub action_routing: bool,
}

/// How collection events and app messages are named for Socket.IO clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketIoEvents {
    /// Every frame `{"type":t,…}` becomes the event `t` with the whole object as its argument.
    #[default]
    Native,
    /// As `Native`, except collection events become `realtime:<slug>` with the doc also under
    /// `data` (what `payload-real-time` clients listen to).
    PayloadRealTime,
}

/// How collection events are shaped on the native protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    /// `{"type":"update"|"delete","operation","collection","id","doc"}`.
    #[default]
    Native,
    /// `{"type":"payload:event","data":{"operation","collection","id","doc","timestamp"}}`, as the
    /// uWebSockets.js Payload plugin sent them.
    UwebsocketPlugin,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 0,
            worker_threads: None,
            path: None,
            allow_origins: Vec::new(),
            trusted_origins: Vec::new(),
            monitoring: Monitoring::default(),
            max_connections: 100_000,
            max_message_size: 1 << 20,
            heartbeat: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: None,
            max_backpressure: 16 << 20,
            slow_consumer_timeout: Duration::from_secs(10),
            max_rooms_per_socket: 256,
            rate_limit: Some(RateLimit { messages: 100, window: Duration::from_secs(1) }),
            require_auth: false,
            jwt_key: None,
            auth_version: None,
            auth_cookie: "payload-token".into(),
            room_patterns: Vec::new(),
            protocols: Vec::new(),
            hook_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(10),
            instance_id: None,
            echo: false,
            redis: None,
            reuse_port: false,
            presence_events: Vec::new(),
            extra_paths: Vec::new(),
            socketio_path: Some("/socket.io/".into()),
            socketio_events: SocketIoEvents::Native,
            event_format: EventFormat::Native,
            action_routing: false,
            presence_interval: Duration::from_secs(1),
            max_pending_commands: 65_536,
            max_pending_bytes: 256 << 20,
            max_input_bytes: default_input_budget(),
        }
    }
}

/// 1/8 of physical memory (`MemTotal` of /proc/meminfo), or 1 GiB where it cannot be read.
fn default_input_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<usize>().ok()
            })
            .map_or(1 << 30, |kib| kib.saturating_mul(1024) / 8)
    })
}

/// One compiled entry of the Origin allow-list.
#[derive(Debug, Clone)]
pub(crate) enum OriginRule {
    Exact(String),
    /// `scheme://*.domain[:port]`: any subdomain of `domain` (not `domain` itself).
    Wildcard {
        scheme: String,
        suffix: String,
    },
    Pattern(Regex),
}

impl OriginRule {
    pub(crate) fn parse(rule: &str) -> Result<Self> {
        if rule.len() >= 2 && rule.starts_with('/') && rule.ends_with('/') {
            let re = Regex::new(&rule[1..rule.len() - 1])
                .map_err(|e| CoreError::Config(format!("allowOrigins regex {rule}: {e}")))?;
            return Ok(OriginRule::Pattern(re));
        }
        if let Some((scheme, rest)) = rule.split_once("://*.") {
            return Ok(OriginRule::Wildcard {
                scheme: scheme.to_ascii_lowercase(),
                suffix: format!(".{}", rest.to_ascii_lowercase()),
            });
        }
        Ok(OriginRule::Exact(rule.trim_end_matches('/').to_ascii_lowercase()))
    }

    pub(crate) fn allows(&self, origin: &str) -> bool {
        match self {
            OriginRule::Exact(o) => origin.eq_ignore_ascii_case(o),
            OriginRule::Wildcard { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                match origin.split_once("://") {
                    Some((s, host)) => {
                        s == scheme && host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    }
                    None => false,
                }
            }
            OriginRule::Pattern(re) => re.is_match(origin),
        }
    }
}

/// Matches `text` against a glob where `*` stands for any run of characters.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

impl ServerConfig {
    /// The runtime's worker threads: `worker_threads`, else one per CPU this process may use.
    pub(crate) fn workers(&self) -> usize {
        self.worker_threads
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Checks values that would make the server misbehave, before anything is bound.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(CoreError::Config(m.to_string()));
        if self.max_message_size == 0 {
            return bad("maxMessageSize must be > 0");
        }
        if self.max_input_bytes == 0 {
            return bad("maxInputBytes must be > 0");
        }
        if self.max_pending_commands == 0 || self.max_pending_bytes == 0 {
            return bad("maxPendingCommands and maxPendingBytes must be > 0");
        }
        if self.max_backpressure == 0 {
            return bad("maxBackpressure must be > 0");
        }
        if self.slow_consumer_timeout.is_zero() {
            return bad("slowConsumerMs must be > 0");
        }
        if let Some(n) = self.worker_threads {
            if n > MAX_WORKER_THREADS {
                return Err(CoreError::Config(format!(
                    "workerThreads must be at most {MAX_WORKER_THREADS} (got {n})"
                )));
            }
        }
        if self.heartbeat.is_zero() || self.pong_timeout.is_zero() {
            return bad("heartbeatMs and pongTimeoutMs must be > 0");
        }
        if let Some(rl) = self.rate_limit {
            if rl.messages == 0 || rl.window.is_zero() {
                return bad("rateLimit needs messages > 0 and windowMs > 0");
            }
        }
        if let Some(r) = &self.redis {
            if r.prefix.is_empty() || r.presence_ttl < Duration::from_secs(1) {
                return bad("redis.prefix must be non-empty and presenceTtl at least 1 s");
            }
        }
        if self.monitoring.token.as_deref() == Some("") {
            return bad("monitoring.token must not be empty");
        }
        for o in &self.trusted_origins {
            OriginRule::parse(o)?;
        }
        for path in self.path.iter().chain(&self.extra_paths).chain(&self.socketio_path) {
            if !path.starts_with('/') {
                return bad("path must start with '/'");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rules() {
        let exact = OriginRule::parse("https://app.example.com").unwrap();
        assert!(exact.allows("https://app.example.com"));
        assert!(!exact.allows("https://evil.example.com"));
        let wild = OriginRule::parse("https://*.example.com").unwrap();
        assert!(wild.allows("https://a.example.com"));
        assert!(wild.allows("https://a.b.example.com"));
        assert!(!wild.allows("https://example.com"));
        assert!(!wild.allows("http://a.example.com"));
        assert!(!wild.allows("https://a.example.com.evil.io"));
        let re = OriginRule::parse(r"/^http:\/\/localhost:\d+$/").unwrap();
        assert!(re.allows("http://localhost:3000"));
        assert!(!re.allows("http://localhost.evil:3000"));
        assert!(OriginRule::parse("/(/").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("chat:*", "chat:abc"));
        assert!(glob_match("chat:*", "chat:"));
        assert!(!glob_match("chat:*", "chats:abc"));
        assert!(glob_match("*:public", "news:public"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}
