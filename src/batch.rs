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
use realtime_core::{AnswerPass, HandlerCall, HandlerOutcome};
use tokio::sync::Notify;

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

/// The batch being filled, and whether a runner (the task that calls JS) is at work. At most
/// one JS call is in flight: messages that arrive meanwhile wait in the open batch and go in
/// the next call, so a busy JS thread gets fewer, larger batches (each call wakes it once and
/// costs a few context switches) instead of a queue of small ones.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    /// Signalled when a batch opens while the runner waits for JS: its deadline joins the timer.
    opened: Notify,
}

#[derive(Default)]
struct State {
    open: Option<Arc<Batch>>,
    running: bool,
}

/// Where the JS-thread callback leaves the batch it took.
type Taken = Arc<Mutex<Option<Arc<Batch>>>>;

pub(crate) type BatchTsfn = ThreadsafeFunction<Taken, BatchReturn, BatchArgs, Status, false, true, QUEUE>;

/// The JS handler function as a batching ThreadsafeFunction over `queue`.
pub(crate) fn build(f: Function<BatchArgs, BatchReturn>, queue: Arc<Queue>) -> napi::Result<BatchTsfn> {
    f.build_threadsafe_function::<Taken>()
        .weak::<true>()
        .callee_handled::<false>()
        .max_queue_size::<QUEUE>()
        .build_callback(move |ctx: ThreadsafeCallContext<Taken>| {
            // Everything that arrived until JS got to the call goes in it.
            let Some(batch) = queue.state.lock().open.take() else { return Ok("[]".to_string()) };
            let mut json = std::mem::take(&mut batch.inner.lock().json);
            json.push(']');
            *ctx.value.lock() = Some(batch);
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
    let (opened, start) = {
        let mut state = queue.state.lock();
        let opened = state.open.is_none();
        let batch = state.open.get_or_insert_with(Default::default);
        let mut b = batch.inner.lock();
        let json = &mut b.json;
        json.push(if json.is_empty() { '[' } else { ',' });
        push_json_str(json, call.socket().id());
        json.push(',');
        push_json_str(json, kind);
        json.push(',');
        json.push_str(text);
        b.calls.push(Some(call));
        drop(b);
        (opened, !std::mem::replace(&mut state.running, true))
    };
    if start {
        tokio::spawn(run(tsfn, queue.clone()));
    } else if opened {
        queue.opened.notify_one();
    }
}

/// Extra scheduler rounds a runner waits while its batch keeps growing.
const GROW_ROUNDS: usize = 3;

fn open_len(queue: &Queue) -> usize {
    queue.state.lock().open.as_ref().map_or(0, |b| b.inner.lock().calls.len())
}

/// The runner: one JS call at a time, for whatever is open when JS gets to it, until nothing
/// is left. While JS has not answered, expires messages (of the call and of the open batch) as
/// their deadlines pass.
async fn run(tsfn: Arc<BatchTsfn>, queue: Arc<Queue>) {
    // Let the other tasks this poll woke (readers of other sockets) add their messages first:
    // spawned from a reader, this task would otherwise run right after it and wake the JS
    // thread for a batch of one.
    tokio::task::yield_now().await;
    loop {
        // A few more rounds while the batch still grows (replies just written come back as new
        // messages): each JS call wakes the JS thread once, whatever its size.
        for _ in 0..GROW_ROUNDS {
            let before = open_len(&queue);
            tokio::task::yield_now().await;
            if open_len(&queue) == before {
                break;
            }
        }
        let taken: Taken = Arc::default();
        let call = tsfn.call_async_catch(taken.clone());
        tokio::pin!(call);
        let result = loop {
            let next = {
                let open = queue.state.lock().open.clone();
                let sent = taken.lock().clone();
                [open, sent].iter().flatten().filter_map(|b| earliest(b)).min()
            };
            let timer = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut call => break r,
                _ = timer => {
                    let open = queue.state.lock().open.clone();
                    let sent = taken.lock().clone();
                    for b in [open, sent].iter().flatten() {
                        expire_due(b);
                    }
                }
                _ = queue.opened.notified() => {}
            }
        };
        let sent = taken.lock().take();
        let calls = sent.as_ref().map(|b| std::mem::take(&mut b.inner.lock().calls)).unwrap_or_default();
        match result {
            Ok(answers) if answers.len() == calls.len() => answer(answers, calls),
            Ok(_) => fail(calls, "the JS batch handler returned the wrong number of answers"),
            // JS took the batch and the call threw (the manager catches handler throws, so
            // this is the batch handler itself): that batch fails, the next one is tried.
            Err(e) if sent.is_some() => fail(calls, &e.reason),
            Err(e) => {
                // The call never reached JS (the function is gone, Node is closing): fail what
                // is waiting too, and stop.
                let mut state = queue.state.lock();
                let open = state.open.take();
                state.running = false;
                drop(state);
                if let Some(b) = open {
                    fail(std::mem::take(&mut b.inner.lock().calls), &e.reason);
                }
                return;
            }
        }
        let mut state = queue.state.lock();
        if state.open.is_none() {
            state.running = false;
            return;
        }
    }
}

/// Sends a batch's answers: the synchronous ones now, in one pass; a promise on a task of its
/// own, answered when it settles or at the message's deadline.
fn answer(answers: BatchReturn, calls: Vec<Option<HandlerCall>>) {
    let mut pass = AnswerPass::new();
    for (answer, call) in answers.into_iter().zip(calls) {
        let Some(call) = call else { continue };
        match answer {
            Either::A(s) => call.answer_in(outcome(Ok(s)), &mut pass),
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
    pass.finish();
}

/// The earliest deadline among the batch's unanswered messages.
fn earliest(batch: &Batch) -> Option<Instant> {
    batch.inner.lock().calls.iter().flatten().map(HandlerCall::deadline).min()
}

/// Answers `handler_timeout` to the batch's messages past their deadline.
fn expire_due(batch: &Batch) {
    let now = Instant::now();
    let due: Vec<HandlerCall> = {
        let mut b = batch.inner.lock();
        b.calls
            .iter_mut()
            .filter(|c| c.as_ref().is_some_and(|c| c.deadline() <= now))
            .filter_map(Option::take)
            .collect()
    };
    // Answered outside the lock: a send may wake the socket's writer.
    for c in due {
        c.expire();
    }
}

fn fail(calls: Vec<Option<HandlerCall>>, why: &str) {
    for c in calls.into_iter().flatten() {
        c.answer(HandlerOutcome::Error { code: "handler_failed".into(), message: why.to_string() });
    }
}
