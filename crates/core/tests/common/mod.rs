//! Shared helpers of the core's integration tests: a raw RFC 6455 client over loopback (full
//! control of frames, fragments and reading), token signing, and a configurable hooks impl.
#![allow(dead_code, clippy::type_complexity)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use parking_lot::Mutex;
use realtime_core::{
    AppHooks, BoxFuture, EventInfo, HandlerOutcome, Server, ServerConfig, ServerHandle, SocketRef,
    UpgradeInfo, UserClaims, UserList, Verdicts,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

pub mod redis;

pub const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Generous: the machines here are shared and have 2 cores.
pub const WAIT: Duration = Duration::from_secs(10);

/// The path of one of the core's examples (`cargo test` builds them beside the test binaries).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

/// A server on a free loopback port.
pub fn start(mut config: ServerConfig, hooks: Arc<dyn AppHooks>) -> ServerHandle {
    config.host = "127.0.0.1".into();
    config.port = 0;
    config.worker_threads = Some(2);
    Server::start(config, hooks).expect("server starts")
}

pub fn config() -> ServerConfig {
    ServerConfig { jwt_key: Some(KEY.to_vec()), ..ServerConfig::default() }
}

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Signs `claims` with HS256 under `key` and the given header JSON.
pub fn sign_with(header: &str, claims: &Value, key: &[u8]) -> String {
    use jsonwebtoken::{crypto, Algorithm, EncodingKey};
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.to_string().as_bytes()));
    let sig =
        crypto::sign(signing_input.as_bytes(), &EncodingKey::from_secret(key), Algorithm::HS256).unwrap();
    format!("{signing_input}.{sig}")
}

/// A Payload-style token for user `id` expiring `ttl_s` from now (negative = already expired).
pub fn token(id: u64, ttl_s: i64) -> String {
    let exp = (now_s() as i64 + ttl_s) as u64;
    sign_with(
        r#"{"alg":"HS256","typ":"JWT","authVersion":1}"#,
        &serde_json::json!({"id": id, "collection": "users", "email": format!("u{id}@x.io"), "sid": format!("s{id}"), "exp": exp}),
        KEY,
    )
}

/// A received frame.
#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, 1, "expected a text frame, got opcode {}", self.opcode);
        serde_json::from_slice(&self.payload).expect("text frame is JSON")
    }
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// The HTTP answer to an upgrade request.
pub struct Handshake {
    pub status: u16,
    pub headers: HashMap<String, String>,
}

/// A raw WebSocket client.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub handshake: Handshake,
}

/// Reads an HTTP answer's head from `stream`: the status, the headers (lower-cased names) and
/// the bytes read past the head (the first WebSocket frames after a 101).
pub async fn read_http_head<H: FromIterator<(String, String)>>(stream: &mut TcpStream) -> (u16, H, Vec<u8>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, stream.read(&mut chunk)).await.expect("an HTTP answer in time").unwrap();
        assert!(n > 0, "closed before the end of the HTTP answer's head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[head_end..].to_vec())
}

pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    timeout(WAIT, s.read_to_end(&mut out)).await.expect("http reply in time").unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

impl Client {
    /// Opens a socket; panics unless the server answers 101.
    pub async fn connect(port: u16) -> Client {
        Self::connect_with(port, "/", &[]).await.expect("upgrade accepted")
    }

