//! A create/update/delete the app asks to deliver, and the rooms it goes to.

use bytes::Bytes;

use crate::protocol::{self, Operation};

/// A create/update/delete to deliver.
#[derive(Debug, Clone)]
pub struct Event {
    /// Collection slug.
    pub collection: String,
    /// Doc id as JSON (`42` or `"abc"`).
    pub id_json: String,
    pub operation: Operation,
    /// The doc as JSON text.
    pub doc_json: Bytes,
    /// Rooms to deliver to besides `collection:<slug>` and `doc:<slug>:<id>`.
    pub extra_rooms: Vec<String>,
}

impl Event {
    /// The rooms it goes to: `collection:<slug>`, `doc:<slug>:<id>`, then the valid extra rooms.
    pub(crate) fn rooms(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(2 + self.extra_rooms.len());
        names.push(format!("collection:{}", self.collection));
        names.push(format!("doc:{}:{}", self.collection, self.id_text()));
        names.extend(self.extra_rooms.iter().filter(|r| protocol::valid_room(r)).cloned());
        names
    }

    /// The id as text for room names.
    fn id_text(&self) -> String {
        if self.id_json.starts_with('"') {
            serde_json::from_str::<String>(&self.id_json).unwrap_or_default()
        } else {
            self.id_json.clone()
        }
    }
}
