//! The client side of the lean transport: one multiplexed connection to one peer
//! address, shared by every call to it.
//!
//! A [`Connection`] is a cheap handle on a driver task that connects, exchanges the
//! preface, and then runs two loops: the writer drains the call queue into one buffer
//! and writes it when the queue is empty (so calls made while a write is under way go
//! out together), and the reader completes each call's oneshot by the id of its answer,
//! in whatever order the answers come.
//!
//! - A peer that does not echo the preface (a node without the lean transport, whose
//!   gRPC server closes the connection) *refuses*: calls get [`CallError::Refused`], were
//!   never sent, and go over gRPC instead.
//! - A connection that fails, or that hears nothing for [`IDLE_TIMEOUT`] although it pings
//!   every [`KEEPALIVE_INTERVAL`], fails every call in flight with `UNAVAILABLE` (its
//!   outcome is unknown, as after a failed gRPC call) and stays closed; the pool opens a
//!   new one for the next call ([`Connection::is_closed`]).
//! - Under mutual TLS the connection is a TLS 1.3 one agreeing on ALPN `kache-lean/1`,
//!   and the preface exchange runs inside it; a server that agrees on no ALPN refuses.
//!   A plaintext connection is split into its owned halves as before; a TLS one is
//!   split with `tokio::io::split` (a lock per read or write, TLS only).
//! - At most [`MAX_IN_FLIGHT`] calls are in flight at once; more wait for a place (within
//!   their [`REQUEST_TIMEOUT`]), so a slow peer slows its callers instead of growing a
//!   queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tonic::Status;

use super::frame::{self, Kind, PREFACE_LEN};
use super::server::check_size;
use super::{IDLE_TIMEOUT, KEEPALIVE_INTERVAL, WRITE_TIMEOUT};
use crate::tls::PeerTls;
use crate::tls::peer::ALPN_LEAN;

/// Calls in flight on one connection, as the gRPC server allows streams on one.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long one call may take, waiting for a place included (the gRPC client's timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting and exchanging the preface may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Queued frames gathered into one write at most (more wait for the next write).
const WRITE_BATCH: usize = 64 << 10;
const READ_CHUNK: usize = 16 << 10;

/// Why a lean call did not produce an answer.
#[derive(Debug)]
pub enum CallError {
    /// The call failed as a gRPC call would have: the same codes, the same messages
    /// where the server produced them.
    Status(Status),
    /// The peer does not speak the lean transport; the request was not sent.
    Refused,
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

/// A handle on one connection to one peer address. Clones share it; the connection
/// closes when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::UnboundedSender<Bytes>,
    calls: Arc<Calls>,
    places: Semaphore,
    next_id: AtomicU64,
    max_message: usize,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The calls waiting for an answer, and whether the connection can still give one.
/// A parking_lot mutex, held for a map operation and never across an `.await`; the
/// phase lives under it so that no call registers after the connection failed its calls.
#[derive(Debug, Default)]
struct Calls {
    state: Mutex<CallsState>,
}

#[derive(Debug, Default)]
struct CallsState {
    phase: Phase,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
}

#[derive(Debug, Default, Clone)]
enum Phase {
    #[default]
    Connecting,
    Open,
    Refused,
    Closed(String),
}

#[derive(Debug)]
enum Answer {
    Reply(Bytes),
    Failed(Status),
    Refused,
}

impl Connection {
    /// A connection to `address` (opened in the background; calls made meanwhile wait
    /// for it), exchanging messages of up to `max_message` bytes; over TLS with `tls`
    /// (a connector checking that the server is the member meant).
    pub fn open(address: SocketAddr, max_message: usize, tls: Option<TlsConnector>) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        let calls = Arc::new(Calls::default());
        let driver = tokio::spawn(drive(address, queued, Arc::clone(&calls), max_message, tls));
        Self {
            inner: Arc::new(Inner {
                queue,
                calls,
                places: Semaphore::new(MAX_IN_FLIGHT),
                next_id: AtomicU64::new(1),
                max_message,
                driver,
            }),
        }
    }

    /// Whether this connection failed (a new one is needed) or was refused.
    pub fn is_closed(&self) -> bool {
        matches!(
            self.inner.calls.state.lock().phase,
            Phase::Closed(_) | Phase::Refused
        )
    }

    /// Whether the peer refused the lean preface.
    pub fn is_refused(&self) -> bool {
        matches!(self.inner.calls.state.lock().phase, Phase::Refused)
    }

