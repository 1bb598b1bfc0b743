//! Process signals: SIGTERM (how Kubernetes asks a pod to stop) and Ctrl-C.

use tokio::signal::unix::{SignalKind, signal};

/// Completes on the first SIGTERM or Ctrl-C.
pub async fn signal_received() {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received Ctrl-C"),
        _ = terminate.recv() => tracing::info!("received SIGTERM"),
    }
}
