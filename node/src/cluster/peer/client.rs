//! The client side of the peer protocol: one lazily connected channel per member, to the
//! address discovery gives for it now, and for the single-key hot calls ([`PeerClients::get`],
//! [`PeerClients::apply`]) one lean connection per member (see [`super::lean`]), with gRPC
//! for a peer that does not speak it.
//!
//! A member without a known address is an `UNAVAILABLE` error, like a failed call, never
//! "no data". A call that fails on the transport makes discovery look again.
//!
//! Every call made through the pool is timed and counted by peer, method and outcome
//! ([`crate::metrics::peer`]): the hot calls here, the others through [`PeerClients::timed`].
//!
//! Under mutual TLS (`--peer-tls-dir`) both kinds of connection are TLS 1.3: the channel
//! through [`TlsConnect`], a lean connection in its driver; each checks that the server
//! is the member this node meant to call (`tls::peer`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Uri};

use super::lean::{self, CallError, frame::Kind};
use crate::cluster::discovery::Discovery;
use crate::cluster::membership::Member;
use crate::cluster::wire::{
    is_syncing,
    proto::{self, peer_client::PeerClient},
};
use crate::metrics::{PeerMethod, PeerRpcs};
use crate::tls::PeerTls;
use crate::tls::peer::{ALPN_H2, ALPN_LEAN};

/// A client for one member.
pub type Client = PeerClient<Channel>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a read-through `Fill` may take: past any upstream timeout a spec allows
/// to be useful. The call itself is bounded by the upstream's timeout.
const FILL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a request waits for discovery to learn a member's address. A new member's
/// EndpointSlice entry can reach this node a moment after the member list naming it.
const ADDRESS_WAIT: Duration = Duration::from_secs(3);
const ADDRESS_POLL: Duration = Duration::from_millis(50);
/// HTTP/2 pings while calls are open, and how long an answer may take: a call to a peer
/// gone without a FIN fails within 30 s instead of waiting on the dead connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a peer that refused the lean transport is called over gRPC before it is
/// asked again (a rolling upgrade replaces it with a node that speaks it).
const LEAN_RETRY: Duration = Duration::from_secs(60);

/// Clients for other members: one lazily connected channel per member, to the address
/// discovery gives for it now. When that address changes (a recreated pod), the next call
/// opens a channel to the new one and the old channel is dropped.
#[derive(Debug, Clone)]
pub struct PeerClients {
    discovery: Discovery,
    /// The largest message sent or accepted (see [`crate::cluster::chunk::max_message_bytes`]).
    max_message: usize,
    /// A parking_lot mutex, never held across an `.await`: callers clone a client out.
    channels: Arc<Mutex<HashMap<String, Connected>>>,
    /// Channels for read-through fills, which wait on an upstream and so may take longer
    /// than [`REQUEST_TIMEOUT`]: each call sets its own deadline.
    fills: Arc<Mutex<HashMap<String, Connected>>>,
    /// Lean connections, by member; the same kind of lock, for the same reason.
    lean: Arc<Mutex<HashMap<String, Lean>>>,
    /// Mutual TLS for every connection, with `--peer-tls-dir`.
    tls: Option<PeerTls>,
    /// Latency and failures of every call, by peer and method.
    metrics: Arc<PeerRpcs>,
}

/// A member's channel and the address it connects to.
type Connected = (SocketAddr, PeerClient<Channel>);

/// A member's lean connection, the address it connects to, and when it was opened.
#[derive(Debug)]
struct Lean {
    address: SocketAddr,
    connection: lean::Connection,
    opened: Instant,
}

impl PeerClients {
    /// Clients reaching members where `discovery` finds them, exchanging messages of up
    /// to `max_message` bytes.
    pub fn new(discovery: Discovery, max_message: usize) -> Self {
        Self {
            discovery,
            max_message,
            channels: Arc::default(),
            fills: Arc::default(),
            lean: Arc::default(),
            tls: None,
            metrics: Arc::default(),
        }
    }

