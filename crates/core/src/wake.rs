//! A wake-up slot for one task: `notify_one` leaves a permit and wakes the task waiting on it,
//! as `tokio::sync::Notify` does, but the waiting side keeps nothing in its future (Notify's
//! `Notified` carries a 64-byte waiter node, in every socket's task for its whole life).

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// One task's wake-up slot (see the module docs).
#[derive(Default)]
pub(crate) struct WakeSlot {
    permit: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl WakeSlot {
    /// Leaves a permit (at most one is kept) and wakes the waiting task, if any.
    pub(crate) fn notify_one(&self) {
        self.permit.store(true, Ordering::Release);
        let waker = self.waker.lock().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready (taking the permit) once `notify_one` was called since the last time it was ready;
    /// otherwise the task is woken by the next `notify_one`.
    pub(crate) fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.permit.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        {
            let mut slot = self.waker.lock();
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        // A permit left between the first look and the registration.
        if self.permit.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Waits for `notify_one` (see `poll_notified`).
    #[cfg(test)]
    pub(crate) fn notified(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_notified(cx))
    }

    /// Drops the registered waker (the task is ending: a waker kept here would keep the
    /// finished task's allocation alive as long as the slot lives).
    pub(crate) fn clear(&self) {
        self.waker.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_permit_left_before_the_wait_is_not_lost_and_a_waiter_is_woken() {
        let slot = Arc::new(WakeSlot::default());
        slot.notify_one();
        slot.notify_one(); // at most one permit is kept
        tokio::time::timeout(Duration::from_secs(1), slot.notified()).await.expect("the permit");
        let pending = tokio::time::timeout(Duration::from_millis(50), slot.notified()).await;
        assert!(pending.is_err(), "one permit only");
        let s = slot.clone();
        let waiter = tokio::spawn(async move { s.notified().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        slot.notify_one();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap();
    }
}
