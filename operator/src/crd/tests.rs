//! The generated CRD: subresources, columns, and the validation rules evaluated the way
//! the API server does (kube's client-side CEL), so a bad spec is known to be refused.

use super::*;
use kube::CustomResourceExt;
use kube::core::cel::{validate_cel, validate_cel_update};

fn cluster(spec: &str) -> CacheCluster {
    CacheCluster::new("demo", serde_yaml::from_str(spec).unwrap())
}

fn refusal(spec: &str) -> String {
    match validate_cel(&cluster(spec)) {
        Ok(()) => panic!("accepted: {spec}"),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn the_crd_has_scale_status_and_columns() {
    let crd = CacheCluster::crd();
    assert_eq!(crd.spec.group, "kache.dev");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["cc".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let scale = version
        .subresources
        .as_ref()
        .unwrap()
        .scale
        .as_ref()
        .unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Replicas",
            "Ready",
            "Phase",
            "Rebalance",
            "Auth",
            "TLS",
            "Epoch",
            "Age"
        ]
    );
}

#[test]
fn good_specs_pass_the_rules() {
    for spec in [
        "replicas: 3",
        "replicas: 3\nreplicationFactor: 3",
        "replicas: 1\nreplicationFactor: all",
        "replicas: 5\nreplicationFactor: 2\npersistence: {enabled: false}",
        "replicas: 3\npersistence: {enabled: true}",
        "replicas: 3\ntls: {peer: {issuerRef: {name: corp-ca}}}",
        "replicas: 3\ntls: {peer: {secretName: '', issuerRef: {name: corp-ca, kind: ClusterIssuer, group: cert-manager.io}}}",
        "replicas: 3\ntls: {peer: {enabled: true, secretName: ''}, client: {enabled: true, secretName: my-tls}}\n\
         auth: {tokens: [{secretName: app-readers, role: read}, {secretName: app-writers, role: readwrite}]}",
        "replicas: 3\npersistence: {enabled: true, storageClassName: fast-ssd, size: 1.5Gi, \
         fsync: always, snapshotInterval: 30s, whenDeleted: Delete}",
        "replicas: 3\nmonitoring: {podMonitor: true, labels: {release: prom}, \
         prometheusRule: {enabled: true, labels: {role: alert-rules}}}",
        "replicas: 3\nmonitoring: {serviceMonitor: true, podMonitor: false, interval: 15s}",
    ] {
        if let Err(errors) = validate_cel(&cluster(spec)) {
            panic!("refused {spec}: {errors:?}");
        }
    }
}

#[test]
fn bad_specs_are_refused_with_a_message_that_says_what_to_fix() {
    let message = refusal("replicas: 3\nreplicationFactor: 5");
    assert!(
        message.contains("replicationFactor must be a number from 1 to spec.replicas"),
        "{message}"
    );
    let message = refusal("replicas: 3\nreplicationFactor: 0");
    assert!(message.contains("replicationFactor"), "{message}");
    let message = refusal("replicas: 3\nreplicationFactor: three");
    assert!(message.contains("replicationFactor"), "{message}");
    for ports in [
        "{respPort: 7070}",
        "{grpcPort: 6379}",
        "{httpPort: 8080, grpcPort: 8080}",
    ] {
        let message = refusal(&format!("replicas: 3\nservice: {ports}"));
        assert!(
            message.contains("httpPort, grpcPort and respPort must be three different ports"),
            "{ports}: {message}"
        );
    }
}

#[test]
fn partitions_cannot_change() {
    let old = cluster("replicas: 3\npartitions: 271");
    let new = cluster("replicas: 3\npartitions: 64");
    let errors = validate_cel_update(&new, &old).expect_err("partitions changed");
    assert!(
        format!("{errors:?}").contains("partitions is immutable"),
        "{errors:?}"
    );
    let scaled = cluster("replicas: 5\npartitions: 271");
    assert!(validate_cel_update(&scaled, &old).is_ok());
}

#[test]
fn a_volume_size_that_is_no_positive_quantity_is_refused() {
    for size in ["lots", "1.5.0Gi", "0", "-1Gi"] {
        let message = refusal(&format!(
            "replicas: 3\npersistence: {{enabled: true, size: \"{size}\"}}"
        ));
        assert!(
            message.contains("persistence.size must be a positive Kubernetes quantity"),
            "{size}: {message}"
        );
    }
}

/// Each change of a claim template field on a live cluster, and the message CEL refuses
/// it with; Kubernetes would refuse it too, but in the operator's apply of the StatefulSet.
#[test]
fn the_volume_claims_cannot_change_on_a_live_cluster() {
    let on = "replicas: 3\npersistence: {enabled: true, storageClassName: fast, size: 10Gi}";
    for (old, new, refused) in [
        (on, "replicas: 3", "persistence.enabled is immutable"),
        (
            "replicas: 3",
            "replicas: 3\npersistence: {enabled: true}",
            "persistence.enabled is immutable",
        ),
        (
            on,
            "replicas: 3\npersistence: {enabled: true, storageClassName: slow, size: 10Gi}",
            "persistence.storageClassName is immutable",
        ),
        (
            on,
            "replicas: 3\npersistence: {enabled: true, size: 10Gi}",
            "persistence.storageClassName is immutable",
        ),
        (
            "replicas: 3\npersistence: {enabled: true, size: 10Gi}",
            on,
            "persistence.storageClassName is immutable",
        ),
        (
            on,
            "replicas: 3\npersistence: {enabled: true, storageClassName: fast, size: 20Gi}",
            "persistence.size is immutable",
        ),
    ] {
        let errors = validate_cel_update(&cluster(new), &cluster(old))
            .expect_err(&format!("{old} -> {new} was accepted"));
        let message = format!("{errors:?}");
        assert!(
            message.contains(refused) && message.contains("create a new CacheCluster"),
            "{old} -> {new}: {message}"
        );
    }
}

#[test]
fn what_the_volume_claims_do_not_hold_may_change() {
    let on = "replicas: 3\npersistence: {enabled: true, storageClassName: fast, size: 10Gi}";
    for (old, new) in [
        (
            on,
            "replicas: 5\npersistence: {enabled: true, storageClassName: fast, size: 10Gi, \
             fsync: always, snapshotInterval: 1m, whenDeleted: Delete}",
        ),
        // Off, the claims do not exist: their settings are free until it is turned on.
        (
            "replicas: 3\npersistence: {size: 10Gi}",
            "replicas: 3\npersistence: {storageClassName: fast, size: 20Gi}",
        ),
    ] {
        if let Err(errors) = validate_cel_update(&cluster(new), &cluster(old)) {
            panic!("{old} -> {new} refused: {errors:?}");
        }
    }
}

#[test]
fn the_persistence_volume_and_mount_are_the_operators() {
    let message = refusal(
        "replicas: 3\npersistence: {enabled: true}\npod: {volumes: [{name: data, emptyDir: {}}]}",
    );
    assert!(
        message.contains("the name 'data' is the persistence volume's"),
        "{message}"
    );
    let message = refusal(
        "replicas: 3\npersistence: {enabled: true}\npod: {volumes: [{name: scratch, emptyDir: {}}]}\n\
         cacheContainer: {volumeMounts: [{name: scratch, mountPath: /var/lib/kache}]}",
    );
    assert!(
        message.contains("/var/lib/kache is where the persistence volume is mounted"),
        "{message}"
    );
    // Without persistence both are the user's to use.
    let spec = "replicas: 3\npod: {volumes: [{name: data, emptyDir: {}}]}\n\
                cacheContainer: {volumeMounts: [{name: data, mountPath: /var/lib/kache}]}";
    assert!(validate_cel(&cluster(spec)).is_ok());
}

#[test]
fn the_rules_name_the_builders_volume_and_mount() {
    use crate::crd::persistence::{MOUNT_PATH, VOLUME_NAME};
    let crd = serde_json::to_string(&CacheCluster::crd()).unwrap();
    assert!(crd.contains(&format!("v.name != '{VOLUME_NAME}'")));
    assert!(crd.contains(&format!("m.mountPath != '{MOUNT_PATH}'")));
}

#[test]
fn pod_customisations_pass_the_rules() {
    let spec = "replicas: 3
resources: {limits: {memory: 1.5Gi}}
pod:
  imagePullSecrets: [{name: regcred}]
  serviceAccountName: cache-irsa
  terminationGracePeriodSeconds: 600
  shutdownGraceSeconds: 540
  volumes: [{name: scratch, emptyDir: {}}]
  sidecars: [{name: shipper, image: fluent/fluent-bit:3.0}]
cacheContainer:
  env: [{name: RUST_LOG, value: debug}]
  envFrom: [{secretRef: {name: tokens}, prefix: APP_}]
  volumeMounts: [{name: scratch, mountPath: /scratch}]";
    if let Err(errors) = validate_cel(&cluster(spec)) {
        panic!("refused: {errors:?}");
    }
}

#[test]
fn a_shutdown_grace_the_kubelet_would_cut_short_is_refused() {
    for pod in [
        "{shutdownGraceSeconds: 60, terminationGracePeriodSeconds: 60}",
        "{shutdownGraceSeconds: 90, terminationGracePeriodSeconds: 60}",
    ] {
        let message = refusal(&format!("replicas: 3\npod: {pod}"));
        assert!(
            message.contains(
                "shutdownGraceSeconds must be less than pod.terminationGracePeriodSeconds"
            ),
            "{message}"
        );
    }
}

#[test]
fn the_operators_own_settings_cannot_be_overridden() {
    let message =
        refusal("replicas: 3\ncacheContainer: {env: [{name: KACHE_MAX_MEMORY, value: 10GiB}]}");
    assert!(message.contains("KACHE_* variables"), "{message}");
    let message = refusal(
        "replicas: 3\ncacheContainer: {envFrom: [{configMapRef: {name: x}, prefix: KACHE_}]}",
    );
    assert!(message.contains("prefix starting with KACHE_"), "{message}");
    let message = refusal("replicas: 3\npod: {sidecars: [{name: kache, image: busybox}]}");
    assert!(message.contains("the cache container's"), "{message}");
}

#[test]
fn a_mount_of_a_volume_that_does_not_exist_is_refused() {
    let message =
        refusal("replicas: 3\ncacheContainer: {volumeMounts: [{name: scratch, mountPath: /s}]}");
    assert!(
        message.contains("must name a volume in pod.volumes"),
        "{message}"
    );
    let message = refusal(
        "replicas: 3\npod: {volumes: [{name: other, emptyDir: {}}]}\n\
         cacheContainer: {volumeMounts: [{name: scratch, mountPath: /s}]}",
    );
    assert!(
        message.contains("must name a volume in pod.volumes"),
        "{message}"
    );
}

#[test]
fn a_memory_limit_that_is_no_quantity_is_refused() {
    let message = refusal("replicas: 3\nresources: {limits: {memory: 1.5.0Gi}}");
    assert!(
        message.contains("resources.limits.memory is not a Kubernetes quantity"),
        "{message}"
    );
    for limit in ["1Gi", "1.5Gi", "2e9", "1G", "1536Mi"] {
        let spec = format!("replicas: 3\nresources: {{limits: {{memory: {limit}}}}}");
        assert!(validate_cel(&cluster(&spec)).is_ok(), "{limit}");
    }
}

/// Every property of `schema` and below that has no description, as dotted paths.
fn undescribed(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        if let Some(items) = schema.get("items") {
            undescribed(items, &format!("{path}[]"), out);
        }
        return;
    };
    for (name, property) in properties {
        let here = format!("{path}.{name}");
        if property.get("description").is_none() {
            out.push(here.clone());
        }
        undescribed(property, &here, out);
    }
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    let crd = CacheCluster::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap();
    let mut missing = Vec::new();
    for top in ["spec", "status"] {
        undescribed(&schema["properties"][top], top, &mut missing);
    }
    assert!(missing.is_empty(), "no description: {missing:#?}");
}

