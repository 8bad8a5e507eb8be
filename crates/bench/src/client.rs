//! The websocket client: our own opening handshake and a minimal frame codec straight on the
//! socket (no websocket library). The generator must stay far below the servers' cost per
//! message, so reads go through one readiness wait and one `read` per batch of frames, frames
//! are parsed in place (server frames are unmasked: no copy, no per-message allocation), and the
//! fan-out subscribers take every complete message of a read at once ([`Conn::read_batch`]).
//! A `Conn` speaks either plain JSON text frames or Socket.IO's `42["message",…]` wrapping.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{self, op, FrameHead, Head, Sio};

pub type Error = Box<dyn std::error::Error>;
pub type Result<T> = std::result::Result<T, Error>;

/// Largest frame the generator accepts (the servers' messages are a few hundred bytes).
const MAX_FRAME: usize = 16 << 20;

/// Bytes asked of each `read` on the per-message path ([`Conn::recv`]).
const READ_CHUNK: usize = 16 << 10;

/// The batch path's read buffer, shared by every connection of the (single) generator thread:
/// one read drains a socket's whole backlog, and a connection keeps only the tail of a partial
/// frame between reads, so 10,000 subscribers do not hold 10,000 large buffers.
const SCRATCH: usize = 256 << 10;

/// Reads are capped at this many bytes when `BENCH_READ_LIMIT` is set: the tests use a small odd
/// cap so that frames split across reads at every offset. Unset: no cap.
fn read_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("BENCH_READ_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(usize::MAX)
    })
}

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(SCRATCH));
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub socket_io: bool,
}

impl Target {
    pub fn new(addr: SocketAddr, socket_io: bool) -> Self {
        let path = if socket_io { wire::SIO_PATH } else { "/" }.to_string();
        Self { addr, path, socket_io }
    }
}

/// An app-level message: the bytes of one JSON text (unwrapped from Socket.IO framing),
/// borrowed from the connection's buffer until the next read.
pub struct Msg<'a> {
    json: &'a [u8],
}

impl Msg<'_> {
    pub fn json(&self) -> &[u8] {
        self.json
    }
}

/// A connection after the opening handshake.
pub struct Conn {
    fd: AsyncFd<std::net::TcpStream>,
    /// Received bytes not yet consumed are `buf[start..end]` (a partial frame, or frames after
    /// the last message [`Conn::recv`] returned); `buf` itself is zeroed once, never per read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    ctl: Ctl,
    /// The peer's Close was seen (and answered).
    closed: bool,
}

/// What answering control frames needs, apart from the read buffer (so both can be borrowed).
struct Ctl {
    socket_io: bool,
    /// Frames to write: control answers (pong, close, Engine.IO pong) and queued messages.
    out: Vec<u8>,
    /// State of the masking-key generator (xorshift32, never 0).
    mask: u32,
}

