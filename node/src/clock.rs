//! Time and write versions.
//!
//! Every entry carries absolute wall-clock expiry (so it can travel between nodes) and a
//! [`Version`]: a hybrid logical clock reading plus the writer's node tag. The higher
//! version wins, which is what makes replication, handoff and repair idempotent later on.
//!
//! [`Clock`] reads the system's wall time on every call, so NTP corrections (and a clock
//! that was wrong at start) reach the node at once. Wall time can step backwards; the
//! hybrid logical clock ([`Hlc`]) keeps versions increasing regardless. Unit tests use a
//! clock that follows tokio's (pausable) time instead, so they can drive TTLs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// The system's wall clock, read on every call.
    System,
    /// Wall time at creation, advanced by tokio's clock: pausable, for tests.
    Tokio { base_unix_ms: u64, base: Instant },
}

impl Clock {
    /// The system's wall clock (in unit tests of this crate: [`Clock::tokio`]).
    pub fn new() -> Self {
        if cfg!(test) {
            Self::tokio()
        } else {
            Self::system()
        }
    }

    pub fn system() -> Self {
        Self {
            source: Source::System,
        }
    }

    /// Wall time now, then advancing with tokio's clock (which tests can pause).
    pub fn tokio() -> Self {
        Self {
            source: Source::Tokio {
                base_unix_ms: wall_ms(),
                base: Instant::now(),
            },
        }
    }

    pub fn now_ms(&self) -> u64 {
        match &self.source {
            Source::System => wall_ms(),
            Source::Tokio { base_unix_ms, base } => {
                base_unix_ms.saturating_add(millis(base.elapsed()))
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The system's wall clock, in Unix ms (0 before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// Whole milliseconds in `duration`, saturating: the unit every expiry and timestamp uses.
pub fn millis(duration: Duration) -> u64 {
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
    /// The wall-clock part of the HLC reading, in Unix ms.
    pub fn physical_ms(&self) -> u64 {
        self.hlc >> LOGICAL_BITS
    }

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
            // Saturating: a version is never wrapped back to 0. Versions from elsewhere
            // are bounded by the clock offset before they are observed, so this end is
            // some 8,900 years away.
            let next = physical.max(current.saturating_add(1));
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
    /// Callers check it against the clock bound first (see `RecordLimits::check_version`).
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

    #[test]
    fn the_hlc_never_wraps() {
        let hlc = Hlc::new("a");
        hlc.observe(Version {
            hlc: u64::MAX - 1,
            node: 1,
        });
        let last = hlc.next(1_000);
        assert_eq!(last.hlc, u64::MAX);
        assert_eq!(
            hlc.next(1_000).hlc,
            u64::MAX,
            "it saturates, never goes back to 0"
        );
    }

    #[test]
    fn the_system_clock_is_read_on_every_call() {
        let clock = Clock::system();
        let first = clock.now_ms();
        std::thread::sleep(Duration::from_millis(30));
        let later = clock.now_ms();
        assert!(later >= first + 30, "{first} then {later}");
        assert!(first.abs_diff(wall_ms()) < 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn clock_follows_paused_tokio_time() {
        let clock = Clock::tokio();
        let start = clock.now_ms();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now_ms() - start, 90_000);
    }
}