/// Every `enum` value in `schema` and below.
fn enum_values(schema: &serde_json::Value, out: &mut Vec<String>) {
    match schema {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("enum", serde_json::Value::Array(values)) => {
                        out.extend(values.iter().map(ToString::to_string));
                    }
                    _ => enum_values(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| enum_values(item, out)),
        _ => {}
    }
}

/// kubectl reads YAML 1.1, where an unquoted `no` or `on` is a boolean: a user writing
/// `fsync: no` would be told the field must be a string.
#[test]
fn no_enum_value_reads_as_a_boolean_in_yaml_1_1() {
    let mut values = Vec::new();
    enum_values(
        &serde_json::to_value(CacheCluster::crd()).unwrap(),
        &mut values,
    );
    assert!(values.iter().any(|v| v == "\"everysec\""), "{values:?}");
    let booleans = ["y", "yes", "n", "no", "true", "false", "on", "off"];
    for value in values {
        let word = value.trim_matches('"').to_lowercase();
        assert!(!booleans.contains(&word.as_str()), "enum value {value}");
    }
}

/// The CacheClusters in a manifests/examples file.
fn examples(file: &str) -> Vec<serde_json::Value> {
    let path = format!(
        "{}/../manifests/examples/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            serde_yaml::from_value::<serde_json::Value>(
                serde_yaml::Value::deserialize(document).unwrap(),
            )
            .unwrap()
        })
        .filter(|object| object["kind"] == "CacheCluster")
        .collect()
}

