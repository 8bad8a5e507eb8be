//! Who an authorized event goes to: its recipients and their distinct users. The last answer is
//! kept while no room membership and no socket's claims change, so a stream of events to an
//! unchanged 10,000-member room neither regathers the recipients nor hands the app the same
//! users again (the embedder sees the same `UserList::id` and may reuse what it derived).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::auth::UserClaims;
use crate::socket::Conn;

/// The distinct users among an event's recipients, in a stable order. Two lists with the same
/// `id` are the same users in the same order with the same claims.
#[derive(Debug)]
pub struct UserList {
    pub id: u64,
    /// `None`: anonymous recipients (one entry for all of them).
    pub users: Vec<Option<Arc<UserClaims>>>,
}

/// An authorized event's recipients, each with the index of its user in `users`.
pub(crate) struct Audience {
    epoch: u64,
    /// The rooms that had members (a doc room usually has none), and whether the last one is
    /// the only one delivered to (see `Hub::deliver_event`).
    rooms: Vec<String>,
    only_last: bool,
    pub recipients: Vec<Arc<Conn>>,
    pub user_of: Vec<u32>,
    pub users: Arc<UserList>,
}

/// The last audience built, valid while `epoch` is unchanged.
#[derive(Default)]
pub(crate) struct AudienceCache {
    epoch: AtomicU64,
    next_id: AtomicU64,
    last: Mutex<Option<Arc<Audience>>>,
}

impl AudienceCache {
    /// Something that decides who receives an event changed: a join, a leave, new claims.
    /// Called after the change is visible, so a builder that read the old epoch stores an
    /// entry that is already stale.
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// The audience of an event to the members of `rooms` (the rooms that have members;
    /// `only_last`: see `Hub::deliver_event`), from the cache or built from `gather`'s recipients.
    pub(crate) fn get(
        &self,
        rooms: Vec<String>,
        only_last: bool,
        gather: impl FnOnce() -> Vec<Arc<Conn>>,
    ) -> Arc<Audience> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(a) = self.last.lock().as_ref() {
            if a.epoch == epoch && a.only_last == only_last && a.rooms == rooms {
                return a.clone();
            }
        }
        let recipients = gather();
        let mut index: HashMap<Option<(&str, &str)>, u32> = HashMap::new();
        let mut users = Vec::new();
        let mut user_of = Vec::with_capacity(recipients.len());
        let claims: Vec<Option<Arc<UserClaims>>> = recipients.iter().map(|c| c.user()).collect();
        for u in &claims {
            let key = u.as_deref().map(|u| (u.collection.as_str(), u.id.as_str()));
            let i = *index.entry(key).or_insert_with(|| {
                users.push(u.clone());
                (users.len() - 1) as u32
            });
            user_of.push(i);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let a = Arc::new(Audience {
            epoch,
            rooms,
            only_last,
            recipients,
            user_of,
            users: Arc::new(UserList { id, users }),
        });
        *self.last.lock() = Some(a.clone());
        a
    }
}
