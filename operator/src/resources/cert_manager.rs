//! cert-manager as the source of the members' certificates (`spec.tls.peer.issuerRef`):
//! the `Certificate` the operator applies for each member, and the Secret the pods mount,
//! put together from what cert-manager issues. Pure, like every builder here; the
//! controller (`controller/cert_manager.rs`) applies and reads.
//!
//! - One `cert-manager.io/v1` `Certificate` per ordinal, `<name>-peer-<ordinal>`, issuing
//!   into the Secret of the same name. It asks for what the operator's own CA puts in a
//!   peer leaf (`certs::peer_leaf_spec`): URI `kache://<UID>/<pod>`, the pod's DNS names,
//!   serverAuth and clientAuth; an ECDSA P-256 key in PKCS#8 (the node reads PKCS#8 only),
//!   a new key at every renewal, 90 days, renewed with 30 left.
//! - cert-manager writes `tls.crt`, `tls.key` and `ca.crt` into each Secret. The nodes read
//!   one directory with `ca.crt` and `<pod>.crt`/`<pod>.key` for every pod, so the
//!   operator copies them into `<name>-peer-tls` ([`aggregate`]) and the pods, their
//!   mounts and the node do not change with the source.
//! - A member's certificate is in `<name>-peer-tls` before its pod exists: [`Aggregate`]
//!   says how many leading ordinals are covered, and the StatefulSet grows no further.
//!   A Secret that goes missing or bad later (deleted, an issuer that drops URIs) keeps
//!   the copy already in `<name>-peer-tls`, so a running member keeps its certificate.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};

use super::certs;
use super::names::{Names, metadata};
use super::security::CA_CERT_KEY;
use crate::crd::{CacheCluster, IssuerRef};

/// How long a member's certificate is valid, as the operator's CA issues them.
pub const DURATION: &str = "2160h";
/// cert-manager renews a certificate with this much left: a third, as the operator's CA.
pub const RENEW_BEFORE: &str = "720h";
/// What a member's key may do: sign (TLS 1.3 handshakes), and, for RSA issuers' older
/// habits, encipher; serve and call (mutual TLS).
pub const USAGES: [&str; 4] = [
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
];
/// The keys cert-manager writes into the Secret it issues.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

/// `certificates.cert-manager.io/v1`.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// The Certificate of member `ordinal`, signed by `issuer`.
pub fn peer_certificate(cc: &CacheCluster, issuer: &IssuerRef, ordinal: u32) -> DynamicObject {
    let names = Names::of(cc);
    let pod = names.pod(ordinal);
    let leaf = certs::peer_leaf_spec(&names, &cc.uid().unwrap_or_default(), &pod);
    let name = names.peer_certificate(ordinal);
    let mut certificate = DynamicObject::new(&name, &certificate_resource());
    certificate.metadata = metadata(cc, name.clone());
    certificate.data = serde_json::json!({
        "spec": {
            "secretName": name,
            "issuerRef": {
                "name": issuer.name,
                "kind": issuer.kind.as_str(),
                "group": issuer.group,
            },
            "uris": leaf.uris,
            "dnsNames": leaf.dns_names,
            "usages": USAGES,
            "privateKey": {
                "algorithm": "ECDSA",
                "size": 256,
                "encoding": "PKCS8",
                "rotationPolicy": "Always",
            },
            "duration": DURATION,
            "renewBefore": RENEW_BEFORE,
        }
    });
    certificate
}

/// What cert-manager says of a Certificate that has not issued: its Ready condition.
pub fn not_ready(certificate: &DynamicObject) -> Option<String> {
    let conditions = certificate.data["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    if ready["status"] == "True" {
        return None;
    }
    let text = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Some(format!(
        "Ready={} ({}): {}",
        text("status"),
        text("reason"),
        text("message")
    ))
}