impl Ctl {
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x.to_ne_bytes()
    }

    /// Interprets one complete frame of `buf` (at `h`): data frames become app messages (after
    /// the Socket.IO unwrapping), pings and Engine.IO pings are answered through `out`, a Close
    /// is answered and ends the connection.
    fn on_frame(&mut self, buf: &[u8], h: &FrameHead) -> Result<Got> {
        let payload = &buf[h.start..h.end];
        if !h.fin || h.opcode == op::CONTINUATION {
            return Err("fragmented message (the generator does not reassemble)".into());
        }
        match h.opcode {
            op::TEXT | op::BINARY if !self.socket_io => Ok(Got::Msg(h.start, h.end)),
            op::TEXT | op::BINARY => match wire::sio_parse(payload) {
                Sio::Message(inner) => {
                    let s = h.start + (inner.as_ptr() as usize - payload.as_ptr() as usize);
                    Ok(Got::Msg(s, s + inner.len()))
                }
                Sio::Ping => {
                    let mask = self.next_mask();
                    wire::encode_frame(&mut self.out, op::TEXT, b"3", mask);
                    Ok(Got::Control)
                }
                _ => Ok(Got::Control),
            },
            op::PING => {
                let mask = self.next_mask();
                wire::encode_frame(&mut self.out, op::PONG, payload, mask);
                Ok(Got::Control)
            }
            op::PONG => Ok(Got::Control),
            op::CLOSE => {
                // Echo the status code (RFC 6455 §5.5.1); an empty Close when it had none.
                let code = payload.get(..2).unwrap_or(&[]);
                let mask = self.next_mask();
                wire::encode_frame(&mut self.out, op::CLOSE, code, mask);
                Ok(Got::Closed)
            }
            o => Err(format!("unknown opcode {o:#x}").into()),
        }
    }

    /// Hands every complete app message of `bytes` to `each`; returns the bytes consumed and
    /// false when a Close was among them (control answers are queued in `out`).
    fn consume(&mut self, bytes: &[u8], each: &mut impl FnMut(&[u8])) -> Result<(usize, bool)> {
        let mut at = 0;
        while let Some(h) = wire::parse_frame(&bytes[at..], MAX_FRAME)? {
            let frame = FrameHead { start: at + h.start, end: at + h.end, ..h };
            at += h.end;
            match self.on_frame(bytes, &frame)? {
                Got::Msg(s, e) => each(&bytes[s..e]),
                Got::Control => {}
                Got::Closed => return Ok((at, false)),
            }
        }
        Ok((at, true))
    }
}

/// What a parsed frame means for the caller.
enum Got {
    /// An app message at `buf[start..end]`.
    Msg(usize, usize),
    /// A control frame, answered through `Ctl::out` when needed.
    Control,
    /// The peer closed.
    Closed,
}

/// Connects, upgrades (with `Authorization: Bearer <token>` when given) and, for Socket.IO,
/// completes the Engine.IO open and the namespace connect.
pub async fn connect(target: &Target, token: Option<&str>) -> Result<Conn> {
    let tcp = tcp_connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    connect_on(tcp, target, token).await
}

/// Source addresses the connections are spread over (loopback targets only).
const SOURCES: u32 = 32;

/// Connects from 127.0.0.2..=127.0.0.33 in turn when the target is on loopback. One source
/// address holds ~28k ports, and Linux's port search in connect() slows down as that range
/// fills (it showed as a 5× lower connect rate at 19,000 connections); spreading sources keeps
/// the generator's connect cost flat and its TIME_WAIT entries apart during churn.
async fn tcp_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if !addr.ip().is_loopback() || !addr.is_ipv4() {
        return TcpStream::connect(addr).await;
    }
    let sock = tokio::net::TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: valid fd and option buffer; failure only means ports are picked at bind time.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % SOURCES;
    sock.bind(SocketAddr::from(([127, 0, 0, 2 + n as u8], 0)))?;
    sock.connect(addr).await
}

async fn connect_on(mut tcp: TcpStream, target: &Target, token: Option<&str>) -> Result<Conn> {
    let host = target.addr.to_string();
    tcp.write_all(&wire::upgrade_request(&host, &target.path, token)).await?;
    let mut buf = Vec::with_capacity(512);
    let head_len = loop {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match wire::response_head(&buf)? {
            Head::Partial => continue,
            Head::Done { status: 101, len } => break len,
            Head::Done { status, .. } => return Err(format!("upgrade refused: HTTP {status}").into()),
        }
    };
    buf.drain(..head_len);
    // `into_std` keeps the socket non-blocking; AsyncFd registers it again with the reactor.
    // SAFETY: the std::net::TcpStream owns its fd and moves into the AsyncFd, so the fd stays
    // open and the same for the AsyncFd's whole life (register's contract).
    let fd = unsafe { AsyncFd::register(tcp.into_std()?) }.map_err(|e| e.into_parts().1)?;
    let seed = (fd.get_ref() as *const _ as usize as u32) ^ 0x9e37_79b9;
    let end = buf.len();
    let ctl = Ctl { socket_io: target.socket_io, out: Vec::new(), mask: seed | 1 };
    let mut conn = Conn { fd, buf, start: 0, end, ctl, closed: false };
    if target.socket_io {
        conn.sio_open().await?;
    }
    Ok(conn)
}

