//! Mutual TLS on the peer port: who may connect, and whom this node accepts to reach.
//!
//! - **Accepting** ([`PeerTls::acceptor`]): TLS 1.3 only, a client certificate is
//!   required, must chain to `ca.crt` (EKU clientAuth) and must carry a `kache://` URI of
//!   this node's `--cluster-id` (any cluster when the node has none). Whether the member
//!   it names may call is decided per call against the member list
//!   (`cluster::peer::authorize`), since the list changes while connections stay open.
//! - **Connecting** ([`PeerTls::connector`]): this node presents its own certificate
//!   and accepts a server only if its chain reaches `ca.crt` (EKU serverAuth) and it
//!   carries `kache://<cluster-id>/<the member meant>` or `kache://<cluster-id>/*`. Host
//!   names and IPs are not checked: pod IPs change and the member id is the identity.
//! - **ALPN picks the transport**: [`ALPN_LEAN`] for the lean framing, [`ALPN_H2`] for
//!   tonic. Under TLS nothing is sniffed.
//!
//! Session resumption is off both ways: a resumed session would skip the certificate
//! checks against the trust bundle in force, and peer connections are long-lived, so
//! full handshakes cost nothing that matters.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::files::Trust;
use super::identity::{self, PeerName};
use super::{CurrentCert, Reloader, Served, TlsError};

/// ALPN of the lean transport under TLS.
pub const ALPN_LEAN: &[u8] = b"kache-lean/1";
/// ALPN of gRPC (HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";

/// The peer port's TLS: the reloaded set and the cluster it belongs to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PeerTls {
    reloader: Reloader,
    cluster_id: Arc<str>,
    server: Arc<ServerConfig>,
}

impl PeerTls {
    /// TLS for the peer port of a node of `cluster_id` ("" for none), with the sets
    /// `reloader` holds (loaded with `ca.crt`).
    pub fn new(reloader: Reloader, cluster_id: &str) -> Result<Self, TlsError> {
        let cluster_id: Arc<str> = cluster_id.into();
        let verifier = CallerVerifier {
            reloader: reloader.clone(),
            cluster_id: cluster_id.clone(),
        };
        let mut config = ServerConfig::builder_with_provider(reloader.provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(CurrentCert(reloader.clone())));
        config.alpn_protocols = vec![ALPN_LEAN.to_vec(), ALPN_H2.to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Self {
            server: Arc::new(config),
            reloader,
            cluster_id,
        })
    }

    /// Accepts peer connections (see the module doc).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.clone())
    }

    /// Connects to `member` speaking `alpn`, checking that the server is that member.
    pub fn connector(&self, member: &str, alpn: &[u8]) -> Result<TlsConnector, TlsError> {
        let verifier = ServerVerifier {
            reloader: self.reloader.clone(),
            cluster_id: self.cluster_id.clone(),
            member: member.to_owned(),
        };
        let mut config = ClientConfig::builder_with_provider(self.reloader.provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(CurrentCert(self.reloader.clone())));
        config.alpn_protocols = vec![alpn.to_vec()];
        config.resumption = Resumption::disabled();
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// The name a server presents is checked by the verifier, not against this: an IP
    /// name sends no SNI and asks for no host-name match.
    pub fn server_name(address: SocketAddr) -> ServerName<'static> {
        ServerName::IpAddress(address.ip().into())
    }

    /// The caller a verified client certificate names (its member before a wildcard).
    pub fn caller(&self, certificates: Option<&[CertificateDer<'_>]>) -> Option<PeerName> {
        let leaf = certificates?.first()?;
        identity::caller_name(identity::peer_names(leaf), &self.cluster_id)
    }

    /// The certificate served now.
    pub fn served(&self) -> Served {
        self.reloader.served()
    }

    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }
}

/// The trust bundle of the set in force; a peer set always has one.
fn trust_of(reloader: &Reloader) -> Result<Arc<super::CertSet>, Error> {
    let set = reloader.current();
    if set.trust.is_none() {
        return Err(Error::General("no trust bundle loaded".into()));
    }
    Ok(set)
}

fn trust(set: &super::CertSet) -> Result<&Trust, Error> {
    set.trust
        .as_ref()
        .ok_or_else(|| Error::General("no trust bundle loaded".into()))
}

/// Checks a caller's certificate: chain to `ca.crt`, a `kache://` URI of this cluster.
#[derive(Debug)]
struct CallerVerifier {
    reloader: Reloader,
    cluster_id: Arc<str>,
}

impl ClientCertVerifier for CallerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle changes under this verifier; members have one certificate each.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let set = trust_of(&self.reloader)?;
        trust(&set)?
            .clients
            .verify_client_cert(end_entity, intermediates, now)?;
        let named = identity::peer_names(end_entity)
            .iter()
            .any(|name| name.in_cluster(&self.cluster_id));
        if !named {
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let set = trust_of(&self.reloader)?;
        trust(&set)?
            .clients
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let set = trust_of(&self.reloader)?;
        trust(&set)?
            .clients
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.reloader
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks a server's certificate: chain to `ca.crt`, and the member this node meant.
#[derive(Debug)]
struct ServerVerifier {
    reloader: Reloader,
    cluster_id: Arc<str>,
    member: String,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let set = trust_of(&self.reloader)?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &trust(&set)?.roots,
            intermediates,
            now,
            self.reloader
                .provider()
                .signature_verification_algorithms
                .all,
        )?;
        let named = identity::peer_names(end_entity)
            .iter()
            .any(|name| name.in_cluster(&self.cluster_id) && name.names(&self.member));
        if !named {
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let set = trust_of(&self.reloader)?;
        trust(&set)?
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let set = trust_of(&self.reloader)?;
        trust(&set)?
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.reloader
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
