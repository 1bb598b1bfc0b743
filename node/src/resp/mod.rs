//! The RESP listener: kache spoken as Redis (RESP2, and RESP3 after `HELLO 3`), with Redis
//! Cluster routing, over the same keyspace as the HTTP API.
//!
//! Layout:
//! - [`frame`]: the request parser (multibulk and inline) and the reply encoder.
//! - [`commands`]: the command table (arity, flags, key positions) and dispatch.
//! - [`keys`]: the keyspace commands, on the same `Cluster` calls as HTTP.
//! - [`server`]: connection and server commands (HELLO, CLIENT, COMMAND, INFO, …).
//! - [`cluster`]: CLUSTER SLOTS / SHARDS / NODES / KEYSLOT / INFO / MYID.
//! - [`errors`]: Redis's error codes for kache's failures.
//!
//! A connection reads, answers every complete command in its buffer in order (a pipeline
//! is answered in one write), then reads again. Commands of one connection run one after
//! another, so replies keep the pipeline's order; connections run concurrently. Any node
//! serves any key: a key another member owns is read or written through the cluster, as
//! over HTTP, so clients that know nothing of the cluster work through a Service and a
//! client with a stale slot map is still served (never sent MOVED; see docs/resp.md).
//!
//! With `--auth-dir`, a connection authenticates once (AUTH, HELLO … AUTH) and each
//! command is checked against its user's role before it runs (`commands::access`);
//! the token is checked again only after the token table changes.
//!
//! Limits are HTTP's: `--max-key-bytes`, `--max-value-bytes`, `--max-batch-bytes` for one
//! command, and `--max-connections` (counted apart from HTTP's). A protocol error is
//! answered and closes only its own connection.
//!
//! With `--client-tls-dir` every connection is TLS (`redis-cli --tls`): the handshake
//! must finish within `--http-header-timeout`, and a connection over the cap is closed
//! without one (the Redis error it gets in plaintext would be unreadable).

mod cluster;
mod commands;
mod errors;
pub mod frame;
mod keys;
mod server;

pub use commands::command_names;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::auth::{self, Access, Auth, Credential};
use crate::cluster::Cluster;
use crate::http::AppState;
use crate::http::serve::{Connections, accept_failed, nodelay};
use errors::{RespError, RespResult};
use frame::{FrameLimits, Reply};

/// Replies are written once this much is buffered, even mid-pipeline, so a long
/// pipeline of large values does not buffer without bound.
const FLUSH_AT: usize = 64 * 1024;
/// The longest client name (`CLIENT SETNAME`).
const MAX_NAME: usize = 256;

/// What a command leaves the connection to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// QUIT: write the reply, then close.
    Close,
}

/// State every RESP connection of the node shares.
#[derive(Debug)]
struct Shared {
    app: AppState,
    clustered: bool,
    counters: Counters,
}

/// INFO's connection and command counts.
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    received: AtomicU64,
    commands: AtomicU64,
    next_id: AtomicU64,
    connections: Arc<Connections>,
}

impl Counters {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> u64 {
        self.connections.open()
    }

    pub fn rejected(&self) -> u64 {
        self.connections.refused()
    }
}

/// One client connection: who it is and what it asked for (protocol, name, READONLY).
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    pub id: u64,
    pub name: Option<Bytes>,
    pub resp3: bool,
    pub readonly: bool,
    /// This node's address as the client reached it.
    pub local: SocketAddr,
    peer: SocketAddr,
    /// A write command ran since the replies were last written: they wait for the log.
    pub wrote: bool,
    /// Client authentication, the node's (off without `--auth-dir`).
    auth: Auth,
    /// The token this connection authenticated with (AUTH, HELLO … AUTH); none yet, or
    /// after RESET. Checked once, then again only after the token table changes.
    credential: Option<Credential>,
}

impl Session {
    pub fn cluster(&self) -> &Cluster {
        &self.shared.app.cluster
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.shared.app.metrics()
    }

    /// Waits, if a write ran since the last replies went out, until the log holds it
    /// (`--fsync always`; at once otherwise): one sync for a whole pipeline. If the disk
    /// refuses, the connection closes without the replies: the writes' outcomes are
    /// unknown, as after any dropped connection.
    async fn durable(&mut self) -> std::io::Result<()> {
        if !std::mem::take(&mut self.wrote) {
            return Ok(());
        }
        self.cluster().store().durable().await.map_err(|err| {
            tracing::warn!(peer = %self.peer, error = %err, "closing a RESP connection: its writes did not reach the disk");
            std::io::Error::other(err.to_string())
        })
    }

