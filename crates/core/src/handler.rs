//! The custom-message path: a message of a type the protocol does not know (or a binary one)
//! goes to the app's handler for it; the answer (a reply, an error, or a timeout) goes back to
//! the socket. While it waits, the message holds its share of the input budget.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use crate::handler_call::HandlerCall;
use crate::hub::Hub;
use crate::protocol::{self, codes};
use crate::reader::Held;
use crate::refusals::refuse;
use crate::socket::Conn;

/// A binary message: to the app's binary handler, or refused when it has none.
pub(crate) fn on_binary(hub: &Arc<Hub>, conn: &Arc<Conn>, data: Bytes) {
    let Some(held) = hold_for_js(hub, conn, data.len(), None) else { return };
    let socket = hub.handle(conn.clone());
    match hub.hooks.on_binary(socket.clone(), data) {
        Some(fut) => HandlerCall::new(socket, None, held, hub.config.hook_timeout).spawn(fut),
        None => refuse(hub, conn, codes::BINARY_UNSUPPORTED, "binary messages are not accepted", None),
    }
}

/// A text message of type `kind` (`action`: its `"action"` field; `data`: the whole message;
/// `req_id`: the `"id"` asking for a reply): to the app's handler, or refused as unknown.
/// The app answers the call (see `AppHooks::handle_message`): no task or timer here.
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
        let call = HandlerCall::new(hub.handle(conn.clone()), req_id, held, hub.config.hook_timeout);
        hub.hooks.handle_message(call, &kind, data.clone());
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
