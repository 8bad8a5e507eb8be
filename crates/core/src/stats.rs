//! Counters of the server, as a snapshot struct and as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Why an upgrade was refused (each counted separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a GET.
    Method,
    /// Path not served (404).
    Path,
    /// Origin not allowed (403).
    Origin,
    /// `maxConnections` reached or shutting down (503).
    Capacity,
    /// Missing or bad credentials (401).
    Auth,
    /// The app's verify hook said no (403).
    Verify,
    /// Malformed handshake (400).
    Handshake,
}

const REFUSALS: [(Refusal, &str); 7] = [
    (Refusal::Method, "method"),
    (Refusal::Path, "path"),
    (Refusal::Origin, "origin"),
    (Refusal::Capacity, "capacity"),
    (Refusal::Auth, "auth"),
    (Refusal::Verify, "verify"),
    (Refusal::Handshake, "handshake"),
];

/// Live counters, updated with relaxed atomics on the hot path.
#[derive(Default)]
pub(crate) struct Stats {
    pub connections: AtomicU64,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub refusals: [AtomicU64; 7],
    pub slow_consumer_closes: AtomicU64,
    pub rate_limited: AtomicU64,
    pub rate_limit_closes: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub oversized_messages: AtomicU64,
    pub bad_messages: AtomicU64,
    pub handler_errors: AtomicU64,
    pub handler_timeouts: AtomicU64,
    pub auth_expired_closes: AtomicU64,
    pub pong_timeouts: AtomicU64,
    pub idle_closes: AtomicU64,
    pub events_emitted: AtomicU64,
    pub deliveries: AtomicU64,
    pub unauthorized_skips: AtomicU64,
    /// Panics caught in one unit of work (a command, a message) of a long-lived task.
    pub panics: AtomicU64,
    /// Required long-lived tasks not running now (`/healthz` answers 503 while > 0).
    pub tasks_down: AtomicU64,
    /// App sends refused with EBUSY: the fan-out queue was full.
    pub busy_refusals: AtomicU64,
    /// Sockets closed because client input went over the global memory budget.
    pub input_budget_closes: AtomicU64,
    /// Client messages refused with `busy` (too many waiting for the JS thread).
    pub busy_messages: AtomicU64,
    /// Idle HTTP connections dropped to accept new ones when out of file descriptors.
    pub idle_sheds: AtomicU64,
    /// Auth cookies ignored because the upgrade's Origin was not trusted.
    pub untrusted_cookies: AtomicU64,
}

impl Stats {
    pub(crate) fn refused(&self, why: Refusal) {
        let i = REFUSALS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.refusals[i].fetch_add(1, Relaxed);
    }
}

/// Upgrade refusals by reason.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefusalCounts {
    pub method: u64,
    pub path: u64,
    pub origin: u64,
    pub capacity: u64,
    pub auth: u64,
    pub verify: u64,
    pub handshake: u64,
}

