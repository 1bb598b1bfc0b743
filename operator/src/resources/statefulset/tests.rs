//! The StatefulSet builder: the operator's pod, and each user customisation landing in it
//! without loosening what the user did not touch.

use super::*;
use crate::resources::names::tests::cache_cluster;
use crate::resources::security::{self, Security};

/// The StatefulSet of a cluster without TLS or auth: what every test below but the
/// security ones looks at, unchanged by them.
fn build(cc: &CacheCluster, replicas: u32, image: &str, hash: &str) -> StatefulSet {
    let open = Security {
        cluster_id: None,
        peer: None,
        client: None,
        auth: None,
    };
    statefulset(cc, replicas, image, hash, &open)
}

#[test]
fn tls_and_auth_are_mounted_read_only_and_named_to_the_node() {
    let cc = cache_cluster(
        "replicas: 3\ntls: {client: {enabled: true}}\nauth: {tokens: [{secretName: app, role: read}]}\npod: {volumes: [{name: scratch, emptyDir: {}}]}\ncacheContainer: {volumeMounts: [{name: scratch, mountPath: /scratch}]}",
    );
    let sts = statefulset(&cc, 3, "img", "h", &security::resolve(&cc, None));
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "scratch",
            "kache-peer-tls",
            "kache-client-tls",
            "kache-auth-0",
            "kache-auth-1"
        ],
        "the user's volume kept, the operator's after it"
    );
    let container = &pod.containers[0];
    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "/scratch",
            "/etc/kache/peer-tls",
            "/etc/kache/client-tls",
            "/etc/kache/auth/admin/demo-auth",
            "/etc/kache/auth/read/app"
        ]
    );
    let variables: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        variables,
        [
            env::NODE_ID,
            env::NAMESPACE,
            env::PEER_TLS_DIR,
            env::CLUSTER_ID,
            env::CLIENT_TLS_DIR,
            env::AUTH_DIR
        ]
    );
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            get.scheme.as_deref(),
            Some("HTTPS"),
            "client TLS: probes over TLS"
        );
    }
    let plain = build(&cc, 3, "img", "h");
    let container = &plain.spec.unwrap().template.spec.unwrap().containers[0];
    let get = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(get.scheme.as_deref(), Some("HTTP"));
}

#[test]
fn the_statefulset_runs_unprivileged_nodes_that_find_their_peers() {
    let cc = cache_cluster(
        "replicas: 3\nplacement: {nodeSelector: {disk: ssd}}\nannotations: {owner: cart}",
    );
    let sts = build(&cc, 5, "kache/node:0.1.0", "abc");
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(
        spec.replicas,
        Some(5),
        "the size comes from the state machine"
    );
    assert_eq!(spec.service_name.as_deref(), Some("demo-peers"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("demo-node"));
    assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
    // The placement defaults are in the pod (placement.rs tests what they are).
    let anti = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref();
    assert!(anti.is_some_and(|a| {
        a.preferred_during_scheduling_ignored_during_execution
            .is_some()
    }));
    assert_eq!(
        pod.topology_spread_constraints.as_ref().unwrap()[0].topology_key,
        placement::ZONE_KEY
    );
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("kache/node:0.1.0"));
    let variables: Vec<_> = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(variables, [env::NODE_ID, env::NAMESPACE]);
    assert_eq!(
        container.env_from.as_ref().unwrap()[0]
            .config_map_ref
            .as_ref()
            .unwrap()
            .name,
        "demo-config"
    );
    let probe = container.readiness_probe.as_ref().unwrap();
    assert_eq!(
        probe.http_get.as_ref().unwrap().path.as_deref(),
        Some("/readyz")
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let annotations = template_annotations(&sts);
    assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "abc");
    assert_eq!(annotations["owner"], "cart");
}

