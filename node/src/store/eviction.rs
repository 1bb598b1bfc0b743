//! Eviction policies: sampled approximations of LRU and LFU, as in Redis.
//!
//! Each entry keeps 32 bits of metadata, updated on every access under the partition lock.
//! To evict, the store samples a few entries of a random partition and removes the one
//! with the lowest [`EvictionPolicy::keep_score`]. Fresh writes start with a score that
//! lets them in: a full cache must still admit new keys (moka #147 is what goes wrong).

use std::str::FromStr;

/// How many entries one eviction round looks at.
pub const SAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Least recently used: metadata is the partition's access counter at the last
    /// access. Samples only ever compare entries of one partition, so a per-partition
    /// counter orders them exactly, with no shared clock on the hot path.
    Lru,
    /// Least frequently used: a logarithmic access counter that decays each minute.
    Lfu,
    /// Never evict: a write that does not fit is refused.
    None,
}

impl FromStr for EvictionPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lru" => Ok(Self::Lru),
            "lfu" => Ok(Self::Lfu),
            "none" | "noeviction" => Ok(Self::None),
            other => Err(format!(
                "unknown eviction policy '{other}' (expected lru, lfu or none)"
            )),
        }
    }
}

/// The LFU counter a new key starts with, so it is not the first thing evicted.
const LFU_INITIAL: u32 = 5;
/// How strongly LFU increments flatten: higher means more accesses per step.
const LFU_LOG_FACTOR: u32 = 10;

impl EvictionPolicy {
    /// Metadata for an entry written now; `tick` is the partition's access counter.
    pub fn on_insert(self, now_ms: u64, tick: u32) -> u32 {
        match self {
            Self::Lru | Self::None => tick,
            Self::Lfu => (lfu_minutes(now_ms) << 8) | LFU_INITIAL,
        }
    }

    /// Metadata after one more access.
    pub fn on_access(self, meta: u32, now_ms: u64, tick: u32) -> u32 {
        match self {
            Self::Lru | Self::None => tick,
            Self::Lfu => {
                let mut counter = lfu_decayed(meta, now_ms);
                if counter < 255 {
                    let base = counter.saturating_sub(LFU_INITIAL);
                    // Logarithmic: the probability of a step shrinks as the counter grows.
                    if fastrand::u32(..base * LFU_LOG_FACTOR + 1) == 0 {
                        counter += 1;
                    }
                }
                (lfu_minutes(now_ms) << 8) | counter
            }
        }
    }

    /// Higher means more worth keeping.
    pub fn keep_score(self, meta: u32, now_ms: u64, tick: u32) -> u64 {
        match self {
            // More accesses since this one, lower score.
            Self::Lru | Self::None => u64::from(u32::MAX - tick.wrapping_sub(meta)),
            Self::Lfu => u64::from(lfu_decayed(meta, now_ms)),
        }
    }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "24 bits of minutes, compared with wrapping_sub"
)]
fn lfu_minutes(now_ms: u64) -> u32 {
    ((now_ms / 60_000) as u32) & 0x00ff_ffff
}

/// The counter minus one for each whole minute since the last access.
fn lfu_decayed(meta: u32, now_ms: u64) -> u32 {
    let counter = meta & 0xff;
    let idle_minutes = lfu_minutes(now_ms).wrapping_sub(meta >> 8) & 0x00ff_ffff;
    counter.saturating_sub(idle_minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies_case_insensitively() {
        assert_eq!("LRU".parse(), Ok(EvictionPolicy::Lru));
        assert_eq!("lfu".parse(), Ok(EvictionPolicy::Lfu));
        assert_eq!("none".parse(), Ok(EvictionPolicy::None));
        assert!("random".parse::<EvictionPolicy>().is_err());
    }

    #[test]
    fn lru_prefers_recently_used() {
        let policy = EvictionPolicy::Lru;
        let old = policy.on_insert(0, 1);
        let recent = policy.on_access(old, 0, 2);
        assert!(policy.keep_score(recent, 0, 3) > policy.keep_score(old, 0, 3));
        // Wrapping the counter keeps the order.
        let before_wrap = policy.on_insert(0, u32::MAX);
        let after_wrap = policy.on_access(before_wrap, 0, 1);
        assert!(policy.keep_score(after_wrap, 0, 5) > policy.keep_score(before_wrap, 0, 5));
    }

    #[test]
    fn lfu_counts_up_logarithmically_and_decays() {
        let policy = EvictionPolicy::Lfu;
        let mut meta = policy.on_insert(0, 0);
        for _ in 0..10_000 {
            meta = policy.on_access(meta, 0, 0);
        }
        let hot = meta & 0xff;
        assert!(hot > LFU_INITIAL + 5, "counter {hot} grew");
        assert!(
            hot < 255,
            "counter {hot} grows logarithmically, not linearly"
        );
        let fresh = policy.on_insert(0, 0);
        assert!(policy.keep_score(meta, 0, 0) > policy.keep_score(fresh, 0, 0));
        // Ten idle minutes take ten off the counter.
        assert_eq!(policy.keep_score(meta, 600_000, 0), u64::from(hot - 10));
    }
}