#[test]
fn the_examples_pass_and_the_invalid_ones_are_refused() {
    for file in ["demo.yaml", "production.yaml"] {
        for object in examples(file) {
            let cc: CacheCluster = serde_json::from_value(object).unwrap();
            if let Err(errors) = validate_cel(&cc) {
                panic!("{file}: refused: {errors:?}");
            }
        }
    }
    let invalid = examples("invalid.yaml");
    assert!(invalid.len() >= 6);
    for object in invalid {
        let name = object["metadata"]["name"].clone();
        // An enum outside its values fails the schema, which serde stands in for here.
        if let Ok(cc) = serde_json::from_value::<CacheCluster>(object) {
            assert!(validate_cel(&cc).is_err(), "{name} was accepted");
        }
    }
}

#[test]
fn an_unset_replication_factor_is_two_copies_once_there_are_two_members() {
    use crate::members::ReplicationFactor;
    for (spec, copies) in [
        ("replicas: 1", 1),
        ("replicas: 2", 2),
        ("replicas: 5", 2),
        ("replicas: 5\nreplicationFactor: 1", 1),
        ("replicas: 5\nreplicationFactor: 3", 3),
    ] {
        assert_eq!(
            cluster(spec).spec.replication_factor(),
            ReplicationFactor::Count(copies),
            "{spec}"
        );
    }
    // The schema has no default: the API server must leave the field unset, or it would
    // write a fixed number and the count would stop following replicas.
    let crd = CacheCluster::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    let spec = &schema.properties.as_ref().unwrap()["spec"];
    let field = &spec.properties.as_ref().unwrap()["replicationFactor"];
    assert_eq!(field.default, None);
    assert!(
        !spec
            .required
            .iter()
            .flatten()
            .any(|r| r == "replicationFactor")
    );
}

