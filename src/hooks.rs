//! `AppHooks` backed by JS functions (ThreadsafeFunctions). Every TSFN is weak (never keeps
//! Node alive), bounded (`QUEUE` calls) and callee-unhandled with throws caught into errors.
//! The JS side (ts/plugin/manager.ts) hands in functions that always return a Promise.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, FnArgs, Promise};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use parking_lot::RwLock;
use realtime_core::{
    AppHooks, BoxFuture, EventInfo, HandlerCall, HandlerOutcome, SocketRef, UpgradeInfo, UserClaims,
    UserList, Verdicts,
};

/// Calls to one hook that may wait for the JS thread at once; past it a call fails fast.
pub(crate) const QUEUE: usize = 4096;

/// A JS hook: called with `A`, resolves to `R`.
pub(crate) type Tsfn<A, R> = ThreadsafeFunction<A, Promise<R>, A, Status, false, true, QUEUE>;
/// A fire-and-forget JS notification.
pub(crate) type Notify<A> = ThreadsafeFunction<A, (), A, Status, false, true, QUEUE>;

type Slot<T> = RwLock<Option<Arc<T>>>;
/// Two string arguments, spread into the JS call.
pub(crate) type Args2 = FnArgs<(String, String)>;
/// (collection, users JSON array or "" for the list of id `usersId`, event JSON, usersId).
pub(crate) type AuthorizeArgs = FnArgs<(String, String, String, f64)>;
/// A closed socket's id, close code and reason.
pub(crate) type CloseArgs = FnArgs<(String, u32, String)>;
/// What the JS authorize hook answers: one entry per user (0 withhold, 1 the event as emitted,
/// k ≥ 2 the event with `docs[k - 2]` as its doc).
#[napi_derive::napi(object)]
pub struct AuthorizeAnswer {
    pub verdicts: Vec<u32>,
    /// Views of the document (JSON text) for users who may read only part of it.
    pub docs: Option<Vec<String>>,
}

/// A socket id and the bytes of a binary message.
pub(crate) type BinaryArgs = FnArgs<(String, Buffer)>;

/// The JS functions currently installed.
#[derive(Default)]
pub(crate) struct JsHooks {
    /// Batches `[socketId, type, message, …]` (JSON text) → per message "R<reply JSON>" | "E<code>\n<message>".
    pub message: Slot<crate::batch::BatchTsfn>,
    pub batch: Arc<crate::batch::Queue>,
    pub handler_types: RwLock<HashSet<String>>,
    /// (socketId, data) → same outcome encoding.
    pub binary: Slot<Tsfn<BinaryArgs, String>>,
    /// (upgrade info JSON) → allow?
    pub verify: Slot<Tsfn<String, bool>>,
    /// (upgrade info JSON with `credential`) → claims JSON, or "" to refuse.
    pub resolve: Slot<Tsfn<String, String>>,
    /// (claims JSON) → is the session still live?
    pub session: Slot<Tsfn<String, bool>>,
    /// (socketId, upgrade info JSON) → keep the socket?
    pub open: Slot<Tsfn<Args2, bool>>,
    /// (user claims JSON or "null", room) → may join?
    pub can_join: Slot<Tsfn<Args2, bool>>,
    /// (user claims JSON or "null", `collection:<slug>` | `doc:<slug>:<id>`) → may subscribe?
    pub subscribe: Slot<Tsfn<Args2, bool>>,
    /// (collection, users JSON array, event JSON, users id) → one verdict per user.
    pub authorize: Slot<Tsfn<AuthorizeArgs, AuthorizeAnswer>>,
    pub authorize_collections: RwLock<HashSet<String>>,
    /// Id of the user list the JS side holds (0: none); reset when a call fails.
    pub authorize_sent: Arc<AtomicU64>,
    /// (socketId, close code, reason) after a socket closed.
    pub close: Slot<Notify<CloseArgs>>,
}

fn call<
    A: 'static + Send + napi::bindgen_prelude::JsValuesTupleIntoVec,
    R: 'static + Send + napi::bindgen_prelude::FromNapiValue,
>(
    tsfn: Arc<Tsfn<A, R>>,
    args: A,
) -> BoxFuture<Result<R, String>> {
    Box::pin(async move {
        let promise = match tsfn.call_async_catch(args).await {
            Ok(p) => p,
            // The JS thread is so far behind that QUEUE calls wait already: that is a busy
            // server, not a refusal; the core's hook timeout answers (503 / 1013 / timeout).
            Err(e) if e.status == Status::QueueFull => std::future::pending().await,
            Err(e) => return Err(e.reason.clone()),
        };
        settled(promise).await
    })
}

/// What a JS promise settled to. One that can never settle (collected while pending: napi
/// then drops its callback and the wait ends "oneshot canceled") stays pending here, so the
/// core's hook timeout answers it like any other hook that did not answer in time.
pub(crate) async fn settled<R: napi::bindgen_prelude::FromNapiValue>(
    promise: Promise<R>,
) -> Result<R, String> {
    match promise.await {
        Ok(v) => Ok(v),
        Err(e) if e.status == Status::GenericFailure && e.reason == "oneshot canceled" => {
            std::future::pending().await
        }
        Err(e) => Err(e.reason.clone()),
    }
}

