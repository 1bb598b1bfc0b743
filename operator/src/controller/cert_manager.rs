//! cert-manager as the peer certificates' source (`spec.tls.peer.issuerRef`): applies a
//! `Certificate` per member, reads the Secrets cert-manager issues, and applies
//! `<name>-peer-tls` from them (`resources::cert_manager` builds both). Runs where the
//! operator's CA would issue, before the StatefulSet, and says how many pods have a
//! certificate so the StatefulSet does not outgrow them.
//!
//! - A Certificate is read first (`get`) and applied only when its spec or owner is not
//!   what the operator wants: an apply goes through cert-manager's admission webhook, and
//!   every member is looked at on every reconcile.
//! - The operator does not watch Secrets or Certificates (it may not list them). It
//!   copies an issued or renewed Secret at its next reconcile: within 2 s while one is
//!   pending, within 15 s (`REQUEUE_SETTLED`) otherwise. cert-manager renews with 30 days
//!   left, so the copy is never late for an expiry; until it is made, the members keep
//!   the previous certificate, which is still valid.
//! - The Certificate API missing (no CRD: 404) or refused (403) is not a failed
//!   reconcile: the rest of the cluster is reconciled, `Secured` turns False with reason
//!   `CertManagerUnavailable` and what to do (an event follows the condition), and no
//!   pod without a certificate is added.
//! - Certificates of ordinals no longer in use stay (the operator has no `delete`): they
//!   are used again by a later scale-up, and go with the CacheCluster.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::{Context, apply};
use crate::crd::{CacheCluster, IssuerRef};
use crate::resources::cert_manager::{self, Issued};
use crate::resources::{Names, certs, names::FIELD_MANAGER};
use crate::{Error, Result};

/// Where the Certificates stand after this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The Certificate API is missing or refused: why, and what to do.
    pub unavailable: Option<String>,
    /// One line per Certificate not issued (or not usable) yet.
    pub pending: Vec<String>,
    /// The leading ordinals whose certificate `<name>-peer-tls` holds.
    pub certified: u32,
}

/// Applies the Certificates of `pods` and `<name>-peer-tls` from what they issued.
pub(super) async fn ensure(
    cc: &CacheCluster,
    ctx: &Context,
    issuer: &IssuerRef,
    pods: &[String],
    existing: Option<&Secret>,
) -> Result<Outcome> {
    let names = Names::of(cc);
    let resource = cert_manager::certificate_resource();
    let certificates: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &names.namespace, &resource);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let cluster_id = cc.uid().unwrap_or_default();
    let mut outcome = Outcome::default();
    let mut issued: Vec<(String, Option<Issued>)> = Vec::new();
    for pod in pods {
        let Some(ordinal) = names.ordinal_of(pod) else {
            continue;
        };
        let name = names.peer_certificate(ordinal);
        let desired = cert_manager::peer_certificate(cc, issuer, ordinal);
        let stored = match ensure_certificate(&certificates, &desired).await {
            Ok(stored) => stored,
            Err(Unavailable(reason)) => {
                outcome.unavailable = Some(reason);
                break;
            }
        };
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(&format!("read Secret {name}"), e))?;
        let uri = certs::member_uri(&cluster_id, pod);
        match cert_manager::issued(&name, secret.as_ref(), &uri) {
            Ok(pair) => issued.push((pod.clone(), Some(pair))),
            Err(why) => {
                let says = stored
                    .as_ref()
                    .and_then(cert_manager::not_ready)
                    .map(|ready| format!("; cert-manager: {ready}"))
                    .unwrap_or_default();
                outcome
                    .pending
                    .push(format!("Certificate {name}: {why}{says}"));
                issued.push((pod.clone(), None));
            }
        }
    }
    if outcome.unavailable.is_some() {
        // Nothing was read: keep `<name>-peer-tls` as it is, and grow nothing.
        outcome.certified = 0;
        return Ok(outcome);
    }
    let aggregate = cert_manager::aggregate(cc, &issued, existing);
    outcome.certified = aggregate.certified;
    if let Some(secret) = aggregate.secret {
        let unchanged = existing.is_some_and(|s| s.data == secret.data);
        if !unchanged {
            apply::apply(&ctx.client, &names.namespace, &secret).await?;
            tracing::info!(
                cluster = %names.key(),
                secret = %names.peer_tls(),
                certified = aggregate.certified,
                "copied the certificates cert-manager issued"
            );
        }
    }
    Ok(outcome)
}

/// Why the Certificate API cannot be used, for the condition.
struct Unavailable(String);

/// The stored Certificate, applied first when it is missing or differs from `desired`.
/// A refused or missing API is [`Unavailable`]; other errors are logged and leave the
/// Certificate as it is (None: nothing to say about its readiness).
async fn ensure_certificate(
    certificates: &Api<DynamicObject>,
    desired: &DynamicObject,
) -> Result<Option<DynamicObject>, Unavailable> {
    let name = desired.name_any();
    let stored = match certificates.get_opt(&name).await {
        Ok(stored) => stored,
        Err(error) => return unavailable_or_none(&name, "read", error),
    };
    let current = stored.as_ref().is_some_and(|stored| {
        stored.data["spec"] == desired.data["spec"]
            && stored.meta().owner_references == desired.meta().owner_references
    });
    if current {
        return Ok(stored);
    }
    match certificates
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
    {
        Ok(applied) => Ok(Some(applied)),
        Err(error) => unavailable_or_none(&name, "apply", error),
    }
}

fn unavailable_or_none(
    name: &str,
    verb: &str,
    error: kube::Error,
) -> Result<Option<DynamicObject>, Unavailable> {
    match error {
        kube::Error::Api(status) if status.code == 404 => Err(Unavailable(format!(
            "spec.tls.peer.issuerRef: the cert-manager Certificate API (certificates.cert-manager.io/v1) is not installed here; install cert-manager, or remove issuerRef to let the operator's CA issue ({verb} Certificate {name}: {})",
            status.message
        ))),
        kube::Error::Api(status) if status.code == 403 => Err(Unavailable(format!(
            "spec.tls.peer.issuerRef: the operator may not {verb} cert-manager Certificates here ({}); install the chart with rbac.certManager=true",
            status.message
        ))),
        error => {
            tracing::warn!(certificate = %name, %error, "cannot {verb} the Certificate; trying again at the next reconcile");
            Ok(None)
        }
    }
}
