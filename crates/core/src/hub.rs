//! The server's shared state: configuration, hooks, counters, the open sockets and the room
//! registry, the fan-out queue, the backplane. Only state and plain accessors live here; what
//! the server does with it sits above, one concept per file (`fanout`, `emit`, `commands`,
//! `membership`, `lanes`), and the traits lower layers define are implemented in `links`.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::audience::AudienceCache;
use crate::auth::JwtVerifier;
use crate::backplane::{Backplane, Local};
use crate::config::{OriginRule, ServerConfig};
use crate::dispatch::{Command, Dispatch};
use crate::hooks::{AppHooks, BoxFuture};
use crate::http_conns::HttpConns;
use crate::presence::PresenceCoalescer;
use crate::reader::InputBudget;
use crate::room_order::RoomOrder;
use crate::rooms::RoomRegistry;
use crate::socket::Conn;
use crate::sockets::Sockets;
use crate::stats::{Stats, StatsSnapshot};

pub(crate) struct Hub {
    pub config: ServerConfig,
    pub hooks: Arc<dyn AppHooks>,
    pub stats: Stats,
    pub rooms: RoomRegistry,
    /// Room changes waiting for an async room policy, per (socket, room), in the order sent.
    pub(crate) room_order: RoomOrder,
    pub verifier: JwtVerifier,
    pub origins: Vec<OriginRule>,
    /// Origins whose auth cookies count (`trusted_origins`, checked by `validate`).
    pub trusted_origins: Vec<OriginRule>,
    pub instance: String,
    pub epoch: Instant,
    pub shutting_down: AtomicBool,
    /// Sockets open or being upgraded (checked against `maxConnections`).
    pub slots: AtomicUsize,
    /// The open sockets of this instance.
    pub(crate) sockets: Sockets,
    pub(crate) dispatch: Dispatch,
    /// Memory budget of client input (incomplete frames and messages, messages awaiting JS).
    pub(crate) input: Arc<InputBudget>,
    /// Presence changes being merged per room.
    pub(crate) presence: PresenceCoalescer,
    /// The server's runtime and the hub itself, for timers started from any thread.
    pub(crate) runtime: OnceLock<tokio::runtime::Handle>,
    pub(crate) me: OnceLock<std::sync::Weak<Hub>>,
    /// HTTP connections not upgraded (shed oldest first when out of descriptors).
    pub(crate) http_conns: HttpConns,
    /// Set once at start when instances share a backplane; `Local` otherwise.
    backplane: OnceLock<Arc<dyn Backplane>>,
    /// The last authorized event's recipients, kept while membership and claims stand still.
    pub audience: AudienceCache,
}

impl Hub {
    pub(crate) fn new(
        config: ServerConfig,
        hooks: Arc<dyn AppHooks>,
        instance: String,
        origins: Vec<OriginRule>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (dispatch, rx) = Dispatch::new(config.max_pending_commands, config.max_pending_bytes);
        let input = InputBudget::new(config.max_input_bytes);
        let verifier = JwtVerifier::new(config.jwt_key.as_deref(), config.auth_version);
        let trusted_origins =
            config.trusted_origins.iter().filter_map(|o| OriginRule::parse(o).ok()).collect();
        // A large room's fan-out runs on every worker at once, one part of its members each.
        let parts = config.workers();
        let hub = Arc::new(Self {
            config,
            hooks,
            stats: Stats::default(),
            rooms: RoomRegistry::new(parts),
            room_order: RoomOrder::default(),
            verifier,
            origins,
            trusted_origins,
            sockets: Sockets::new(instance.clone()),
            instance,
            epoch: Instant::now(),
            shutting_down: AtomicBool::new(false),
            slots: AtomicUsize::new(0),
            dispatch,
            input,
            http_conns: Default::default(),
            presence: Default::default(),
            runtime: OnceLock::new(),
            me: OnceLock::new(),
            backplane: OnceLock::new(),
            audience: AudienceCache::default(),
        });
        let _ = hub.me.set(Arc::downgrade(&hub));
        (hub, rx)
    }

    pub(crate) fn set_backplane(&self, bp: Arc<dyn Backplane>) {
        let _ = self.backplane.set(bp);
    }

    pub(crate) fn backplane(&self) -> &dyn Backplane {
        self.backplane.get().map_or(&Local as &dyn Backplane, |b| b.as_ref())
    }

    /// Resolves once this instance's room subscriptions asked for so far are in place.
    pub(crate) fn backplane_settled(&self) -> Option<BoxFuture<()>> {
        if self.distributed() {
            self.backplane().settled()
        } else {
            None
        }
    }

    /// Whether other instances may exist (a backplane other than `Local`).
    pub(crate) fn distributed(&self) -> bool {
        self.backplane.get().is_some()
    }

    /// Milliseconds since the hub started (cheap monotonic clock for per-frame stamps).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub(crate) fn next_key(&self) -> u64 {
        self.sockets.next_key()
    }

    pub(crate) fn socket_id(&self, key: u64) -> Arc<str> {
        self.sockets.socket_id(key)
    }

    /// The key of a socket id of this instance.
    pub(crate) fn key_of(&self, id: &str) -> Option<u64> {
        self.sockets.key_of(id)
    }

    pub(crate) fn conn(&self, id: &str) -> Option<Arc<Conn>> {
        self.sockets.get(id)
    }

    pub(crate) fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.sockets.all()
    }

    /// Snapshot of the counters, with room totals.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot();
        let (rooms, members, largest) = self.rooms.totals();
        s.rooms = rooms;
        s.room_members = members;
        s.largest_room = largest;
        s.uptime_ms = self.now_ms();
        s.backplane = self.backplane().stats();
        s.pending_commands = self.dispatch.pending() as u64;
        s.input_bytes = self.input.used() as u64;
        s
    }
}
