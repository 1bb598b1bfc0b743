//! A stored upstream response: what a read-through key's value holds, and how long it
//! may be served.
//!
//! The value is a small binary record: a format byte, the deadlines (Unix ms), the
//! status, the headers, the freshness policy (http-cache-semantics' `CachePolicy`, as
//! JSON, for revalidation) and the body. Serving a hit reads the deadlines and copies
//! the headers; the policy is only parsed to revalidate.
//!
//! Freshness follows RFC 9111 through http-cache-semantics (a shared cache: `s-maxage`
//! counts, `private` is not stored), with what that crate leaves out decided here:
//! - a response that states no freshness gets the upstream's `defaultTtl` (a 404 or 410
//!   its `negativeTtl`);
//! - `stale-while-revalidate` and `stale-if-error` (RFC 5861) from the response, else
//!   the upstream's defaults, and none under `must-revalidate`, `proxy-revalidate` or
//!   `no-cache`;
//! - a 5xx is never stored, nor a `Vary: *`, nor a response that sets a cookie.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_cache_semantics::{CacheOptions, CachePolicy};

use kache_api::upstreams::UpstreamConfig;

/// The first byte of every stored response; another value is not read.
const FORMAT: u8 = 1;

/// Hop-by-hop response headers (RFC 9110 7.6.1): never passed on, never stored.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Response headers never stored or served from the cache: hop-by-hop ones, and the
/// ones the cache writes itself.
fn not_stored(name: &HeaderName) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name) || ["content-length", "age", "x-cache", "set-cookie"].contains(&name)
}

/// A response as the cache holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the response was received (or last revalidated), Unix ms.
    pub received_ms: u64,
    /// Its age when received (the upstream's `Age`), seconds.
    pub initial_age_s: u64,
    /// Fresh until this instant; then stale.
    pub fresh_until_ms: u64,
    /// Servable stale while it is refreshed in the background, until this instant.
    pub revalidate_until_ms: u64,
    /// Servable stale when the upstream fails, until this instant.
    pub if_error_until_ms: u64,
    /// `CachePolicy` as JSON: how to revalidate it and merge a 304.
    pub policy: Bytes,
    /// The request's values of the headers the response varies on ([`varied`]): it
    /// is only for requests with the same.
    pub varied: Bytes,
}

/// How a stored response may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Stale, and servable while a background refresh runs.
    StaleWhileRevalidate,
    /// Stale; servable only if the upstream fails.
    StaleIfError,
    /// Only its validators are of use.
    Expired,
}

