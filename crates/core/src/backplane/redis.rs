//! The Redis (or Valkey) backplane, with fred. Channels: `<prefix>:r:<room>` per room (sharded
//! pub/sub on a cluster), `<prefix>:i:<instance>` per instance, `<prefix>:all` for everyone.
//! Presence: hash `<prefix>:p:<room>` (socket id → instance, user) plus a liveness key
//! `<prefix>:alive:<instance>` with a TTL, refreshed while the instance runs.
//!
//! Faults: nothing waits on Redis. Publishes go through a bounded queue to one task that sends
//! them pipelined, in order; while Redis is down they are dropped and counted (local delivery
//! is not affected). Subscriptions are ours to track: after every reconnect, and on a cluster
//! after every slot move, all are re-issued; a join waits for its room's subscription through
//! a barrier in the same queue (`settled`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::Pipeline;
use fred::clients::SubscriberClient;
use fred::interfaces::ClusterInterface;
use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, HashesInterface, KeysInterface, Options,
    PubsubInterface, ReconnectPolicy,
};
use fred::types::Expiration;
use tokio::sync::{broadcast::error::RecvError, mpsc, Notify};

use super::{Backplane, BackplaneStats, Inbox, Remote, REISSUED};
use crate::config::RedisConfig;
use crate::error::{CoreError, Result};
use crate::hooks::BoxFuture;
use crate::rooms::Member;

/// Messages a receiver may fall behind by before it starts losing them (counted). fred gives
/// every one of a client's notification channels (messages, errors, reconnects, …, about nine)
/// this capacity, allocated and initialised up front: ~35 MB for the subscriber.
const RECEIVE_CAPACITY: usize = 65_536;
/// The publisher receives no messages; its notifications (reconnects, read by
/// `watch_connection`, which tolerates lagging) need fred's default. With `RECEIVE_CAPACITY`
/// it held another ~35 MB per instance (heaptrack over the soak: 160 MB of its 167 MB RSS were
/// these channels, two instances with two clients each).
const PUBLISHER_NOTIFY_CAPACITY: usize = 32;
/// Most messages sent in one pipeline.
const BATCH: usize = 512;
/// Longest publishes (and joins, for their subscription) wait for the first connection to
/// Redis before Redis counts as down, as during an outage.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How often a cluster's slot map is checked for moves.
const TOPOLOGY_POLL: Duration = Duration::from_secs(1);

enum Sub {
    Room(String, bool),
    /// After a reconnect: issue every subscription again.
    Resync,
    /// Answered once everything queued before it was handled.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

enum Presence {
    Set {
        room: String,
        socket_id: String,
        value: String,
    },
    Del {
        room: String,
        socket_id: String,
    },
    /// After a (re)connect: write every local membership again (Redis may have restarted empty).
    Resync,
}

/// Channels grouped by cluster hash slot, in slot order.
fn by_slot(channels: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: std::collections::BTreeMap<u16, Vec<String>> = std::collections::BTreeMap::new();
    for c in channels {
        groups.entry(fred::util::redis_keyslot(c.as_bytes())).or_default().push(c);
    }
    groups.into_values().collect()
}

fn presence_value(member: &Member) -> String {
    format!(
        "{}\t{}\t{}",
        member.instance,
        member.user_id.as_deref().unwrap_or(""),
        member.user_collection.as_deref().unwrap_or("")
    )
}

/// A channel's sequence numbering starts over after it went unused this long (at most twice
/// this), so the table holds only channels in use: an event publishes on its document's room,
/// and a long run would otherwise keep one entry per document ever changed. Receivers read a
/// sequence that goes back as a restart, not as losses.
const SEQ_IDLE: Duration = Duration::from_secs(30);

/// The publisher's per-channel sequence numbers, in two generations (`current` is what was
/// used since the last rotation): looking a channel up moves it to `current`, and a rotation
/// forgets what stayed in `previous`, so idle channels cost nothing.
struct Seqs {
    current: HashMap<String, Seq>,
    previous: HashMap<String, Seq>,
    rotated: Instant,
}

/// One channel's numbering.
#[derive(Clone, Copy, Default)]
struct Seq {
    /// The last number handed out and kept.
    last: u64,
    /// The highest number ever handed out: numbers up to it were given back and go out again
    /// marked `REISSUED`.
    issued: u64,
}

impl Default for Seqs {
    fn default() -> Self {
        Self { current: HashMap::new(), previous: HashMap::new(), rotated: Instant::now() }
    }
}

impl Seqs {
    /// Forgets the channels unused for a whole generation; call between batches only, so a
    /// number handed out is still there to be given back.
    fn rotate_if_due(&mut self) {
        if self.rotated.elapsed() >= SEQ_IDLE {
            self.previous = std::mem::take(&mut self.current);
            self.rotated = Instant::now();
        }
    }

