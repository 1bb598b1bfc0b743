//! The data dir in process: what is written comes back, damage is cut off or set aside,
//! and data of another cluster, member or membership is never loaded.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::{EvictionPolicy, Precondition, StoreConfig};

fn config(dir: &Path, fsync: FsyncPolicy) -> PersistConfig {
    PersistConfig {
        dir: dir.to_owned(),
        fsync,
        snapshot_interval: Duration::from_secs(3600),
        cluster_id: "cluster-a".into(),
        member: "node-0".into(),
    }
}

fn store(max_memory: usize) -> Store {
    Store::new(StoreConfig::for_tests(
        "node-0",
        16,
        max_memory,
        EvictionPolicy::Lru,
    ))
}

/// Opens `dir` into a fresh store.
fn open(config: &PersistConfig) -> (Store, Arc<Persistence>) {
    let store = store(64 << 20);
    let persistence = Persistence::open(config, &store).expect("open");
    (store, persistence)
}

fn put(store: &Store, key: &str, value: &str) {
    store
        .put(key.as_bytes(), value.as_bytes(), None, &Precondition::None)
        .expect("put");
}

fn value(store: &Store, key: &str) -> Option<String> {
    store
        .get(key.as_bytes())
        .map(|v| String::from_utf8_lossy(&v.data).into_owned())
}

fn last_log(dir: &Path) -> std::path::PathBuf {
    files::list(dir).unwrap().logs.last().unwrap().1.clone()
}

#[tokio::test]
async fn writes_deletes_and_expiries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::Always);
    {
        let (store, persistence) = open(&config);
        put(&store, "kept", "1");
        put(&store, "overwritten", "old");
        put(&store, "overwritten", "new");
        put(&store, "deleted", "x");
        store.delete(b"deleted", &Precondition::None).unwrap();
        store
            .put(
                b"short-lived",
                b"v",
                Some(Duration::from_millis(1)),
                &Precondition::None,
            )
            .unwrap();
        store.durable().await.unwrap();
        assert!(
            persistence.report().fsyncs > 0,
            "always syncs before acknowledging"
        );
        persistence.close();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (store, persistence) = open(&config);
    assert_eq!(value(&store, "kept").as_deref(), Some("1"));
    assert_eq!(value(&store, "overwritten").as_deref(), Some("new"));
    assert_eq!(value(&store, "deleted"), None);
    assert_eq!(
        value(&store, "short-lived"),
        None,
        "expired records are not loaded"
    );
    // The tombstone came back too: it shadows an older copy a replica may send.
    let tombstone = store
        .get_record(b"deleted")
        .expect("the tombstone is loaded");
    assert!(tombstone.tombstone);
    assert!(!persistence.recovered().incomplete);
    assert_eq!(persistence.report().records_loaded, 6);
    persistence.close();
}

#[tokio::test]
async fn a_snapshot_replaces_the_logs_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::EverySec);
    {
        let (store, persistence) = open(&config);
        for i in 0..500 {
            put(&store, &format!("key-{i}"), &format!("v{i}"));
        }
        let generation = snapshot::take(&store, &persistence.log, &persistence.stats)
            .await
            .unwrap();
        for i in 0..10 {
            put(&store, &format!("key-{i}"), "after");
        }
        let listing = files::list(dir.path()).unwrap();
        assert_eq!(listing.snapshots.len(), 1);
        assert_eq!(listing.snapshots[0].0, generation);
        assert!(
            listing.logs.iter().all(|(g, _)| *g >= generation),
            "logs before the snapshot are gone: {:?}",
            listing.logs
        );
        assert_eq!(persistence.report().snapshot_records, 500);
        persistence.close();
    }
    let (store, persistence) = open(&config);
    assert_eq!(value(&store, "key-3").as_deref(), Some("after"));
    assert_eq!(value(&store, "key-499").as_deref(), Some("v499"));
    assert_eq!(store.stats().keys, 500);
    persistence.close();
}

#[tokio::test]
async fn a_dropped_partition_stays_dropped_and_what_came_after_stays() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::EverySec);
    let partition;
    {
        let (store, persistence) = open(&config);
        put(&store, "a", "before");
        partition = store.partition_of(b"a");
        store.drop_partition(partition);
        // Taken back later: a key written after the drop is kept.
        let later = (0..1000)
            .map(|i| format!("b{i}"))
            .find(|k| store.partition_of(k.as_bytes()) == partition)
            .unwrap();
        put(&store, &later, "after");
        persistence.close();
        let (store, persistence) = open(&config);
        assert_eq!(value(&store, "a"), None, "the drop is replayed");
        assert_eq!(value(&store, &later).as_deref(), Some("after"));
        persistence.close();
    }
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::Always);
    {
        let (store, persistence) = open(&config);
        put(&store, "one", "1");
        put(&store, "two", "2");
        store.durable().await.unwrap();
        persistence.close();
    }
    // A crash mid-write: half a frame, then garbage.
    let log = last_log(dir.path());
    let good_len = fs::metadata(&log).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]).unwrap();
    drop(file);
    let (store, persistence) = open(&config);
    assert_eq!(value(&store, "one").as_deref(), Some("1"));
    assert_eq!(value(&store, "two").as_deref(), Some("2"));
    let report = persistence.report();
    assert_eq!(report.torn_tails, 1);
    assert_eq!(report.truncated_bytes, 11);
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        good_len,
        "truncated at the last good frame"
    );
    persistence.close();
}

