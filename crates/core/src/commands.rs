//! Running one fan-out command, and delivering what another instance published (nothing is
//! published again).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::backplane::Remote;
use crate::cork::Cork;
use crate::dispatch::Command;
use crate::frame;
use crate::hooks::EventInfo;
use crate::hub::Hub;

impl Hub {
    /// Runs one fan-out command (on the dispatcher task or a lane), holding its frames in the
    /// pass's `cork`.
    pub(crate) async fn run_command(self: &Arc<Self>, cmd: Command, cork: &mut Cork) {
        match cmd {
            Command::Broadcast { room, frame, except } => {
                self.publish_broadcast(&room, &frame, except.as_deref());
                let except = except.and_then(|id| self.key_of(&id));
                self.broadcast_spread(&room, frame, except, cork).await;
            }
            Command::Send { socket_id, frame } => {
                // After what the pass gave the rooms so far (the socket may be in them).
                self.settle(cork, false).await;
                self.send_anywhere(&socket_id, frame);
            }
            Command::Emit(ev) => self.emit(ev, cork).await,
            Command::Remote(msg) => self.on_remote(msg, cork).await,
        }
    }

    /// Delivers what another instance published; nothing is published again.
    async fn on_remote(self: &Arc<Self>, msg: Remote, cork: &mut Cork) {
        match msg {
            Remote::Room { room, except, frame } => {
                let except = except.and_then(|id| self.key_of(&id));
                self.broadcast_spread(&room, frame, except, cork).await;
            }
            Remote::Event { operation, collection, id_json, rooms, index, frame } => {
                let info = EventInfo {
                    collection: Arc::from(collection.as_str()),
                    operation,
                    id_json: Arc::from(id_json.as_str()),
                    json: frame::payload_of(&frame),
                };
                self.deliver_event(&info, &rooms, Some(usize::from(index)), frame, cork).await;
            }
            Remote::Socket { socket_id, frame } => {
                self.settle(cork, false).await;
                if let Some(c) = self.conn(&socket_id) {
                    if self.deliver(&c, frame) {
                        self.stats.deliveries.fetch_add(1, Relaxed);
                    }
                }
            }
            other => {
                // A close frame comes after what the pass gave the socket so far.
                self.settle(cork, false).await;
                self.disconnect_local(&other);
            }
        }
    }
}
