//! Secrets: the CA, the pods' certificates and the admin token the operator keeps, and a
//! look at the Secrets the user names. Runs before the StatefulSet is applied, so a pod
//! never starts (or is added by a scale-up) before its certificate exists.
//!
//! What it writes and never writes:
//! - `<name>-ca` and `<name>-auth` are created once (`create`, never `patch`): an
//!   existing one is the truth, even if someone edited it. A CA that cannot be read is
//!   reported, not replaced.
//! - `<name>-peer-tls` / `<name>-client-tls` are applied (server-side apply) only when a
//!   leaf is issued or dropped, the CA changed, or a rotation was asked.
//! - With `spec.tls.peer.issuerRef`, `<name>-peer-tls` is copied from what cert-manager
//!   issues (`cert_manager`), and no CA is made for the peer port.
//! - A Secret the user names is only read.
//!
//! Nothing here logs, records or returns a key or a token: problems name Secrets and keys.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::{Context, apply, cert_manager, events};
use crate::crd::{CacheCluster, TlsSource};
use crate::resources::Names;
use crate::resources::certs::{self, Ca, LeafSpec};
use crate::resources::security::{self, Security};
use crate::{Error, Result};

/// What the Secrets look like after this pass: the problems the status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// One line per problem, naming the Secret and the key; never content.
    pub problems: Vec<String>,
    /// The cert-manager Certificates, when `spec.tls.peer.issuerRef` is the source.
    pub cert_manager: Option<cert_manager::Outcome>,
}

impl Findings {
    /// How many leading ordinals have their peer certificate, when the source issues
    /// asynchronously (cert-manager); None when every pod asked for has one.
    pub fn certified(&self) -> Option<u32> {
        self.cert_manager.as_ref().map(|outcome| outcome.certified)
    }
}

/// Makes sure every Secret the pods of `security` mount for `pods` exists and is good.
pub(super) async fn ensure(
    cc: &CacheCluster,
    ctx: &Context,
    security: &Security,
    pods: &[String],
    now: Timestamp,
) -> Result<Findings> {
    let names = Names::of(cc);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut findings = Findings::default();

    let ca = if security.needs_ca() {
        ensure_ca(cc, &secrets, &names, now, &mut findings).await?
    } else {
        None
    };
    let cluster_id = cc.uid().unwrap_or_default();
    let ports = [
        (&security.peer, "spec.tls.peer.secretName", true),
        (&security.client, "spec.tls.client.secretName", false),
    ];
    for (mount, field, peer) in ports {
        let Some(mount) = mount else { continue };
        let existing = get(&secrets, &mount.secret).await?;
        if mount.source == TlsSource::CertManager {
            if let Some(issuer) = &cc.spec.tls.peer.issuer_ref {
                let outcome =
                    cert_manager::ensure(cc, ctx, issuer, pods, existing.as_ref()).await?;
                findings.cert_manager = Some(outcome);
            }
            continue;
        }
        if !mount.generated() {
            check_user_tls(field, &mount.secret, existing.as_ref(), pods, &mut findings);
            continue;
        }
        let Some(ca) = &ca else { continue };
        let specs: BTreeMap<String, LeafSpec> = pods
            .iter()
            .map(|pod| {
                let spec = if peer {
                    certs::peer_leaf_spec(&names, &cluster_id, pod)
                } else {
                    certs::client_leaf_spec(&names, pod)
                };
                (pod.clone(), spec)
            })
            .collect();
        ensure_leaves(cc, ctx, &mount.secret, existing.as_ref(), ca, &specs, now).await?;
    }

    if let Some(auth) = &security.auth {
        ensure_auth_secret(cc, &secrets, &auth.generated).await?;
        for token in &auth.tokens {
            let found = get(&secrets, &token.secret_name).await?;
            if let Some(problem) = token_problem(&token.secret_name, found.as_ref()) {
                findings.problems.push(problem);
            }
        }
    }
    Ok(findings)
}

async fn get(secrets: &Api<Secret>, name: &str) -> Result<Option<Secret>> {
    secrets
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(&format!("read Secret {name}"), e))
}

/// Creates `secret` unless it exists; an existing one is left as it is.
async fn create_once(secrets: &Api<Secret>, secret: &Secret) -> Result<bool> {
    let name = secret.meta().name.clone().unwrap_or_default();
    match secrets.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(&format!("create Secret {name}"), e)),
    }
}

/// The CA from `<name>-ca`, created when missing. None (and a problem) when it exists but
/// cannot be read: the operator never replaces a CA by itself.
async fn ensure_ca(
    cc: &CacheCluster,
    secrets: &Api<Secret>,
    names: &Names,
    now: Timestamp,
    findings: &mut Findings,
) -> Result<Option<Ca>> {
    let name = names.ca();
    if let Some(stored) = get(secrets, &name).await? {
        let ca = security::ca_of(&stored).filter(ca_is_readable);
        if ca.is_none() {
            findings.problems.push(format!(
                "Secret {name} has no readable ca.crt and ca.key; no certificate is issued until it is fixed or deleted (a new CA is then made)"
            ));
        }
        return Ok(ca);
    }
    let cluster_id = cc.uid().unwrap_or_default();
    let ca = certs::new_ca(names, &cluster_id, now).map_err(Error::Certificate)?;
    if !create_once(secrets, &security::ca_secret(cc, &ca)).await? {
        // Another writer was first: use what it stored.
        return Ok(get(secrets, &name)
            .await?
            .as_ref()
            .and_then(security::ca_of));
    }
    tracing::info!(cluster = %names.key(), secret = %name, "created the cluster's CA");
    Ok(Some(ca))
}

