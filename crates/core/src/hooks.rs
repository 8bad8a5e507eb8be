//! The app's side of the server: everything the core asks of its embedder (the napi binding
//! routes these to JS). Every method has a default that means "no hook", so no app code runs
//! on a path unless the app installed a hook for it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::audience::UserList;
use crate::auth::UserClaims;
use crate::handler_call::{HandlerCall, HandlerOutcome};
use crate::socket_ref::SocketRef;

/// A boxed, sendable future (async trait methods that stay object-safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the app sees of an upgrade request.
#[derive(Debug, Clone)]
pub struct UpgradeInfo {
    pub url: String,
    pub origin: Option<String>,
    pub remote: SocketAddr,
    /// Header names lower-cased; repeated headers joined with ", ".
    pub headers: Vec<(String, String)>,
    /// A non-JWT credential found in the request (for `resolve_credentials`): a whole
    /// `Authorization` value (scheme included), or a bare token from the cookie or the query.
    pub credential: Option<String>,
}

/// An app-side event that the core asks about.
#[derive(Debug, Clone)]
pub struct EventInfo {
    pub collection: Arc<str>,
    pub operation: crate::protocol::Operation,
    pub id_json: Arc<str>,
    /// The whole event frame's JSON text.
    pub json: Bytes,
}

/// The app's answer to `authorize`, one entry per user of the list: `0` withholds the event,
/// `1` delivers it as emitted, `k ≥ 2` delivers it with `docs[k - 2]` (JSON text) as its `doc`
/// (a view of the document for users who may read only some of its fields). Each distinct
/// view is encoded once and shared by the users given it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub per_user: Vec<u32>,
    pub docs: Vec<Bytes>,
}

impl Verdicts {
    /// Whether the answer fits a list of `users` users (one entry each, every view index known).
    pub fn fits(&self, users: usize) -> bool {
        self.per_user.len() == users && self.per_user.iter().all(|&k| (k as usize) < 2 + self.docs.len())
    }
}

impl From<Vec<bool>> for Verdicts {
    fn from(v: Vec<bool>) -> Self {
        Verdicts { per_user: v.into_iter().map(u32::from).collect(), docs: Vec::new() }
    }
}

/// Hooks the embedding app provides. All optional; `None` from an `Option`-returning method
/// means the hook is absent and the core applies its default.
pub trait AppHooks: Send + Sync + 'static {
    /// May refuse an upgrade (403) after the core's own checks passed.
    fn verify_client(&self, _info: &UpgradeInfo) -> Option<BoxFuture<bool>> {
        None
    }

    /// Resolves a credential that is not a JWT (an API key) to a user, or `None` to refuse.
    fn resolve_credentials(&self, _info: &UpgradeInfo) -> Option<BoxFuture<Option<UserClaims>>> {
        None
    }

    /// Whether a verified JWT's session is still live (Payload's logout removes the `sid`, the
    /// signature stays valid). Asked at upgrade (`false` → 401) and on `{"type":"auth"}`
    /// (`false` → close 4001). `None`: no check.
    fn validate_session(&self, _user: &UserClaims) -> Option<BoxFuture<bool>> {
        None
    }

    /// Runs once per new socket before its first message is read; `false` closes it 4003.
    fn on_open(&self, _socket: &SocketRef, _info: &UpgradeInfo) -> Option<BoxFuture<bool>> {
        None
    }

    /// Whether a handler exists for a custom message type.
    fn has_handler(&self, _kind: &str) -> bool {
        false
    }

    /// Takes a custom message (`text` is the whole message JSON; `kind` the handler's type) and
    /// answers `call` once, by its deadline (`HandlerCall::expire` after it). The default runs
    /// `on_message`'s future on a task; an app that answers many messages at once (the napi
    /// binding's batches) overrides this instead.
    fn handle_message(&self, call: HandlerCall, kind: &str, text: Bytes) {
        let fut = self.on_message(call.socket().clone(), kind, text);
        call.spawn(fut);
    }

    /// Handles a custom message (`text` is the whole message JSON); see `handle_message`.
    fn on_message(&self, _socket: SocketRef, _kind: &str, _text: Bytes) -> BoxFuture<HandlerOutcome> {
        Box::pin(async {
            HandlerOutcome::Error { code: "unknown_type".into(), message: "no handler".into() }
        })
    }

    /// Handles a binary message; `None` means binary frames are not accepted.
    fn on_binary(&self, _socket: SocketRef, _data: Bytes) -> Option<BoxFuture<HandlerOutcome>> {
        None
    }

    /// Room policy for `join-room` names not matched by the configured patterns.
    /// `None` refuses (the safe default).
    fn can_join(&self, _user: Option<Arc<UserClaims>>, _room: &str) -> Option<BoxFuture<bool>> {
        None
    }

    /// May refuse a `join-collection` (`room` = `collection:<slug>`) or `join-doc`
    /// (`doc:<slug>:<id>`) with error `forbidden`: a collection without events, or one the user
    /// may not read. `None`: every such join is allowed.
    fn can_subscribe(&self, _user: Option<Arc<UserClaims>>, _room: &str) -> Option<BoxFuture<bool>> {
        None
    }

    /// Whether events of `collection` need `authorize`.
    fn authorizes(&self, _collection: &str) -> bool {
        false
    }

    /// One call per event with the distinct users among its recipients; returns one verdict per
    /// user, in order (see `Verdicts`). Anonymous recipients are passed as `None`. While
    /// membership and claims do not change, successive events to the same rooms get the same
    /// list (same `id`). An answer that does not fit the list withholds the event from everyone.
    fn authorize(&self, _event: &EventInfo, _users: Arc<UserList>) -> BoxFuture<Verdicts> {
        Box::pin(async { Verdicts::default() })
    }

    /// A socket closed (after it left every room), with the close code and reason: the peer's,
    /// or the server's when it closed first; 1006 and "" when the connection just dropped.
    fn on_close(&self, _socket_id: &str, _code: u16, _reason: &str) {}
}

/// Hooks that do nothing: a plain WebSocket server with the built-in protocol only.
pub struct NoHooks;

impl AppHooks for NoHooks {}
