//! Tollgate's admin REST API (contract §4), as an axum router built by [`router`].
//!
//! Calls: probes (`/healthz`, `/readyz`), `/config` (get, put, revisions, rollback,
//! effective chain), `/products`, `/apis`, `/subscriptions`, `/cache`, `/analytics/requests`,
//! `/metrics`, the data planes' control channel (`/control/snapshot`, `/control/usage`: see
//! [`ControlSnapshot`], [`UsageBatch`] and docs/scaling.md), the operators' dashboard (`/`, `/dashboard/{file}`: static, no token) and
//! `/openapi.json`. The handlers work on a
//! [`tollgate_store::Store`] and a [`tollgate_gateway::Gateway`]; config writes go through
//! [`apply_text`]'s path (validate, compile, apply to the gateway, then store), and every
//! subscription change updates that subscription's keys in the proxy's key ring, after the
//! store write (the ring is built whole only at start: [`refresh_keys`]).
//!
//! # Choices where the contract is silent
//!
//! - **Errors.** Every error is `application/problem+json` with
//!   `type: urn:tollgate:problem:<slug>`, including axum's own 404/405/413 (a response
//!   layer rewrites any other error answer, keeping its headers such as `Allow`).
//!   Malformed JSON → 400; JSON of the wrong shape (unknown field, missing field, wrong
//!   type) → 422 with the field's path. A policy file body (`PUT /config`) that is not
//!   valid YAML or JSON is a policy file error: 422 with its line and column. A body that
//!   is neither JSON nor (where accepted) YAML → 415; bad query or path parameters → 400;
//!   503 from `/readyz` is a problem too. Bodies up to 16 MiB.
//! - **Auth.** `Authorization: Bearer TOKEN`, scheme name case-insensitive. Tokens are
//!   compared as SHA-256 digests in constant time. No token → 401 `WWW-Authenticate:
//!   Bearer`; unknown token → 401 `WWW-Authenticate: Bearer error="invalid_token"`;
//!   operator token on a write → 403. `/openapi.json` needs a token (any role). An unknown
//!   route answers 404 without asking for a token; a known route with another method 405.
//! - **Config writes** (`PUT /config`, `PUT/DELETE /products/{id}` and `/apis/{id}`,
//!   `POST /config/rollback`) are serialized by one mutex. The gateway builds the new
//!   snapshot before the revision is stored, so a config it refuses (a policy kind this
//!   build lacks, an unresolvable upstream) is never stored: 422 with its problems as
//!   errors (`path` = the policy's origin). Refused attempts are audited.
//!   All of them honour `If-Match` (`"<revision>"` or `*`; 412 on mismatch) and
//!   `?dry_run=true` (the plan, checked against the gateway too; nothing stored).
//!   They answer `{"revision", "changes", "unchanged", "dry_run"}` with the new `ETag`.
//!   A text equal (by SHA-256) to the live latest revision is not stored again
//!   (`unchanged: true`); neither is a per-resource write that leaves the file as it was.
//! - **Plan** (`changes`): `{action: added|changed|removed, kind: settings|product|api|
//!   operation|policies, id}`; operation ids are `API/OP`, policy ids name a scope's
//!   section like a policy origin (`product:gold/inbound`). Added or removed products and
//!   APIs carry their operations and policies with them.
//! - **`GET /config`** serves the live, normalized file (defaults filled in, comments
//!   dropped); `GET /config/revisions/{n}` serves the text as submitted.
//! - **Rollback** of a missing revision → 404; the new revision has source `rollback`.
//! - **Effective chain**: `api` required; no `operation` → the API-wide chain; no `product`
//!   → no product scope. Unknown ids → 404; a product without the API → 422. Entries are
//!   `{kind, origin, ...fields}` with the fields as written in the file; a field named
//!   `kind` (that of `xml-to-json`) is shown as `field_kind`.
//! - **Products and APIs**: `PUT` takes the item as JSON or YAML, `id` optional (else equal
//!   to the path's). A new item → 201 + `Location`; a replaced one → 200. Validation errors
//!   have paths into the whole file and no line. Deleting an API a product lists → 422.
//!   Deleting a product leaves its subscriptions (the proxy refuses them). Lists are in
//!   file order; their cursor is an offset.
//! - **Lists**: `limit` 1..=1000 (default 50; larger values are capped, 0 is 400); cursors
//!   are opaque strings (revisions: the last revision number; subscriptions: the last id).
//! - **Subscriptions**: ids `[a-z0-9-]{1,64}`, generated as `sub-` + 16 hex digits when
//!   absent; `display_name` 1..=256 characters; `owner` at most 256. The scope's product or
//!   API must exist in the live config at creation (422 otherwise); removing it later keeps
//!   the subscription, which the proxy then refuses. Cancelled is final: any other state →
//!   409, and so is regenerating a cancelled subscription's keys. `POST
//!   /subscriptions/{id}/secrets` **rotates both keys** and answers the new ones: only key
//!   digests are stored, so existing keys can never be shown again.
//! - **Audit**: every write (actor = role name, `file` for `--config`) with its result;
//!   refused writes too (`refused: ...`). Dry runs are not audited.
//! - **Readiness**: `/readyz` is 200 when a config revision is live and the store answers.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use tollgate_gateway::keys::KeyRing;
use tollgate_gateway::Gateway;
use tollgate_store::Store;
use utoipa::IntoParams;

