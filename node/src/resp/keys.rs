//! The keyspace commands: GET, SET and its options, GETDEL, GETEX, DEL, EXISTS, EXPIRE
//! and friends, TTL, MGET, MSET.
//!
//! They run on the same [`Cluster`] calls as the HTTP API, so a key written over one is
//! read over the other, with the same replication, consistency defaults and limits.
//! Commands that change a key based on what it holds (GETDEL, GETEX, EXPIRE, PERSIST,
//! SET … GET / KEEPTTL) read it and write conditionally on the version they read
//! ([`read_modify_write`]): a concurrent write in between makes them read again, never
//! overwrite it blindly.

use std::time::Duration;

use bytes::Bytes;

use super::Session;
use super::errors::{RespError, RespResult};
use super::frame::{Reply, parse_i64};
use crate::cluster::{Cluster, ClusterError};
use crate::store::{MAX_TTL, Precondition, StoreError, Value};

/// How often a read-modify-write reads again after a concurrent write beat it.
const RMW_ATTEMPTS: usize = 8;

pub async fn get(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let key = session.key(&args[1])?;
    session
        .cluster()
        .get_with(key, None, |found| reply.value(found.map(|f| f.data)))
        .await
        .map_err(RespError::read)
}

/// How a write sets the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No option: the node's `--default-ttl`, as an HTTP PUT without `ttl`.
    Default,
    /// Expires this long from now.
    In(Duration),
    /// At an absolute time already past: the write deletes the key (as Redis does).
    Past,
    /// KEEPTTL: whatever the key has now.
    Keep,
    /// PERSIST: never expires.
    Never,
}

/// Parses the expiry option at `args[at]` (EX, PX, EXAT, PXAT) with its argument.
fn expiry_option(
    session: &Session,
    command: &str,
    option: &[u8],
    amount: Option<&Bytes>,
) -> Result<Option<Expiry>, RespError> {
    let unit_ms = match option.to_ascii_uppercase().as_slice() {
        b"EX" | b"EXAT" => 1000,
        b"PX" | b"PXAT" => 1,
        _ => return Ok(None),
    };
    let absolute = option.len() == 4;
    let amount = amount.ok_or_else(RespError::syntax)?;
    let amount = parse_i64(amount).ok_or_else(RespError::not_integer)?;
    let invalid = || RespError::Err(format!("invalid expire time in '{command}' command"));
    if amount <= 0 {
        return Err(invalid());
    }
    let ms = amount.checked_mul(unit_ms).ok_or_else(invalid)?;
    let ms = u64::try_from(ms).map_err(|_| invalid())?;
    let ttl_ms = if absolute {
        match ms.checked_sub(session.cluster().store().now_ms()) {
            Some(0) | None => return Ok(Some(Expiry::Past)),
            Some(left) => left,
        }
    } else {
        ms
    };
    let ttl = Duration::from_millis(ttl_ms);
    if ttl > MAX_TTL {
        return Err(invalid());
    }
    Ok(Some(Expiry::In(ttl)))
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ms | KEEPTTL]
pub async fn set(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let key = session.key(&args[1])?;
    let value = session.value(&args[2])?;
    let new_value = args[2].clone();
    let (mut nx, mut xx, mut get) = (false, false, false);
    let mut expiry = None;
    let mut at = 3;
    while at < args.len() {
        let option = args[at].to_ascii_uppercase();
        match option.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if expiry.is_none() => expiry = Some(Expiry::Keep),
            _ => {
                let parsed = expiry_option(session, "set", &option, args.get(at + 1));
                match parsed? {
                    Some(parsed) if expiry.is_none() => expiry = Some(parsed),
                    _ => return Err(RespError::syntax()),
                }
                at += 1;
            }
        }
        at += 1;
    }
    let expiry = expiry.unwrap_or(Expiry::Default);
    if !get && expiry != Expiry::Keep && expiry != Expiry::Past {
        // The common case: one write, its condition checked by the cluster.
        let precondition = match (nx, xx) {
            (true, _) => Precondition::Absent,
            (_, true) => Precondition::Exists,
            _ => Precondition::None,
        };
        let ttl = session.ttl(expiry, None);
        return match session
            .cluster()
            .put(key, value, ttl, &precondition, None)
            .await
        {
            Ok(_) => {
                reply.ok();
                Ok(())
            }
            Err(ClusterError::Store(StoreError::PreconditionFailed)) => {
                reply.null();
                Ok(())
            }
            Err(err) => Err(RespError::write(err)),
        };
    }
    let old = read_modify_write(session.cluster(), key, |current| {
        let exists = current.is_some();
        let change = if (nx && exists) || (xx && !exists) {
            Change::Nothing
        } else if expiry == Expiry::Past {
            Change::Delete
        } else {
            Change::Put(new_value.clone(), session.ttl(expiry, current))
        };
        let applied = !matches!(change, Change::Nothing);
        (change, (current.map(|v| v.data.clone()), applied))
    })
    .await?;
    match old {
        (old, _) if get => reply.value(old.as_deref()),
        (_, true) => reply.ok(),
        (_, false) => reply.null(),
    }
    Ok(())
}