    /// Sends `request` as a `kind` frame and decodes the answer as `R`.
    pub async fn call<R: Message + Default>(
        &self,
        kind: Kind,
        request: &impl Message,
    ) -> Result<R, CallError> {
        let len = request.encoded_len();
        check_size(len, self.inner.max_message)?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(kind, request, len))
            .await
            // What tonic answers when its timeout expires.
            .map_err(|_| Status::cancelled("Timeout expired"))??;
        let reply = match answer {
            Answer::Reply(body) => body,
            Answer::Failed(status) => return Err(status.into()),
            Answer::Refused => return Err(CallError::Refused),
        };
        R::decode(reply).map_err(|err| {
            Status::internal(format!("failed to decode Protobuf message: {err}")).into()
        })
    }

    /// Queues one request and waits for its answer.
    async fn exchange(
        &self,
        kind: Kind,
        request: &impl Message,
        len: usize,
    ) -> Result<Answer, CallError> {
        let inner = &self.inner;
        let _place = inner
            .places
            .acquire()
            .await
            .map_err(|_| Status::unavailable("lean connection closed"))?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        inner.calls.register(id, answer)?;
        // An abandoned call (a read that had enough answers, a timeout) forgets its id; an
        // answer that comes later is dropped.
        let _waiting = Unregister {
            calls: &inner.calls,
            id,
        };
        let mut request_frame = BytesMut::with_capacity(frame::HEADER_LEN + len);
        frame::encode(&mut request_frame, id, kind, request);
        if inner.queue.send(request_frame.freeze()).is_err() {
            return Err(Status::unavailable("lean connection closed").into());
        }
        answered
            .await
            .map_err(|_| Status::unavailable("lean connection closed").into())
    }
}

/// Removes a call's id when the call ends, however it ends.
struct Unregister<'a> {
    calls: &'a Calls,
    id: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.calls.state.lock().waiting.remove(&self.id);
    }
}

impl Calls {
    fn register(&self, id: u64, answer: oneshot::Sender<Answer>) -> Result<(), CallError> {
        let mut state = self.state.lock();
        match &state.phase {
            Phase::Connecting | Phase::Open => {
                state.waiting.insert(id, answer);
                Ok(())
            }
            Phase::Refused => Err(CallError::Refused),
            Phase::Closed(why) => Err(Status::unavailable(why.clone()).into()),
        }
    }

    fn answer(&self, id: u64, answer: Answer) {
        let waiting = self.state.lock().waiting.remove(&id);
        if let Some(waiting) = waiting {
            // The caller may have gone meanwhile.
            let _ = waiting.send(answer);
        }
    }

    fn open(&self) {
        self.state.lock().phase = Phase::Open;
    }

