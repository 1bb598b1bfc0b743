//! Read-through: `GET /v1/upstreams/{name}/{path}` answers from the cache, and on a miss
//! the key's owner fetches it from the upstream once, however many requests ask for it
//! at the same time on however many nodes (docs/readthrough.md).
//!
//! A request on any node:
//! 1. reads the key like any key (the node's read consistency); a fresh response is a
//!    HIT, a stale one within `stale-while-revalidate` is served (STALE) while the owner
//!    refreshes it in the background;
//! 2. otherwise asks the key's owner (the first owner in the current member list) to fill
//!    it, over the peer port (`Fill`), or fills it itself when it is the owner;
//! 3. the owner runs one fill per upstream request at a time ([`flight`]): it reads the
//!    key again (another fill may just have stored it), fetches (revalidating what it
//!    has), stores the response with RF copies, and answers every waiting request.
//!
//! If the owner cannot be asked (an older node, a node without the upstream, a node
//! that is down), the node fills the key itself: availability over the single fetch.
//!
//! Layout:
//! - [`key`]: the normalised request and its cache key.
//! - [`entry`]: the stored response and its freshness (RFC 9111, http-cache-semantics).
//! - [`flight`]: one run per key for concurrent callers.
//! - [`fetch`]: each upstream's HTTP client, slots and timeouts.
//! - [`breaker`]: each upstream's circuit breaker.

pub mod breaker;
pub mod entry;
pub mod fetch;
pub mod flight;
pub mod key;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;

use kache_api::upstreams::UpstreamConfig;

use crate::cluster::Cluster;
use crate::cluster::wire::proto;
use crate::metrics::CacheOutcome;
use crate::store::Precondition;
use entry::{Freshness, Stored};
use fetch::{FailureKind, FetchError, FetchedBody, UpstreamClient};
use flight::{Flights, Joined};
use key::{Target, TargetError};

/// The read-through side of a node: its upstreams and the fills in flight.
#[derive(Debug, Clone)]
pub struct ReadThrough {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cluster: Cluster,
    upstreams: HashMap<String, Arc<UpstreamClient>>,
    flights: Flights<Arc<Filled>>,
    /// Background refreshes (stale-while-revalidate) this node has asked for: one per
    /// key at a time, however many stale hits ask.
    refreshes: Flights<()>,
    max_key_bytes: usize,
}

/// A response to a read-through request.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ReplyBody,
    pub cache: CacheOutcome,
}

#[derive(Debug)]
pub enum ReplyBody {
    Full(Bytes),
    /// A body too large to store, passed through as it arrives.
    Stream(Body),
}

/// What a fill produced, shared by every request that waited on it.
#[derive(Debug)]
enum Filled {
    /// A response any of the waiting requests may be given.
    Shared {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        cache: CacheOutcome,
    },
    /// A response for one request only: it sets a cookie or says `private` or
    /// `no-store`, or it is too large to hold. The first request takes it; the others
    /// fetch their own, as Varnish's hit-for-pass does.
    ForOne(Mutex<Option<Reply>>),
    /// The upstream failed and nothing servable was cached.
    Failed(FetchError),
}

/// Why a read-through request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no upstream is named '{0}'; the node's upstreams are {1}")]
    NoUpstream(String, String),
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The message names the upstream.
    #[error("{error}")]
    Upstream { upstream: String, error: FetchError },
}

/// The header that says how a read-through request was answered.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

impl CacheOutcome {
    /// The `X-Cache` value.
    pub fn header(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "HIT",
            CacheOutcome::Miss | CacheOutcome::Error => "MISS",
            CacheOutcome::Stale => "STALE",
            CacheOutcome::Revalidated => "REVALIDATED",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "HIT" => CacheOutcome::Hit,
            "STALE" => CacheOutcome::Stale,
            "REVALIDATED" => CacheOutcome::Revalidated,
            _ => CacheOutcome::Miss,
        }
    }
}

