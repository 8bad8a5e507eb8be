//! A socket's outbound side: its write half, and a queue for what the kernel would not take yet.
//!
//! A producer (a reply, a single send) writes a frame straight to the socket when nothing is
//! waiting before it (one `send`, no queue, no task wake-up). A fan-out pass gives a socket all
//! its frames for a room at once (`put`): written straight away when they are the pass's last,
//! else held in the queue and written once at the pass's end (`flush`: one vectored write per
//! socket per pass, however many commands the pass ran). Only what the
//! kernel refuses stays queued, bounded in bytes, for the socket's writer task, which drains it
//! once the socket is writable again. Order holds because bytes are written only from the
//! queue's head, and only while nothing older is in the writer's hands (checked under the
//! queue's lock, which also serializes the direct writes).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use bytes::Bytes;
use parking_lot::Mutex;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::tcp::OwnedWriteHalf;

use crate::wake::WakeSlot;

/// Most frames handed to one `writev` call.
const MAX_IOV: usize = 64;

/// One non-blocking `sendmsg` of `bufs`, through tokio's readiness (a `WouldBlock` clears it, so
/// `writable()` then waits for the kernel). `sendmsg` rather than `writev`: a socket call skips
/// the VFS layer (`vfs_writev`, `fdget_pos`: ~6 % of a fan-out's CPU in a profile).
/// A peer gone is an error to handle, never a SIGPIPE (Linux; elsewhere the embedder ignores it,
/// as Node does).
fn send(sock: &OwnedWriteHalf, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    let stream = sock.as_ref();
    stream.try_io(Interest::WRITABLE, || SockRef::from(stream).send_vectored_with_flags(bufs, FLAGS))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const FLAGS: std::ffi::c_int = 0;

/// `send` by a producer holding the queue's lock (a direct write, a pass's flush): straight to
/// the descriptor kept in the queue, past tokio's readiness state, a separate allocation per
/// socket and so one more cache miss per send (5.5 % of the server's CPU at 10,000 fast
/// readers). Producers write only while the writer waits for the queue, never for the socket,
/// and a refusal is still handed to the writer, whose own `send` then clears the readiness.
fn send_locked(q: &Queue, sock: &OwnedWriteHalf, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    #[cfg(unix)]
    if q.fd >= 0 {
        // SAFETY: `fd` is `sock`'s, open as long as the `Outbound` that holds both.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(q.fd) };
        return SockRef::from(&fd).send_vectored_with_flags(bufs, FLAGS);
    }
    #[cfg(not(unix))]
    let _ = q;
    send(sock, bufs)
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Written, or queued for the writer.
    Queued,
    /// The socket is closing; the frame was dropped.
    Closed,
    /// The frame would exceed `maxBackpressure`; nothing was queued.
    Overflow,
}

struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames` (what is not in the writer's hands).
    bytes: usize,
    /// `frames[0]` is the rest of a frame already partly on the wire: never discarded, or the
    /// stream would break mid-frame.
    head_partial: bool,
    /// Close frame to write after `frames` (None with `closed` = just stop).
    close: Option<Bytes>,
    closed: bool,
    /// Drop whatever has not been written yet (slow consumer, dead peer).
    discard: bool,
    /// The attached socket's descriptor (-1: none yet), for `send_locked`.
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
}

/// The queue shared by producers (fan-out, replies) and the writer.
pub(crate) struct Outbound {
    queue: Mutex<Queue>,
    /// Bytes pushed and not yet written (the writer's batch included).
    queued: AtomicUsize,
    max: usize,
    /// The socket's write half, once attached (absent: everything is queued).
    sock: OnceLock<OwnedWriteHalf>,
    /// Wakes the socket's task (its waiting keeps nothing in the task's future).
    pub(crate) notify: WakeSlot,
}

impl Outbound {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                head_partial: false,
                close: None,
                closed: false,
                discard: false,
                #[cfg(unix)]
                fd: -1,
            }),
            queued: AtomicUsize::new(0),
            max,
            sock: OnceLock::new(),
            notify: WakeSlot::default(),
        }
    }

    /// Gives the queue the socket to write to directly (once, before it is shared).
    pub(crate) fn attach(&self, sock: OwnedWriteHalf) {
        #[cfg(unix)]
        let fd = std::os::fd::AsRawFd::as_raw_fd(sock.as_ref());
        if self.sock.set(sock).is_ok() {
            #[cfg(unix)]
            {
                self.queue.lock().fd = fd;
            }
        }
    }

    /// The socket's write half, for the writer task.
    pub(crate) fn sock(&self) -> Option<&OwnedWriteHalf> {
        self.sock.get()
    }

    /// Writes a frame now if nothing waits before it, else queues it (unless that would exceed
    /// the byte bound); the writer is woken only when something was queued.
    pub(crate) fn push(&self, frame: Bytes) -> Push {
        match self.put(std::slice::from_ref(&frame), None, true) {
            Ok(_) => Push::Queued,
            Err(p) => p,
        }
    }

    /// Gives the socket a pass's frames (whole frames, in order; `joined`: the same bytes in
    /// one buffer, sent as one iovec). `write`: sends them now when nothing waits before them
    /// (one vectored send; what the kernel refuses is queued for the writer, the frame it cut
    /// marked as such). Otherwise they are queued without writing or waking the writer, and
    /// `Ok(true)` says the queue was empty, so the pass must remember this socket and `flush`
    /// it at its end (one write per socket per pass).
    pub(crate) fn put(&self, frames: &[Bytes], joined: Option<&Bytes>, write: bool) -> Result<bool, Push> {
        let len: usize = frames.iter().map(Bytes::len).sum();
        let mut q = self.queue.lock();
        if q.closed {
            return Err(Push::Closed);
        }
        let queued = self.queued.load(Relaxed);
        if queued + len > self.max {
            return Err(Push::Overflow);
        }
        let mut written = 0;
        if write && queued == 0 {
            if let Some(sock) = self.sock.get() {
                let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let n = match joined {
                    Some(all) => {
                        slices[0] = IoSlice::new(all);
                        1
                    }
                    None => {
                        for (slot, f) in slices.iter_mut().zip(frames) {
                            *slot = IoSlice::new(f);
                        }
                        frames.len().min(MAX_IOV)
                    }
                };
                // Refused or broken: all of it is queued (the writer sees an error and ends the socket).
                written = send_locked(&q, sock, &slices[..n]).unwrap_or(0);
                if written == len {
                    return Ok(false);
                }
            }
        }
        let was_empty = q.frames.is_empty();
        let mut skip = written;
        for f in frames {
            if skip >= f.len() {
                skip -= f.len();
                continue;
            }
            if skip > 0 {
                // The rest of a frame partly on the wire: first in the queue, never discarded.
                q.frames.push_back(f.slice(skip..));
                q.head_partial = true;
                skip = 0;
            } else {
                q.frames.push_back(f.clone());
            }
        }
        let rest = len - written;
        self.queued.fetch_add(rest, Relaxed);
        q.bytes += rest;
        drop(q);
        if !write {
            return Ok(was_empty);
        }
        if was_empty {
            self.notify.notify_one();
        }
        Ok(false)
    }

    /// Writes what passes held (vectored, as much as the kernel takes now) unless the writer
    /// still has bytes of its own to write first; whatever is left goes to the writer.
    pub(crate) fn flush(&self) {
        let mut q = self.queue.lock();
        let Some(sock) = self.sock.get() else { return };
        // The writer's batch (older bytes) goes first; a closing socket is the writer's.
        if q.frames.is_empty() || q.closed || self.queued.load(Relaxed) != q.bytes {
            let wake = !q.frames.is_empty();
            drop(q);
            if wake {
                self.notify.notify_one();
            }
            return;
        }
        while !q.frames.is_empty() {
            let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let n = q.frames.len().min(MAX_IOV);
            for (slot, f) in slices.iter_mut().zip(q.frames.iter()) {
                *slot = IoSlice::new(f);
            }
            let want: usize = slices[..n].iter().map(|s| s.len()).sum();
            let written = match send_locked(&q, sock, &slices[..n]) {
                Ok(w) => w,
                // Refused (or broken: the writer sees the error and ends the socket).
                Err(_) => break,
            };
            self.queued.fetch_sub(written, Relaxed);
            q.bytes -= written;
            let mut left = written;
            while left > 0 {
                let head = q.frames.front_mut().expect("written bytes come from queued frames");
                if left >= head.len() {
                    left -= head.len();
                    q.frames.pop_front();
                    q.head_partial = false;
                } else {
                    // The rest of a frame partly on the wire stays whole at the head.
                    *head = head.slice(left..);
                    q.head_partial = true;
                    left = 0;
                }
            }
            if written < want {
                break;
            }
        }
        let wake = !q.frames.is_empty();
        drop(q);
        if wake {
            self.notify.notify_one();
        }
    }

    /// Starts closing: `close_frame` is written after the queued frames (or right after the frame
    /// being written, when `discard`). Returns false when the socket was already closing, so a
    /// socket never sends two close frames.
    pub(crate) fn close(&self, close_frame: Option<Bytes>, discard: bool) -> bool {
        let mut q = self.queue.lock();
        if q.closed {
            if discard && !q.discard {
                q.discard = true;
                drop(q);
                self.notify.notify_one();
            }
            return false;
        }
        q.closed = true;
        q.discard = discard;
        if discard {
            let keep = usize::from(q.head_partial).min(q.frames.len());
            let dropped: usize = q.frames.drain(keep..).map(|f| f.len()).sum();
            self.queued.fetch_sub(dropped, Relaxed);
            q.bytes -= dropped;
        }
        if let Some(f) = &close_frame {
            self.queued.fetch_add(f.len(), Relaxed);
        }
        q.close = close_frame;
        drop(q);
        self.notify.notify_one();
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }
}

/// The writer's side: frames taken from the queue and how far the first one is written.
pub(crate) struct Batch {
    frames: VecDeque<Bytes>,
    head_written: usize,
    /// `frames[0]` continues a frame already partly on the wire (see `Queue::head_partial`).
    head_partial: bool,
    /// The close frame is part of this batch: after it, stop.
    pub(crate) ends: bool,
    /// The queue was closed at the last refill (the socket is closing).
    pub(crate) closing: bool,
}

/// What the writer should do next.
pub(crate) enum Next {
    Write,
    /// Nothing queued; wait for a push or a timer.
    Wait,
    /// Closed and everything written (or discarded): stop writing.
    Done,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self { frames: VecDeque::new(), head_written: 0, head_partial: false, ends: false, closing: false }
    }

    /// Refills from the queue when empty; applies a pending discard.
    pub(crate) fn refill(&mut self, out: &Outbound) -> Next {
        let mut q = out.queue.lock();
        self.closing = q.closed;
        if q.discard && !self.ends {
            // Keep only the frame already partly on the wire, so the stream stays well-formed.
            let keep = usize::from(self.head_written > 0 || self.head_partial).min(self.frames.len());
            let dropped: usize = self.frames.drain(keep..).map(|f| f.len()).sum();
            out.queued.fetch_sub(dropped, Relaxed);
            let qkeep = usize::from(self.frames.is_empty() && q.head_partial).min(q.frames.len());
            let qd: usize = q.frames.drain(qkeep..).map(|f| f.len()).sum();
            out.queued.fetch_sub(qd, Relaxed);
            q.bytes -= qd;
        }
        if self.frames.is_empty() && !self.ends {
            std::mem::swap(&mut self.frames, &mut q.frames);
            self.head_partial = std::mem::take(&mut q.head_partial);
            q.bytes = 0;
        }
        if q.closed && q.frames.is_empty() && !self.ends {
            if let Some(c) = q.close.take() {
                self.frames.push_back(c);
            }
            self.ends = true;
        }
        if !self.frames.is_empty() {
            Next::Write
        } else if self.ends {
            Next::Done
        } else {
            Next::Wait
        }
    }

    /// Writes as much as one vectored write takes now; returns bytes written (0 = peer gone).
    /// The iovec array lives only inside this call, not in the socket's future, so an idle
    /// socket does not carry it.
    pub(crate) fn try_write(&self, sock: &OwnedWriteHalf) -> std::io::Result<usize> {
        let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (i, f) in self.frames.iter().take(MAX_IOV).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &f[self.head_written..] } else { &f[..] });
            n += 1;
        }
        send(sock, &slices[..n])
    }

    /// Accounts `written` bytes; returns whether the batch (and, if `ends`, the socket) is done.
    pub(crate) fn advance(&mut self, out: &Outbound, mut written: usize) -> bool {
        out.queued.fetch_sub(written, Relaxed);
        while written > 0 {
            let Some(head) = self.frames.front() else { break };
            let left = head.len() - self.head_written;
            if written >= left {
                written -= left;
                self.frames.pop_front();
                self.head_written = 0;
                self.head_partial = false;
            } else {
                self.head_written += written;
                written = 0;
            }
        }
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// An outbound side attached to a real loopback connection, and the peer's end.
    async fn pair(max: usize) -> (Outbound, tokio::net::tcp::OwnedReadHalf, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (r, w) = server.into_split();
        w.writable().await.unwrap(); // what an accepted socket's reactor has long since seen
        let out = Outbound::new(max);
        out.attach(w);
        (out, r, peer)
    }

    /// The whole frames in `bytes` (opcode, payload length), and whether any bytes were left over.
    fn frames_in(mut bytes: &[u8]) -> (Vec<(u8, usize)>, bool) {
        let mut out = Vec::new();
        while bytes.len() >= 2 {
            let (len, head) = match bytes[1] & 0x7f {
                126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 if bytes.len() >= 10 => {
                    (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10)
                }
                n if n < 126 => (n as usize, 2),
                _ => break,
            };
            if bytes.len() < head + len {
                break;
            }
            out.push((bytes[0] & 0x0f, len));
            bytes = &bytes[head + len..];
        }
        (out, !bytes.is_empty())
    }

    /// Drains `out` as the writer task does while the peer reads everything; returns what the
    /// peer got.
    async fn drain(out: &Outbound, mut peer: TcpStream) -> Vec<u8> {
        let sock = out.sock().unwrap();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut all)).await;
            all
        });
        let mut batch = Batch::new();
        loop {
            match batch.refill(out) {
                Next::Done => break,
                Next::Wait => unreachable!("closed: a close frame is always queued"),
                Next::Write => match batch.try_write(sock) {
                    Ok(n) => {
                        batch.advance(out, n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.writable().await.unwrap(),
                    Err(e) => panic!("{e}"),
                },
            }
        }
        socket2::SockRef::from(sock.as_ref()).shutdown(std::net::Shutdown::Write).unwrap();
        reader.await.unwrap()
    }

    /// A pass's frames given in one buffer (`put` with `joined`, written at once): what the
    /// kernel refuses is queued frame by frame, so a discarding close drops whole frames and
    /// cuts none. (Queued as one piece, the rest of the buffer would all have been kept.)
    #[tokio::test]
    async fn a_joined_put_queues_what_is_refused_frame_by_frame() {
        let (out, _r, peer) = pair(64 << 20).await;
        let f = crate::frame::binary(&vec![7u8; 40_001]);
        let joined = Bytes::from([&f[..], &f[..], &f[..], &f[..]].concat());
        let frames: Vec<Bytes> = (0..4).map(|i| joined.slice(i * f.len()..(i + 1) * f.len())).collect();
        let mut puts = 0;
        while out.queued.load(Relaxed) == 0 {
            assert_eq!(out.put(&frames, Some(&joined), true), Ok(false));
            puts += 1;
            assert!(puts < 100_000, "the kernel never refused");
        }
        for _ in 0..3 {
            assert_eq!(out.put(&frames, Some(&joined), true), Ok(false));
        }
        assert!(out.queue.lock().frames.len() > 4 * 3, "queued per frame");
        let got = close_and_drain_whole_frames(&out, peer, 40_001).await;
        assert!(got.len() - 1 <= 4 * puts, "at most the frame cut on the wire is kept: {}", got.len());
        assert_eq!(out.queued.load(Relaxed), 0);
    }

    /// Closes `out` discarding (slow consumer) and reads everything `peer` gets: whole frames
    /// of `len` bytes, then the close frame, never a frame cut on the wire. Returns the frames.
    async fn close_and_drain_whole_frames(out: &Outbound, peer: TcpStream, len: usize) -> Vec<(u8, usize)> {
        let close = crate::frame::close(1013, "slow consumer");
        assert!(out.close(Some(close.clone()), true));
        let (got, leftover) = frames_in(&drain(out, peer).await);
        assert!(!leftover, "a frame was cut");
        assert_eq!(got.last(), Some(&(0x8, close.len() - 2)), "ends with the close frame");
        assert!(got[..got.len() - 1].iter().all(|&(op, l)| op == 0x2 && l == len));
        got
    }

    #[tokio::test]
    async fn a_frame_for_a_writable_socket_is_sent_without_queueing() {
        let (out, _r, mut peer) = pair(1 << 20).await;
        let f = crate::frame::text(b"{\"type\":\"x\"}");
        assert_eq!(out.push(f.clone()), Push::Queued);
        assert_eq!(out.queued.load(Relaxed), 0, "nothing left for the writer");
        assert!(out.queue.lock().frames.is_empty());
        let mut got = vec![0u8; f.len()];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, f);
    }

    /// A peer that stops reading: what the kernel refuses is queued, and a discarding close
    /// (slow consumer) still leaves a stream of whole frames ending with the close frame, even
    /// when the kernel took only part of a frame.
    #[tokio::test]
    async fn a_discarding_close_never_cuts_a_frame() {
        let (out, _r, peer) = pair(64 << 20).await;
        // Odd-sized frames make a partial write at the kernel's limit all but certain.
        let f = crate::frame::binary(&vec![7u8; 40_001]);
        let mut pushed = 0;
        while out.queued.load(Relaxed) == 0 {
            assert_eq!(out.push(f.clone()), Push::Queued);
            pushed += 1;
            assert!(pushed < 100_000, "the kernel never refused");
        }
        for _ in 0..3 {
            out.push(f.clone());
        }
        let got = close_and_drain_whole_frames(&out, peer, 40_001).await;
        assert!(got.len() - 1 < pushed + 3, "the queued frames were discarded");
        assert_eq!(out.queued.load(Relaxed), 0);
    }
}
