//! What TLS and auth a cluster runs with, the Secrets the operator writes for them, and
//! where the pods mount them (the layout the nodes read: docs/security.md).
//!
//! [`resolve`] turns the spec into a [`Security`]: an unset `enabled` keeps what the
//! running StatefulSet runs, or is on for a new cluster (crd/security.rs says why). The
//! StatefulSet builder, the status and the controller all take that one value, so the
//! pods, the Secrets and what the status says cannot disagree.
//!
//! Secrets (owned by the CacheCluster, so deleted with it; docs/security.md):
//! - `<name>-ca`: `ca.crt`, `ca.key`. Created once, never rewritten by the operator.
//! - `<name>-peer-tls`, `<name>-client-tls`: `ca.crt`, `<pod>.crt`, `<pod>.key` per pod;
//!   annotated with the `kache.dev/rotate-certificates` value they were issued for. With
//!   `spec.tls.peer.issuerRef`, `<name>-peer-tls` is copied from the Secrets cert-manager
//!   issues (`cert_manager`).
//! - `<name>-auth`: `admin`, a random token. Created once, never rewritten.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{EnvVar, Secret, SecretVolumeSource, Volume, VolumeMount};
use ring::rand::SecureRandom as _;

use k8s_openapi::jiff::Timestamp;

use super::certs::{self, Ca, CertError, Leaf, LeafSpec};
use super::names::{Names, metadata};
use crate::crd::security::secret_name;
use crate::crd::{AuthMode, AuthStatus, CacheCluster, TlsSource, TlsStatus, TokenSecret};
use kache_api::env;
use kube::ResourceExt as _;

/// Changing this annotation's value on a CacheCluster reissues every leaf.
pub const ROTATE_ANNOTATION: &str = "kache.dev/rotate-certificates";
/// On a generated TLS Secret: the value of [`ROTATE_ANNOTATION`] its leaves were issued for.
pub const ROTATED_FOR_ANNOTATION: &str = "kache.dev/rotated-for";
pub const PEER_TLS_DIR: &str = "/etc/kache/peer-tls";
pub const CLIENT_TLS_DIR: &str = "/etc/kache/client-tls";
pub const AUTH_DIR: &str = "/etc/kache/auth";
/// The generated Secret's one key: the user name `admin`, with the admin role.
pub const ADMIN_KEY: &str = "admin";
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
const PEER_VOLUME: &str = "kache-peer-tls";
/// The pod volume of the client-port certificates; the operator reads a pod's Secret
/// from it to reach that pod over HTTPS.
pub const CLIENT_VOLUME: &str = "kache-client-tls";
/// Bytes of a generated token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// Where one port's certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMount {
    /// The operator's CA or cert-manager (the operator writes `secret` either way), or
    /// the user's Secret (read only).
    pub source: TlsSource,
    pub secret: String,
}

impl TlsMount {
    pub fn generated(&self) -> bool {
        self.source == TlsSource::Operator
    }
}

/// Token Secrets the pods mount, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// `<name>-auth`, the admin token the operator generates.
    pub generated: String,
    /// The user's Secrets from spec.auth.tokens (the generated one left out).
    pub tokens: Vec<TokenSecret>,
}

/// TLS and auth as the pods run them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// The CacheCluster's UID: the cluster part of every member's `kache://` URI.
    pub cluster_id: Option<String>,
    pub peer: Option<TlsMount>,
    pub client: Option<TlsMount>,
    pub auth: Option<Auth>,
}

/// What the applied StatefulSet runs, for an `enabled` the spec leaves unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub peer_tls: bool,
    pub auth: bool,
}

impl Running {
    /// Read from the cache container's environment, which this module writes.
    pub fn of(sts: &StatefulSet) -> Self {
        let env: Vec<&str> = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|pod| pod.containers.iter().find(|c| c.name == "kache"))
            .and_then(|c| c.env.as_ref())
            .into_iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        Self {
            peer_tls: env.contains(&env::PEER_TLS_DIR),
            auth: env.contains(&env::AUTH_DIR),
        }
    }
}

