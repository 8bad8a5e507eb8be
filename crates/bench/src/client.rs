//! The websocket client: our own opening handshake over a `TcpStream` (so the `Authorization`
//! header and the bytes after the 101 are ours to handle), then fastwebsockets for frames.
//! A `Conn` speaks either plain JSON text frames or Socket.IO's `42["message",…]` wrapping.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::{self, Head, Sio};

pub type Error = Box<dyn std::error::Error>;
pub type Result<T> = std::result::Result<T, Error>;

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

/// A `TcpStream` that first yields the bytes read past the handshake response.
pub struct Stream {
    pre: Vec<u8>,
    pos: usize,
    tcp: TcpStream,
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = buf.remaining().min(self.pre.len() - self.pos);
            buf.put_slice(&self.pre[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                self.pre = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// An app-level message: the bytes of one JSON text (unwrapped from Socket.IO framing).
pub struct Msg {
    buf: BytesMut,
    start: usize,
    end: usize,
}

impl Msg {
    pub fn json(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

pub struct Conn {
    ws: WebSocket<Stream>,
    socket_io: bool,
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
    let stream = Stream { pre: buf, pos: 0, tcp };
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    ws.set_max_message_size(16 << 20);
    let mut conn = Conn { ws, socket_io: target.socket_io };
    if target.socket_io {
        conn.sio_open().await?;
    }
    Ok(conn)
}

impl Conn {
    async fn sio_open(&mut self) -> Result<()> {
        loop {
            let f = self.read_data().await?.ok_or("closed before the Engine.IO open")?;
            if wire::sio_parse(&f) == Sio::Open {
                break;
            }
        }
        self.write_raw(b"40".to_vec()).await?;
        loop {
            let f = self.read_data().await?.ok_or("closed before the Socket.IO connect")?;
            match wire::sio_parse(&f) {
                Sio::Connected => return Ok(()),
                Sio::ConnectError => return Err("Socket.IO connect refused".into()),
                Sio::Ping => self.write_raw(b"3".to_vec()).await?,
                _ => {}
            }
        }
    }

    async fn write_raw(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.write_frame(Frame::text(Payload::Owned(bytes))).await?;
        Ok(())
    }

    /// Sends one app message (a JSON text).
    pub async fn send(&mut self, json: &[u8]) -> Result<()> {
        let bytes = if self.socket_io { wire::sio_wrap(json) } else { json.to_vec() };
        self.write_raw(bytes).await
    }

    /// Next data frame's payload; None once the peer closed.
    async fn read_data(&mut self) -> Result<Option<BytesMut>> {
        loop {
            let frame = self.ws.read_frame().await?;
            if !frame.fin {
                return Err("fragmented message (the generator does not reassemble)".into());
            }
            match frame.opcode {
                OpCode::Close => return Ok(None),
                OpCode::Text | OpCode::Binary => {
                    return Ok(Some(match frame.payload {
                        Payload::Bytes(b) => b,
                        p => BytesMut::from(&p[..]),
                    }))
                }
                _ => {}
            }
        }
    }

    /// Next app message; answers Engine.IO pings on the way. None once the peer closed.
    pub async fn recv(&mut self) -> Result<Option<Msg>> {
        loop {
            let Some(buf) = self.read_data().await? else { return Ok(None) };
            if !self.socket_io {
                let end = buf.len();
                return Ok(Some(Msg { buf, start: 0, end }));
            }
            match wire::sio_parse(&buf) {
                Sio::Message(inner) => {
                    let start = inner.as_ptr() as usize - buf.as_ptr() as usize;
                    let end = start + inner.len();
                    return Ok(Some(Msg { buf, start, end }));
                }
                Sio::Ping => self.write_raw(b"3".to_vec()).await?,
                _ => {}
            }
        }
    }

    /// Reads until a message with `"type":"<ty>"`; other messages are skipped.
    pub async fn wait_type(&mut self, ty: &[u8]) -> Result<Msg> {
        loop {
            let m = self.recv().await?.ok_or("closed while waiting")?;
            if wire::is_type(m.json(), ty) {
                return Ok(m);
            }
            if wire::is_type(m.json(), b"error") {
                return Err(format!("server error: {}", String::from_utf8_lossy(m.json())).into());
            }
        }
    }

    /// Closing handshake: sends Close 1000 and waits (bounded) for the peer's Close or EOF.
    pub async fn close(mut self) {
        if self.ws.write_frame(Frame::close(1000, b"")).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = self.read_data().await {}
        })
        .await;
    }
}
