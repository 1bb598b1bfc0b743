//! `/v1/keys/{key}`: single-key reads, writes and deletes.
//!
//! Keys are arbitrary bytes, percent-encoded in the path, so the key is decoded from the
//! raw path rather than through axum's UTF-8 `Path` extractor. Everything a request can
//! get wrong is checked before the store is touched, strictly: each key and each TTL has
//! exactly one spelling, so two requests that look different never name the same thing.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;

use super::AppState;
use super::error::{AppError, WritePath};
use crate::clock::Version;
use crate::cluster::Consistency;
use crate::store::Precondition;

pub const KEYS_PREFIX: &str = "/v1/keys/";
/// Remaining time to live, in whole seconds rounded up; absent when the key never expires.
pub const TTL_HEADER: &str = "x-kache-ttl";
/// Overrides the node's default consistency for one request: one, quorum or all.
pub static CONSISTENCY_HEADER: HeaderName = HeaderName::from_static("x-kache-consistency");
/// The longest accepted TTL: ten years.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

// Handlers take the whole `Request` and borrow from it: the `HeaderMap` extractor would
// clone every header of every request.

pub async fn get_key(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, AppError> {
    let uri = request.uri();
    let key = key_from_path(uri.path(), state.limits().max_key_bytes)?;
    reject_query(uri.query(), "GET")?;
    let consistency = consistency(request.headers())?;
    let value = state
        .cluster
        .get(&key, consistency)
        .await?
        .ok_or(AppError::KeyNotFound)?;
    let etag = etag_header(value.version)?;
    if let Some(tags) = header_str(request.headers(), &IF_NONE_MATCH)?
        && tag_list_matches(tags, value.version)
    {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    let mut response = Response::new(Body::from(value.data));
    let response_headers = response.headers_mut();
    response_headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(ETAG, etag);
    if let Some(ttl) = value.ttl {
        response_headers.insert(TTL_HEADER, HeaderValue::from(ceil_secs(ttl)));
    }
    Ok(response)
}

pub async fn put_key(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, AppError> {
    let limits = state.limits();
    let (parts, body) = request.into_parts();
    let key = key_from_path(parts.uri.path(), limits.max_key_bytes)?;
    let ttl = ttl_from_query(parts.uri.query(), state.default_ttl())?;
    let precondition = precondition(&parts.headers)?;
    let consistency = consistency(&parts.headers)?;
    let value = read_body(body, &parts.headers, limits.max_value_bytes, "value").await?;
    // Cluster::put reads the owners first only to check a precondition.
    let path = if precondition == Precondition::None {
        WritePath::WriteOnly
    } else {
        WritePath::ReadThenWrite
    };
    let written = state
        .cluster
        .put(&key, &value, ttl, &precondition, consistency)
        .await
        .map_err(|err| AppError::from_write(err, path))?;
    // With `--fsync always`, answered once this node's copy is on disk.
    state.store().durable().await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    Ok((status, [(ETAG, etag_header(written.version)?)]).into_response())
}

pub async fn delete_key(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, AppError> {
    let uri = request.uri();
    let key = key_from_path(uri.path(), state.limits().max_key_bytes)?;
    reject_query(uri.query(), "DELETE")?;
    let precondition = precondition(request.headers())?;
    let consistency = consistency(request.headers())?;
    // Cluster::delete always reads the owners first, to answer 404 for an absent key.
    state
        .cluster
        .delete(&key, &precondition, consistency)
        .await
        .map_err(|err| AppError::from_write(err, WritePath::ReadThenWrite))?;
    state.store().durable().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `/v1/keys/` with nothing after it.
pub async fn empty_key() -> AppError {
    AppError::bad_request(
        "empty_key",
        "the key is empty; put it percent-encoded in the path: /v1/keys/{key}",
    )
}

/// Decodes the key from the raw request path. Every `%` must open an escape of two hex
/// digits: a lenient decoder keeps a stray `%` as itself, which made `/v1/keys/%` and
/// `/v1/keys/%25` the same key.
pub fn key_from_path(path: &str, max_key_bytes: usize) -> Result<Cow<'_, [u8]>, AppError> {
    let raw = path.strip_prefix(KEYS_PREFIX).unwrap_or_default();
    if let Some(at) = invalid_escape(raw) {
        let escape = raw.get(at..raw.len().min(at + 3)).unwrap_or("%");
        return Err(AppError::bad_request(
            "invalid_key_encoding",
            format!(
                "the key's percent-encoding is invalid at '{escape}': '%' must be followed by \
                 two hex digits (write a literal '%' as %25)"
            ),
        ));
    }
    let key: Cow<'_, [u8]> = percent_decode_str(raw).into();
    check_key(&key, max_key_bytes).map_err(|err| match err {
        KeyError::Empty => AppError::bad_request("empty_key", "the key is empty"),
        KeyError::TooLong { len, max } => AppError::KeyTooLong { len, max },
    })?;
    Ok(key)
}

/// The byte offset of the first `%` not followed by two hex digits.
fn invalid_escape(raw: &str) -> Option<usize> {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().find_map(|(at, &byte)| {
        let escape_ok = bytes
            .get(at + 1..at + 3)
            .is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit));
        (byte == b'%' && !escape_ok).then_some(at)
    })
}

#[derive(Debug)]
pub enum KeyError {
    Empty,
    TooLong { len: usize, max: usize },
}

pub fn check_key(key: &[u8], max_key_bytes: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > max_key_bytes {
        Err(KeyError::TooLong {
            len: key.len(),
            max: max_key_bytes,
        })
    } else {
        Ok(())
    }
}

/// The TTL for a PUT: `?ttl=SECONDS`, given at most once, else the node's default.
fn ttl_from_query(
    query: Option<&str>,
    default: Option<Duration>,
) -> Result<Option<Duration>, AppError> {
    let mut ttl = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "ttl" if ttl.is_some() => {
                return Err(AppError::bad_request(
                    "duplicate_parameter",
                    "ttl is given more than once; give it once",
                ));
            }
            "ttl" => ttl = Some(parse_ttl(value).map_err(|m| AppError::bad_request("bad_ttl", m))?),
            other => {
                return Err(AppError::bad_request(
                    "unknown_parameter",
                    format!("unknown query parameter '{other}'; PUT accepts only ttl"),
                ));
            }
        }
    }
    Ok(ttl.or(default))
}

