//! Admission at upgrade time, before any socket exists: method, path, Origin, capacity,
//! credentials, the app's verify hook, and subprotocol choice.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use hyper::header::{HeaderValue, AUTHORIZATION, COOKIE, HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Method, Request, StatusCode};
use tokio::time::timeout;

use crate::auth::{find_credentials, TokenSource, UserClaims};
use crate::hooks::UpgradeInfo;
use crate::hub::Hub;
use crate::stats::Refusal;

/// An upgrade the server will accept.
pub(crate) struct Admitted {
    pub user: Option<UserClaims>,
    pub protocol: Option<HeaderValue>,
    pub info: UpgradeInfo,
}

/// An upgrade refused with an HTTP status.
pub(crate) struct Refused {
    pub status: StatusCode,
    pub why: Refusal,
    pub message: &'static str,
}

fn refuse(status: StatusCode, why: Refusal, message: &'static str) -> Refused {
    Refused { status, why, message }
}

/// Whether `path` is served as a WebSocket endpoint.
pub(crate) fn path_served(hub: &Hub, path: &str) -> bool {
    match hub.config.path.as_deref() {
        None => true,
        Some(p) => match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        },
    }
}

/// What hooks see of a header: never a credential. `Authorization` becomes `[redacted]`; the
/// auth cookie is removed from `Cookie` (other cookies stay).
fn redacted_header(name: &hyper::header::HeaderName, value: &HeaderValue, auth_cookie: &str) -> String {
    let v = String::from_utf8_lossy(value.as_bytes());
    if name == AUTHORIZATION {
        return "[redacted]".to_string();
    }
    if name == COOKIE {
        return v
            .split(';')
            .map(str::trim)
            .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != auth_cookie))
            .collect::<Vec<_>>()
            .join("; ");
    }
    v.into_owned()
}

/// The request target without its `token` query parameter, so no token reaches hooks, logs or
/// `socket.url`.
pub(crate) fn redacted_url(path: &str, query: Option<&str>) -> String {
    match query {
        None => path.to_string(),
        Some(q) => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != "token")
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    }
}

/// The host part of an authority (`host[:port]`, `[v6]:port`), lower-cased.
fn hostname(authority: &str) -> String {
    let a = authority.trim();
    let host = if a.starts_with('[') {
        a.find(']').map_or(a, |end| &a[..=end])
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    host.to_ascii_lowercase()
}

/// Whether an auth cookie sent with `origin` counts: the Origin is allowed, trusted, or names the
/// same host as the request's `Host` (any port: cookies are not scoped by port either).
fn cookie_origin_trusted<B>(hub: &Hub, req: &Request<B>, origin: &str) -> bool {
    if hub.origins.iter().chain(&hub.trusted_origins).any(|r| r.allows(origin)) {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else { return false };
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
    host.is_some_and(|h| !h.is_empty() && hostname(h) == hostname(authority))
}

fn header_list<B>(req: &Request<B>, auth_cookie: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let v = redacted_header(name, value, auth_cookie);
        match out.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            None => out.push((name.as_str().to_string(), v)),
        }
    }
    out
}

/// The first offered subprotocol the server accepts (any, when none are configured).
fn choose_protocol<B>(hub: &Hub, req: &Request<B>) -> Option<HeaderValue> {
    let offered = req.headers().get_all(SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    let mut candidates = offered.flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty());
    let accepted = &hub.config.protocols;
    let pick = if accepted.is_empty() {
        candidates.next()
    } else {
        candidates.find(|p| accepted.iter().any(|a| a == p))
    };
    pick.and_then(|p| HeaderValue::from_str(p).ok())
}

