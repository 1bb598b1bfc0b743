//! Store behaviour: versions, preconditions, tombstones, TTL (on paused time), the
//! active sweep, eviction under the memory bound, and exact byte accounting.

use std::time::Duration;

use super::*;

fn config(max_memory: usize, eviction: EvictionPolicy) -> StoreConfig {
    StoreConfig::for_tests("test", 16, max_memory, eviction)
}

fn store() -> Store {
    Store::new(config(64 << 20, EvictionPolicy::Lru))
}

impl Store {
    /// Recomputes the charged bytes from the entries themselves.
    fn recount_bytes(&self) -> usize {
        self.shared
            .partitions
            .iter()
            .map(|part| {
                let part = part.lock();
                (0..part.len())
                    .map(|slot| part.slot(slot).charge())
                    .sum::<usize>()
            })
            .sum()
    }

    fn used(&self) -> usize {
        self.shared.used_bytes.load(Ordering::Relaxed)
    }
}

fn put(store: &Store, key: &str, value: &str) -> Written {
    store
        .put(key.as_bytes(), value.as_bytes(), None, &Precondition::None)
        .expect("put")
}

fn get(store: &Store, key: &str) -> Option<String> {
    store
        .get(key.as_bytes())
        .map(|v| String::from_utf8(v.data.to_vec()).expect("utf8"))
}

#[test]
fn put_then_get_returns_the_latest_value_and_version() {
    let store = store();
    let first = put(&store, "a", "1");
    assert!(first.created);
    let second = put(&store, "a", "2");
    assert!(!second.created);
    assert!(second.version > first.version);
    let value = store.get(b"a").expect("present");
    assert_eq!(value.data.as_ref(), b"2");
    assert_eq!(value.version, second.version);
    assert_eq!(value.ttl, None);
    assert_eq!(get(&store, "missing"), None);
    let stats = store.stats();
    assert_eq!((stats.keys, stats.hits, stats.misses), (1, 1, 1));
    assert_eq!(store.used(), store.recount_bytes());
}

#[test]
fn keys_are_arbitrary_bytes() {
    let store = store();
    let key = [0u8, 255, b'/', b'%', 10];
    store
        .put(&key, &[1, 2, 3], None, &Precondition::None)
        .expect("put");
    assert_eq!(store.get(&key).expect("present").data.as_ref(), &[1, 2, 3]);
    assert!(store.partition_of(&key) < 16);
}

#[test]
fn preconditions_are_checked_against_the_live_entry() {
    let store = store();
    let absent = Precondition::Absent;
    let v1 = store.put(b"k", b"1", None, &absent).expect("absent holds");
    assert_eq!(
        store.put(b"k", b"2", None, &absent),
        Err(StoreError::PreconditionFailed)
    );
    assert_eq!(
        store.put(b"other", b"x", None, &Precondition::Exists),
        Err(StoreError::PreconditionFailed)
    );
    let stale = Precondition::VersionIn(vec![Version { hlc: 1, node: 1 }]);
    assert_eq!(
        store.put(b"k", b"3", None, &stale),
        Err(StoreError::PreconditionFailed)
    );
    let current = Precondition::VersionIn(vec![v1.version]);
    store.put(b"k", b"4", None, &current).expect("matches");
    assert_eq!(get(&store, "k").as_deref(), Some("4"));
    assert_eq!(get(&store, "other"), None, "failed writes change nothing");
    assert_eq!(
        store.put(b"k", b"5", None, &current),
        Err(StoreError::PreconditionFailed),
        "the old etag no longer matches"
    );
}

#[test]
fn delete_leaves_a_tombstone_that_reads_as_absent() {
    let store = store();
    let written = put(&store, "k", "v");
    let deleted = store.delete(b"k", &Precondition::None).expect("delete");
    assert!(deleted > written.version);
    assert_eq!(get(&store, "k"), None);
    assert_eq!(
        store.delete(b"k", &Precondition::None),
        Err(StoreError::NotFound)
    );
    let stats = store.stats();
    assert_eq!((stats.keys, stats.tombstones), (0, 1));
    assert_eq!(store.used(), store.recount_bytes());
    assert!(put(&store, "k", "again").created);
    assert_eq!(store.stats().tombstones, 0);
    assert_eq!(store.used(), store.recount_bytes());
}

