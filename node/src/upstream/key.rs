//! What a read-through request is, once normalised: the path and query sent upstream,
//! and the cache key that names its stored response.
//!
//! Two requests that mean the same upstream request get the same key: query parameters
//! are sorted and their percent-encoding made canonical, and only the headers the
//! upstream is configured to see take part. Anything that could make the upstream read
//! a different path than the one checked against `pathPrefixes` (a `.` or `..` segment,
//! also percent-encoded) is refused.

use std::fmt::Write as _;

use axum::http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use kache_api::upstreams::UpstreamConfig;

/// Every read-through key starts with this, then the upstream's name and a NUL: a
/// client key (`/v1/keys/...`) cannot be mistaken for one by accident, and a purge of
/// one upstream scans for its prefix.
pub const KEY_PREFIX: &[u8] = b"\0rt\0";

/// Characters kept as they are in a normalised query: RFC 3986's unreserved set.
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A read-through request, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path below the upstream's URL (starting with `/`) and, if any, `?` and the
    /// normalised query: what is appended to the upstream's URL.
    pub path_and_query: String,
    /// The configured forward headers the request carried, lower-case names, in the
    /// upstream's order: what the upstream request carries.
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the path {0:?} has a '.' or '..' segment; give the path the upstream should see")]
    DotSegment(String),
    #[error("the path {0:?} is not valid: {1}")]
    BadPath(String, &'static str),
    #[error("the query is not valid: {0}")]
    BadQuery(&'static str),
    #[error("upstream '{upstream}' serves only paths under {prefixes}; {path:?} is not one")]
    NotAllowed {
        upstream: String,
        path: String,
        prefixes: String,
    },
}

impl Target {
    /// `path` is the raw (percent-encoded) path below `/v1/upstreams/{name}`, `query`
    /// the raw query.
    pub fn new(
        upstream: &UpstreamConfig,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Self, TargetError> {
        let path = if path.is_empty() { "/" } else { path };
        check_path(path)?;
        if !upstream.path_prefixes.is_empty() {
            let decoded = percent_decode_str(path).decode_utf8_lossy();
            let allowed = upstream.path_prefixes.iter().any(|prefix| {
                decoded.starts_with(prefix.as_str())
                    && (prefix.ends_with('/')
                        || decoded.len() == prefix.len()
                        || decoded[prefix.len()..].starts_with(['/', '?']))
            });
            if !allowed {
                return Err(TargetError::NotAllowed {
                    upstream: upstream.name.clone(),
                    path: decoded.into_owned(),
                    prefixes: upstream.path_prefixes.join(", "),
                });
            }
        }
        let mut path_and_query = path.to_owned();
        if let Some(query) = normalise_query(query.unwrap_or_default())? {
            path_and_query.push('?');
            path_and_query.push_str(&query);
        }
        let headers = upstream
            .forward_headers
            .iter()
            .filter_map(|name| {
                let values: Vec<&[u8]> = headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                (!values.is_empty()).then(|| (name.clone(), values.join(&b", "[..])))
            })
            .collect();
        Ok(Self {
            path_and_query,
            headers,
        })
    }

    /// The value of a forwarded header, if the request had it.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(have, _)| have == name)
            .map(|(_, value)| value.as_slice())
    }

    /// The cache key: the upstream, the method (GET; a HEAD is answered from the GET's
    /// entry), the path and query, and the values of the key headers. Longer than
    /// `max_key_bytes`, it is the same prefix and a SHA-256 of the rest.
    pub fn cache_key(&self, upstream: &UpstreamConfig, max_key_bytes: usize) -> Vec<u8> {
        let mut rest = Vec::with_capacity(self.path_and_query.len() + 8);
        rest.extend_from_slice(b"GET ");
        rest.extend_from_slice(self.path_and_query.as_bytes());
        for name in &upstream.key_headers {
            rest.push(0);
            rest.extend_from_slice(name.as_bytes());
            rest.push(b':');
            if let Some(value) = self.header(name) {
                rest.extend_from_slice(value);
            }
        }
        let mut key = prefix(&upstream.name);
        if key.len() + rest.len() <= max_key_bytes {
            key.extend_from_slice(&rest);
        } else {
            key.extend_from_slice(b"#sha256:");
            let digest = Sha256::digest(&rest);
            for byte in digest {
                let _ = write!(HexByte(&mut key), "{byte:02x}");
            }
        }
        key
    }

    /// What identifies the upstream request itself: the key's request part plus every
    /// forwarded header. Requests with the same flight key send the same upstream request,
    /// so they may share its response.
    pub fn flight_key(&self, cache_key: &[u8]) -> Vec<u8> {
        let mut key = cache_key.to_vec();
        for (name, value) in &self.headers {
            key.push(0);
            key.extend_from_slice(name.as_bytes());
            key.push(b':');
            key.extend_from_slice(value);
        }
        key
    }
}

/// The prefix of every key of `upstream`.
pub fn prefix(upstream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_PREFIX.len() + upstream.len() + 1 + 64);
    key.extend_from_slice(KEY_PREFIX);
    key.extend_from_slice(upstream.as_bytes());
    key.push(0);
    key
}

