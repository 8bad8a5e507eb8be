//! Starting and stopping the server on a tokio runtime the core owns, and the handle the
//! embedder uses to fan out, inspect and shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use std::net::ToSocketAddrs;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, Notify};

use crate::backplane::redis::RedisBackplane;
use crate::backplane::{Inbox, Remote};
use crate::config::{OriginRule, ServerConfig};
use crate::dispatch::Command;
use crate::error::{CoreError, Result};
use crate::event::Event;
use crate::hooks::AppHooks;
use crate::hub::Hub;
use crate::protocol::close_codes;
use crate::rooms::Member;
use crate::socket_ref::SocketRef;
use crate::sockets::Sockets;
use crate::stats::StatsSnapshot;
use crate::{frame, http};

/// An encoded frame, built once and shared by every recipient.
#[derive(Clone, Debug)]
pub struct Message(Bytes);

impl Message {
    /// A text message (the payload must be UTF-8; JSON in this protocol).
    pub fn text(payload: &[u8]) -> Self {
        Message(frame::text(payload))
    }
    /// A binary message.
    pub fn binary(payload: &[u8]) -> Self {
        Message(frame::binary(payload))
    }
    /// The encoded frame.
    pub fn frame(&self) -> &Bytes {
        &self.0
    }
}

/// Entry point of the core.
pub struct Server;

impl Server {
    /// Binds, starts the runtime and the accept loop; returns once the port is bound.
    pub fn start(config: ServerConfig, hooks: Arc<dyn AppHooks>) -> Result<ServerHandle> {
        config.validate()?;
        let origins =
            config.allow_origins.iter().map(|o| OriginRule::parse(o)).collect::<Result<Vec<_>>>()?;
        let addr = format!("{}:{}", config.host, config.port);
        let bind_err = |source| CoreError::Bind { addr: addr.clone(), source };
        let sock_addr = addr
            .to_socket_addrs()
            .map_err(bind_err)?
            .next()
            .ok_or_else(|| bind_err(std::io::ErrorKind::AddrNotAvailable.into()))?;

        let runtime = build_runtime(config.workers())?;

        let instance = config.instance_id.clone().unwrap_or_else(random_instance_id);
        let (hub, commands) = Hub::new(config, hooks, instance, origins);
        let _ = hub.runtime.set(runtime.handle().clone());
        let stop = Arc::new(Notify::new());
        let bound = {
            let _enter = runtime.enter();
            listen(sock_addr, hub.config.reuse_port).map_err(bind_err).and_then(|l| {
                let local = l.local_addr().map_err(bind_err)?;
                if let Some(redis) = &hub.config.redis {
                    hub.set_backplane(RedisBackplane::start(
                        redis,
                        &hub.instance,
                        Arc::downgrade(&hub) as Weak<dyn Inbox>,
                    )?);
                }
                Ok((l, local))
            })
        };
        let monitoring = bound.and_then(|main| {
            let Some((host, port)) = hub.config.monitoring.listen.clone() else { return Ok((main, None)) };
            let addr = format!("{host}:{port}");
            let err = |source| CoreError::Bind { addr: addr.clone(), source };
            let sock = addr
                .to_socket_addrs()
                .map_err(err)?
                .next()
                .ok_or_else(|| err(std::io::ErrorKind::AddrNotAvailable.into()))?;
            let _enter = runtime.enter();
            let l = listen(sock, false).map_err(err)?;
            let local = l.local_addr().map_err(err)?;
            Ok((main, Some((l, local))))
        });
        let ((listener, local), monitoring) = match monitoring {
            Ok(x) => x,
            Err(e) => {
                // Dropping a runtime inside another one panics; this is safe from any thread.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let monitoring_addr = monitoring.as_ref().map(|(_, a)| *a);
        let stop_monitoring = Arc::new(Notify::new());
        if let Some((l, _)) = monitoring {
            runtime.spawn(crate::accept::accept_loop(
                l,
                hub.clone(),
                stop_monitoring.clone(),
                http::Listener::Monitoring,
            ));
        }
        let accept = runtime.spawn(crate::accept::accept_loop(
            listener,
            hub.clone(),
            stop.clone(),
            http::Listener::Main,
        ));
        runtime.spawn(crate::lanes::run(hub.clone(), commands));
        runtime.spawn(crate::trim::run(hub.clone()));
        Ok(ServerHandle {
            hold: false,
            inner: Arc::new(Inner {
                hub,
                local,
                monitoring_addr,
                stop,
                stop_monitoring,
                accept: Mutex::new(Some(accept)),
                runtime: Mutex::new(Some(runtime)),
            }),
        })
    }
}

/// The core's runtime, or an error when the OS will not give it its threads. tokio panics
/// (instead of failing) when a worker thread is refused (a container's pids limit), and while
/// unwinding it waits forever for the workers it did start; across the napi boundary the panic
/// would abort Node. So: first check that the threads can exist at all (all at once, then let
/// go), and build on a helper thread, so that even a refusal racing the check leaves the
/// caller with an error after `BUILD_WAIT`, not a hang or an abort.
fn build_runtime(workers: usize) -> Result<Runtime> {
    const BUILD_WAIT: Duration = Duration::from_secs(10);
    let refused = |e: std::io::Error| {
        CoreError::Runtime(std::io::Error::new(
            e.kind(),
            format!("the OS refused a thread for {workers} workers (pids or thread limit? lower workerThreads): {e}"),
        ))
    };
    threads_available(workers + 2).map_err(refused)?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("realtime-start".into())
        .spawn(move || {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.thread_name("realtime-worker").enable_all().worker_threads(workers);
            let _ = tx.send(rt.build());
        })
        .map_err(refused)?;
    match rx.recv_timeout(BUILD_WAIT) {
        Ok(built) => built.map_err(CoreError::Runtime),
        Err(_) => Err(refused(std::io::Error::other("the runtime did not start"))),
    }
}

/// Whether `n` more threads can run at once: starts them (small stacks), then lets them end.
fn threads_available(n: usize) -> std::io::Result<()> {
    let gate = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
    let mut started = Vec::with_capacity(n);
    let mut refusal = None;
    for _ in 0..n {
        let g = gate.clone();
        let spawned = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let mut open = g.0.lock();
            while !*open {
                g.1.wait(&mut open);
            }
        });
        match spawned {
            Ok(h) => started.push(h),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    *gate.0.lock() = true;
    gate.1.notify_all();
    for h in started {
        let _ = h.join();
    }
    refusal.map_or(Ok(()), Err)
}

/// A listening socket; with `reuse_port`, several processes may listen on the same port.
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        #[cfg(unix)]
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}

fn random_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

struct Inner {
    hub: Arc<Hub>,
    local: SocketAddr,
    /// Where `/healthz` and `/metrics` are served when `monitoring.listen` is set.
    monitoring_addr: Option<SocketAddr>,
    stop: Arc<Notify>,
    stop_monitoring: Arc<Notify>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: Mutex<Option<Runtime>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Safe from any thread, including another runtime's.
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// A running server. Cheap to clone; the runtime stops when the last clone is dropped.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
    /// Fan-out commands made through this handle wait for `flush` (see `holding`).
    hold: bool,
}

impl ServerHandle {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.inner.local.port()
    }

