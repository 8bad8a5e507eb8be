//! Keeping long-lived tasks alive: a panic while handling one command or message is caught,
//! counted and logged (that one unit of work is lost, the task goes on), and a required task
//! that ends anyway is reported down (`/healthz` answers 503) for as long as it stays down.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use crate::stats::Stats;

/// A future whose panics become `Err(message)` instead of unwinding into its task.
pub(crate) struct CatchPanic<F: Future>(Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs `fut`; a panic inside it is counted in `stats.panics` and logged with `what`, and
/// `None` is returned instead of unwinding.
pub(crate) async fn guarded<F: Future>(stats: &Stats, what: &str, fut: F) -> Option<F::Output> {
    match CatchPanic(Box::pin(fut)).await {
        Ok(v) => Some(v),
        Err(msg) => {
            stats.panics.fetch_add(1, Relaxed);
            eprintln!("payload-realtime-rs: caught a panic in {what} (the task goes on): {msg}");
            None
        }
    }
}

/// Held by a required task for its whole life: when it is dropped (the task ended, returned or
/// panicked) outside shutdown, the task is counted down and `/healthz` turns 503.
pub(crate) struct Required<'a> {
    pub(crate) stats: &'a Stats,
    pub(crate) name: &'static str,
    pub(crate) stopping: &'a std::sync::atomic::AtomicBool,
}

impl Drop for Required<'_> {
    fn drop(&mut self) {
        if !self.stopping.load(Relaxed) {
            self.stats.tasks_down.fetch_add(1, Relaxed);
            eprintln!("payload-realtime-rs: the {} task ended; /healthz reports 503", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_caught_and_counted() {
        let stats = Stats::default();
        let r = guarded(&stats, "test", async {
            tokio::task::yield_now().await;
            let v: Vec<u8> = Vec::new();
            v[1]
        })
        .await;
        assert_eq!(r, None);
        assert_eq!(stats.panics.load(Relaxed), 1);
        assert_eq!(guarded(&stats, "test", async { 7 }).await, Some(7));
    }

    #[test]
    fn a_required_task_ending_is_reported() {
        let stats = Stats::default();
        let stopping = std::sync::atomic::AtomicBool::new(false);
        drop(Required { stats: &stats, name: "t", stopping: &stopping });
        assert_eq!(stats.tasks_down.load(Relaxed), 1);
        stopping.store(true, Relaxed);
        drop(Required { stats: &stats, name: "t", stopping: &stopping });
        assert_eq!(stats.tasks_down.load(Relaxed), 1, "not while shutting down");
    }
}