    /// Opens a socket with extra request headers; Err carries a refusal's status.
    pub async fn connect_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
        Self::request(port, "GET", path, headers).await
    }

    pub async fn request(
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let (status, headers, rest) = read_http_head(&mut stream).await;
        if status != 101 {
            return Err(status);
        }
        Ok(Client { stream, buf: rest, handshake: Handshake { status, headers } })
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = masked_frame(fin, opcode, payload);
        let _ = self.stream.write_all(&f).await;
    }

    /// Writes raw bytes (a hand-made or cut frame).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends text messages in one write, so the server reads them as one burst.
    pub async fn send_burst(&mut self, texts: &[String]) {
        let all: Vec<u8> = texts.iter().flat_map(|t| masked_frame(true, 1, t.as_bytes())).collect();
        let _ = self.stream.write_all(&all).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, 1, text.as_bytes()).await;
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Next frame, or None on EOF; panics after `WAIT`.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.recv_within(WAIT).await.expect("a frame in time")
    }

    /// Next frame within `d`: Err on timeout, Ok(None) on EOF.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Frame>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(f) = self.parse() {
                return Ok(Some(f));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
        let (len, off) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < off + len {
            return None;
        }
        let f = Frame { fin: b[0] & 0x80 != 0, opcode: b[0] & 0x0f, payload: b[off..off + len].to_vec() };
        self.buf.drain(..off + len);
        Some(f)
    }

    /// Next data frame as JSON, answering pings and skipping pongs.
    pub async fn recv_json(&mut self) -> Value {
        loop {
            let f = self.recv().await.expect("socket open");
            match f.opcode {
                9 => self.send_frame(true, 0xA, &f.payload.clone()).await,
                10 => {}
                8 => panic!("unexpected close {:?}", f.close_code()),
                _ => return f.json(),
            }
        }
    }

    /// Next JSON message of `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv_json().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Asserts no data frame arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        loop {
            match self.recv_within(d).await {
                Err(()) => return,
                Ok(Some(f)) if f.opcode == 9 || f.opcode == 10 => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until a close frame; returns its code (None = EOF without close).
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                None => return None,
                Some(f) if f.opcode == 8 => return f.close_code(),
                Some(_) => {}
            }
        }
    }

    /// Reads the welcome frame.
    pub async fn welcome(&mut self) -> Value {
        self.recv_type("welcome").await
    }

    /// Joins a collection room and waits for the ack.
    pub async fn join_collection(&mut self, slug: &str) {
        self.send_json(serde_json::json!({"type":"join-collection","collection":slug})).await;
        let ack = self.recv_type("joined").await;
        assert_eq!(ack["room"], format!("collection:{slug}"));
    }
}

/// One masked client frame (clients must mask, RFC 6455 §5.3).
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let len = payload.len();
    if len <= 125 {
        f.push(0x80 | len as u8);
    } else if len <= 65535 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Polls `f` until it holds or `WAIT` passes.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls an async condition (bounded by `WAIT`).
pub async fn eventually_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Handler = Arc<dyn Fn(SocketRef, Value) -> BoxFuture<HandlerOutcome> + Send + Sync>;

/// Hooks whose behaviour each test sets.
#[derive(Default)]
pub struct TestHooks {
    pub handlers: Mutex<HashMap<String, Handler>>,
    pub verify: Mutex<Option<Arc<dyn Fn(&UpgradeInfo) -> bool + Send + Sync>>>,
    pub on_open: Mutex<Option<Arc<dyn Fn(&SocketRef) -> bool + Send + Sync>>>,
    pub can_join: Mutex<Option<Arc<dyn Fn(Option<Arc<UserClaims>>, &str) -> bool + Send + Sync>>>,
    pub resolve: Mutex<Option<Arc<dyn Fn(&str) -> Option<UserClaims> + Send + Sync>>>,
    /// `can_subscribe` (join-collection / join-doc), when set.
    pub subscribe: Mutex<Option<Arc<dyn Fn(Option<Arc<UserClaims>>, &str) -> bool + Send + Sync>>>,
    /// What `verify_client` saw of each upgrade (url, headers).
    pub seen: Mutex<Vec<UpgradeInfo>>,
    pub session: Mutex<Option<Arc<dyn Fn(&UserClaims) -> bool + Send + Sync>>>,
    /// Collections with an authorize hook, and the verdict per user id.
    pub authorize: Mutex<Option<(String, Arc<dyn Fn(Option<&UserClaims>) -> bool + Send + Sync>)>>,
    pub authorize_calls: Mutex<Vec<(String, usize)>>,
    /// Per authorize call: the list's id and each user as "id exp" ("-" when anonymous).
    pub authorize_lists: Mutex<Vec<(u64, Vec<String>)>>,
    /// How long each authorize call takes (a slow app hook).
    pub authorize_delay: Mutex<Duration>,
    /// How long verify, session and open hooks take to answer (a busy JS thread).
    pub hook_delay: Mutex<Duration>,
    /// How long `can_join` takes to answer (an async room policy).
    pub join_delay: Mutex<Duration>,
    /// When set, the whole authorize answer (views of the document) instead of `authorize`'s booleans.
    pub authorize_views: Mutex<Option<Arc<dyn Fn(&UserList) -> Verdicts + Send + Sync>>>,
    pub closed: AtomicUsize,
}