    /// The bound port of `/healthz` and `/metrics` when they have their own address.
    pub fn monitoring_port(&self) -> Option<u16> {
        self.inner.monitoring_addr.map(|a| a.port())
    }

    /// This instance's id (prefix of its socket ids).
    pub fn instance_id(&self) -> &str {
        &self.inner.hub.instance
    }

    /// Sends `msg` to every socket in `room` except the socket with id `except`. `Ok(false)`:
    /// queued, but the fan-out queue is over half full (await `drained` before sending more).
    pub fn broadcast(&self, room: &str, msg: &Message, except: Option<&str>) -> Result<bool> {
        self.check_size(msg.0.len())?;
        self.command(Command::Broadcast {
            room: room.to_string(),
            frame: msg.0.clone(),
            except: except.map(str::to_string),
        })
    }

    /// Sends `msg` to one socket. False if it is not open here and cannot be on another
    /// instance; with a backplane, a socket of another instance is reached through it (true).
    pub fn send(&self, socket_id: &str, msg: &Message) -> Result<bool> {
        let hub = &self.inner.hub;
        let reachable = hub.conn(socket_id).is_some()
            || (hub.distributed() && Sockets::instance_of(socket_id).is_some_and(|i| i != hub.instance));
        if !reachable {
            return Ok(false);
        }
        self.check_size(msg.0.len())?;
        self.command(Command::Send { socket_id: socket_id.to_string(), frame: msg.0.clone() }).map(|_| true)
    }

