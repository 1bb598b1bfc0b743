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
mod tests;
