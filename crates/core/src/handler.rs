//! The custom-message path: a message of a type the protocol does not know (or a binary one)
//! goes to the app's handler for it; the answer (a reply, an error, or a timeout) goes back to
//! the socket. While it waits, the message holds its share of the input budget.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::timeout;

use crate::hooks::{BoxFuture, HandlerOutcome};
use crate::hub::Hub;
use crate::protocol::{self, codes};
use crate::reader::Held;
use crate::refusals::refuse;
use crate::socket::Conn;

/// A binary message: to the app's binary handler, or refused when it has none.
pub(crate) fn on_binary(hub: &Arc<Hub>, conn: &Arc<Conn>, data: Bytes) {
    let Some(held) = hold_for_js(hub, conn, data.len(), None) else { return };
    let socket = hub.handle(conn.clone());
    match hub.hooks.on_binary(socket, data) {
        Some(fut) => spawn_outcome(hub, conn, None, fut, held),
        None => refuse(hub, conn, codes::BINARY_UNSUPPORTED, "binary messages are not accepted", None),
    }
}

/// A text message of type `kind` (`action`: its `"action"` field; `data`: the whole message;
/// `req_id`: the `"id"` asking for a reply): to the app's handler, or refused as unknown.
pub(crate) fn on_custom(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    kind: Cow<'_, str>,
    action: Option<&str>,
    data: &Bytes,
    req_id: Option<&str>,
) {
    // PXL-style routing: `{"type":t,"action":a}` goes to the handler `t:a` when there is one.
    let kind = match action.filter(|_| hub.config.action_routing) {
        Some(a) if hub.hooks.has_handler(&format!("{kind}:{a}")) => format!("{kind}:{a}").into(),
        _ => kind,
    };
    if hub.hooks.has_handler(&kind) {
        let Some(held) = hold_for_js(hub, conn, data.len(), req_id) else { return };
        let socket = hub.handle(conn.clone());
        let fut = hub.hooks.on_message(socket, &kind, data.clone());
        spawn_outcome(hub, conn, req_id.map(str::to_string), fut, held);
    } else {
        refuse(hub, conn, codes::UNKNOWN_TYPE, &format!("no handler for type {kind:?}"), req_id);
    }
}

/// Takes a message's bytes from the input budget while it waits for the app's handler; past
/// half the budget (the other half stays for frames being read) the message is answered `busy`
/// (not queued) and counted.
fn hold_for_js(hub: &Hub, conn: &Arc<Conn>, len: usize, id: Option<&str>) -> Option<Held> {
    let mut held = hub.input.share();
    if held.resize_within(len, hub.input.max() / 2) {
        return Some(held);
    }
    hub.stats.busy_messages.fetch_add(1, Relaxed);
    hub.deliver(conn, protocol::error_frame(codes::BUSY, "server busy; retry later", id));
    None
}

/// Runs an app handler off the reader, answering with its reply or error within the timeout.
/// `held` (the message's share of the input budget) is given back when it is answered.
fn spawn_outcome(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    id: Option<String>,
    fut: BoxFuture<HandlerOutcome>,
    held: Held,
) {
    let (hub, conn) = (hub.clone(), conn.clone());
    tokio::spawn(async move {
        let _held = held;
        let t = hub.config.hook_timeout;
        match timeout(t, fut).await {
            Ok(HandlerOutcome::Reply(data)) => {
                if let Some(id) = &id {
                    hub.deliver(&conn, protocol::reply_frame(id, data.as_deref()));
                }
            }
            Ok(HandlerOutcome::Error { code, message }) => {
                hub.stats.handler_errors.fetch_add(1, Relaxed);
                hub.deliver(&conn, protocol::error_frame(&code, &message, id.as_deref()));
            }
            Err(_) => {
                hub.stats.handler_timeouts.fetch_add(1, Relaxed);
                let msg = format!("handler took longer than {} ms", t.as_millis());
                hub.deliver(&conn, protocol::error_frame(codes::HANDLER_TIMEOUT, &msg, id.as_deref()));
            }
        }
    });
}