/// GETDEL key
pub async fn getdel(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let key = session.key(&args[1])?;
    let old = read_modify_write(session.cluster(), key, |current| match current {
        Some(value) => (Change::Delete, Some(value.data.clone())),
        None => (Change::Nothing, None),
    })
    .await?;
    reply.value(old.as_deref());
    Ok(())
}

/// GETEX key [EX s | PX ms | EXAT ts | PXAT ms | PERSIST]
pub async fn getex(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let key = session.key(&args[1])?;
    let mut expiry = None;
    let mut at = 2;
    while at < args.len() {
        let option = args[at].to_ascii_uppercase();
        if option == b"PERSIST" && expiry.is_none() {
            expiry = Some(Expiry::Never);
        } else {
            match expiry_option(session, "getex", &option, args.get(at + 1))? {
                Some(parsed) if expiry.is_none() => expiry = Some(parsed),
                _ => return Err(RespError::syntax()),
            }
            at += 1;
        }
        at += 1;
    }
    let Some(expiry) = expiry else {
        return get(session, args, reply).await;
    };
    let old = read_modify_write(session.cluster(), key, |current| match current {
        Some(value) if expiry == Expiry::Past => (Change::Delete, Some(value.data.clone())),
        Some(value) => {
            let put = Change::Put(value.data.clone(), session.ttl(expiry, Some(value)));
            (put, Some(value.data.clone()))
        }
        None => (Change::Nothing, None),
    })
    .await?;
    reply.value(old.as_deref());
    Ok(())
}

/// DEL key [key …] and UNLINK key [key …]: how many of the keys existed.
pub async fn del(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let keys = args[1..]
        .iter()
        .map(|key| session.key(key))
        .collect::<Result<Vec<_>, _>>()?;
    let deletes = keys
        .iter()
        .map(|key| session.cluster().delete(key, &Precondition::None, None));
    let mut deleted = 0;
    for outcome in futures::future::join_all(deletes).await {
        match outcome {
            Ok(()) => deleted += 1,
            Err(ClusterError::Store(StoreError::NotFound)) => {}
            Err(err) => return Err(RespError::write(err)),
        }
    }
    reply.int(deleted);
    Ok(())
}

/// EXISTS key [key …]: how many of the keys exist, a key named twice counted twice.
pub async fn exists(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let values = get_all(session, &args[1..]).await?;
    reply.int(values.iter().filter(|value| value.is_some()).count() as i64);
    Ok(())
}

/// MGET key [key …]
pub async fn mget(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let values = get_all(session, &args[1..]).await?;
    reply.array(values.len());
    for value in &values {
        reply.value(value.as_ref().map(|v| &v.data[..]));
    }
    Ok(())
}

/// Reads every key concurrently (they may live on different nodes).
async fn get_all(session: &Session, keys: &[Bytes]) -> Result<Vec<Option<Value>>, RespError> {
    let keys = keys
        .iter()
        .map(|key| session.key(key))
        .collect::<Result<Vec<_>, _>>()?;
    let reads = keys.iter().map(|key| session.cluster().get(key, None));
    futures::future::join_all(reads)
        .await
        .into_iter()
        .map(|read| read.map_err(RespError::read))
        .collect()
}

/// MSET key value [key value …]: every pair written concurrently. Not atomic: a failure
/// answers an error, and the pairs written before it stay written.
pub async fn mset(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    if args.len().is_multiple_of(2) {
        return Err(RespError::arity("mset"));
    }
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(args.len() / 2);
    for pair in args[1..].chunks_exact(2) {
        let (key, value) = (session.key(&pair[0])?, session.value(&pair[1])?);
        // A key named twice ends with its last value, as in Redis; the writes run
        // concurrently, so only that one is sent.
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(earlier) => earlier.1 = value,
            None => pairs.push((key, value)),
        }
    }
    let ttl = session.ttl(Expiry::Default, None);
    let writes = pairs.iter().map(|(key, value)| {
        session
            .cluster()
            .put(key, value, ttl, &Precondition::None, None)
    });
    for outcome in futures::future::join_all(writes).await {
        outcome.map_err(RespError::write)?;
    }
    reply.ok();
    Ok(())
}