    /// Records every call into `metrics` (the node's; a pool made without it keeps its
    /// own, which nothing exposes).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<PeerRpcs>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs `call`, a call of `method` to `member` (from getting its client to the last
    /// message), and records its latency and outcome. A call dropped before it answered
    /// (a read that had its quorum abandons the slower replicas) is recorded as failed
    /// with `Cancelled` at the time it was dropped: otherwise the slow and hung calls to
    /// a bad peer, the ones the histogram is for, would never show in it.
    pub async fn timed<T>(
        &self,
        member: &str,
        method: PeerMethod,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let mut timer = CallTimer {
            metrics: &self.metrics,
            member,
            method,
            started: Instant::now(),
            answered: false,
        };
        let result = call.await;
        timer.answered = true;
        self.metrics.observe(
            member,
            method,
            timer.started.elapsed(),
            result.as_ref().err(),
        );
        result
    }

    /// Reaches every member over mutual TLS.
    #[must_use]
    pub fn with_tls(mut self, tls: Option<PeerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// A TLS connector to `member` for `alpn`, under mutual TLS.
    fn connector(&self, member: &Member, alpn: &[u8]) -> Result<Option<TlsConnector>, Status> {
        self.tls
            .as_ref()
            .map(|tls| tls.connector(&member.id, alpn))
            .transpose()
            .map_err(|err| Status::internal(format!("peer TLS configuration: {err}")))
    }

    /// Where `member` is reachable now, if anywhere.
    pub fn address(&self, member: &Member) -> Option<SocketAddr> {
        self.discovery.address(member)
    }

    /// A client for `member`. A member without a known address is an `UNAVAILABLE`
    /// error, like a failed call: never "no data".
    pub fn client(&self, member: &Member) -> Result<PeerClient<Channel>, Status> {
        self.client_in(member, &self.channels, REQUEST_TIMEOUT)
    }

    /// A client for `member`'s read-through calls ([`FILL_TIMEOUT`] at most; each call
    /// sets its own deadline).
    fn fill_client(&self, member: &Member) -> Result<PeerClient<Channel>, Status> {
        self.client_in(member, &self.fills, FILL_TIMEOUT)
    }

    fn client_in(
        &self,
        member: &Member,
        channels: &Mutex<HashMap<String, Connected>>,
        timeout: Duration,
    ) -> Result<PeerClient<Channel>, Status> {
        let address = self.known_address(member)?;
        let mut channels = channels.lock();
        if let Some((known, client)) = channels.get(&member.id)
            && *known == address
        {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|err| Status::internal(format!("bad peer address {address}: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .tcp_keepalive(Some(TCP_KEEPALIVE));
        let channel = match self.connector(member, ALPN_H2)? {
            Some(tls) => endpoint.connect_with_connector_lazy(TlsConnect { address, tls }),
            None => endpoint.connect_lazy(),
        };
        let client = PeerClient::new(channel)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message);
        channels.insert(member.id.clone(), (address, client.clone()));
        Ok(client)
    }

    /// `member`'s address, or `UNAVAILABLE` (and discovery looks again).
    fn known_address(&self, member: &Member) -> Result<SocketAddr, Status> {
        self.discovery.address(member).ok_or_else(|| {
            self.discovery.unreachable(&member.id);
            Status::unavailable(format!("no known address for member '{}'", member.id))
        })
    }

    /// Waits (up to `ADDRESS_WAIT`) for discovery to know `member`'s address, before a
    /// call to it counts as failed.
    async fn wait_for_address(&self, member: &Member) {
        // Bounded: ADDRESS_WAIT / ADDRESS_POLL rounds.
        let rounds = ADDRESS_WAIT.as_millis() / ADDRESS_POLL.as_millis();
        for _ in 0..rounds {
            if self.discovery.address(member).is_some() {
                return;
            }
            tokio::time::sleep(ADDRESS_POLL).await;
        }
    }

    /// `member`'s record of a key: a peer `Get`, over the lean transport when it speaks it.
    pub async fn get(
        &self,
        member: &Member,
        request: proto::GetRequest,
    ) -> Result<proto::GetResponse, Status> {
        self.call(
            member,
            (Kind::Get, PeerMethod::Get),
            request,
            |mut client, request| async move { Ok(client.get(request).await?.into_inner()) },
        )
        .await
    }

    /// A read-through `Fill` on `member` (the key's owner), within `deadline`.
    pub async fn fill(
        &self,
        member: &Member,
        request: proto::FillRequest,
        deadline: Duration,
    ) -> Result<proto::FillResponse, Status> {
        let call = async {
            let mut client = self.fill_client(member)?;
            let mut request = tonic::Request::new(request);
            request.set_timeout(deadline);
            match tokio::time::timeout(deadline, client.fill(request)).await {
                Ok(answer) => Ok(answer?.into_inner()),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "member '{}' did not answer a fill within {deadline:?}",
                    member.id
                ))),
            }
        };
        let answer = self.timed(&member.id, PeerMethod::Fill, call).await;
        // Only a failure to connect says the address may be stale: a fill that timed out
        // waited on the upstream.
        if let Err(status) = &answer
            && status.code() == tonic::Code::Unavailable
        {
            self.failed(&member.id, status);
        }
        answer
    }

