//! `/v1/batch/get` and `/v1/batch/put`: many keys in one request.
//!
//! Keys and values travel as JSON strings, either as UTF-8 text (the default) or base64
//! (`"encoding": "base64"`) for binary data; the base64 decoder takes only canonical,
//! padded text, so each key has one spelling in either encoding. A batch is validated
//! whole before any item is applied, so a malformed batch changes nothing; a key written
//! twice in one batch is malformed, since the items run concurrently and either could win.
//! A key read twice is harmless and answered twice. Items then succeed or fail one by one
//! (a full node can refuse some writes), and each item reports its own status.
//!
//! A batch's items are parsed into at most [`MAX_BATCH_ITEMS`] values, the rest only
//! counted (see [`Capped`]): a 16 MiB body of 4 million one-letter keys took a node
//! (debug build, 19 MB idle) to a peak RSS of 252 MB as a `Vec<String>` before the count
//! was checked, and takes it to 36 MB now, the body included.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::AppState;
use super::error::{AppError, ErrorDetail, Outcome, WritePath};
use super::keys::{
    KeyError, MAX_TTL_SECS, ceil_secs, check_key, consistency, read_body, ttl_from_secs,
};
use crate::cluster::{ClusterError, Consistency};
use crate::store::{Precondition, Written};

/// The most items one batch may carry.
pub const MAX_BATCH_ITEMS: usize = 1_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchGetRequest {
    keys: Capped<String>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPutRequest {
    items: Capped<PutItem>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutItem {
    key: String,
    value: String,
    /// Seconds; the node's default TTL applies when absent.
    ttl: Option<u64>,
}

/// A JSON array of which only the first [`MAX_BATCH_ITEMS`] elements are parsed; the
/// rest are skipped (serde_json skips a string or object without allocating) and only
/// counted, so an oversized batch costs memory for the limit, not for what it holds,
/// and is still refused with its true size.
#[derive(Debug)]
struct Capped<T> {
    items: Vec<T>,
    /// Elements in the array, parsed or not.
    len: usize,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Capped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CappedVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for CappedVisitor<T> {
            type Value = Capped<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Capped<T>, A::Error> {
                let mut items = Vec::new();
                while items.len() < MAX_BATCH_ITEMS {
                    match seq.next_element()? {
                        Some(item) => items.push(item),
                        None => {
                            let len = items.len();
                            return Ok(Capped { items, len });
                        }
                    }
                }
                let mut len = items.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    len += 1;
                }
                Ok(Capped { items, len })
            }
        }

        deserializer.deserialize_seq(CappedVisitor(PhantomData))
    }
}

#[derive(Debug, Serialize)]
pub struct BatchResponse<T> {
    items: Vec<T>,
}