/// Runs every admission check. On success one connection slot is held for the caller.
pub(crate) async fn admit<B>(
    hub: &Arc<Hub>,
    req: &Request<B>,
    remote: SocketAddr,
) -> Result<Admitted, Refused> {
    if req.method() != Method::GET {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Method,
            "WebSocket upgrades must use GET",
        ));
    }
    if !path_served(hub, req.uri().path()) {
        return Err(refuse(StatusCode::NOT_FOUND, Refusal::Path, "no WebSocket endpoint at this path"));
    }
    let origin = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    if !hub.origins.is_empty() {
        let ok = origin.as_deref().is_some_and(|o| hub.origins.iter().any(|r| r.allows(o)));
        if !ok {
            return Err(refuse(StatusCode::FORBIDDEN, Refusal::Origin, "origin not allowed"));
        }
    }
    if hub.shutting_down.load(Relaxed) {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, Refusal::Capacity, "server is shutting down"));
    }
    if hub.slots.fetch_add(1, Relaxed) >= hub.config.max_connections {
        hub.slots.fetch_sub(1, Relaxed);
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, Refusal::Capacity, "connection limit reached"));
    }
    let release = |r: Refused| {
        hub.slots.fetch_sub(1, Relaxed);
        r
    };

    let cfg = &hub.config;
    let url = redacted_url(req.uri().path(), req.uri().query());
    // No Origin: not a browser, so nothing ambient about the cookie.
    let cookie_ok = origin.as_deref().is_none_or(|o| cookie_origin_trusted(hub, req, o));
    let headers = header_list(req, &cfg.auth_cookie);
    let mut info = UpgradeInfo { url, origin, remote, headers, credential: None };
    let unauthorized = || refuse(StatusCode::UNAUTHORIZED, Refusal::Auth, "missing or invalid credentials");
    // A hook that did not answer in time says nothing about the credentials: a busy event loop
    // must not look like a bad token (401/403 make clients give up), so it is a retryable 503.
    let late = || {
        hub.stats.handler_timeouts.fetch_add(1, Relaxed);
        refuse(StatusCode::SERVICE_UNAVAILABLE, Refusal::Capacity, "the app did not answer in time; retry")
    };
    let mut user = None;
    // A non-JWT `Authorization` (another scheme, an API key) the app did not resolve: the next
    // source (the cookie) may still authenticate, as with Payload's strategies; alone it is a 401.
    let mut unresolved = false;
    for c in find_credentials(req.headers(), req.uri().query(), &cfg.auth_cookie) {
        if c.source == TokenSource::Cookie && !cookie_ok {
            hub.stats.untrusted_cookies.fetch_add(1, Relaxed);
            continue;
        }
        if c.is_jwt() {
            if cfg.jwt_key.is_none() {
                continue; // no key: JWTs cannot be checked, so they are not credentials here
            }
            match hub.verifier.verify(&c.token) {
                Ok(claims) => {
                    if let Some(check) = hub.hooks.validate_session(&claims) {
                        match timeout(cfg.hook_timeout, check).await {
                            Ok(true) => {}
                            Ok(false) => return Err(release(unauthorized())),
                            Err(_) => return Err(release(late())),
                        }
                    }
                    user = Some(claims)
                }
                // Browsers keep sending stale cookies: try the next source (a fresh query token).
                Err(_) if c.source == TokenSource::Cookie => continue,
                Err(_) => return Err(release(unauthorized())),
            }
        } else {
            // The resolver sees a header credential with its scheme, as it was sent.
            info.credential = Some(match c.source {
                TokenSource::AuthorizationJwt => format!("JWT {}", c.token),
                TokenSource::AuthorizationBearer => format!("Bearer {}", c.token),
                _ => c.token,
            });
            let resolved = match hub.hooks.resolve_credentials(&info) {
                // Late is not a refusal: 503 (retry), like the other upgrade hooks.
                Some(fut) => match timeout(cfg.hook_timeout, fut).await {
                    Ok(u) => Some(u),
                    Err(_) => return Err(release(late())),
                },
                None => None,
            };
            info.credential = None;
            match resolved {
                Some(Some(u)) => user = Some(u),
                Some(None) => {
                    unresolved = true;
                    continue;
                }
                None => continue,
            }
        }
        break;
    }
    if user.is_none() && (cfg.require_auth || unresolved) {
        return Err(release(unauthorized()));
    }
    if let Some(fut) = hub.hooks.verify_client(&info) {
        match timeout(cfg.hook_timeout, fut).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(release(refuse(
                    StatusCode::FORBIDDEN,
                    Refusal::Verify,
                    "refused by verifyClient",
                )))
            }
            Err(_) => return Err(release(late())),
        }
    }
    Ok(Admitted { user, protocol: choose_protocol(hub, req), info })
}
