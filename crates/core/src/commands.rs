//! Running one fan-out command, and delivering what another instance published (nothing is
//! published again).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::backplane::Remote;
use crate::dispatch::Command;
use crate::frame;
use crate::hooks::EventInfo;
use crate::hub::Hub;

impl Hub {
    /// Runs one fan-out command (on the dispatcher task or a lane).
    pub(crate) async fn run_command(self: &Arc<Self>, cmd: Command) {
        match cmd {
            Command::Broadcast { room, frame, except } => {
                self.broadcast_everywhere(&room, frame, except.as_deref());
            }
            Command::Send { socket_id, frame } => self.send_anywhere(&socket_id, frame),
            Command::Emit(ev) => self.emit(ev).await,
            Command::Remote(msg) => self.on_remote(msg).await,
        }
    }

    /// Delivers what another instance published; nothing is published again.
    async fn on_remote(&self, msg: Remote) {
        match msg {
            Remote::Room { room, except, frame } => {
                self.broadcast(&room, frame, except.and_then(|id| self.key_of(&id)));
            }
            Remote::Event { operation, collection, id_json, rooms, index, frame } => {
                let info = EventInfo {
                    collection: Arc::from(collection.as_str()),
                    operation,
                    id_json: Arc::from(id_json.as_str()),
                    json: frame::payload_of(&frame),
                };
                self.deliver_event(&info, &rooms, Some(usize::from(index)), frame).await;
            }
            Remote::Socket { socket_id, frame } => {
                if let Some(c) = self.conn(&socket_id) {
                    if self.deliver(&c, frame) {
                        self.stats.deliveries.fetch_add(1, Relaxed);
                    }
                }
            }
            other => {
                self.disconnect_local(&other);
            }
        }
    }
}