#[test]
fn security_settings_are_checked_at_admission() {
    let message = refusal(
        "replicas: 3\nauth: {tokens: [{secretName: app, role: read}, {secretName: app, role: admin}]}",
    );
    assert!(
        message.contains("each secretName may appear once"),
        "{message}"
    );
    let message = refusal("replicas: 3\npod: {volumes: [{name: kache-peer-tls, emptyDir: {}}]}");
    assert!(message.contains("names starting with kache-"), "{message}");
    let message = refusal(
        "replicas: 3\npod: {volumes: [{name: x, emptyDir: {}}]}\n\
         cacheContainer: {volumeMounts: [{name: x, mountPath: /etc/kache/auth}]}",
    );
    assert!(message.contains("/etc/kache is where"), "{message}");
    // Roles are an enum: anything else does not even parse.
    let spec: Result<CacheClusterSpec, _> =
        serde_yaml::from_str("replicas: 3\nauth: {tokens: [{secretName: app, role: owner}]}");
    assert!(spec.is_err());
    // A Secret name is a DNS-1123 subdomain (the schema's pattern), or empty for unset.
    let schema = serde_json::to_value(CacheCluster::crd()).unwrap();
    let peer = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["tls"]["properties"]["peer"]["properties"]["secretName"];
    let pattern = peer["pattern"].as_str().unwrap();
    assert!(
        pattern.starts_with("^(") && pattern.ends_with(")?$"),
        "{pattern}"
    );
    let token = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["auth"]["properties"]["tokens"]["items"]["properties"]["secretName"];
    assert_eq!(token["minLength"], 1);
}

