//! Active expiry: a background sweep that removes expired entries, and expired
//! tombstones once they may go (see `Store::hold_tombstones`).
//!
//! Reads expire entries lazily, but keys nobody reads again would hold memory forever.
//! The sweep walks every slot of every partition with a cursor, a fixed number of slots
//! per tick, so its CPU cost is bounded (about 100k slot checks a second) and a full pass
//! over N keys takes N / 100k seconds. It holds one partition lock at a time.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::Store;
use super::memory::{Removal, count_removal};

const TICK: Duration = Duration::from_millis(100);
const SLOTS_PER_TICK: usize = 10_000;

/// Where the sweep resumes.
#[derive(Debug, Default, Clone, Copy)]
pub struct SweepCursor {
    partition: usize,
    slot: usize,
}

impl Store {
    /// Checks up to `budget` slots from `cursor` and removes the expired ones.
    /// Returns how many entries it removed.
    pub fn sweep_expired(&self, cursor: &mut SweepCursor, budget: usize) -> usize {
        let partitions = self.shared.partitions.len();
        let mut checked = 0;
        let mut removed = 0;
        let mut visited = 0;
        while checked < budget && visited <= partitions {
            let index = cursor.partition % partitions;
            let mut part = self.shared.partitions[index].lock();
            let now = self.shared.clock.now_ms();
            let mut freed = 0;
            while cursor.slot < part.len() && checked < budget {
                checked += 1;
                if self.removable(part.slot(cursor.slot), index, now) {
                    // The last entry moves into this slot; check it next.
                    let gone = part.remove(cursor.slot);
                    count_removal(&mut part, &gone, Removal::Expired);
                    freed += gone.charge();
                    removed += 1;
                } else {
                    cursor.slot += 1;
                }
            }
            if cursor.slot >= part.len() {
                cursor.partition = (cursor.partition + 1) % partitions;
                cursor.slot = 0;
                visited += 1;
            }
            drop(part);
            self.release(freed);
        }
        removed
    }

    /// Starts the background sweep. It stops when the returned guard is dropped.
    pub fn spawn_active_expiry(&self) -> ActiveExpiry {
        let store = self.clone();
        let task = tokio::spawn(async move {
            let mut cursor = SweepCursor::default();
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                store.sweep_expired(&mut cursor, SLOTS_PER_TICK);
            }
        });
        ActiveExpiry { task }
    }
}

/// Drop guard for the background sweep.
#[derive(Debug)]
pub struct ActiveExpiry {
    task: JoinHandle<()>,
}

impl Drop for ActiveExpiry {
    fn drop(&mut self) {
        self.task.abort();
    }
}
