//! Request ids: the handle that ties together every log line one client request causes,
//! on the node that took it (the coordinator) and on the replicas it called.
//!
//! - An HTTP request keeps the `X-Request-Id` its client sent when that is 1 to
//!   [`MAX_LEN`] characters of `[A-Za-z0-9._-]`, and gets a fresh one otherwise (16 hex
//!   digits); the response echoes it (`http::trace`).
//! - While the request is handled, the id is in the tracing span `request` (so every log
//!   line of the request carries it) and in a tokio task-local ([`current`]), which the
//!   cluster code reads when it builds the peer calls' messages: `GetRequest.request_id`
//!   and `ApplyRequest.request_id`. The message, not gRPC metadata, carries it because
//!   the single-key calls mostly travel over the lean transport, which has no metadata;
//!   one field serves both transports and one reader ([`peer_span`]) serves both servers.
//! - The replica's handler enters the span `peer` with the same `request_id`.
//!
//! A task-local rather than a parameter: the id is a logging concern, and threading it
//! through every `Cluster` read and write (HTTP, batch, RESP, tests) would put it in a
//! dozen signatures that have nothing else to do with it. Work that moves to another task
//! takes it along with [`carry`]. RESP commands carry no id (see docs/operations.md).

use std::fmt;
use std::future::Future;

use axum::http::{HeaderName, HeaderValue};
use tracing::Instrument;

/// The request and response header, and the name under which peers receive it.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The tracing target of the request spans (`request` on the coordinator, `peer` on a
/// replica) and of their debug lines: `RUST_LOG=info,kache_node::request=debug` turns
/// them on (docs/operations.md, "Logs").
pub const TARGET: &str = "kache_node::request";

/// The longest id accepted from a client.
pub const MAX_LEN: usize = 64;

/// A validated request id, kept as the header value it is echoed in: a client's id is
/// reused without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

/// Whether `candidate` is 1 to [`MAX_LEN`] characters of `[A-Za-z0-9._-]`: enough for
/// UUIDs, ULIDs and trace ids, and nothing that could break a log line or a header.
pub fn is_valid(candidate: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&candidate.len())
        && candidate
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RequestId {
    /// `candidate` as an id, if it [`is_valid`].
    pub fn parse(candidate: &str) -> Option<Self> {
        if !is_valid(candidate.as_bytes()) {
            return None;
        }
        HeaderValue::from_str(candidate).ok().map(Self)
    }

    /// A fresh id: 16 hex digits (64 random bits; not a secret, only distinct).
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = fastrand::u64(..);
        let mut digits = [0_u8; 16];
        for (i, digit) in digits.iter_mut().enumerate() {
            *digit = HEX[usize::try_from((bits >> (60 - 4 * i)) & 0xf).unwrap_or(0)];
        }
        // Cannot fail: hex digits are visible ASCII.
        Self(HeaderValue::from_bytes(&digits).unwrap_or(HeaderValue::from_static("0")))
    }

    /// The client's id from its `X-Request-Id` header if it is valid, else a fresh one.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        match value {
            Some(value) if is_valid(value.as_bytes()) => Self(value.clone()),
            _ => Self::generate(),
        }
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII: validated or generated.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as the response header's value.
    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

tokio::task_local! {
    /// The id of the request the current task is handling.
    static CURRENT: RequestId;
}

/// Runs `future` as the handling of request `id`: [`current`] answers `id` inside it.
pub fn scope<F: Future>(id: RequestId, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(id, future)
}

/// The id of the request this task is handling, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(RequestId::clone).ok()
}

/// The id for a peer message's `request_id` field: empty outside a request.
pub fn for_peer() -> String {
    CURRENT
        .try_with(|id| id.as_str().to_owned())
        .unwrap_or_default()
}

/// The current request's id as a log field (`request_id = %request_id::Current`), empty
/// outside a request: the warnings a failed request writes carry it even when its span
/// is off.
#[derive(Debug, Clone, Copy)]
pub struct Current;

