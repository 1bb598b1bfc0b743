//! The peer port: one listener, two transports. Each accepted connection's first bytes
//! say which: the lean preface ([`lean::frame::MAGIC`]) goes to a [`LeanServer`] task, anything
//! else (HTTP/2's `PRI * HTTP/2.0`) to tonic exactly as before. One port keeps the
//! NetworkPolicy and mutual TLS in one place.
//!
//! Under mutual TLS (`--peer-tls-dir`) nothing is sniffed: the handshake (within
//! [`SNIFF_TIMEOUT`]) checks the caller's certificate (see `tls::peer`), and the ALPN it
//! agreed on picks the transport, `kache-lean/1` or `h2`. A connection that fails the
//! handshake, or agrees on no protocol, is closed and logged; each one that passes
//! carries the caller's name to the per-call checks ([`super::authorize`]).
//!
//! The first bytes are peeked, not read, so tonic sees the connection from its start. A
//! connection is looked at in a task of its own, so one that sends nothing delays
//! nobody; after [`SNIFF_TIMEOUT`] of silence it goes to tonic, which handles it as it
//! always did. Dropping [`Incoming`] (tonic does when the peer server shuts down) stops
//! accepting, and each lean connection closes once the answers to what it has read are
//! written.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};

use super::lean::{self, LeanServer};
use super::stream::{PeerConnectInfo, PeerStream};
use crate::tls::PeerTls;
use crate::tls::peer::{ALPN_H2, ALPN_LEAN};

/// How long a new connection may stay silent before it is handed to tonic (plaintext),
/// or may take to complete its TLS handshake.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the rest of a preface whose first bytes arrived alone.
const PARTIAL_PREFACE_POLL: Duration = Duration::from_millis(1);
/// Sniffed gRPC connections waiting for tonic to take them.
const GRPC_BACKLOG: usize = 64;

/// The peer port's gRPC connections, for `serve_with_incoming_shutdown`; lean connections
/// never show up here.
#[derive(Debug)]
pub struct Incoming {
    grpc: mpsc::Receiver<io::Result<PeerStream>>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.stop.send(true);
    }
}

impl Stream for Incoming {
    type Item = io::Result<PeerStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.grpc.poll_recv(cx)
    }
}

/// Accepts peer connections on `listener` (with TCP keepalive and `TCP_NODELAY`, see
/// [`super::server::incoming`]), serving lean ones with `lean` and yielding the others;
/// under mutual TLS when `tls` is given.
pub fn incoming(listener: TcpListener, lean: LeanServer, tls: Option<PeerTls>) -> Incoming {
    let (grpc_tx, grpc) = mpsc::channel(GRPC_BACKLOG);
    let (stop, stopped) = watch::channel(false);
    let accept = tokio::spawn(async move {
        let mut accepted = super::server::incoming(listener);
        while let Some(connection) = accepted.next().await {
            let stream = match connection {
                Ok(stream) => stream,
                Err(err) => {
                    // tonic logs and skips these too (a connection reset before accept).
                    tracing::debug!(error = %err, "accepting a peer connection failed");
                    continue;
                }
            };
            let (grpc_tx, lean, stopped) = (grpc_tx.clone(), lean.clone(), stopped.clone());
            if let Some(tls) = &tls {
                tokio::spawn(accept_tls(stream, tls.clone(), lean, grpc_tx, stopped));
                continue;
            }
            tokio::spawn(async move {
                if is_lean(&stream).await {
                    let peer = stream.peer_addr().ok();
                    lean.serve(stream, peer, stopped, None).await;
                } else {
                    // Fails only once tonic has stopped taking connections.
                    let _ = grpc_tx.send(Ok(PeerStream::Plain(stream))).await;
                }
            });
        }
    });
    Incoming { grpc, stop, accept }
}

/// Completes the TLS handshake of one connection and hands it to the transport its
/// ALPN names.
async fn accept_tls(
    stream: TcpStream,
    tls: PeerTls,
    lean: LeanServer,
    grpc: mpsc::Sender<io::Result<PeerStream>>,
    stopped: watch::Receiver<bool>,
) {
    let remote = stream.peer_addr().ok();
    let handshake = tokio::time::timeout(SNIFF_TIMEOUT, tls.acceptor().accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(peer = ?remote, error = %err, "refused a peer connection: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(peer = ?remote, "refused a peer connection: no TLS handshake within {SNIFF_TIMEOUT:?}");
            return;
        }
    };
    let connection = stream.get_ref().1;
    // The verifier admitted only certificates that name this cluster.
    let Some(caller) = tls.caller(connection.peer_certificates()) else {
        tracing::warn!(peer = ?remote, "refused a peer connection: its certificate names no member");
        return;
    };
    let caller = Some(std::sync::Arc::new(caller));
    match connection.alpn_protocol() {
        Some(ALPN_LEAN) => lean.serve(stream, remote, stopped, caller).await,
        Some(ALPN_H2) => {
            let info = PeerConnectInfo { remote, caller };
            let _ = grpc.send(Ok(PeerStream::Tls(Box::new(stream), info))).await;
        }
        other => {
            tracing::info!(peer = ?remote, alpn = ?other.map(String::from_utf8_lossy), "refused a peer connection: no kache protocol agreed (ALPN)");
        }
    }
}

/// Whether `stream` starts with the lean magic (the version is the lean server's to
/// check). Anything else, silence, or an error is tonic's.
async fn is_lean(stream: &TcpStream) -> bool {
    let magic = lean::frame::MAGIC;
    let mut first = [0; lean::frame::MAGIC.len()];
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        let Ok(Ok(peeked)) = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await
        else {
            return false;
        };
        if peeked == 0 || !magic.starts_with(&first[..peeked]) {
            return false;
        }
        if peeked == magic.len() {
            return true;
        }
        // A peek returns at once while some bytes are there; wait for the rest.
        tokio::time::sleep(PARTIAL_PREFACE_POLL).await;
    }
}