impl Stored {
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        if now_ms < self.fresh_until_ms {
            Freshness::Fresh
        } else if now_ms < self.revalidate_until_ms {
            Freshness::StaleWhileRevalidate
        } else if now_ms < self.if_error_until_ms {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// Whether the upstream failing now still lets this response be served.
    pub fn servable_on_error(&self, now_ms: u64) -> bool {
        now_ms < self.if_error_until_ms.max(self.fresh_until_ms)
    }

    /// `Age` now, in seconds.
    pub fn age_s(&self, now_ms: u64) -> u64 {
        self.initial_age_s + now_ms.saturating_sub(self.received_ms) / 1000
    }

    /// How long the store keeps it: as long as any use of it remains, and for its
    /// validators `keep` longer.
    pub fn store_ttl(&self, now_ms: u64, keep: Duration) -> Duration {
        let last_use = self
            .fresh_until_ms
            .max(self.revalidate_until_ms)
            .max(self.if_error_until_ms);
        let validators =
            self.headers.contains_key("etag") || self.headers.contains_key("last-modified");
        let keep_ms = if validators {
            u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        let until = last_use.max(self.fresh_until_ms.saturating_add(keep_ms));
        Duration::from_millis(until.saturating_sub(now_ms)).max(Duration::from_secs(1))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(64 + self.body.len() + self.policy.len() + 256);
        out.put_u8(FORMAT);
        out.put_u64(self.received_ms);
        out.put_u64(self.initial_age_s);
        out.put_u64(self.fresh_until_ms);
        out.put_u64(self.revalidate_until_ms);
        out.put_u64(self.if_error_until_ms);
        out.put_u16(self.status.as_u16());
        let headers: Vec<_> = self.headers.iter().collect();
        out.put_u32(u32::try_from(headers.len()).unwrap_or(u32::MAX));
        for (name, value) in headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &self.policy);
        put_bytes(&mut out, &self.varied);
        out.put_slice(&self.body);
        out.to_vec()
    }

    /// The stored response in `value`, or `None` when it is not one (never an error: a
    /// value a client PUT under such a key is simply not a cached response).
    pub fn decode(value: Bytes) -> Option<Self> {
        let mut buf = value;
        if buf.remaining() < 1 + 5 * 8 + 2 + 4 || buf.get_u8() != FORMAT {
            return None;
        }
        let received_ms = buf.get_u64();
        let initial_age_s = buf.get_u64();
        let fresh_until_ms = buf.get_u64();
        let revalidate_until_ms = buf.get_u64();
        let if_error_until_ms = buf.get_u64();
        let status = StatusCode::from_u16(buf.get_u16()).ok()?;
        let count = buf.get_u32() as usize;
        let mut headers = HeaderMap::with_capacity(count.min(128));
        for _ in 0..count {
            let name = HeaderName::from_bytes(&get_bytes(&mut buf)?).ok()?;
            let value = HeaderValue::from_maybe_shared(get_bytes(&mut buf)?).ok()?;
            headers.append(name, value);
        }
        let policy = get_bytes(&mut buf)?;
        let varied = get_bytes(&mut buf)?;
        Some(Self {
            varied,
            status,
            headers,
            body: buf,
            received_ms,
            initial_age_s,
            fresh_until_ms,
            revalidate_until_ms,
            if_error_until_ms,
            policy,
        })
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32() as usize;
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

/// The Cache-Control directives this module decides on itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Directives {
    explicit: bool,
    no_stale: bool,
    stale_while_revalidate: Option<u64>,
    stale_if_error: Option<u64>,
}

fn directives(headers: &HeaderMap) -> Directives {
    let mut found = Directives {
        explicit: headers.contains_key("expires"),
        ..Directives::default()
    };
    for value in headers.get_all("cache-control") {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            let name = name.trim().to_ascii_lowercase();
            let seconds = arg.trim().trim_matches('"').parse::<u64>().ok();
            match name.as_str() {
                "max-age" | "s-maxage" => found.explicit = true,
                "must-revalidate" | "proxy-revalidate" | "no-cache" => found.no_stale = true,
                "stale-while-revalidate" => found.stale_while_revalidate = seconds,
                "stale-if-error" => found.stale_if_error = seconds,
                _ => {}
            }
        }
    }
    found
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// `no-store`, `private`, an `Authorization` without `public`, a status a cache may
    /// not reuse, a 5xx, `Vary: *` or a `Set-Cookie`.
    Uncacheable,
}

/// The stored form of a response the upstream just sent for `request`, or why it is not
/// stored. `now` is when it was received.
pub fn store(
    upstream: &UpstreamConfig,
    request: &axum::http::request::Parts,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    now: SystemTime,
) -> Result<Stored, NotStored> {
    let response = response_parts(status, headers);
    let policy = CachePolicy::new_options(request, &response, now, CacheOptions::default());
    // A Set-Cookie is for one client: such a response is not stored (Varnish's
    // built-in VCL passes it too), even when the upstream calls it public.
    if status.is_server_error()
        || !policy.is_storable()
        || vary_star(headers)
        || headers.contains_key("set-cookie")
    {
        return Err(NotStored::Uncacheable);
    }
    let varied = varied(headers, |name| {
        request.headers.get(name).map(HeaderValue::as_bytes)
    });
    Ok(stored_from_policy(
        upstream, &policy, status, headers, body, now, varied,
    ))
}

/// A 304 from the upstream merged into `stale` (the validators matched), or `None`
/// when it did not match and the stored response must not be used.
pub fn revalidated(
    upstream: &UpstreamConfig,
    stale: &Stored,
    request: &axum::http::request::Parts,
    not_modified: &HeaderMap,
    now: SystemTime,
) -> Option<Stored> {
    let policy: CachePolicy = serde_json::from_slice(&stale.policy).ok()?;
    let response = response_parts(StatusCode::NOT_MODIFIED, not_modified);
    match policy.after_response(request, &response, now) {
        http_cache_semantics::AfterResponse::NotModified(policy, parts) => {
            let mut headers = stale.headers.clone();
            for (name, value) in &parts.headers {
                if !not_stored(name) && name != "date" {
                    headers.insert(name.clone(), value.clone());
                }
            }
            if let Some(date) = not_modified.get("date") {
                headers.insert("date", date.clone());
            }
            Some(stored_from_policy(
                upstream,
                &policy,
                stale.status,
                &headers,
                stale.body.clone(),
                now,
                stale.varied.clone(),
            ))
        }
        http_cache_semantics::AfterResponse::Modified(..) => None,
    }
}

fn stored_from_policy(
    upstream: &UpstreamConfig,
    policy: &CachePolicy,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    now: SystemTime,
    varied: Bytes,
) -> Stored {
    let found = directives(headers);
    let age = policy.age(now);
    let fresh_for = if found.explicit || found.no_stale {
        policy.time_to_live(now)
    } else if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
        upstream.negative_ttl.saturating_sub(age)
    } else {
        upstream.default_ttl.saturating_sub(age)
    };
    let now_ms = unix_ms(now);
    let fresh_until_ms = now_ms.saturating_add(millis(fresh_for));
    let window = |stated: Option<u64>, default: Duration| {
        if found.no_stale {
            0
        } else {
            stated.map_or(millis(default), |s| s.saturating_mul(1000))
        }
    };
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !not_stored(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    Stored {
        status,
        headers: kept,
        body,
        received_ms: now_ms,
        initial_age_s: age.as_secs(),
        fresh_until_ms,
        revalidate_until_ms: fresh_until_ms.saturating_add(window(
            found.stale_while_revalidate,
            upstream.stale_while_revalidate,
        )),
        if_error_until_ms: fresh_until_ms
            .saturating_add(window(found.stale_if_error, upstream.stale_if_error)),
        policy: serde_json::to_vec(policy)
            .map(Bytes::from)
            .unwrap_or_default(),
        varied,
    }
}

/// Whether a response is for the one client that asked: it sets a cookie, or says
/// `private` or `no-store`. Such a response is never shared, even with requests waiting
/// on the same fetch; any other response that is not stored (a 5xx) is.
pub fn personal(headers: &HeaderMap) -> bool {
    headers.contains_key("set-cookie")
        || headers
            .get_all("cache-control")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| {
                d.split('=')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .any(|d| d == "private" || d == "no-store")
}

/// The conditional headers that revalidate `stale`: `If-None-Match` with its ETag,
/// `If-Modified-Since` with its Last-Modified.
pub fn validators(stale: &Stored) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stale.headers.get("etag") {
        out.push((axum::http::header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = stale.headers.get("last-modified") {
        out.push((axum::http::header::IF_MODIFIED_SINCE, modified.clone()));
    }
    out
}

fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|name| name.trim() == "*"))
}

/// The request's values of the headers `response` varies on: `name: value` lines in
/// the order of its `Vary`, a missing header as `name` alone. Empty without `Vary`.
pub fn varied<'a>(response: &HeaderMap, request: impl Fn(&str) -> Option<&'a [u8]>) -> Bytes {
    let mut out = Vec::new();
    let names = response
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty());
    for name in names {
        out.extend_from_slice(name.as_bytes());
        if let Some(value) = request(&name) {
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
        }
        out.push(b'\n');
    }
    Bytes::from(out)
}