fn ca_is_readable(ca: &Ca) -> bool {
    rcgen::KeyPair::from_pem(&ca.key_pem).is_ok()
        && x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes())
            .is_ok_and(|(_, pem)| pem.parse_x509().is_ok())
}

/// Issues the leaves `<name>-peer-tls` or `<name>-client-tls` lacks, and applies it when
/// anything changed.
async fn ensure_leaves(
    cc: &CacheCluster,
    ctx: &Context,
    name: &str,
    existing: Option<&Secret>,
    ca: &Ca,
    specs: &BTreeMap<String, LeafSpec>,
    now: Timestamp,
) -> Result<()> {
    let asked = security::rotation_requested(cc);
    let rotate = existing.is_some_and(|s| security::rotated_for(s) != asked);
    let (leaves, issued) =
        security::leaves(existing, ca, specs, rotate, now).map_err(Error::Certificate)?;
    let desired = security::tls_secret(
        cc,
        name.to_owned(),
        &ca.cert_pem,
        &leaves,
        (!asked.is_empty()).then_some(asked),
    );
    let unchanged = existing.is_some_and(|s| {
        s.data == desired.data && security::rotated_for(s) == security::rotated_for(&desired)
    });
    if unchanged {
        return Ok(());
    }
    apply::apply(&ctx.client, &Names::of(cc).namespace, &desired).await?;
    if !issued.is_empty() {
        let note = issued_note(name, &issued);
        tracing::info!(cluster = %Names::of(cc).key(), "{note}");
        events::emit(
            ctx,
            cc,
            EventType::Normal,
            "CertificatesIssued",
            "IssueCertificates",
            note,
        )
        .await;
    }
    Ok(())
}

/// "Secret demo-peer-tls: issued demo-3 (new), demo-0 (rotation asked)".
fn issued_note(secret: &str, issued: &[(String, &'static str)]) -> String {
    let pods: Vec<String> = issued
        .iter()
        .map(|(pod, reason)| format!("{pod} ({reason})"))
        .collect();
    format!("Secret {secret}: issued {}", pods.join(", "))
}

/// Creates `<name>-auth` with a new admin token unless it exists.
async fn ensure_auth_secret(cc: &CacheCluster, secrets: &Api<Secret>, name: &str) -> Result<()> {
    if get(secrets, name).await?.is_some() {
        return Ok(());
    }
    let token = security::new_token().map_err(|_| Error::Random)?;
    if create_once(secrets, &security::auth_secret(cc, &token)).await? {
        tracing::info!(cluster = %Names::of(cc).key(), secret = %name, "created the admin token");
    }
    Ok(())
}

/// What is wrong with a user's TLS Secret, as a problem line.
fn check_user_tls(
    field: &str,
    name: &str,
    secret: Option<&Secret>,
    pods: &[String],
    findings: &mut Findings,
) {
    let problem = match secret.map(|s| s.data.clone().unwrap_or_default()) {
        None => format!("{field}: Secret {name} does not exist; pods cannot start until it does"),
        Some(data) => match certs::check_layout(&data, pods) {
            Ok(()) => return,
            Err(error) => format!("{field}: Secret {name} {error}"),
        },
    };
    findings.problems.push(problem);
}

/// What is wrong with a user's token Secret, if anything.
pub(super) fn token_problem(name: &str, secret: Option<&Secret>) -> Option<String> {
    match secret {
        None => Some(format!(
            "spec.auth.tokens: Secret {name} does not exist; its users cannot authenticate until it does"
        )),
        Some(s) if s.data.as_ref().is_none_or(BTreeMap::is_empty) => Some(format!(
            "spec.auth.tokens: Secret {name} has no keys (each key is a user, its value the token)"
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_names_pods_and_reasons_only() {
        let note = issued_note(
            "demo-peer-tls",
            &[
                ("demo-3".to_owned(), "new"),
                ("demo-0".to_owned(), "rotation asked"),
            ],
        );
        assert_eq!(
            note,
            "Secret demo-peer-tls: issued demo-3 (new), demo-0 (rotation asked)"
        );
    }

    #[test]
    fn token_secrets_that_cannot_authenticate_anyone_are_reported() {
        assert!(
            token_problem("app", None)
                .unwrap()
                .contains("does not exist")
        );
        let empty = Secret::default();
        assert!(
            token_problem("app", Some(&empty))
                .unwrap()
                .contains("no keys")
        );
        let good = Secret {
            data: Some(BTreeMap::from([(
                "alice".to_owned(),
                k8s_openapi::ByteString(b"s3cret".to_vec()),
            )])),
            ..Secret::default()
        };
        assert_eq!(token_problem("app", Some(&good)), None);
    }
}
