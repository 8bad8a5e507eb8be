//! JS options object → `ServerConfig` (defaults live in the core).

use std::time::Duration;

use napi_derive::napi;
use realtime_core::{EventFormat, Monitoring, RateLimit, RedisConfig, ServerConfig, SocketIoEvents};

/// Rate limit per socket.
#[napi(object)]
pub struct RateLimitOptions {
    pub messages: u32,
    pub window_ms: u32,
}

/// Redis backplane options.
#[napi(object)]
pub struct RedisOptions {
    /// `redis://…`, `rediss://…`, or `redis-cluster://host:port` (sharded pub/sub).
    pub url: String,
    pub prefix: Option<String>,
    pub presence_ttl_ms: Option<u32>,
    pub publish_queue: Option<u32>,
}

/// `/healthz` and `/metrics` (see the core's `Monitoring`).
#[napi(object)]
pub struct MonitoringOptions {
    /// Serve `/healthz`. Default true.
    pub health: Option<bool>,
    /// Serve `/metrics`. Default true.
    pub metrics: Option<bool>,
    /// Serve both on this address instead of the WebSocket port. Default: the WebSocket port.
    pub host: Option<String>,
    /// Port of that address (0 = any free one); setting `host` or `port` moves both endpoints.
    pub port: Option<u32>,
    /// Require `Authorization: Bearer <token>`. Default: none.
    pub token: Option<String>,
}

/// Options of the native server; every field optional, defaults as documented in the core.
#[napi(object)]
#[derive(Default)]
pub struct NativeOptions {
    pub port: Option<u32>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub allow_origins: Option<Vec<String>>,
    pub trusted_origins: Option<Vec<String>>,
    /// `false` serves neither `/healthz` nor `/metrics`.
    pub monitoring: Option<napi::Either<MonitoringOptions, bool>>,
    pub max_connections: Option<u32>,
    pub max_message_size: Option<u32>,
    pub heartbeat_ms: Option<u32>,
    pub pong_timeout_ms: Option<u32>,
    /// 0 turns the idle timeout off.
    pub idle_timeout_ms: Option<u32>,
    pub max_backpressure: Option<u32>,
    pub slow_consumer_ms: Option<u32>,
    pub header_timeout_ms: Option<u32>,
    pub max_pending_commands: Option<u32>,
    pub max_pending_bytes: Option<u32>,
    pub max_input_bytes: Option<f64>,
    pub max_rooms_per_socket: Option<u32>,
    /// `false` turns rate limiting off.
    pub rate_limit: Option<napi::Either<RateLimitOptions, bool>>,
    pub require_auth: Option<bool>,
    pub jwt_key: Option<String>,
    pub auth_version: Option<u32>,
    pub auth_cookie: Option<String>,
    pub room_patterns: Option<Vec<String>>,
    pub protocols: Option<Vec<String>>,
    pub handler_timeout_ms: Option<u32>,
    pub shutdown_timeout_ms: Option<u32>,
    pub worker_threads: Option<u32>,
    pub instance_id: Option<String>,
    pub echo: Option<bool>,
    pub redis: Option<RedisOptions>,
    pub reuse_port: Option<bool>,
    pub presence_events: Option<Vec<String>>,
    /// More WebSocket paths besides `path`.
    pub extra_paths: Option<Vec<String>>,
    /// Socket.IO endpoint path, or `false` to turn Socket.IO off.
    pub socket_io_path: Option<napi::Either<String, bool>>,
    /// `native` | `payload-real-time`.
    pub socket_io_events: Option<String>,
    /// `native` | `uwebsocket-plugin`.
    pub event_format: Option<String>,
    pub action_routing: Option<bool>,
    pub presence_interval_ms: Option<u32>,
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

impl TryFrom<NativeOptions> for ServerConfig {
    type Error = String;

