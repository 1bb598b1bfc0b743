//! `kache-e2e-app`: a small HTTP program that end-to-end checks run as a pod.
//!
//! It reports what a pod sees, so a test on the host can assert on it:
//!
//! - `GET /healthz`: 200, or 500 after `POST /fail-liveness` (liveness probe target).
//! - `GET /readyz`: 200, or 503 after `POST /unready` (readiness probe target).
//! - `GET /whoami`: argv, selected env vars, hostname, the service-account
//!   files, the start count kept in `--data-dir`, and `--config-file`'s content.
//! - `GET /env`: the whole environment.
//! - `GET /apiserver`: builds a kube client with `Config::infer()` (in-cluster:
//!   the mounted token and `KUBERNETES_SERVICE_*`) and asks the apiserver who
//!   it is (`SelfSubjectReview`).
//! - `POST /exit/{code}`: exits at once with that code (a crash).
//!
//! SIGTERM makes it exit 0 after logging it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context as _;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What a pod sees, over HTTP.
#[derive(Debug, Parser)]
struct Args {
    /// Port to listen on (all addresses).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Directory that keeps a start counter (a PVC in the tests).
    #[arg(long, env = "DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A file to report (a ConfigMap volume in the tests).
    #[arg(long, env = "CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// Anything else; reported as-is (for `$(VAR)` expansion checks).
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

#[derive(Debug)]
struct App {
    args: Args,
    argv: Vec<String>,
    starts: AtomicU64,
    failing_liveness: AtomicBool,
    unready: AtomicBool,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Count this start in `<data_dir>/starts`; the new count.
fn count_start(dir: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("starts");
    let n = read(&file)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(&file, n.to_string()).with_context(|| format!("writing {}", file.display()))?;
    Ok(n)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter("info")
        .init();
    let args = Args::parse();
    let starts = match &args.data_dir {
        Some(dir) => count_start(dir)?,
        None => 1,
    };
    let app = Arc::new(App {
        argv: std::env::args().collect(),
        args,
        starts: AtomicU64::new(starts),
        failing_liveness: AtomicBool::new(false),
        unready: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", app.args.port)).await?;
    tracing::info!(addr = %listener.local_addr()?, starts, argv = ?app.argv, "kache-e2e-app listening");
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/whoami", get(whoami))
        .route("/env", get(env))
        .route("/apiserver", get(apiserver))
        .route("/fail-liveness", post(fail_liveness))
        .route("/unready", post(unready))
        .route("/exit/{code}", post(exit))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(terminated())
        .await?;
    tracing::info!("received SIGTERM, exiting");
    Ok(())
}

async fn terminated() {
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        term.recv().await;
    } else {
        std::future::pending::<()>().await;
    }
}

async fn healthz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.failing_liveness.load(Ordering::Relaxed) {
        (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.unready.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "unready on purpose")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn fail_liveness(State(app): State<Arc<App>>) -> &'static str {
    app.failing_liveness.store(true, Ordering::Relaxed);
    "liveness will fail"
}

async fn unready(State(app): State<Arc<App>>) -> &'static str {
    app.unready.store(true, Ordering::Relaxed);
    "readiness will fail"
}

async fn exit(UrlPath(code): UrlPath<i32>) -> &'static str {
    tracing::info!(code, "exiting on request");
    std::process::exit(code)
}

async fn whoami(State(app): State<Arc<App>>) -> Json<Value> {
    let sa = Path::new(SA_DIR);
    let vars = [
        "POD_NAME",
        "POD_NAMESPACE",
        "POD_IP",
        "NODE_NAME",
        "GREETING",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    ];
    let env: BTreeMap<&str, Option<String>> =
        vars.iter().map(|v| (*v, std::env::var(v).ok())).collect();
    Json(json!({
        "argv": app.argv,
        "rest": app.args.rest,
        "env": env,
        "hostname": read(Path::new("/proc/sys/kernel/hostname")).map(|h| h.trim().to_string()),
        "token_bytes": read(&sa.join("token")).map(|t| t.len()),
        "ca_present": sa.join("ca.crt").exists(),
        "namespace": read(&sa.join("namespace")),
        "starts": app.starts.load(Ordering::Relaxed),
        "config": app.args.config_file.as_deref().and_then(read),
    }))
}

async fn env() -> Json<BTreeMap<String, String>> {
    Json(std::env::vars().collect())
}

async fn apiserver() -> (StatusCode, Json<Value>) {
    match self_review().await {
        Ok(v) => (StatusCode::OK, Json(v)),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": format!("{e:#}") })),
        ),
    }
}

async fn self_review() -> anyhow::Result<Value> {
    let config = kube::Config::infer()
        .await
        .context("inferring the client configuration")?;
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("building the client")?;
    let reviews: Api<SelfSubjectReview> = Api::all(client);
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context("creating a SelfSubjectReview")?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let extra = user.extra.unwrap_or_default();
    Ok(json!({
        "cluster_url": url,
        "username": user.username,
        "groups": user.groups,
        "pod_name": extra.get("authentication.kubernetes.io/pod-name").and_then(|v| v.first()),
        "pod_uid": extra.get("authentication.kubernetes.io/pod-uid").and_then(|v| v.first()),
    }))
}