/// One `read` into `dst`; `Ok(None)` when the socket had nothing (readiness is then cleared
/// by tokio). After a short read the socket's queue was empty, so readiness is cleared too: the
/// next wait goes to epoll instead of spending a `read` on EAGAIN. (tokio keeps readiness set
/// when an event arrived after the guard was taken, so no wake-up is lost.)
async fn read_once(fd: &AsyncFd<std::net::TcpStream>, dst: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|s| s.get_ref().read(dst)) {
            Ok(Ok(n)) => {
                if n < dst.len() {
                    guard.clear_ready();
                }
                return Ok(n);
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

impl Conn {
    /// Engine.IO open and Socket.IO connect. Frames are read raw here (the Socket.IO unwrapping
    /// of [`Ctl::on_frame`] would swallow the handshake's packets), then unwrapped from then on.
    async fn sio_open(&mut self) -> Result<()> {
        self.ctl.socket_io = false;
        let res = self.sio_handshake().await;
        self.ctl.socket_io = true;
        res
    }

    async fn sio_handshake(&mut self) -> Result<()> {
        loop {
            let (s, e) = self.read_data().await?.ok_or("closed before the Engine.IO open")?;
            if wire::sio_parse(&self.buf[s..e]) == Sio::Open {
                break;
            }
        }
        self.write_frame(op::TEXT, b"40").await?;
        loop {
            let (s, e) = self.read_data().await?.ok_or("closed before the Socket.IO connect")?;
            match wire::sio_parse(&self.buf[s..e]) {
                Sio::Connected => return Ok(()),
                Sio::ConnectError => return Err("Socket.IO connect refused".into()),
                Sio::Ping => self.write_frame(op::TEXT, b"3").await?,
                _ => {}
            }
        }
    }

    /// Writes all of `bytes` (waits for the socket to take them).
    async fn write_all(fd: &AsyncFd<std::net::TcpStream>, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = fd.writable().await?;
            match guard.try_io(|s| s.get_ref().write(bytes)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Writes the queued control frames.
    async fn flush_control(&mut self) -> io::Result<()> {
        if self.ctl.out.is_empty() {
            return Ok(());
        }
        let res = Self::write_all(&self.fd, &self.ctl.out).await;
        self.ctl.out.clear();
        res
    }

    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        self.flush_control().await?;
        let mut frame = Vec::with_capacity(payload.len() + 14);
        let mask = self.ctl.next_mask();
        wire::encode_frame(&mut frame, opcode, payload, mask);
        Self::write_all(&self.fd, &frame).await?;
        Ok(())
    }

    /// Sends one app message (a JSON text).
    pub async fn send(&mut self, json: &[u8]) -> Result<()> {
        if self.ctl.socket_io {
            self.write_frame(op::TEXT, &wire::sio_wrap(json)).await
        } else {
            self.write_frame(op::TEXT, json).await
        }
    }

    /// Queues one app message (a JSON text) to go out with the next [`Conn::flush`]: a client
    /// with several messages to send writes them in one syscall.
    pub fn queue(&mut self, json: &[u8]) {
        let mask = self.ctl.next_mask();
        if self.ctl.socket_io {
            wire::encode_frame(&mut self.ctl.out, op::TEXT, &wire::sio_wrap(json), mask);
        } else {
            wire::encode_frame(&mut self.ctl.out, op::TEXT, json, mask);
        }
    }

    /// Writes what [`Conn::queue`] queued (and any pending control answer).
    pub async fn flush(&mut self) -> Result<()> {
        Ok(self.flush_control().await?)
    }

    /// The next app message's place in `buf`; None once the peer closed.
    async fn read_data(&mut self) -> Result<Option<(usize, usize)>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            while let Some(h) = wire::parse_frame(&self.buf[self.start..self.end], MAX_FRAME)? {
                let base = self.start;
                self.start += h.end;
                let h = FrameHead { start: base + h.start, end: base + h.end, ..h };
                match self.ctl.on_frame(&self.buf, &h)? {
                    Got::Msg(s, e) => return Ok(Some((s, e))),
                    Got::Control => self.flush_control().await?,
                    Got::Closed => {
                        self.closed = true;
                        let _ = self.flush_control().await;
                        return Ok(None);
                    }
                }
            }
            // Keep the partial frame at the front; make room for one more read.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < self.end + READ_CHUNK {
                self.buf.resize(self.end + READ_CHUNK, 0);
            }
            let room = (self.buf.len() - self.end).min(read_limit());
            let n = read_once(&self.fd, &mut self.buf[self.end..self.end + room]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.end += n;
        }
    }

    /// Next app message; answers pings on the way. None once the peer closed.
    pub async fn recv(&mut self) -> Result<Option<Msg<'_>>> {
        Ok(self.read_data().await?.map(|(s, e)| Msg { json: &self.buf[s..e] }))
    }

    /// Waits for the socket, reads what it holds (one `read` of up to 256 KiB into the shared
    /// scratch buffer) and calls `each` with every complete app message, in order, without
    /// copying or allocating per message. Returns false once the peer closed. Messages that
    /// [`Conn::recv`] had already read come first.
    pub async fn read_batch(&mut self, mut each: impl FnMut(&[u8])) -> Result<bool> {
        if self.closed {
            return Ok(false);
        }
        if self.start < self.end {
            let (used, open) = self.ctl.consume(&self.buf[self.start..self.end], &mut each)?;
            self.start += used;
            if !open {
                return self.closed_by_peer().await;
            }
        }
        // From here on the connection keeps only a partial frame between reads (usually none).
        let (start, end) = (self.start, self.end);
        let leftover = self.buf[start..end].to_vec();
        (self.buf, self.start, self.end) = (leftover, 0, end - start);
        loop {
            let mut guard = self.fd.readable().await?;
            let Conn { buf, end, ctl, .. } = self;
            let got = SCRATCH_BUF.with(|cell| -> Result<Option<bool>> {
                let mut scratch = cell.borrow_mut();
                let have = *end;
                if scratch.len() < have + SCRATCH {
                    scratch.resize(have + SCRATCH, 0);
                }
                scratch[..have].copy_from_slice(&buf[..have]);
                let room = (scratch.len() - have).min(read_limit());
                let n = match guard.try_io(|s| s.get_ref().read(&mut scratch[have..have + room])) {
                    Err(_would_block) => return Ok(None),
                    Ok(r) => r?,
                };
                if n == 0 {
                    return Ok(Some(false));
                }
                if n < room {
                    // A short read emptied the socket's queue (see read_once).
                    guard.clear_ready();
                }
                let (used, open) = ctl.consume(&scratch[..have + n], &mut each)?;
                buf.clear();
                buf.extend_from_slice(&scratch[used..have + n]);
                *end = buf.len();
                Ok(Some(open))
            })?;
            match got {
                None => continue,
                Some(true) => {
                    if !self.ctl.out.is_empty() {
                        self.flush_control().await?;
                    }
                    return Ok(true);
                }
                Some(false) => return self.closed_by_peer().await,
            }
        }
    }

    async fn closed_by_peer(&mut self) -> Result<bool> {
        self.closed = true;
        let _ = self.flush_control().await;
        Ok(false)
    }

    /// Reads until a message with `"type":"<ty>"`; other messages are skipped.
    pub async fn wait_type(&mut self, ty: &[u8]) -> Result<Msg<'_>> {
        loop {
            let (s, e) = self.read_data().await?.ok_or("closed while waiting")?;
            let m = &self.buf[s..e];
            if wire::is_type(m, ty) {
                return Ok(Msg { json: &self.buf[s..e] });
            }
            if wire::is_type(m, b"error") {
                return Err(format!("server error: {}", String::from_utf8_lossy(m)).into());
            }
        }
    }

    /// Closing handshake: sends Close 1000 and waits (bounded) for the peer's Close or EOF.
    pub async fn close(mut self) {
        if self.closed {
            return;
        }
        if self.write_frame(op::CLOSE, &1000u16.to_be_bytes()).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = self.read_data().await {}
        })
        .await;
    }
}
