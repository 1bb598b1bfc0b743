//! The contents of API-backed volumes: `configMap`, `secret`, `downwardAPI`
//! and `projected` (which is how the service-account token, `ca.crt` and
//! `namespace` reach a pod: the ServiceAccount admission plugin adds a
//! `kube-api-access-*` projected volume mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount`, unless
//! `automountServiceAccountToken` is false).
//!
//! A [`Projector`] renders a volume into a [`Payload`] for the atomic writer.
//! It owns the pod's service-account tokens: each comes from the TokenRequest
//! API, bound to the pod, and is requested again once 80% of its lifetime has
//! passed, as the kubelet does.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource, Secret, ServiceAccount,
    ServiceAccountTokenProjection, Volume,
};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use super::atomic_writer::{FileContent, Payload};
use super::downward::{PodFacts, service_account};
use super::error::{Error, Result};

/// Default file mode of volume files (`defaultMode: 0644`).
pub const DEFAULT_MODE: u32 = 0o644;
/// Token lifetime when the projection does not say (what the admission plugin asks for).
const DEFAULT_TOKEN_SECONDS: i64 = 3607;

/// A ConfigMap's `data` and `binaryData`, or `None` if it does not exist.
pub async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

/// A Secret's decoded `data`, or `None` if it does not exist.
pub async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }))
}

