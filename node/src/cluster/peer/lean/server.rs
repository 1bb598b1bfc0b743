//! The server side of the lean transport: one task per connection, answering each
//! request with the same handler the gRPC service runs ([`PeerService::serve_get`],
//! [`PeerService::serve_apply`]).
//!
//! The handlers are synchronous (an in-memory store), so a connection needs no task per
//! request: it reads what has arrived, answers every complete frame in order, and writes
//! the answers in one go. That is the batching under load, and it is also the bound on
//! what a peer can make the server hold: at most one read buffer of requests (a frame
//! is at most the peer message limit) and [`FLUSH_AT`] bytes of answers (plus the one
//! being encoded) per connection. A peer that stops reading its answers stops being read.
//!
//! Under mutual TLS each request frame's caller is admitted first (see
//! [`crate::cluster::peer::authorize`]); a refused one gets an error frame and the
//! connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tonic::Status;

use super::frame::{self, Frame, Kind, PREFACE_LEN};
use super::{IDLE_TIMEOUT, WRITE_TIMEOUT};
use crate::cluster::peer::server::PeerService;
use crate::tls::identity::PeerName;

/// Answers buffered before they are written even though more requests wait (a batch of
/// reads of large values would otherwise grow the buffer by all of them).
const FLUSH_AT: usize = 64 << 10;
/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 16 << 10;
/// How long a connection may take to send the whole preface once its first bytes came.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);

/// What answers lean connections: the peer service and its message limit.
#[derive(Debug, Clone)]
pub struct LeanServer {
    service: PeerService,
    max_message: usize,
}

/// Why a connection was closed by this end.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error("no frame for {0:?}")]
    Idle(Duration),
    #[error("the peer did not read its answers for {0:?}")]
    Stalled(Duration),
    #[error("a client sent a {0:?} frame")]
    Unexpected(Kind),
    #[error("preface {0:?} is not a lean preface of a version this node speaks")]
    Preface(Vec<u8>),
    #[error("refused the caller: {0}")]
    Refused(String),
    /// Writes were applied but the data dir did not take them: their answers are not
    /// sent (the coordinator counts the replica as failed, an unknown outcome).
    #[error(transparent)]
    Durable(#[from] crate::store::StoreError),
}

impl LeanServer {
    pub fn new(service: PeerService) -> Self {
        let max_message = service.max_message();
        Self {
            service,
            max_message,
        }
    }

