//! The current [`CertSet`] of one directory, re-read every [`RELOAD_INTERVAL`].
//!
//! Handshakes read [`Reloader::current`] (the resolvers and verifiers of
//! [`super::peer`] and [`super::client_port`] do), so a swapped set is used from the
//! next handshake on, without a restart; a connection already open keeps the keys it
//! agreed on. A set whose files changed (by digest) but do not parse or do not match
//! is logged once and ignored: the old set stays until a valid one arrives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;

use super::TlsError;
use super::files::{self, CertSet, Served};

/// How often the files are read (the contract's 5 s; a Secret update reaches the
/// kubelet's volume within about a minute anyway).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// A cheap handle on the current set of one directory.
#[derive(Debug, Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    node_id: String,
    with_ca: bool,
    provider: Arc<CryptoProvider>,
    /// The set in use. A parking_lot RwLock held only to clone or replace the `Arc`
    /// (once per handshake, never across an `.await`).
    current: RwLock<Arc<CertSet>>,
    /// The digest of the last files read, valid or not, so a bad set is logged once.
    last_seen: parking_lot::Mutex<[u8; 32]>,
}

impl Reloader {
    /// Loads the set in `dir` for `node_id` (with `ca.crt` when `with_ca`); an invalid
    /// set is an error, since a node must not start without what it was told to use.
    pub fn load(
        dir: &Path,
        node_id: &str,
        with_ca: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let set = files::load(dir, node_id, with_ca, &provider)?;
        let digest = set.digest;
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                node_id: node_id.to_owned(),
                with_ca,
                provider,
                current: RwLock::new(Arc::new(set)),
                last_seen: parking_lot::Mutex::new(digest),
            }),
        })
    }

    /// The set in use now.
    pub fn current(&self) -> Arc<CertSet> {
        self.shared.current.read().clone()
    }

    /// The certificate served now.
    pub fn served(&self) -> Served {
        self.current().served.clone()
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.shared.provider
    }

    /// Reads the files again; swaps in a changed, valid set. Returns whether it swapped.
    pub fn reload(&self) -> bool {
        let shared = &self.shared;
        let raw = match files::read(&shared.dir, &shared.node_id, shared.with_ca) {
            Ok(raw) => raw,
            Err(err) => {
                // Between a Secret's swap steps, or a file removed: keep the old set.
                tracing::warn!(dir = %shared.dir.display(), error = %err, "cannot read the TLS files; keeping the certificates in use");
                return false;
            }
        };
        if std::mem::replace(&mut *shared.last_seen.lock(), raw.digest) == raw.digest {
            return false;
        }
        match raw.parse(&shared.provider) {
            Ok(set) => {
                tracing::info!(
                    dir = %shared.dir.display(),
                    sha256 = %set.served.sha256,
                    not_after = %set.served.not_after,
                    "TLS certificates reloaded"
                );
                *shared.current.write() = Arc::new(set);
                true
            }
            Err(err) => {
                tracing::error!(
                    dir = %shared.dir.display(),
                    error = %err,
                    "the TLS files changed but are not a valid set; keeping the certificates in use"
                );
                false
            }
        }
    }

    /// Reloads every [`RELOAD_INTERVAL`] until the task is aborted.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let reloader = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                // File reads and parsing: off the async workers.
                let reloading = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests;