impl ReadThrough {
    /// The node's upstreams, reading and filling through `cluster`.
    pub fn new(
        cluster: Cluster,
        upstreams: &[UpstreamConfig],
        max_key_bytes: usize,
        max_value_bytes: usize,
    ) -> Result<Self, reqwest::Error> {
        let mut clients = HashMap::new();
        for config in upstreams {
            let metrics = cluster.metrics().upstream(&config.name);
            let client = UpstreamClient::new(config.clone(), metrics, max_value_bytes)?;
            clients.insert(config.name.clone(), Arc::new(client));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                cluster,
                upstreams: clients,
                flights: Flights::default(),
                refreshes: Flights::default(),
                max_key_bytes,
            }),
        })
    }

    /// The upstreams, by name.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<UpstreamClient>> {
        self.inner.upstreams.values()
    }

    fn upstream(&self, name: &str) -> Result<Arc<UpstreamClient>, ReadError> {
        self.inner.upstreams.get(name).cloned().ok_or_else(|| {
            let mut names: Vec<&str> = self.inner.upstreams.keys().map(String::as_str).collect();
            names.sort_unstable();
            let known = if names.is_empty() {
                "none (see --upstreams-file, or spec.upstreams)".to_owned()
            } else {
                names.join(", ")
            };
            ReadError::NoUpstream(key::printable(name), known)
        })
    }

    /// Upstream `name`, the request for `path` (raw, below `/v1/upstreams/{name}`) with
    /// `query` and `headers`, normalised, and its cache key.
    fn resolve(
        &self,
        name: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(Arc<UpstreamClient>, Target, Vec<u8>), ReadError> {
        let client = self.upstream(name)?;
        let target = Target::new(&client.config, path, query, headers)?;
        let key = target.cache_key(&client.config, self.inner.max_key_bytes);
        Ok((client, target, key))
    }

    /// A client's `GET` (or `HEAD`) of `path` (raw, below `/v1/upstreams/{name}`) with
    /// `query` and `headers`.
    pub async fn get(
        &self,
        name: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Reply, ReadError> {
        let (client, target, key) = self.resolve(name, path, query, headers)?;
        let answer = self.read(&client, &target, &key).await;
        client.metrics.answered(match &answer {
            Ok(reply) => reply.cache,
            Err(_) => CacheOutcome::Error,
        });
        answer
    }

    async fn read(
        &self,
        client: &Arc<UpstreamClient>,
        target: &Target,
        key: &[u8],
    ) -> Result<Reply, ReadError> {
        if let Some(stored) = self.lookup(key, target).await {
            match stored.freshness(now_ms()) {
                Freshness::Fresh => return Ok(reply_from(&stored, CacheOutcome::Hit)),
                Freshness::StaleWhileRevalidate => {
                    self.refresh_in_background(client, target, key);
                    return Ok(reply_from(&stored, CacheOutcome::Stale));
                }
                Freshness::StaleIfError | Freshness::Expired => {}
            }
        }
        self.fill_at_owner(client, target, key, false).await
    }

    /// Asks the owner to refresh `key` (it finds it stale and revalidates it), once per
    /// key at a time from this node.
    fn refresh_in_background(&self, client: &Arc<UpstreamClient>, target: &Target, key: &[u8]) {
        let this = self.clone();
        let (client, target, key) = (client.clone(), target.clone(), key.to_vec());
        let flight_key = target.flight_key(&key);
        tokio::spawn(crate::request_id::carry(async move {
            let refreshing = this.clone();
            let _ = this
                .inner
                .refreshes
                .run(flight_key, move || async move {
                    let _ = refreshing.fill_at_owner(&client, &target, &key, true).await;
                })
                .await;
        }));
    }

    /// The stored response for `key`, if there is one that `target` may be given: a
    /// response that varies on a header is only for requests with the same value.
    async fn lookup(&self, key: &[u8], target: &Target) -> Option<Stored> {
        let value = match self.inner.cluster.get(key, None).await {
            Ok(value) => value?,
            Err(error) => {
                tracing::debug!(%error, "read-through lookup failed; filling");
                return None;
            }
        };
        let stored = Stored::decode(value.data)?;
        vary_matches(&stored, target).then_some(stored)
    }

    /// Asks the key's owner to fill it, or fills it here when this node is the owner or
    /// the owner cannot be asked.
    async fn fill_at_owner(
        &self,
        client: &Arc<UpstreamClient>,
        target: &Target,
        key: &[u8],
        background: bool,
    ) -> Result<Reply, ReadError> {
        let cluster = &self.inner.cluster;
        let partition = cluster.store().partition_of(key);
        let view = cluster.view();
        let owner = view.owners(partition).next().cloned();
        if let Some(owner) = owner.filter(|owner| owner.id != cluster.node_id()) {
            let request = proto::FillRequest {
                sender: Some(cluster.sender()),
                upstream: client.config.name.clone(),
                path_and_query: target.path_and_query.clone(),
                headers: target
                    .headers
                    .iter()
                    .map(|(name, value)| proto::HttpHeader {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                request_id: crate::request_id::for_peer(),
                background,
            };
            // The owner may queue for a slot and then wait the whole timeout.
            let deadline = client.config.timeout * 2 + Duration::from_secs(2);
            match cluster.peers().fill(&owner, request, deadline).await {
                Ok(answer) => {
                    cluster
                        .metrics()
                        .forwarded(crate::auth::Protocol::Http, true);
                    match reply_from_proto(client, answer) {
                        Some(reply) => return reply,
                        // The owner's response was for one request only: fetch our own.
                        None => return self.fetch_alone(client, target).await,
                    }
                }
                // The owner waited on the upstream past its timeout: filling here would
                // only wait again.
                Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                    cluster
                        .metrics()
                        .forwarded(crate::auth::Protocol::Http, false);
                    return Err(ReadError::Upstream {
                        upstream: client.config.name.clone(),
                        error: FetchError {
                            kind: FailureKind::Timeout,
                            message: format!(
                                "the owner of this key (member '{}') did not get a response from upstream '{}' within {deadline:?}",
                                owner.id, client.config.name
                            ),
                        },
                    });
                }
                Err(status) => {
                    cluster
                        .metrics()
                        .forwarded(crate::auth::Protocol::Http, false);
                    tracing::debug!(
                        owner = %owner.id,
                        code = ?status.code(),
                        message = status.message(),
                        "the key's owner did not fill it; filling here"
                    );
                }
            }
        }
        self.fill_here(client, target, key).await
    }

    /// Fills `key` on this node: one fill per upstream request at a time.
    async fn fill_here(
        &self,
        client: &Arc<UpstreamClient>,
        target: &Target,
        key: &[u8],
    ) -> Result<Reply, ReadError> {
        let filled = self.filled(client, target, key).await;
        match filled {
            Some(filled) => self.reply_from_filled(client, target, &filled).await,
            None => self.fetch_alone(client, target).await,
        }
    }

    /// The shared result of the fill of `key` for `target`, or `None` when the fill was
    /// abandoned.
    async fn filled(
        &self,
        client: &Arc<UpstreamClient>,
        target: &Target,
        key: &[u8],
    ) -> Option<Arc<Filled>> {
        let flight_key = target.flight_key(key);
        let (filled, joined) = {
            let this = self.clone();
            let (client, target, key) = (client.clone(), target.clone(), key.to_vec());
            self.inner
                .flights
                .run(flight_key, move || async move {
                    Arc::new(this.fill_once(&client, &target, &key).await)
                })
                .await
        };
        if joined == Joined::Waited {
            client.metrics.coalesced();
        }
        filled.ok()
    }

    async fn reply_from_filled(
        &self,
        client: &Arc<UpstreamClient>,
        target: &Target,
        filled: &Filled,
    ) -> Result<Reply, ReadError> {
        match filled {
            Filled::Shared {
                status,
                headers,
                body,
                cache,
            } => Ok(Reply {
                status: *status,
                headers: headers.clone(),
                body: ReplyBody::Full(body.clone()),
                cache: *cache,
            }),
            Filled::ForOne(reply) => {
                let taken = reply.lock().take();
                match taken {
                    Some(reply) => Ok(reply),
                    None => self.fetch_alone(client, target).await,
                }
            }
            Filled::Failed(error) => Err(ReadError::Upstream {
                upstream: client.config.name.clone(),
                error: error.clone(),
            }),
        }
    }

    /// One fill: the key again, then the upstream.
    async fn fill_once(&self, client: &UpstreamClient, target: &Target, key: &[u8]) -> Filled {
        let stale = self.lookup(key, target).await;
        if let Some(stored) = &stale
            && stored.freshness(now_ms()) == Freshness::Fresh
        {
            return shared(stored, CacheOutcome::Hit);
        }
        let validators = stale.as_ref().map(entry::validators).unwrap_or_default();
        let mut fetched = client.fetch(target, &validators).await;
        let request = upstream_request(client, target);
        if let (Ok(answer), Some(stored)) = (&fetched, &stale)
            && answer.status == StatusCode::NOT_MODIFIED
            && !validators.is_empty()
        {
            let now = SystemTime::now();
            if let Some(fresh) =
                entry::revalidated(&client.config, stored, &request, &answer.headers, now)
            {
                self.save(key, &fresh).await;
                return shared(&fresh, CacheOutcome::Revalidated);
            }
            // The 304 is for another version than ours: ask again without validators.
            fetched = client.fetch(target, &[]).await;
        }
        let servable_stale = stale.filter(|stored| stored.servable_on_error(now_ms()));
        let answer = match fetched {
            Err(error) => {
                return servable_stale
                    .map_or(Filled::Failed(error), |s| shared(&s, CacheOutcome::Stale));
            }
            Ok(answer) => answer,
        };
        if answer.status.is_server_error()
            && let Some(stored) = &servable_stale
        {
            return shared(stored, CacheOutcome::Stale);
        }
        let (status, headers) = (answer.status, answer.headers);
        let body = match answer.body {
            FetchedBody::Complete(body) => body,
            FetchedBody::TooLarge { head, rest } => {
                return for_one(Reply {
                    status,
                    headers: passed_headers(&headers),
                    body: ReplyBody::Stream(stream_body(head, rest)),
                    cache: CacheOutcome::Miss,
                });
            }
        };
        let now = SystemTime::now();
        match entry::store(
            &client.config,
            &request,
            status,
            &headers,
            body.clone(),
            now,
        ) {
            Ok(stored) => {
                self.save(key, &stored).await;
                shared(&stored, CacheOutcome::Miss)
            }
            Err(entry::NotStored::Uncacheable) if entry::personal(&headers) => for_one(Reply {
                status,
                headers: passed_headers(&headers),
                body: ReplyBody::Full(body),
                cache: CacheOutcome::Miss,
            }),
            // Not stored, but the same for everyone who asked (a 5xx): the waiting
            // requests share it rather than each ask a failing upstream again.
            Err(entry::NotStored::Uncacheable) => Filled::Shared {
                status,
                headers: passed_headers(&headers),
                body,
                cache: CacheOutcome::Miss,
            },
        }
    }

    /// A fetch for this request alone, never stored: the shared fill's response was
    /// for one request only.
    async fn fetch_alone(
        &self,
        client: &UpstreamClient,
        target: &Target,
    ) -> Result<Reply, ReadError> {
        let answer = client
            .fetch(target, &[])
            .await
            .map_err(|error| ReadError::Upstream {
                upstream: client.config.name.clone(),
                error,
            })?;
        let body = match answer.body {
            FetchedBody::Complete(body) => ReplyBody::Full(body),
            FetchedBody::TooLarge { head, rest } => ReplyBody::Stream(stream_body(head, rest)),
        };
        Ok(Reply {
            status: answer.status,
            headers: passed_headers(&answer.headers),
            body,
            cache: CacheOutcome::Miss,
        })
    }

    /// Stores `stored` under `key` with the node's write consistency. A failed store is
    /// logged: the response is still served, and the next request fills it again.
    async fn save(&self, key: &[u8], stored: &Stored) {
        let ttl = stored.store_ttl(now_ms(), KEEP_FOR_VALIDATORS);
        let value = stored.encode();
        if value.len() > self.inner.cluster.store().limits().max_value_bytes {
            tracing::debug!(
                bytes = value.len(),
                "read-through response too large to store"
            );
            return;
        }
        let written = self
            .inner
            .cluster
            .put(key, &value, Some(ttl), &Precondition::None, None)
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "read-through response not stored");
        }
    }

    /// The owner's side of a peer `Fill`.
    pub async fn serve_fill(
        &self,
        request: proto::FillRequest,
    ) -> Result<proto::FillResponse, tonic::Status> {
        let (path, query) = match request.path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (request.path_and_query.as_str(), None),
        };
        let mut headers = HeaderMap::new();
        for header in request.headers {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| tonic::Status::invalid_argument("a header name is not valid"))?;
            let value = HeaderValue::from_bytes(&header.value)
                .map_err(|_| tonic::Status::invalid_argument("a header value is not valid"))?;
            headers.append(name, value);
        }
        let (client, target, key) = self
            .resolve(&request.upstream, path, query, &headers)
            .map_err(|error| match error {
                ReadError::NoUpstream(..) => tonic::Status::not_found(error.to_string()),
                _ => tonic::Status::invalid_argument(error.to_string()),
            })?;
        let Some(filled) = self.filled(&client, &target, &key).await else {
            return Ok(alone());
        };
        Ok(match &*filled {
            Filled::Shared {
                status,
                headers,
                body,
                cache,
            } => fill_response(*status, headers, body, *cache),
            Filled::ForOne(reply) => {
                // Only a whole body travels between nodes; a stream stays for a local
                // request, and the caller fetches its own.
                let mut slot = reply.lock();
                match slot.take() {
                    Some(Reply {
                        status,
                        headers,
                        body: ReplyBody::Full(body),
                        cache,
                    }) => fill_response(status, &headers, &body, cache),
                    other => {
                        *slot = other;
                        alone()
                    }
                }
            }
            Filled::Failed(error) => proto::FillResponse {
                error_kind: error.kind.as_str().to_owned(),
                error: error.message.clone(),
                ..proto::FillResponse::default()
            },
        })
    }

    /// Deletes the cached response of one URL (all of its key's copies).
    pub async fn purge_url(
        &self,
        name: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<bool, PurgeError> {
        let (_, _, key) = self
            .resolve(name, path, query, headers)
            .map_err(PurgeError::Read)?;
        match self
            .inner
            .cluster
            .delete(&key, &Precondition::None, None)
            .await
        {
            Ok(()) => Ok(true),
            Err(crate::cluster::ClusterError::Store(crate::store::StoreError::NotFound)) => {
                Ok(false)
            }
            Err(error) => Err(PurgeError::Cluster(error)),
        }
    }

    /// Deletes every cached response of upstream `name` on every member.
    pub async fn purge_all(&self, name: &str) -> Result<Purged, PurgeError> {
        self.upstream(name).map_err(PurgeError::Read)?;
        let cluster = &self.inner.cluster;
        let mut purged = self.purge_here(name);
        let mut unreached = Vec::new();
        let members = cluster.other_members();
        let calls = members.iter().map(|member| {
            let request = proto::PurgeRequest {
                sender: Some(cluster.sender()),
                upstream: name.to_owned(),
            };
            async move { (member, cluster.peers().purge(member, request).await) }
        });
        for (member, answer) in futures::future::join_all(calls).await {
            match answer {
                Ok(answer) => purged += answer.purged,
                Err(status) => unreached.push(format!("{} ({})", member.id, status.message())),
            }
        }
        Ok(Purged {
            purged,
            members: members.len() + 1 - unreached.len(),
            unreached,
        })
    }

    /// Deletes this node's copies of upstream `name`'s responses; how many.
    pub fn purge_here(&self, name: &str) -> u64 {
        let store = self.inner.cluster.store();
        let mut purged = 0;
        for key in store.keys_with_prefix(&key::prefix(name)) {
            if store.delete(&key, &Precondition::None).is_ok() {
                purged += 1;
            }
        }
        purged
    }

    /// Reads of each upstream by outcome, for `/v1/stats`.
    pub fn stats(&self) -> ReadThroughStats {
        let mut upstreams: Vec<UpstreamStats> = self
            .upstreams()
            .map(|client| {
                let m = &client.metrics;
                UpstreamStats {
                    name: client.config.name.clone(),
                    hits: m.answers(CacheOutcome::Hit),
                    misses: m.answers(CacheOutcome::Miss),
                    stale: m.answers(CacheOutcome::Stale),
                    revalidated: m.answers(CacheOutcome::Revalidated),
                    errors: m.answers(CacheOutcome::Error),
                    coalesced: m.coalesced_count(),
                    circuit_open: client.circuit_open(),
                    hit_ratio: 0.0,
                }
                .with_ratio()
            })
            .collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let hits: u64 = upstreams.iter().map(|u| u.hits + u.stale).sum();
        let all: u64 = upstreams.iter().map(UpstreamStats::answered).sum();
        ReadThroughStats {
            hit_ratio: ratio(hits, all),
            upstreams,
        }
    }
}