    /// A read-through `Purge` on `member`.
    pub async fn purge(
        &self,
        member: &Member,
        request: proto::PurgeRequest,
    ) -> Result<proto::PurgeResponse, Status> {
        let call = async { Ok(self.client(member)?.purge(request).await?.into_inner()) };
        let answer = self.timed(&member.id, PeerMethod::Purge, call).await;
        if let Err(status) = &answer {
            self.failed(&member.id, status);
        }
        answer
    }

    /// A peer `Apply` on `member`, over the lean transport when it speaks it.
    pub async fn apply(
        &self,
        member: &Member,
        request: proto::ApplyRequest,
    ) -> Result<proto::ApplyResponse, Status> {
        self.call(
            member,
            (Kind::Apply, PeerMethod::Apply),
            request,
            |mut client, request| async move { Ok(client.apply(request).await?.into_inner()) },
        )
        .await
    }

    /// One hot call: over `member`'s lean connection, or over gRPC (`grpc`) if the
    /// member refused the lean preface (then nothing was sent, so this is no retry).
    async fn call<Q, R, Grpc, Fut>(
        &self,
        member: &Member,
        (kind, method): (Kind, PeerMethod),
        request: Q,
        grpc: Grpc,
    ) -> Result<R, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
        Grpc: FnOnce(PeerClient<Channel>, Q) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        self.timed(
            &member.id,
            method,
            self.lean_or_grpc(member, kind, request, grpc),
        )
        .await
    }

    /// [`Self::call`]'s call, untimed.
    async fn lean_or_grpc<Q, R, Grpc, Fut>(
        &self,
        member: &Member,
        kind: Kind,
        request: Q,
        grpc: Grpc,
    ) -> Result<R, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
        Grpc: FnOnce(PeerClient<Channel>, Q) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        self.wait_for_address(member).await;
        if let Some(connection) = self.lean(member)? {
            match connection.call(kind, &request).await {
                Ok(reply) => return Ok(reply),
                Err(CallError::Status(status)) => return Err(status),
                Err(CallError::Refused) => {}
            }
        }
        grpc(self.client(member)?, request).await
    }

    /// `member`'s lean connection, opened (again) when there is none to its current
    /// address or the last one failed; `None` while it refuses the lean transport.
    fn lean(&self, member: &Member) -> Result<Option<lean::Connection>, Status> {
        let address = self.known_address(member)?;
        let mut connections = self.lean.lock();
        if let Some(known) = connections.get(&member.id)
            && known.address == address
        {
            if !known.connection.is_closed() {
                return Ok(Some(known.connection.clone()));
            }
            if known.connection.is_refused() && known.opened.elapsed() < LEAN_RETRY {
                return Ok(None);
            }
        }
        let tls = self.connector(member, ALPN_LEAN)?;
        let connection = lean::Connection::open(address, self.max_message, tls);
        connections.insert(
            member.id.clone(),
            Lean {
                address,
                connection: connection.clone(),
                opened: Instant::now(),
            },
        );
        Ok(Some(connection))
    }

    /// A call to `id` failed with `status`: if it could not connect or timed out, its
    /// address may be outdated, and discovery looks again.
    pub fn failed(&self, id: &str, status: &Status) {
        let transport = matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        );
        if transport && !is_syncing(status) {
            self.discovery.unreachable(id);
        }
    }
}

/// Opens a channel's connections over TLS to one member's address (the channel's own
/// settings for TCP apply only to its built-in connector, so they are set here).
#[derive(Clone)]
struct TlsConnect {
    address: SocketAddr,
    tls: TlsConnector,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl tower::Service<Uri> for TlsConnect {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let Self { address, tls } = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
            let stream = tls.connect(PeerTls::server_name(address), tcp).await?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(std::io::Error::other("the peer agreed on no HTTP/2 (ALPN)"));
            }
            Ok(TokioIo::new(stream))
        })
    }
}

