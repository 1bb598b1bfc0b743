//! One pod's worker: sandbox, volumes, containers, status, and teardown.
//!
//! The manager starts a worker for each pod bound to this node and sends it
//! the latest pod object through a `watch` channel, together with a removal
//! reason once there is one. The worker:
//!
//! 1. creates the network sandbox (namespace, veth, IP) and the pod's
//!    directories, and reports the pod `Pending` with its IP;
//! 2. sets up the volumes, retrying while a ConfigMap, Secret or PVC is
//!    missing;
//! 3. runs the init containers one by one, then all containers, each under a
//!    [`super::container::Supervisor`], and patches `pods/status` whenever a
//!    container's state changes (only when the status really differs);
//! 4. re-renders API-backed volumes periodically;
//! 5. on removal stops every container within the grace period, removes the
//!    sandbox and the run directory, and, for a graceful API deletion,
//!    deletes the pod with grace period 0 so the object goes away.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::Context;
use super::container::{self, ContainerHandle, Update};
use super::downward::PodFacts;
use super::error::{Error, Result, is_not_found};
use super::events::PodEvents;
use super::launch::PodContext;
use super::netns::SandboxNames;
use super::restart::{Role, restarts_so_far, termination_grace};
use super::sandbox::{Sandbox, hostname};
use super::status::{ContainerSnapshot, PodView, RunState, pod_status};
use super::volumes::PodVolumes;

/// The shortest grace period a container gets (the kubelet's minimum).
const MIN_GRACE: Duration = Duration::from_secs(2);

/// Why a pod worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `deletionTimestamp` is set: stop gracefully, then delete the object.
    Deleted,
    /// The object vanished from the API (force deletion): stop quickly.
    Gone,
    /// The kubelet is shutting down: stop, leave the object.
    Shutdown,
}

/// What the manager tells a worker.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The latest pod object.
    pub pod: Arc<Pod>,
    /// Set once the pod must go.
    pub removal: Option<Removal>,
}

fn removal_of(d: &Desired) -> Option<Removal> {
    d.removal.or(d
        .pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|_| Removal::Deleted))
}

/// Wait until the pod must go.
async fn removal(desired: &mut watch::Receiver<Desired>) -> Removal {
    loop {
        let r = removal_of(&desired.borrow_and_update());
        if let Some(r) = r {
            return r;
        }
        if desired.changed().await.is_err() {
            return Removal::Shutdown;
        }
    }
}

struct Worker {
    ctx: Arc<Context>,
    desired: watch::Receiver<Desired>,
    api: Api<Pod>,
    name: String,
    uid: String,
    log_dir: PathBuf,
    run_dir: PathBuf,
    sandbox: Option<Sandbox>,
    pod_ip: Option<Ipv4Addr>,
    sandbox_ready: bool,
    start_time: Timestamp,
    init: Vec<ContainerSnapshot>,
    containers: Vec<ContainerSnapshot>,
    initialized: bool,
    written: Option<PodStatus>,
    updates_tx: mpsc::UnboundedSender<Update>,
    updates: mpsc::UnboundedReceiver<Update>,
    handles: Vec<ContainerHandle>,
    events: PodEvents,
}