#[test]
fn the_spec_image_wins_over_the_default() {
    let cc = cache_cluster("replicas: 1\nimage: registry.local/kache:dev\nimagePullPolicy: Never");
    let sts = build(&cc, 1, "kache/node:0.1.0", "h");
    let container = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("registry.local/kache:dev"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
}

fn pod_of(spec: &str) -> PodSpec {
    let sts = build(&cache_cluster(spec), 3, "kache/node:0.1.0", "h");
    sts.spec
        .and_then(|s| s.template.spec)
        .expect("a pod template")
}

fn names_of<T>(items: Option<&Vec<T>>, name: impl Fn(&T) -> &str) -> Vec<String> {
    items
        .into_iter()
        .flatten()
        .map(|item| name(item).to_owned())
        .collect()
}

#[test]
fn unset_customisations_keep_the_secure_defaults() {
    let pod = pod_of("replicas: 3");
    let security = pod.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(NODE_UID));
    assert_eq!(security.run_as_group, Some(NODE_UID));
    assert_eq!(
        security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let container = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(container.allow_privilege_escalation, Some(false));
    assert_eq!(container.read_only_root_filesystem, Some(true));
    assert_eq!(
        container.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.image_pull_secrets, None);
    assert_eq!(pod.volumes, None);
    assert_eq!(pod.containers[0].volume_mounts, None);
}

#[test]
fn image_pull_secrets_land_in_the_pod() {
    let pod = pod_of("replicas: 3\npod: {imagePullSecrets: [{name: regcred}, {name: mirror}]}");
    assert_eq!(
        names_of(pod.image_pull_secrets.as_ref(), |s| &s.name),
        ["regcred", "mirror"]
    );
}

#[test]
fn a_service_account_replaces_the_operators() {
    let pod = pod_of("replicas: 3\npod: {serviceAccountName: cache-irsa}");
    assert_eq!(pod.service_account_name.as_deref(), Some("cache-irsa"));
}

#[test]
fn env_and_env_from_come_first_so_the_operators_entries_win() {
    let pod = pod_of(
        "replicas: 3\ncacheContainer:\n  env: [{name: RUST_LOG, value: debug}]\n  \
         envFrom: [{secretRef: {name: tokens}}, {configMapRef: {name: extra}, prefix: X_}]",
    );
    let container = &pod.containers[0];
    assert_eq!(
        names_of(container.env.as_ref(), |e| &e.name),
        ["RUST_LOG", env::NODE_ID, env::NAMESPACE]
    );
    assert_eq!(
        container.env.as_ref().unwrap()[0].value.as_deref(),
        Some("debug")
    );
    let sources = container.env_from.as_ref().unwrap();
    assert_eq!(sources.len(), 3);
    assert_eq!(sources[0].secret_ref.as_ref().unwrap().name, "tokens");
    assert_eq!(sources[1].prefix.as_deref(), Some("X_"));
    assert_eq!(
        sources[2].config_map_ref.as_ref().unwrap().name,
        "demo-config",
        "the operator's settings come last, so they win"
    );
}

#[test]
fn security_context_overrides_merge_field_by_field() {
    let pod = pod_of(
        "replicas: 3\npod: {securityContext: {fsGroup: 2000, runAsUser: 1001}}\n\
         cacheContainer: {securityContext: {readOnlyRootFilesystem: false}}",
    );
    let security = pod.security_context.as_ref().unwrap();
    assert_eq!(security.fs_group, Some(2000));
    assert_eq!(security.run_as_user, Some(1001), "the user's wins");
    assert_eq!(
        security.run_as_non_root,
        Some(true),
        "unset keeps the default"
    );
    assert_eq!(security.run_as_group, Some(NODE_UID));
    let container = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(container.read_only_root_filesystem, Some(false));
    assert_eq!(container.allow_privilege_escalation, Some(false));
    assert!(container.capabilities.is_some());
}

#[test]
fn extra_volumes_and_mounts_land_in_the_pod_and_the_cache_container() {
    let pod = pod_of(
        "replicas: 3\npod: {volumes: [{name: scratch, emptyDir: {}}, {name: ca, secret: {secretName: ca}}]}\n\
         cacheContainer: {volumeMounts: [{name: scratch, mountPath: /tmp}, {name: ca, mountPath: /etc/ca, readOnly: true}]}",
    );
    assert_eq!(
        names_of(pod.volumes.as_ref(), |v| &v.name),
        ["scratch", "ca"]
    );
    let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
    assert_eq!(mounts[0].mount_path, "/tmp");
    assert_eq!(mounts[1].read_only, Some(true));
}

#[test]
fn sidecars_run_after_the_cache_container() {
    let pod = pod_of(
        "replicas: 3\npod: {sidecars: [{name: shipper, image: fluent/fluent-bit:3.0, args: [--quiet]}]}",
    );
    assert_eq!(
        names_of(Some(&pod.containers), |c| &c.name),
        ["kache", "shipper"]
    );
    assert_eq!(
        pod.containers[1].image.as_deref(),
        Some("fluent/fluent-bit:3.0")
    );
}

#[test]
fn the_termination_grace_period_follows_the_spec() {
    for (pod, termination) in [
        ("{terminationGracePeriodSeconds: 600}", 600),
        ("{shutdownGraceSeconds: 300}", 310),
        (
            "{shutdownGraceSeconds: 50, terminationGracePeriodSeconds: 55}",
            55,
        ),
    ] {
        let spec = format!("replicas: 3\npod: {pod}");
        assert_eq!(
            pod_of(&spec).termination_grace_period_seconds,
            Some(termination),
            "{pod}"
        );
    }
}

#[test]
fn without_persistence_there_is_no_claim_and_no_startup_probe() {
    let sts = build(&cache_cluster("replicas: 3"), 3, "kache/node:0.1.0", "h");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.volume_claim_templates, None);
    assert_eq!(spec.persistent_volume_claim_retention_policy, None);
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.containers[0].startup_probe, None);
    let security = pod.security_context.unwrap();
    assert_eq!(
        (security.fs_group, security.fs_group_change_policy),
        (None, None)
    );
}