    /// The next number on `channel` (1 for a channel new or forgotten), with `REISSUED` set
    /// when it was handed out before and given back.
    fn next(&mut self, channel: &str) -> u64 {
        let seq = match self.current.get_mut(channel) {
            Some(seq) => seq,
            None => {
                let seq = self.previous.remove(channel).unwrap_or_default();
                self.current.entry(channel.to_string()).or_insert(seq)
            }
        };
        seq.last += 1;
        let reissued = seq.last <= seq.issued;
        seq.issued = seq.issued.max(seq.last);
        if reissued {
            seq.last | REISSUED
        } else {
            seq.last
        }
    }

    /// Takes back the last number handed out on `channel` (its PUBLISH failed).
    fn give_back(&mut self, channel: &str) {
        if let Some(seq) = self.current.get_mut(channel) {
            seq.last = seq.last.saturating_sub(1);
        }
    }
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    invalid: AtomicU64,
    lost: AtomicU64,
    unconfirmed: AtomicU64,
    reconnects: AtomicU64,
    subscribed: AtomicU64,
    topology_changes: AtomicU64,
    /// Last time a "Redis unavailable" line was printed (ms since start).
    last_warning: AtomicU64,
}

pub(crate) struct RedisBackplane {
    prefix: String,
    cluster: bool,
    instance: String,
    publisher: Client,
    subscriber: SubscriberClient,
    pub_tx: mpsc::Sender<(String, Bytes)>,
    sub_tx: mpsc::UnboundedSender<Sub>,
    presence_tx: mpsc::Sender<Presence>,
    counters: Arc<Counters>,
    /// Last sequence number seen per subscribed channel and origin (gaps are `lost`).
    seen: parking_lot::Mutex<HashMap<String, HashMap<String, u64>>>,
    stopped: Arc<AtomicBool>,
    stop: Arc<Notify>,
    started: Instant,
    /// True once the subscriber connected and its first resync was queued.
    up: tokio::sync::watch::Sender<bool>,
}

/// Commands that fail at once while the connection is down, and never wait long.
fn fail_fast() -> Options {
    Options {
        fail_fast: true,
        max_attempts: Some(1),
        timeout: Some(Duration::from_millis(1000)),
        ..Default::default()
    }
}

fn redis_err(e: fred::error::Error) -> CoreError {
    CoreError::Config(format!("redis: {e}"))
}

impl RedisBackplane {
    /// Builds the clients and starts the background tasks; call inside the server's runtime.
    /// Returns at once: connecting (and reconnecting) happens in the background.
    pub(crate) fn start(cfg: &RedisConfig, instance: &str, hub: Weak<dyn Inbox>) -> Result<Arc<Self>> {
        let config = Config::from_url(&cfg.url).map_err(redis_err)?;
        let cluster = config.server.is_clustered();
        let mut builder = Builder::from_config(config);
        builder
            .with_config(|c| c.fail_fast = false)
            .with_performance_config(|p| {
                p.broadcast_channel_capacity = PUBLISHER_NOTIFY_CAPACITY;
                p.default_command_timeout = Duration::from_secs(2);
            })
            .with_connection_config(|c| {
                c.max_command_attempts = 1;
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
        let publisher = builder.build().map_err(redis_err)?;
        builder.with_performance_config(|p| p.broadcast_channel_capacity = RECEIVE_CAPACITY);
        let subscriber = builder.build_subscriber_client().map_err(redis_err)?;

        let (pub_tx, pub_rx) = mpsc::channel(cfg.publish_queue.max(1));
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        let (presence_tx, presence_rx) = mpsc::channel(cfg.publish_queue.max(1));
        let bp = Arc::new(Self {
            prefix: cfg.prefix.clone(),
            cluster,
            instance: instance.to_string(),
            publisher,
            subscriber,
            pub_tx,
            sub_tx,
            presence_tx,
            counters: Arc::new(Counters::default()),
            seen: parking_lot::Mutex::new(HashMap::new()),
            stopped: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(Notify::new()),
            started: Instant::now(),
            up: tokio::sync::watch::channel(false).0,
        });
        // Listen for connection events before connecting, so the first one is not missed.
        bp.watch_connection(&bp.publisher.clone(), false);
        bp.watch_connection(&bp.subscriber.to_client(), true);

        bp.publisher.connect();
        bp.subscriber.connect();
        tokio::spawn(bp.clone().publish_loop(pub_rx));
        tokio::spawn(bp.clone().subscription_loop(sub_rx));
        tokio::spawn(bp.clone().receive_loop(hub.clone()));
        tokio::spawn(bp.clone().presence_loop(presence_rx, hub, cfg.presence_ttl));
        if cluster {
            tokio::spawn(bp.clone().topology_loop());
        }
        Ok(bp)
    }

    /// After every (re)connect: the subscriber issues all subscriptions again (fred does not,
    /// unless asked to manage them), the publisher rewrites this instance's presence.
    fn watch_connection(self: &Arc<Self>, client: &Client, subscriber: bool) {
        let mut up = client.reconnect_rx();
        let me = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                match up.recv().await {
                    Ok(_) => {
                        if !first && subscriber {
                            me.counters.reconnects.fetch_add(1, Relaxed);
                        }
                        first = false;
                        if subscriber {
                            let _ = me.sub_tx.send(Sub::Resync);
                            me.up.send_replace(true);
                        } else {
                            let _ = me.presence_tx.try_send(Presence::Resync);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    fn room_channel(&self, room: &str) -> String {
        format!("{}:r:{room}", self.prefix)
    }
    fn instance_channel(&self, instance: &str) -> String {
        format!("{}:i:{instance}", self.prefix)
    }
    fn all_channel(&self) -> String {
        format!("{}:all", self.prefix)
    }
    fn presence_key(&self, room: &str) -> String {
        format!("{}:p:{room}", self.prefix)
    }
    fn alive_key(&self, instance: &str) -> String {
        format!("{}:alive:{instance}", self.prefix)
    }

    /// At most one line per 10 s, however many messages are lost.
    fn warn(&self, what: &str) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.counters.last_warning.load(Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self.counters.last_warning.compare_exchange(last, now.max(1), Relaxed, Relaxed).is_ok()
        {
            eprintln!(
                "payload-realtime-rs: redis backplane: {what} (dropped so far: {})",
                self.counters.dropped.load(Relaxed)
            );
        }
    }

    fn enqueue(&self, channel: String, payload: Bytes) {
        if self.pub_tx.try_send((channel, payload)).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
            self.warn("publish queue full or closed; messages dropped");
        }
    }

    async fn publish_loop(self: Arc<Self>, mut rx: mpsc::Receiver<(String, Bytes)>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut seqs = Seqs::default();
        let mut sent: Vec<String> = Vec::with_capacity(BATCH);
        // The server takes sockets (and events) before the first connection to Redis is made:
        // what is published meanwhile waits in the queue for it, up to `FIRST_CONNECT_WAIT`,
        // instead of failing fast as during an outage (a join answered at once could otherwise
        // miss an event another instance emitted right after starting).
        let deadline = Instant::now() + FIRST_CONNECT_WAIT;
        while !self.publisher.is_connected() && Instant::now() < deadline && !self.stopped.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            seqs.rotate_if_due();
            // Fail-fast commands: while Redis is down they fail at once (or within the 1 s
            // timeout if the connection has not noticed yet); nothing is kept for later.
            let pipe = Pipeline::from(self.publisher.with_options(&fail_fast()));
            for (channel, payload) in batch.drain(..) {
                let payload = super::with_seq(payload, seqs.next(&channel));
                let queued = if self.cluster {
                    pipe.spublish::<(), _, _>(channel.as_str(), payload).await
                } else {
                    pipe.publish::<(), _, _>(channel.as_str(), payload).await
                };
                if queued.is_err() {
                    // Not in the pipeline (so not in its results either): dropped, and its
                    // number, the last handed out on the channel, is taken back.
                    seqs.give_back(&channel);
                    self.counters.dropped.fetch_add(1, Relaxed);
                    continue;
                }
                sent.push(channel);
            }
            let results = pipe.try_all::<i64>().await;
            let acked = results.iter().filter(|r| r.is_ok()).count() as u64;
            self.counters.published.fetch_add(acked, Relaxed);
            let failed = sent.len() as u64 - acked;
            if failed > 0 {
                self.counters.dropped.fetch_add(failed, Relaxed);
                // Sequence numbers count what Redis took: a failed PUBLISH at the end of its
                // channel's share of the batch gives its number back, so receivers see no gap
                // for what is already counted here as dropped (`lost` there is only what Redis
                // acknowledged and they missed). A number given back goes out again marked
                // `REISSUED`: a receiver that got its first use (Redis published it, but the
                // answer was lost with the connection) counts it in `unconfirmed`.
                // A failure followed by a success on the same channel leaves a hole that both
                // sides count (rare: one pipeline goes out on one connection, so failures end
                // it).
                let mut settled: HashSet<&str> = HashSet::new();
                for (i, channel) in sent.iter().enumerate().rev() {
                    if settled.contains(channel.as_str()) {
                        continue;
                    }
                    if matches!(results.get(i), Some(Ok(_))) {
                        settled.insert(channel);
                    } else {
                        seqs.give_back(channel);
                    }
                }
                self.warn("Redis unavailable; cross-instance messages dropped, local delivery continues");
            }
            sent.clear();
        }
    }

    async fn subscribe(&self, channels: Vec<String>, on: bool) -> bool {
        if channels.is_empty() {
            return true;
        }
        let r = match (self.cluster, on) {
            (false, true) => self.subscriber.subscribe(channels).await,
            (false, false) => self.subscriber.unsubscribe(channels).await,
            (true, true) => self.subscriber.ssubscribe(channels).await,
            (true, false) => self.subscriber.sunsubscribe(channels).await,
        };
        r.is_ok()
    }

    /// SUBSCRIBE (or UNSUBSCRIBE) `channels`, in commands of at most a few hundred channels and,
    /// on a cluster, one hash slot each (a command spanning slots is refused with CROSSSLOT).
    async fn subscribe_all(&self, channels: Vec<String>, on: bool) -> bool {
        let mut ok = true;
        let groups = if self.cluster { by_slot(channels) } else { vec![channels] };
        for group in groups {
            for chunk in group.chunks(if self.cluster { 200 } else { 500 }) {
                ok &= self.subscribe(chunk.to_vec(), on).await;
            }
        }
        ok
    }

    async fn subscription_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Sub>) {
        let mut rooms: HashSet<String> = HashSet::new();
        // False until every subscription went through since the last (re)connect.
        let mut synced = false;
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        // A resync met while draining a burst, handled right after it.
        let mut next: Option<Sub> = None;
        loop {
            let cmd = match next.take() {
                Some(c) => c,
                None => tokio::select! {
                    c = rx.recv() => match c { Some(c) => c, None => return },
                    _ = retry.tick() => {
                        if synced || !self.subscriber.is_connected() { continue; }
                        Sub::Resync
                    }
                },
            };
            match cmd {
                Sub::Room(..) | Sub::Barrier(_) => {
                    // Everything queued now is handled together: room changes go to Redis in one
                    // command each way, not one round trip per room, and the barriers among them
                    // are answered after it. Each socket's join waits for its barrier before the
                    // socket's next message is read, so one round trip per room queued the joins
                    // of many sockets behind each other; on a loaded machine that took longer
                    // than the wait a join allows (SUBSCRIBE_WAIT), and `joined` then went out
                    // before the subscription was in place.
                    let mut changes = Vec::new();
                    let mut barriers = Vec::new();
                    let mut cmd = Some(cmd);
                    while let Some(c) = cmd.take().or_else(|| rx.try_recv().ok()) {
                        match c {
                            Sub::Room(room, on) => changes.push((room, on)),
                            Sub::Barrier(done) => barriers.push(done),
                            Sub::Resync => {
                                next = Some(Sub::Resync);
                                break;
                            }
                        }
                    }
                    // Net effect per room: joined and left within the burst is no change.
                    let mut was: HashMap<String, bool> = HashMap::new();
                    for (room, on) in changes {
                        was.entry(room.clone()).or_insert_with(|| rooms.contains(&room));
                        if on {
                            rooms.insert(room);
                        } else {
                            rooms.remove(&room);
                        }
                    }
                    let (mut add, mut del) = (Vec::new(), Vec::new());
                    for (room, before) in was {
                        match (before, rooms.contains(&room)) {
                            (false, true) => add.push(self.room_channel(&room)),
                            (true, false) => del.push(self.room_channel(&room)),
                            _ => {}
                        }
                    }
                    if !add.is_empty() || !del.is_empty() {
                        // Not listening in between is not a loss: count gaps from the next message.
                        {
                            let mut seen = self.seen.lock();
                            for c in add.iter().chain(del.iter()) {
                                seen.remove(c);
                            }
                        }
                        // Disconnected: nothing to send now; the resync after reconnecting covers it.
                        if !self.subscriber.is_connected() {
                            synced = false;
                        } else {
                            let added = self.subscribe_all(add, true).await;
                            let removed = self.subscribe_all(del, false).await;
                            synced &= added && removed;
                        }
                    }
                    for done in barriers {
                        let _ = done.send(());
                    }
                }
                Sub::Resync => {
                    synced = true;
                    let mut all: Vec<String> = rooms.iter().map(|r| self.room_channel(r)).collect();
                    all.push(self.instance_channel(&self.instance));
                    all.push(self.all_channel());
                    // On a cluster the per-instance and broadcast channels are sharded too, so one
                    // client serves them all.
                    synced &= self.subscribe_all(all, true).await;
                }
            }
            self.counters.subscribed.store(rooms.len() as u64, Relaxed);
        }
    }

    /// On a cluster: when a slot moves, Redis drops the shard subscriptions of that slot on its
    /// old node and tells no one (fred discards the server's SUNSUBSCRIBE, and only a client
    /// that meets a MOVED reply learns of the move). So the slot map is read every
    /// `TOPOLOGY_POLL` and every subscription re-issued when it changed.
    async fn topology_loop(self: Arc<Self>) {
        // The slot map the subscriptions were routed with: fred's cache before each refresh.
        let slot_map = |me: &Self| {
            me.subscriber
                .cached_cluster_state()
                .map(|s| s.slots().iter().map(|r| (r.start, r.end, r.id.to_string())).collect::<Vec<_>>())
        };
        let mut tick = tokio::time::interval(TOPOLOGY_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.notified() => return,
            }
            if self.stopped.load(Relaxed) {
                return;
            }
            let before = slot_map(&self);
            if before.is_none()
                || !self.subscriber.is_connected()
                || self.subscriber.sync_cluster().await.is_err()
            {
                continue;
            }
            if slot_map(&self) != before {
                self.counters.topology_changes.fetch_add(1, Relaxed);
                let _ = self.sub_tx.send(Sub::Resync);
            }
        }
    }

    async fn receive_loop(self: Arc<Self>, hub: Weak<dyn Inbox>) {
        let Some(h) = hub.upgrade() else { return };
        let _up = RequiredTask { hub: Arc::downgrade(&h), stopped: self.stopped.clone() };
        drop(h);
        let mut rx = self.subscriber.message_rx();
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    let Some(hub) = hub.upgrade() else { return };
                    let decoded = msg
                        .value
                        .as_bytes()
                        .map(Bytes::copy_from_slice)
                        .and_then(|b| Remote::decode(b, hub.max_frame()));
                    let Some((origin, seq, remote)) = decoded else {
                        self.counters.invalid.fetch_add(1, Relaxed);
                        self.warn("malformed envelope on a backplane channel; dropped");
                        continue;
                    };
                    if origin == self.instance {
                        continue; // our own message coming back: delivered locally already
                    }
                    self.counters.received.fetch_add(1, Relaxed);
                    self.note_seq(&msg.channel, &origin, seq);
                    if !hub.receive(remote) {
                        self.counters.dropped.fetch_add(1, Relaxed);
                        self.warn("fan-out queue full; remote messages dropped");
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Not counted here: what another instance published shows as a gap in its
                    // sequence (`lost`) when its next message arrives, and our own echoes
                    // were never ours to deliver; counting both would count twice.
                    self.warn("receiver lagged; messages lost");
                }
                Err(RecvError::Closed) => {
                    if self.stopped.load(Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    rx = self.subscriber.message_rx();
                }
            }
        }
    }

    /// Counts the messages of `origin` on `channel` that never arrived (a gap in its sequence).
    /// A sequence that goes back is a restart of the origin (or of its numbering), not a loss.
    /// A reissued number not past the last one seen means the message first sent under it was
    /// accounted for here (it arrived, or was counted lost when a later one did), though its
    /// publisher got no answer from Redis and counted it dropped: `unconfirmed`.
    fn note_seq(&self, channel: &str, origin: &str, seq: u64) {
        let (seq, reissued) = (seq & !REISSUED, seq & REISSUED != 0);
        let mut seen = self.seen.lock();
        let last = seen.entry(channel.to_string()).or_default().entry(origin.to_string()).or_insert(0);
        if reissued && seq <= *last {
            self.counters.unconfirmed.fetch_add(1, Relaxed);
            return;
        }
        if *last != 0 && seq > *last + 1 {
            let gap = seq - *last - 1;
            self.counters.lost.fetch_add(gap, Relaxed);
            *last = seq;
            drop(seen);
            self.warn("messages from another instance never arrived (counted in lost)");
            return;
        }
        *last = seq;
    }

    async fn presence_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Presence>,
        hub: Weak<dyn Inbox>,
        ttl: Duration,
    ) {
        let mut beat = tokio::time::interval(ttl / 3);
        let mut batch = Vec::with_capacity(BATCH);
        let ttl_ms = ttl.as_millis() as i64;
        loop {
            tokio::select! {
                _ = self.stop.notified() => return,
                _ = beat.tick() => {
                    if !self.publisher.is_connected() { continue; }
                    let pipe = Pipeline::from(self.publisher.with_options(&fail_fast()));
                    let _ = pipe.set::<(), _, _>(self.alive_key(&self.instance), 1, Some(Expiration::PX(ttl_ms)), None, false).await;
                    if let Some(h) = hub.upgrade() {
                        // Room hashes outlive a dead instance by at most 3 TTLs.
                        for (room, _) in h.room_sizes() {
                            let _ = pipe.pexpire::<(), _>(self.presence_key(&room), ttl_ms * 3, None).await;
                        }
                    }
                    let _ = pipe.try_all::<fred::types::Value>().await;
                }
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 { return; }
                    if !self.publisher.is_connected() { batch.clear(); continue; }
                    let pipe = Pipeline::from(self.publisher.with_options(&fail_fast()));
                    for p in batch.drain(..) {
                        match p {
                            Presence::Set { room, socket_id, value } => {
                                let key = self.presence_key(&room);
                                let _ = pipe.hset::<(), _, _>(&key, (socket_id, value)).await;
                                let _ = pipe.pexpire::<(), _>(key, ttl_ms * 3, None).await;
                            }
                            Presence::Del { room, socket_id } => {
                                let _ = pipe.hdel::<(), _, _>(self.presence_key(&room), socket_id).await;
                            }
                            Presence::Resync => {
                                let alive = self.alive_key(&self.instance);
                                let _ = pipe.set::<(), _, _>(alive, 1, Some(Expiration::PX(ttl_ms)), None, false).await;
                                let Some(h) = hub.upgrade() else { continue };
                                for (room, _) in h.room_sizes() {
                                    let key = self.presence_key(&room);
                                    for m in h.members(&room) {
                                        let _ = pipe.hset::<(), _, _>(&key, (m.socket_id.clone(), presence_value(&m))).await;
                                    }
                                    let _ = pipe.pexpire::<(), _>(key, ttl_ms * 3, None).await;
                                }
                            }
                        }
                    }
                    let _ = pipe.try_all::<fred::types::Value>().await;
                }
            }
        }
    }
}