    /// Serves one connection whose first bytes were the lean magic (or that agreed on
    /// the lean ALPN), until the peer closes it, breaks the protocol (logged, and only
    /// this connection closes), or `stop` turns true (after the answers to what was read
    /// are written). `caller` is the verified name under mutual TLS, whose requests are
    /// admitted one by one; `None` on a plaintext port.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer: Option<SocketAddr>,
        mut stop: watch::Receiver<bool>,
        caller: Option<Arc<PeerName>>,
    ) {
        let peer = peer.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let served = self
            .handshake_and_serve(&mut stream, &mut stop, caller.as_deref())
            .await;
        match served {
            Ok(()) => tracing::debug!(%peer, "lean peer connection closed"),
            Err(Closed::Io(err)) => {
                tracing::debug!(%peer, error = %err, "lean peer connection lost");
            }
            Err(err) => tracing::warn!(%peer, error = %err, "closed a lean peer connection"),
        }
        let _ = stream.shutdown().await;
    }

    /// Stops only between batches (a read is cancel-safe; a half-written answer is not).
    async fn handshake_and_serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        stop: &mut watch::Receiver<bool>,
        caller: Option<&PeerName>,
    ) -> Result<(), Closed> {
        let mut preface = [0; PREFACE_LEN];
        tokio::time::timeout(PREFACE_TIMEOUT, stream.read_exact(&mut preface))
            .await
            .map_err(|_| Closed::Idle(PREFACE_TIMEOUT))??;
        if preface != frame::preface() {
            return Err(Closed::Preface(preface.to_vec()));
        }
        stream.write_all(&frame::preface()).await?;
        // TLS holds records until flushed; a TcpStream's flush does nothing.
        stream.flush().await?;
        let (mut inbox, mut outbox) = (BytesMut::with_capacity(READ_CHUNK), BytesMut::new());
        loop {
            inbox.reserve(READ_CHUNK);
            let read = tokio::select! {
                read = tokio::time::timeout(IDLE_TIMEOUT, stream.read_buf(&mut inbox)) => read,
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            };
            let read = read.map_err(|_| Closed::Idle(IDLE_TIMEOUT))??;
            if read == 0 {
                return Ok(());
            }
            // Whether answers in the outbox acknowledge writes, which under
            // `--fsync always` go out only once the log holding them is synced: one sync
            // for every write in the batch.
            let mut stored = false;
            while let Some(frame) = frame::decode(&mut inbox, self.max_message)? {
                if let Some(caller) = caller
                    && matches!(frame.kind, Kind::Get | Kind::Apply)
                    && let Err(status) = self.service.admit(caller).await
                {
                    if stored {
                        self.service.store().durable().await?;
                    }
                    frame::encode_error(&mut outbox, frame.id, &status);
                    write(stream, &mut outbox).await?;
                    return Err(Closed::Refused(status.message().to_owned()));
                }
                stored |= self.answer(frame, &mut outbox)?;
                if outbox.len() >= FLUSH_AT {
                    if std::mem::take(&mut stored) {
                        self.service.store().durable().await?;
                    }
                    write(stream, &mut outbox).await?;
                }
            }
            if stored {
                self.service.store().durable().await?;
            }
            write(stream, &mut outbox).await?;
        }
    }

    /// Appends the answer to one request frame to `outbox`. Returns whether it
    /// acknowledges a stored write.
    fn answer(&self, frame: Frame, outbox: &mut BytesMut) -> Result<bool, Closed> {
        let id = frame.id;
        let mut stored = false;
        let answered = match frame.kind {
            Kind::Get => decode(frame.body)
                .and_then(|request| self.service.serve_get(&request))
                .and_then(|reply| self.encode_reply(outbox, id, &reply)),
            Kind::Apply => decode(frame.body)
                .and_then(|request| self.service.serve_apply(request))
                .and_then(|reply| {
                    stored = reply.applied > 0;
                    self.encode_reply(outbox, id, &reply)
                }),
            Kind::Ping => {
                frame::encode_empty(outbox, id, Kind::Pong);
                Ok(())
            }
            kind @ (Kind::Reply | Kind::Error | Kind::Pong) => {
                return Err(Closed::Unexpected(kind));
            }
        };
        if let Err(status) = answered {
            frame::encode_error(outbox, id, &status);
        }
        Ok(stored)
    }

    /// Appends `reply`, or the error gRPC gives an answer over the message limit.
    fn encode_reply(
        &self,
        outbox: &mut BytesMut,
        id: u64,
        reply: &impl Message,
    ) -> Result<(), Status> {
        check_size(reply.encoded_len(), self.max_message)?;
        frame::encode(outbox, id, Kind::Reply, reply);
        Ok(())
    }
}

/// A request body as gRPC decodes one: a body that is not the message is `INTERNAL`.
fn decode<M: Message + Default>(body: bytes::Bytes) -> Result<M, Status> {
    M::decode(body)
        .map_err(|err| Status::internal(format!("failed to decode Protobuf message: {err}")))
}

/// A message over the limit, refused as tonic refuses one (`OUT_OF_RANGE`).
pub fn check_size(len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {max} bytes"
        )));
    }
    Ok(())
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, outbox: &mut BytesMut) -> Result<(), Closed> {
    if outbox.is_empty() {
        return Ok(());
    }
    let written = async {
        stream.write_all(outbox).await?;
        stream.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, written)
        .await
        .map_err(|_| Closed::Stalled(WRITE_TIMEOUT))??;
    outbox.clear();
    Ok(())
}