const PERSISTENT: &str = "replicas: 3\npersistence: {enabled: true, storageClassName: fast-ssd, \
                          size: 10Gi, fsync: always, whenDeleted: Delete}";

#[test]
fn each_member_gets_a_claim_mounted_at_its_data_dir() {
    let sts = build(&cache_cluster(PERSISTENT), 3, "kache/node:0.1.0", "h");
    let spec = sts.spec.unwrap();
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        claim.metadata.labels.as_ref(),
        Some(&spec.selector.match_labels.clone().unwrap()),
        "only the selector labels, which never change"
    );
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        claim_spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_owned()][..])
    );
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "10Gi"
    );
    let mounts = spec.template.spec.unwrap().containers[0]
        .volume_mounts
        .clone()
        .unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
        ("data", "/var/lib/kache")
    );
    assert!(
        crate::crd::persistence::DATA_DIR.starts_with("/var/lib/kache/"),
        "the node's data dir is on the claim"
    );
}

#[test]
fn a_claim_without_a_class_gets_the_default_class_and_size() {
    let sts = build(
        &cache_cluster("replicas: 3\npersistence: {enabled: true}"),
        3,
        "kache/node:0.1.0",
        "h",
    );
    let claim = &sts.spec.unwrap().volume_claim_templates.unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name, None);
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
}

#[test]
fn a_scaled_away_member_loses_its_claim_and_deletion_follows_the_spec() {
    for (when_deleted, expected) in [("", "Retain"), (", whenDeleted: Delete", "Delete")] {
        let spec = format!("replicas: 3\npersistence: {{enabled: true{when_deleted}}}");
        let sts = build(&cache_cluster(&spec), 3, "kache/node:0.1.0", "h");
        let policy = sts
            .spec
            .unwrap()
            .persistent_volume_claim_retention_policy
            .unwrap();
        assert_eq!(policy.when_scaled.as_deref(), Some("Delete"), "{spec}");
        assert_eq!(policy.when_deleted.as_deref(), Some(expected), "{spec}");
    }
}