    /// Whether this node is a member of a cluster (not a node serving alone).
    pub fn clustered(&self) -> bool {
        self.shared.clustered
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn max_clients(&self) -> usize {
        self.shared.app.limits().max_connections
    }

    fn count_command(&self) {
        self.shared
            .counters
            .commands
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A key argument: not empty (as over HTTP), within `--max-key-bytes`.
    pub fn key<'a>(&self, key: &'a Bytes) -> Result<&'a [u8], RespError> {
        if key.is_empty() {
            return Err(RespError::Err(
                "the key is empty; kache keys are 1 byte or longer".into(),
            ));
        }
        let max = self.shared.app.limits().max_key_bytes;
        if key.len() > max {
            return Err(RespError::Err(format!(
                "key is {} bytes; the limit is {max} bytes (--max-key-bytes)",
                key.len()
            )));
        }
        Ok(key)
    }

    /// A value argument, within `--max-value-bytes`.
    pub fn value<'a>(&self, value: &'a Bytes) -> Result<&'a [u8], RespError> {
        let max = self.shared.app.limits().max_value_bytes;
        if value.len() > max {
            return Err(RespError::Err(format!(
                "value is {} bytes; the limit is {max} bytes (--max-value-bytes)",
                value.len()
            )));
        }
        Ok(value)
    }

    /// The TTL a write stores for `expiry`, given the key's `current` value.
    fn ttl(&self, expiry: keys::Expiry, current: Option<&crate::store::Value>) -> Option<Duration> {
        match expiry {
            keys::Expiry::Default => self.shared.app.default_ttl(),
            keys::Expiry::In(ttl) => Some(ttl),
            keys::Expiry::Keep => current.and_then(|value| value.ttl),
            keys::Expiry::Past | keys::Expiry::Never => None,
        }
    }

    /// Live keys in the partitions this node ranks first for: summed over the "primaries"
    /// of CLUSTER SLOTS, as Redis Cluster clients sum DBSIZE, each key counts once.
    /// Alone, every key.
    pub fn primary_keys(&self) -> u64 {
        let cluster = self.cluster();
        if !self.clustered() {
            return cluster.store().stats().keys;
        }
        let view = cluster.view();
        let me = cluster.node_id();
        let first_ranked = (0..view.list.partitions)
            .filter(|&p| view.owners(p).next().is_some_and(|owner| owner.id == me));
        cluster.store().live_keys_in(first_ranked)
    }

    pub fn set_name(&mut self, name: Bytes) -> Result<(), RespError> {
        if name.len() > MAX_NAME || name.iter().any(|b| *b <= b' ' || *b > b'~') {
            return Err(RespError::Err(
                "Client names cannot contain spaces, newlines or special characters.".into(),
            ));
        }
        self.name = (!name.is_empty()).then_some(name);
        Ok(())
    }

    /// RESET: back to a fresh connection's state, unauthenticated (as Redis, whose RESET
    /// makes the connection the default user's again).
    fn reset(&mut self) {
        self.name = None;
        self.resp3 = false;
        self.readonly = false;
        self.credential = None;
    }

    /// Whether clients must authenticate.
    pub fn auth_on(&self) -> bool {
        self.auth.is_on()
    }

    /// Counts a command refused for want of authentication.
    pub fn count_unauthenticated(&self) {
        self.auth
            .count_refused(auth::Protocol::Resp, auth::Refusal::Unauthenticated);
    }

    /// Whether this connection has authenticated (always, with auth off).
    pub fn authenticated(&self) -> bool {
        !self.auth.is_on() || self.credential.is_some()
    }

    /// AUTH and HELLO … AUTH: `user` (none, or `default`, for any user) with `token`.
    /// With auth off, Redis's answers without a password: `AUTH <password>` is an error,
    /// `AUTH default <anything>` succeeds, any other user does not exist. A failed attempt
    /// leaves the connection as it was.
    pub fn authenticate(&mut self, user: Option<&[u8]>, token: &[u8]) -> RespResult {
        if !self.auth.is_on() {
            return match user {
                None => Err(RespError::no_password()),
                Some(b"default") => Ok(()),
                Some(_) => Err(errors::wrong_pass()),
            };
        }
        let user = user.filter(|user| *user != b"default");
        match self.auth.authenticate(user, token) {
            Some(credential) => {
                self.credential = Some(credential);
                Ok(())
            }
            None => {
                self.auth
                    .count_refused(auth::Protocol::Resp, auth::Refusal::Unauthenticated);
                tracing::debug!(peer = %self.peer, "RESP authentication failed");
                Err(errors::wrong_pass())
            }
        }
    }

    /// Whether this connection may run `command` (named `name` in errors) needing
    /// `access`: NOAUTH before it authenticated, NOPERM for too low a role. A token removed
    /// from `--auth-dir` since is refused with NOAUTH, and the connection closed (as Redis
    /// closes the connections of a deleted user): the client reconnects with its current
    /// token.
    fn authorize(&mut self, access: Access, name: &str) -> Result<(), (RespError, Flow)> {
        let Access::Needs(needed) = access else {
            return Ok(());
        };
        let refuse = |session: &Self, refusal, error| {
            session.auth.count_refused(auth::Protocol::Resp, refusal);
            Err(error)
        };
        let Some(credential) = self.credential.as_mut() else {
            return refuse(
                self,
                auth::Refusal::Unauthenticated,
                (errors::no_auth(), Flow::Continue),
            );
        };
        if !self.auth.recheck(credential) {
            tracing::info!(
                peer = %self.peer,
                user = %credential.principal.user,
                "closing a RESP connection: its token is no longer in --auth-dir"
            );
            self.credential = None;
            return refuse(
                self,
                auth::Refusal::Unauthenticated,
                (errors::no_auth(), Flow::Close),
            );
        }
        let principal = &credential.principal;
        if principal.role < needed {
            let error = errors::no_perm(&principal.user, name);
            return refuse(self, auth::Refusal::Forbidden, (error, Flow::Continue));
        }
        Ok(())
    }

    /// CLIENT INFO's line for this connection.
    fn client_line(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} name={name} db=0 resp={}\n",
            self.id,
            self.peer,
            self.local,
            if self.resp3 { 3 } else { 2 }
        )
    }
}

