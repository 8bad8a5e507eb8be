//! Custom messages cross into JS in batches: one ThreadsafeFunction call carries every message
//! that arrived while the JS thread was busy, so a burst costs one wake-up of the event loop
//! instead of one per message. The batch is one JSON text, `[socketId, type, message, …]`,
//! built on the tokio threads as messages arrive, so JS makes one string and one `JSON.parse`
//! per batch instead of three strings and a parse per message (each message was validated as
//! JSON by the core, so the batch parses).
//!
//! JS returns one answer per message: the outcome string of a synchronous handler, or a promise
//! of it. The synchronous answers of a batch are all sent in one pass when the call returns (a
//! socket's replies leave in one write; no task, channel or timer per message); only a promise
//! gets a task of its own, so a slow handler delays only its own reply. One timer per batch
//! keeps the deadlines (`HandlerCall::deadline`) while the JS thread has not answered.

use std::sync::Arc;
use std::time::Instant;

use napi::bindgen_prelude::{Either, Function, Promise};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction};
use napi::Status;
use parking_lot::Mutex;
use realtime_core::{HandlerCall, HandlerOutcome};

use crate::hooks::{outcome, settled, QUEUE};

/// The batch's JSON text: a flat array `[socketId, type, message, …]`, three entries a message.
pub(crate) type BatchArgs = String;
/// One entry per message: the outcome ("R…"/"E…"), or a promise of it.
pub(crate) type BatchReturn = Vec<Either<String, Promise<String>>>;

/// The messages of one JS call.
#[derive(Default)]
pub(crate) struct Batch {
    inner: Mutex<BatchInner>,
}

#[derive(Default)]
struct BatchInner {
    /// The JSON text so far (`[` and the entries, without the closing `]`); taken by the call.
    json: String,
    /// One call per message of `json`, in order; `None` once answered early (its deadline).
    calls: Vec<Option<HandlerCall>>,
}

/// The batch being filled: messages join it until its JS call runs (or its first deadline).
#[derive(Default)]
pub(crate) struct Queue {
    open: Mutex<Option<Arc<Batch>>>,
}

impl Queue {
    /// Stops `batch` taking messages (the next message starts a new batch), if it still does.
    fn close(&self, batch: &Arc<Batch>) {
        let mut open = self.open.lock();
        if open.as_ref().is_some_and(|b| Arc::ptr_eq(b, batch)) {
            *open = None;
        }
    }
}

pub(crate) type BatchTsfn =
    ThreadsafeFunction<Arc<Batch>, BatchReturn, BatchArgs, Status, false, true, QUEUE>;

/// The JS handler function as a batching ThreadsafeFunction over `queue`.
pub(crate) fn build(f: Function<BatchArgs, BatchReturn>, queue: Arc<Queue>) -> napi::Result<BatchTsfn> {
    f.build_threadsafe_function::<Arc<Batch>>()
        .weak::<true>()
        .callee_handled::<false>()
        .max_queue_size::<QUEUE>()
        .build_callback(move |ctx: ThreadsafeCallContext<Arc<Batch>>| {
            // From here on the batch is what JS answers: later messages start another.
            queue.close(&ctx.value);
            let mut json = std::mem::take(&mut ctx.value.inner.lock().json);
            json.push_str(if json.is_empty() { "[]" } else { "]" });
            Ok(json)
        })
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

/// Queues one message (`text`: its JSON) for the handler of `kind`; `call` is answered when JS
/// answers, or at its deadline.
pub(crate) fn push(tsfn: Arc<BatchTsfn>, queue: &Arc<Queue>, call: HandlerCall, kind: &str, text: &str) {
    let started = {
        let mut open = queue.open.lock();
        let (batch, started) = match &*open {
            Some(b) => (b.clone(), None),
            None => {
                let b = Arc::new(Batch::default());
                *open = Some(b.clone());
                (b.clone(), Some((b, call.deadline())))
            }
        };
        let mut b = batch.inner.lock();
        let json = &mut b.json;
        json.push(if json.is_empty() { '[' } else { ',' });
        push_json_str(json, call.socket().id());
        json.push(',');
        push_json_str(json, kind);
        json.push(',');
        json.push_str(text);
        b.calls.push(Some(call));
        started
    };
    if let Some((batch, deadline)) = started {
        tokio::spawn(flush(tsfn, queue.clone(), batch, deadline));
    }
}

/// Runs one JS call for `batch` and sends its answers; until JS answers, expires its messages
/// as their deadlines pass (the first one's is `deadline`).
async fn flush(tsfn: Arc<BatchTsfn>, queue: Arc<Queue>, batch: Arc<Batch>, deadline: Instant) {
    let call = tsfn.call_async_catch(batch.clone());
    tokio::pin!(call);
    let mut next = Some(deadline);
    let result = loop {
        let Some(at) = next else {
            // Every message of the batch is answered (expired): nothing left to wait for.
            return;
        };
        tokio::select! {
            r = &mut call => break r,
            _ = tokio::time::sleep_until(at.into()) => {
                // The JS thread is that far behind: messages arriving from now on start another
                // batch, with a timer of its own.
                queue.close(&batch);
                next = expire_due(&batch);
            }
        }
    };
    queue.close(&batch);
    let calls = std::mem::take(&mut batch.inner.lock().calls);
    match result {
        Ok(answers) if answers.len() == calls.len() => {
            for (answer, call) in answers.into_iter().zip(calls) {
                let Some(call) = call else { continue };
                match answer {
                    Either::A(s) => call.answer(outcome(Ok(s))),
                    Either::B(promise) => {
                        tokio::spawn(async move {
                            match tokio::time::timeout_at(call.deadline().into(), settled(promise)).await {
                                Ok(r) => call.answer(outcome(r)),
                                Err(_) => call.expire(),
                            }
                        });
                    }
                }
            }
        }
        Ok(_) => fail(calls, "the JS batch handler returned the wrong number of answers"),
        // The call never reached JS (its queue is full: a busy server): each message is answered
        // `handler_timeout` at its deadline, like any handler the JS thread had no time for.
        Err(e) if e.status == Status::QueueFull => {
            batch.inner.lock().calls = calls;
            while let Some(at) = earliest(&batch) {
                tokio::time::sleep_until(at.into()).await;
                expire_due(&batch);
            }
        }
        Err(e) => fail(calls, &e.reason),
    }
}

/// The earliest deadline among the batch's unanswered messages.
fn earliest(batch: &Batch) -> Option<Instant> {
    batch.inner.lock().calls.iter().flatten().map(HandlerCall::deadline).min()
}

/// Answers `handler_timeout` to the batch's messages past their deadline; returns the next
/// deadline, if any message is left.
fn expire_due(batch: &Batch) -> Option<Instant> {
    let now = Instant::now();
    let mut due = Vec::new();
    let next = {
        let mut b = batch.inner.lock();
        let mut next: Option<Instant> = None;
        for slot in b.calls.iter_mut() {
            match slot {
                Some(c) if c.deadline() <= now => due.extend(slot.take()),
                Some(c) => next = Some(next.map_or(c.deadline(), |n| n.min(c.deadline()))),
                None => {}
            }
        }
        next
    };
    // Answered outside the lock: a send may wake the socket's writer.
    for c in due {
        c.expire();
    }
    next
}

fn fail(calls: Vec<Option<HandlerCall>>, why: &str) {
    for c in calls.into_iter().flatten() {
        c.answer(HandlerOutcome::Error { code: "handler_failed".into(), message: why.to_string() });
    }
}
