//! The Kubernetes source: the operator writes the member list into one ConfigMap (key
//! `members.yaml`, the same YAML as the member file) and every node watches it.
//!
//! The watch is kube-rs's `watcher` on that one object (field selector
//! `metadata.name=NAME`), so the node needs only get/list/watch on it. The watcher
//! re-lists after a broken watch and backs off on API errors; a list is published only
//! when it is valid and has a higher epoch, so a missed or repeated event, or a deleted
//! ConfigMap, never rolls membership back. Until the first list arrives the node holds
//! [`MemberList::none`] and stays not ready.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::{ListRules, MemberList, MembershipError, Publisher};
pub use kache_api::members::MEMBERS_KEY;

/// The list a ConfigMap holds, validated like a member file.
pub fn list_from_configmap(
    configmap: &ConfigMap,
    rules: &ListRules,
) -> Result<MemberList, MembershipError> {
    let yaml = configmap
        .data
        .as_ref()
        .and_then(|data| data.get(MEMBERS_KEY))
        .ok_or_else(|| MembershipError::MissingKey {
            configmap: configmap.metadata.name.clone().unwrap_or_default(),
            key: MEMBERS_KEY,
        })?;
    MemberList::parse(yaml, rules)
}

/// Watches ConfigMap `name` in `namespace` and publishes every valid list with a higher
/// epoch. The receiver starts at [`MemberList::none`] (epoch 0).
pub fn watch_configmap(
    client: kube::Client,
    namespace: &str,
    name: &str,
    rules: ListRules,
) -> (watch::Receiver<MemberList>, tokio::task::JoinHandle<()>) {
    let source = format!("ConfigMap {namespace}/{name}");
    let (publisher, rx) = Publisher::new(MemberList::none(rules.partitions), source.clone());
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut seen = false;
        while let Some(event) = events.next().await {
            let keep_going = match event {
                Ok(watcher::Event::Apply(configmap) | watcher::Event::InitApply(configmap)) => {
                    seen = true;
                    publisher.offer(list_from_configmap(&configmap, &rules))
                }
                Ok(watcher::Event::Delete(_)) => {
                    tracing::warn!(%source, epoch = publisher.epoch(), "member ConfigMap deleted; keeping the list in force");
                    true
                }
                Ok(watcher::Event::Init) => true,
                Ok(watcher::Event::InitDone) => {
                    if !seen {
                        tracing::warn!(%source, "member ConfigMap not found; waiting for it");
                    }
                    true
                }
                Err(err) => {
                    // The backoff delays the next attempt; the list in force stays.
                    tracing::warn!(%source, error = %err, "watching the member ConfigMap failed; retrying");
                    true
                }
            };
            if !keep_going {
                return;
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::tests::{DISCOVERED, STATIC};
    use super::*;

    const OPERATOR_LIST: &str = "epoch: 4
partitions: 271
replicationFactor: 2      # or \"all\"
members: [{id: demo-0}, {id: demo-1}, {id: demo-2}]
departing: [{id: demo-3}]
";

    fn configmap(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("demo-members".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_operators_list_from_members_yaml() {
        let list = list_from_configmap(&configmap(&[(MEMBERS_KEY, OPERATOR_LIST)]), &DISCOVERED)
            .expect("valid");
        assert_eq!(list.epoch, 4);
        assert_eq!(list.ids(), ["demo-0", "demo-1", "demo-2"]);
        assert_eq!(list.departing[0].id, "demo-3");
    }

    #[test]
    fn a_configmap_without_the_key_is_refused_with_its_name() {
        let err = list_from_configmap(&configmap(&[("members.yml", OPERATOR_LIST)]), &DISCOVERED)
            .expect_err("wrong key");
        assert!(
            matches!(&err, MembershipError::MissingKey { configmap, key } if configmap == "demo-members" && *key == MEMBERS_KEY),
            "{err}"
        );
        let no_data = ConfigMap::default();
        assert!(matches!(
            list_from_configmap(&no_data, &DISCOVERED),
            Err(MembershipError::MissingKey { .. })
        ));
    }

    #[test]
    fn a_configmap_list_is_validated_like_a_file() {
        let cm = configmap(&[(MEMBERS_KEY, OPERATOR_LIST)]);
        assert!(matches!(
            list_from_configmap(&cm, &STATIC),
            Err(MembershipError::NoAddress(_))
        ));
        let other = ListRules {
            partitions: 64,
            ..DISCOVERED
        };
        assert!(matches!(
            list_from_configmap(&cm, &other),
            Err(MembershipError::Partitions {
                list: 271,
                node: 64
            })
        ));
        let garbage = configmap(&[(MEMBERS_KEY, "epoch: -1\n")]);
        assert!(matches!(
            list_from_configmap(&garbage, &DISCOVERED),
            Err(MembershipError::Parse(_))
        ));
    }
}