/// A JS handler's answer: "R<reply JSON>" | "E<code>\n<message>", or what it threw.
pub(crate) fn outcome(r: Result<String, String>) -> HandlerOutcome {
    match r {
        Ok(s) if s.starts_with('R') => {
            HandlerOutcome::Reply((s.len() > 1).then(|| Bytes::from(s).slice(1..)))
        }
        Ok(s) if s.starts_with('E') => {
            let (code, message) = s[1..].split_once('\n').unwrap_or((&s[1..], ""));
            HandlerOutcome::Error { code: code.to_string(), message: message.to_string() }
        }
        Ok(_) => HandlerOutcome::Error {
            code: "handler_failed".into(),
            message: "handler returned an unexpected value".into(),
        },
        Err(reason) => HandlerOutcome::Error { code: "handler_failed".into(), message: reason },
    }
}

fn info_json(info: &UpgradeInfo) -> String {
    let headers: serde_json::Map<String, serde_json::Value> =
        info.headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    serde_json::json!({
        "url": info.url,
        "origin": info.origin,
        "remoteAddress": info.remote.ip().to_string(),
        "headers": headers,
        "credential": info.credential,
    })
    .to_string()
}

fn get<T>(slot: &Slot<T>) -> Option<Arc<T>> {
    slot.read().clone()
}

impl AppHooks for JsHooks {
    fn verify_client(&self, info: &UpgradeInfo) -> Option<BoxFuture<bool>> {
        let f = call(get(&self.verify)?, info_json(info));
        Some(Box::pin(async move { f.await.unwrap_or(false) }))
    }

    fn resolve_credentials(&self, info: &UpgradeInfo) -> Option<BoxFuture<Option<UserClaims>>> {
        let f = call(get(&self.resolve)?, info_json(info));
        Some(Box::pin(async move { f.await.ok().and_then(|json| UserClaims::from_json(&json)) }))
    }

    fn validate_session(&self, user: &UserClaims) -> Option<BoxFuture<bool>> {
        let f = call(get(&self.session)?, user.raw.to_string());
        Some(Box::pin(async move { f.await.unwrap_or(false) }))
    }

    fn on_open(&self, socket: &SocketRef, info: &UpgradeInfo) -> Option<BoxFuture<bool>> {
        let f = call(get(&self.open)?, (socket.id().to_string(), info_json(info)).into());
        Some(Box::pin(async move { f.await.unwrap_or(false) }))
    }

    fn has_handler(&self, kind: &str) -> bool {
        self.handler_types.read().contains(kind)
    }

    fn handle_message(&self, call: HandlerCall, kind: &str, text: Bytes) {
        let Some(tsfn) = get(&self.message) else {
            return call.answer(outcome(Err("no handler is installed".into())));
        };
        // The core hands over only text it parsed as JSON (so valid UTF-8: no copy here).
        crate::batch::push(tsfn, &self.batch, call, kind, &String::from_utf8_lossy(&text));
    }

    fn on_binary(&self, socket: SocketRef, data: Bytes) -> Option<BoxFuture<HandlerOutcome>> {
        let f = call(get(&self.binary)?, (socket.id().to_string(), Buffer::from(data.to_vec())).into());
        Some(Box::pin(async move { outcome(f.await) }))
    }

    fn can_join(&self, user: Option<Arc<UserClaims>>, room: &str) -> Option<BoxFuture<bool>> {
        let user = user.map_or_else(|| "null".to_string(), |u| u.raw.to_string());
        let f = call(get(&self.can_join)?, (user, room.to_string()).into());
        Some(Box::pin(async move { f.await.unwrap_or(false) }))
    }

    fn can_subscribe(&self, user: Option<Arc<UserClaims>>, room: &str) -> Option<BoxFuture<bool>> {
        let user = user.map_or_else(|| "null".to_string(), |u| u.raw.to_string());
        let f = call(get(&self.subscribe)?, (user, room.to_string()).into());
        Some(Box::pin(async move { f.await.unwrap_or(false) }))
    }

    fn authorizes(&self, collection: &str) -> bool {
        self.authorize_collections.read().contains(collection)
    }

    fn authorize(&self, event: &EventInfo, users: Arc<UserList>) -> BoxFuture<Verdicts> {
        let Some(tsfn) = get(&self.authorize) else {
            return Box::pin(async { Verdicts::default() });
        };
        // The manager keeps the last list it parsed: an unchanged list (same id) is not sent again.
        let sent = self.authorize_sent.clone();
        let list = if sent.swap(users.id, Relaxed) == users.id {
            String::new()
        } else {
            let list = users
                .users
                .iter()
                .map(|u| u.as_ref().map_or("null", |u| &u.raw))
                .collect::<Vec<_>>()
                .join(",");
            format!("[{list}]")
        };
        let args = (
            event.collection.to_string(),
            list,
            String::from_utf8_lossy(&event.json).into_owned(),
            users.id as f64,
        );
        let f = call(tsfn, args.into());
        // A failed or malformed answer denies everyone (the core counts it); after a failure the
        // JS side may not hold the list, so the next call sends it again.
        Box::pin(async move {
            match f.await {
                Ok(a) => Verdicts {
                    per_user: a.verdicts,
                    docs: a.docs.unwrap_or_default().into_iter().map(Bytes::from).collect(),
                },
                Err(_) => {
                    sent.store(0, Relaxed);
                    Verdicts::default()
                }
            }
        })
    }

    fn on_close(&self, socket_id: &str, code: u16, reason: &str) {
        if let Some(t) = get(&self.close) {
            t.call(
                (socket_id.to_string(), u32::from(code), reason.to_string()).into(),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        }
    }
}
