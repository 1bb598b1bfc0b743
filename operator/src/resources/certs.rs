//! The certificates of the default source: each CacheCluster's own CA, and the leaves it
//! issues to the pods. Pure functions of their inputs and the time (plus the randomness
//! of new keys); the controller decides when to call them and stores the results.
//!
//! - The CA: ECDSA P-256, 10 years, path length 0 (it signs leaves only).
//! - A peer leaf (`<pod>.crt`): SAN URI `kache://<cluster UID>/<pod>`, which is what a
//!   node checks (cluster, then member); SAN DNS `<pod>.<name>-peers.<ns>.svc` and the
//!   same under `cluster.local`; EKU serverAuth and clientAuth (mutual TLS).
//! - A client leaf: the client Service's DNS names and the pod's own, EKU serverAuth
//!   only and no `kache://` URI, so a client-port key can never pass as a member.
//! - Leaves last 90 days and are reissued once less than a third of that is left
//!   ([`reissue_reason`]): a month of slack for an operator that was down.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::Names;

/// How long the CA is valid. Its rotation is manual (docs/operations.md).
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a leaf is valid.
pub const LEAF_VALIDITY_DAYS: i64 = 90;
/// The cluster domain in the long form of the pods' DNS names. The short form
/// (`...svc`) is in every leaf too, and is what the operator itself connects to.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// How far back a new certificate's validity starts: room for a node whose clock is a
/// little behind the operator's.
const BACKDATE_SECONDS: i64 = 300;
const DAY_SECONDS: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "the CA in {0} cannot be read; delete the Secret to let the operator make a new CA (docs/operations.md, CA rotation)"
    )]
    UnreadableCa(String),
    #[error("a time out of range")]
    Time,
}

/// A CA certificate and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A leaf certificate and its key (PKCS#8), both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf").finish_non_exhaustive()
    }
}

/// What a leaf says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    /// Also a client certificate (a member calling a peer); a client-port leaf is not.
    pub client_auth: bool,
}

/// The URI naming `member` of the cluster with UID `cluster_id`, as nodes check it.
pub fn member_uri(cluster_id: &str, member: &str) -> String {
    format!("kache://{cluster_id}/{member}")
}

/// The pod's names under the headless peer Service.
pub(crate) fn pod_dns_names(names: &Names, pod: &str) -> Vec<String> {
    let short = format!("{pod}.{}.{}.svc", names.peers(), names.namespace);
    let long = format!("{short}.{CLUSTER_DOMAIN}");
    vec![short, long]
}

/// The name the operator connects to a pod by (and so checks in its certificate).
pub fn pod_host(names: &Names, pod: &str) -> String {
    format!("{pod}.{}.{}.svc", names.peers(), names.namespace)
}

/// The leaf of member `pod` on the peer port.
pub fn peer_leaf_spec(names: &Names, cluster_id: &str, pod: &str) -> LeafSpec {
    LeafSpec {
        common_name: pod.to_owned(),
        uris: vec![member_uri(cluster_id, pod)],
        dns_names: pod_dns_names(names, pod),
        client_auth: true,
    }
}

/// The leaf of pod `pod` on the client ports: the client Service's names, then the pod's.
pub fn client_leaf_spec(names: &Names, pod: &str) -> LeafSpec {
    let service = &names.cluster;
    let ns = &names.namespace;
    let mut dns_names = vec![
        service.clone(),
        format!("{service}.{ns}"),
        format!("{service}.{ns}.svc"),
        format!("{service}.{ns}.svc.{CLUSTER_DOMAIN}"),
    ];
    dns_names.extend(pod_dns_names(names, pod));
    LeafSpec {
        common_name: pod.to_owned(),
        uris: Vec::new(),
        dns_names,
        client_auth: false,
    }
}

fn offset_time(at: Timestamp, plus_seconds: i64) -> Result<OffsetDateTime, CertError> {
    let seconds = at
        .as_second()
        .checked_add(plus_seconds)
        .ok_or(CertError::Time)?;
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| CertError::Time)
}

/// A new CA for the cluster `names`, whose UID is `cluster_id`.
pub fn new_ca(names: &Names, cluster_id: &str, now: Timestamp) -> Result<Ca, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("kache CA {}/{}", names.namespace, names.cluster),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, cluster_id);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "kache");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset_time(now, -BACKDATE_SECONDS)?;
    params.not_after = offset_time(now, CA_VALIDITY_DAYS * DAY_SECONDS)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A new leaf signed by `ca`, valid from now for [`LEAF_VALIDITY_DAYS`].
