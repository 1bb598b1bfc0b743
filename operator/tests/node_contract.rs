//! The contract between the operator and the nodes, checked against the real node code:
//! a member list the operator publishes is one the node accepts, the environment the
//! operator gives a pod is one the node's flag parser reads as meant, and the report a
//! real node serves on `GET /v1/cluster` is one the operator reads.
#![expect(
    clippy::expect_used,
    reason = "the helpers build fixtures; a fixture that cannot be built is a failed test"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use kache_api::env;
use kache_node::cluster::Consistency;
use kache_node::cluster::discovery::DiscoveryConfig;
use kache_node::cluster::membership::ListRules;
use kache_node::config::{Cli, LogFormat, MembershipConfig, NodeConfig};
use kache_node::store::EvictionPolicy;
use kache_node::store::persist::{FsyncPolicy, PersistConfig};
use kache_operator::crd::{CacheCluster, CacheClusterSpec};
use kache_operator::members::{MemberList, ReplicationFactor, ids};
use kache_operator::report;
use kache_operator::resources::config::{
    UPSTREAMS_KEY, node_config_map, node_settings, settings_hash, upstreams_config_map,
    upstreams_file,
};
use kache_operator::resources::security;
use kache_operator::resources::statefulset::statefulset;

#[test]
fn the_node_accepts_every_list_the_operator_publishes() {
    let rules = ListRules {
        partitions: 271,
        addresses_required: false,
    };
    for (rf, departing) in [
        (ReplicationFactor::Count(2), vec![]),
        (ReplicationFactor::ALL, vec!["demo-3".to_owned()]),
    ] {
        let list = MemberList {
            epoch: 9,
            partitions: 271,
            replication_factor: rf,
            members: ids(["demo-0", "demo-1", "demo-2"].map(str::to_owned)),
            departing: ids(departing.clone()),
        };
        let parsed = MemberList::parse(&list.to_yaml(), &rules)
            .unwrap_or_else(|e| panic!("the node refused:\n{}\n{e}", list.to_yaml()));
        assert_eq!(parsed, list);
    }
}

fn cache_cluster(spec: &str) -> CacheCluster {
    let spec: CacheClusterSpec = serde_yaml::from_str(spec).expect("spec");
    let mut cc = CacheCluster::new("demo", spec);
    cc.metadata.namespace = Some("shop".to_owned());
    cc.metadata.uid = Some("0b1e4c52-5a3c-4f4e-9a57-6c3c1b2e7d10".to_owned());
    cc
}

/// The environment of pod `demo-<ordinal>`, built the way the kubelet builds it from the
/// operator's objects: the ConfigMap behind `envFrom`, then `env` (the downward API's
/// pod name and namespace), a later source winning over an earlier one.
fn pod_environment(cc: &CacheCluster, ordinal: u32) -> BTreeMap<String, String> {
    let settings = node_settings(cc).expect("valid settings");
    let config = node_config_map(cc, &settings);
    let sts = statefulset(
        cc,
        3,
        "kache/node:test",
        &settings_hash(&settings, upstreams_file(cc).expect("valid").as_deref()),
        &security::resolve(cc, None),
    );
    let pod = sts
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template");
    let container = &pod.containers[0];
    let mut environment = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        let referenced = source.config_map_ref.as_ref().expect("a ConfigMap source");
        assert_eq!(Some(&referenced.name), config.metadata.name.as_ref());
        environment.extend(config.data.clone().expect("data"));
    }
    for variable in container.env.iter().flatten() {
        let value = match (&variable.value, &variable.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => {
                let field = from.field_ref.as_ref().expect("only field references");
                match field.field_path.as_str() {
                    "metadata.name" => format!("demo-{ordinal}"),
                    "metadata.namespace" => "shop".to_owned(),
                    other => panic!("{} reads an unexpected field {other}", variable.name),
                }
            }
            other => panic!("{} has no single source: {other:?}", variable.name),
        };
        environment.insert(variable.name.clone(), value);
    }
    environment
}