    /// Ends the connection: every waiting call gets `answer`, and later calls the same.
    fn end(&self, phase: &Phase) {
        let waiting = {
            let mut state = self.state.lock();
            state.phase = phase.clone();
            std::mem::take(&mut state.waiting)
        };
        for (_, call) in waiting {
            let answer = match phase {
                Phase::Closed(why) => Answer::Failed(Status::unavailable(why.clone())),
                _ => Answer::Refused,
            };
            let _ = call.send(answer);
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Ended {
    /// Every handle is gone: nobody can call any more.
    Dropped,
    Refused,
    Failed(String),
}

/// Connects, exchanges the preface, then writes and reads until the connection fails
/// or every handle is dropped.
async fn drive(
    address: SocketAddr,
    mut queued: mpsc::UnboundedReceiver<Bytes>,
    calls: Arc<Calls>,
    max_message: usize,
    tls: Option<TlsConnector>,
) {
    let ended = match connect(address).await {
        Err(ended) => ended,
        Ok(tcp) => match tls {
            // Plaintext: the owned halves, no lock between reader and writer.
            None => match preface(tcp).await {
                Ok(stream) => {
                    calls.open();
                    let (read, write) = stream.into_split();
                    exchange(read, write, &mut queued, &calls, max_message).await
                }
                Err(ended) => ended,
            },
            Some(tls) => match secure(tcp, address, &tls).await {
                Ok(stream) => {
                    calls.open();
                    let (read, write) = tokio::io::split(stream);
                    exchange(read, write, &mut queued, &calls, max_message).await
                }
                Err(ended) => ended,
            },
        },
    };
    match ended {
        Ended::Dropped => calls.end(&Phase::Closed("lean connection closed".into())),
        Ended::Refused => {
            tracing::info!(%address, "peer does not speak the lean transport; using gRPC");
            calls.end(&Phase::Refused);
        }
        Ended::Failed(why) => {
            tracing::debug!(%address, error = %why, "lean peer connection failed");
            calls.end(&Phase::Closed(format!(
                "lean connection to {address}: {why}"
            )));
        }
    }
}

/// Writes and reads until either loop ends.
async fn exchange(
    read: impl AsyncRead + Unpin,
    write: impl AsyncWrite + Unpin,
    queued: &mut mpsc::UnboundedReceiver<Bytes>,
    calls: &Calls,
    max_message: usize,
) -> Ended {
    tokio::select! {
        ended = write_loop(write, queued) => ended,
        ended = read_loop(read, calls, max_message) => ended,
    }
}

/// Connects with `TCP_NODELAY`; an unreachable peer has failed.
async fn connect(address: SocketAddr) -> Result<TcpStream, Ended> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| Ended::Failed("connect timed out".into()))?
        .map_err(|err| Ended::Failed(format!("connect: {err}")))?;
    // Without NODELAY each frame would wait on Nagle and delayed ACKs (see
    // `peer::server::incoming`).
    stream
        .set_nodelay(true)
        .map_err(|err| Ended::Failed(err.to_string()))?;
    Ok(stream)
}

/// The TLS handshake (the server must agree on the lean ALPN), then the preface.
async fn secure(
    tcp: TcpStream,
    address: SocketAddr,
    tls: &TlsConnector,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Ended> {
    let stream = tokio::time::timeout(
        REQUEST_TIMEOUT,
        tls.connect(PeerTls::server_name(address), tcp),
    )
    .await
    .map_err(|_| Ended::Failed("no TLS handshake".into()))?
    .map_err(|err| Ended::Failed(format!("TLS handshake: {err}")))?;
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_LEAN) {
        return Err(Ended::Refused);
    }
    preface(stream).await
}

/// Exchanges the preface. A peer that answers anything else, or closes, has refused.
async fn preface<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<S, Ended> {
    let mut echoed = [0; PREFACE_LEN];
    let exchanged = tokio::time::timeout(REQUEST_TIMEOUT, async {
        stream.write_all(&frame::preface()).await?;
        stream.flush().await?;
        stream.read_exact(&mut echoed).await
    })
    .await
    .map_err(|_| Ended::Failed("no answer to the preface".into()))?;
    match exchanged {
        Ok(_) if echoed == frame::preface() => Ok(stream),
        Ok(_) => Err(Ended::Refused),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Err(Ended::Refused),
        Err(err) => Err(Ended::Failed(err.to_string())),
    }
}

/// Writes queued frames, gathering what is queued into one write, and a ping every
/// [`KEEPALIVE_INTERVAL`].
async fn write_loop(
    mut write: impl AsyncWrite + Unpin,
    queued: &mut mpsc::UnboundedReceiver<Bytes>,
) -> Ended {
    let mut batch = BytesMut::with_capacity(WRITE_BATCH);
    let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        tokio::select! {
            first = queued.recv() => {
                let Some(first) = first else { return Ended::Dropped };
                batch.extend_from_slice(&first);
                while batch.len() < WRITE_BATCH {
                    let Ok(next) = queued.try_recv() else { break };
                    batch.extend_from_slice(&next);
                }
            }
            _ = keepalive.tick() => frame::encode_empty(&mut batch, 0, Kind::Ping),
        }
        let written = async {
            write.write_all(&batch).await?;
            // TLS holds records until flushed; a TCP half's flush does nothing.
            write.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, written).await {
            Ok(Ok(())) => batch.clear(),
            Ok(Err(err)) => return Ended::Failed(err.to_string()),
            Err(_) => return Ended::Failed(format!("the peer read nothing for {WRITE_TIMEOUT:?}")),
        }
    }
}

/// Reads answers and hands each to its call.
async fn read_loop(mut read: impl AsyncRead + Unpin, calls: &Calls, max_message: usize) -> Ended {
    let mut inbox = BytesMut::with_capacity(READ_CHUNK);
    loop {
        inbox.reserve(READ_CHUNK);
        match tokio::time::timeout(IDLE_TIMEOUT, read.read_buf(&mut inbox)).await {
            Ok(Ok(0)) => return Ended::Failed("closed by the peer".into()),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Ended::Failed(err.to_string()),
            Err(_) => return Ended::Failed(format!("no answer or pong for {IDLE_TIMEOUT:?}")),
        }
        loop {
            let frame = match frame::decode(&mut inbox, max_message) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "a peer sent garbage on a lean connection");
                    return Ended::Failed(err.to_string());
                }
            };
            match frame.kind {
                Kind::Reply => calls.answer(frame.id, Answer::Reply(frame.body)),
                Kind::Error => calls.answer(frame.id, Answer::Failed(frame::status_of(frame.body))),
                Kind::Pong => {}
                kind @ (Kind::Get | Kind::Apply | Kind::Ping) => {
                    tracing::warn!(
                        ?kind,
                        "a peer sent a request frame on a lean client connection"
                    );
                    return Ended::Failed(format!("the peer sent a {kind:?} frame"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