#[test]
fn conditional_delete_refuses_a_stale_version() {
    let store = store();
    put(&store, "k", "v");
    let stale = Precondition::VersionIn(vec![Version { hlc: 1, node: 1 }]);
    assert_eq!(
        store.delete(b"k", &stale),
        Err(StoreError::PreconditionFailed)
    );
    assert_eq!(get(&store, "k").as_deref(), Some("v"));
}

#[tokio::test(start_paused = true)]
async fn ttl_expires_lazily_on_read() {
    let store = store();
    store
        .put(
            b"k",
            b"v",
            Some(Duration::from_secs(10)),
            &Precondition::None,
        )
        .expect("put");
    tokio::time::advance(Duration::from_secs(9)).await;
    let value = store.get(b"k").expect("not yet expired");
    assert_eq!(value.ttl, Some(Duration::from_secs(1)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(store.get(b"k"), None);
    let stats = store.stats();
    assert_eq!((stats.keys, stats.expirations, stats.bytes), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn an_expired_key_counts_as_absent_for_preconditions() {
    let store = store();
    store
        .put(
            b"k",
            b"v",
            Some(Duration::from_secs(1)),
            &Precondition::None,
        )
        .expect("put");
    tokio::time::advance(Duration::from_secs(2)).await;
    let written = store
        .put(b"k", b"new", None, &Precondition::Absent)
        .expect("expired key is absent");
    assert!(written.created);
    assert_eq!(store.stats().expirations, 1);
}

#[tokio::test(start_paused = true)]
async fn active_sweep_removes_expired_entries_nobody_reads() {
    let store = store();
    for i in 0..2_000 {
        let ttl = (i % 2 == 0).then_some(Duration::from_secs(5));
        store
            .put(format!("k{i}").as_bytes(), b"v", ttl, &Precondition::None)
            .expect("put");
    }
    tokio::time::advance(Duration::from_secs(6)).await;
    let mut cursor = expiry::SweepCursor::default();
    let mut removed = 0;
    for _ in 0..10 {
        removed += store.sweep_expired(&mut cursor, 300);
    }
    assert_eq!(removed, 1_000);
    let stats = store.stats();
    assert_eq!((stats.keys, stats.expirations), (1_000, 1_000));
    assert_eq!(store.used(), store.recount_bytes());
}

#[tokio::test(start_paused = true)]
async fn background_expiry_runs_and_tombstones_expire_after_their_grace() {
    let store = store();
    put(&store, "gone", "v");
    store.delete(b"gone", &Precondition::None).expect("delete");
    store
        .put(
            b"short",
            b"v",
            Some(Duration::from_secs(1)),
            &Precondition::None,
        )
        .expect("put");
    let _sweeper = store.spawn_active_expiry();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(store.stats().keys, 0, "the expired key was swept");
    assert_eq!(
        store.stats().tombstones,
        1,
        "the tombstone is still in its grace"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = store.stats();
    assert_eq!((stats.tombstones, stats.bytes), (0, 0));
}

#[test]
fn lru_eviction_keeps_memory_under_the_bound_and_keeps_hot_keys() {
    let max = 200 * 1024;
    let store = Store::new(config(max, EvictionPolicy::Lru));
    put(&store, "hot", "h");
    let value = "x".repeat(100);
    for i in 0..20_000 {
        put(&store, &format!("cold-{i}"), &value);
        assert!(store.used() <= max, "used {} > max {max}", store.used());
        assert_eq!(get(&store, "hot").as_deref(), Some("h"), "after {i} writes");
    }
    let stats = store.stats();
    assert!(stats.evictions > 15_000, "evictions {}", stats.evictions);
    let room = (max - store.buffer_cap()) / Entry::charge_for(10, 100);
    assert!(
        stats.keys > room as u64 * 9 / 10,
        "the cache stays full: {} keys, room for {room}",
        stats.keys
    );
    assert_eq!(store.used(), store.recount_bytes());
    assert_eq!(
        get(&store, "cold-19999").as_deref(),
        Some(value.as_str()),
        "the newest write is admitted"
    );
}

#[test]
fn lfu_eviction_keeps_frequently_read_keys() {
    let max = 200 * 1024;
    let store = Store::new(config(max, EvictionPolicy::Lfu));
    put(&store, "popular", "p");
    for _ in 0..1_000 {
        get(&store, "popular");
    }
    let value = "x".repeat(100);
    for i in 0..20_000 {
        put(&store, &format!("once-{i}"), &value);
    }
    assert_eq!(get(&store, "popular").as_deref(), Some("p"));
    assert!(store.used() <= max);
    assert!(store.stats().evictions > 15_000);
}

#[test]
fn without_eviction_a_write_that_does_not_fit_changes_nothing() {
    let max = 50 * 1024;
    let store = Store::new(config(max, EvictionPolicy::None));
    let value = "x".repeat(100);
    let mut written = 0;
    let refused = loop {
        match store.put(
            format!("k{written}").as_bytes(),
            value.as_bytes(),
            None,
            &Precondition::None,
        ) {
            Ok(_) => written += 1,
            Err(err) => break err,
        }
        assert!(written < 10_000, "the bound must stop writes");
    };
    assert!(
        matches!(refused, StoreError::OutOfMemory { .. }),
        "{refused}"
    );
    let before = store.stats();
    assert_eq!(before.keys, written);
    assert!(
        store
            .put(b"one-more", value.as_bytes(), None, &Precondition::None)
            .is_err()
    );
    assert_eq!(store.stats(), before, "a refused write changes nothing");
    // Overwriting with a value of the same size needs no new memory.
    put(&store, "k0", &"y".repeat(100));
    assert_eq!(get(&store, "k0"), Some("y".repeat(100)));
    assert_eq!(store.used(), store.recount_bytes());
}

#[test]
fn an_entry_larger_than_memory_is_refused_up_front() {
    let store = Store::new(config(1024, EvictionPolicy::Lru));
    put(&store, "small", "v");
    let err = store
        .put(b"big", &[0; 2048], None, &Precondition::None)
        .expect_err("too big");
    assert!(matches!(err, StoreError::EntryTooLarge { .. }));
    assert_eq!(
        get(&store, "small").as_deref(),
        Some("v"),
        "nothing was evicted"
    );
}

#[test]
fn a_buffer_is_charged_until_its_guard_drops() {
    let store = Store::new(config(1 << 20, EvictionPolicy::None));
    put(&store, "a", "1");
    let entries = store.recount_bytes();
    let mut chunk = store.reserve_buffer(1_000).expect("fits");
    assert_eq!(chunk.bytes(), 1_000);
    assert_eq!(store.used(), entries + 1_000);
    let stats = store.stats();
    assert_eq!(
        (stats.bytes, stats.buffer_bytes),
        (entries as u64 + 1_000, 1_000),
        "stats count the buffer in the charged bytes"
    );
    chunk.release(400);
    assert_eq!(
        (store.used(), store.stats().buffer_bytes),
        (entries + 600, 600)
    );
    drop(chunk);
    assert_eq!((store.used(), store.stats().buffer_bytes), (entries, 0));
}

#[test]
fn the_buffers_share_is_an_eighth_of_the_bound_within_its_floor_and_ceiling() {
    let cap = |max: usize| Store::new(config(max, EvictionPolicy::Lru)).buffer_cap();
    assert_eq!(cap(64 << 20), 8 << 20, "1/8");
    assert_eq!(cap(16 << 20), 4 << 20, "the 4 MiB floor");
    assert_eq!(cap(4 << 20), 2 << 20, "never more than half");
    assert_eq!(cap(1 << 30), 64 << 20, "the ceiling");
    let mut large_values = config(64 << 20, EvictionPolicy::Lru);
    large_values.limits.max_value_bytes = 10 << 20;
    assert_eq!(
        Store::new(large_values).buffer_cap(),
        2 * ((10 << 20) + 1024),
        "room for two of the largest records"
    );
}

#[test]
fn entries_never_take_the_buffers_share() {
    let max = 100_000;
    let store = Store::new(config(max, EvictionPolicy::None));
    let share = store.buffer_cap();
    let value = "x".repeat(100);
    let mut written = 0;
    while store
        .put(
            format!("k{written}").as_bytes(),
            value.as_bytes(),
            None,
            &Precondition::None,
        )
        .is_ok()
    {
        written += 1;
    }
    let full = store.used();
    assert!(
        full <= max - share && full > max - share - Entry::charge_for(6, 100),
        "entries fill their share and no more: {full}"
    );
    // The whole share is still there for buffers.
    let buffer = store
        .reserve_buffer(share)
        .expect("the buffers' share is free");
    assert_eq!(store.used(), full + share);
    assert!(store.reserve_buffer(1).is_err(), "and no more");
    drop(buffer);
    assert_eq!(store.used(), store.recount_bytes());
}

#[test]
fn buffers_never_evict_and_entries_cannot_take_their_room() {
    let max = 200 * 1024;
    let store = Store::new(config(max, EvictionPolicy::Lru));
    let share = store.buffer_cap();
    let value = "x".repeat(100);
    for i in 0..5_000 {
        put(&store, &format!("k{i}"), &value);
    }
    let full = store.stats();
    assert!(full.evictions > 0, "the cache is full");
    // A full cache still moves partitions: its buffers take their own share...
    let chunk = store.reserve_buffer(share / 2).expect("the share is free");
    let after = store.stats();
    assert_eq!(after.evictions, full.evictions, "a buffer evicts nothing");
    assert_eq!(after.keys, full.keys);
    assert_eq!(store.used(), store.recount_bytes() + share / 2);
    // ...and writes meanwhile evict only for themselves, leaving the buffer its room.
    for i in 5_000..6_000 {
        put(&store, &format!("k{i}"), &value);
    }
    assert!(store.used() <= max, "used {} > max {max}", store.used());
    assert_eq!(store.stats().buffer_bytes, (share / 2) as u64);
    let more = store
        .reserve_buffer(share / 2)
        .expect("the rest of the share");
    let refused = store.reserve_buffer(1).expect_err("the share is spent");
    assert_eq!(
        (refused.needed, refused.held, refused.cap),
        (1, share, share)
    );
    assert!(refused.to_string().contains("never evict"), "{refused}");
    drop((chunk, more));
    assert_eq!(store.used(), store.recount_bytes());
}

#[test]
fn a_buffer_beyond_its_share_is_refused_without_evicting_anything() {
    let max = 50 * 1024;
    for policy in [EvictionPolicy::None, EvictionPolicy::Lru] {
        let store = Store::new(config(max, policy));
        put(&store, "kept", "v");
        let before = store.stats();
        let refused = store
            .reserve_buffer(store.buffer_cap() + 1)
            .expect_err("beyond the share");
        assert_eq!(refused.max_memory, max);
        assert_eq!(store.stats(), before, "a refused buffer changes nothing");
        assert!(
            store.reserve_buffer(max + 1).is_err(),
            "nor beyond the bound"
        );
        assert_eq!(get(&store, "kept").as_deref(), Some("v"));
        assert_eq!(store.stats().buffer_bytes, 0);
    }
}

#[test]
fn an_empty_store_admits_one_entry_beyond_the_entries_share() {
    let max = 100_000;
    for policy in [EvictionPolicy::None, EvictionPolicy::Lru] {
        let store = Store::new(config(max, policy));
        let large = "x".repeat(max - store.buffer_cap() + 1_000);
        put(&store, "large", &large);
        assert_eq!(get(&store, "large").as_deref(), Some(large.as_str()));
        assert!(store.used() <= max);
    }
}

#[test]
fn concurrent_writers_and_readers_keep_exact_accounting() {
    let store = Store::new(config(1 << 20, EvictionPolicy::Lru));
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..20_000 {
                    let key = format!("t{t}-{}", i % 3_000);
                    let value = vec![b'v'; i % 200];
                    store
                        .put(key.as_bytes(), &value, None, &Precondition::None)
                        .expect("put");
                    store.get(key.as_bytes());
                    if i % 7 == 0 {
                        let _ = store.delete(key.as_bytes(), &Precondition::None);
                    }
                }
            });
        }
    });
    assert!(store.used() <= 1 << 20);
    assert_eq!(store.used(), store.recount_bytes());
}