/// The files of a ConfigMap or Secret volume: every key, or just `items`.
/// `data` is `None` when the object does not exist.
pub fn key_files(
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: u32,
    what: &str,
) -> Result<Payload> {
    let Some(data) = data else {
        return if optional {
            Ok(Payload::new())
        } else {
            Err(Error::NotReady(format!("{what} not found")))
        };
    };
    let mut payload = Payload::new();
    match items {
        None => {
            for (k, v) in data {
                payload.insert(
                    PathBuf::from(k),
                    FileContent {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        payload.insert(
                            PathBuf::from(&item.path),
                            FileContent {
                                data: v.clone(),
                                mode: file_mode(item.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(Error::NotReady(format!("{what} has no key {:?}", item.key)));
                    }
                }
            }
        }
    }
    Ok(payload)
}

/// The files of a downwardAPI volume (or projection).
pub fn downward_files(
    items: &[DownwardAPIVolumeFile],
    facts: &PodFacts<'_>,
    default_mode: u32,
) -> Result<Payload> {
    let mut payload = Payload::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            facts.field(&f.field_path)
        } else if let Some(r) = &item.resource_field_ref {
            facts.resource(r, None)
        } else {
            continue;
        }
        .map_err(|e| Error::NotReady(format!("downwardAPI {}: {e}", item.path)))?;
        payload.insert(
            PathBuf::from(&item.path),
            FileContent {
                data: value.into_bytes(),
                mode: file_mode(item.mode, default_mode),
            },
        );
    }
    Ok(payload)
}

/// A `mode` or `defaultMode` from the spec; `default` when unset or out of range.
fn file_mode(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(default)
}

/// The objects whose keys become files.
#[derive(Debug, Clone, Copy)]
enum KeySource {
    ConfigMap,
    Secret,
}

#[derive(Debug)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// Renders one pod's API-backed volumes; keeps its service-account tokens.
pub struct Projector {
    client: Client,
    namespace: String,
    tokens: HashMap<(Option<String>, i64), CachedToken>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("namespace", &self.namespace)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Projector {
    /// A projector for pods in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Projector {
            client,
            namespace: namespace.to_string(),
            tokens: HashMap::new(),
        }
    }

    /// Whether [`Projector::payload`] handles this volume.
    pub fn handles(volume: &Volume) -> bool {
        volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.downward_api.is_some()
            || volume.projected.is_some()
    }

    /// The files `volume` should contain now. `Error::NotReady` when a
    /// non-optional object or key is missing.
    pub async fn payload(&mut self, volume: &Volume, facts: &PodFacts<'_>) -> Result<Payload> {
        if let Some(cm) = &volume.config_map {
            let mode = file_mode(cm.default_mode, DEFAULT_MODE);
            let items = cm.items.as_deref();
            return self
                .key_source_files(KeySource::ConfigMap, &cm.name, items, cm.optional, mode)
                .await;
        }
        if let Some(s) = &volume.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            let mode = file_mode(s.default_mode, DEFAULT_MODE);
            let items = s.items.as_deref();
            return self
                .key_source_files(KeySource::Secret, name, items, s.optional, mode)
                .await;
        }
        if let Some(d) = &volume.downward_api {
            return downward_files(
                d.items.as_deref().unwrap_or_default(),
                facts,
                file_mode(d.default_mode, DEFAULT_MODE),
            );
        }
        let Some(projected) = &volume.projected else {
            return Err(Error::NotReady(format!(
                "volume {:?} is not an API-backed volume",
                volume.name
            )));
        };
        self.projected_files(volume, projected, facts).await
    }

    /// A `projected` volume: its sources merged, each file with the volume's
    /// `defaultMode` unless an item says otherwise.
    async fn projected_files(
        &mut self,
        volume: &Volume,
        projected: &ProjectedVolumeSource,
        facts: &PodFacts<'_>,
    ) -> Result<Payload> {
        let default_mode = file_mode(projected.default_mode, DEFAULT_MODE);
        let mut payload = Payload::new();
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let items = cm.items.as_deref();
                payload.extend(
                    self.key_source_files(
                        KeySource::ConfigMap,
                        &cm.name,
                        items,
                        cm.optional,
                        default_mode,
                    )
                    .await?,
                );
            }
            if let Some(s) = &source.secret {
                let items = s.items.as_deref();
                payload.extend(
                    self.key_source_files(
                        KeySource::Secret,
                        &s.name,
                        items,
                        s.optional,
                        default_mode,
                    )
                    .await?,
                );
            }
            if let Some(d) = &source.downward_api {
                payload.extend(downward_files(
                    d.items.as_deref().unwrap_or_default(),
                    facts,
                    default_mode,
                )?);
            }
            if let Some(t) = &source.service_account_token {
                let token = self.token(t, facts).await?;
                payload.insert(
                    PathBuf::from(&t.path),
                    FileContent {
                        data: token.into_bytes(),
                        mode: default_mode,
                    },
                );
            }
            if source.cluster_trust_bundle.is_some() || source.pod_certificate.is_some() {
                return Err(Error::NotReady(format!(
                    "volume {:?}: clusterTrustBundle and podCertificate projections are not supported",
                    volume.name
                )));
            }
        }
        Ok(payload)
    }

    /// The files of ConfigMap or Secret `name` (a volume or a projection source).
    async fn key_source_files(
        &self,
        source: KeySource,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        default_mode: u32,
    ) -> Result<Payload> {
        let (data, what) = match source {
            KeySource::ConfigMap => (
                config_map_data(&self.client, &self.namespace, name).await?,
                format!("configmap {name:?}"),
            ),
            KeySource::Secret => (
                secret_data(&self.client, &self.namespace, name).await?,
                format!("secret {name:?}"),
            ),
        };
        let optional = optional == Some(true);
        key_files(data.as_ref(), items, optional, default_mode, &what)
    }

    /// A token for the pod's service account, bound to the pod.
    async fn token(
        &mut self,
        proj: &ServiceAccountTokenProjection,
        facts: &PodFacts<'_>,
    ) -> Result<String> {
        let seconds = proj
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_SECONDS)
            .max(600);
        let key = (proj.audience.clone().filter(|a| !a.is_empty()), seconds);
        if let Some(cached) = self.tokens.get(&key)
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let sa = service_account(facts.pod);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: key.0.clone().into_iter().collect(),
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: facts.pod.metadata.name.clone(),
                    uid: facts.pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let response = api
            .create_token_request(&sa, &PostParams::default(), &request)
            .await?;
        let token = response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::NotReady(format!(
                    "TokenRequest for serviceaccount {sa:?} returned no token"
                ))
            })?;
        let lifetime = Duration::from_secs(u64::try_from(seconds).unwrap_or(3600));
        tracing::debug!(serviceaccount = %sa, ?lifetime, "issued a bound service-account token");
        let refresh_at = Instant::now() + lifetime.mul_f64(0.8);
        self.tokens.insert(
            key,
            CachedToken {
                token: token.clone(),
                refresh_at,
            },
        );
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("a.conf".into(), b"A".to_vec()),
            ("b".into(), b"B".to_vec()),
        ])
    }

    #[test]
    fn all_keys_or_selected_items() {
        let all = key_files(Some(&data()), None, false, 0o640, "cm").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[&PathBuf::from("a.conf")],
            FileContent {
                data: b"A".to_vec(),
                mode: 0o640
            }
        );

        let items = [KeyToPath {
            key: "b".into(),
            path: "dir/renamed".into(),
            mode: Some(0o600),
        }];
        let some = key_files(Some(&data()), Some(&items), false, 0o644, "cm").unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(
            some[&PathBuf::from("dir/renamed")],
            FileContent {
                data: b"B".to_vec(),
                mode: 0o600
            }
        );
    }

    #[test]
    fn missing_objects_and_keys() {
        assert!(matches!(
            key_files(None, None, false, 0o644, "cm"),
            Err(Error::NotReady(_))
        ));
        assert!(key_files(None, None, true, 0o644, "cm").unwrap().is_empty());
        let items = [KeyToPath {
            key: "zzz".into(),
            path: "z".into(),
            mode: None,
        }];
        assert!(matches!(
            key_files(Some(&data()), Some(&items), false, 0o644, "cm"),
            Err(Error::NotReady(_))
        ));
        assert!(
            key_files(Some(&data()), Some(&items), true, 0o644, "cm")
                .unwrap()
                .is_empty()
        );
    }
}