/// The cluster's TLS and auth. `running`: what the applied StatefulSet runs, None when
/// there is none yet (a new cluster, where an unset `enabled` is on).
pub fn resolve(cc: &CacheCluster, running: Option<Running>) -> Security {
    let names = Names::of(cc);
    let spec = &cc.spec;
    let peer_on = spec
        .tls
        .peer
        .enabled
        .unwrap_or_else(|| running.is_none_or(|r| r.peer_tls));
    let auth_on = spec
        .auth
        .enabled
        .unwrap_or_else(|| running.is_none_or(|r| r.auth));
    let mount = |user: Option<&String>, generated: String| match secret_name(user) {
        Some(secret) => TlsMount {
            source: TlsSource::Secret,
            secret: secret.to_owned(),
        },
        None => TlsMount {
            source: TlsSource::Operator,
            secret: generated,
        },
    };
    Security {
        cluster_id: cc.uid(),
        peer: peer_on.then(|| match &spec.tls.peer.issuer_ref {
            // CEL refuses issuerRef with a secretName; the user's Secret wins if both
            // slipped through (it is only read, so nothing is overwritten).
            Some(_) if secret_name(spec.tls.peer.secret_name.as_ref()).is_none() => TlsMount {
                source: TlsSource::CertManager,
                secret: names.peer_tls(),
            },
            _ => mount(spec.tls.peer.secret_name.as_ref(), names.peer_tls()),
        }),
        client: spec
            .tls
            .client
            .enabled
            .then(|| mount(spec.tls.client.secret_name.as_ref(), names.client_tls())),
        auth: auth_on.then(|| Auth {
            generated: names.auth(),
            tokens: spec
                .auth
                .tokens
                .iter()
                .filter(|t| t.secret_name != names.auth())
                .cloned()
                .collect(),
        }),
    }
}

impl Security {
    /// Whether the operator keeps a CA for this cluster.
    pub fn needs_ca(&self) -> bool {
        [&self.peer, &self.client]
            .into_iter()
            .flatten()
            .any(TlsMount::generated)
    }

    /// The Secret volumes of the cache pods. The user's token Secrets are optional, so a
    /// pod starts before they exist (the nodes read them once the kubelet fills them in).
    pub fn volumes(&self) -> Vec<Volume> {
        let mut volumes = Vec::new();
        for (name, mount) in [(PEER_VOLUME, &self.peer), (CLIENT_VOLUME, &self.client)] {
            if let Some(mount) = mount {
                volumes.push(secret_volume(name, &mount.secret, false));
            }
        }
        for (index, (_, secret, optional)) in self.auth_mounts().into_iter().enumerate() {
            volumes.push(secret_volume(&auth_volume(index), &secret, optional));
        }
        volumes
    }

    /// Where the cache container mounts them, read-only.
    pub fn volume_mounts(&self) -> Vec<VolumeMount> {
        let mut mounts = Vec::new();
        for (name, dir, mount) in [
            (PEER_VOLUME, PEER_TLS_DIR, &self.peer),
            (CLIENT_VOLUME, CLIENT_TLS_DIR, &self.client),
        ] {
            if mount.is_some() {
                mounts.push(read_only(name, dir.to_owned()));
            }
        }
        for (index, (role, secret, _)) in self.auth_mounts().into_iter().enumerate() {
            mounts.push(read_only(
                &auth_volume(index),
                format!("{AUTH_DIR}/{role}/{secret}"),
            ));
        }
        mounts
    }

    /// The node's `KACHE_*_DIR` variables, set exactly when the feature is on, and with
    /// peer TLS the cluster's identity the node checks its peers' URIs against (the
    /// config ConfigMap has it too when persistence is on: the same value).
    pub fn env(&self) -> Vec<EnvVar> {
        let mut vars = Vec::new();
        if self.peer.is_some() {
            vars.push(plain_env(env::PEER_TLS_DIR, PEER_TLS_DIR));
            if let Some(id) = &self.cluster_id {
                vars.push(plain_env(env::CLUSTER_ID, id));
            }
        }
        if self.client.is_some() {
            vars.push(plain_env(env::CLIENT_TLS_DIR, CLIENT_TLS_DIR));
        }
        if self.auth.is_some() {
            vars.push(plain_env(env::AUTH_DIR, AUTH_DIR));
        }
        vars
    }

    /// The scheme of the HTTP port, for the probes (the kubelet does not verify the
    /// certificate of an HTTPS probe).
    pub fn http_scheme(&self) -> &'static str {
        if self.client.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        }
    }

    /// (role, Secret, optional) of every token Secret the pods mount: the generated one
    /// first, as admin.
    fn auth_mounts(&self) -> Vec<(&'static str, String, bool)> {
        let Some(auth) = &self.auth else {
            return Vec::new();
        };
        let mut mounts = vec![(ADMIN_KEY, auth.generated.clone(), false)];
        mounts.extend(
            auth.tokens
                .iter()
                .map(|t| (t.role.as_str(), t.secret_name.clone(), true)),
        );
        mounts
    }

    /// status.auth: never a token, only where the generated one is.
    pub fn auth_status(&self) -> AuthStatus {
        match &self.auth {
            Some(auth) => AuthStatus {
                mode: AuthMode::Tokens,
                secret_name: Some(auth.generated.clone()),
            },
            None => AuthStatus {
                mode: AuthMode::Open,
                secret_name: None,
            },
        }
    }

    /// status.tls.
    pub fn tls_status(&self) -> TlsStatus {
        let source = |m: &Option<TlsMount>| m.as_ref().map_or(TlsSource::Disabled, |m| m.source);
        let secret = |m: &Option<TlsMount>| m.as_ref().map(|m| m.secret.clone());
        TlsStatus {
            peer: source(&self.peer),
            client: source(&self.client),
            peer_secret_name: secret(&self.peer),
            client_secret_name: secret(&self.client),
        }
    }
}

