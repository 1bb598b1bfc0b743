//! A local-directory volume provisioner, so StatefulSets with
//! `volumeClaimTemplates` work and their data survives pod restarts.
//!
//! It watches PersistentVolumeClaims in every namespace. For a claim that is
//! Pending, has no volume yet and asks for no storage class, for a class that
//! does not exist, or for a class whose provisioner is [`PROVISIONER`], it
//! creates a `hostPath` PersistentVolume `pvc-<claim uid>` backed by
//! `<state-dir>/pv/pvc-<claim uid>`, pre-bound to the claim (`claimRef`); the
//! controller-manager's PV binder then binds the pair. The scheduler holds a
//! pod back until its immediate-binding claims are bound, so this runs for the
//! whole cluster, not per node.
//!
//! Volumes are `Retain`ed: when a claim is deleted, its volume becomes
//! Released, and this provisioner deletes the volume and its directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::error::{Result, is_conflict, is_not_found};

/// The provisioner name a StorageClass can use to send its claims here.
pub const PROVISIONER: &str = "kache.dev/local-path";
/// Label on every volume this provisioner created.
pub const LABEL: &str = "kache.dev/provisioned-by";

/// The volume for `claim`, or `None` if this provisioner should not serve it.
/// `class_provisioner` is the provisioner of the claim's class: `None` when the
/// claim names no class or a class that does not exist.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    class_provisioner: Option<&str>,
    root: &Path,
    node: &str,
) -> Option<PersistentVolume> {
    let spec = claim.spec.as_ref()?;
    let pending = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    let unbound = spec.volume_name.as_deref().is_none_or(str::is_empty);
    let ours = class_provisioner.is_none_or(|p| p == PROVISIONER);
    if !(pending && unbound && ours) || claim.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let uid = claim.metadata.uid.clone()?;
    let name = format!("pvc-{uid}");
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".into()));
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(LABEL.to_string(), node.to_string())])),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), storage)])),
            access_modes: spec
                .access_modes
                .clone()
                .or_else(|| Some(vec!["ReadWriteOnce".into()])),
            host_path: Some(HostPathVolumeSource {
                path: root.join(&name).display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: Some(uid),
                ..Default::default()
            }),
            storage_class_name: spec.storage_class_name.clone().filter(|c| !c.is_empty()),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            volume_mode: spec
                .volume_mode
                .clone()
                .or_else(|| Some("Filesystem".into())),
            ..Default::default()
        }),
        status: None,
    })
}

/// Provision claims (in `namespace`, or everywhere) and reclaim released
/// volumes until `stop` turns true.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    root: PathBuf,
    node: String,
    mut stop: watch::Receiver<bool>,
) {
    let claims: Api<PersistentVolumeClaim> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut claim_events = watcher(claims, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let ours = watcher::Config::default().labels(LABEL);
    let mut volume_events = watcher(volumes.clone(), ours)
        .default_backoff()
        .applied_objects()
        .boxed();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(event) = claim_events.next() => match event {
                Ok(claim) => {
                    if let Err(e) = provision(&client, &volumes, &claim, &root, &node).await {
                        tracing::warn!(claim = %claim.name_any(), error = %e, "provisioning failed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "claim watch"),
            },
            Some(event) = volume_events.next() => match event {
                Ok(pv) => {
                    let claim_ns = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|c| c.namespace.clone());
                    if namespace.is_none() || claim_ns == namespace {
                        reclaim(&volumes, &pv, &root).await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "volume watch"),
            },
        }
    }
}

async fn provision(
    client: &Client,
    volumes: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
    root: &Path,
    node: &str,
) -> Result<()> {
    let class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .filter(|c| !c.is_empty());
    let class_provisioner = match class {
        None => None,
        Some(class) => Api::<StorageClass>::all(client.clone())
            .get_opt(&class)
            .await?
            .map(|sc| sc.provisioner),
    };
    let Some(pv) = volume_for(claim, class_provisioner.as_deref(), root, node) else {
        return Ok(());
    };
    let dir = pv
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .map(|h| PathBuf::from(&h.path));
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).map_err(super::error::Error::io(dir))?;
        // World-writable, as local-path provisioners make it: the pod may run as any user.
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(dir, mode).map_err(super::error::Error::io(dir))?;
    }
    match volumes.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            tracing::info!(claim = %claim.name_any(), namespace = ?claim.namespace(), volume = %pv.name_any(), "provisioned");
            Ok(())
        }
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reclaim(volumes: &Api<PersistentVolume>, pv: &PersistentVolume, root: &Path) {
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released") {
        return;
    }
    let name = pv.name_any();
    match volumes.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            tracing::warn!(volume = %name, error = %e, "could not delete released volume");
            return;
        }
    }
    // Only ever remove directories under our own root.
    let dir = root.join(&name);
    if pv
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .is_some_and(|h| Path::new(&h.path) == dir)
    {
        let _ = std::fs::remove_dir_all(&dir);
    }
    tracing::info!(volume = %name, "released volume deleted");
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, VolumeResourceRequirements,
    };

    fn claim(class: Option<&str>, phase: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-kache-0".into()),
                namespace: Some("demo".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(Into::into),
                volume_name: volume.map(Into::into),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity("2Gi".into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_pending_claim_gets_a_prebound_host_path_volume() {
        let pv = volume_for(
            &claim(None, "Pending", None),
            None,
            Path::new("/state/pv"),
            "n1",
        )
        .unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        let spec = pv.spec.unwrap();
        assert_eq!(spec.host_path.unwrap().path, "/state/pv/pvc-u-1");
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(
            (
                claim_ref.namespace.as_deref(),
                claim_ref.name.as_deref(),
                claim_ref.uid.as_deref()
            ),
            (Some("demo"), Some("data-kache-0"), Some("u-1"))
        );
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("2Gi".into()));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.storage_class_name, None);
    }

    #[test]
    fn other_claims_are_left_alone() {
        let root = Path::new("/r");
        assert!(volume_for(&claim(None, "Bound", Some("pv-1")), None, root, "n").is_none());
        assert!(volume_for(&claim(None, "Pending", Some("pv-1")), None, root, "n").is_none());
        assert!(
            volume_for(
                &claim(Some("fast"), "Pending", None),
                Some("ebs.csi.aws.com"),
                root,
                "n"
            )
            .is_none()
        );
        let ours = volume_for(
            &claim(Some("local"), "Pending", None),
            Some(PROVISIONER),
            root,
            "n",
        )
        .unwrap();
        assert_eq!(
            ours.spec.unwrap().storage_class_name.as_deref(),
            Some("local")
        );
        // a class that does not exist is served too, with its name kept for the binder
        assert!(volume_for(&claim(Some("missing"), "Pending", None), None, root, "n").is_some());
    }
}
