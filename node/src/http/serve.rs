//! The client HTTP listener: accepts connections up to `--max-connections`, serves each
//! with hyper's HTTP/1 under a header-read timeout, and shuts down gracefully.
//!
//! `axum::serve` exposes neither bound, and without them a client could hold the node's
//! memory and sockets: connections that never finished their headers stayed open
//! forever (50 of 50 after 45 s) and their number had no limit. Here:
//! - A connection over the cap is closed as soon as it is accepted, and counted. Closing
//!   rather than leaving it in the kernel's accept queue gives the client an immediate
//!   error to fall back on (a cache miss is cheaper than a wait) and keeps the queue,
//!   which no metric shows, short.
//! - hyper's `header_read_timeout` closes a connection whose request head has not fully
//!   arrived within `--http-header-timeout`. hyper starts that timer whenever the
//!   connection waits for a head, so it also closes idle keep-alive connections.
//!
//! With `--client-tls-dir` every connection is TLS (see `tls::client_port`): the
//! handshake runs in the connection's task, after the cap admitted it, and must finish
//! within `--http-header-timeout` (counted as a header timeout when it does not); the
//! request head then has its own timeout as above. Without it, connections are served
//! exactly as before.
//!
//! Shutdown: once `shutdown` completes the listener is dropped, every connection is told
//! to finish its request in flight and close, and [`serve`] returns when they all have
//! (the caller bounds that wait by the grace period).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::AppState;

/// Open client connections against the cap, and what the listener turned away.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
        }
    }

    /// A slot for one more connection, or None (counted) when `max` are open.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        // One accept loop admits; connection tasks only release, so the count cannot
        // pass `max` between the check and the increment.
        if self.open.load(Ordering::Acquire) >= self.max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(Admitted(self.clone()))
    }

    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed) as u64
    }

    /// Connections closed on accept because `max` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because a request head did not arrive in time.
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Ordering::Relaxed)
    }
}

/// An open connection's slot; released when its task ends.
#[derive(Debug)]
pub(crate) struct Admitted(Arc<Connections>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the node's HTTP API on `listener` until `shutdown` completes and the
/// connections then open have closed; over TLS only when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits = state.limits();
    let connections = state.connections().clone();
    let service = TowerToHyperService::new(
        super::app(state).map_request(|request: hyper::Request<Incoming>| request.map(Body::new)),
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Connection tasks hold a receiver each; the sender's `closed` is all of them done.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit() else {
            drop(tcp);
            continue;
        };
        let (stop, connections) = (stop_rx.clone(), connections.clone());
        let Some(tls) = &tls else {
            let conn = builder.serve_connection(TokioIo::new(nodelay(tcp)), service.clone());
            tokio::spawn(async move {
                let _slot = slot;
                finish(conn, stop, &connections).await;
            });
            continue;
        };
        let (tls, builder, service) = (tls.clone(), builder.clone(), service.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let handshake =
                tokio::time::timeout(limits.header_timeout, tls.accept(nodelay(tcp))).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "TLS handshake with an HTTP client failed");
                    return;
                }
                Err(_) => {
                    connections.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            finish(conn, stop, &connections).await;
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
}

/// Serves one connection until it closes, or until `stop` (then after the request in
/// flight).
async fn finish<I, S>(
    conn: http1::Connection<I, S>,
    mut stop: watch::Receiver<bool>,
    connections: &Connections,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        // Sent once, never dropped before: any wake-up means stop.
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = served {
        if err.is_timeout() {
            connections.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(error = %err, "HTTP connection ended with an error");
    }
}

/// Without TCP_NODELAY, small responses on keep-alive connections wait on Nagle's
/// algorithm and the client's delayed ACK: a 40 ms tail on every request/response.
pub(crate) fn nodelay(tcp: TcpStream) -> TcpStream {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::warn!(error = %err, "cannot set TCP_NODELAY");
    }
    tcp
}

/// A failed accept: a connection the client already gave up on is skipped; anything
/// else (out of file descriptors, say) is logged and retried after a pause, since
/// retrying at once would spin while the cause lasts. This is what `axum::serve` does.
pub(crate) async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accepting a client connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
