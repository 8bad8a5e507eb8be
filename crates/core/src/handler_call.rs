//! A custom message waiting for the app's answer (`HandlerCall`), the answer itself
//! (`HandlerOutcome`), and a pass answering many at once (`AnswerPass`). The app answers a call
//! exactly once, from wherever it has the answer: the napi binding answers a whole batch of
//! synchronous JS answers in one pass (a socket's replies from one batch leave in one write, and
//! no task, timer or channel is spent per message) and keeps one deadline timer per batch. Apps
//! that answer with a future per message get the old shape through `HandlerCall::spawn`.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{self, codes};
use crate::reader::Held;
use crate::socket::Conn;
use crate::socket_ref::SocketRef;

/// How an app handler answered one message.
#[derive(Debug)]
pub enum HandlerOutcome {
    /// Reply data as JSON text (`None` = `null`); sent only when the message carried an `id`.
    Reply(Option<Bytes>),
    /// The handler failed; the client gets `{"type":"error","code":code,…}`.
    Error { code: String, message: String },
}

/// One custom (or binary) message for the app's handler. Answer it with `answer` or, once its
/// deadline has passed, `expire`; dropped unanswered, it answers `handler_failed`. While it
/// lives it holds the message's share of the server's input budget.
pub struct HandlerCall {
    socket: SocketRef,
    /// The message's `"id"` as raw JSON, when it asks for a reply.
    id: Option<Box<str>>,
    /// Given back (dropped) with the answer.
    _held: Held,
    /// The configured hook timeout, for the `handler_timeout` message.
    timeout: Duration,
    deadline: Instant,
    answered: bool,
}

impl HandlerCall {
    pub(crate) fn new(socket: SocketRef, id: Option<&str>, held: Held, timeout: Duration) -> Self {
        Self {
            socket,
            id: id.map(Into::into),
            _held: held,
            timeout,
            deadline: Instant::now() + timeout,
            answered: false,
        }
    }

    /// The socket the message came from.
    pub fn socket(&self) -> &SocketRef {
        &self.socket
    }

    /// When the message is answered `handler_timeout` if the app has not answered it (the
    /// server's hook timeout after it arrived). The app keeps this deadline: call `expire`.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sends the handler's answer: the reply (only when the message had an `id`) or the error.
    pub fn answer(mut self, outcome: HandlerOutcome) {
        if let Some(frame) = self.frame_of(outcome) {
            self.socket.send_frame(frame);
        }
    }

    /// `answer` within a pass: the frame is written when the pass finishes, with the pass's
    /// other frames for the same socket.
    pub fn answer_in(mut self, outcome: HandlerOutcome, pass: &mut AnswerPass) {
        if let Some(frame) = self.frame_of(outcome) {
            self.socket.hub.deliver_held(&self.socket.conn, frame, &mut pass.held);
        }
    }

    /// Marks the call answered and builds its answer's frame (none for a reply nobody asked for).
    fn frame_of(&mut self, outcome: HandlerOutcome) -> Option<Bytes> {
        self.answered = true;
        let id = self.id.as_deref();
        match outcome {
            HandlerOutcome::Reply(data) => id.map(|id| protocol::reply_frame(id, data.as_deref())),
            HandlerOutcome::Error { code, message } => {
                self.socket.hub.stats().handler_errors.fetch_add(1, Relaxed);
                Some(protocol::error_frame(&code, &message, id))
            }
        }
    }

    /// Answers `handler_timeout` (the app did not answer by the deadline), counted.
    pub fn expire(mut self) {
        self.answered = true;
        self.socket.hub.stats().handler_timeouts.fetch_add(1, Relaxed);
        let msg = format!("handler took longer than {} ms", self.timeout.as_millis());
        self.socket.send_frame(protocol::error_frame(codes::HANDLER_TIMEOUT, &msg, self.id.as_deref()));
    }

    /// Answers with what `fut` resolves to, or `handler_timeout` at the deadline, on a task.
    pub fn spawn(self, fut: impl Future<Output = HandlerOutcome> + Send + 'static) {
        tokio::spawn(async move {
            match tokio::time::timeout_at(self.deadline.into(), fut).await {
                Ok(outcome) => self.answer(outcome),
                Err(_) => self.expire(),
            }
        });
    }
}

impl Drop for HandlerCall {
    fn drop(&mut self) {
        if !self.answered {
            // An app that lost a call must not leave its client waiting for nothing.
            self.socket.hub.stats().handler_errors.fetch_add(1, Relaxed);
            let frame = protocol::error_frame(
                codes::HANDLER_FAILED,
                "the handler gave no answer",
                self.id.as_deref(),
            );
            self.socket.send_frame(frame);
        }
    }
}

/// Answers given together (`HandlerCall::answer_in`): their frames are held per socket and each
/// socket gets one vectored write when the pass finishes (or is dropped).
#[derive(Default)]
pub struct AnswerPass {
    held: Vec<Arc<Conn>>,
}

impl AnswerPass {
    /// An empty pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes what the pass holds: one write per socket.
    pub fn finish(self) {}
}

impl Drop for AnswerPass {
    fn drop(&mut self) {
        crate::cork::flush_group(&self.held);
    }
}