    /// Delivers a create/update/delete to `collection:<slug>`, `doc:<slug>:<id>` and the
    /// event's extra rooms (each socket once), asking the app's authorize hook when it has one.
    /// `Ok(false)`: queued, but the fan-out queue is over half full (await `drained`).
    pub fn emit_event(&self, event: Event) -> Result<bool> {
        // The frame adds the envelope's few fields to the doc.
        self.check_size(event.doc_json.len() + event.id_json.len() + event.collection.len() + 80)?;
        self.command(Command::Emit(event))
    }

    /// This handle, its fan-out commands (`emit_event`, `broadcast`, `send`) held until `flush`:
    /// checked and counted against the queue's bounds at once, run only once flushed, in order.
    /// For an app thread that makes bursts of them (a JS task emitting several events): flushed
    /// at the end of the burst, the fan-out sees the whole burst in one pass (one write per
    /// socket for all of it) instead of starting on its first command while the rest is being
    /// made. Whoever holds must flush: until then nothing held is sent.
    pub fn holding(&self) -> Self {
        Self { inner: self.inner.clone(), hold: true }
    }

    /// Sends the fan-out commands held so far (see `holding`) on to the fan-out, in order.
    pub fn flush(&self) {
        self.inner.hub.dispatch.flush();
    }

    /// A message no socket's queue could ever hold is refused to the app, not turned into
    /// slow-consumer closes of every recipient.
    fn check_size(&self, size: usize) -> Result<()> {
        let max = self.inner.hub.config.max_backpressure;
        if size > max {
            return Err(CoreError::TooBig { size, max });
        }
        Ok(())
    }

    fn command(&self, cmd: Command) -> Result<bool> {
        let hub = &self.inner.hub;
        if hub.shutting_down.load(Relaxed) {
            return Err(CoreError::Closed);
        }
        match hub.dispatch.submit(cmd, self.hold) {
            Ok(relaxed) => Ok(relaxed),
            Err(crate::dispatch::Refused::Busy) => {
                hub.stats.busy_refusals.fetch_add(1, Relaxed);
                Err(CoreError::Busy)
            }
            Err(crate::dispatch::Refused::Closed) => Err(CoreError::Closed),
        }
    }