#[derive(Debug, Serialize)]
pub struct GotItem {
    key: String,
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

impl GotItem {
    fn absent(key: String) -> Self {
        Self {
            key,
            found: false,
            value: None,
            etag: None,
            ttl: None,
            error: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PutResult {
    key: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

pub async fn get_many(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<BatchResponse<GotItem>>, AppError> {
    let consistency = consistency(request.headers())?;
    let request: BatchGetRequest = parse_json(&state, request).await?;
    check_count(request.keys.len)?;
    let max_key = state.limits().max_key_bytes;
    let keys = request
        .keys
        .items
        .iter()
        .enumerate()
        .map(|(i, key)| decode_key(key, request.encoding, max_key, &format!("keys[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut items = Vec::with_capacity(keys.len());
    for (name, key) in request.keys.items.into_iter().zip(keys) {
        let item = match state.cluster.get(&key, consistency).await {
            Ok(None) => GotItem::absent(name),
            Ok(Some(value)) => {
                let (text, error) = match encode_value(&value.data, request.encoding) {
                    Ok(text) => (Some(text), None),
                    Err(err) => (None, Some(err.body())),
                };
                GotItem {
                    key: name,
                    found: true,
                    value: text,
                    etag: Some(value.version.etag()),
                    ttl: value.ttl.map(ceil_secs),
                    error,
                }
            }
            Err(err) => GotItem {
                error: Some(AppError::from(err).body()),
                ..GotItem::absent(name)
            },
        };
        items.push(item);
    }
    Ok(Json(BatchResponse { items }))
}

pub async fn put_many(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<BatchResponse<PutResult>>, AppError> {
    let consistency = consistency(request.headers())?;
    let request: BatchPutRequest = parse_json(&state, request).await?;
    check_count(request.items.len)?;
    let items = request.items.items;
    let limits = state.limits();
    let mut decoded = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = decode_key(
            &item.key,
            request.encoding,
            limits.max_key_bytes,
            &format!("items[{i}].key"),
        )?;
        let value = decode(&item.value, request.encoding, &format!("items[{i}].value"))?;
        if value.len() > limits.max_value_bytes {
            return Err(AppError::PayloadTooLarge {
                what: format!("items[{i}].value"),
                max: limits.max_value_bytes,
            });
        }
        let ttl = match item.ttl {
            Some(secs) => Some(ttl_from_secs(secs).ok_or_else(|| {
                AppError::bad_request(
                    "bad_ttl",
                    format!("items[{i}].ttl must be from 1 to {MAX_TTL_SECS} seconds, got {secs}"),
                )
            })?),
            None => state.default_ttl(),
        };
        decoded.push((key, value, ttl));
    }
    refuse_duplicate_keys(&items, &decoded)?;
    let results = write_all(&state, decoded, consistency).await;
    // One sync for the whole batch (`--fsync always`); if it fails, every item's outcome
    // is unknown, and the answer is the disk's error.
    state.store().durable().await?;
    let items = items
        .into_iter()
        .zip(results)
        .map(|(item, result)| match result {
            Some(Ok(written)) => PutResult {
                key: item.key,
                status: if written.created { 201 } else { 204 },
                etag: Some(written.version.etag()),
                error: None,
            },
            Some(Err(err)) => {
                let err = AppError::from_write(err, WritePath::WriteOnly);
                PutResult {
                    key: item.key,
                    status: err.status().as_u16(),
                    etag: None,
                    error: Some(err.body()),
                }
            }
            // The write task ended without an answer: it may have stored the item or not.
            None => PutResult {
                key: item.key,
                status: 500,
                etag: None,
                error: Some(ErrorDetail {
                    outcome: Some(Outcome::Indeterminate),
                    ..AppError::Internal("write task lost".into()).body()
                }),
            },
        })
        .collect();
    Ok(Json(BatchResponse { items }))
}

/// A validated item: key, value and TTL.
type Decoded = (Vec<u8>, Vec<u8>, Option<Duration>);

/// Runs the items' writes concurrently (in a cluster each one waits on its owners) and
/// returns their results in item order; None for a write task that panicked. A lost task
/// fails its own item only: returning early would abort the other items' writes midway.
async fn write_all(
    state: &AppState,
    decoded: Vec<Decoded>,
    consistency: Option<Consistency>,
) -> Vec<Option<Result<Written, ClusterError>>> {
    let mut results: Vec<Option<Result<Written, ClusterError>>> =
        (0..decoded.len()).map(|_| None).collect();
    let mut writes = tokio::task::JoinSet::new();
    for (index, (key, value, ttl)) in decoded.into_iter().enumerate() {
        let cluster = state.cluster.clone();
        // Each write's peer calls and log lines belong to the batch's request.
        writes.spawn(crate::request_id::carry(async move {
            let result = cluster
                .put(&key, &value, ttl, &Precondition::None, consistency)
                .await;
            (index, result)
        }));
    }
    while let Some(joined) = writes.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            Err(err) => tracing::error!(error = %err, "batch write task lost"),
        }
    }
    results
}

/// Refuses a batch that writes one key twice, naming both items: they would run
/// concurrently and either could win.
fn refuse_duplicate_keys(items: &[PutItem], decoded: &[Decoded]) -> Result<(), AppError> {
    let mut first_index: HashMap<&[u8], usize> = HashMap::with_capacity(decoded.len());
    for (i, (item, (key, ..))) in items.iter().zip(decoded).enumerate() {
        if let Some(first) = first_index.insert(key, i) {
            return Err(AppError::bad_request(
                "duplicate_key",
                format!(
                    "items[{i}].key {:?} repeats items[{first}].key; a batch writes each key \
                     at most once",
                    item.key
                ),
            ));
        }
    }
    Ok(())
}

async fn parse_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request: Request,
) -> Result<T, AppError> {
    let (parts, body) = request.into_parts();
    let max = state.limits().max_batch_bytes;
    let bytes = read_body(body, &parts.headers, max, "batch body").await?;
    serde_json::from_slice(&bytes)
        .map_err(|err| AppError::bad_request("bad_json", format!("invalid batch request: {err}")))
}

fn check_count(count: usize) -> Result<(), AppError> {
    if count > MAX_BATCH_ITEMS {
        return Err(AppError::bad_request(
            "too_many_items",
            format!("a batch holds at most {MAX_BATCH_ITEMS} items, got {count}"),
        ));
    }
    Ok(())
}

fn decode(text: &str, encoding: Encoding, field: &str) -> Result<Vec<u8>, AppError> {
    match encoding {
        Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
        Encoding::Base64 => BASE64.decode(text).map_err(|err| {
            AppError::bad_request("bad_base64", format!("{field} is not valid base64: {err}"))
        }),
    }
}

fn decode_key(
    text: &str,
    encoding: Encoding,
    max: usize,
    field: &str,
) -> Result<Vec<u8>, AppError> {
    let key = decode(text, encoding, field)?;
    check_key(&key, max).map_err(|err| match err {
        KeyError::Empty => AppError::bad_request("empty_key", format!("{field} is empty")),
        KeyError::TooLong { len, max } => AppError::bad_request(
            "key_too_long",
            format!("{field} is {len} bytes; the limit is {max} bytes"),
        ),
    })?;
    Ok(key)
}

fn encode_value(value: &[u8], encoding: Encoding) -> Result<String, AppError> {
    match encoding {
        Encoding::Base64 => Ok(BASE64.encode(value)),
        Encoding::Utf8 => String::from_utf8(value.to_vec()).map_err(|_| {
            AppError::bad_request(
                "not_utf8",
                "the value is not valid UTF-8; ask with \"encoding\": \"base64\"",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        static PARSED: Cell<usize> = const { Cell::new(0) };
    }

    /// An element that counts how many times it is parsed.
    struct Counted;

    impl<'de> Deserialize<'de> for Counted {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            IgnoredAny::deserialize(deserializer)?;
            PARSED.set(PARSED.get() + 1);
            Ok(Counted)
        }
    }

    fn array(len: usize) -> String {
        format!("[{}]", vec!["\"k\""; len].join(","))
    }

    #[test]
    fn an_oversized_array_is_parsed_up_to_the_limit_and_counted_whole() {
        PARSED.set(0);
        let capped: Capped<Counted> =
            serde_json::from_str(&array(100 * MAX_BATCH_ITEMS)).expect("valid");
        assert_eq!(
            PARSED.get(),
            MAX_BATCH_ITEMS,
            "the rest is skipped unparsed"
        );
        assert_eq!(capped.items.len(), MAX_BATCH_ITEMS);
        assert_eq!(capped.len, 100 * MAX_BATCH_ITEMS);
        let keys: Capped<String> =
            serde_json::from_str(&array(100 * MAX_BATCH_ITEMS)).expect("valid");
        assert!(
            keys.items.capacity() <= 2 * MAX_BATCH_ITEMS,
            "held: the limit"
        );
    }

    #[test]
    fn an_array_within_the_limit_is_parsed_whole() {
        for len in [0, 1, MAX_BATCH_ITEMS] {
            let capped: Capped<String> = serde_json::from_str(&array(len)).expect("valid");
            assert_eq!((capped.items.len(), capped.len), (len, len));
        }
        let err = serde_json::from_str::<Capped<String>>("\"k\"").expect_err("not an array");
        assert!(err.to_string().contains("an array"), "{err}");
        // Elements past the limit are still JSON that must be well formed.
        let broken = format!("[{}, {{]", vec!["\"k\""; MAX_BATCH_ITEMS + 5].join(","));
        assert!(serde_json::from_str::<Capped<String>>(&broken).is_err());
    }
}