/// A point-in-time copy of every counter.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    /// Sockets open now.
    pub connections: u64,
    /// Sockets opened since start.
    pub connects: u64,
    /// Sockets closed since start.
    pub disconnects: u64,
    /// Rooms with at least one member.
    pub rooms: u64,
    /// Memberships summed over rooms.
    pub room_members: u64,
    /// Members of the largest room.
    pub largest_room: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub refusals: RefusalCounts,
    pub slow_consumer_closes: u64,
    pub rate_limited: u64,
    pub rate_limit_closes: u64,
    pub protocol_errors: u64,
    pub oversized_messages: u64,
    pub bad_messages: u64,
    pub handler_errors: u64,
    pub handler_timeouts: u64,
    pub auth_expired_closes: u64,
    pub pong_timeouts: u64,
    pub idle_closes: u64,
    pub events_emitted: u64,
    pub deliveries: u64,
    pub unauthorized_skips: u64,
    /// Panics caught and survived (each one message or command lost, logged).
    pub panics: u64,
    /// Required background tasks down now (`/healthz` is 503 while > 0).
    pub tasks_down: u64,
    /// `emitEvent`/`broadcastToRoom`/`sendToSocket` calls refused with EBUSY (queue full).
    pub busy_refusals: u64,
    /// Fan-out commands queued and not yet run.
    pub pending_commands: u64,
    /// Sockets closed 1013 because client input went over `maxInputBytes`.
    pub input_budget_closes: u64,
    /// Client messages answered `busy` (too many waiting for the JS thread).
    pub busy_messages: u64,
    /// Bytes of client input held now (partial messages, messages waiting for JS).
    pub input_bytes: u64,
    /// Idle HTTP connections dropped to accept new ones when out of file descriptors.
    pub idle_sheds: u64,
    /// Auth cookies ignored because the upgrade's Origin was not trusted.
    pub untrusted_cookies: u64,
    pub uptime_ms: u64,
    /// Cross-instance figures (`kind: "local"` without Redis).
    pub backplane: BackplaneStats,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let r = |i: usize| g(&self.refusals[i]);
        StatsSnapshot {
            connections: g(&self.connections),
            connects: g(&self.connects),
            disconnects: g(&self.disconnects),
            messages_in: g(&self.messages_in),
            messages_out: g(&self.messages_out),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            refusals: RefusalCounts {
                method: r(0),
                path: r(1),
                origin: r(2),
                capacity: r(3),
                auth: r(4),
                verify: r(5),
                handshake: r(6),
            },
            slow_consumer_closes: g(&self.slow_consumer_closes),
            rate_limited: g(&self.rate_limited),
            rate_limit_closes: g(&self.rate_limit_closes),
            protocol_errors: g(&self.protocol_errors),
            oversized_messages: g(&self.oversized_messages),
            bad_messages: g(&self.bad_messages),
            handler_errors: g(&self.handler_errors),
            handler_timeouts: g(&self.handler_timeouts),
            auth_expired_closes: g(&self.auth_expired_closes),
            pong_timeouts: g(&self.pong_timeouts),
            idle_closes: g(&self.idle_closes),
            events_emitted: g(&self.events_emitted),
            deliveries: g(&self.deliveries),
            unauthorized_skips: g(&self.unauthorized_skips),
            panics: g(&self.panics),
            tasks_down: g(&self.tasks_down),
            busy_refusals: g(&self.busy_refusals),
            input_budget_closes: g(&self.input_budget_closes),
            busy_messages: g(&self.busy_messages),
            idle_sheds: g(&self.idle_sheds),
            untrusted_cookies: g(&self.untrusted_cookies),
            ..Default::default()
        }
    }
}

