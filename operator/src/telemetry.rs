//! The operator's own HTTP endpoints: `/healthz` (the process serves), `/readyz` (it
//! has started: as leader or as a standby candidate) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State((_, health)): State<(Metrics, Health)>| async move {
                if health.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State((metrics, _)): State<(Metrics, Health)>| async move {
                (
                    [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    metrics.render(),
                )
                    .into_response()
            }),
        )
        .with_state((metrics, health))
}

pub async fn serve(listener: TcpListener, metrics: Metrics, health: Health) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_status(router: Router, path: &str) -> StatusCode {
        let request = Request::get(path).body(Body::empty()).unwrap();
        router.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn ready_only_once_started() {
        let health = Health::default();
        let app = router(Metrics::default(), health.clone());
        assert_eq!(get_status(app.clone(), "/healthz").await, StatusCode::OK);
        assert_eq!(
            get_status(app.clone(), "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_ready();
        assert_eq!(get_status(app.clone(), "/readyz").await, StatusCode::OK);
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let scrape = app.oneshot(request).await.unwrap();
        assert_eq!(scrape.status(), StatusCode::OK);
        assert_eq!(
            scrape.headers()[header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }
}
