//! Custom messages cross into JS in batches: one ThreadsafeFunction call carries every message
//! that arrived while the JS thread was busy, so a burst costs one wake-up of the event loop
//! instead of one per message. The batch is one JSON text, `[socketId, type, message, …]`,
//! built on the tokio threads as messages arrive, so JS makes one string and one `JSON.parse`
//! per batch instead of three strings and a parse per message (each message was validated as
//! JSON by the core, so the batch parses). Each message still gets its own answer: JS returns
//! one entry per message, either the outcome string or a promise of it, so a slow handler
//! delays only its own reply.

use std::sync::Arc;

use napi::bindgen_prelude::{Either, Function, Promise};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction};
use napi::Status;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::hooks::QUEUE;

/// The batch's JSON text: a flat array `[socketId, type, message, …]`, three entries a message.
pub(crate) type BatchArgs = String;
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
    /// The batch's JSON text so far (empty, or `[` and the entries without the closing `]`).
    json: String,
    /// One sender per message in `json`, in order.
    replies: Vec<Reply>,
    /// A call is queued that will take the batch when the JS thread runs it.
    scheduled: bool,
}

impl Pending {
    fn take(&mut self) -> (String, Vec<Reply>) {
        let mut json = std::mem::take(&mut self.json);
        json.push_str(if json.is_empty() { "[]" } else { "]" });
        (json, std::mem::take(&mut self.replies))
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&serde_json::Value::from(s).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
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
            let (json, replies) = {
                let mut p = queue.pending.lock();
                p.scheduled = false;
                p.take()
            };
            *ctx.value.lock() = replies;
            Ok(json)
        })
}

/// Queues one message; the future resolves with its outcome string, or an error text.
pub(crate) fn call(
    tsfn: Arc<BatchTsfn>,
    queue: Arc<Queue>,
    socket_id: &str,
    kind: &str,
    text: &str,
) -> impl std::future::Future<Output = Result<String, String>> + Send + 'static {
    let (tx, rx) = oneshot::channel();
    let first = {
        let mut p = queue.pending.lock();
        let json = &mut p.json;
        json.push(if json.is_empty() { '[' } else { ',' });
        push_json_str(json, socket_id);
        json.push(',');
        push_json_str(json, kind);
        json.push(',');
        json.push_str(text);
        p.replies.push(tx);
        !std::mem::replace(&mut p.scheduled, true)
    };
    if first {
        tokio::spawn(flush(tsfn, queue));
    }
    async move {
        match rx.await {
            Ok(outcome) => outcome,
            // Never reached JS (its queue was full: a busy server) or was dropped: the core's
            // hook timeout answers `handler_timeout`, as for any handler too slow to answer.
            Err(_) => std::future::pending().await,
        }
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
                drop(p.take());
            }
        }
        Err(e) => {
            // The call never reached JS (queue full, closing): fail what it would have taken.
            let stranded = {
                let mut p = queue.pending.lock();
                if p.scheduled {
                    p.scheduled = false;
                    p.take().1
                } else {
                    Vec::new()
                }
            };
            fail(stranded, &e.reason);
        }
    }
}

fn fail(replies: Vec<Reply>, why: &str) {
    for r in replies {
        let _ = r.send(Err(why.to_string()));
    }
}
