//! Custom messages cross into JS in batches: one ThreadsafeFunction call carries every message
//! that arrived while the JS thread was busy, so a burst costs one wake-up of the event loop
//! instead of one per message. Each message still gets its own answer: JS returns one entry per
//! message, either the outcome string or a promise of it, so a slow handler delays only its own
//! reply.

use std::sync::Arc;

use napi::bindgen_prelude::{Either, FnArgs, Function, Promise};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction};
use napi::Status;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::hooks::QUEUE;

/// Socket ids, message types and message JSON texts, index-aligned.
pub(crate) type BatchArgs = FnArgs<(Vec<String>, Vec<String>, Vec<String>)>;
/// One entry per message: the outcome ("R…"/"E…"), or a promise of it.
pub(crate) type BatchReturn = Vec<Either<String, Promise<String>>>;

type Reply = oneshot::Sender<Result<String, String>>;

/// Messages waiting for the JS thread, and the senders the callback hands back.
#[derive(Default)]
pub(crate) struct Queue {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    items: Vec<(String, String, String, Reply)>,
    /// A call is queued that will take `items` when the JS thread runs it.
    scheduled: bool,
}

/// Where the JS-thread callback leaves the senders of the batch it took.
type Taken = Arc<Mutex<Vec<Reply>>>;

pub(crate) type BatchTsfn = ThreadsafeFunction<Taken, BatchReturn, BatchArgs, Status, false, true, QUEUE>;

/// The JS handler function as a batching ThreadsafeFunction over `queue`.
pub(crate) fn build(f: Function<BatchArgs, BatchReturn>, queue: Arc<Queue>) -> napi::Result<BatchTsfn> {
    f.build_threadsafe_function::<Taken>()
        .weak::<true>()
        .callee_handled::<false>()
        .max_queue_size::<QUEUE>()
        .build_callback(move |ctx: ThreadsafeCallContext<Taken>| {
            let items = {
                let mut p = queue.pending.lock();
                p.scheduled = false;
                std::mem::take(&mut p.items)
            };
            let (mut ids, mut kinds, mut texts) = (
                Vec::with_capacity(items.len()),
                Vec::with_capacity(items.len()),
                Vec::with_capacity(items.len()),
            );
            let mut replies = ctx.value.lock();
            for (id, kind, text, reply) in items {
                ids.push(id);
                kinds.push(kind);
                texts.push(text);
                replies.push(reply);
            }
            Ok((ids, kinds, texts).into())
        })
}

/// Queues one message; resolves with its outcome string, or an error text.
pub(crate) async fn call(
    tsfn: Arc<BatchTsfn>,
    queue: Arc<Queue>,
    socket_id: String,
    kind: String,
    text: String,
) -> Result<String, String> {
    let (tx, rx) = oneshot::channel();
    let first = {
        let mut p = queue.pending.lock();
        p.items.push((socket_id, kind, text, tx));
        !std::mem::replace(&mut p.scheduled, true)
    };
    if first {
        tokio::spawn(flush(tsfn, queue));
    }
    match rx.await {
        Ok(outcome) => outcome,
        // Never reached JS (its queue was full: a busy server) or was dropped: the core's
        // hook timeout answers `handler_timeout`, as for any handler too slow to answer.
        Err(_) => std::future::pending().await,
    }
}

/// Runs one JS call for whatever is queued when the JS thread gets to it.
async fn flush(tsfn: Arc<BatchTsfn>, queue: Arc<Queue>) {
    let taken: Taken = Arc::default();
    let result = tsfn.call_async_catch(taken.clone()).await;
    let replies = std::mem::take(&mut *taken.lock());
    match result {
        Ok(answers) if answers.len() == replies.len() => {
            for (answer, reply) in answers.into_iter().zip(replies) {
                match answer {
                    Either::A(outcome) => {
                        let _ = reply.send(Ok(outcome));
                    }
                    Either::B(promise) => {
                        let mut reply = reply;
                        tokio::spawn(async move {
                            // Ends when the core stops waiting (its hook timeout), so a promise
                            // that never settles does not keep this task forever.
                            tokio::select! {
                                r = crate::hooks::settled(promise) => { let _ = reply.send(r); }
                                _ = reply.closed() => {}
                            }
                        });
                    }
                }
            }
        }
        Ok(_) => fail(replies, "the JS batch handler returned the wrong number of answers"),
        Err(e) if !replies.is_empty() => fail(replies, &e.reason),
        // Queue full: leave the messages unanswered here (dropping their senders); each is
        // answered `handler_timeout` by the core, like any handler the JS thread had no time for.
        Err(e) if e.status == Status::QueueFull => {
            let mut p = queue.pending.lock();
            if p.scheduled {
                p.scheduled = false;
                p.items.clear();
            }
        }
        Err(e) => {
            // The call never reached JS (queue full, closing): fail what it would have taken.
            let stranded = {
                let mut p = queue.pending.lock();
                if p.scheduled {
                    p.scheduled = false;
                    std::mem::take(&mut p.items)
                } else {
                    Vec::new()
                }
            };
            fail(stranded.into_iter().map(|(_, _, _, r)| r).collect(), &e.reason);
        }
    }
}

fn fail(replies: Vec<Reply>, why: &str) {
    for r in replies {
        let _ = r.send(Err(why.to_string()));
    }
}