#[test]
fn the_claim_template_ignores_what_may_change() {
    // Kubernetes refuses any change to the claim templates, and the user's labels and
    // annotations may change on a live cluster: the template must not follow them.
    let template = |extra: &str| {
        let spec = format!("{PERSISTENT}\n{extra}");
        build(&cache_cluster(&spec), 3, "kache/node:0.1.0", "h")
            .spec
            .unwrap()
            .volume_claim_templates
    };
    assert_eq!(
        template(""),
        template("labels: {team: cart}\nannotations: {owner: cart}\nreplicationFactor: 2")
    );
}

#[test]
fn a_loading_node_is_not_killed_by_its_liveness_probe() {
    let pod = pod_of(PERSISTENT);
    let container = &pod.containers[0];
    let startup = container.startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.http_get.as_ref().unwrap().path.as_deref(),
        Some("/healthz")
    );
    let patience = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
    assert!(patience >= 600, "{patience} s to load");
    assert!(container.liveness_probe.is_some());
}

#[test]
fn the_volume_belongs_to_the_nodes_group_unless_the_user_says_otherwise() {
    let security = pod_of(PERSISTENT).security_context.unwrap();
    assert_eq!(security.fs_group, Some(NODE_UID));
    assert_eq!(
        security.fs_group_change_policy.as_deref(),
        Some("OnRootMismatch")
    );
    let security = pod_of(&format!(
        "{PERSISTENT}\npod: {{securityContext: {{fsGroup: 2000, fsGroupChangePolicy: Always}}}}"
    ))
    .security_context
    .unwrap();
    assert_eq!(security.fs_group, Some(2000));
    assert_eq!(security.fs_group_change_policy.as_deref(), Some("Always"));
}

#[test]
fn user_mounts_come_before_the_data_volume() {
    let pod = pod_of(&format!(
        "{PERSISTENT}\npod: {{volumes: [{{name: scratch, emptyDir: {{}}}}]}}\n\
         cacheContainer: {{volumeMounts: [{{name: scratch, mountPath: /scratch}}]}}"
    ));
    assert_eq!(
        names_of(pod.containers[0].volume_mounts.as_ref(), |m| &m.name),
        ["scratch", "data"]
    );
    assert_eq!(
        names_of(pod.volumes.as_ref(), |v| &v.name),
        ["scratch"],
        "the StatefulSet controller adds the claim's volume"
    );
}

#[test]
fn upstreams_are_mounted_where_the_node_is_told_to_read_them() {
    let cc = cache_cluster("replicas: 3\nupstreams: [{name: api, url: 'http://api:8080'}]");
    let pod = build(&cc, 3, "img", "h")
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "kache-upstreams")
        .expect("the upstreams volume");
    let source = volume.config_map.as_ref().expect("a ConfigMap volume");
    assert_eq!(source.name, "demo-upstreams");
    assert_eq!(source.optional, Some(false));
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "kache-upstreams")
        .expect("the upstreams mount");
    assert_eq!(mount.read_only, Some(true));
    let settings = crate::resources::config::node_settings(&cc).unwrap();
    let file = std::path::Path::new(&settings[env::UPSTREAMS_FILE]);
    assert_eq!(
        file.parent(),
        Some(std::path::Path::new(&mount.mount_path)),
        "KACHE_UPSTREAMS_FILE is in the mounted directory"
    );
    assert_eq!(
        file.file_name().and_then(|f| f.to_str()),
        Some(crate::resources::config::UPSTREAMS_KEY),
        "and named as the ConfigMap's key"
    );

    let plain = build(&cache_cluster("replicas: 3"), 3, "img", "h");
    let pod = plain.spec.unwrap().template.spec.unwrap();
    assert!(pod.volumes.is_none(), "no volume without upstreams");
    assert!(pod.containers[0].volume_mounts.is_none());
}
