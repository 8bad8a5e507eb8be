//! The open sockets of this instance, by key, and their ids (`<instance>-<key in hex>`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::socket::Conn;

/// Every open socket of this instance.
pub(crate) struct Sockets {
    instance: String,
    conns: RwLock<HashMap<u64, Arc<Conn>>>,
    next_key: AtomicU64,
}

impl Sockets {
    pub(crate) fn new(instance: String) -> Self {
        Self { instance, conns: RwLock::new(HashMap::new()), next_key: AtomicU64::new(1) }
    }

    /// The instance part of a socket id (`<instance>-<n>`).
    pub(crate) fn instance_of(id: &str) -> Option<&str> {
        id.rsplit_once('-').map(|(i, _)| i)
    }

    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Relaxed)
    }

    pub(crate) fn socket_id(&self, key: u64) -> Arc<str> {
        Arc::from(format!("{}-{key:x}", self.instance))
    }

    /// The key of a socket id of this instance.
    pub(crate) fn key_of(&self, id: &str) -> Option<u64> {
        let (inst, n) = id.rsplit_once('-')?;
        (inst == self.instance).then(|| u64::from_str_radix(n, 16).ok()).flatten()
    }

    pub(crate) fn insert(&self, conn: &Arc<Conn>) {
        self.conns.write().insert(conn.key, conn.clone());
    }

    /// True when the socket was registered (so this removed it).
    pub(crate) fn remove(&self, key: u64) -> bool {
        self.conns.write().remove(&key).is_some()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Conn>> {
        let key = self.key_of(id)?;
        self.conns.read().get(&key).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Conn>> {
        self.conns.read().values().cloned().collect()
    }
}
