//! The HTTP connections not upgraded (yet), kept so the oldest can be shed when the process
//! runs out of file descriptors.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use tokio::task::AbortHandle;

/// Live HTTP connections (before or without an upgrade), by accept order.
#[derive(Default)]
pub(crate) struct HttpConns {
    pub(crate) next: AtomicU64,
    pub(crate) live: Mutex<BTreeMap<u64, AbortHandle>>,
}

impl HttpConns {
    /// Drops the oldest listed connection; false if there is none.
    pub(crate) fn shed_oldest(&self) -> bool {
        let oldest = self.live.lock().pop_first();
        oldest.is_some_and(|(_, h)| {
            h.abort();
            true
        })
    }
}