/// What the node makes of `environment`, and the address it serves clients on (which
/// `main` takes from the flags, not from the config).
fn node_config(environment: &BTreeMap<String, String>) -> (SocketAddr, NodeConfig) {
    let refused = |e: &dyn std::fmt::Display| -> ! {
        panic!("the node refused its environment {environment:#?}:\n{e}")
    };
    let cli = Cli::try_parse_from_env(environment).unwrap_or_else(|e| refused(&e));
    let http_addr = cli.http_addr;
    let config = cli.into_config().unwrap_or_else(|e| refused(&e));
    (http_addr, config)
}

const SPECS: [&str; 8] = [
    "replicas: 3",
    "replicas: 5\nreplicationFactor: all\npartitions: 64\nmaxMemory: 256MiB\neviction: lfu\n\
     defaultTtl: 5m\nreadConsistency: one\nwriteConsistency: all\nmaxClockOffset: 250ms\n\
     service: {httpPort: 8080, grpcPort: 9090}",
    "replicas: 2\nresources: {limits: {memory: 1.5Gi}}\neviction: none",
    "replicas: 3\npod: {shutdownGraceSeconds: 300}",
    "replicas: 3\npersistence: {enabled: true, fsync: never, snapshotInterval: 90s}",
    "replicas: 3\npersistence: {enabled: true}",
    "replicas: 3\ntls: {client: {enabled: true}}\nauth: {tokens: [{secretName: app, role: read}]}",
    "replicas: 3\nlogging: {format: json, level: 'warn,kache_node=debug'}",
];

#[test]
fn every_variable_the_operator_sets_is_one_the_node_reads() {
    let node_reads = Cli::env_names();
    for spec in SPECS {
        let environment = pod_environment(&cache_cluster(spec), 0);
        for name in environment.keys() {
            assert!(
                // RUST_LOG is read by the node's log filter, not by a flag.
                node_reads.contains(name) || name == env::LOG_FILTER,
                "the operator sets {name}, which the node does not read (spec: {spec})"
            );
        }
        for name in [env::NODE_ID, env::NAMESPACE, env::MEMBERS_CONFIGMAP] {
            assert!(environment.contains_key(name), "{name} is missing: {spec}");
        }
    }
}

#[test]
fn the_node_logs_in_the_format_spec_logging_asks_for() {
    for (spec, format) in [(SPECS[0], LogFormat::Text), (SPECS[7], LogFormat::Json)] {
        let environment = pod_environment(&cache_cluster(spec), 0);
        let cli = Cli::try_parse_from_env(&environment).expect("the node reads it");
        assert_eq!(cli.log_format, format, "{spec}");
    }
}