fn auth_volume(index: usize) -> String {
    format!("kache-auth-{index}")
}

fn secret_volume(name: &str, secret: &str, optional: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            optional: optional.then_some(true),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn read_only(name: &str, path: String) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path,
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

fn opaque(cc: &CacheCluster, name: String, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: metadata(cc, name),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// `<name>-ca`.
pub fn ca_secret(cc: &CacheCluster, ca: &Ca) -> Secret {
    opaque(
        cc,
        Names::of(cc).ca(),
        BTreeMap::from([
            (CA_CERT_KEY.to_owned(), bytes(&ca.cert_pem)),
            (CA_KEY_KEY.to_owned(), bytes(&ca.key_pem)),
        ]),
    )
}

/// The CA stored in `<name>-ca`, if it has both keys.
pub fn ca_of(secret: &Secret) -> Option<Ca> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some(Ca {
        cert_pem: text(CA_CERT_KEY)?,
        key_pem: text(CA_KEY_KEY)?,
    })
}

/// A generated TLS Secret: `ca.crt`, and `<pod>.crt` + `<pod>.key` for each leaf.
/// `rotated_for`: the rotation annotation's value the leaves were issued for.
pub fn tls_secret(
    cc: &CacheCluster,
    name: String,
    ca_cert_pem: &str,
    leaves: &BTreeMap<String, Leaf>,
    rotated_for: Option<&str>,
) -> Secret {
    let mut data = BTreeMap::from([(CA_CERT_KEY.to_owned(), bytes(ca_cert_pem))]);
    for (pod, leaf) in leaves {
        data.insert(format!("{pod}.crt"), bytes(&leaf.cert_pem));
        data.insert(format!("{pod}.key"), bytes(&leaf.key_pem));
    }
    let mut secret = opaque(cc, name, data);
    if let Some(value) = rotated_for {
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ROTATED_FOR_ANNOTATION.to_owned(), value.to_owned());
    }
    secret
}

/// (pod, reason) of each leaf issued by [`leaves`].
pub type Issued = Vec<(String, &'static str)>;

/// The leaves a generated TLS Secret must hold, one per pod of `specs`: a leaf of
/// `existing` is kept as it is while it is good (`certs::reissue_reason`) and no rotation
/// is asked for; any other is issued anew. Leaves of pods outside `specs` are dropped.
/// Also returns (pod, reason) of every leaf issued, for the event.
pub fn leaves(
    existing: Option<&Secret>,
    ca: &Ca,
    specs: &BTreeMap<String, LeafSpec>,
    rotate: bool,
    now: Timestamp,
) -> Result<(BTreeMap<String, Leaf>, Issued), CertError> {
    let data = existing.and_then(|s| s.data.as_ref());
    let mut leaves = BTreeMap::new();
    let mut issued = Vec::new();
    for (pod, spec) in specs {
        let stored = data.and_then(|d| {
            let cert = d.get(&format!("{pod}.crt"))?;
            let key = String::from_utf8(d.get(&format!("{pod}.key"))?.0.clone()).ok()?;
            Some((cert, key))
        });
        let reason = match &stored {
            None => Some("new"),
            Some(_) if rotate => Some("rotation asked"),
            Some((cert, _)) => certs::reissue_reason(&cert.0, ca, spec, now),
        };
        let leaf = match (reason, stored) {
            (None, Some((cert, key))) => Leaf {
                cert_pem: String::from_utf8_lossy(&cert.0).into_owned(),
                key_pem: key,
            },
            (reason, _) => {
                issued.push((pod.clone(), reason.unwrap_or("new")));
                certs::issue(ca, spec, now)?
            }
        };
        leaves.insert(pod.clone(), leaf);
    }
    Ok((leaves, issued))
}

/// `<name>-auth` holding `token` as the user `admin`.
pub fn auth_secret(cc: &CacheCluster, token: &str) -> Secret {
    opaque(
        cc,
        Names::of(cc).auth(),
        BTreeMap::from([(ADMIN_KEY.to_owned(), bytes(token))]),
    )
}

/// A new token: 32 bytes from the system's CSPRNG, base64url without padding.
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    let mut raw = [0u8; TOKEN_BYTES];
    ring::rand::SystemRandom::new().fill(&mut raw)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// The value of the rotation annotation on the CacheCluster ("" when absent).
pub fn rotation_requested(cc: &CacheCluster) -> &str {
    cc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATE_ANNOTATION))
        .map_or("", String::as_str)
}

/// The rotation value a generated TLS Secret was issued for ("" when none).
pub fn rotated_for(secret: &Secret) -> &str {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATED_FOR_ANNOTATION))
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests;
