//! The node's lifecycle, owned in one place: Starting → Syncing → Ready → Draining → Stopped.
//!
//! One [`Lifecycle`] per node holds the phase on a `watch` channel. The startup sync, the
//! drain and `run` advance it; `/readyz`, the peer service (which refuses to be a sync
//! source before the node holds what it owns) and `GET /v1/cluster` read it. Nobody keeps
//! a copy, so readiness and the peer service can never disagree.
//!
//! A phase only moves forward. A node stopped mid-sync goes Syncing → Draining without
//! ever having been a source, and [`Phase::Draining`] remembers which way it came, so a
//! draining node that never finished its sync still refuses to serve as a source.

use std::sync::Arc;

use tokio::sync::watch;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A cluster member waiting for its first member list.
    Starting,
    /// Pulling the partitions it owns from the other members; nobody's source yet.
    Syncing,
    /// Holds what it owns; serves clients and peers.
    Ready,
    /// Shutting down: handing off, then finishing requests in flight. `synced` says whether
    /// the node had reached [`Phase::Ready`], and so may still act as a source.
    Draining { synced: bool },
    /// The servers have stopped.
    Stopped,
}

impl Phase {
    /// Whether the node holds every partition it owns, so that it may answer as a replica
    /// and serve as a source for other nodes' syncs.
    pub fn is_synced(self) -> bool {
        matches!(self, Self::Ready | Self::Draining { synced: true })
    }

    /// The order phases go in; a phase never moves to a lower rank.
    fn rank(self) -> u8 {
        match self {
            Self::Starting => 0,
            Self::Syncing => 1,
            Self::Ready => 2,
            Self::Draining { .. } => 3,
            Self::Stopped => 4,
        }
    }
}

/// A cheap handle on the node's phase. Clones share one channel.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    phase: Arc<watch::Sender<Phase>>,
}

impl Lifecycle {
    pub fn new(phase: Phase) -> Self {
        Self {
            phase: Arc::new(watch::channel(phase).0),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Ready
    }

    /// Whether the node holds what it owns (see [`Phase::is_synced`]).
    pub fn is_synced(&self) -> bool {
        self.phase().is_synced()
    }

    /// Moves to `to` if that is forward; returns whether the phase changed.
    pub fn advance(&self, to: Phase) -> bool {
        self.phase.send_if_modified(|phase| {
            if to.rank() <= phase.rank() {
                return false;
            }
            *phase = to;
            true
        })
    }

    /// Starts the shutdown: Draining, remembering whether the node had synced.
    pub fn start_draining(&self) -> bool {
        let synced = self.is_synced();
        self.advance(Phase::Draining { synced })
    }

    /// Follows phase changes.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward() {
        let life = Lifecycle::new(Phase::Starting);
        assert!(life.advance(Phase::Syncing));
        assert!(!life.advance(Phase::Starting), "no way back");
        assert!(life.advance(Phase::Ready));
        assert!(life.is_ready() && life.is_synced());
        assert!(life.start_draining());
        assert_eq!(life.phase(), Phase::Draining { synced: true });
        assert!(
            !life.advance(Phase::Ready),
            "a sync finishing late changes nothing"
        );
        assert!(life.is_synced() && !life.is_ready());
        assert!(life.advance(Phase::Stopped));
        assert!(!life.is_synced());
    }

    #[test]
    fn a_node_stopped_mid_sync_never_becomes_a_source() {
        let life = Lifecycle::new(Phase::Syncing);
        let mut watcher = life.subscribe();
        assert!(life.start_draining());
        assert!(watcher.has_changed().unwrap_or(false));
        assert_eq!(
            *watcher.borrow_and_update(),
            Phase::Draining { synced: false }
        );
        assert!(!life.advance(Phase::Ready));
        assert!(!life.is_synced());
    }
}