/// Run the pod until it is removed, then clean up after it.
pub async fn run(ctx: Arc<Context>, desired: watch::Receiver<Desired>) {
    let pod = desired.borrow().pod.clone();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let log_dir = ctx.config.pod_dir(&ns, &name);
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let snapshots = |cs: &[Container], reason: &str, seen: Option<&Vec<ContainerStatus>>| {
        cs.iter()
            .map(|c| ContainerSnapshot {
                restart_count: restarts_so_far(seen, &c.name),
                ..ContainerSnapshot::waiting(&c.name, c.image.as_deref().unwrap_or(""), reason)
            })
            .collect::<Vec<_>>()
    };
    let init = snapshots(
        spec.init_containers.as_deref().unwrap_or_default(),
        "PodInitializing",
        status.init_container_statuses.as_ref(),
    );
    let (updates_tx, updates) = mpsc::unbounded_channel();
    let (ctx_client, node) = (ctx.client.clone(), ctx.config.node_name.clone());
    let mut w = Worker {
        api: Api::namespaced(ctx.client.clone(), &ns),
        run_dir: log_dir.join(format!("run-{}", SandboxNames::for_uid(&uid).netns)),
        log_dir,
        ctx,
        desired,
        name,
        uid,
        sandbox: None,
        pod_ip: None,
        sandbox_ready: false,
        start_time: Timestamp::now(),
        initialized: init.is_empty(),
        init,
        containers: snapshots(
            &spec.containers,
            "ContainerCreating",
            status.container_statuses.as_ref(),
        ),
        written: None,
        updates_tx,
        updates,
        handles: Vec::new(),
        events: PodEvents::new(ctx_client, &node, &pod),
    };
    tracing::info!(pod = %w.name, namespace = %ns, "pod accepted");
    let why = w.live().await;
    tracing::info!(pod = %w.name, removal = ?why, "stopping pod");
    w.teardown(why).await;
}

impl Worker {
    fn pod(&self) -> Arc<Pod> {
        self.desired.borrow().pod.clone()
    }

    /// Run the pod until it must go; the reason it must.
    async fn live(&mut self) -> Removal {
        match self.start().await {
            Ok(mut volumes) => self.keep_running(&mut volumes).await,
            Err(removal) => removal,
        }
    }