pub fn issue(ca: &Ca, spec: &LeafSpec, now: Timestamp) -> Result<Leaf, CertError> {
    let unreadable = |_| CertError::UnreadableCa("the CA Secret".to_owned());
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(unreadable)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(unreadable)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, spec.common_name.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "kache");
    let mut names = Vec::new();
    for uri in &spec.uris {
        names.push(SanType::URI(uri.as_str().try_into()?));
    }
    for dns in &spec.dns_names {
        names.push(SanType::DnsName(dns.as_str().try_into()?));
    }
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if spec.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset_time(now, -BACKDATE_SECONDS)?;
    params.not_after = offset_time(now, LEAF_VALIDITY_DAYS * DAY_SECONDS)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Why `cert_pem` must be issued again, or None while it is good: it cannot be read, it
/// is not `ca`'s, it names other things than `spec` says, or less than a third of its
/// life is left at `now`.
pub fn reissue_reason(
    cert_pem: &[u8],
    ca: &Ca,
    spec: &LeafSpec,
    now: Timestamp,
) -> Option<&'static str> {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem) else {
        return Some("unreadable");
    };
    let Ok(cert) = pem.parse_x509() else {
        return Some("unreadable");
    };
    let Ok((_, ca_pem)) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()) else {
        return Some("the CA is unreadable");
    };
    let Ok(ca_cert) = ca_pem.parse_x509() else {
        return Some("the CA is unreadable");
    };
    if cert.issuer() != ca_cert.subject()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Some("signed by another CA");
    }
    let (mut uris, mut dns_names) = san_names(&cert);
    let (mut want_uris, mut want_dns) = (spec.uris.clone(), spec.dns_names.clone());
    for list in [&mut uris, &mut dns_names, &mut want_uris, &mut want_dns] {
        list.sort();
    }
    if uris != want_uris || dns_names != want_dns {
        return Some("names changed");
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let renew_at = not_after - (not_after - not_before) / 3;
    (now.as_second() >= renew_at).then_some("a third of its life is left")
}

/// The URI and DNS names of a certificate's subjectAltName.
pub fn san_names(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    (uris, dns_names)
}

/// What is wrong with a user's TLS Secret, naming keys, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("has no ca.crt")]
    NoCa,
    #[error("{0} holds no PEM certificate")]
    NotCertificate(String),
    #[error("{0} holds no PEM private key")]
    NotKey(String),
    #[error("has neither {pod}.crt and {pod}.key nor tls.crt and tls.key")]
    NoCertificateFor { pod: String },
}

/// Checks a user's TLS Secret against the nodes' layout: `ca.crt`, and for every pod in
/// `pods` its own `<pod>.crt` + `<pod>.key`, or else the shared `tls.crt` + `tls.key`.
pub fn check_layout(
    data: &BTreeMap<String, ByteString>,
    pods: &[String],
) -> Result<(), LayoutError> {
    let ca = data.get("ca.crt").ok_or(LayoutError::NoCa)?;
    if !holds_certificate(&ca.0) {
        return Err(LayoutError::NotCertificate("ca.crt".to_owned()));
    }
    let pair = |stem: &str| -> Option<Result<(), LayoutError>> {
        let (cert, key) = (format!("{stem}.crt"), format!("{stem}.key"));
        let (cert_bytes, key_bytes) = (data.get(&cert)?, data.get(&key)?);
        Some(if !holds_certificate(&cert_bytes.0) {
            Err(LayoutError::NotCertificate(cert))
        } else if !holds_private_key(&key_bytes.0) {
            Err(LayoutError::NotKey(key))
        } else {
            Ok(())
        })
    };
    for pod in pods {
        match pair(pod).or_else(|| pair("tls")) {
            Some(result) => result?,
            None => return Err(LayoutError::NoCertificateFor { pod: pod.clone() }),
        }
    }
    Ok(())
}

pub(crate) fn holds_certificate(bytes: &[u8]) -> bool {
    x509_parser::pem::parse_x509_pem(bytes)
        .is_ok_and(|(_, pem)| pem.label == "CERTIFICATE" && pem.parse_x509().is_ok())
}

fn holds_private_key(bytes: &[u8]) -> bool {
    x509_parser::pem::parse_x509_pem(bytes).is_ok_and(|(_, pem)| pem.label.ends_with("PRIVATE KEY"))
}

#[cfg(test)]
mod tests;
