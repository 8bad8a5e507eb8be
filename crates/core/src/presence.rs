//! Presence events (`presenceEvents` rooms), coalesced so that a flapping client cannot
//! multiply traffic: the first change in a quiet room goes out at once, in the single-change
//! shape `{"type":"presence","room","joined"|"left":{"socketId","userId"}}`; changes within the
//! next `presence_interval` are merged (a join and a leave of the same socket cancel out) and
//! sent as one frame at its end, `{"type":"presence","room","joined":[…],"left":[…]}`. So a
//! room gets at most two presence frames per interval, whatever its members do.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocol;

/// One socket's change: its member JSON (`{"socketId","userId"}`) and whether it joined.
struct Change {
    socket_id: String,
    member: String,
    joined: bool,
}

struct RoomState {
    /// A flush is scheduled at this time; changes until then are merged.
    flush_at: Instant,
    pending: Vec<Change>,
}

/// What the caller should do after a change.
pub(crate) enum Presence {
    /// Send this frame's JSON now (the room was quiet), and schedule `flush` after `delay`.
    Now(String, Duration),
    /// Merged into the pending flush.
    Merged,
}

#[derive(Default)]
pub(crate) struct PresenceCoalescer {
    rooms: Mutex<HashMap<String, RoomState>>,
}

pub(crate) fn member_json(socket_id: &str, user_json: &str) -> String {
    format!("{{\"socketId\":{},\"userId\":{user_json}}}", protocol::json_str(socket_id))
}

impl PresenceCoalescer {
    /// Records a change; see `Presence`.
    pub(crate) fn change(
        &self,
        room: &str,
        socket_id: &str,
        user_json: &str,
        joined: bool,
        interval: Duration,
    ) -> Presence {
        let member = member_json(socket_id, user_json);
        let mut rooms = self.rooms.lock();
        match rooms.get_mut(room) {
            None => {
                rooms.insert(
                    room.to_string(),
                    RoomState { flush_at: Instant::now() + interval, pending: Vec::new() },
                );
                let what = if joined { "joined" } else { "left" };
                let json = format!(
                    "{{\"type\":\"presence\",\"room\":{},\"{what}\":{member}}}",
                    protocol::json_str(room)
                );
                Presence::Now(json, interval)
            }
            Some(state) => {
                match state.pending.iter().position(|c| c.socket_id == socket_id) {
                    Some(i) if state.pending[i].joined != joined => {
                        state.pending.remove(i); // joined and left again (or the reverse): no news
                    }
                    Some(_) => {}
                    None => state.pending.push(Change { socket_id: socket_id.to_string(), member, joined }),
                }
                Presence::Merged
            }
        }
    }

    /// At the end of an interval: the merged frame to send (if any changes are left), and when
    /// to flush again (`None`: the room is quiet again and forgotten).
    pub(crate) fn flush(&self, room: &str, interval: Duration) -> (Option<String>, Option<Duration>) {
        let mut rooms = self.rooms.lock();
        let Some(state) = rooms.get_mut(room) else { return (None, None) };
        if Instant::now() < state.flush_at {
            return (None, Some(state.flush_at - Instant::now()));
        }
        if state.pending.is_empty() {
            rooms.remove(room);
            return (None, None);
        }
        let changes = std::mem::take(&mut state.pending);
        state.flush_at = Instant::now() + interval;
        let list = |joined: bool| {
            changes
                .iter()
                .filter(|c| c.joined == joined)
                .map(|c| c.member.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let json = format!(
            "{{\"type\":\"presence\",\"room\":{},\"joined\":[{}],\"left\":[{}]}}",
            protocol::json_str(room),
            list(true),
            list(false)
        );
        (Some(json), Some(interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_socket_makes_at_most_two_frames_per_interval() {
        let p = PresenceCoalescer::default();
        let i = Duration::from_millis(30);
        assert!(matches!(p.change("r", "a-1", "null", true, i), Presence::Now(..)));
        for n in 0..99 {
            assert!(matches!(p.change("r", "a-1", "null", n % 2 == 1, i), Presence::Merged));
        }
        assert_eq!(p.flush("r", i).0, None, "not before the interval ends");
        std::thread::sleep(i);
        let (frame, again) = p.flush("r", i);
        assert_eq!(
            frame.as_deref(),
            Some(r#"{"type":"presence","room":"r","joined":[],"left":[{"socketId":"a-1","userId":null}]}"#),
            "99 changes after the join: net one leave"
        );
        assert_eq!(again, Some(i));
        std::thread::sleep(i);
        assert_eq!(p.flush("r", i), (None, None), "quiet: forgotten");
        assert!(matches!(p.change("r", "a-1", "null", true, i), Presence::Now(..)));
    }
}
