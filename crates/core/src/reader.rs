//! Reads client frames (RFC 6455 §5) without holding a buffer while a socket is idle: bytes are
//! read into a per-thread buffer when the socket is readable and copied out only as far as a frame
//! is incomplete, so an idle socket owns no read buffer at all. (fastwebsockets' reader keeps
//! 8 KiB per socket for its whole life; we keep its handshake and its unmasking.)

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use parking_lot::Mutex;

use bytes::{Buf, Bytes, BytesMut};
use fastwebsockets::OpCode;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

use crate::wake::WakeSlot;

/// The server-wide memory budget for client input: bytes of incomplete frames and messages,
/// and of messages waiting for the app's JS handlers. Every holder takes its share through a
/// `Held`; a share that would go over the budget is refused (the caller closes or answers busy).
///
/// Which socket pays: when a socket's reader needs more and the budget is spent, the socket
/// holding the most (if it holds more than the one asking would) is told to close (1013) and
/// its bytes count as on their way back, so the one asking goes on; otherwise the one asking
/// is refused. So one large offender cannot get small, well-behaved sockets closed.
pub(crate) struct InputBudget {
    used: AtomicUsize,
    max: usize,
    /// Bytes of sockets told to close that they have not given back yet.
    reclaiming: AtomicUsize,
    /// Every open socket's account, by id (scanned only when the budget is spent).
    accounts: Mutex<HashMap<u64, Weak<Account>>>,
    next_id: AtomicU64,
}

impl InputBudget {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
            reclaiming: AtomicUsize::new(0),
            accounts: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// The budget in bytes.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// An empty share that belongs to no socket (never chosen to pay).
    pub(crate) fn share(self: &Arc<Self>) -> Held {
        Held { budget: self.clone(), account: None, n: 0 }
    }

    /// A socket's account: its shares are summed, and it may be chosen to pay.
    pub(crate) fn account(self: &Arc<Self>) -> Arc<Account> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let a = Arc::new(Account {
            budget: self.clone(),
            id,
            used: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            reclaim: AtomicUsize::new(0),
            notify: WakeSlot::default(),
        });
        self.accounts.lock().insert(id, Arc::downgrade(&a));
        a
    }

    /// Tells the socket holding the most (more than `than` bytes, and not `me`) to close; false
    /// when there is none.
    fn evict_larger_than(&self, me: u64, than: usize) -> bool {
        let victim = {
            let accounts = self.accounts.lock();
            accounts
                .iter()
                .filter(|(id, _)| **id != me)
                .filter_map(|(_, a)| a.upgrade())
                .filter(|a| !a.evicted())
                .max_by_key(|a| a.used.load(Relaxed))
        };
        let Some(victim) = victim else { return false };
        let bytes = victim.used.load(Relaxed);
        if bytes <= than || victim.evicted.swap(true, Relaxed) {
            return false;
        }
        self.reclaiming.fetch_add(bytes, Relaxed);
        victim.reclaim.store(bytes, Relaxed);
        victim.notify.notify_one();
        victim.settle();
        true
    }
}

/// One socket's part of the `InputBudget`.
pub(crate) struct Account {
    budget: Arc<InputBudget>,
    id: u64,
    /// Bytes of this socket's shares.
    used: AtomicUsize,
    /// Told to close to give its memory back.
    evicted: AtomicBool,
    /// Bytes it held when told, counted in the budget's `reclaiming` until it gave them back.
    reclaim: AtomicUsize,
    notify: WakeSlot,
}

impl Account {
    /// An empty share on this socket's account.
    pub(crate) fn share(self: &Arc<Self>) -> Held {
        Held { budget: self.budget.clone(), account: Some(self.clone()), n: 0 }
    }

    /// Whether this socket was chosen to close to give memory back.
    pub(crate) fn evicted(&self) -> bool {
        self.evicted.load(Relaxed)
    }

    /// Once an evicted socket gave everything back, its bytes are no longer on their way.
    fn settle(&self) {
        if self.used.load(Relaxed) == 0 {
            let r = self.reclaim.swap(0, Relaxed);
            self.budget.reclaiming.fetch_sub(r, Relaxed);
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.budget.accounts.lock().remove(&self.id);
        let r = self.reclaim.swap(0, Relaxed);
        self.budget.reclaiming.fetch_sub(r, Relaxed);
    }
}

/// One holder's share of the `InputBudget`, given back when dropped.
pub(crate) struct Held {
    budget: Arc<InputBudget>,
    account: Option<Arc<Account>>,
    n: usize,
}

impl Held {
    /// Moves the share to `n` bytes; false (share unchanged) when growing would pass the budget
    /// and no larger socket could be told to pay for it.
    pub(crate) fn resize(&mut self, n: usize) -> bool {
        if self.resize_within(n, self.budget.max) {
            return true;
        }
        let Some(a) = &self.account else { return false };
        let mine = a.used.load(Relaxed) + (n - self.n);
        self.budget.evict_larger_than(a.id, mine) && self.resize_within(n, self.budget.max)
    }

