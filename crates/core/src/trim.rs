//! Gives free heap memory back to the OS after a burst of connections (glibc only).
//!
//! Each handshake allocates short-lived buffers (hyper's read buffer, the HTTP task, the
//! request) between the socket's long-lived records. Once the burst is over those buffers are
//! free, but glibc keeps the pages (it returns only the top of a heap): measured at 10,000 idle
//! sockets opened 256 at a time, ~300 B of resident memory per socket that nothing used.
//! `malloc_trim(0)` releases the free pages inside the heaps too. It runs once per burst, when
//! no connection was accepted for `QUIET` after at least `BURST` were: never on a busy accept
//! path, and not for the odd connection; on a blocking thread, never on a runtime worker.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::hub::Hub;

/// How long accepts must have stopped before the heap is trimmed.
const QUIET: Duration = Duration::from_millis(200);

/// Connections accepted since the last trim that make a burst worth trimming after.
const BURST: u64 = 256;

/// Whether to trim now: `accepted` so far, `before` one `QUIET` ago, `at_last_trim` when the
/// heap was last trimmed.
fn due(accepted: u64, before: u64, at_last_trim: u64) -> bool {
    accepted == before && accepted.saturating_sub(at_last_trim) >= BURST
}

/// Watches the accept count until the server shuts down; trims after each burst.
pub(crate) async fn run(hub: Arc<Hub>) {
    let accepted = || hub.http_conns.next.load(Relaxed);
    let mut before = accepted();
    let mut at_last_trim = before;
    while !hub.shutting_down.load(Relaxed) {
        tokio::time::sleep(QUIET).await;
        let now = accepted();
        if due(now, before, at_last_trim) {
            // On a blocking thread: on a large heap it takes milliseconds and glibc's arena
            // locks, which a worker (fan-out, sockets) must not wait for.
            let _ = tokio::task::spawn_blocking(trim).await;
            at_last_trim = now;
        }
        before = now;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas (under their locks); no precondition.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_burst_has_stopped() {
        assert!(!due(300, 250, 0), "accepts still coming");
        assert!(due(300, 300, 0), "quiet after 300 accepts");
        assert!(!due(300, 300, 300), "once per burst");
        assert!(!due(310, 310, 300), "ten more connections are not a burst");
        assert!(due(600, 600, 300), "the next burst");
    }
}