mod analytics;
mod apply;
mod auth;
mod cache_api;
mod config_api;
mod control;
mod control_delta;
mod dashboard;
mod extract;
mod openapi;
mod plan;
mod problem;
mod resources;
mod subscriptions;
mod usage;

pub use analytics::gateway_metrics;
pub use apply::{apply_text, load_latest, ApplyFailure, ApplyOutcome};
pub use control::{
    current_snapshot, ControlSnapshot, SnapshotCache, SubscriptionKeys, UsageAck, UsageBatch,
    UsageBatchRow, PROTOCOL,
};
pub use control_delta::{ControlDelta, DELTA_CONTENT_TYPE};
pub use openapi::openapi;
pub use plan::{plan, Change, ChangeAction, ChangeKind};
pub use problem::FieldError;
pub use subscriptions::refresh_keys;
use tollgate_gateway::listener_cert::ListenerCert;

/// The admin API's bearer tokens.
#[derive(Clone)]
pub struct Tokens {
    /// Role `admin`: read and write.
    pub admin: String,
    /// Role `operator`: read (and, later, analytics and cache purge).
    pub operator: Option<String>,
    /// Role `dataplane` (`TOLLGATE_DATAPLANE_TOKEN`): the control channel only
    /// (`/control/*`: config snapshots with key material, analytics from data planes).
    pub dataplane: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("Tokens")
            .field("admin", &"<redacted>")
            .field("operator", &self.operator.as_ref().map(|_| "<redacted>"))
            .field("dataplane", &self.dataplane.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The gateway whose config this service manages.
    pub gateway: Arc<Gateway>,
    /// Revisions, subscriptions, audit log.
    pub store: Arc<dyn Store>,
    /// The proxy's subscription key ring, rebuilt after every subscription change.
    pub keys: Arc<KeyRing>,
    /// Who may call.
    pub tokens: Tokens,
    /// The data planes' snapshot, built once per change (`Default::default()`).
    pub snapshots: SnapshotCache,
}

/// `limit` and `cursor` of list calls.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Items per page: 1 to 1000 (larger values are capped), default 50.
    limit: Option<usize>,
    /// The `next` of the previous page (opaque).
    cursor: Option<String>,
}

/// The default page size.
const DEFAULT_LIMIT: usize = 50;
/// The largest page size.
const MAX_LIMIT: usize = 1000;
/// The largest request body (a policy file).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The page size of a list call.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, problem::Problem> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(problem::Problem::bad_request(
            "limit must be between 1 and 1000",
        )),
        Some(n) => Ok(n.min(MAX_LIMIT)),
    }
}