    /// `resize`, growing only while the whole budget stays within `limit` (messages waiting for
    /// JS may fill half of it, so that half is always left for frames being read); no one is
    /// told to pay.
    pub(crate) fn resize_within(&mut self, n: usize, limit: usize) -> bool {
        if n > self.n {
            let more = n - self.n;
            let before = self.budget.used.fetch_add(more, Relaxed);
            // Bytes of sockets already told to close are on their way back.
            let room = limit.min(self.budget.max) + self.budget.reclaiming.load(Relaxed);
            if before + more > room {
                self.budget.used.fetch_sub(more, Relaxed);
                return false;
            }
            if let Some(a) = &self.account {
                a.used.fetch_add(more, Relaxed);
            }
        } else {
            let less = self.n - n;
            self.budget.used.fetch_sub(less, Relaxed);
            if let Some(a) = &self.account {
                a.used.fetch_sub(less, Relaxed);
                a.settle();
            }
        }
        self.n = n;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Relaxed);
        if let Some(a) = &self.account {
            a.used.fetch_sub(self.n, Relaxed);
            a.settle();
        }
    }
}

/// Bytes read per syscall (into a per-thread buffer, never one kept in a socket's future).
const READ_CHUNK: usize = 16 * 1024;

/// One frame from the client, unmasked.
pub(crate) struct InFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Bytes,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The peer closed the TCP connection or it broke.
    Gone,
    /// A protocol violation (close 1002).
    Protocol(&'static str),
    /// A frame larger than the message limit (close 1009).
    TooBig,
    /// Client input over the server's memory budget (close 1013).
    OverBudget,
}

pub(crate) struct FrameReader {
    stream: OwnedReadHalf,
    /// Bytes of an incomplete frame; empty (no allocation) between frames.
    buf: BytesMut,
    max_payload: usize,
    /// `buf`'s capacity, taken from the server's input budget.
    held: Held,
    /// The socket's account, which its other shares (a message being reassembled) use too.
    /// Opened the first time the socket holds input (an incomplete frame, a fragment): an idle
    /// socket, or one whose frames always arrive whole, never needs one (~130 B with its entry
    /// in the budget's map).
    account: Option<Arc<Account>>,
}

impl FrameReader {
    /// `read_ahead`: bytes the HTTP layer had already read past the handshake.
    pub(crate) fn new(
        stream: OwnedReadHalf,
        read_ahead: Bytes,
        max_payload: usize,
        budget: &Arc<InputBudget>,
    ) -> Self {
        let buf = if read_ahead.is_empty() { BytesMut::new() } else { BytesMut::from(&read_ahead[..]) };
        Self { stream, buf, max_payload, held: budget.share(), account: None }
    }

    /// The socket's account, opened on first use; `held` moves onto it (it is empty until then:
    /// it grows only once the account exists).
    fn account(&mut self) -> &Arc<Account> {
        if self.account.is_none() {
            let a = self.held.budget.account();
            self.held = a.share();
            self.account = Some(a);
        }
        self.account.as_ref().expect("opened above")
    }

    /// An empty share on this socket's account of the input budget.
    pub(crate) fn share(&mut self) -> Held {
        self.account().share()
    }

    /// The next frame, as a poll (nothing of it is kept in the socket's future between polls:
    /// what was read stays in `buf`). Registers for the stream's readiness (its own slot: the
    /// socket has one task) and, once the socket has an account, for being told to pay.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<InFrame, ReadError>> {
        loop {
            let parsed = parse(&mut self.buf, self.max_payload)?;
            if parsed.is_some() && self.buf.is_empty() {
                self.buf = BytesMut::new(); // give the memory back while idle
            }
            // What an incomplete frame pins (parse reserves a whole announced frame) counts.
            let cap = self.buf.capacity();
            if cap > 0 {
                self.account();
            }
            if !self.held.resize(cap) {
                self.buf = BytesMut::new();
                return Poll::Ready(Err(ReadError::OverBudget));
            }
            if let Some(frame) = parsed {
                return Poll::Ready(Ok(frame));
            }
            // Told to close so that others may read on: whatever this socket was reading.
            // Without an account the socket holds nothing and is never told to pay.
            if let Some(a) = &self.account {
                if a.evicted() {
                    self.buf = BytesMut::new();
                    return Poll::Ready(Err(ReadError::OverBudget));
                }
                if a.notify.poll_notified(cx).is_ready() {
                    continue; // see `evicted` above
                }
            }
            match poll_read_into(&mut self.stream, cx, Some(&mut self.buf)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(ReadError::Gone)),
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Gives back the buffer and its share of the input budget: the socket reads only to
    /// discard from now on (`poll_discard`).
    pub(crate) fn release(&mut self) {
        self.buf = BytesMut::new();
        let _ = self.held.resize(0);
    }

    /// Reads and discards what the peer sent (one read per ready poll); true once it closed its
    /// side (or the connection broke). After a close of ours, so the socket is not closed with
    /// unread input (the kernel would answer with a reset, dropping whatever it had not sent
    /// yet, our close frame included). Holds no buffer: the bytes go through the per-thread
    /// chunk.
    pub(crate) fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        match poll_read_into(&mut self.stream, cx, None) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(true),
            Poll::Ready(Ok(_)) => Poll::Ready(false),
        }
    }
}