    /// Sandbox, volumes, init containers one by one, then every container.
    /// `Err` when the pod must go before it got that far.
    async fn start(&mut self) -> Result<PodVolumes, Removal> {
        self.ensure_sandbox().await?;
        let pod = self.pod();
        let volumes = self.ensure_volumes(&pod).await?;
        let pctx = Arc::new(self.pod_context(&pod, &volumes));
        let spec = pod.spec.clone().unwrap_or_default();
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            self.spawn_container(&pctx, c, Role::Init, i);
            self.wait_for_init(i).await?;
        }
        self.initialized = true;
        for (i, c) in spec.containers.iter().enumerate() {
            self.spawn_container(&pctx, c, Role::Regular, i);
        }
        Ok(volumes)
    }

    /// Create the sandbox, retrying every 5 s, then report the pod ready to
    /// start containers.
    async fn ensure_sandbox(&mut self) -> Result<(), Removal> {
        while let Err(e) = self.setup_sandbox().await {
            tracing::warn!(pod = %self.name, error = %e, "sandbox setup failed");
            let note = format!("Failed to create pod sandbox: {e}");
            self.events.warning(None, "FailedCreatePodSandBox", note);
            self.set_waiting("ContainerCreating", &e.to_string());
            if let Some(r) = self.pause(Duration::from_secs(5)).await {
                return Err(r);
            }
        }
        self.sandbox_ready = true;
        self.write_status().await;
        Ok(())
    }

    /// Set up the volumes, retrying every 2 s while something they need is missing.
    async fn ensure_volumes(&mut self, pod: &Pod) -> Result<PodVolumes, Removal> {
        loop {
            let facts = self.facts(pod);
            match PodVolumes::setup(&self.ctx.client, pod, &facts, &self.run_dir).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::info!(pod = %self.name, error = %e, "volumes not ready");
                    self.events.warning(
                        None,
                        "FailedMount",
                        format!("MountVolume.SetUp failed: {e}"),
                    );
                    self.set_waiting("ContainerCreating", &e.to_string());
                    if let Some(r) = self.pause(Duration::from_secs(2)).await {
                        return Err(r);
                    }
                }
            }
        }
    }

    /// What every container of the pod is launched with.
    fn pod_context(&self, pod: &Arc<Pod>, volumes: &PodVolumes) -> PodContext {
        PodContext {
            client: self.ctx.client.clone(),
            config: self.ctx.config.clone(),
            pod: pod.clone(),
            pod_ip: self.pod_ip.unwrap_or(self.ctx.node_ip),
            host_ip: self.ctx.node_ip,
            netns: self.sandbox.as_ref().and_then(Sandbox::netns_path),
            hostname: hostname(pod),
            home: self.run_dir.join("home"),
            rootfs_dir: self.run_dir.join("rootfs"),
            log_dir: self.log_dir.clone(),
            hosts_file: self
                .sandbox
                .as_ref()
                .and_then(|s| s.hosts_file().map(PathBuf::from)),
            volumes: volumes.dirs().clone(),
            mountpoints: self.ctx.mountpoints.clone(),
            id_prefix: format!("process://{}", self.ctx.config.node_name),
            events: self.events.clone(),
        }
    }

    /// Supervise container `index` of `role`, counting the restarts seen so far.
    fn spawn_container(&mut self, pctx: &Arc<PodContext>, c: &Container, role: Role, index: usize) {
        let restarts = self
            .snapshots(role)
            .get(index)
            .map_or(0, |s| s.restart_count);
        self.handles.push(container::spawn(
            pctx.clone(),
            c.clone(),
            role,
            index,
            restarts,
            self.updates_tx.clone(),
        ));
    }

    /// Relay updates until init container `i` succeeds. `Err` when the pod
    /// must go, or once it failed for good (`restartPolicy: Never`), which
    /// leaves the pod Failed, keeping its object until it is removed.
    async fn wait_for_init(&mut self, i: usize) -> Result<(), Removal> {
        loop {
            tokio::select! {
                Some(u) = self.updates.recv() => self.apply(u),
                r = removal(&mut self.desired) => return Err(r),
            }
            self.drain_and_write().await;
            match self.init.get(i).map(|s| &s.state) {
                Some(RunState::Terminated(t)) if t.exit_code == 0 => return Ok(()),
                Some(RunState::Terminated(_)) => {
                    self.release_sandbox().await;
                    return Err(removal(&mut self.desired).await);
                }
                _ => {}
            }
        }
    }

    /// Relay container updates into the status, refresh the API-backed
    /// volumes, and release a finished pod's sandbox, until the pod must go.
    async fn keep_running(&mut self, volumes: &mut PodVolumes) -> Removal {
        let mut refresh = tokio::time::interval(self.ctx.config.volume_refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resync = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                Some(u) = self.updates.recv() => self.apply(u),
                r = removal(&mut self.desired) => return r,
                _ = refresh.tick() => {
                    let latest = self.pod();
                    let facts = self.facts(&latest);
                    if let Err(e) = volumes.refresh(&latest, &facts).await {
                        tracing::debug!(pod = %self.name, error = %e, "volume refresh failed");
                    }
                }
                // Status writes that failed are retried here.
                _ = resync.tick() => {}
            }
            self.drain_and_write().await;
            if self.sandbox_ready && self.terminal() {
                // Like the kubelet: a finished pod keeps its object, not its sandbox.
                self.release_sandbox().await;
                self.write_status().await;
            }
        }
    }

    /// The pod reached Succeeded or Failed (as last reported).
    fn terminal(&self) -> bool {
        let phase = self.written.as_ref().and_then(|s| s.phase.as_deref());
        matches!(phase, Some("Succeeded" | "Failed"))
    }

    /// Remove the network namespace and give the IP back (the status keeps the IP).
    async fn release_sandbox(&mut self) {
        if let Some(sandbox) = self.sandbox.as_mut() {
            sandbox.release(&self.ctx).await;
        }
        self.sandbox_ready = false;
    }

    /// The downward-API view of `pod` as this kubelet runs it.
    fn facts<'p>(&'p self, pod: &'p Pod) -> PodFacts<'p> {
        PodFacts {
            pod,
            pod_ip: self.pod_ip,
            host_ip: self.ctx.node_ip,
            node_cpu: &self.ctx.config.cpu,
            node_memory: &self.ctx.config.memory,
        }
    }

    async fn setup_sandbox(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.run_dir.join("home")).map_err(Error::io(&self.run_dir))?;
        let sandbox = Sandbox::create(&self.ctx, &self.pod(), &self.uid, &self.run_dir).await?;
        tracing::info!(pod = %self.name, netns = ?sandbox.netns(), ip = %sandbox.ip(), "sandbox ready");
        self.pod_ip = Some(sandbox.ip());
        self.sandbox = Some(sandbox);
        Ok(())
    }

    fn set_waiting(&mut self, reason: &str, message: &str) {
        for c in self.containers.iter_mut().chain(self.init.iter_mut()) {
            c.state = RunState::Waiting {
                reason: reason.into(),
                message: Some(message.into()),
            };
        }
    }

    /// Write the status, then wait `d` unless the pod is removed first.
    async fn pause(&mut self, d: Duration) -> Option<Removal> {
        self.write_status().await;
        tokio::select! {
            () = tokio::time::sleep(d) => None,
            r = removal(&mut self.desired) => Some(r),
        }
    }

    /// The snapshots of the init or the regular containers.
    fn snapshots(&self, role: Role) -> &[ContainerSnapshot] {
        match role {
            Role::Init => &self.init,
            Role::Regular => &self.containers,
        }
    }

    fn apply(&mut self, u: Update) {
        let list = match u.role {
            Role::Init => &mut self.init,
            Role::Regular => &mut self.containers,
        };
        if let Some(slot) = list.get_mut(u.index) {
            *slot = u.snapshot;
        }
    }

    async fn drain_and_write(&mut self) {
        while let Ok(u) = self.updates.try_recv() {
            self.apply(u);
        }
        self.write_status().await;
    }

    /// Patch `pods/status` if the computed status differs from the last one written.
    async fn write_status(&mut self) {
        let pod = self.pod();
        let view = PodView {
            pod: &pod,
            previous: self.written.as_ref(),
            pod_ip: self.pod_ip,
            host_ip: self.ctx.node_ip,
            sandbox_ready: self.sandbox_ready,
            init: &self.init,
            initialized: self.initialized,
            containers: &self.containers,
            start_time: self.start_time,
            now: Timestamp::now(),
        };
        let status = pod_status(&view);
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let patch = json!({ "status": status });
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.written = Some(status),
            Err(e) if is_not_found(&e) => self.written = Some(status),
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "status update failed; will retry");
            }
        }
    }

    async fn teardown(mut self, why: Removal) {
        let pod = self.pod();
        let spec_grace = termination_grace(&pod);
        let grace = match why {
            Removal::Deleted => pod
                .metadata
                .deletion_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(spec_grace, Duration::from_secs),
            Removal::Gone => spec_grace.min(MIN_GRACE),
            Removal::Shutdown => spec_grace.min(self.ctx.config.shutdown_grace),
        }
        // The kubelet's floor: a process always gets a moment to handle SIGTERM.
        .max(MIN_GRACE);
        for h in &self.handles {
            h.stop(grace);
        }
        for h in std::mem::take(&mut self.handles) {
            if tokio::time::timeout(grace + Duration::from_secs(10), h.join())
                .await
                .is_err()
            {
                tracing::warn!(pod = %self.name, "a container did not stop in time");
            }
        }
        self.release_sandbox().await;
        if let Err(e) = std::fs::remove_dir_all(&self.run_dir) {
            tracing::debug!(dir = %self.run_dir.display(), error = %e, "run dir not removed");
        }
        if why == Removal::Deleted {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.api.delete(&self.name, &dp).await {
                Ok(_) => tracing::info!(pod = %self.name, "pod deleted"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => tracing::warn!(pod = %self.name, error = %e, "final delete failed"),
            }
        }
    }
}