impl StatsSnapshot {
    /// Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP realtime_{name} {help}\n# TYPE realtime_{name} {kind}\nrealtime_{name} {value}"
            );
        };
        metric("connections", "gauge", "Open WebSocket connections.", self.connections);
        metric("rooms", "gauge", "Rooms with at least one member.", self.rooms);
        metric("room_members", "gauge", "Room memberships summed over rooms.", self.room_members);
        metric("largest_room_members", "gauge", "Members of the largest room.", self.largest_room);
        metric("connects_total", "counter", "Connections accepted.", self.connects);
        metric("disconnects_total", "counter", "Connections closed.", self.disconnects);
        metric("messages_in_total", "counter", "Data messages received.", self.messages_in);
        metric("messages_out_total", "counter", "Frames queued to sockets.", self.messages_out);
        metric("bytes_in_total", "counter", "Payload bytes received.", self.bytes_in);
        metric("bytes_out_total", "counter", "Bytes queued to sockets.", self.bytes_out);
        metric(
            "slow_consumer_closes_total",
            "counter",
            "Sockets closed 1013 for exceeding maxBackpressure.",
            self.slow_consumer_closes,
        );
        metric("rate_limited_total", "counter", "Messages dropped by the rate limit.", self.rate_limited);
        metric("panics_total", "counter", "Panics caught in one message or command.", self.panics);
        metric("tasks_down", "gauge", "Required background tasks not running.", self.tasks_down);
        metric("busy_refusals_total", "counter", "App sends refused (queue full).", self.busy_refusals);
        metric("pending_commands", "gauge", "Fan-out commands not yet run.", self.pending_commands);
        metric(
            "input_budget_closes_total",
            "counter",
            "Sockets closed 1013 over the client input memory budget.",
            self.input_budget_closes,
        );
        metric("busy_messages_total", "counter", "Client messages answered busy.", self.busy_messages);
        metric("input_bytes", "gauge", "Client input bytes held.", self.input_bytes);
        metric(
            "idle_sheds_total",
            "counter",
            "Idle HTTP connections dropped when out of file descriptors.",
            self.idle_sheds,
        );
        metric(
            "rate_limit_closes_total",
            "counter",
            "Sockets closed 4008 by the rate limit.",
            self.rate_limit_closes,
        );
        metric(
            "protocol_errors_total",
            "counter",
            "Sockets closed for WebSocket protocol violations.",
            self.protocol_errors,
        );
        metric(
            "oversized_messages_total",
            "counter",
            "Sockets closed 1009 for exceeding maxMessageSize.",
            self.oversized_messages,
        );
        metric(
            "bad_messages_total",
            "counter",
            "Messages answered with an error frame (bad JSON, unknown type, ...).",
            self.bad_messages,
        );
        metric(
            "handler_errors_total",
            "counter",
            "App handlers that threw or rejected.",
            self.handler_errors,
        );
        metric(
            "handler_timeouts_total",
            "counter",
            "App handlers slower than the hook timeout.",
            self.handler_timeouts,
        );
        metric(
            "auth_expired_closes_total",
            "counter",
            "Sockets closed 4001 for expired or revoked credentials.",
            self.auth_expired_closes,
        );
        metric(
            "pong_timeouts_total",
            "counter",
            "Silent peers dropped after the pong timeout.",
            self.pong_timeouts,
        );
        metric("idle_closes_total", "counter", "Sockets closed by the idle timeout.", self.idle_closes);
        metric("events_emitted_total", "counter", "Collection events emitted.", self.events_emitted);
        metric("deliveries_total", "counter", "Event and broadcast deliveries to sockets.", self.deliveries);
        metric(
            "unauthorized_skips_total",
            "counter",
            "Event deliveries withheld by authorize.",
            self.unauthorized_skips,
        );
        metric(
            "untrusted_cookies_total",
            "counter",
            "Auth cookies ignored because the upgrade's Origin was not trusted.",
            self.untrusted_cookies,
        );
        metric("uptime_seconds", "gauge", "Seconds since the server started.", self.uptime_ms / 1000);
        let b = &self.backplane;
        metric(
            "backplane_connected",
            "gauge",
            "1 when the backplane (Redis) is reachable.",
            u64::from(b.connected),
        );
        metric(
            "backplane_published_total",
            "counter",
            "Messages published that Redis acknowledged.",
            b.published,
        );
        metric("backplane_received_total", "counter", "Messages received from other instances.", b.received);
        metric(
            "backplane_dropped_total",
            "counter",
            "Messages not published (Redis down or not answering, queue full) or not deliverable here.",
            b.dropped,
        );
        metric("backplane_reconnects_total", "counter", "Reconnections to Redis.", b.reconnects);
        metric("backplane_invalid_total", "counter", "Malformed envelopes dropped.", b.invalid);
        metric(
            "backplane_lost_total",
            "counter",
            "Messages of other instances that never arrived (sequence gaps).",
            b.lost,
        );
        metric(
            "backplane_unconfirmed_total",
            "counter",
            "Messages other instances counted dropped that Redis had published (seen here).",
            b.unconfirmed,
        );
        metric(
            "backplane_subscribed_rooms",
            "gauge",
            "Room channels this instance subscribes to.",
            b.subscribed_rooms,
        );
        metric(
            "backplane_topology_changes_total",
            "counter",
            "Redis Cluster topology changes seen (sharded subscriptions re-issued).",
            b.topology_changes,
        );
        let _ = writeln!(out, "# HELP realtime_upgrade_refusals_total Upgrades refused, by reason.\n# TYPE realtime_upgrade_refusals_total counter");
        let r = &self.refusals;
        for (reason, v) in [
            ("method", r.method),
            ("path", r.path),
            ("origin", r.origin),
            ("capacity", r.capacity),
            ("auth", r.auth),
            ("verify", r.verify),
            ("handshake", r.handshake),
        ] {
            let _ = writeln!(out, "realtime_upgrade_refusals_total{{reason=\"{reason}\"}} {v}");
        }
        out
    }
}

/// Backplane counters.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackplaneStats {
    /// `local` or `redis`.
    pub kind: &'static str,
    pub connected: bool,
    /// Messages this instance published that Redis acknowledged.
    pub published: u64,
    /// Messages from other instances that arrived here (whether or not a socket wanted them).
    pub received: u64,
    /// Messages this instance did not get published (Redis down or not answering, publish queue
    /// full), and messages from other instances that arrived but could not be delivered here
    /// (fan-out queue full). For one publisher and one receiver on a channel, the publisher's
    /// `published` plus the receiver's `unconfirmed` equals the receiver's
    /// `received + lost`.
    pub dropped: u64,
    /// Envelopes refused as malformed (bad shape, frame, size or origin); never delivered.
    pub invalid: u64,
    /// Messages other instances got acknowledged by Redis on channels this one listens to that
    /// never arrived (gaps in their per-channel sequence numbers, e.g. while resubscribing after
    /// a Redis fault). What the publisher counted `dropped` leaves no gap: its number is reused.
    /// A loss is seen when the channel's next message arrives.
    pub lost: u64,
    /// Messages another instance counted `dropped` (the connection broke before Redis answered)
    /// that Redis had published all the same, as this instance saw: they arrived, or were
    /// counted in `lost` when a later message did. (Their numbers went out again, marked.)
    pub unconfirmed: u64,
    pub reconnects: u64,
    pub subscribed_rooms: u64,
    /// Cluster topology changes seen (each re-issues the sharded subscriptions).
    pub topology_changes: u64,
}