/// What a purge of a whole upstream reached.
#[derive(Debug, serde::Serialize)]
pub struct Purged {
    /// Entries deleted, counting each copy.
    pub purged: u64,
    /// Members that purged their copies, this node included.
    pub members: usize,
    /// Members that did not answer, and why: their copies remain until they are purged
    /// again or expire.
    pub unreached: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Read(ReadError),
    #[error(transparent)]
    Cluster(crate::cluster::ClusterError),
}

/// `/v1/stats`' `read_through`.
#[derive(Debug, serde::Serialize)]
pub struct ReadThroughStats {
    /// Hits and stale answers over all answers, every upstream.
    pub hit_ratio: f64,
    pub upstreams: Vec<UpstreamStats>,
}

#[derive(Debug, serde::Serialize)]
pub struct UpstreamStats {
    pub name: String,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub revalidated: u64,
    pub errors: u64,
    pub coalesced: u64,
    pub circuit_open: bool,
    /// Hits and stale answers over all answers.
    pub hit_ratio: f64,
}

impl UpstreamStats {
    fn answered(&self) -> u64 {
        self.hits + self.misses + self.stale + self.revalidated + self.errors
    }

    fn with_ratio(mut self) -> Self {
        self.hit_ratio = ratio(self.hits + self.stale, self.answered());
        self
    }
}