#[test]
fn the_node_reads_the_operators_environment_as_meant() {
    for spec in SPECS {
        let (_, config) = node_config(&pod_environment(&cache_cluster(spec), 2));
        assert_eq!(config.store.node_id, "demo-2", "{spec}");
        assert_eq!(
            config.membership,
            MembershipConfig::ConfigMap {
                namespace: "shop".to_owned(),
                name: "demo-members".to_owned()
            }
        );
        assert!(
            !config.list_rules().addresses_required,
            "the operator publishes ids only, so discovery must find the addresses"
        );
        let (shutdown_grace, _) = cache_cluster(spec).spec.pod.grace_seconds();
        assert_eq!(
            config.shutdown_grace,
            Duration::from_secs(shutdown_grace.unsigned_abs())
        );
    }

    let (http_addr, full) = node_config(&pod_environment(&cache_cluster(SPECS[1]), 4));
    assert_eq!(http_addr.port(), 8080);
    assert_eq!(full.grpc_addr.port(), 9090);
    assert_eq!(
        full.discovery,
        DiscoveryConfig::EndpointSlices {
            namespace: "shop".to_owned(),
            service: "demo-peers".to_owned(),
            peer_port: 9090
        }
    );
    assert_eq!(full.store.partitions, 64);
    assert_eq!(full.store.max_memory, 256 << 20);
    assert_eq!(full.store.eviction, EvictionPolicy::Lfu);
    assert_eq!(full.default_ttl, Some(Duration::from_secs(300)));
    assert_eq!(
        full.store.limits.max_clock_offset,
        Duration::from_millis(250)
    );
    assert_eq!(full.consistency.read, Consistency::One);
    assert_eq!(full.consistency.write, Consistency::All);

    // A new cluster runs with peer mTLS and tokens; client TLS when asked for.
    let (_, secured) = node_config(&pod_environment(&cache_cluster(SPECS[6]), 1));
    let peer_dir = secured
        .tls
        .peer_dir
        .as_deref()
        .map(|d| d.to_str().unwrap_or(""));
    assert_eq!(peer_dir, Some("/etc/kache/peer-tls"));
    let client_dir = secured
        .tls
        .client_dir
        .as_deref()
        .map(|d| d.to_str().unwrap_or(""));
    assert_eq!(client_dir, Some("/etc/kache/client-tls"));
    assert!(
        !secured.tls.cluster_id.is_empty(),
        "peer TLS needs the cluster id"
    );
    let auth_dir = secured
        .auth_dir
        .as_deref()
        .map(|d| d.to_str().unwrap_or(""));
    assert_eq!(auth_dir, Some("/etc/kache/auth"));
    let (_, plain_clients) = node_config(&pod_environment(&cache_cluster(SPECS[0]), 0));
    assert_eq!(
        plain_clients.tls.client_dir, None,
        "client TLS is off by default"
    );
    assert!(
        plain_clients.tls.peer_dir.is_some(),
        "peer TLS is on by default"
    );

    // Three quarters of a fractional limit, which the operator once left to the node's
    // 1 GiB default.
    let (_, limited) = node_config(&pod_environment(&cache_cluster(SPECS[2]), 0));
    assert_eq!(limited.store.max_memory, 1_610_612_736 / 4 * 3);
    assert_eq!(limited.store.eviction, EvictionPolicy::None);
    let (_, defaults) = node_config(&pod_environment(&cache_cluster(SPECS[0]), 0));
    assert_eq!(
        defaults.store.max_memory,
        1 << 30,
        "neither set: the node's own"
    );
    assert_eq!(
        defaults.store.limits.max_clock_offset,
        Duration::from_millis(500)
    );
    assert_eq!(defaults.persistence, None, "nothing on disk unless asked");
}

#[test]
fn a_persistent_node_keeps_its_data_on_the_claim_as_its_cluster_and_member() {
    let persistent = |spec: &str, ordinal: u32| -> PersistConfig {
        let environment = pod_environment(&cache_cluster(spec), ordinal);
        node_config(&environment)
            .1
            .persistence
            .unwrap_or_else(|| panic!("no persistence from {environment:#?}"))
    };
    let config = persistent(SPECS[4], 1);
    assert_eq!(
        config,
        PersistConfig {
            dir: "/var/lib/kache/data".into(),
            fsync: FsyncPolicy::No,
            snapshot_interval: Duration::from_secs(90),
            cluster_id: "0b1e4c52-5a3c-4f4e-9a57-6c3c1b2e7d10".to_owned(),
            member: "demo-1".to_owned(),
        }
    );
    let cc = cache_cluster(SPECS[4]);
    let sts = statefulset(
        &cc,
        3,
        "kache/node:test",
        "h",
        &security::resolve(&cc, None),
    );
    let mounts = sts
        .spec
        .and_then(|s| s.template.spec)
        .map(|pod| pod.containers[0].volume_mounts.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| config.dir.starts_with(&m.mount_path) && m.name == "data"),
        "the data dir is on the claim: {mounts:?}"
    );
    let defaults = persistent(SPECS[5], 0);
    assert_eq!(defaults.fsync, FsyncPolicy::EverySec);
    assert_eq!(defaults.snapshot_interval, Duration::from_secs(300));
}

