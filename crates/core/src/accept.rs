//! The accept loop, and what it does when the process is out of file descriptors: every HTTP
//! connection not (yet) upgraded is listed, oldest first, and when `accept` fails for lack of
//! descriptors the oldest of them is dropped to make room (counted in `idleSheds`), so idle TCP
//! connections cannot lock out upgrades until their header timeout; other accept errors back
//! off exponentially (5 ms to 1 s) instead of spinning.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::http;
use crate::hub::Hub;

/// Removes a connection from the list however its task ends.
struct Unlist(Arc<Hub>, u64);

impl Drop for Unlist {
    fn drop(&mut self) {
        self.0.http_conns.live.lock().remove(&self.1);
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

pub(crate) async fn accept_loop(listener: TcpListener, hub: Arc<Hub>, stop: Arc<Notify>, on: http::Listener) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.notified() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if out_of_descriptors(&e) && hub.http_conns.shed_oldest() {
                        hub.stats.idle_sheds.fetch_add(1, Relaxed);
                        // The aborted task frees its descriptor once it is dropped: a moment.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        let _ = tcp.set_nodelay(true);
        let id = hub.http_conns.next.fetch_add(1, Relaxed);
        // Listed before it runs (it waits for `go`), so that it is never unlisted before listed.
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let conn_hub = hub.clone();
        let task = tokio::spawn(async move {
            let _unlist = Unlist(conn_hub.clone(), id);
            if wait.await.is_err() {
                return;
            }
            let header_timeout = conn_hub.config.header_timeout;
            let service = service_fn(move |req| http::handle(conn_hub.clone(), remote, req, on));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
        hub.http_conns.live.lock().insert(id, task.abort_handle());
        let _ = go.send(());
    }
}
