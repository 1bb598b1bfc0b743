//! A container's environment.
//!
//! Follows the kubelet: the base variables (the `KUBERNETES_SERVICE_*` family
//! and the runtime's PATH/HOSTNAME/HOME) come first, then `envFrom` in order,
//! then `env` in order, later definitions overriding earlier ones. An `env`
//! value may refer to variables defined before it as `$(NAME)`; `command` and
//! `args` may refer to any of them (see [`super::expansion`]).
//!
//! ConfigMaps and Secrets are fetched by the caller ([`referenced_objects`]
//! says which) and passed in, so resolution itself is pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Container;

use super::downward::{FieldError, PodFacts};
pub use super::expansion::{Environment, expand};

/// Why a container's environment cannot be built. Shown as the container's
/// `CreateContainerConfigError`, and retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A non-optional ConfigMap does not exist.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    /// A non-optional Secret does not exist.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// A non-optional key is missing from a ConfigMap or Secret.
    #[error("couldn't find key {key} in {kind} {name:?}")]
    KeyNotFound {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A fieldRef or resourceFieldRef failed.
    #[error("env {name}: {source}")]
    Field {
        /// The variable.
        name: String,
        /// Why.
        #[source]
        source: FieldError,
    },
    /// `valueFrom` has no source this kubelet understands (e.g. `fileKeyRef`).
    #[error("env {0}: unsupported valueFrom")]
    Unsupported(String),
}

/// The data of the ConfigMaps and Secrets a container refers to, by name.
/// An object that does not exist is simply absent.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    /// ConfigMap name → key → value (`data`, plus `binaryData` as UTF-8).
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret name → key → decoded value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// The ConfigMaps and Secrets that `container`'s env and envFrom read.
pub fn referenced_objects(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cms.insert(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(src) = &var.value_from else { continue };
        if let Some(r) = &src.config_map_key_ref {
            cms.insert(r.name.clone());
        }
        if let Some(r) = &src.secret_key_ref {
            secrets.insert(r.name.clone());
        }
    }
    (cms, secrets)
}