/// Every route: (method, path, handler). The router is built from this list, and a test
/// checks it against the OpenAPI document both ways.
pub(crate) fn routes() -> Vec<(Method, &'static str, MethodRouter<AdminState>)> {
    use config_api as c;
    use resources as r;
    use subscriptions as s;
    vec![
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/readyz", get(readyz)),
        (Method::GET, "/openapi.json", get(openapi::openapi_json)),
        (Method::GET, "/", get(dashboard::index)),
        (Method::GET, "/dashboard/{file}", get(dashboard::asset)),
        (Method::GET, "/analytics/requests", get(analytics::requests)),
        (Method::GET, "/metrics", get(analytics::metrics)),
        (Method::POST, "/cache/purge", post(cache_api::purge)),
        (Method::GET, "/cache/stats", get(cache_api::stats)),
        (Method::GET, "/control/snapshot", get(control::snapshot)),
        (Method::POST, "/control/usage", post(control::usage)),
        (Method::GET, "/config", get(c::get_config)),
        (Method::PUT, "/config", put(c::put_config)),
        (Method::GET, "/config/revisions", get(c::list_revisions)),
        (Method::GET, "/config/revisions/{n}", get(c::get_revision)),
        (Method::POST, "/config/rollback", post(c::rollback)),
        (Method::GET, "/config/effective", get(c::effective)),
        (Method::GET, "/products", get(r::list_products)),
        (Method::GET, "/products/{id}", get(r::get_product)),
        (Method::PUT, "/products/{id}", put(r::put_product)),
        (Method::DELETE, "/products/{id}", delete(r::delete_product)),
        (Method::GET, "/apis", get(r::list_apis)),
        (Method::GET, "/apis/{id}", get(r::get_api)),
        (Method::GET, "/apis/{id}/upstream", get(r::get_api_upstream)),
        (Method::PUT, "/apis/{id}", put(r::put_api)),
        (Method::DELETE, "/apis/{id}", delete(r::delete_api)),
        (Method::POST, "/subscriptions", post(s::create_subscription)),
        (Method::GET, "/subscriptions", get(s::list_subscriptions)),
        (Method::GET, "/subscriptions/{id}", get(s::get_subscription)),
        (
            Method::PATCH,
            "/subscriptions/{id}",
            patch(s::patch_subscription),
        ),
        (
            Method::DELETE,
            "/subscriptions/{id}",
            delete(s::delete_subscription),
        ),
        (
            Method::POST,
            "/subscriptions/{id}/regenerate-primary-key",
            post(s::regenerate_primary),
        ),
        (
            Method::POST,
            "/subscriptions/{id}/regenerate-secondary-key",
            post(s::regenerate_secondary),
        ),
        (
            Method::POST,
            "/subscriptions/{id}/secrets",
            post(s::secrets),
        ),
        (
            Method::GET,
            "/subscriptions/{id}/usage",
            get(usage::get_usage),
        ),
        (
            Method::POST,
            "/subscriptions/{id}/usage/reset",
            post(usage::reset_usage),
        ),
    ]
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(problem::problem_safety_net))
        .with_state(state)
}

async fn not_found() -> problem::Problem {
    problem::Problem::not_found("no such resource")
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    security(()),
    responses((status = 200, description = "The process is alive.", body = serde_json::Value))
)]
async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    security(()),
    responses(
        (status = 200, description = "A config revision is live and the store answers.",
            body = serde_json::Value),
        (status = 503, description = "No config yet, or the store fails.")
    )
)]
async fn readyz(State(state): State<AdminState>) -> Response {
    let snap = state.gateway.snapshot();
    let store_ok = state.store.list_revisions(None, 1).is_ok();
    let ready = snap.revision > 0 && store_ok;
    let status_text = if !store_ok {
        "store-unavailable"
    } else if snap.revision == 0 {
        "no-config"
    } else {
        "ready"
    };
    let body = serde_json::json!({
        "status": status_text,
        "revision": snap.revision,
    });
    if ready {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        // A 503 that is not an error of the caller: JSON like the 200, marked so the
        // problem layer leaves it alone.
        let detail = format!("not ready: {status_text}");
        let mut resp = problem::Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            detail,
        )
        .into_response();
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        resp
    }
}