#[tokio::test]
async fn the_operator_reads_a_real_nodes_report() {
    let config = Cli::try_parse_from([
        "kache-node",
        "--node-id",
        "demo-0",
        "--members",
        "demo-0=127.0.0.1:1",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = http.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(kache_node::run(
        kache_node::Listeners {
            http,
            grpc,
            resp: None,
        },
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let mut last = None;
    // Bounded: a one-member cluster is ready at once; allow it five seconds.
    for _ in 0..50 {
        match report::fetch(&client, "127.0.0.1", i32::from(port)).await {
            Ok(report) if report.node.ready => {
                last = Some(report);
                break;
            }
            other => last = other.ok(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = last.expect("the node answered GET /v1/cluster");
    assert_eq!(report.node.id, "demo-0");
    assert_eq!(report.epoch, 1);
    assert_eq!(
        report.ownership.owned, 271,
        "one member owns every partition"
    );
    assert!(report.joined(1), "{report:?}");
    let _ = stop.send(());
    let _ = node.await;
}

/// The upstreams a spec lists reach the node as the same upstreams: the operator's
/// `upstreams.yaml` (its ConfigMap's one key), at the path `KACHE_UPSTREAMS_FILE` names
/// inside the mounted directory, read by the node's own `--upstreams-file`.
#[test]
fn the_node_reads_through_the_upstreams_the_spec_lists() {
    let spec = "replicas: 3\nupstreams:\n- name: prices\n  url: https://prices.example.com/v2/\n  \
                keyHeaders: [Accept-Language]\n  forwardHeaders: [Authorization]\n  \
                pathPrefixes: [/v2/]\n  maxObjectSize: 256KiB\n  staleIfError: 5m\n  \
                circuitBreaker: {failureThreshold: 2, openFor: 1m}\n\
                - name: users\n  url: http://users.shop.svc:8080";
    let cc = cache_cluster(spec);
    let text = upstreams_file(&cc).expect("valid").expect("a file");
    let config_map = upstreams_config_map(&cc, &text);
    let mut environment = pod_environment(&cc, 0);
    let in_pod = environment[env::UPSTREAMS_FILE].clone();

    // The pod's path is the mount of that ConfigMap plus its key.
    let sts = statefulset(
        &cc,
        3,
        "kache/node:test",
        "h",
        &security::resolve(&cc, None),
    );
    let pod = sts
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.as_ref().map(|c| &c.name) == config_map.metadata.name.as_ref())
        .expect("the ConfigMap is a volume");
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("and mounted");
    assert_eq!(in_pod, format!("{}/{UPSTREAMS_KEY}", mount.mount_path));

    // The kubelet writes each key as a file; here, a temporary one.
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join(UPSTREAMS_KEY);
    let data = config_map.data.expect("data");
    std::fs::write(&file, &data[UPSTREAMS_KEY]).expect("written");
    environment.insert(
        env::UPSTREAMS_FILE.to_owned(),
        file.to_str().expect("utf-8").to_owned(),
    );
    let (_, config) = node_config(&environment);
    let expected = kache_api::upstreams::validate_all(
        &cc.spec
            .upstreams
            .iter()
            .map(|u| u.to_node())
            .collect::<Vec<_>>(),
    )
    .expect("valid");
    assert_eq!(config.upstreams, expected);
    assert_eq!(config.upstreams[0].max_object_bytes, 256 << 10);
    assert_eq!(config.upstreams[0].stale_if_error, Duration::from_secs(300));
    assert_eq!(config.upstreams[0].failure_threshold, 2);
    assert_eq!(config.upstreams[1].url, "http://users.shop.svc:8080");

    // None listed: the node is told of no file and reads through nothing.
    let plain = pod_environment(&cache_cluster("replicas: 3"), 0);
    assert!(!plain.contains_key(env::UPSTREAMS_FILE));
    assert!(node_config(&plain).1.upstreams.is_empty());
}
