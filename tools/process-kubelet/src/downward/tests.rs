//! The downward API: `fieldRef` values, quantities, and `resourceFieldRef`s rounded up in
//! divisor units.

use super::*;
use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
use kube::api::ObjectMeta;

fn pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("1234abcd-0000-0000-0000-000000000000".into()),
            labels: Some(BTreeMap::from([
                ("app".into(), "web".into()),
                ("tier".into(), "a \"b\"".into()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("kache-local".into()),
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([
                        ("memory".into(), Quantity("64Mi".into())),
                        ("cpu".into(), Quantity("1500m".into())),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn facts(pod: &Pod) -> PodFacts<'_> {
    PodFacts {
        pod,
        pod_ip: Some("10.88.1.7".parse().unwrap()),
        host_ip: "10.88.0.1".parse().unwrap(),
        node_cpu: "32",
        node_memory: "64Gi",
    }
}

#[test]
fn field_refs() {
    let p = pod();
    let f = facts(&p);
    assert_eq!(f.field("metadata.name").unwrap(), "web-0");
    assert_eq!(f.field("metadata.namespace").unwrap(), "shop");
    assert_eq!(
        f.field("metadata.uid").unwrap(),
        "1234abcd-0000-0000-0000-000000000000"
    );
    assert_eq!(f.field("spec.nodeName").unwrap(), "kache-local");
    assert_eq!(f.field("spec.serviceAccountName").unwrap(), "default");
    assert_eq!(f.field("status.podIP").unwrap(), "10.88.1.7");
    assert_eq!(f.field("status.hostIP").unwrap(), "10.88.0.1");
    assert_eq!(f.field("metadata.labels['app']").unwrap(), "web");
    assert_eq!(f.field("metadata.labels['missing']").unwrap(), "");
    assert_eq!(
        f.field("metadata.labels").unwrap(),
        "app=\"web\"\ntier=\"a \\\"b\\\"\"\n"
    );
    assert!(matches!(
        f.field("spec.hostname"),
        Err(FieldError::UnsupportedField(_))
    ));
}

#[test]
fn quantities() {
    assert_eq!(parse_quantity("64Mi").unwrap(), 67_108_864.0);
    assert_eq!(parse_quantity("1500m").unwrap(), 1.5);
    assert_eq!(parse_quantity("2e3").unwrap(), 2000.0);
    assert_eq!(parse_quantity("1.5Gi").unwrap(), 1_610_612_736.0);
    assert_eq!(parse_quantity("3").unwrap(), 3.0);
    assert!(parse_quantity("12Q").is_err());
    assert!(parse_quantity("Mi").is_err());
}

#[test]
fn resource_field_refs_round_up_in_divisor_units() {
    let p = pod();
    let f = facts(&p);
    let c = &p.spec.as_ref().unwrap().containers[0];
    let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
        resource: r.into(),
        divisor: d.map(|d| Quantity(d.into())),
        container_name: None,
    };
    assert_eq!(
        f.resource(&sel("limits.memory", None), Some(c)).unwrap(),
        "67108864"
    );
    assert_eq!(
        f.resource(&sel("limits.memory", Some("1Mi")), Some(c))
            .unwrap(),
        "64"
    );
    assert_eq!(f.resource(&sel("limits.cpu", None), Some(c)).unwrap(), "2");
    assert_eq!(
        f.resource(&sel("limits.cpu", Some("1m")), Some(c)).unwrap(),
        "1500"
    );
    assert_eq!(
        f.resource(&sel("requests.cpu", None), Some(c)).unwrap(),
        "0"
    );
    // no limit: the node's capacity
    assert_eq!(
        f.resource(&sel("limits.ephemeral-storage", Some("1Gi")), Some(c))
            .unwrap(),
        "64"
    );
    assert!(f.resource(&sel("limits.gpu", None), Some(c)).is_err());
    assert!(f.resource(&sel("limits.cpu", None), None).is_err());
}
