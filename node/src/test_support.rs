//! Helpers the unit tests of several modules share.

use std::time::Duration;

use clap::Parser as _;

use crate::config::{Cli, NodeConfig};

/// A small node's config: 8 partitions, 1 MiB, 16-byte keys, 64-byte values, 4 KiB
/// batches, a 1 s shutdown grace; then `extra` flags (later flags win).
pub fn small_config(extra: &[&str]) -> NodeConfig {
    let mut args = vec![
        "kache-node",
        "--node-id",
        "test",
        "--partitions",
        "8",
        "--max-memory",
        "1MiB",
        "--max-key-bytes",
        "16",
        "--max-value-bytes",
        "64",
        "--max-batch-bytes",
        "4KiB",
        "--shutdown-grace",
        "1s",
    ];
    args.extend_from_slice(extra);
    Cli::try_parse_from(args)
        .expect("valid flags")
        .into_config()
        .expect("valid config")
}

/// Waits (up to 10 s) until `done` holds.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
