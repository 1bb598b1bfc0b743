//! The container environment: `fieldRef`s, `envFrom` with prefixes, `$(VAR)` expansion of
//! earlier variables only, the pod's env overriding the base, ConfigMap/Secret key references
//! (optional or missing), and the objects a pod's env names.

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
