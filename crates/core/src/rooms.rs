//! The room registry: which sockets are in which room, with O(1) membership changes; how a
//! member is reported to the app.
//!
//! Lock order: a socket's own room set, then the registry map, then one part of one room's
//! members (never two parts at once).
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

/// Members of one room, by connection key. A large room's members are split into parts by key
/// (one per runtime worker), so its fan-out can run on every worker at once, each part under
/// its own lock; a small room has one part.
pub(crate) struct Room {
    parts: Box<[Part]>,
}

/// One part of a room's members.
type Part = RwLock<Members>;

/// Members of one part: a short list while there are few (a user's own room has one or two,
/// and a one-entry hash map holds 96 B of heap, a one-entry list 8 B), a map by connection key
/// past `FEW_MEMBERS`.
enum Members {
    Few(Vec<Arc<Conn>>),
    Many(HashMap<u64, Arc<Conn>>),
}

/// Members kept in a list (searched linearly on join and leave) before a part switches to a map.
const FEW_MEMBERS: usize = 16;

impl Members {
    fn insert(&mut self, conn: &Arc<Conn>) {
        match self {
            Members::Few(v) => {
                if v.iter().any(|c| c.key == conn.key) {
                    return;
                }
                if v.len() < FEW_MEMBERS {
                    // Grown one at a time while short: most rooms of this kind stay at one or two.
                    if v.len() == v.capacity() {
                        v.reserve_exact(if v.len() < 4 { 1 } else { v.len() });
                    }
                    v.push(conn.clone());
                } else {
                    let mut m: HashMap<u64, Arc<Conn>> = v.drain(..).map(|c| (c.key, c)).collect();
                    m.insert(conn.key, conn.clone());
                    *self = Members::Many(m);
                }
            }
            Members::Many(m) => {
                m.insert(conn.key, conn.clone());
            }
        }
    }