fn record(key: &str, value: &str, hlc: u64, tombstone: bool) -> Record {
    Record {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        version: Version { hlc, node: 9 },
        expires_at_ms: 0,
        tombstone,
    }
}

#[test]
fn apply_keeps_the_newest_version_whatever_the_arrival_order() {
    let store = store();
    assert_eq!(
        store.apply(&record("k", "v2", 200, false)),
        Ok(Applied::Stored)
    );
    assert_eq!(
        store.apply(&record("k", "v1", 100, false)),
        Ok(Applied::Stale)
    );
    assert_eq!(
        store.apply(&record("k", "v2", 200, false)),
        Ok(Applied::Stale),
        "idempotent"
    );
    assert_eq!(get(&store, "k").as_deref(), Some("v2"));
    assert_eq!(
        store.apply(&record("k", "v3", 300, false)),
        Ok(Applied::Stored)
    );
    assert_eq!(get(&store, "k").as_deref(), Some("v3"));
    assert_eq!(store.used(), store.recount_bytes());
}

#[test]
fn a_tombstone_is_never_overwritten_by_an_older_write() {
    let store = store();
    store.apply(&record("k", "old", 100, false)).expect("apply");
    assert_eq!(
        store.apply(&record("k", "", 200, true)),
        Ok(Applied::Stored)
    );
    assert_eq!(get(&store, "k"), None);
    assert_eq!(
        store.apply(&record("k", "resurrected?", 150, false)),
        Ok(Applied::Stale)
    );
    assert_eq!(get(&store, "k"), None, "nothing stale comes back");
    let held = store.get_record(b"k").expect("the tombstone is held");
    assert!(held.tombstone);
    assert_eq!(held.version.hlc, 200);
    assert_eq!(store.stats().tombstones, 1);
    assert_eq!(
        store.apply(&record("k", "newer", 250, false)),
        Ok(Applied::Stored)
    );
    assert_eq!(get(&store, "k").as_deref(), Some("newer"));
    assert_eq!(store.stats().tombstones, 0);
    assert_eq!(store.used(), store.recount_bytes());
}