/// EXPIRE / PEXPIRE key amount [NX | XX | GT | LT]: 1 when the TTL was set.
pub async fn expire(
    session: &Session,
    args: &[Bytes],
    reply: &mut Reply<'_>,
    unit_ms: i64,
) -> RespResult {
    let command = if unit_ms == 1 { "pexpire" } else { "expire" };
    let key = session.key(&args[1])?;
    let amount = parse_i64(&args[2]).ok_or_else(RespError::not_integer)?;
    let invalid = || RespError::Err(format!("invalid expire time in '{command}' command"));
    let ms = amount.checked_mul(unit_ms).ok_or_else(invalid)?;
    let condition = match args.get(3).map(|a| a.to_ascii_uppercase()).as_deref() {
        None => None,
        Some(b"NX") => Some(b'N'),
        Some(b"XX") => Some(b'X'),
        Some(b"GT") => Some(b'G'),
        Some(b"LT") => Some(b'L'),
        Some(_) => {
            return Err(RespError::Err(format!(
                "Unsupported option {}",
                String::from_utf8_lossy(&args[3])
            )));
        }
    };
    if args.len() > 4 {
        return Err(RespError::Err(
            "NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    let ttl = Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0));
    if ttl > MAX_TTL {
        return Err(invalid());
    }
    let set = read_modify_write(session.cluster(), key, |current| {
        let Some(value) = current else {
            return (Change::Nothing, false);
        };
        // A key without a TTL counts as an infinite one for GT and LT, as in Redis.
        let allowed = match (condition, value.ttl) {
            (Some(b'N'), Some(_)) | (Some(b'X' | b'G'), None) => false,
            (Some(b'G'), Some(now)) => ttl > now,
            (Some(b'L'), Some(now)) => ttl < now,
            _ => true,
        };
        if !allowed {
            (Change::Nothing, false)
        } else if ms <= 0 {
            (Change::Delete, true)
        } else {
            (Change::Put(value.data.clone(), Some(ttl)), true)
        }
    })
    .await?;
    reply.int(i64::from(set));
    Ok(())
}

/// PERSIST key: 1 when a TTL was removed.
pub async fn persist(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let key = session.key(&args[1])?;
    let removed = read_modify_write(session.cluster(), key, |current| match current {
        Some(value) if value.ttl.is_some() => (Change::Put(value.data.clone(), None), true),
        _ => (Change::Nothing, false),
    })
    .await?;
    reply.int(i64::from(removed));
    Ok(())
}

/// TTL / PTTL key: -2 when absent, -1 without a TTL, else the time left (TTL rounds to
/// the nearest second, as Redis does).
pub async fn ttl(
    session: &Session,
    args: &[Bytes],
    reply: &mut Reply<'_>,
    unit_ms: u128,
) -> RespResult {
    let key = session.key(&args[1])?;
    let value = session
        .cluster()
        .get(key, None)
        .await
        .map_err(RespError::read)?;
    let left = match value {
        None => -2,
        Some(Value { ttl: None, .. }) => -1,
        Some(Value { ttl: Some(ttl), .. }) => {
            i64::try_from((ttl.as_millis() + unit_ms / 2) / unit_ms).unwrap_or(i64::MAX)
        }
    };
    reply.int(left);
    Ok(())
}

/// What a read-modify-write does with the key it read.
enum Change {
    Nothing,
    Put(Bytes, Option<Duration>),
    Delete,
}

/// Reads `key`, asks `decide` what to do with it, and does that on the condition that
/// the key still has the version read (or is still absent). When another write came in
/// between, reads again, up to [`RMW_ATTEMPTS`] times.
async fn read_modify_write<T>(
    cluster: &Cluster,
    key: &[u8],
    decide: impl Fn(Option<&Value>) -> (Change, T),
) -> Result<T, RespError> {
    for _ in 0..RMW_ATTEMPTS {
        let current = cluster.get(key, None).await.map_err(RespError::read)?;
        let condition = match &current {
            Some(value) => Precondition::VersionIn(vec![value.version]),
            None => Precondition::Absent,
        };
        let (change, result) = decide(current.as_ref());
        let outcome = match change {
            // Deleting an absent key (SET … PXAT in the past, say) leaves it absent.
            Change::Nothing | Change::Delete if current.is_none() => return Ok(result),
            Change::Nothing => return Ok(result),
            Change::Put(value, ttl) => cluster
                .put(key, &value, ttl, &condition, None)
                .await
                .map(drop),
            Change::Delete => cluster.delete(key, &condition, None).await,
        };
        match outcome {
            Ok(()) => return Ok(result),
            Err(ClusterError::Store(StoreError::PreconditionFailed | StoreError::NotFound)) => {}
            Err(err) => return Err(RespError::write(err)),
        }
    }
    Err(RespError::TryAgain(format!(
        "the key changed under {RMW_ATTEMPTS} attempts to read and update it; nothing was changed by the last one"
    )))
}