/// Records a peer call that was dropped before it answered (see [`PeerClients::timed`]).
struct CallTimer<'a> {
    metrics: &'a PeerRpcs,
    member: &'a str,
    method: PeerMethod,
    started: Instant,
    answered: bool,
}

impl Drop for CallTimer<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let abandoned = Status::cancelled("the caller stopped waiting for the answer");
            self.metrics.observe(
                self.member,
                self.method,
                self.started.elapsed(),
                Some(&abandoned),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_dropped_before_it_answered_is_recorded_as_cancelled() {
        let rpcs = Arc::new(PeerRpcs::default());
        let clients = PeerClients::new(Discovery::knowing(HashMap::new()), 4 << 20)
            .with_metrics(rpcs.clone());
        let answered = clients
            .timed("b", PeerMethod::Get, async { Ok::<_, Status>(()) })
            .await;
        assert!(answered.is_ok());
        assert_eq!(
            rpcs.counts("b", PeerMethod::Get, tonic::Code::Cancelled),
            (0, 1)
        );
        // A replica that never answers, abandoned once the read had its quorum.
        let hung = clients.timed(
            "b",
            PeerMethod::Get,
            std::future::pending::<Result<(), Status>>(),
        );
        let abandoned = tokio::time::timeout(Duration::from_millis(10), hung).await;
        assert!(abandoned.is_err());
        assert_eq!(
            rpcs.counts("b", PeerMethod::Get, tonic::Code::Cancelled),
            (1, 2)
        );
    }

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            address: None,
        }
    }

    #[tokio::test]
    async fn a_changed_address_gets_a_new_channel_and_lean_connection_and_an_unknown_one_is_an_error()
     {
        let first: SocketAddr = "10.0.0.1:7071".parse().expect("addr");
        let moved: SocketAddr = "10.0.0.2:7071".parse().expect("addr");
        let discovery = Discovery::knowing(HashMap::from([("a".to_owned(), first)]));
        let clients = PeerClients::new(discovery.clone(), 4 << 20);
        let connected = |id: &str| clients.channels.lock().get(id).map(|(address, _)| *address);

        clients.client(&member("a")).expect("known address");
        assert_eq!(connected("a"), Some(first));
        discovery.replace_for_test(HashMap::from([("a".to_owned(), moved)]));
        clients.client(&member("a")).expect("new address");
        assert_eq!(connected("a"), Some(moved), "reconnects to the new address");
        assert_eq!(
            clients.channels.lock().len(),
            1,
            "the old channel is dropped"
        );

        let lean_to = |id: &str| clients.lean.lock().get(id).map(|known| known.address);
        clients.lean(&member("a")).expect("known address");
        assert_eq!(
            lean_to("a"),
            Some(moved),
            "the lean connection follows it too"
        );
        discovery.replace_for_test(HashMap::from([("a".to_owned(), first)]));
        clients.lean(&member("a")).expect("new address");
        assert_eq!(lean_to("a"), Some(first));
        assert_eq!(
            clients.lean.lock().len(),
            1,
            "the old connection is dropped"
        );
        discovery.replace_for_test(HashMap::from([("a".to_owned(), moved)]));

        let unknown = clients.client(&member("b")).expect_err("no address");
        assert_eq!(unknown.code(), tonic::Code::Unavailable);
        assert!(
            !is_syncing(&unknown),
            "unreachable is not 'syncing' (which means no data)"
        );
        assert!(unknown.message().contains("no known address"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_briefly_for_an_address_discovery_has_not_seen_yet() {
        let late: SocketAddr = "10.0.0.3:7071".parse().expect("addr");
        let discovery = Discovery::knowing(HashMap::new());
        let clients = PeerClients::new(discovery.clone(), 4 << 20);
        let learn = {
            let discovery = discovery.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                discovery.replace_for_test(HashMap::from([("c".to_owned(), late)]));
            })
        };
        clients.wait_for_address(&member("c")).await;
        clients
            .client(&member("c"))
            .expect("the address arrived within the wait");
        learn.await.expect("join");

        let started = tokio::time::Instant::now();
        clients.wait_for_address(&member("d")).await;
        let never = clients
            .client(&member("d"))
            .expect_err("no address ever arrives");
        assert_eq!(never.code(), tonic::Code::Unavailable);
        assert!(
            started.elapsed() >= ADDRESS_WAIT - ADDRESS_POLL,
            "it waited before failing"
        );
    }
}
