//! What an idle socket costs the server: heap bytes per open, authenticated, idle connection,
//! counted by a global allocator (the server's threads only: the test's own clients run on the
//! test's thread and are subtracted).
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Arc;

use common::*;
use realtime_core::NoHooks;

/// Counts live heap bytes, in all and per thread.
struct Counting;

/// Live heap bytes of the whole process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Live-byte changes made by this thread (const-initialised, no destructor: usable inside
    /// the allocator).
    static MINE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    LIVE.fetch_add(delta, Relaxed);
    let _ = MINE.try_with(|m| m.set(m.get() + delta));
}

// SAFETY: every call forwards to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap the server holds: everything but what this (the clients') thread holds.
fn server_bytes() -> isize {
    LIVE.load(Relaxed) - MINE.with(Cell::get)
}

/// Per idle socket, in a debug build (release is smaller: its futures are). Measured here:
/// 4,543 B while the finished HTTP task stayed allocated through the stream's stale waker,
/// 3,515 B once the upgrade swaps that waker out, 3,215 B with the request's details boxed
/// out of the reader task and the Socket.IO session out of `Conn`; then 2,667 B with one task
/// per socket instead of a reader and a writer, 2,547 B with the input-budget account opened
/// only once a socket holds input, 2,403 B with short lists for a socket's rooms and a small
/// room's members, 2,275 B with wake-up slots instead of `Notify` waiters in the task's
/// future, 2,147 B with the task's guard borrowed and its deadlines folded, 2,019 B with one
/// poll over the task's waits instead of `select!` over futures. In the release addon under
/// Node (heaptrack, 10,000 idle sockets) that task is one 768-byte allocation where the two
/// tasks were 896 + 768. Then 1,858 B (1,986 before) with the task's timers in hub ms, its
/// write batch boxed on first use and its wait's captures by value: the future went from 664 to
/// 536 bytes, and the task's allocation (128-byte aligned) from 768 to 640. The budget leaves
/// ~4 % of headroom (and fails at the step before: 1,986 B).
const BUDGET: isize = 1_940;

/// Waits (bounded) until the server's heap stops changing: the handshake's tasks finish just
/// after the welcome is out.
async fn settle() {
    let _ = tokio::time::timeout(WAIT, async {
        loop {
            let a = server_bytes();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if server_bytes() == a {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_socket_holds_no_leftover_of_its_handshake() {
    let s = start(config(), Arc::new(NoHooks));
    let port = s.port();
    // First sockets pay for one-time allocations (per-thread buffers, maps' first growth).
    let mut clients = Vec::new();
    for id in 0..16 {
        let mut c = Client::connect_with(port, &format!("/?token={}", token(id, 3600)), &[]).await.unwrap();
        c.welcome().await;
        clients.push(c);
    }
    const N: usize = 256;
    settle().await;
    let before = server_bytes();
    for id in 16..16 + N as u64 {
        let mut c = Client::connect_with(port, &format!("/?token={}", token(id, 3600)), &[]).await.unwrap();
        c.welcome().await;
        clients.push(c);
    }
    settle().await;
    let per_socket = (server_bytes() - before) / N as isize;
    eprintln!("server heap per idle socket: {per_socket} B (budget {BUDGET} B)");
    assert!(per_socket <= BUDGET, "an idle socket holds {per_socket} B of server heap, over {BUDGET} B");
    drop(clients);
}
