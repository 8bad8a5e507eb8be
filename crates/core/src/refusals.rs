//! How the server answers what it will not do: an error message for a refused request, and
//! the close that follows a client's protocol violation.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::hub::Hub;
use crate::protocol::{self, close_codes};
use crate::reader::ReadError;
use crate::socket::Conn;

/// Answers a refused request with `{"type":"error","code",…}` and counts it.
pub(crate) fn refuse(hub: &Hub, conn: &Arc<Conn>, code: &str, message: &str, id: Option<&str>) {
    hub.stats.bad_messages.fetch_add(1, Relaxed);
    hub.deliver(conn, protocol::error_frame(code, message, id));
}

pub(crate) fn protocol_error(hub: &Hub, conn: &Conn, why: &str) {
    hub.stats.protocol_errors.fetch_add(1, Relaxed);
    conn.close(close_codes::PROTOCOL_ERROR, why, false);
}

pub(crate) fn invalid_utf8(hub: &Hub, conn: &Conn) {
    hub.stats.protocol_errors.fetch_add(1, Relaxed);
    conn.close(close_codes::INVALID_PAYLOAD, "invalid UTF-8", false);
}

pub(crate) fn too_big(hub: &Hub, conn: &Conn) {
    hub.stats.oversized_messages.fetch_add(1, Relaxed);
    conn.close(close_codes::TOO_BIG, "message too big", true);
}

/// Client input went over the server's memory budget while this socket was growing its share.
pub(crate) fn over_budget(hub: &Hub, conn: &Conn) {
    hub.stats.input_budget_closes.fetch_add(1, Relaxed);
    conn.close(close_codes::TRY_AGAIN_LATER, "server input memory budget exceeded", true);
}

pub(crate) fn fail(hub: &Hub, conn: &Conn, e: ReadError) {
    match e {
        ReadError::Gone => {}
        ReadError::OverBudget => over_budget(hub, conn),
        ReadError::TooBig => too_big(hub, conn),
        ReadError::Protocol(why) => protocol_error(hub, conn, why),
    }
}
