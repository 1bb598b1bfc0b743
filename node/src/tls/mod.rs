//! TLS for the node's ports: certificates from mounted directories, reloaded without a
//! restart (rustls with the ring provider, as the kube client in this workspace).
//!
//! Layout:
//! - [`files`]: one directory (`--peer-tls-dir`, `--client-tls-dir`) read and checked
//!   into a [`CertSet`].
//! - [`reload`]: the current set, re-read every 5 s; a changed valid set is swapped in
//!   for new handshakes, an invalid one is logged and ignored.
//! - [`identity`]: the `kache://<cluster-id>/<member-id>` URI SANs that name peers.
//! - [`peer`]: mutual TLS 1.3 on the peer port (the server and client configurations,
//!   and the verifiers that check the cluster and the member).
//! - [`client_port`]: TLS on the HTTP and RESP ports (no client certificates).
//!
//! Every handshake asks the [`Reloader`] for the set in force (a resolver for the
//! certificate, a verifier for the trust bundle), so one `ServerConfig` serves through
//! every rotation and a connection already open keeps what it agreed on.

pub mod client_port;
pub mod files;
pub mod identity;
pub mod peer;
pub mod reload;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use files::{CertSet, Served};
pub use peer::PeerTls;
pub use reload::Reloader;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("building the TLS configuration failed")]
    Config(#[source] rustls::Error),
}

/// The crypto provider of every TLS configuration here: ring, as the kube client's.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves (and, on the peer port, presents as a client) the certificate of the set in
/// force at each handshake.
#[derive(Debug)]
struct CurrentCert(Reloader);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The node's TLS as configured: the peer port's and the client ports'.
#[derive(Debug, Clone, Default)]
pub struct NodeTls {
    /// With `--peer-tls-dir`.
    pub peer: Option<PeerTls>,
    /// With `--client-tls-dir`.
    pub client: Option<Reloader>,
}

impl NodeTls {
    /// Loads the configured directories for `node_id`; a set that is missing or invalid
    /// at start is an error (the node must not serve in plaintext what it was told to
    /// protect). Without `--peer-tls-dir` a warning says the peer port is open.
    pub fn load(config: &crate::config::TlsConfig, node_id: &str) -> Result<Self, TlsError> {
        let provider = provider();
        let peer = match &config.peer_dir {
            Some(dir) => {
                let reloader = Reloader::load(dir, node_id, true, provider.clone())?;
                Some(PeerTls::new(reloader, &config.cluster_id)?)
            }
            None => {
                tracing::warn!(
                    "no --peer-tls-dir: the peer port serves plaintext, and anyone who reaches it can read, write and drop data (local development only)"
                );
                None
            }
        };
        let client = config
            .client_dir
            .as_ref()
            .map(|dir| Reloader::load(dir, node_id, false, provider))
            .transpose()?;
        Ok(Self { peer, client })
    }

    /// The reload tasks, one per directory.
    pub fn spawn_reloads(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let peer = self.peer.as_ref().map(PeerTls::reloader);
        peer.into_iter()
            .chain(self.client.as_ref())
            .map(Reloader::spawn)
            .collect()
    }

    /// What `/v1/cluster` shows of the certificates served now.
    pub fn report(&self) -> kache_api::report::TlsReport {
        let cert = |served: Served| kache_api::report::CertReport {
            sha256: served.sha256,
            not_after: served.not_after,
        };
        kache_api::report::TlsReport {
            peer: self.peer.as_ref().map(|tls| cert(tls.served())),
            client: self.client.as_ref().map(|tls| cert(tls.served())),
        }
    }
}