    /// Values that do not fit are refused, never truncated (a port of 70000 is not 4464).
    fn try_from(o: NativeOptions) -> Result<Self, String> {
        let d = ServerConfig::default();
        let port = match o.port {
            None => d.port,
            Some(p) => u16::try_from(p).map_err(|_| format!("port must be 0-65535 (got {p})"))?,
        };
        Ok(ServerConfig {
            host: o.host.unwrap_or(d.host),
            port,
            worker_threads: o.worker_threads.map(|n| n as usize).or(d.worker_threads),
            path: o.path.or(d.path),
            allow_origins: o.allow_origins.unwrap_or(d.allow_origins),
            trusted_origins: o.trusted_origins.unwrap_or(d.trusted_origins),
            monitoring: match o.monitoring {
                Some(napi::Either::A(m)) => Monitoring {
                    health: m.health.unwrap_or(d.monitoring.health),
                    metrics: m.metrics.unwrap_or(d.monitoring.metrics),
                    listen: (m.host.is_some() || m.port.is_some())
                        .then(|| (m.host.unwrap_or_else(|| "127.0.0.1".into()), m.port.unwrap_or(0) as u16)),
                    token: m.token,
                },
                Some(napi::Either::B(false)) => Monitoring { health: false, metrics: false, ..d.monitoring },
                _ => d.monitoring,
            },
            max_connections: o.max_connections.map_or(d.max_connections, |n| n as usize),
            max_message_size: o.max_message_size.map_or(d.max_message_size, |n| n as usize),
            heartbeat: o.heartbeat_ms.map_or(d.heartbeat, ms),
            pong_timeout: o.pong_timeout_ms.map_or(d.pong_timeout, ms),
            idle_timeout: match o.idle_timeout_ms {
                Some(0) => None,
                Some(v) => Some(ms(v)),
                None => d.idle_timeout,
            },
            max_backpressure: o.max_backpressure.map_or(d.max_backpressure, |n| n as usize),
            slow_consumer_timeout: o.slow_consumer_ms.map_or(d.slow_consumer_timeout, ms),
            max_pending_commands: o.max_pending_commands.map_or(d.max_pending_commands, |n| n as usize),
            max_pending_bytes: o.max_pending_bytes.map_or(d.max_pending_bytes, |n| n as usize),
            max_input_bytes: match o.max_input_bytes {
                None => d.max_input_bytes,
                Some(n) if n.is_finite() && n >= 1.0 && n.fract() == 0.0 => n as usize,
                Some(n) => return Err(format!("maxInputBytes must be a positive integer (got {n})")),
            },
            max_rooms_per_socket: o.max_rooms_per_socket.map_or(d.max_rooms_per_socket, |n| n as usize),
            rate_limit: match o.rate_limit {
                Some(napi::Either::A(r)) => Some(RateLimit { messages: r.messages, window: ms(r.window_ms) }),
                Some(napi::Either::B(false)) => None,
                _ => d.rate_limit,
            },
            require_auth: o.require_auth.unwrap_or(d.require_auth),
            jwt_key: o.jwt_key.map(String::into_bytes).or(d.jwt_key),
            auth_version: o.auth_version.map(u64::from).or(d.auth_version),
            auth_cookie: o.auth_cookie.unwrap_or(d.auth_cookie),
            room_patterns: o.room_patterns.unwrap_or(d.room_patterns),
            protocols: o.protocols.unwrap_or(d.protocols),
            hook_timeout: o.handler_timeout_ms.map_or(d.hook_timeout, ms),
            shutdown_timeout: o.shutdown_timeout_ms.map_or(d.shutdown_timeout, ms),
            close_timeout: d.close_timeout,
            header_timeout: o.header_timeout_ms.map_or(d.header_timeout, ms),
            instance_id: o.instance_id.or(d.instance_id),
            echo: o.echo.unwrap_or(d.echo),
            redis: o.redis.map(|r| {
                let base = RedisConfig::new(r.url);
                RedisConfig {
                    prefix: r.prefix.unwrap_or(base.prefix.clone()),
                    presence_ttl: r.presence_ttl_ms.map_or(base.presence_ttl, ms),
                    publish_queue: r.publish_queue.map_or(base.publish_queue, |n| n as usize),
                    ..base
                }
            }),
            reuse_port: o.reuse_port.unwrap_or(d.reuse_port),
            presence_events: o.presence_events.unwrap_or(d.presence_events),
            extra_paths: o.extra_paths.unwrap_or(d.extra_paths),
            socketio_path: match o.socket_io_path {
                Some(napi::Either::A(p)) => Some(p),
                Some(napi::Either::B(false)) => None,
                _ => d.socketio_path,
            },
            socketio_events: match o.socket_io_events.as_deref() {
                Some("payload-real-time") => SocketIoEvents::PayloadRealTime,
                _ => d.socketio_events,
            },
            event_format: match o.event_format.as_deref() {
                Some("uwebsocket-plugin") => EventFormat::UwebsocketPlugin,
                _ => d.event_format,
            },
            action_routing: o.action_routing.unwrap_or(d.action_routing),
            presence_interval: o.presence_interval_ms.map_or(d.presence_interval, ms),
        })
    }
}
