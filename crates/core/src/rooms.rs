//! The room registry: which sockets are in which room, with O(1) membership changes; how a
//! member is reported to the app.
//!
//! Lock order: a socket's own room set, then the registry map, then one room's member map.
//! A join inserts its member while holding the map's read lock and a room is removed only
//! under the map's write lock after re-checking it is empty, so no join is ever lost to a
//! concurrent removal of an empty room.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::socket::Conn;

/// The pseudo-room naming every socket on every instance (`broadcast`); no socket can join it
/// (`*` is not a room-name character).
pub const ALL_SOCKETS: &str = "*";

/// Why a join failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinError {
    Invalid,
    TooMany,
}

/// A member of a room, as reported to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub user_collection: Option<String>,
    pub instance: String,
}

/// Members of one room, by connection key.
pub(crate) struct Room {
    members: RwLock<HashMap<u64, Arc<Conn>>>,
}

impl Room {
    /// Calls `f` for every member (under the room's read lock: `f` must not touch the registry).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Conn>)) {
        for c in self.members.read().values() {
            f(c);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.read().len()
    }

    pub(crate) fn members(&self) -> Vec<Arc<Conn>> {
        self.members.read().values().cloned().collect()
    }
}

/// All rooms with at least one member.
#[derive(Default)]
pub struct RoomRegistry {
    rooms: RwLock<HashMap<Arc<str>, Arc<Room>>>,
}

impl RoomRegistry {
    /// Adds `conn` to `room` (the caller has already recorded the room in the socket's set);
    /// true when this created the room.
    pub(crate) fn insert(&self, room: &Arc<str>, conn: &Arc<Conn>) -> bool {
        {
            let map = self.rooms.read();
            if let Some(r) = map.get(room) {
                r.members.write().insert(conn.key, conn.clone());
                return false;
            }
        }
        let mut map = self.rooms.write();
        let mut created = false;
        let r = map.entry(room.clone()).or_insert_with(|| {
            created = true;
            Arc::new(Room { members: RwLock::new(HashMap::new()) })
        });
        r.members.write().insert(conn.key, conn.clone());
        created
    }

    /// Removes the socket with `key` from `room`, dropping the room when it empties; true when
    /// this removed the room.
    pub(crate) fn remove(&self, room: &str, key: u64) -> bool {
        let emptied = {
            let map = self.rooms.read();
            let Some(r) = map.get(room) else { return false };
            let mut m = r.members.write();
            m.remove(&key);
            m.is_empty()
        };
        if emptied {
            let mut map = self.rooms.write();
            if map.get(room).is_some_and(|r| r.members.read().is_empty()) {
                map.remove(room);
                return true;
            }
        }
        false
    }

    /// The room, if anyone is in it.
    pub(crate) fn get(&self, room: &str) -> Option<Arc<Room>> {
        self.rooms.read().get(room).cloned()
    }

    /// (rooms, memberships, largest room size).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let map = self.rooms.read();
        let mut members = 0u64;
        let mut largest = 0u64;
        for r in map.values() {
            let n = r.len() as u64;
            members += n;
            largest = largest.max(n);
        }
        (map.len() as u64, members, largest)
    }

    /// Room names with their sizes.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.rooms.read().iter().map(|(k, r)| (k.to_string(), r.len())).collect()
    }
}