/// A member's certificate, key and CA, as cert-manager issued them (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Reads the Secret `name` that cert-manager issued for the member with URI `uri`: the
/// three keys, PEM that parses, a PKCS#8 key, and the URI the nodes check. The error says
/// what is missing, naming keys, never content.
pub fn issued(name: &str, secret: Option<&Secret>, uri: &str) -> Result<Issued, String> {
    let Some(secret) = secret else {
        return Err(format!("Secret {name} does not exist yet"));
    };
    let data = secret.data.as_ref();
    let key = |key: &str| {
        data.and_then(|d| d.get(key))
            .map(|bytes| bytes.0.clone())
            .filter(|bytes| !bytes.is_empty())
            .ok_or_else(|| format!("Secret {name} has no {key} yet"))
    };
    let (cert_pem, key_pem) = (key(TLS_CERT_KEY)?, key(TLS_KEY_KEY)?);
    let ca_pem = key(CA_CERT_KEY).map_err(|missing| {
        format!(
            "{missing} (the issuer must return its CA: a CA or Vault issuer does, ACME does not)"
        )
    })?;
    let Some(cert) = first_certificate(&cert_pem) else {
        return Err(format!(
            "Secret {name}: {TLS_CERT_KEY} holds no PEM certificate"
        ));
    };
    if !certs::holds_certificate(&ca_pem) {
        return Err(format!(
            "Secret {name}: {CA_CERT_KEY} holds no PEM certificate"
        ));
    }
    let pkcs8 =
        x509_parser::pem::parse_x509_pem(&key_pem).is_ok_and(|(_, pem)| pem.label == "PRIVATE KEY");
    if !pkcs8 {
        return Err(format!(
            "Secret {name}: {TLS_KEY_KEY} is not a PKCS#8 private key (the Certificate asks for privateKey.encoding PKCS8)"
        ));
    }
    if !cert.0.contains(&uri.to_owned()) {
        return Err(format!(
            "Secret {name}: the certificate does not carry the URI {uri} the members check; the issuer dropped it (use one that signs URI SANs, such as a CA or Vault issuer)"
        ));
    }
    Ok(Issued {
        cert_pem,
        key_pem,
        ca_pem,
    })
}

/// The URI names of the first certificate in `pem` (with the DNS names, unused here).
fn first_certificate(pem: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    if pem.label != "CERTIFICATE" {
        return None;
    }
    let cert = pem.parse_x509().ok()?;
    Some(certs::san_names(&cert))
}

/// `<name>-peer-tls` put together from the issued Secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The Secret to apply; None while not one member's certificate is known.
    pub secret: Option<Secret>,
    /// The leading ordinals (0, 1, ...) whose certificate the Secret holds: the
    /// StatefulSet may run that many pods.
    pub certified: u32,
}

/// `<name>-peer-tls` from `issued`, one entry per pod in ordinal order: `ca.crt` (each
/// distinct CA the issued Secrets name, so a CA change of the issuer is trusted on both
/// sides while it rolls through) and `<pod>.crt`/`<pod>.key`. A pod whose issued Secret
/// is not usable keeps what `existing` holds for it, and the CA that came with it.
pub fn aggregate(
    cc: &CacheCluster,
    issued: &[(String, Option<Issued>)],
    existing: Option<&Secret>,
) -> Aggregate {
    let names = Names::of(cc);
    let kept = existing.and_then(|s| s.data.as_ref());
    let mut cas: Vec<Vec<u8>> = Vec::new();
    let mut add_ca = |ca: &[u8]| {
        let ca = ca.trim_ascii().to_vec();
        if !ca.is_empty() && !cas.contains(&ca) {
            cas.push(ca);
        }
    };
    let mut data = BTreeMap::new();
    let mut certified = 0;
    let mut leading = true;
    for (pod, issued) in issued {
        let (cert, key) = (format!("{pod}.crt"), format!("{pod}.key"));
        let pair = match issued {
            Some(issued) => {
                add_ca(&issued.ca_pem);
                Some((issued.cert_pem.clone(), issued.key_pem.clone()))
            }
            None => kept.and_then(|d| {
                let pair = (d.get(&cert)?.0.clone(), d.get(&key)?.0.clone());
                add_ca(&d.get(CA_CERT_KEY)?.0);
                Some(pair)
            }),
        };
        match pair {
            Some((cert_pem, key_pem)) => {
                data.insert(cert, ByteString(cert_pem));
                data.insert(key, ByteString(key_pem));
                certified += u32::from(leading);
            }
            None => leading = false,
        }
    }
    if cas.is_empty() {
        return Aggregate {
            secret: None,
            certified: 0,
        };
    }
    let mut bundle = cas.join(&b"\n"[..]);
    bundle.push(b'\n');
    data.insert(CA_CERT_KEY.to_owned(), ByteString(bundle));
    Aggregate {
        secret: Some(Secret {
            metadata: metadata(cc, names.peer_tls()),
            type_: Some("Opaque".to_owned()),
            data: Some(data),
            ..Secret::default()
        }),
        certified,
    }
}

/// How many pods the StatefulSet may have: what the plan asks, but no more new ones than
/// have a certificate (`certified`; None: the source issues synchronously). Never fewer
/// than exist: a missing certificate must not delete a pod that runs.
pub fn statefulset_replicas(planned: u32, existing: u32, certified: Option<u32>) -> u32 {
    certified.map_or(planned, |certified| planned.min(certified.max(existing)))
}

#[cfg(test)]
mod tests;