#[test]
fn local_writes_order_after_applied_remote_versions() {
    let store = store();
    let far_future = u64::MAX >> 1;
    store
        .apply(&record("k", "remote", far_future, false))
        .expect("apply");
    let local = put(&store, "k", "local");
    assert!(
        local.version.hlc > far_future,
        "the HLC observed the remote version"
    );
    assert_eq!(get(&store, "k").as_deref(), Some("local"));
}

#[tokio::test(start_paused = true)]
async fn expired_records_are_neither_applied_nor_returned() {
    let store = store();
    let mut expiring = record("k", "v", 100, false);
    expiring.expires_at_ms = store.shared.clock.now_ms() + 1_000;
    assert_eq!(store.apply(&expiring), Ok(Applied::Stored));
    assert!(store.get_record(b"k").is_some());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(store.get_record(b"k"), None);
    let mut late = record("j", "v", 100, false);
    late.expires_at_ms = store.shared.clock.now_ms() - 1;
    assert_eq!(store.apply(&late), Ok(Applied::Stale));
    assert_eq!(store.get_record(b"j"), None);
}

#[test]
fn digests_are_order_independent_and_see_every_version_change() {
    let (a, b) = (store(), store());
    let records: Vec<Record> = (0..500)
        .map(|i| record(&format!("k{i}"), "v", 100 + i, false))
        .collect();
    for r in &records {
        a.apply(r).expect("apply");
    }
    for r in records.iter().rev() {
        b.apply(r).expect("apply");
    }
    let partitions = a.config().partitions;
    let digests = |s: &Store| {
        (0..partitions)
            .map(|p| s.partition_digest(p))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        digests(&a),
        digests(&b),
        "same content, any order: same digest"
    );
    b.apply(&record("k7", "", 10_000, true)).expect("tombstone");
    let differing: Vec<u32> = (0..partitions)
        .filter(|&p| a.partition_digest(p) != b.partition_digest(p))
        .collect();
    assert_eq!(
        differing,
        vec![a.partition_of(b"k7")],
        "exactly the changed key's partition"
    );
}