#[test]
fn a_stored_object_without_the_security_fields_reads_as_unset() {
    let spec: CacheClusterSpec = serde_yaml::from_str("replicas: 3").unwrap();
    assert_eq!(spec.tls.peer.enabled, None, "resolved against what runs");
    assert_eq!(spec.auth.enabled, None);
    assert!(!spec.tls.client.enabled, "client TLS is opt-in");
}

#[test]
fn an_issuer_ref_defaults_to_a_cert_manager_issuer_and_excludes_a_secret_name() {
    let spec: CacheClusterSpec =
        serde_yaml::from_str("replicas: 3\ntls: {peer: {issuerRef: {name: corp-ca}}}").unwrap();
    let issuer = spec.tls.peer.issuer_ref.unwrap();
    assert_eq!(issuer.kind, crate::crd::IssuerKind::Issuer);
    assert_eq!(issuer.group, "cert-manager.io");
    let message =
        refusal("replicas: 3\ntls: {peer: {secretName: my-tls, issuerRef: {name: corp-ca}}}");
    assert!(
        message.contains("set issuerRef (cert-manager issues the certificates) or secretName"),
        "{message}"
    );
    // Only the two kinds cert-manager has.
    let other: Result<CacheClusterSpec, _> =
        serde_yaml::from_str("replicas: 3\ntls: {peer: {issuerRef: {name: corp-ca, kind: Vault}}}");
    assert!(other.is_err());
    let schema = serde_json::to_value(CacheCluster::crd()).unwrap();
    let issuer_ref = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["tls"]["properties"]["peer"]["properties"]["issuerRef"];
    assert_eq!(issuer_ref["required"], serde_json::json!(["name"]));
    assert_eq!(
        issuer_ref["properties"]["kind"]["enum"],
        serde_json::json!(["Issuer", "ClusterIssuer"])
    );
    assert_eq!(
        issuer_ref["properties"]["group"]["default"],
        "cert-manager.io"
    );
}

#[test]
fn a_cluster_is_scraped_by_a_service_monitor_or_a_pod_monitor_not_both() {
    let message = refusal("replicas: 3\nmonitoring: {serviceMonitor: true, podMonitor: true}");
    assert!(
        message.contains("set serviceMonitor or podMonitor, not both"),
        "{message}"
    );
    let spec: CacheClusterSpec = serde_yaml::from_str(
        "replicas: 3\nmonitoring: {podMonitor: true, labels: {release: prom}, prometheusRule: {enabled: true}}",
    )
    .unwrap();
    assert!(spec.monitoring.pod_monitor && !spec.monitoring.service_monitor);
    assert_eq!(spec.monitoring.labels["release"], "prom");
    assert!(spec.monitoring.prometheus_rule.enabled);
    assert!(spec.monitoring.prometheus_rule.labels.is_empty());
    // A stored object from before these fields reads as everything off.
    let old: CacheClusterSpec =
        serde_yaml::from_str("replicas: 3\nmonitoring: {serviceMonitor: true}").unwrap();
    assert!(!old.monitoring.pod_monitor && !old.monitoring.prometheus_rule.enabled);
    assert_eq!(old.monitoring.interval, "30s");
}

const UPSTREAM: &str =
    "replicas: 3\nupstreams:\n- name: prices\n  url: https://prices.example.com/v2/\n";

#[test]
fn upstreams_pass_the_rules_when_valid() {
    for extra in [
        "",
        "  keyHeaders: [Accept-Language, X-Tenant]\n  forwardHeaders: [Authorization]\n  \
         pathPrefixes: [/v1/, /public]\n  maxObjectSize: 512KiB\n  timeout: 2500ms\n  \
         defaultTtl: 0s\n  circuitBreaker: {failureThreshold: 1, openFor: 1m}\n\
         - name: users-2\n  url: 'http://users.shop.svc:8080'",
    ] {
        let spec = format!("{UPSTREAM}{extra}");
        if let Err(errors) = validate_cel(&cluster(&spec)) {
            panic!("refused {spec}: {errors:?}");
        }
    }
}