fn ratio(part: u64, all: u64) -> f64 {
    if all == 0 {
        0.0
    } else {
        part as f64 / all as f64
    }
}

/// How long past its last use a response with validators is kept, to be revalidated
/// (a 304) rather than fetched again.
const KEEP_FOR_VALIDATORS: Duration = Duration::from_secs(3600);

fn shared(stored: &Stored, cache: CacheOutcome) -> Filled {
    Filled::Shared {
        status: stored.status,
        headers: headers_with_age(stored),
        body: stored.body.clone(),
        cache,
    }
}

fn for_one(reply: Reply) -> Filled {
    Filled::ForOne(Mutex::new(Some(reply)))
}

fn fill_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
    cache: CacheOutcome,
) -> proto::FillResponse {
    proto::FillResponse {
        status: u32::from(status.as_u16()),
        headers: headers_to_proto(headers),
        body: body.to_vec(),
        cache: cache.header().to_owned(),
        error_kind: String::new(),
        error: String::new(),
    }
}

/// A `Fill` answer that tells the caller to fetch for itself.
fn alone() -> proto::FillResponse {
    proto::FillResponse {
        error_kind: "alone".into(),
        ..proto::FillResponse::default()
    }
}

/// The reply a stored response gives now, with its `Age`.
fn reply_from(stored: &Stored, cache: CacheOutcome) -> Reply {
    Reply {
        status: stored.status,
        headers: headers_with_age(stored),
        body: ReplyBody::Full(stored.body.clone()),
        cache,
    }
}