/// Writes formatted hex into a byte vector.
struct HexByte<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for HexByte<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn check_path(path: &str) -> Result<(), TargetError> {
    if !path.starts_with('/') {
        return Err(TargetError::BadPath(path.into(), "it must start with '/'"));
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || !b.is_ascii())
    {
        return Err(TargetError::BadPath(
            path.into(),
            "it has spaces, control characters, '#' or unescaped non-ASCII bytes",
        ));
    }
    let decoded = percent_decode_str(path).collect::<Vec<u8>>();
    if decoded.contains(&0) {
        return Err(TargetError::BadPath(path.into(), "it has an encoded NUL"));
    }
    // `/a/%2e%2e/b` and `/a/..%2fb` both reach `/b` on a server that decodes first.
    let dotted = decoded
        .split(|&b| b == b'/' || b == b'\\')
        .any(|segment| segment == b"." || segment == b"..");
    if dotted {
        return Err(TargetError::DotSegment(path.into()));
    }
    Ok(())
}

/// The query with its parameters sorted and each name and value percent-encoded one way;
/// `None` when it has no parameters.
fn normalise_query(query: &str) -> Result<Option<String>, TargetError> {
    if query
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || !b.is_ascii())
    {
        return Err(TargetError::BadQuery(
            "it has spaces, control characters, '#' or unescaped non-ASCII bytes",
        ));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let canonical = |text: &str| {
            let bytes: Vec<u8> = percent_decode_str(text).collect();
            percent_encoding::percent_encode(&bytes, QUERY_ESCAPE).to_string()
        };
        let has_value = param.contains('=');
        let name = canonical(name);
        let value = if has_value {
            format!("={}", canonical(value))
        } else {
            String::new()
        };
        params.push((name, value));
    }
    if params.is_empty() {
        return Ok(None);
    }
    // Stable: repeated names keep their order (`a=2&a=1` is not `a=1&a=2` to most APIs).
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(query.len());
    for (at, (name, value)) in params.iter().enumerate() {
        if at > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push_str(value);
    }
    Ok(Some(out))
}

/// The upstream URL of `target`.
pub fn upstream_url(upstream: &UpstreamConfig, target: &Target) -> String {
    let mut url = String::with_capacity(upstream.url.len() + target.path_and_query.len());
    url.push_str(&upstream.url);
    url.push_str(&target.path_and_query);
    url
}