#[tokio::test]
async fn a_corrupt_frame_in_the_middle_loses_only_what_follows_it_in_that_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::Always);
    {
        let (store, persistence) = open(&config);
        put(&store, "first", "1");
        store.durable().await.unwrap();
        put(&store, "second", "2");
        store.durable().await.unwrap();
        persistence.close();
    }
    let log = last_log(dir.path());
    let mut bytes = fs::read(&log).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&log, bytes).unwrap();
    let (store, persistence) = open(&config);
    assert_eq!(value(&store, "first").as_deref(), Some("1"));
    assert_eq!(
        value(&store, "second"),
        None,
        "a record failing its checksum is not loaded"
    );
    assert_eq!(persistence.report().torn_tails, 1);
    persistence.close();
}

#[tokio::test]
async fn a_corrupt_snapshot_is_set_aside_and_the_load_marked_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::EverySec);
    {
        let (store, persistence) = open(&config);
        for i in 0..50 {
            put(&store, &format!("key-{i}"), "v");
        }
        snapshot::take(&store, &persistence.log, &persistence.stats)
            .await
            .unwrap();
        put(&store, "after-snapshot", "v");
        persistence.close();
    }
    let snapshot = files::list(dir.path()).unwrap().snapshots[0].1.clone();
    let mut bytes = fs::read(&snapshot).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&snapshot, bytes).unwrap();
    let (store, persistence) = open(&config);
    assert!(persistence.recovered().incomplete);
    assert_eq!(persistence.report().corrupt_snapshots, 1);
    assert_eq!(
        value(&store, "key-7"),
        None,
        "nothing of the corrupt snapshot is loaded"
    );
    assert_eq!(
        value(&store, "after-snapshot").as_deref(),
        Some("v"),
        "the log after it is"
    );
    assert!(!snapshot.exists());
    assert!(
        snapshot.with_extension("kss.corrupt").exists(),
        "set aside for a post-mortem"
    );
    persistence.close();
}

#[tokio::test]
async fn data_of_another_cluster_member_or_a_departed_member_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), FsyncPolicy::EverySec);
    let write_one = |config: &PersistConfig| {
        let (store, persistence) = open(config);
        put(&store, "k", "v");
        persistence.close();
    };
    let other_cluster = PersistConfig {
        cluster_id: "cluster-b".into(),
        ..base.clone()
    };
    let other_member = PersistConfig {
        member: "node-1".into(),
        ..base.clone()
    };
    for (label, reader) in [("cluster", &other_cluster), ("member", &other_member)] {
        write_one(&base);
        let (store, persistence) = open(reader);
        assert_eq!(
            value(&store, "k"),
            None,
            "another {label}'s data is not loaded"
        );
        assert!(persistence.recovered().discarded.is_some());
        persistence.close();
        // The dir is the reader's now.
        let (store, persistence) = open(&base);
        assert_eq!(value(&store, "k"), None);
        persistence.close();
    }
    write_one(&base);
    {
        let (_, persistence) = open(&base);
        persistence.mark_departed();
        persistence.close();
    }
    let (store, persistence) = open(&base);
    assert_eq!(
        value(&store, "k"),
        None,
        "a departed member's data is not loaded"
    );
    assert_eq!(persistence.report().discarded, 1);
    persistence.close();
    // And the mark is gone with it: the dir serves the new membership.
    let (store, persistence) = open(&base);
    put(&store, "new", "1");
    persistence.close();
    let (store, persistence) = open(&base);
    assert_eq!(value(&store, "new").as_deref(), Some("1"));
    persistence.close();
}

#[test]
fn a_dir_of_another_format_is_refused_not_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::No);
    files::write_meta(
        dir.path(),
        &files::Meta {
            format: 99,
            cluster_id: "cluster-a".into(),
            member: "node-0".into(),
        },
    )
    .unwrap();
    let err = Persistence::open(&config, &store(1 << 20)).unwrap_err();
    assert!(
        err.to_string().contains("format 99"),
        "the error names the format: {err}"
    );
    assert!(
        files::read_meta(dir.path()).unwrap().is_some(),
        "left as it was"
    );
}

#[tokio::test]
async fn loading_holds_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FsyncPolicy::No);
    {
        let (store, persistence) = open(&config);
        for i in 0..5000 {
            put(&store, &format!("key-{i}"), &"x".repeat(200));
        }
        persistence.close();
    }
    let small = store(256 << 10);
    let persistence = Persistence::open(&config, &small).unwrap();
    let stats = small.stats();
    assert!(stats.bytes <= stats.max_memory, "{stats:?}");
    assert!(stats.evictions > 0, "the bound evicted while loading");
    assert_eq!(
        value(&small, "key-4999").map(|v| v.len()),
        Some(200),
        "the newest stay"
    );
    persistence.close();
}