impl TestHooks {
    pub fn handler(
        &self,
        kind: &str,
        f: impl Fn(SocketRef, Value) -> BoxFuture<HandlerOutcome> + Send + Sync + 'static,
    ) {
        self.handlers.lock().insert(kind.to_string(), Arc::new(f));
    }
}

impl AppHooks for TestHooks {
    fn verify_client(&self, info: &UpgradeInfo) -> Option<BoxFuture<bool>> {
        self.seen.lock().push(info.clone());
        let f = self.verify.lock().clone()?;
        let ok = f(info);
        let delay = *self.hook_delay.lock();
        Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            ok
        }))
    }
    fn resolve_credentials(&self, info: &UpgradeInfo) -> Option<BoxFuture<Option<UserClaims>>> {
        let f = self.resolve.lock().clone()?;
        let u = f(info.credential.as_deref().unwrap_or(""));
        Some(Box::pin(async move { u }))
    }
    fn validate_session(&self, user: &UserClaims) -> Option<BoxFuture<bool>> {
        let f = self.session.lock().clone()?;
        let ok = f(user);
        let delay = *self.hook_delay.lock();
        Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            ok
        }))
    }
    fn on_open(&self, socket: &SocketRef, _info: &UpgradeInfo) -> Option<BoxFuture<bool>> {
        let f = self.on_open.lock().clone()?;
        let ok = f(socket);
        let delay = *self.hook_delay.lock();
        Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            ok
        }))
    }
    fn has_handler(&self, kind: &str) -> bool {
        self.handlers.lock().contains_key(kind)
    }
    fn on_message(&self, socket: SocketRef, kind: &str, text: Bytes) -> BoxFuture<HandlerOutcome> {
        let h = self.handlers.lock().get(kind).cloned().expect("has_handler checked");
        let v: Value = serde_json::from_slice(&text).unwrap();
        h(socket, v)
    }
    fn can_join(&self, user: Option<Arc<UserClaims>>, room: &str) -> Option<BoxFuture<bool>> {
        let f = self.can_join.lock().clone()?;
        let ok = f(user, room);
        let delay = *self.join_delay.lock();
        Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            ok
        }))
    }
    fn can_subscribe(&self, user: Option<Arc<UserClaims>>, room: &str) -> Option<BoxFuture<bool>> {
        let f = self.subscribe.lock().clone()?;
        let ok = f(user, room);
        Some(Box::pin(async move { ok }))
    }
    fn authorizes(&self, collection: &str) -> bool {
        self.authorize.lock().as_ref().is_some_and(|(c, _)| c == collection)
    }
    fn authorize(&self, event: &EventInfo, users: Arc<UserList>) -> BoxFuture<Verdicts> {
        let f = self.authorize.lock().as_ref().map(|(_, f)| f.clone()).unwrap();
        self.authorize_calls.lock().push((event.collection.to_string(), users.users.len()));
        let mut who: Vec<String> = users
            .users
            .iter()
            .map(|u| u.as_ref().map_or("-".into(), |u| format!("{} {}", u.id, u.exp.unwrap_or(0))))
            .collect();
        who.sort();
        self.authorize_lists.lock().push((users.id, who));
        if let Some(views) = self.authorize_views.lock().clone() {
            let v = views(&users);
            return Box::pin(async move { v });
        }
        let v: Vec<bool> = users.users.iter().map(|u| f(u.as_deref())).collect();
        let delay = *self.authorize_delay.lock();
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            v.into()
        })
    }
    fn on_close(&self, _socket_id: &str, _code: u16, _reason: &str) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}