/// Reports the receiver down (`/healthz` 503) if it ends before shutdown.
struct RequiredTask {
    hub: Weak<dyn Inbox>,
    stopped: Arc<AtomicBool>,
}

impl Drop for RequiredTask {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let stopping = self.stopped.load(Relaxed) || hub.stopping();
            let _ = crate::supervise::Required {
                stats: hub.stats(),
                name: "backplane receiver",
                stopping: &AtomicBool::new(stopping),
            };
        }
    }
}

/// Names of this instance's keys (what `members` needs without the whole backplane).
struct Keys {
    prefix: String,
    instance: String,
}

/// Members of `room` on live instances; entries of dead instances are removed on the way.
/// `None` when Redis cannot be read (fails fast during an outage).
async fn lookup_members(publisher: Client, keys: Keys, room: String) -> Option<Vec<Member>> {
    let key = format!("{}:p:{room}", keys.prefix);
    let alive_key = |i: &str| format!("{}:alive:{i}", keys.prefix);
    let entries: HashMap<String, String> = publisher.with_options(&fail_fast()).hgetall(&key).await.ok()?;
    let mut alive: HashMap<String, bool> = HashMap::new();
    alive.insert(keys.instance.clone(), true);
    let mut out = Vec::with_capacity(entries.len());
    let mut dead = Vec::new();
    for (socket_id, value) in entries {
        let mut parts = value.split('\t');
        let instance = parts.next().unwrap_or_default().to_string();
        let user_id = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
        let user_collection = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
        let live = match alive.get(&instance) {
            Some(v) => *v,
            None => {
                let v = publisher.exists::<i64, _>(alive_key(&instance)).await.map(|n| n > 0).unwrap_or(true);
                alive.insert(instance.clone(), v);
                v
            }
        };
        if live {
            out.push(Member { socket_id, user_id, user_collection, instance });
        } else {
            dead.push(socket_id);
        }
    }
    if !dead.is_empty() {
        let _ = publisher.hdel::<(), _, _>(&key, dead).await;
    }
    Some(out)
}