impl fmt::Display for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        CURRENT
            .try_with(|id| f.write_str(id.as_str()))
            .unwrap_or(Ok(()))
    }
}

/// `future` with the caller's request id and span, for work spawned onto another task
/// (a batch's writes) that should log and call peers as part of the same request.
pub fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let id = current();
    let traced = future.instrument(tracing::Span::current());
    async move {
        match id {
            Some(id) => scope(id, traced).await,
            None => traced.await,
        }
    }
}

/// The span a replica's handler runs in when the coordinator sent a valid id: `peer`
/// with `request_id`, the `method` and the calling member (`from`), at debug level under
/// [`TARGET`]. None without an id (background work: anti-entropy, drains, RESP).
pub fn peer_span(method: &'static str, request_id: &str, from: &str) -> Option<tracing::Span> {
    is_valid(request_id.as_bytes()).then(|| {
        tracing::debug_span!(
            target: TARGET,
            "peer",
            request_id = %request_id,
            method = %method,
            from = %from
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_the_allowed_characters_and_length_are_kept() {
        let longest = "a".repeat(MAX_LEN);
        for id in [
            "a",
            "0f3c9d1e2b4a5968",
            "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "01HZX.trace_id-9",
            longest.as_str(),
        ] {
            assert_eq!(
                RequestId::parse(id).as_ref().map(RequestId::as_str),
                Some(id)
            );
        }
    }

    #[test]
    fn ids_that_are_empty_too_long_or_carry_other_characters_are_refused() {
        let too_long = "a".repeat(MAX_LEN + 1);
        for id in [
            "",
            too_long.as_str(),
            "has space",
            "new\nline",
            "quote\"",
            "x=1",
            "émoji",
            "a/b",
        ] {
            assert_eq!(RequestId::parse(id), None, "{id:?}");
        }
    }

    #[test]
    fn generated_ids_are_16_hex_digits_and_distinct() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), 16);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(RequestId::parse(id.as_str()).as_ref(), Some(id));
        }
        assert_ne!(a, b);
    }

    #[test]
    fn a_header_is_kept_when_valid_and_replaced_when_not() {
        let valid = axum::http::HeaderValue::from_static("client-id-1");
        assert_eq!(RequestId::from_header(Some(&valid)).as_str(), "client-id-1");
        let invalid = axum::http::HeaderValue::from_static("no spaces please");
        let replaced = RequestId::from_header(Some(&invalid));
        assert_ne!(replaced.as_str(), "no spaces please");
        assert_eq!(replaced.as_str().len(), 16);
        assert_eq!(RequestId::from_header(None).as_str().len(), 16);
    }

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_and_carried_into_spawned_work() {
        assert_eq!(current(), None);
        assert_eq!(for_peer(), "");
        let id = RequestId::parse("req-7").expect("valid");
        let (inside, spawned) = scope(id.clone(), async {
            let spawned = tokio::spawn(carry(async { for_peer() }));
            let bare = tokio::spawn(async { current() });
            let bare = bare.await.expect("join");
            assert_eq!(bare, None, "a plain spawn does not inherit the id");
            (current(), spawned.await.expect("join"))
        })
        .await;
        assert_eq!(inside, Some(id.clone()));
        assert_eq!(spawned, "req-7");
        assert_eq!(current(), None, "gone after the scope");

        let field = scope(id, async { Current.to_string() }).await;
        assert_eq!(
            field, "req-7",
            "the log field of a failed request's warning"
        );
        assert_eq!(Current.to_string(), "", "empty outside a request");
    }

    #[test]
    fn a_peer_span_exists_only_for_a_valid_id() {
        assert!(peer_span("Get", "", "node-0").is_none());
        assert!(peer_span("Get", "bad id", "node-0").is_none());
        assert!(peer_span("Get", "req-7", "node-0").is_some());
    }
}