thread_local! {
    /// One read buffer per worker thread, zeroed once: a fresh zeroed array per read cost a
    /// 16 KiB memset each time (~1 % of the handler scenario's CPU).
    static CHUNK: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// One read into the worker's chunk, appended to `out` (`None`: discarded; `Pending`: nothing
/// to read, the task is registered for readiness). Through tokio's `poll_read`, not `try_read`:
/// a read that does not fill the chunk clears the readiness itself (epoll is edge-triggered, so
/// the socket is drained), where `try_read` left it set and the next poll paid a `recv` that
/// only said `EAGAIN` — one extra syscall per message when each message arrives on its own.
fn poll_read_into(
    stream: &mut OwnedReadHalf,
    cx: &mut Context<'_>,
    out: Option<&mut BytesMut>,
) -> Poll<std::io::Result<usize>> {
    CHUNK.with(|chunk| {
        let mut chunk = chunk.borrow_mut();
        let mut rb = ReadBuf::new(&mut chunk);
        std::task::ready!(Pin::new(stream).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if let Some(out) = out {
            out.extend_from_slice(rb.filled());
        }
        Poll::Ready(Ok(n))
    })
}

fn opcode(bits: u8) -> Option<OpCode> {
    Some(match bits {
        0x0 => OpCode::Continuation,
        0x1 => OpCode::Text,
        0x2 => OpCode::Binary,
        0x8 => OpCode::Close,
        0x9 => OpCode::Ping,
        0xA => OpCode::Pong,
        _ => return None,
    })
}

/// Takes one complete frame off the front of `buf`, or says how much more is needed by
/// reserving it.
fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<InFrame>, ReadError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol("reserved bits set"));
    }
    let op = opcode(b0 & 0x0f).ok_or(ReadError::Protocol("unknown opcode"))?;
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol("client frames must be masked"));
    }
    let (len, header) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(raw), 10)
        }
        n => (u64::from(n), 2),
    };
    let control = matches!(op, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control && (!fin || len > 125) {
        return Err(ReadError::Protocol("control frames are unfragmented and at most 125 bytes"));
    }
    if len > max_payload as u64 {
        return Err(ReadError::TooBig);
    }
    let total = header + 4 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mask = [buf[header], buf[header + 1], buf[header + 2], buf[header + 3]];
    let mut frame = buf.split_to(total);
    frame.advance(header + 4);
    fastwebsockets::unmask(&mut frame, mask);
    Ok(Some(InFrame { fin, opcode: op, payload: frame.freeze() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> BytesMut {
        let mask = [1, 2, 3, 4];
        let mut f = vec![first];
        match payload.len() {
            n if n <= 125 => f.push(0x80 | n as u8),
            n if n <= 65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        BytesMut::from(&f[..])
    }

    #[test]
    fn parses_across_partial_reads() {
        let whole = masked(0x81, &[b'x'; 300]);
        let mut buf = BytesMut::new();
        for chunk in whole.chunks(7) {
            assert!(buf.is_empty() || parse(&mut buf, 1000).unwrap().is_none());
            buf.extend_from_slice(chunk);
        }
        let f = parse(&mut buf, 1000).unwrap().unwrap();
        assert!(
            f.fin
                && f.opcode == OpCode::Text
                && f.payload.len() == 300
                && f.payload.iter().all(|b| *b == b'x')
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_bad_frames() {
        let mut unmasked = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert_eq!(parse(&mut unmasked, 10).err(), Some(ReadError::Protocol("client frames must be masked")));
        assert!(matches!(parse(&mut masked(0xC1, b"a"), 10), Err(ReadError::Protocol(_))), "rsv1");
        assert!(matches!(parse(&mut masked(0x83, b"a"), 10), Err(ReadError::Protocol(_))), "opcode 3");
        assert!(matches!(parse(&mut masked(0x09, b""), 10), Err(ReadError::Protocol(_))), "fragmented ping");
        assert!(
            matches!(parse(&mut masked(0x88, &[0; 126]), 1000), Err(ReadError::Protocol(_))),
            "long close"
        );
        assert_eq!(parse(&mut masked(0x82, &[0; 11]), 10).err(), Some(ReadError::TooBig));
        assert!(parse(&mut masked(0x82, &[0; 10]), 10).unwrap().is_some());
        let mut huge = BytesMut::from(&[0x82u8, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(parse(&mut huge, 1 << 20).err(), Some(ReadError::TooBig));
    }
}