/// Parses a TTL in whole seconds, between 1 and ten years, written in plain ASCII digits:
/// `u64::from_str` alone would also take a leading `+`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .and_then(ttl_from_secs)
        .ok_or_else(|| {
            format!(
                "ttl must be a whole number of seconds from 1 to {MAX_TTL_SECS} in plain digits, \
                 got '{text}'"
            )
        })
}

/// A TTL of `secs`, if it is between 1 second and ten years.
pub fn ttl_from_secs(secs: u64) -> Option<Duration> {
    (1..=MAX_TTL_SECS)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

fn reject_query(query: Option<&str>, method: &str) -> Result<(), AppError> {
    match query {
        Some(q) if !q.is_empty() => Err(AppError::bad_request(
            "unknown_parameter",
            format!("{method} takes no query parameters, got '{q}'"),
        )),
        _ => Ok(()),
    }
}

/// Reads `If-Match` / `If-None-Match` into a store precondition.
fn precondition(headers: &HeaderMap) -> Result<Precondition, AppError> {
    let if_match = header_str(headers, &IF_MATCH)?;
    let if_none_match = header_str(headers, &IF_NONE_MATCH)?;
    Ok(match (if_match, if_none_match) {
        (Some(_), Some(_)) => {
            return Err(AppError::bad_request(
                "conflicting_preconditions",
                "send either If-Match or If-None-Match, not both",
            ));
        }
        (Some(tags), None) if tags.trim() == "*" => Precondition::Exists,
        (Some(tags), None) => Precondition::VersionIn(parse_tags(tags)),
        (None, Some(tags)) if tags.trim() == "*" => Precondition::Absent,
        (None, Some(tags)) => Precondition::VersionNotIn(parse_tags(tags)),
        (None, None) => Precondition::None,
    })
}

/// The `X-Kache-Consistency` header: how many owners this request involves.
pub fn consistency(headers: &HeaderMap) -> Result<Option<Consistency>, AppError> {
    header_str(headers, &CONSISTENCY_HEADER)?
        .map(|value| {
            value
                .parse()
                .map_err(|message: String| AppError::bad_request("bad_consistency", message))
        })
        .transpose()
}

/// Entity tags that are not ours cannot match any version, so they are dropped.
fn parse_tags(list: &str) -> Vec<Version> {
    list.split(',').filter_map(Version::from_etag).collect()
}

fn tag_list_matches(list: &str, version: Version) -> bool {
    list.trim() == "*" || parse_tags(list).contains(&version)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, AppError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| {
                AppError::bad_request("bad_header", format!("header {name} is not ASCII"))
            })
        })
        .transpose()
}

