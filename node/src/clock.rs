//! Time and write versions.
//!
//! Every entry carries absolute wall-clock expiry (so it can travel between nodes) and a
//! [`Version`]: a hybrid logical clock reading plus the writer's node tag. The higher
//! version wins, which is what makes replication, handoff and repair idempotent later on.
//!
//! [`Clock`] reads wall time once at start and then advances with `tokio::time::Instant`.
//! That keeps readings monotonic, and lets tests drive TTLs with paused tokio time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, advancing monotonically from process start.
#[derive(Debug, Clone)]
pub struct Clock {
    base_unix_ms: u64,
    base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            base_unix_ms,
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_unix_ms.saturating_add(elapsed)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Whole milliseconds in `duration`, saturating: the unit every expiry and timestamp uses.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The version of one write: compared first by HLC reading, then by writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// `(physical_ms << 16) | logical`: a hybrid logical clock reading.
    pub hlc: u64,
    /// xxh3 of the writer's node id, so concurrent writes from two nodes never tie.
    pub node: u64,
}

impl Version {
    /// The HTTP entity tag for this version, quotes included.
    pub fn etag(&self) -> String {
        String::from_utf8_lossy(&self.etag_bytes()).into_owned()
    }

    /// The entity tag as bytes: `"` + 16 hex digits + `-` + 16 hex digits + `"`. Written
    /// by hand because it is on every response, and `format!` padding costs more.
    pub fn etag_bytes(&self) -> [u8; 35] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut tag = [b'"'; 35];
        tag[17] = b'-';
        for (start, value) in [(1, self.hlc), (18, self.node)] {
            for (i, byte) in tag[start..start + 16].iter_mut().enumerate() {
                let nibble = (value >> (60 - 4 * i)) & 0xf;
                *byte = HEX[usize::try_from(nibble).unwrap_or(0)];
            }
        }
        tag
    }

    /// Parses an entity tag written by [`Version::etag`]. Weak tags (`W/"…"`) never
    /// identify a version, since a version is an exact byte-for-byte write.
    pub fn from_etag(tag: &str) -> Option<Self> {
        let inner = tag.trim().strip_prefix('"')?.strip_suffix('"')?;
        let (hlc, node) = inner.split_once('-')?;
        if hlc.len() != 16 || node.len() != 16 {
            return None;
        }
        Some(Self {
            hlc: u64::from_str_radix(hlc, 16).ok()?,
            node: u64::from_str_radix(node, 16).ok()?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.hlc, self.node)
    }
}

/// A hybrid logical clock: never goes backwards, and stays close to wall time.
#[derive(Debug)]
pub struct Hlc {
    node: u64,
    last: AtomicU64,
}

const LOGICAL_BITS: u32 = 16;

impl Hlc {
    pub fn new(node_id: &str) -> Self {
        Self {
            node: xxhash_rust::xxh3::xxh3_64(node_id.as_bytes()),
            last: AtomicU64::new(0),
        }
    }

    /// A version strictly greater than every version this clock has issued or observed.
    pub fn next(&self, now_ms: u64) -> Version {
        let physical = now_ms << LOGICAL_BITS;
        let mut current = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(current + 1);
            match self.last.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Version {
                        hlc: next,
                        node: self.node,
                    };
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Folds in a version seen from elsewhere, so later local writes order after it.
    pub fn observe(&self, seen: Version) {
        self.last.fetch_max(seen.hlc, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_strictly_increasing_even_when_wall_time_stalls() {
        let hlc = Hlc::new("a");
        let first = hlc.next(1_000);
        let second = hlc.next(1_000);
        let third = hlc.next(999);
        assert!(first < second && second < third);
        assert_eq!(first.hlc >> LOGICAL_BITS, 1_000);
    }

    #[test]
    fn hlc_orders_after_observed_versions() {
        let hlc = Hlc::new("a");
        let remote = Version {
            hlc: 5_000 << LOGICAL_BITS,
            node: 7,
        };
        hlc.observe(remote);
        assert!(hlc.next(1_000) > remote);
    }

    #[test]
    fn etag_round_trips_and_rejects_foreign_tags() {
        let v = Version {
            hlc: 0x1234,
            node: u64::MAX,
        };
        assert_eq!(v.etag(), "\"0000000000001234-ffffffffffffffff\"");
        assert_eq!(v.etag(), format!("\"{:016x}-{:016x}\"", v.hlc, v.node));
        assert_eq!(Version::from_etag(&v.etag()), Some(v));
        assert_eq!(
            Version::from_etag("W/\"0000000000001234-ffffffffffffffff\""),
            None
        );
        assert_eq!(Version::from_etag("\"abc\""), None);
        assert_eq!(Version::from_etag("*"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn clock_follows_paused_tokio_time() {
        let clock = Clock::new();
        let start = clock.now_ms();
        tokio::time::advance(std::time::Duration::from_secs(90)).await;
        assert_eq!(clock.now_ms() - start, 90_000);
    }
}
