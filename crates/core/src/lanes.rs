//! Running fan-out commands in order per room (see `dispatch` for the queue and its bounds).
//! A command that needs no JS runs at once on the dispatcher task, unless an earlier command
//! for one of its rooms still waits; an event that needs the app's `authorize` goes to its
//! collection's lane, a task of its own, and later commands for the rooms it holds queue behind
//! it in that lane.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::dispatch::{rooms_of, Command, Queued};
use crate::hub::Hub;

/// The dispatcher task: runs what can run now, hands the rest to lanes.
pub(crate) async fn run(hub: Arc<Hub>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let _up = crate::supervise::Required {
        stats: &hub.stats,
        name: "fan-out dispatcher",
        stopping: &hub.shutting_down,
    };
    while let Some(cmd) = rx.recv().await {
        let (rooms, js_lane) = rooms_of(hub.hooks.as_ref(), &cmd);
        let spawn = {
            let mut lanes = hub.dispatch.lanes.lock();
            let held = rooms.iter().find_map(|r| lanes.owners.get(r).map(|(l, _)| l.clone()));
            match held.or(js_lane) {
                None => Err(cmd),
                Some(lane) => {
                    for r in &rooms {
                        lanes.owners.entry(r.clone()).or_insert_with(|| (lane.clone(), 0)).1 += 1;
                    }
                    let fresh = !lanes.queues.contains_key(&lane);
                    lanes.queues.entry(lane.clone()).or_default().push_back(Queued { cmd, rooms });
                    Ok(fresh.then_some(lane))
                }
            }
        };
        match spawn {
            Err(cmd) => run_one(&hub, cmd).await,
            Ok(Some(lane)) => {
                tokio::spawn(run_lane(hub.clone(), lane));
            }
            Ok(None) => {}
        }
    }
}

/// One lane: its commands in order, then the lane is removed.
async fn run_lane(hub: Arc<Hub>, lane: Arc<str>) {
    loop {
        let next = {
            let mut lanes = hub.dispatch.lanes.lock();
            match lanes.queues.get_mut(&lane).and_then(VecDeque::pop_front) {
                Some(q) => q,
                None => {
                    lanes.queues.remove(&lane);
                    return;
                }
            }
        };
        run_one(&hub, next.cmd).await;
        let mut lanes = hub.dispatch.lanes.lock();
        for r in next.rooms {
            if let Some(o) = lanes.owners.get_mut(&r) {
                o.1 -= 1;
                if o.1 == 0 {
                    lanes.owners.remove(&r);
                }
            }
        }
    }
}

async fn run_one(hub: &Arc<Hub>, cmd: Command) {
    let bytes = cmd.bytes();
    crate::supervise::guarded(&hub.stats, "a fan-out command", hub.run_command(cmd)).await;
    hub.dispatch.done(bytes);
}
