//! Where the cache pods run by default: spread over Kubernetes nodes and zones, so one
//! node or zone going down takes as few copies of a partition as the scheduler can
//! manage. Both rules are soft (preferred anti-affinity, `ScheduleAnyway` spread): a
//! cluster with fewer nodes or zones than pods, a single-node test cluster included,
//! still schedules every pod.
//!
//! A user's `spec.placement` replaces a default rather than merging into it:
//! `affinity.podAntiAffinity` replaces the anti-affinity (an empty `podAntiAffinity: {}`
//! turns it off), the other affinity fields are added beside it, and a non-empty
//! `topologySpreadConstraints` replaces the zone spread.

use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, TopologySpreadConstraint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::super::names::Names;
use crate::crd::Placement;

/// The node label the anti-affinity keeps copies apart on.
pub const HOSTNAME_KEY: &str = "kubernetes.io/hostname";
/// The node label the spread balances pods over.
pub const ZONE_KEY: &str = "topology.kubernetes.io/zone";

/// The pod's affinity: the user's fields, with the default anti-affinity where the user
/// set none.
pub fn affinity(placement: &Placement, names: &Names) -> Affinity {
    let user = placement.affinity.clone().unwrap_or_default();
    Affinity {
        pod_anti_affinity: user
            .pod_anti_affinity
            .or_else(|| Some(apart_on_hostnames(names))),
        ..user
    }
}

/// The pod's topology spread constraints: the user's, or one zone spread.
pub fn topology_spread_constraints(
    placement: &Placement,
    names: &Names,
) -> Vec<TopologySpreadConstraint> {
    if !placement.topology_spread_constraints.is_empty() {
        return placement.topology_spread_constraints.clone();
    }
    vec![TopologySpreadConstraint {
        label_selector: Some(selector(names)),
        max_skew: 1,
        topology_key: ZONE_KEY.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        ..TopologySpreadConstraint::default()
    }]
}

/// Prefer a node that runs no other pod of this cluster.
fn apart_on_hostnames(names: &Names) -> PodAntiAffinity {
    PodAntiAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
            weight: 100,
            pod_affinity_term: PodAffinityTerm {
                label_selector: Some(selector(names)),
                topology_key: HOSTNAME_KEY.to_owned(),
                ..PodAffinityTerm::default()
            },
        }]),
        ..PodAntiAffinity::default()
    }
}

/// This cluster's pods and no other's (the StatefulSet's selector).
fn selector(names: &Names) -> LabelSelector {
    LabelSelector {
        match_labels: Some(names.selector_labels()),
        ..LabelSelector::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    fn placed(spec: &str) -> (Affinity, Vec<TopologySpreadConstraint>) {
        let cc = cache_cluster(spec);
        let names = Names::of(&cc);
        (
            affinity(&cc.spec.placement, &names),
            topology_spread_constraints(&cc.spec.placement, &names),
        )
    }

    #[test]
    fn by_default_pods_prefer_other_nodes_and_spread_over_zones_softly() {
        let (affinity, spread) = placed("replicas: 3");
        let anti = affinity.pod_anti_affinity.unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none(),
            "soft: a one-node cluster still schedules every pod"
        );
        let terms = anti
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(terms.len(), 1);
        let term = &terms[0].pod_affinity_term;
        assert_eq!(term.topology_key, HOSTNAME_KEY);
        let own = Names::of(&cache_cluster("replicas: 3")).selector_labels();
        assert_eq!(
            term.label_selector.as_ref().unwrap().match_labels.as_ref(),
            Some(&own),
            "this cluster's pods only"
        );
        assert!(affinity.node_affinity.is_none());

        assert_eq!(spread.len(), 1);
        let zone = &spread[0];
        assert_eq!((zone.topology_key.as_str(), zone.max_skew), (ZONE_KEY, 1));
        assert_eq!(zone.when_unsatisfiable, "ScheduleAnyway", "soft");
        assert_eq!(
            zone.label_selector.as_ref().unwrap().match_labels.as_ref(),
            Some(&own)
        );
    }

    #[test]
    fn the_users_placement_replaces_the_defaults() {
        // Node affinity alone keeps the default anti-affinity beside it.
        let (affinity, _) = placed(
            "replicas: 3\nplacement: {affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: In, values: [ssd]}]}]}}}}",
        );
        assert!(affinity.node_affinity.is_some());
        assert!(affinity.pod_anti_affinity.is_some());

        // The user's anti-affinity replaces the default; an empty one turns it off.
        let (affinity, _) = placed(
            "replicas: 3\nplacement: {affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/instance: demo}}}]}}}",
        );
        let anti = affinity.pod_anti_affinity.unwrap();
        assert!(
            anti.preferred_during_scheduling_ignored_during_execution
                .is_none()
        );
        assert_eq!(
            anti.required_during_scheduling_ignored_during_execution
                .unwrap()
                .len(),
            1
        );
        let (affinity, _) = placed("replicas: 3\nplacement: {affinity: {podAntiAffinity: {}}}");
        assert_eq!(affinity.pod_anti_affinity, Some(PodAntiAffinity::default()));

        let (_, spread) = placed(
            "replicas: 3\nplacement: {topologySpreadConstraints: [{maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}]}",
        );
        assert_eq!(spread.len(), 1);
        assert_eq!(spread[0].topology_key, HOSTNAME_KEY);
        assert_eq!(spread[0].max_skew, 2);
    }
}
