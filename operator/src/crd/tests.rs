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
        ["Replicas", "Ready", "Phase", "Rebalance", "Epoch", "Age"]
    );
}

#[test]
fn good_specs_pass_the_rules() {
    for spec in [
        "replicas: 3",
        "replicas: 3\nreplicationFactor: 3",
        "replicas: 1\nreplicationFactor: all",
        "replicas: 5\nreplicationFactor: 2\npersistence: {enabled: false}",
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
    let message = refusal("replicas: 3\npersistence: {enabled: true}");
    assert!(
        message.contains("persistence is not available"),
        "{message}"
    );
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
