//! Which pods run here: the watch on `spec.nodeName=<node>` and one worker per pod.
//!
//! The manager is the single owner of the pod → worker map. It feeds each
//! worker the latest pod object; a pod that disappears from the API (a watch
//! Delete, or absence from a relist) is marked [`Removal::Gone`]. Pods it
//! does not run are handled directly: one already marked for deletion (for
//! example after a kubelet restart) is deleted with grace period 0, and a pod
//! in a terminal phase is not started again. On shutdown every worker gets
//! [`Removal::Shutdown`] and the manager waits for all of them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Context;
use super::error::is_not_found;
use super::pod::{self, Desired, Removal};

struct Running {
    desired: watch::Sender<Desired>,
}

/// Watch this node's pods and run them until `stop` turns true; then stop them all.
pub async fn run(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.config.node_name);
    let mut events = watcher::watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, Running> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut relisted: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(done) = tasks.join_next() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                }
            }
            Some(event) = events.next() => match event {
                Ok(Event::Init) => relisted.clear(),
                Ok(Event::InitApply(pod)) => {
                    relisted.insert(pod.uid().unwrap_or_default());
                    apply(&ctx, &mut workers, &mut tasks, pod);
                }
                Ok(Event::InitDone) => {
                    for (uid, w) in &workers {
                        if !relisted.contains(uid) {
                            w.desired.send_modify(|d| d.removal = Some(Removal::Gone));
                        }
                    }
                }
                Ok(Event::Apply(pod)) => apply(&ctx, &mut workers, &mut tasks, pod),
                Ok(Event::Delete(pod)) => {
                    if let Some(w) = workers.get(&pod.uid().unwrap_or_default()) {
                        w.desired.send_modify(|d| d.removal = Some(Removal::Gone));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            },
        }
    }
    tracing::info!(pods = workers.len(), "stopping all pods");
    for w in workers.values() {
        w.desired
            .send_modify(|d| d.removal = Some(Removal::Shutdown));
    }
    let limit = ctx.config.shutdown_grace + Duration::from_secs(15);
    if tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("some pods did not stop in time");
        tasks.abort_all();
    }
}

fn apply(
    ctx: &Arc<Context>,
    workers: &mut HashMap<String, Running>,
    tasks: &mut JoinSet<String>,
    pod: Pod,
) {
    let Some(uid) = pod.uid() else { return };
    if let Some(w) = workers.get(&uid) {
        let pod = Arc::new(pod);
        w.desired.send_modify(|d| d.pod = pod);
        return;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        // Not ours (any more): nothing to stop, just let the object go.
        tokio::spawn(force_delete(ctx.clone(), pod));
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return;
    }
    let (tx, rx) = watch::channel(Desired {
        pod: Arc::new(pod),
        removal: None,
    });
    workers.insert(uid.clone(), Running { desired: tx });
    let ctx = ctx.clone();
    tasks.spawn(async move {
        pod::run(ctx, rx).await;
        uid
    });
}

async fn force_delete(ctx: Arc<Context>, pod: Pod) {
    let (Some(ns), Some(name)) = (pod.namespace(), pod.metadata.name.clone()) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(pod = %name, "deleted a terminating pod this kubelet does not run"),
        Err(e) if is_not_found(&e) => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "delete failed"),
    }
}