fn response_parts(status: StatusCode, headers: &HeaderMap) -> axum::http::response::Parts {
    let (mut parts, ()) = axum::http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers.clone();
    parts
}

pub fn unix_ms(at: SystemTime) -> u64 {
    millis(at.duration_since(UNIX_EPOCH).unwrap_or_default())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use kache_api::upstreams::Upstream;

    use super::*;

    fn upstream() -> UpstreamConfig {
        let mut spec = Upstream::with_defaults("api", "http://127.0.0.1:1");
        spec.stale_if_error = "30s".into();
        spec.validate().expect("valid")
    }

    fn request() -> axum::http::request::Parts {
        axum::http::Request::get("http://127.0.0.1:1/a")
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn stored(status: u16, pairs: &[(&'static str, &'static str)]) -> Result<Stored, NotStored> {
        let status = StatusCode::from_u16(status).expect("status");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        store(
            &upstream(),
            &request(),
            status,
            &headers(pairs),
            Bytes::from_static(b"body"),
            now,
        )
    }

    const NOW: u64 = 1_000_000_000;

    #[test]
    fn max_age_and_the_defaults_decide_freshness() {
        let s = stored(200, &[("cache-control", "max-age=5")]).expect("stored");
        assert_eq!(s.fresh_until_ms, NOW + 5_000);
        assert_eq!(s.freshness(NOW + 4_999), Freshness::Fresh);
        assert_eq!(s.freshness(NOW + 5_000), Freshness::StaleIfError);
        assert_eq!(
            s.if_error_until_ms,
            NOW + 35_000,
            "the upstream's staleIfError default"
        );
        let aged = stored(200, &[("cache-control", "max-age=5"), ("age", "3")]).expect("stored");
        assert_eq!(aged.fresh_until_ms, NOW + 2_000);
        assert_eq!(aged.age_s(NOW + 1_000), 4);
        let plain = stored(200, &[]).expect("stored");
        assert_eq!(plain.fresh_until_ms, NOW + 60_000, "defaultTtl");
        let missing = stored(404, &[]).expect("stored");
        assert_eq!(missing.fresh_until_ms, NOW + 10_000, "negativeTtl");
        let s_maxage = stored(200, &[("cache-control", "max-age=1, s-maxage=9")]).expect("stored");
        assert_eq!(s_maxage.fresh_until_ms, NOW + 9_000);
    }

    #[test]
    fn what_must_not_be_stored_is_not() {
        for pairs in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "private, max-age=60")],
            &[("vary", "*")],
        ] {
            assert!(stored(200, pairs).is_err(), "{pairs:?}");
        }
        for status in [500, 501, 502, 503, 504] {
            assert!(stored(status, &[("cache-control", "max-age=60")]).is_err());
        }
    }

    #[test]
    fn stale_windows_come_from_the_response_and_revalidate_forbids_them() {
        let s = stored(
            200,
            &[(
                "cache-control",
                "max-age=1, stale-while-revalidate=10, stale-if-error=100",
            )],
        )
        .expect("stored");
        assert_eq!(s.revalidate_until_ms, NOW + 11_000);
        assert_eq!(s.if_error_until_ms, NOW + 101_000);
        assert_eq!(s.freshness(NOW + 2_000), Freshness::StaleWhileRevalidate);
        assert!(s.servable_on_error(NOW + 100_000));
        assert!(!s.servable_on_error(NOW + 101_000));
        let strict = stored(
            200,
            &[(
                "cache-control",
                "max-age=1, must-revalidate, stale-if-error=100",
            )],
        )
        .expect("stored");
        assert_eq!(strict.if_error_until_ms, strict.fresh_until_ms);
        let no_cache =
            stored(200, &[("cache-control", "no-cache"), ("etag", "\"v1\"")]).expect("stored");
        assert_eq!(no_cache.freshness(NOW), Freshness::Expired);
        assert_eq!(
            no_cache.store_ttl(NOW, Duration::from_secs(60)),
            Duration::from_secs(60),
            "kept for its validator"
        );
    }

    #[test]
    fn a_304_refreshes_the_stored_response() {
        let s = stored(
            200,
            &[
                ("cache-control", "max-age=5"),
                ("etag", "\"v1\""),
                ("x-a", "1"),
            ],
        )
        .expect("stored");
        assert_eq!(validators(&s)[0].1, "\"v1\"");
        let later = UNIX_EPOCH + Duration::from_secs(1_000_100);
        let merged = revalidated(
            &upstream(),
            &s,
            &request(),
            &headers(&[("cache-control", "max-age=7"), ("etag", "\"v1\"")]),
            later,
        )
        .expect("matched");
        assert_eq!(merged.body, s.body);
        assert_eq!(merged.fresh_until_ms, NOW + 107_000);
        assert_eq!(merged.headers["x-a"], "1");
        let other = revalidated(
            &upstream(),
            &s,
            &request(),
            &headers(&[("etag", "\"v2\"")]),
            later,
        );
        assert!(
            other.is_none(),
            "a 304 for another version must not refresh it"
        );
    }

    #[test]
    fn the_record_round_trips_and_garbage_is_not_a_response() {
        let s = stored(
            200,
            &[("cache-control", "max-age=5"), ("x-a", "1"), ("x-a", "2")],
        )
        .expect("stored");
        let back = Stored::decode(Bytes::from(s.encode())).expect("decodes");
        assert_eq!(back.body, s.body);
        assert_eq!(back.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(back.fresh_until_ms, s.fresh_until_ms);
        assert!(Stored::decode(Bytes::from_static(b"hello")).is_none());
        let mut cut = s.encode();
        cut.truncate(60);
        assert!(Stored::decode(Bytes::from(cut)).is_none());
    }
}
