//! One TLS directory read into a [`CertSet`]: the files named in the contract, checked
//! whole before anything uses them.
//!
//! ```text
//! ca.crt                      trust bundle, one or more CA certificates (peer port only)
//! <node-id>.crt  <node-id>.key  this node's chain and PKCS#8 key, when both exist
//! tls.crt        tls.key        otherwise
//! ```
//!
//! A Kubernetes Secret volume holds its files in a timestamped `..<date>` directory,
//! points `..data` at it, and makes each top-level name a symlink through `..data`; an
//! update swaps `..data` in one rename. Files are read through the top-level names
//! only (so a read sees one version or the other), and names starting with `..` are
//! never taken as a node id. The set's [`CertSet::digest`] covers every byte read, so
//! the reloader can tell a changed set from an unchanged one without parsing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

pub const CA_FILE: &str = "ca.crt";
pub const SHARED_CERT: &str = "tls.crt";
pub const SHARED_KEY: &str = "tls.key";

/// What a node serves and trusts from one directory, parsed and checked.
#[derive(Debug)]
pub struct CertSet {
    /// This node's chain and key, for handshakes as a server and (peers) as a client.
    pub key: Arc<CertifiedKey>,
    /// The trust bundle and the verifiers built on it: present when asked for (the
    /// peer port).
    pub trust: Option<Trust>,
    /// The served certificate, as `/v1/cluster` shows it.
    pub served: Served,
    /// SHA-256 of every file read, in order: equal digests, equal sets.
    pub digest: [u8; 32],
}

/// `ca.crt` and the verifiers that check chains against it.
#[derive(Debug)]
pub struct Trust {
    pub roots: Arc<RootCertStore>,
    /// Chains to `roots` with EKU clientAuth (callers of the peer port).
    pub clients: Arc<dyn ClientCertVerifier>,
    /// Signature checks of servers' handshakes (their chains are checked apart, without
    /// a host name: see [`super::peer`]).
    pub servers: Arc<WebPkiServerVerifier>,
}

/// The leaf certificate this node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
    /// Its expiry, RFC 3339 UTC.
    pub not_after: String,
}

/// Which files of `dir` hold `node_id`'s certificate and key.
pub fn key_pair_files(dir: &Path, node_id: &str) -> (PathBuf, PathBuf) {
    if !node_id.starts_with("..") {
        let (cert, key) = (
            dir.join(format!("{node_id}.crt")),
            dir.join(format!("{node_id}.key")),
        );
        if cert.exists() && key.exists() {
            return (cert, key);
        }
    }
    (dir.join(SHARED_CERT), dir.join(SHARED_KEY))
}

/// The bytes of the set in `dir` for `node_id` (`ca.crt` too when `with_ca`), and
/// their digest: what the reloader compares before it parses anything.
pub fn read(dir: &Path, node_id: &str, with_ca: bool) -> Result<RawSet, TlsError> {
    let (cert_file, key_file) = key_pair_files(dir, node_id);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let ca = if with_ca {
        Some(read(&dir.join(CA_FILE))?)
    } else {
        None
    };
    let cert = read(&cert_file)?;
    let key = read(&key_file)?;
    let mut hash = Sha256::new();
    for part in [ca.as_deref().unwrap_or_default(), &cert, &key] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    Ok(RawSet {
        ca,
        cert,
        key,
        cert_file,
        digest: hash.finalize().into(),
    })
}

/// A directory's files, read but not yet parsed.
#[derive(Debug)]
pub struct RawSet {
    ca: Option<Vec<u8>>,
    cert: Vec<u8>,
    key: Vec<u8>,
    cert_file: PathBuf,
    pub digest: [u8; 32],
}

impl RawSet {
    /// Parses and checks the set: the CA bundle, a chain whose leaf matches the key, a
    /// leaf x509-parser can read. Any failure names the file.
    pub fn parse(self, provider: &Arc<CryptoProvider>) -> Result<CertSet, TlsError> {
        let bad = |what: &str, err: &dyn std::fmt::Display| TlsError::Invalid {
            what: what.to_owned(),
            reason: err.to_string(),
        };
        let trust = match &self.ca {
            Some(ca) => Some(trust(ca, provider)?),
            None => None,
        };
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad(&self.cert_file.display().to_string(), &err))?;
        let Some(leaf) = chain.first() else {
            return Err(bad(
                &self.cert_file.display().to_string(),
                &"no CERTIFICATE block",
            ));
        };
        let served = served(leaf).map_err(|err| bad("the leaf certificate", &err))?;
        let key =
            PrivateKeyDer::from_pem_slice(&self.key).map_err(|err| bad("the private key", &err))?;
        let key = CertifiedKey::from_der(chain, key, provider)
            .map_err(|err| bad("the certificate and key", &err))?;
        Ok(CertSet {
            key: Arc::new(key),
            trust,
            served,
            digest: self.digest,
        })
    }
}

/// Reads and checks the set in `dir` at once (the first load, and tests).
pub fn load(
    dir: &Path,
    node_id: &str,
    with_ca: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<CertSet, TlsError> {
    read(dir, node_id, with_ca)?.parse(provider)
}

fn trust(pem: &[u8], provider: &Arc<CryptoProvider>) -> Result<Trust, TlsError> {
    let bad = |reason: String| TlsError::Invalid {
        what: CA_FILE.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|err| bad(err.to_string()))?;
        roots.add(cert).map_err(|err| bad(err.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block".to_owned()));
    }
    let roots = Arc::new(roots);
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|err| bad(err.to_string()))?;
    let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|err| bad(err.to_string()))?;
    Ok(Trust {
        roots,
        clients,
        servers,
    })
}

fn served(leaf: &CertificateDer<'_>) -> Result<Served, String> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|err| err.to_string())?;
    let not_after = cert
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|err| err.to_string())?;
    let sha256 = Sha256::digest(leaf.as_ref())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(Served { sha256, not_after })
}
