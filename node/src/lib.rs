//! kache-node: one kache cache node.
//!
//! Layout:
//! - [`config`]: flags and environment, validated into a [`config::NodeConfig`].
//! - [`clock`]: wall time for TTLs and hybrid-logical-clock write versions.
//! - [`store`]: the partitioned in-memory map with TTL, tombstones and a memory bound.
//! - [`http`]: the client REST API.
//! - [`shutdown`]: SIGTERM / Ctrl-C.
//!
//! The binary parses flags, binds its listener and calls [`run`]; tests call the same
//! [`run`] on `127.0.0.1:0`.

pub mod clock;
pub mod config;
pub mod http;
pub mod shutdown;
pub mod store;

use std::future::{Future, IntoFuture};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::http::AppState;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("serving HTTP failed")]
    Serve(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Serves the node on `listener` until `shutdown` completes, then stops in two steps:
/// stop accepting and mark not ready, then let in-flight requests finish within the
/// configured grace period.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = Store::new(config.store.clone());
    let _sweeper = store.spawn_active_expiry();
    let state = AppState::new(store, &config);
    let app = http::app(state.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopping = |mut stop: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which only happens after it sent.
        let _ = stop.wait_for(|stop| *stop).await;
    };

    let graceful = {
        let stop = stopping(stop_rx.clone());
        async move {
            stop.await;
            state.set_ready(false);
            tracing::info!("shutting down: accepting nothing new, finishing in-flight requests");
        }
    };
    let grace = config.shutdown_grace;
    let deadline = {
        let stop = stopping(stop_rx);
        async move {
            stop.await;
            tokio::time::sleep(grace).await;
        }
    };
    // Without TCP_NODELAY, small responses on keep-alive connections wait on Nagle's
    // algorithm and the client's delayed ACK: a 40 ms tail on every request/response.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, axum::ServiceExt::into_make_service(app))
        .with_graceful_shutdown(graceful)
        .into_future();
    tokio::select! {
        served = server => served.map_err(Error::Serve)?,
        () = deadline => {
            tracing::warn!(?grace, "grace period over; dropping requests still in flight");
        }
    }
    tracing::info!("stopped");
    Ok(())
}
