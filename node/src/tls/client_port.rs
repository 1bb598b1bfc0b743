//! TLS on the client ports (HTTP and RESP): the node's certificate from
//! `--client-tls-dir`, no client certificates (clients authenticate with tokens).
//!
//! TLS 1.2 and 1.3, so that the clients people already run (redis-cli, curl, the Redis
//! libraries) connect; the handshake of a new connection counts against
//! `--http-header-timeout`, as its request head would (see `http::serve`, `resp`).

use std::sync::Arc;

use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::{CurrentCert, Reloader, TlsError};

/// An acceptor serving the set in force at each handshake, offering `alpn` (none for
/// RESP, whose clients do not send ALPN).
pub fn acceptor(reloader: &Reloader, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(reloader.provider().clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCert(reloader.clone())));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