fn etag_header(version: Version) -> Result<HeaderValue, AppError> {
    HeaderValue::from_bytes(&version.etag_bytes()).map_err(|e| AppError::Internal(Box::new(e)))
}

pub fn ceil_secs(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

/// Reads a request body of at most `max` bytes. A declared length over the limit is
/// refused before reading; an undeclared one stops being read at the limit.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    what: &str,
) -> Result<Bytes, AppError> {
    let too_large = || AppError::PayloadTooLarge {
        what: what.to_owned(),
        max,
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(AppError::bad_request(
            "body_read_failed",
            "the request body could not be read",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded_to_bytes() {
        let key = key_from_path("/v1/keys/a%2Fb%00%FF", 1024).expect("valid");
        assert_eq!(key.as_ref(), b"a/b\x00\xff");
        assert!(matches!(
            key_from_path("/v1/keys/", 1024),
            Err(AppError::BadRequest {
                code: "empty_key",
                ..
            })
        ));
        assert!(matches!(
            key_from_path("/v1/keys/abcd", 3),
            Err(AppError::KeyTooLong { len: 4, max: 3 })
        ));
    }

    #[test]
    fn a_percent_without_two_hex_digits_is_refused() {
        for bad in [
            "/v1/keys/%",
            "/v1/keys/%4",
            "/v1/keys/%zz",
            "/v1/keys/a%2",
            "/v1/keys/%%41",
        ] {
            assert!(
                matches!(
                    key_from_path(bad, 1024),
                    Err(AppError::BadRequest {
                        code: "invalid_key_encoding",
                        ..
                    })
                ),
                "{bad} must be refused"
            );
        }
        assert_eq!(invalid_escape("ab%4"), Some(2));
        assert_eq!(invalid_escape("%25%aF"), None);
        let percent = key_from_path("/v1/keys/%25", 1024).expect("valid");
        assert_eq!(percent.as_ref(), b"%");
    }

    #[test]
    fn ttl_must_be_whole_positive_seconds() {
        assert_eq!(parse_ttl("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_ttl("007"), Ok(Duration::from_secs(7)));
        for bad in [
            "0",
            "-1",
            "+5",
            " 5",
            "5 ",
            "%205",
            "1.5",
            "abc",
            "",
            "315360001",
            "99999999999999999999999",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn query_gives_ttl_or_default_and_refuses_strangers() {
        let default = Some(Duration::from_secs(5));
        assert_eq!(ttl_from_query(None, default).ok(), Some(default));
        assert_eq!(
            ttl_from_query(Some("ttl=9"), default).ok(),
            Some(Some(Duration::from_secs(9)))
        );
        assert!(ttl_from_query(Some("tll=9"), None).is_err());
        assert!(matches!(
            ttl_from_query(Some("ttl=5&ttl=5"), default),
            Err(AppError::BadRequest {
                code: "duplicate_parameter",
                ..
            })
        ));
    }

    #[test]
    fn ttl_header_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
