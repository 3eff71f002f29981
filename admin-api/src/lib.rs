//! Tollgate's admin REST API (contract §4), as an axum router.
//!
//! This first part serves the probes: `GET /healthz` (the process is alive) and
//! `GET /readyz` (a config snapshot is loaded). The rest of the contract's calls (config,
//! revisions, products, APIs, subscriptions, analytics) come with the store.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tollgate_gateway::Gateway;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The gateway whose config this service manages.
    pub gateway: Arc<Gateway>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let snap = state.gateway.snapshot();
    let body = serde_json::json!({
        "status": if snap.revision > 0 { "ready" } else { "no-config" },
        "revision": snap.revision,
    });
    let status = if snap.revision > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Serve `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