    fn remove(&mut self, key: u64) {
        match self {
            Members::Few(v) => {
                if let Some(i) = v.iter().position(|c| c.key == key) {
                    v.swap_remove(i);
                }
            }
            Members::Many(m) => {
                m.remove(&key);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Members::Few(v) => v.len(),
            Members::Many(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn for_each(&self, f: impl FnMut(&Arc<Conn>)) {
        match self {
            Members::Few(v) => v.iter().for_each(f),
            Members::Many(m) => m.values().for_each(f),
        }
    }
}

impl Room {
    fn new(parts: usize) -> Self {
        Self { parts: (0..parts.max(1)).map(|_| RwLock::new(Members::Few(Vec::new()))).collect() }
    }

    fn part_of(&self, key: u64) -> &Part {
        &self.parts[(key % self.parts.len() as u64) as usize]
    }

    /// How many parts the members are split into.
    pub(crate) fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Calls `f` for every member (one part's read lock at a time: `f` must not touch the
    /// registry).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Conn>)) {
        for part in self.parts.iter() {
            part.read().for_each(&mut f);
        }
    }

    /// The members in part `i` (copied out, so the caller holds no lock while it uses them).
    pub(crate) fn members_in(&self, i: usize) -> Vec<Arc<Conn>> {
        let part = self.parts[i].read();
        let mut all = Vec::with_capacity(part.len());
        part.for_each(|c| all.push(c.clone()));
        all
    }

    /// Adds a member; true when a one-part room reached `SPLIT_AT` (time to split it).
    fn add(&self, conn: &Arc<Conn>) -> bool {
        let mut part = self.part_of(conn.key).write();
        part.insert(conn);
        self.parts.len() == 1 && part.len() >= SPLIT_AT
    }

    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.read().len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.read().is_empty())
    }

    pub(crate) fn members(&self) -> Vec<Arc<Conn>> {
        let mut all = Vec::with_capacity(self.len());
        self.for_each(|c| all.push(c.clone()));
        all
    }
}

/// Members at which a room is split into a part per worker (see `Hub::settle`).
pub(crate) const SPLIT_AT: usize = 256;

/// All rooms with at least one member.
pub struct RoomRegistry {
    rooms: RwLock<HashMap<Arc<str>, Arc<Room>>>,
    /// Parts of a large room (the runtime's worker count).
    parts: usize,
}

impl RoomRegistry {
    /// How many parts a large room is split into (the runtime's worker count).
    pub(crate) fn parts(&self) -> usize {
        self.parts
    }

    /// A registry whose large rooms split their members into `parts` parts.
    pub(crate) fn new(parts: usize) -> Self {
        Self { rooms: RwLock::new(HashMap::new()), parts: parts.max(1) }
    }

    /// Adds `conn` to `room` (the caller has already recorded the room in the socket's set);
    /// true when this created the room.
    pub(crate) fn insert(&self, room: &Arc<str>, conn: &Arc<Conn>) -> bool {
        let grew = self.rooms.read().get(room).map(|r| r.add(conn));
        match grew {
            Some(false) => return false,
            Some(true) => {
                self.split(&mut self.rooms.write(), room);
                return false;
            }
            None => {}
        }
        let mut map = self.rooms.write();
        let mut created = false;
        // A new room has one part: most rooms stay small (a user's own room), and a part per
        // worker in each would cost every socket memory for nothing.
        let r = map.entry(room.clone()).or_insert_with(|| {
            created = true;
            Arc::new(Room::new(1))
        });
        if r.add(conn) {
            self.split(&mut map, room);
        }
        created
    }

    /// Replaces a one-part room that reached `SPLIT_AT` members with one of a part per worker.
    /// Under the map's write lock no join or leave runs (both hold the map's lock while they
    /// change a part); a fan-out still holding the old room delivers to the members it had,
    /// as a fan-out that started before the last join would.
    fn split(&self, map: &mut HashMap<Arc<str>, Arc<Room>>, room: &str) {
        if self.parts == 1 {
            return;
        }
        let Some(old) = map.get(room).filter(|r| r.parts() == 1) else { return };
        let new = Room::new(self.parts);
        old.for_each(|c| {
            new.part_of(c.key).write().insert(c);
        });
        map.insert(Arc::from(room), Arc::new(new));
    }

    /// Removes the socket with `key` from `room`, dropping the room when it empties; true when
    /// this removed the room.
    pub(crate) fn remove(&self, room: &str, key: u64) -> bool {
        let emptied = {
            let map = self.rooms.read();
            let Some(r) = map.get(room) else { return false };
            r.part_of(key).write().remove(key);
            // The part's lock is released first: never two parts' locks at once.
            r.is_empty()
        };
        if emptied {
            let mut map = self.rooms.write();
            if map.get(room).is_some_and(|r| r.is_empty()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(key: u64) -> Arc<Conn> {
        let remote = "127.0.0.1:1".parse().unwrap();
        Arc::new(Conn::new(key, Arc::from(format!("i-{key:x}")), Arc::from("/"), remote, None, 1 << 20, 0))
    }

    #[test]
    fn a_room_splits_into_a_part_per_worker_once_large_and_loses_no_one() {
        let reg = RoomRegistry::new(4);
        let big: Arc<str> = Arc::from("collection:posts");
        let small: Arc<str> = Arc::from("user:users:1");
        let conns: Vec<_> = (1..=SPLIT_AT as u64 + 50).map(conn).collect();
        assert!(reg.insert(&big, &conns[0]));
        assert!(reg.insert(&small, &conns[0]));
        for c in &conns[1..] {
            assert!(!reg.insert(&big, c));
        }
        let r = reg.get(&big).unwrap();
        assert_eq!((r.parts(), r.len()), (4, conns.len()));
        let mut seen: Vec<u64> = r.members().iter().map(|c| c.key).collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=conns.len() as u64).collect::<Vec<_>>());
        let in_parts: usize = (0..4).map(|i| r.members_in(i).len()).sum();
        assert_eq!(in_parts, conns.len());
        assert_eq!(reg.get(&small).unwrap().parts(), 1, "a small room keeps one part");
        for c in &conns[..conns.len() - 1] {
            assert!(!reg.remove(&big, c.key));
        }
        assert!(reg.remove(&big, conns.last().unwrap().key), "the last leave removes the room");
        assert!(reg.get(&big).is_none());
    }
}
