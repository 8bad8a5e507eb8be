//! Plain HTTP on the WebSocket port (`/healthz`, `/metrics`, 404/426) and the hand-over of
//! accepted upgrades to a connection's tasks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::upgrade::{is_upgrade_request, upgrade, UpgradeFut};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    CONTENT_TYPE, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::connection::ConnGuard;
use crate::hub::Hub;
use crate::protocol::close_codes;
use crate::reader::FrameReader;
use crate::socket::Conn;
use crate::stats::Refusal;
use crate::upgrade::{admit, path_served, Admitted};
use crate::writer;

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The WebSocket port (also `/healthz` and `/metrics` unless they have their own address).
    Main,
    /// `monitoring.listen`: `/healthz` and `/metrics` only.
    Monitoring,
}

/// Whether a monitoring request carries the configured bearer token (compared in constant time).
fn monitoring_allowed<B>(hub: &Hub, req: &Request<B>) -> bool {
    let Some(want) = hub.config.monitoring.token.as_deref() else { return true };
    let got = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, t)| t.trim().as_bytes())
        .unwrap_or_default();
    got.len() == want.len() && got.iter().zip(want.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Serves one HTTP request.
pub(crate) async fn handle(
    hub: Arc<Hub>,
    remote: SocketAddr,
    mut req: Request<Incoming>,
    on: Listener,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_owned();
    let monitoring_here = (on == Listener::Monitoring) == hub.config.monitoring.listen.is_some();
    let endpoint = match path.as_str() {
        "/healthz" if hub.config.monitoring.health && monitoring_here => Some(false),
        "/metrics" if hub.config.monitoring.metrics && monitoring_here => Some(true),
        _ => None,
    };
    if on == Listener::Monitoring && endpoint.is_none() {
        return Ok(respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found"));
    }
    if endpoint.is_some() && !monitoring_allowed(&hub, &req) {
        let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", "bearer token required");
        r.headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    if is_upgrade_request(&req) {
        if let Some(bad) = handshake_error(&req) {
            hub.stats.refused(Refusal::Handshake);
            return Ok(bad);
        }
        return Ok(match admit(&hub, &req, remote).await {
            Err(r) => {
                hub.stats.refused(r.why);
                respond(r.status, "text/plain; charset=utf-8", r.message)
            }
            Ok(admitted) => match upgrade(&mut req) {
                Err(_) => {
                    hub.slots.fetch_sub(1, Relaxed);
                    hub.stats.refused(Refusal::Handshake);
                    respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", "bad WebSocket handshake")
                }
                Ok((resp, fut)) => {
                    let mut resp = resp.map(|_| Full::new(Bytes::new()));
                    if let Some(p) = admitted.protocol.clone() {
                        resp.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, p);
                    }
                    tokio::spawn(start_socket(hub, fut, admitted));
                    resp
                }
            },
        });
    }
    Ok(match (req.method(), endpoint) {
        (&Method::GET, Some(false)) => {
            let s = hub.snapshot();
            // A required background task that ended (the fan-out dispatcher, the backplane's
            // receiver) means events are not delivered: unhealthy, so an orchestrator restarts us.
            let (status, code) = if hub.shutting_down.load(Relaxed) {
                ("shutting_down", StatusCode::OK)
            } else if s.tasks_down > 0 {
                ("degraded", StatusCode::SERVICE_UNAVAILABLE)
            } else {
                ("ok", StatusCode::OK)
            };
            let body = format!(
                "{{\"status\":\"{status}\",\"connections\":{},\"uptime\":{},\"instance\":{},\"tasksDown\":{}}}",
                s.connections,
                s.uptime_ms as f64 / 1000.0,
                crate::protocol::json_str(&hub.instance),
                s.tasks_down
            );
            respond(code, "application/json", body)
        }
        (&Method::GET, Some(true)) => {
            respond(StatusCode::OK, "text/plain; version=0.0.4", hub.snapshot().to_prometheus())
        }
        _ if crate::socketio::serves(&hub.config, &path) => respond(
            StatusCode::BAD_REQUEST,
            "application/json",
            format!(
                "{{\"code\":3,\"message\":{}}}",
                crate::protocol::json_str(crate::socketio::LONG_POLLING_REFUSED)
            ),
        ),
        _ if path_served(&hub, &path) => {
            let mut r = respond(
                StatusCode::UPGRADE_REQUIRED,
                "text/plain; charset=utf-8",
                "this endpoint speaks WebSocket only",
            );
            r.headers_mut().insert(UPGRADE, hyper::header::HeaderValue::from_static("websocket"));
            r.headers_mut().insert(SEC_WEBSOCKET_VERSION, hyper::header::HeaderValue::from_static("13"));
            r
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found"),
    })
}

/// RFC 6455 §4.2.1: version 13 only (426 naming it otherwise, §4.4), and a key that is the
/// base64 of 16 bytes (400). Both answers say which version the server speaks.
fn handshake_error<B>(req: &Request<B>) -> Option<Resp> {
    let h = req.headers();
    let answer = |status, body: &'static str| {
        let mut r = respond(status, "text/plain; charset=utf-8", body);
        r.headers_mut().insert(SEC_WEBSOCKET_VERSION, hyper::header::HeaderValue::from_static("13"));
        Some(r)
    };
    if h.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return answer(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13 is supported");
    }
    let key_ok = h.get(SEC_WEBSOCKET_KEY).is_some_and(|k| {
        use base64::Engine as _;
        k.len() == 24
            && base64::engine::general_purpose::STANDARD.decode(k.as_bytes()).is_ok_and(|d| d.len() == 16)
    });
    if !key_ok {
        return answer(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key must be the base64 of 16 bytes");
    }
    None
}

/// Completes the upgrade and starts the socket's task.
async fn start_socket(hub: Arc<Hub>, fut: UpgradeFut, admitted: Admitted) {
    let Some((stream, read_ahead)) = take_tcp(fut).await else {
        hub.slots.fetch_sub(1, Relaxed);
        return;
    };
    let (r, w) = stream.into_split();
    let key = hub.next_key();
    let conn = Arc::new(Conn::new(
        key,
        hub.socket_id(key),
        shared_url(&admitted.info.url),
        admitted.info.remote,
        admitted.user,
        hub.config.max_backpressure,
        hub.now_ms(),
    ));
    // Before anyone can reach the socket: producers write to it directly (see `outbound`).
    conn.out.attach(w);
    if admitted.socketio {
        let _ = conn.socketio.set(Box::default());
    }
    hub.register(&conn);
    let guard = ConnGuard { hub: hub.clone(), conn: conn.clone() };
    let frames = FrameReader::new(r, read_ahead, hub.config.max_message_size, &hub.input);
    let task = tokio::spawn(writer::run(guard, frames, Box::new(admitted.info)));
    conn.set_task(task.abort_handle());
    if hub.shutting_down.load(Relaxed) {
        conn.close(close_codes::GOING_AWAY, "server shutting down", false);
    }
}

thread_local! {
    /// The last socket URL this thread saw: most clients of an app ask for the same one.
    static LAST_URL: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
}

/// `url` as an `Arc` shared with the previous socket of this thread when they asked for the same
/// URL: one allocation (32 B) less per socket in the common case.
fn shared_url(url: &str) -> Arc<str> {
    LAST_URL.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(u) if &**u == url => u.clone(),
            _ => {
                let u: Arc<str> = Arc::from(url);
                *last = Some(u.clone());
                u
            }
        }
    })
}

/// The raw TCP stream under the upgraded connection, plus bytes hyper had already read.
async fn take_tcp(fut: UpgradeFut) -> Option<(TcpStream, Bytes)> {
    let ws = fut.await.ok()?;
    let upgraded = ws.into_inner().into_inner();
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    let stream = parts.io.into_inner();
    forget_http_wakers(&stream);
    Some((stream, parts.read_buf))
}

/// Drops the wakers hyper's connection task left in the stream's readiness slots. The socket's
/// task waits in those slots too, but polls the write slot only once the kernel refused a
/// write (and the read slot only after the open check), so until then the stale waker would
/// keep the finished HTTP task's allocation (~1 KB) alive. Polling with a no-op waker swaps it
/// out and leaves readiness as it was. (A stream already readable then keeps the old waker until it closes: the common case,
/// a client that waits for the 101 before it sends, is the one covered.)
fn forget_http_wakers(stream: &TcpStream) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = stream.poll_read_ready(&mut cx);
    let _ = stream.poll_write_ready(&mut cx);
}
