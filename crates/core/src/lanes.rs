//! Running fan-out commands in order per room (see `dispatch` for the queue and its bounds).
//! A command that needs no JS runs at once on the dispatcher task, unless an earlier command
//! for one of its rooms still waits; an event that needs the app's `authorize` goes to its
//! collection's lane, a task of its own, and later commands for the rooms it holds queue behind
//! it in that lane.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::cork::Cork;
use crate::dispatch::{rooms_of, Command, Queued};
use crate::hub::Hub;

/// Most commands one pass of the dispatcher runs before it writes what they held: enough to
/// batch a burst, few enough that the first command's frames do not wait long (and a run of
/// them for one room fits one vectored write: `RUN_MAX`).
const PASS_MAX: usize = crate::cork::RUN_MAX;

/// The dispatcher task: runs what can run now, hands the rest to lanes.
pub(crate) async fn run(hub: Arc<Hub>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let _up = crate::supervise::Required {
        stats: &hub.stats,
        name: "fan-out dispatcher",
        stopping: &hub.shutting_down,
    };
    while let Some(first) = rx.recv().await {
        // Woken by the first command a flush sends (`ServerHandle::holding`: one JS task's
        // fan-out calls), this thread may have preempted the flushing thread on a shared core,
        // or run beside it: wait until the flush is over (it holds the held-commands lock while
        // it sends), so the pass carries the whole burst, one write per socket for all of it.
        // (A `sched_yield` here did it on one core only, and not always: 1,000 and 10,000 fast
        // readers got 14-15.9 of 16 deliveries per read with it, 16.0 with this.)
        hub.dispatch.wait_for_flush();
        // One pass: this command and those already waiting (up to `PASS_MAX`), their frames
        // held and written once per socket at the end.
        let mut cork = Cork::new(hub.rooms.parts());
        let mut next = Some(first);
        let (mut ran, mut here, mut bytes) = (0, 0, 0);
        while let Some(cmd) = next.take() {
            if let Some(b) = dispatch_one(&hub, cmd, &mut cork).await {
                here += 1;
                bytes += b;
            }
            ran += 1;
            if ran < PASS_MAX {
                next = rx.try_recv().ok();
            }
        }
        crate::supervise::guarded(&hub.stats, "a fan-out pass", hub.finish(cork)).await;
        // Only now are the pass's frames in the sockets' queues: a shutdown that waits for no
        // command to be pending must find them there, ahead of its close frames.
        hub.dispatch.done(here, bytes);
    }
}

/// Runs `cmd` in the current pass (`Some`: the bytes it held, to release once the pass is
/// written), or hands it to the lane that must run it.
async fn dispatch_one(hub: &Arc<Hub>, cmd: Command, cork: &mut Cork) -> Option<usize> {
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
        Err(cmd) => return Some(run_one(hub, cmd, cork).await),
        Ok(Some(lane)) => {
            tokio::spawn(run_lane(hub.clone(), lane));
        }
        Ok(None) => {}
    }
    None
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
        let mut cork = Cork::new(hub.rooms.parts());
        let bytes = run_one(&hub, next.cmd, &mut cork).await;
        crate::supervise::guarded(&hub.stats, "a fan-out pass", hub.finish(cork)).await;
        hub.dispatch.done(1, bytes);
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

/// Runs one command into `cork`; returns the bytes it held (see `Dispatch::done`).
async fn run_one(hub: &Arc<Hub>, cmd: Command, cork: &mut Cork) -> usize {
    let bytes = cmd.bytes();
    crate::supervise::guarded(&hub.stats, "a fan-out command", hub.run_command(cmd, cork)).await;
    bytes
}