#[test]
fn a_chunked_scan_sees_every_entry_despite_concurrent_removals() {
    // No tombstones: a delete removes the entry and moves the last slot into its hole.
    let store = Store::new(StoreConfig {
        limits: RecordLimits {
            tombstone_ttl: Duration::ZERO,
            ..config(64 << 20, EvictionPolicy::Lru).limits
        },
        ..config(64 << 20, EvictionPolicy::Lru)
    });
    for i in 0..2_000 {
        put(&store, &format!("k{i}"), "v");
    }
    let partition = store.partition_of(b"k0");
    let expected: std::collections::HashSet<Vec<u8>> = store
        .partition_chunk(partition, None, None, usize::MAX, usize::MAX)
        .0
        .into_iter()
        .map(|r| r.key)
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut cursor = None;
    let mut removed = std::collections::HashSet::new();
    loop {
        let (chunk, next) = store.partition_chunk(partition, None, cursor, 7, usize::MAX);
        seen.extend(chunk.into_iter().map(|r| r.key));
        // Delete an entry not yet scanned, as a concurrent writer would.
        if let Some(victim) = expected
            .iter()
            .find(|k| !seen.contains(*k) && !removed.contains(*k))
        {
            store.delete(victim, &Precondition::None).expect("delete");
            removed.insert(victim.clone());
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for key in &expected {
        assert!(
            seen.contains(key) || removed.contains(key),
            "missed {key:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn held_tombstones_outlive_their_ttl_and_shadow_older_copies_until_released() {
    // Made together: their clocks follow the same (paused) time.
    let store = Store::new(config(1 << 20, EvictionPolicy::Lru));
    let behind = Store::new(config(1 << 20, EvictionPolicy::Lru));
    let empty = Store::new(config(1 << 20, EvictionPolicy::Lru));
    store.hold_tombstones();
    let old = store.new_put(b"k", b"old", None);
    assert_eq!(store.apply(&old), Ok(Applied::Stored));
    let tombstone = store.new_tombstone(b"k");
    assert_eq!(store.apply(&tombstone), Ok(Applied::Stored));
    tokio::time::advance(Duration::from_secs(61)).await;
    let mut cursor = expiry::SweepCursor::default();
    assert_eq!(
        store.sweep_expired(&mut cursor, 1_000),
        0,
        "held past its TTL"
    );
    assert!(store.get(b"k").is_none(), "still a delete to readers");
    assert_eq!(
        store.apply(&old),
        Ok(Applied::Stale),
        "the older copy loses"
    );
    assert!(
        store.get_record(b"k").is_some_and(|r| r.tombstone),
        "and it travels"
    );

    // Another replica holding the old copy takes the expired tombstone to shadow it;
    // one holding nothing does not store it.
    behind.hold_tombstones();
    assert_eq!(behind.apply(&old), Ok(Applied::Stored));
    let expired = store.get_record(b"k").expect("held");
    assert_eq!(behind.apply(&expired), Ok(Applied::Stored));
    assert!(behind.get(b"k").is_none());
    assert_eq!(empty.apply(&expired), Ok(Applied::Stale));
    assert_eq!(empty.stats().tombstones, 0);

    store.release_tombstones(store.partition_of(b"k"), store.now_ms());
    let mut cursor = expiry::SweepCursor::default();
    assert_eq!(store.sweep_expired(&mut cursor, 1_000), 1);
    assert_eq!(store.stats().tombstones, 0);
}

#[tokio::test(start_paused = true)]
async fn eviction_never_takes_a_tombstone_still_needed() {
    // Room for a few hundred small entries; LRU evicts under pressure.
    let store = Store::new(config(256 << 10, EvictionPolicy::Lru));
    store.hold_tombstones();
    let deleted: Vec<String> = (0..50).map(|i| format!("gone-{i}")).collect();
    for key in &deleted {
        let old = store.new_put(key.as_bytes(), b"old", None);
        assert_eq!(store.apply(&old), Ok(Applied::Stored));
        let tombstone = store.new_tombstone(key.as_bytes());
        assert_eq!(store.apply(&tombstone), Ok(Applied::Stored));
    }
    // Past their TTL: held (no co-owner agreed yet), so they still shadow older copies.
    tokio::time::advance(Duration::from_secs(61)).await;
    let value = "v".repeat(512);
    for i in 0..5_000 {
        put(&store, &format!("fill-{i}"), &value);
    }
    assert!(store.stats().evictions > 1_000, "{:?}", store.stats());
    for key in &deleted {
        assert!(
            store
                .get_record(key.as_bytes())
                .is_some_and(|r| r.tombstone),
            "{key}: an evicted tombstone lets a replica's older copy come back"
        );
    }
    // Released, they are the first to go.
    for partition in 0..16 {
        store.release_tombstones(partition, store.now_ms());
    }
    for i in 0..200 {
        put(&store, &format!("more-{i}"), &value);
    }
    assert!(store.stats().tombstones < 50, "{:?}", store.stats());
}
