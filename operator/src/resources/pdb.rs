//! The PodDisruptionBudget. It is derived from the replication factor: with W = quorum a
//! partition keeps a write quorum while (RF - 1) / 2 of its owners are down. It never
//! drops below one pod, because a budget that allows no disruption blocks node drains
//! forever; at RF = 1 a voluntarily evicted pod hands its partitions off on SIGTERM.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{Names, metadata};
use crate::crd::CacheCluster;

/// The PDB to apply, or None when the spec turns it off (the controller then deletes it).
pub fn pod_disruption_budget(cc: &CacheCluster) -> Option<PodDisruptionBudget> {
    if !cc.spec.pod_disruption_budget.enabled {
        return None;
    }
    let names = Names::of(cc);
    Some(PodDisruptionBudget {
        metadata: metadata(cc, names.cluster.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable(cc))),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

fn max_unavailable(cc: &CacheCluster) -> i32 {
    if let Some(explicit) = cc.spec.pod_disruption_budget.max_unavailable {
        return explicit.max(1);
    }
    let replicas = usize::try_from(cc.spec.replicas).unwrap_or(1);
    let copies = i32::try_from(cc.spec.replication_factor().copies(replicas)).unwrap_or(1);
    ((copies - 1) / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    fn budget(spec: &str) -> Option<IntOrString> {
        pod_disruption_budget(&cache_cluster(spec)).and_then(|p| p.spec.unwrap().max_unavailable)
    }

    #[test]
    fn a_count_written_as_a_string_is_that_count_not_all() {
        assert_eq!(
            budget("replicas: 9\nreplicationFactor: \"2\""),
            Some(IntOrString::Int(1))
        );
    }

    #[test]
    fn the_budget_follows_the_replication_factor_and_never_blocks_drains() {
        assert_eq!(budget("replicas: 1"), Some(IntOrString::Int(1)));
        assert_eq!(
            budget("replicas: 3\nreplicationFactor: 2"),
            Some(IntOrString::Int(1))
        );
        assert_eq!(
            budget("replicas: 5\nreplicationFactor: 5"),
            Some(IntOrString::Int(2))
        );
        assert_eq!(
            budget("replicas: 7\nreplicationFactor: all"),
            Some(IntOrString::Int(3))
        );
        assert_eq!(
            budget("replicas: 5\npodDisruptionBudget: {maxUnavailable: 2}"),
            Some(IntOrString::Int(2))
        );
        assert_eq!(
            budget("replicas: 5\npodDisruptionBudget: {enabled: false}"),
            None
        );
    }
}