#[test]
fn a_bad_upstream_is_refused_with_what_to_fix() {
    let upstream = |fields: &str| format!("replicas: 3\nupstreams:\n- {{{fields}}}");
    for (fields, expected) in [
        ("name: Prices, url: 'http://a'", "must be a DNS label"),
        ("name: -a, url: 'http://a'", "must be a DNS label"),
        (
            "name: a, url: 'ftp://a'",
            "upstreams[].url must be http:// or https://",
        ),
        ("name: a, url: 'http://'", "upstreams[].url"),
        ("name: a, url: 'http://user@a'", "no user info"),
        ("name: a, url: 'http://a/p?q=1'", "query (?)"),
        ("name: a, url: 'http://a/p#f'", "fragment (#)"),
        ("name: a, url: 'http://a/b c'", "spaces"),
        (
            "name: a, url: 'http://a', timeout: 0s",
            "timeout must be more than 0s",
        ),
        (
            "name: a, url: 'http://a', connectTimeout: 00ms",
            "connectTimeout must be more than 0s",
        ),
        (
            "name: a, url: 'http://a', maxObjectSize: 0MiB",
            "maxObjectSize must be more than 0",
        ),
        (
            "name: a, url: 'http://a', keyHeaders: ['Accept Language']",
            "keyHeaders: each must be a header name",
        ),
        (
            "name: a, url: 'http://a', forwardHeaders: ['x:y']",
            "forwardHeaders: each must be a header name",
        ),
        (
            "name: a, url: 'http://a', forwardHeaders: [HOST]",
            "forwardHeaders: connection, keep-alive",
        ),
        (
            "name: a, url: 'http://a', keyHeaders: [Range]",
            "are managed by the cache",
        ),
        (
            "name: a, url: 'http://a', forwardHeaders: [If-None-Match]",
            "are managed by the cache",
        ),
        (
            "name: a, url: 'http://a', forwardHeaders: [kache-authorization]",
            "are managed by the cache",
        ),
        (
            "name: a, url: 'http://a', pathPrefixes: [v1]",
            "pathPrefixes: each must start with '/'",
        ),
        (
            "name: a, url: 'http://a', pathPrefixes: [/a/../b]",
            "pathPrefixes",
        ),
        (
            "name: a, url: 'http://a', pathPrefixes: [//a]",
            "pathPrefixes",
        ),
        (
            "name: a, url: 'http://a', pathPrefixes: ['/a?b']",
            "pathPrefixes",
        ),
    ] {
        let message = refusal(&upstream(fields));
        assert!(message.contains(expected), "{fields}: {message}");
    }
    let twice = format!("{UPSTREAM}- name: prices\n  url: 'http://other'\n");
    let message = refusal(&twice);
    assert!(message.contains("each name may appear once"), "{message}");
}

