//! `get`, `put`, `del` and `locate`: one request to any ready pod, which forwards to the
//! key's owners as a client's request would be. A pod the API server cannot reach (it
//! is restarting, or leaving) is skipped for the next; any other answer is final.

use std::fmt::Write as _;
use std::future::Future;

use http::Method;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::proxy::{NodeClient, PodPort, key_path};

const KEYS: &str = "/v1/keys/";
const PLACEMENT: &str = "/v1/cluster/keys/";

/// Where a key lives, as `GET /v1/cluster/keys/{key}` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Placement {
    pub slot: u16,
    pub partition: u32,
    /// Primary first.
    pub owners: Vec<String>,
}

/// The value of `key`.
pub async fn get(node: &NodeClient, pods: &[PodPort], key: &str) -> Result<Vec<u8>> {
    let path = key_path(KEYS, key)?;
    any_pod(pods, |pod| node.call(pod, Method::GET, &path, Vec::new()))
        .await?
        .ok_or_else(|| Error::KeyNotFound {
            key: key.to_owned(),
        })
}

/// Stores `value` under `key`, for `ttl_seconds` if set.
pub async fn put(
    node: &NodeClient,
    pods: &[PodPort],
    key: &str,
    value: &[u8],
    ttl_seconds: Option<u64>,
) -> Result<()> {
    let mut path = key_path(KEYS, key)?;
    if let Some(ttl) = ttl_seconds {
        let _ = write!(path, "?ttl={ttl}");
    }
    any_pod(pods, |pod| {
        node.call(pod, Method::PUT, &path, value.to_vec())
    })
    .await?;
    Ok(())
}

/// Deletes `key`; a key that was not there is an error, as `get` says.
pub async fn del(node: &NodeClient, pods: &[PodPort], key: &str) -> Result<()> {
    let path = key_path(KEYS, key)?;
    any_pod(pods, |pod| {
        node.call(pod, Method::DELETE, &path, Vec::new())
    })
    .await?
    .map(drop)
    .ok_or_else(|| Error::KeyNotFound {
        key: key.to_owned(),
    })
}

/// The partition and owners of `key`.
pub async fn locate(node: &NodeClient, pods: &[PodPort], key: &str) -> Result<Placement> {
    let path = key_path(PLACEMENT, key)?;
    any_pod(pods, |pod| {
        node.get_json::<Placement>(pod, &path, "a key placement")
    })
    .await
}

/// The placement as the command prints it.
pub fn render_placement(key: &str, placement: &Placement, partitions: u32) -> String {
    let mut owners = placement.owners.iter();
    let mut text = owners.next().map_or_else(
        || "none (no member list yet)".to_owned(),
        |primary| format!("{primary} (primary)"),
    );
    for replica in owners {
        let _ = write!(text, ", {replica}");
    }
    format!(
        "key        {key}\nslot       {}\npartition  {} of {partitions}\nowners     {text}\n",
        placement.slot, placement.partition
    )
}

/// The first answer of `call` over `pods`, skipping the pods the API server cannot reach.
async fn any_pod<'a, T, F, Fut>(pods: &'a [PodPort], mut call: F) -> Result<T>
where
    F: FnMut(&'a PodPort) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut last = None;
    for pod in pods {
        match call(pod).await {
            Err(error @ Error::Unreachable { .. }) => last = Some(error),
            answer => return answer,
        }
    }
    Err(last.unwrap_or_else(|| Error::BadAnswer {
        pod: "-".to_owned(),
        what: "an answer",
        reason: "there is no pod to ask".to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn a_placement_names_the_primary_first() {
        let placement = Placement {
            slot: 12_539,
            partition: 207,
            owners: vec!["cache-2".into(), "cache-0".into()],
        };
        assert_eq!(
            render_placement("user:42", &placement, 271),
            "key        user:42\nslot       12539\npartition  207 of 271\nowners     cache-2 (primary), cache-0\n"
        );
    }

    #[test]
    fn the_node_placement_body_parses() {
        let body = r#"{"slot":866,"partition":14,"owners":["a","b"]}"#;
        let placement: Placement = serde_json::from_str(body).expect("placement");
        assert_eq!(placement.owners, ["a", "b"]);
    }

    fn pods() -> Vec<PodPort> {
        (0..3)
            .map(|i| PodPort {
                namespace: "shop".into(),
                pod: format!("cache-{i}"),
                port: 7070,
                tls: false,
            })
            .collect()
    }

    #[tokio::test]
    async fn an_unreachable_pod_is_skipped_and_a_refusal_is_final() {
        let pods = pods();
        let answered = any_pod(&pods, |pod| async move {
            if pod.pod == "cache-0" {
                Err(Error::Unreachable {
                    pod: pod.pod.clone(),
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "connection refused".into(),
                })
            } else {
                Ok(pod.pod.clone())
            }
        })
        .await
        .expect("the next pod answers");
        assert_eq!(answered, "cache-1");

        let mut asked = 0;
        let refused = any_pod(&pods, |pod| {
            asked += 1;
            async move {
                Err::<(), _>(Error::TokenRefused {
                    pod: pod.pod.clone(),
                    message: "the token is not valid".into(),
                })
            }
        })
        .await;
        assert!(matches!(refused, Err(Error::TokenRefused { .. })));
        assert_eq!(asked, 1, "a refused token is not tried on every pod");
    }
}
