//! Delivering collection events: the frame built once in the configured format, each recipient
//! once across the event's rooms, and, for a collection the app authorizes, one `authorize` call
//! per event with the distinct users among the recipients (one frame per view it answers).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use crate::audience::Audience;
use crate::backplane::Remote;
use crate::config::EventFormat;
use crate::cork::Cork;
use crate::event::Event;
use crate::frame;
use crate::hooks::EventInfo;
use crate::hub::Hub;
use crate::protocol::{self, Operation};
use crate::socket::Conn;
use crate::socketio_framing::FanFrame;

impl Hub {
    /// An event's frame in the configured `event_format`.
    pub(crate) fn event_frame(
        &self,
        op: Operation,
        collection: &str,
        id_json: &str,
        doc_json: &[u8],
    ) -> Bytes {
        match self.config.event_format {
            EventFormat::Native => protocol::event_frame(op, collection, id_json, doc_json),
            EventFormat::UwebsocketPlugin => {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                protocol::uws_plugin_event_frame(op, collection, id_json, doc_json, ts)
            }
        }
    }

    pub(crate) async fn emit(self: &Arc<Self>, ev: Event, cork: &mut Cork) {
        self.stats.events_emitted.fetch_add(1, Relaxed);
        let frame = self.event_frame(ev.operation, &ev.collection, &ev.id_json, &ev.doc_json);
        let names = ev.rooms();
        if self.distributed() {
            for (i, room) in names.iter().enumerate().take(255) {
                let msg = Remote::Event {
                    operation: ev.operation,
                    collection: ev.collection.clone(),
                    id_json: ev.id_json.clone(),
                    rooms: names.clone(),
                    index: i as u8,
                    frame: frame.clone(),
                };
                self.backplane().publish_room(room, &self.instance, &msg);
            }
        }
        let info = EventInfo {
            collection: Arc::from(ev.collection.as_str()),
            operation: ev.operation,
            id_json: Arc::from(ev.id_json.as_str()),
            json: frame::payload_of(&frame),
        };
        self.deliver_event(&info, &names, None, frame, cork).await;
    }

    /// Delivers an event frame to the members of `rooms` (each socket once), or, for a copy
    /// from another instance, to the members of `rooms[i]` that are in none of `rooms[..i]`
    /// (those get the copy published on that earlier room).
    pub(crate) async fn deliver_event(
        self: &Arc<Self>,
        info: &EventInfo,
        rooms: &[String],
        only: Option<usize>,
        frame: Bytes,
        cork: &mut Cork,
    ) {
        if self.hooks.authorizes(&info.collection) {
            // The cache key: the rooms that have members (each event names its own doc room).
            let upto = only.map_or(rooms.len(), |i| i + 1);
            let present: Vec<String> =
                rooms[..upto].iter().filter(|r| self.rooms.get(r).is_some()).cloned().collect();
            if present.is_empty() || only.is_some_and(|i| present.last() != Some(&rooms[i])) {
                return;
            }
            let audience = self.audience.get(present, only.is_some(), || self.recipients(rooms, only));
            if !audience.recipients.is_empty() {
                self.settle(cork, false).await;
                self.deliver_authorized(info, &audience, frame, cork).await;
            }
            return;
        }
        if only.is_none() {
            let present: Vec<_> = rooms.iter().filter_map(|r| self.rooms.get(r)).collect();
            if present.len() == 1 {
                let room = present.into_iter().next().expect("one room");
                self.deliver_room(room, frame, None, cork).await;
                return;
            }
        }
        self.settle(cork, false).await;
        let (mut n, len, frame) = (0u64, frame.len(), FanFrame::new(frame));
        for c in &self.recipients(rooms, only) {
            n += u64::from(self.push_held(c, &frame, cork.group_of(c.key)));
        }
        self.count_fanout(n, len);
    }

    /// Each socket in `rooms` once; with `only`, see `deliver_event`.
    fn recipients(&self, rooms: &[String], only: Option<usize>) -> Vec<Arc<Conn>> {
        let mut recipients: HashMap<u64, Arc<Conn>> = HashMap::new();
        match only {
            Some(i) => {
                let Some(r) = self.rooms.get(&rooms[i]) else { return Vec::new() };
                let earlier = &rooms[..i];
                // Members first, then each socket's rooms, never both locks at once: a join holds
                // its socket's rooms while it takes the room's write lock, so reading a socket's
                // rooms under the room's read lock deadlocked against a concurrent join (found by
                // the soak: a remote event of an authorized collection while sockets joined it).
                for c in r.members() {
                    let seen_earlier = {
                        let mine = c.rooms.lock();
                        earlier.iter().any(|e| mine.contains(e.as_str()))
                    };
                    if !seen_earlier {
                        recipients.insert(c.key, c);
                    }
                }
            }
            None => {
                for r in rooms.iter().filter_map(|r| self.rooms.get(r)) {
                    r.for_each(|c| {
                        recipients.entry(c.key).or_insert_with(|| c.clone());
                    });
                }
            }
        }
        recipients.into_values().collect()
    }

    /// Asks the app once about the distinct users of `audience` and delivers to the sockets of
    /// the users it allows, each the view of the document it was given (one frame per view);
    /// fails closed (a malformed, failed or late answer allows no one).
    async fn deliver_authorized(&self, info: &EventInfo, audience: &Audience, frame: Bytes, cork: &mut Cork) {
        let n_users = audience.users.users.len();
        let verdicts = match tokio::time::timeout(
            self.config.hook_timeout,
            self.hooks.authorize(info, audience.users.clone()),
        )
        .await
        {
            Ok(v) if v.fits(n_users) => v,
            Ok(_) => {
                self.stats.handler_errors.fetch_add(1, Relaxed);
                vec![false; n_users].into()
            }
            Err(_) => {
                self.stats.handler_timeouts.fetch_add(1, Relaxed);
                vec![false; n_users].into()
            }
        };
        // Index 0 is unused (withheld), 1 the frame as emitted, k ≥ 2 the view docs[k - 2].
        let mut frames: Vec<FanFrame> = Vec::with_capacity(2 + verdicts.docs.len());
        frames.push(FanFrame::new(Bytes::new()));
        frames.push(FanFrame::new(frame));
        for doc in &verdicts.docs {
            frames.push(FanFrame::new(self.event_frame(
                info.operation,
                &info.collection,
                &info.id_json,
                doc,
            )));
        }
        let mut sent = vec![0u64; frames.len()];
        let mut skipped = 0u64;
        for (c, &u) in audience.recipients.iter().zip(&audience.user_of) {
            match verdicts.per_user[u as usize] as usize {
                0 => skipped += 1,
                k => sent[k] += u64::from(self.push_held(c, &frames[k], cork.group_of(c.key))),
            }
        }
        for (n, f) in sent.iter().zip(&frames) {
            self.count_fanout(*n, f.frame().len());
        }
        self.stats.unauthorized_skips.fetch_add(skipped, Relaxed);
    }
}