impl Backplane for RedisBackplane {
    fn interest(&self, room: &str, on: bool) {
        let _ = self.sub_tx.send(Sub::Room(room.to_string(), on));
    }

    fn publish_room(&self, room: &str, origin: &str, msg: &Remote) {
        self.enqueue(self.room_channel(room), msg.encode(origin));
    }

    fn publish_instance(&self, instance: &str, origin: &str, msg: &Remote) {
        self.enqueue(self.instance_channel(instance), msg.encode(origin));
    }

    fn publish_all(&self, origin: &str, msg: &Remote) {
        self.enqueue(self.all_channel(), msg.encode(origin));
    }

    fn presence(&self, room: &str, member: &Member, on: bool) {
        let p = if on {
            Presence::Set {
                room: room.to_string(),
                socket_id: member.socket_id.clone(),
                value: presence_value(member),
            }
        } else {
            Presence::Del { room: room.to_string(), socket_id: member.socket_id.clone() }
        };
        if self.presence_tx.try_send(p).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    fn members(&self, room: &str) -> Option<BoxFuture<Option<Vec<Member>>>> {
        let keys = Keys { prefix: self.prefix.clone(), instance: self.instance.clone() };
        Some(Box::pin(lookup_members(self.publisher.clone(), keys, room.to_string())))
    }

    fn settled(&self) -> Option<BoxFuture<()>> {
        // During an outage joins must not wait on Redis: local delivery goes on. At startup
        // (never connected yet) they wait for the first connection, bounded by the caller, for
        // as long as publishes do; a Redis still unreachable after that is an outage.
        let up = *self.up.borrow();
        if (up && !self.subscriber.is_connected()) || (!up && self.started.elapsed() > FIRST_CONNECT_WAIT) {
            return None;
        }
        let mut up = self.up.subscribe();
        let sub_tx = self.sub_tx.clone();
        Some(Box::pin(async move {
            if up.wait_for(|up| *up).await.is_err() {
                return;
            }
            let (done, settled) = tokio::sync::oneshot::channel();
            if sub_tx.send(Sub::Barrier(done)).is_ok() {
                let _ = settled.await;
            }
        }))
    }

    fn stats(&self) -> BackplaneStats {
        let c = &self.counters;
        BackplaneStats {
            kind: "redis",
            connected: self.publisher.is_connected() && self.subscriber.is_connected(),
            published: c.published.load(Relaxed),
            received: c.received.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            lost: c.lost.load(Relaxed),
            unconfirmed: c.unconfirmed.load(Relaxed),
            reconnects: c.reconnects.load(Relaxed),
            subscribed_rooms: c.subscribed.load(Relaxed),
            topology_changes: c.topology_changes.load(Relaxed),
        }
    }

    fn shutdown(&self) -> BoxFuture<()> {
        self.stopped.store(true, Relaxed);
        self.stop.notify_waiters();
        let publisher = self.publisher.clone();
        let subscriber = self.subscriber.clone();
        let alive = self.alive_key(&self.instance);
        Box::pin(async move {
            if publisher.is_connected() {
                let _ = tokio::time::timeout(Duration::from_secs(1), publisher.del::<(), _>(alive)).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), subscriber.quit()).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), publisher.quit()).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_given_back_go_out_again_marked_and_idle_channels_are_forgotten() {
        let mut s = Seqs::default();
        assert_eq!((s.next("a"), s.next("a"), s.next("b")), (1, 2, 1));
        // 3 and 4 failed: given back, they go out again marked, then numbering goes on.
        assert_eq!((s.next("a"), s.next("a")), (3, 4));
        s.give_back("a");
        s.give_back("a");
        assert_eq!((s.next("a"), s.next("a"), s.next("a")), (3 | REISSUED, 4 | REISSUED, 5));
        // Used within a generation: kept across one rotation; idle for two: forgotten.
        s.rotated -= SEQ_IDLE;
        s.rotate_if_due();
        assert_eq!(s.next("a"), 6);
        s.rotated -= SEQ_IDLE;
        s.rotate_if_due();
        s.rotated -= SEQ_IDLE;
        s.rotate_if_due();
        assert_eq!((s.next("a"), s.next("b")), (1, 1), "both idle for two rotations");
    }
}
