//! A fan-out pass's cork: the sockets it held frames for (see `Outbound::hold`), grouped by the
//! part of a room a socket falls in (its key modulo the worker count), written at the pass's
//! end: one vectored write per socket per pass, the groups on every worker at once when the
//! pass touched many sockets.

use std::sync::Arc;

use crate::socket::Conn;

/// A pass that held frames for this many sockets or more flushes them on every worker at once.
const SPREAD_AT: usize = 256;

/// The sockets a pass holds frames for.
pub(crate) struct Cork {
    groups: Vec<Vec<Arc<Conn>>>,
}

impl Cork {
    /// A cork for a runtime of `parts` workers.
    pub(crate) fn new(parts: usize) -> Self {
        Self { groups: (0..parts.max(1)).map(|_| Vec::new()).collect() }
    }

    /// The group a socket with `key` belongs to (the same part as in a split room).
    pub(crate) fn group_of(&mut self, key: u64) -> &mut Vec<Arc<Conn>> {
        let n = self.groups.len() as u64;
        &mut self.groups[(key % n) as usize]
    }

    /// Takes the sockets a part task of a split room held frames for (part `i`).
    pub(crate) fn absorb(&mut self, i: usize, held: Vec<Arc<Conn>>) {
        let n = self.groups.len();
        let group = &mut self.groups[i % n];
        if group.is_empty() {
            *group = held;
        } else {
            group.extend(held);
        }
    }

    /// Writes every held socket's frames; returns once all are written (or left to the
    /// sockets' writers), so the next pass's frames come after them.
    pub(crate) async fn flush(self) {
        let total: usize = self.groups.iter().map(Vec::len).sum();
        let mut groups = self.groups.into_iter().filter(|g| !g.is_empty());
        if total < SPREAD_AT {
            groups.for_each(|g| flush_group(&g));
            return;
        }
        let Some(first) = groups.next() else { return };
        let tasks: Vec<_> = groups.map(|g| tokio::spawn(async move { flush_group(&g) })).collect();
        flush_group(&first);
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Writes each socket's held frames (one vectored write per socket).
pub(crate) fn flush_group(group: &[Arc<Conn>]) {
    for c in group {
        c.out.flush();
    }
}