/// Connections the admin listener serves at once; one accepted past it is closed at once,
/// so that clients holding connections cannot take the descriptors the proxy needs.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serve the admin API's `router` on `listener` until `shutdown` completes (see
/// [`serve_http`]); the data planes' long polls end at once then.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    head_timeout: std::time::Duration,
    tls: Option<Arc<ListenerCert>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = async move {
        shutdown.await;
        // Long polls of data planes end now instead of holding the shutdown.
        control::close();
    };
    serve_http(listener, router, head_timeout, tls, shutdown).await
}

/// The TLS server settings of an HTTP/1.1 listener whose certificate is `cert` (reloaded
/// as it changes: [`Watched::watch`](tollgate_gateway::listener_cert::Watched::watch)).
fn tls_acceptor(cert: Arc<ListenerCert>) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Serve `router` on `listener` (HTTP/1.1) until `shutdown` completes, then let the
/// requests in flight finish. Every request head must arrive within `head_timeout` of the
/// connection's start or of the previous answer (hyper's header read timeout), which also
/// closes idle keep-alive connections after it; a write of an answer that the client does
/// not take for `head_timeout` closes the connection too; at most [`MAX_CONNECTIONS`] are
/// served at once. With `tls`, every connection is TLS (its handshake within
/// `head_timeout` too), and the certificate is reloaded as it changes. For the admin
/// listener and the data planes' status listener.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    head_timeout: std::time::Duration,
    tls: Option<Arc<ListenerCert>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut shutdown = std::pin::pin!(shutdown);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let graceful = GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let acceptor = tls.map(|cert| {
        let watch = tokio::spawn(cert.clone().watch());
        (tls_acceptor(cert), watch)
    });
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("{MAX_CONNECTIONS} connections open: one refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A client that stops reading its answers (say, after pipelining many requests)
        // would hold its slot for good: a write that cannot go on for `head_timeout`
        // fails and closes the connection.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(head_timeout));
        let stream = Box::pin(stream);
        let service = TowerToHyperService::new(router.clone());
        let Some((acceptor, _)) = &acceptor else {
            let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                // Errors are the client's (a reset, a head timeout): nothing to report.
                let _ = conn.await;
                drop(slot);
            });
            continue;
        };
        let (acceptor, http, watcher) = (acceptor.clone(), http.clone(), graceful.watcher());
        tokio::spawn(async move {
            // A client that does not finish its handshake in time is dropped, as one that
            // does not send its head.
            let Ok(Ok(stream)) = tokio::time::timeout(head_timeout, acceptor.accept(stream)).await
            else {
                return;
            };
            let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            let _ = conn.await;
            drop(slot);
        });
    }
    if let Some((_, watch)) = acceptor {
        watch.abort();
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "put", "post", "patch", "delete", "head", "options"] {
                if item.get(method).is_some() {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routed: BTreeSet<_> = routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_owned()))
            .collect();
        assert_eq!(
            routed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "routes missing from the document"
        );
        assert_eq!(
            documented.difference(&routed).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented operations without a route"
        );
    }

    #[test]
    fn writes_document_403_and_errors_are_problems() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let put = &doc["paths"]["/config"]["put"]["responses"];
        assert!(put.get("401").is_some() && put.get("403").is_some());
        assert!(put["422"]["content"]
            .get("application/problem+json")
            .is_some());
        let health = &doc["paths"]["/healthz"]["get"]["responses"];
        assert!(health.get("401").is_none());
        // Every schema reference resolves.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "no schema {name}");
        }
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None).unwrap(), 50);
        assert_eq!(page_limit(Some(5000)).unwrap(), 1000);
        assert!(page_limit(Some(0)).is_err());
    }
}