/// Build `container`'s environment on top of `base`.
pub fn resolve_env(
    container: &Container,
    facts: &PodFacts<'_>,
    sources: &EnvSources,
    base: &[(String, String)],
) -> Result<Environment, EnvError> {
    let mut env = Environment::default();
    for (k, v) in base {
        env.set(k.clone(), v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (data, optional, missing) = if let Some(r) = &from.config_map_ref {
            let missing = EnvError::ConfigMapNotFound(r.name.clone());
            (sources.config_maps.get(&r.name), r.optional, missing)
        } else if let Some(r) = &from.secret_ref {
            let missing = EnvError::SecretNotFound(r.name.clone());
            (sources.secrets.get(&r.name), r.optional, missing)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    env.set(format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional == Some(true) => {}
            None => return Err(missing),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(env.expand(var.value.as_deref().unwrap_or(""))),
            Some(src) => {
                let field_err = |source| EnvError::Field {
                    name: var.name.clone(),
                    source,
                };
                if let Some(f) = &src.field_ref {
                    Some(facts.field(&f.field_path).map_err(field_err)?)
                } else if let Some(r) = &src.resource_field_ref {
                    Some(facts.resource(r, Some(container)).map_err(field_err)?)
                } else if let Some(r) = &src.config_map_key_ref {
                    let obj = sources.config_maps.get(&r.name);
                    key_value(obj, "ConfigMap", &r.name, &r.key, r.optional)?
                } else if let Some(r) = &src.secret_key_ref {
                    let obj = sources.secrets.get(&r.name);
                    key_value(obj, "Secret", &r.name, &r.key, r.optional)?
                } else {
                    return Err(EnvError::Unsupported(var.name.clone()));
                }
            }
        };
        if let Some(value) = value {
            env.set(var.name.clone(), value);
        }
    }
    Ok(env)
}

/// One key of a ConfigMap or Secret; `None` when it may be absent and is.
fn key_value(
    obj: Option<&BTreeMap<String, String>>,
    kind: &'static str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, EnvError> {
    let optional = optional == Some(true);
    match obj {
        None if optional => Ok(None),
        None if kind == "Secret" => Err(EnvError::SecretNotFound(name.to_string())),
        None => Err(EnvError::ConfigMapNotFound(name.to_string())),
        Some(data) => match data.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(EnvError::KeyNotFound {
                kind,
                name: name.to_string(),
                key: key.to_string(),
            }),
        },
    }
}

/// The container's `command` and `args` with `$(VAR)` references expanded.
pub fn expand_command(container: &Container, env: &Environment) -> (Vec<String>, Vec<String>) {
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| env.expand(s)).collect()
    };
    (expand_all(&container.command), expand_all(&container.args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, Pod, PodSpec, SecretEnvSource, SecretKeySelector,
    };
    use kube::api::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("kache-1".into()),
                namespace: Some("demo".into()),
                uid: Some("abcd".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("kache-local".into()),
                service_account_name: Some("kache-node".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn facts(pod: &Pod) -> PodFacts<'_> {
        PodFacts {
            pod,
            pod_ip: Some("10.88.1.9".parse().unwrap()),
            host_ip: "10.88.0.1".parse().unwrap(),
            node_cpu: "8",
            node_memory: "16Gi",
        }
    }

    fn value(name: &str, v: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(v.into()),
            value_from: None,
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        }
    }

    fn sources() -> EnvSources {
        let mut s = EnvSources::default();
        s.config_maps.insert(
            "cfg".into(),
            BTreeMap::from([
                ("MODE".into(), "fast".into()),
                ("PORT".into(), "8080".into()),
            ]),
        );
        s.secrets.insert(
            "creds".into(),
            BTreeMap::from([("password".into(), "hunter2".into())]),
        );
        s
    }

    fn base() -> Vec<(String, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST".into(), "10.88.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), "6443".into()),
        ]
    }

    #[test]
    fn field_refs_env_from_and_overrides() {
        let p = pod();
        let c = Container {
            name: "node".into(),
            env_from: Some(vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    prefix: Some("CFG_".into()),
                    secret_ref: None,
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "creds".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ]),
            env: Some(vec![
                field("POD_NAME", "metadata.name"),
                field("POD_NAMESPACE", "metadata.namespace"),
                field("POD_UID", "metadata.uid"),
                field("POD_IP", "status.podIP"),
                field("NODE_NAME", "spec.nodeName"),
                field("SA", "spec.serviceAccountName"),
                value("ADDR", "$(POD_IP):$(CFG_PORT)"),
                value("LATER", "$(DEFINED_AFTER)"),
                value("DEFINED_AFTER", "x"),
                value("KUBERNETES_SERVICE_PORT", "443"),
            ]),
            command: Some(vec!["/bin/node".into(), "--name=$(POD_NAME)".into()]),
            args: Some(vec!["--peer=$(ADDR)".into(), "$$(POD_NAME)".into()]),
            ..Default::default()
        };
        let env = resolve_env(&c, &facts(&p), &sources(), &base()).unwrap();
        let get = |k: &str| env.get(k).unwrap_or("<unset>").to_string();
        assert_eq!(get("POD_NAME"), "kache-1");
        assert_eq!(get("POD_NAMESPACE"), "demo");
        assert_eq!(get("POD_UID"), "abcd");
        assert_eq!(get("POD_IP"), "10.88.1.9");
        assert_eq!(get("NODE_NAME"), "kache-local");
        assert_eq!(get("SA"), "kache-node");
        assert_eq!(get("CFG_MODE"), "fast");
        assert_eq!(get("password"), "hunter2");
        assert_eq!(get("ADDR"), "10.88.1.9:8080");
        assert_eq!(
            get("LATER"),
            "$(DEFINED_AFTER)",
            "only earlier variables expand"
        );
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), "10.88.0.1");
        assert_eq!(
            get("KUBERNETES_SERVICE_PORT"),
            "443",
            "the pod's env overrides the base"
        );
        // the base stays first, overrides keep their position
        assert_eq!(
            env.iter().next(),
            Some(("KUBERNETES_SERVICE_HOST", "10.88.0.1"))
        );
        let (cmd, args) = expand_command(&c, &env);
        assert_eq!(cmd, vec!["/bin/node", "--name=kache-1"]);
        assert_eq!(args, vec!["--peer=10.88.1.9:8080", "$(POD_NAME)"]);
    }

    #[test]
    fn key_refs_and_their_errors() {
        let p = pod();
        let key_ref = |name: &str, cm: &str, key: &str, optional: Option<bool>| EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            }),
        };
        let secret_ref = |name: &str, secret: &str, key: &str| EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        };
        let run = |vars: Vec<EnvVar>| {
            let c = Container {
                name: "c".into(),
                env: Some(vars),
                ..Default::default()
            };
            resolve_env(&c, &facts(&p), &sources(), &[])
        };
        let env = run(vec![
            key_ref("MODE", "cfg", "MODE", None),
            key_ref("OPT", "cfg", "NOPE", Some(true)),
            key_ref("OPT2", "absent", "x", Some(true)),
            secret_ref("PW", "creds", "password"),
        ])
        .unwrap();
        assert_eq!(env.get("MODE"), Some("fast"));
        assert_eq!(env.get("OPT"), None);
        assert_eq!(env.get("OPT2"), None);
        assert_eq!(env.get("PW"), Some("hunter2"));

        assert_eq!(
            run(vec![key_ref("X", "absent", "x", None)]).unwrap_err(),
            EnvError::ConfigMapNotFound("absent".into())
        );
        assert!(matches!(
            run(vec![key_ref("X", "cfg", "nope", None)]).unwrap_err(),
            EnvError::KeyNotFound {
                kind: "ConfigMap",
                ..
            }
        ));
        assert_eq!(
            run(vec![secret_ref("X", "absent", "x")]).unwrap_err(),
            EnvError::SecretNotFound("absent".into())
        );
        assert!(matches!(
            run(vec![field("X", "spec.bogus")]).unwrap_err(),
            EnvError::Field { .. }
        ));
    }

    #[test]
    fn referenced_objects_lists_env_and_env_from() {
        let c = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "a".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            env: Some(vec![EnvVar {
                name: "X".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "s".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            }]),
            ..Default::default()
        };
        let (cms, secrets) = referenced_objects(&c);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), vec!["s"]);
    }
}