/// `text` made safe for a log line or an error message.
pub fn printable(text: &str) -> String {
    utf8_percent_encode(text, percent_encoding::CONTROLS).to_string()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use kache_api::upstreams::Upstream;

    use super::*;

    fn upstream(edit: impl FnOnce(&mut Upstream)) -> UpstreamConfig {
        let mut spec = Upstream::with_defaults("api", "http://127.0.0.1:1/base");
        edit(&mut spec);
        spec.validate().expect("valid")
    }

    fn target(up: &UpstreamConfig, path: &str, query: Option<&str>) -> Result<Target, TargetError> {
        Target::new(up, path, query, &HeaderMap::new())
    }

    #[test]
    fn equivalent_queries_share_a_key_and_different_ones_do_not() {
        let up = upstream(|_| {});
        let key = |path, query| {
            target(&up, path, query)
                .expect("valid")
                .cache_key(&up, 1024)
        };
        assert_eq!(key("/a", Some("b=2&a=1")), key("/a", Some("a=1&b=2")));
        assert_eq!(key("/a", Some("a=%41")), key("/a", Some("a=A")));
        assert_eq!(key("/a", Some("&&")), key("/a", None));
        assert_ne!(key("/a", Some("a=1")), key("/a", Some("a=2")));
        assert_ne!(key("/a", Some("a")), key("/a", Some("a=")));
        assert_ne!(key("/a", Some("a=2&a=1")), key("/a", Some("a=1&a=2")));
        assert_ne!(key("/a", None), key("/b", None));
        assert_eq!(
            target(&up, "/a", Some("z=%2f&y=a b".replace(' ', "%20").as_str()))
                .expect("valid")
                .path_and_query,
            "/a?y=a%20b&z=%2F"
        );
        assert!(key("/a", None).starts_with(&prefix("api")));
    }

    #[test]
    fn key_headers_split_keys_and_forward_headers_split_flights_only() {
        let up = upstream(|spec| {
            spec.key_headers = vec!["Accept-Language".into()];
            spec.forward_headers = vec!["Authorization".into()];
        });
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, HeaderValue::from_static(value));
            }
            let target = Target::new(&up, "/a", None, &headers).expect("valid");
            let key = target.cache_key(&up, 1024);
            (key.clone(), target.flight_key(&key), target)
        };
        let (en, en_flight, _) = with(&[("accept-language", "en")]);
        let (de, _, _) = with(&[("accept-language", "de")]);
        let (en_alice, alice_flight, alice) = with(&[
            ("accept-language", "en"),
            ("authorization", "Bearer a"),
            ("x-other", "1"),
        ]);
        assert_ne!(en, de);
        assert_eq!(en, en_alice);
        assert_ne!(en_flight, alice_flight);
        assert_eq!(alice.header("authorization"), Some(&b"Bearer a"[..]));
        assert_eq!(alice.header("x-other"), None);
    }

    #[test]
    fn long_keys_are_hashed_under_the_upstream_prefix() {
        let up = upstream(|_| {});
        let long = format!("/{}", "x".repeat(2000));
        let one = target(&up, &long, None).expect("valid").cache_key(&up, 256);
        assert!(one.len() <= 256 && one.starts_with(&prefix("api")));
        let other = target(&up, &format!("{long}y"), None)
            .expect("valid")
            .cache_key(&up, 256);
        assert_ne!(one, other);
    }

    #[test]
    fn paths_that_escape_their_prefix_are_refused() {
        let up = upstream(|spec| spec.path_prefixes = vec!["/public".into()]);
        assert!(target(&up, "/public", None).is_ok());
        assert!(target(&up, "/public/a", None).is_ok());
        for bad in [
            "/publicity",
            "/private",
            "/public/../private",
            "/public/%2e%2e/private",
            "/public/..%2fprivate",
            "/public/%2E%2E%5Cprivate",
            "/public/./a",
            "public",
            "/public/a b",
            "/public/%00",
        ] {
            assert!(target(&up, bad, None).is_err(), "{bad} accepted");
        }
        assert!(target(&upstream(|_| {}), "", None).is_ok());
        assert!(target(&up, "/public/a", Some("a b")).is_err());
    }
}