/// What CEL does not check, the schema does: patterns and bounds the API server applies
/// before the rules (kube's client-side evaluator runs the rules only), and the bounds
/// that keep the rules' cost estimate within the API server's budget.
#[test]
fn the_upstreams_schema_bounds_every_list_and_string() {
    use kache_api::upstreams::{MAX_LIST_LEN, MAX_NAME_LEN, MAX_UPSTREAMS};
    let crd = serde_json::to_value(CacheCluster::crd()).unwrap();
    let list = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["upstreams"];
    assert_eq!(list["maxItems"], MAX_UPSTREAMS);
    assert!(list["x-kubernetes-validations"].is_array());
    let item = &list["items"];
    assert_eq!(
        item["required"],
        serde_json::json!(["name", "url"]),
        "everything else has a default"
    );
    let fields = &item["properties"];
    assert_eq!(fields["name"]["maxLength"], MAX_NAME_LEN);
    assert_eq!(fields["url"]["maxLength"], 2048);
    for list in ["keyHeaders", "forwardHeaders", "pathPrefixes"] {
        assert_eq!(fields[list]["maxItems"], MAX_LIST_LEN, "{list}");
        assert!(fields[list]["items"]["maxLength"].is_u64(), "{list}");
        assert!(
            fields[list]["x-kubernetes-validations"].is_array(),
            "{list}"
        );
    }
    for duration in [
        "connectTimeout",
        "timeout",
        "defaultTtl",
        "negativeTtl",
        "staleIfError",
        "staleWhileRevalidate",
    ] {
        assert_eq!(
            fields[duration]["pattern"], r"^[0-9]{1,9}(ms|s|m|h|d)$",
            "{duration}"
        );
    }
    let breaker = &fields["circuitBreaker"]["properties"];
    assert_eq!(breaker["openFor"]["pattern"], r"^[0-9]{1,9}(ms|s|m|h|d)$");
    assert_eq!(breaker["failureThreshold"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(fields["maxConcurrency"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(fields["maxConcurrency"]["maximum"].as_f64(), Some(10000.0));
    assert_eq!(
        fields["maxObjectSize"]["pattern"],
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["maxMemory"]["pattern"]
    );
    // The API server fills the node's defaults into a stored object.
    let defaults = kache_api::upstreams::Upstream::with_defaults("a", "http://a");
    assert_eq!(fields["timeout"]["default"], defaults.timeout);
    assert_eq!(
        fields["connectTimeout"]["default"],
        defaults.connect_timeout
    );
    assert_eq!(fields["defaultTtl"]["default"], defaults.default_ttl);
    assert_eq!(fields["negativeTtl"]["default"], defaults.negative_ttl);
    assert_eq!(fields["maxObjectSize"]["default"], defaults.max_object_size);
    assert_eq!(
        fields["maxConcurrency"]["default"],
        defaults.max_concurrency
    );
    assert_eq!(fields["staleIfError"]["default"], defaults.stale_if_error);
}

#[test]
fn an_upstream_converts_to_the_nodes_field_for_field() {
    use kache_api::upstreams as api;
    let spec: CacheClusterSpec = serde_yaml::from_str(
        "replicas: 3\nupstreams:\n- name: prices\n  url: https://p/v2\n  connectTimeout: 1s\n  \
         timeout: 3s\n  defaultTtl: 30s\n  negativeTtl: 5s\n  maxObjectSize: 2MiB\n  \
         keyHeaders: [Accept]\n  forwardHeaders: [Authorization]\n  pathPrefixes: [/v2/]\n  \
         maxConcurrency: 8\n  staleIfError: 1m\n  staleWhileRevalidate: 10s\n  \
         circuitBreaker: {failureThreshold: 2, openFor: 30s}",
    )
    .unwrap();
    assert_eq!(
        spec.upstreams[0].to_node(),
        api::Upstream {
            name: "prices".into(),
            url: "https://p/v2".into(),
            connect_timeout: "1s".into(),
            timeout: "3s".into(),
            default_ttl: "30s".into(),
            negative_ttl: "5s".into(),
            max_object_size: "2MiB".into(),
            key_headers: vec!["Accept".into()],
            forward_headers: vec!["Authorization".into()],
            path_prefixes: vec!["/v2/".into()],
            max_concurrency: 8,
            stale_if_error: "1m".into(),
            stale_while_revalidate: "10s".into(),
            circuit_breaker: api::CircuitBreaker {
                failure_threshold: 2,
                open_for: "30s".into(),
            },
        }
    );
    // Unset fields take the node's defaults, from the same functions.
    let minimal: CacheClusterSpec = serde_yaml::from_str(UPSTREAM).unwrap();
    assert_eq!(
        minimal.upstreams[0].to_node(),
        api::Upstream::with_defaults("prices", "https://prices.example.com/v2/")
    );
    let none: CacheClusterSpec = serde_yaml::from_str("replicas: 3").unwrap();
    assert!(none.upstreams.is_empty());
    assert!(
        !serde_json::to_string(&none).unwrap().contains("upstreams"),
        "an empty list is left out of what the operator writes"
    );
}

#[test]
fn more_upstreams_than_the_node_takes_are_refused_by_the_schema() {
    // The list's maxItems is the API server's; the operator checks it again.
    let spec = format!(
        "replicas: 3\nupstreams: [{}]",
        (0..33)
            .map(|i| format!("{{name: u{i}, url: 'http://a'}}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cc = cluster(&spec);
    let refused = crate::resources::config::node_settings(&cc).expect_err("33 upstreams");
    assert!(refused.to_string().contains("at most 32"), "{refused}");
}