    /// Resolves once the fan-out queue is back under a quarter of its bounds (at once when it
    /// is): what to await after a call answered `false` or failed with EBUSY.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        async move { inner.hub.dispatch.drained().await }
    }

    /// `drained`, calling `done` when it resolves.
    pub fn drained_with(&self, done: impl FnOnce() + Send + 'static) {
        match self.runtime() {
            Some(rt) => {
                let wait = self.drained();
                rt.spawn(async move {
                    wait.await;
                    done();
                });
            }
            None => done(),
        }
    }

    /// A socket of this instance by id.
    pub fn socket(&self, socket_id: &str) -> Option<SocketRef> {
        self.inner.hub.socket_ref(socket_id)
    }

    /// Every counter, with room totals.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.hub.snapshot()
    }

    /// Sizes of every room.
    pub fn room_sizes(&self) -> Vec<(String, usize)> {
        self.inner.hub.rooms.sizes()
    }

    /// Ids of every socket open on this instance.
    pub fn socket_ids(&self) -> Vec<String> {
        self.inner.hub.all_conns().iter().map(|c| c.id.to_string()).collect()
    }

    /// Members of `room` on this instance.
    pub fn room_members(&self, room: &str) -> Vec<Member> {
        self.inner.hub.members(room)
    }

    /// Members of `room` on every instance (this one's alone without a backplane); during a
    /// backplane outage, this instance's members only.
    pub fn room_members_everywhere(&self, room: &str) -> impl Future<Output = Vec<Member>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.room_members_with(room, move |members, _partial| {
            let _ = tx.send(members);
        });
        async move { rx.await.unwrap_or_default() }
    }

    /// `room_members_everywhere`, calling `done` with the members and whether the list is
    /// partial (the backplane could not be read: this instance's members only).
    pub fn room_members_with(&self, room: &str, done: impl FnOnce(Vec<Member>, bool) + Send + 'static) {
        let hub = &self.inner.hub;
        match (hub.backplane().members(room), self.runtime()) {
            // fred needs the runtime its clients live on.
            (Some(remote), Some(rt)) => {
                let (hub, room) = (hub.clone(), room.to_string());
                rt.spawn(async move {
                    match remote.await {
                        Some(all) => done(all, false),
                        None => done(hub.members(&room), true),
                    }
                });
            }
            _ => done(hub.members(room), false),
        }
    }

    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.inner.runtime.lock().as_ref().map(|rt| rt.handle().clone())
    }

    /// Closes every socket of user `id` (in `collection`, when given); returns how many.
    /// Default code 4001.
    pub fn disconnect_user(&self, id: &str, collection: Option<&str>, code: Option<u16>) -> usize {
        let code = code.unwrap_or(close_codes::AUTH_EXPIRED);
        self.inner.hub.disconnect_everywhere(Remote::DisconnectUser {
            id: id.to_string(),
            collection: collection.map(str::to_string),
            code,
        })
    }

    /// Closes every socket authenticated with session `sid`; returns how many. Default code 4001.
    pub fn disconnect_session(&self, sid: &str, code: Option<u16>) -> usize {
        let code = code.unwrap_or(close_codes::AUTH_EXPIRED);
        self.inner.hub.disconnect_everywhere(Remote::DisconnectSession { sid: sid.to_string(), code })
    }

    /// Whether `close` has been called.
    pub fn is_closing(&self) -> bool {
        self.inner.hub.shutting_down.load(Relaxed)
    }

    /// Graceful shutdown: stop accepting, close every socket 1001 after its queue flushes (up
    /// to `shutdownTimeout`), then drop what is left. Resolves when done; safe to call twice.
    pub fn close(&self) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel::<()>();
        self.close_with(move || {
            let _ = tx.send(());
        });
        async move {
            let _ = rx.await;
        }
    }

    /// `close`, calling `done` (on a runtime thread) when it has finished.
    pub fn close_with(&self, done: impl FnOnce() + Send + 'static) {
        let Some(handle) = self.runtime() else { return done() };
        let inner = self.inner.clone();
        handle.spawn(async move {
            let hub = inner.hub.clone();
            hub.shutting_down.store(true, Relaxed);
            // What the app made before close() goes out ahead of the 1001s, held or not.
            hub.dispatch.flush();
            inner.stop.notify_one();
            inner.stop_monitoring.notify_one();
            let accept = inner.accept.lock().take();
            if let Some(a) = accept {
                let _ = a.await;
            }
            // One deadline for everything: what the app sent before close() is fanned out and
            // flushed to each socket ahead of its 1001 while time remains; at the deadline what
            // is still queued is dropped and the 1001 goes out right after the frame on the wire.
            let deadline = Instant::now() + hub.config.shutdown_timeout;
            let _ = tokio::time::timeout_at(deadline.into(), hub.dispatch.wait_until(0)).await;
            // Sockets still being upgraded count in `slots`; they close 1001 once registered.
            while hub.slots.load(Relaxed) > 0 && Instant::now() < deadline {
                for c in hub.all_conns() {
                    c.close(close_codes::GOING_AWAY, "server shutting down", false);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for c in hub.all_conns() {
                c.close(close_codes::GOING_AWAY, "server shutting down", true);
            }
            let grace = Instant::now() + hub.config.close_timeout;
            while hub.slots.load(Relaxed) > 0 && Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for c in hub.all_conns() {
                c.kill();
            }
            let gone = Instant::now() + Duration::from_secs(1);
            while hub.stats.connections.load(Relaxed) > 0 && Instant::now() < gone {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            hub.backplane().shutdown().await;
            done();
        });
    }
}

#[cfg(test)]
mod tests {
    /// `/healthz` over real HTTP: 200 while every required task runs, 503 ("degraded") once one
    /// ended outside shutdown (here: a thread holding the guard panics, as a task would).
    #[test]
    fn healthz_answers_503_over_http_while_a_required_task_is_down() {
        use std::io::{Read, Write};
        let get = |port: u16| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        };
        let config =
            crate::ServerConfig { host: "127.0.0.1".into(), worker_threads: Some(1), ..Default::default() };
        let server = crate::Server::start(config, std::sync::Arc::new(crate::hooks::NoHooks)).unwrap();
        let ok = get(server.port());
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains(r#""tasksDown":0"#), "{ok}");
        let hub = server.inner.hub.clone();
        let died = std::thread::spawn(move || {
            let _up = crate::supervise::Required {
                stats: &hub.stats,
                name: "test task",
                stopping: &hub.shutting_down,
            };
            panic!("a required task dies");
        })
        .join();
        assert!(died.is_err());
        let down = get(server.port());
        assert!(down.starts_with("HTTP/1.1 503") && down.contains(r#""status":"degraded""#), "{down}");
    }
}