fn headers_with_age(stored: &Stored) -> HeaderMap {
    let mut headers = stored.headers.clone();
    headers.insert(
        axum::http::header::AGE,
        HeaderValue::from(stored.age_s(now_ms())),
    );
    headers
}

/// The reply a `Fill` answer gives; `None` when the owner says to fetch alone.
fn reply_from_proto(
    client: &UpstreamClient,
    answer: proto::FillResponse,
) -> Option<Result<Reply, ReadError>> {
    if answer.error_kind == "alone" {
        return None;
    }
    if !answer.error_kind.is_empty() {
        let kind = FailureKind::parse(&answer.error_kind).unwrap_or(FailureKind::Protocol);
        return Some(Err(ReadError::Upstream {
            upstream: client.config.name.clone(),
            error: FetchError {
                kind,
                message: answer.error,
            },
        }));
    }
    let status = u16::try_from(answer.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    for header in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(&header.value),
        ) {
            headers.append(name, value);
        }
    }
    Some(Ok(Reply {
        status,
        headers,
        body: ReplyBody::Full(Bytes::from(answer.body)),
        cache: CacheOutcome::parse(&answer.cache),
    }))
}

fn headers_to_proto(headers: &HeaderMap) -> Vec<proto::HttpHeader> {
    headers
        .iter()
        .map(|(name, value)| proto::HttpHeader {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

/// An upstream response's headers as passed to the client: without hop-by-hop ones.
fn passed_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !entry::HOP_BY_HOP.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `head`, then the rest of `response` as it arrives.
fn stream_body(head: Bytes, response: reqwest::Response) -> Body {
    let first = futures::stream::once(async move { Ok::<Bytes, reqwest::Error>(head) });
    Body::from_stream(first.chain(response.bytes_stream()))
}

/// The upstream request as http-cache-semantics sees it (for a response's policy).
fn upstream_request(client: &UpstreamClient, target: &Target) -> axum::http::request::Parts {
    let mut request = axum::http::Request::new(());
    *request.method_mut() = Method::GET;
    if let Ok(uri) = key::upstream_url(&client.config, target).parse() {
        *request.uri_mut() = uri;
    }
    for (name, value) in &target.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    request.into_parts().0
}

/// Whether `target` may be given `stored`: the same values of the headers it varies
/// on (the upstream saw only the forwarded headers, so only those can differ).
fn vary_matches(stored: &Stored, target: &Target) -> bool {
    stored.varied == entry::varied(&stored.headers, |name| target.header(name))
}

fn now_ms() -> u64 {
    entry::unix_ms(SystemTime::now())
}