/// Serves RESP on `listener` until `shutdown` completes; then closes each connection
/// after the command it is running, and returns when all have closed. Over TLS only
/// when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    mut app: AppState,
    clustered: bool,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Key requests from here count as RESP's in the forwarded-requests metric.
    app.cluster = app.cluster.via(auth::Protocol::Resp);
    let limits = app.limits();
    let connections = Arc::new(Connections::new(limits.max_connections));
    let frame_limits = FrameLimits {
        max_command: limits
            .max_batch_bytes
            .max(limits.max_value_bytes + limits.max_key_bytes + 1024),
    };
    let shared = Arc::new(Shared {
        app,
        clustered,
        counters: Counters {
            started: Instant::now(),
            received: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            connections: connections.clone(),
        },
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
        };
        shared.counters.received.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = connections.admit() else {
            if tls.is_none() {
                tokio::spawn(refuse(tcp));
            }
            continue;
        };
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let session = Session {
            auth: shared.app.auth().clone(),
            credential: None,
            id: shared.counters.next_id.fetch_add(1, Ordering::Relaxed),
            shared: shared.clone(),
            name: None,
            resp3: false,
            readonly: false,
            local,
            peer,
            wrote: false,
        };
        let stop = stop_rx.clone();
        let Some(tls) = &tls else {
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(err) = connection(nodelay(tcp), session, frame_limits, stop).await {
                    tracing::debug!(error = %err, "RESP connection ended with an error");
                }
            });
            continue;
        };
        let (tls, handshake_timeout) = (tls.clone(), limits.header_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let served =
                match tokio::time::timeout(handshake_timeout, tls.accept(nodelay(tcp))).await {
                    Ok(Ok(stream)) => connection(stream, session, frame_limits, stop).await,
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no TLS handshake within --http-header-timeout",
                    )),
                };
            if let Err(err) = served {
                tracing::debug!(error = %err, "RESP connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
}

/// A connection over `--max-connections` gets Redis's error, then is closed.
async fn refuse(mut tcp: TcpStream) {
    let _ = tcp
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
}

/// Reads commands and answers them until the client leaves, sends QUIT or garbage, or
/// the node stops.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: S,
    mut session: Session,
    limits: FrameLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    loop {
        // Answer every complete command buffered (a pipeline), then write once.
        loop {
            match frame::parse(&mut input, &limits) {
                Ok(Some(args)) => {
                    let mut reply = Reply {
                        out: &mut output,
                        resp3: session.resp3,
                    };
                    let flow = commands::execute(&mut session, &args, &mut reply).await;
                    if flow == Flow::Close {
                        session.durable().await?;
                        return send(&mut tcp, &output).await;
                    }
                    if output.len() >= FLUSH_AT {
                        session.durable().await?;
                        send(&mut tcp, &output).await?;
                        output.clear();
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(peer = %session.peer, error = %err, "closing a RESP connection");
                    let mut reply = Reply {
                        out: &mut output,
                        resp3: session.resp3,
                    };
                    reply.error(&format!("ERR {err}"));
                    return send(&mut tcp, &output).await;
                }
            }
        }
        if !output.is_empty() {
            session.durable().await?;
            send(&mut tcp, &output).await?;
            output.clear();
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 * 1024);
        }
        let read = tokio::select! {
            read = tcp.read_buf(&mut input) => read?,
            // Sent once, never dropped before: any wake-up means stop.
            _ = stop.changed() => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
    }
}

/// Writes `output` whole (TLS holds records until flushed; TCP's flush does nothing).
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, output: &[u8]) -> std::io::Result<()> {
    stream.write_all(output).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests;
