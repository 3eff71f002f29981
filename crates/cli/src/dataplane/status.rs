//! What a data plane serves and how its control plane answers, and the status listener
//! that says so: `GET /healthz`, `GET /readyz`, `GET /metrics` (no token: bind it to a
//! private address).
//!
//! `/readyz` is 200 as soon as a snapshot is served, whether it came from the control plane
//! or from the last-known-good file, and stays 200 while the control plane is down (the
//! data plane keeps serving, unchanged); 503 before any snapshot. Its body says which
//! revision and version are served, where they came from, and how the control plane
//! answers.

use super::analytics::Spool;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tollgate_admin_api::ControlSnapshot;
use tollgate_gateway::Gateway;

/// Where the served snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The control plane, during this run.
    ControlPlane,
    /// The last-known-good file, at start.
    LastKnownGood,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::ControlPlane => "control-plane",
            Source::LastKnownGood => "last-known-good",
        }
    }
}

/// The snapshot being served.
#[derive(Debug, Clone)]
pub(crate) struct Serving {
    /// The snapshot itself (the next delta from the control plane applies to it).
    pub(crate) snapshot: Arc<ControlSnapshot>,
    /// Where it came from.
    pub(crate) source: Source,
    /// When it was applied (Unix seconds).
    pub(crate) since: u64,
}

#[derive(Debug, Default)]
struct Inner {
    serving: Option<Serving>,
    connected: bool,
    last_contact: Option<Instant>,
    last_error: Option<String>,
    refused: Option<(String, String)>,
    lkg_error: Option<String>,
}

/// The data plane's state, shared by the sync task and the status listener.
#[derive(Debug)]
pub(crate) struct Status {
    control_plane: String,
    node: String,
    inner: Mutex<Inner>,
    refusals: AtomicU64,
    applied: AtomicU64,
    /// Whole snapshots and deltas received from the control plane, and their bytes.
    wholes: AtomicU64,
    deltas: AtomicU64,
    received_bytes: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Status {
    /// Nothing served yet, never in contact.
    pub(crate) fn new(control_plane: &str, node: &str) -> Status {
        Status {
            control_plane: control_plane.to_owned(),
            node: node.to_owned(),
            inner: Mutex::new(Inner::default()),
            refusals: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            wholes: AtomicU64::new(0),
            deltas: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot served, if any.
    pub(crate) fn serving(&self) -> Option<Serving> {
        self.lock().serving.clone()
    }

    /// A snapshot is live now.
    pub(crate) fn set_serving(&self, mut s: Serving) {
        s.since = unix_now();
        let mut inner = self.lock();
        inner.serving = Some(s);
        inner.refused = None;
        self.applied.fetch_add(1, Ordering::Relaxed);
    }

    /// A whole snapshot (`delta` false) or a delta of `bytes` came from the control plane.
    pub(crate) fn received(&self, delta: bool, bytes: usize) {
        let kind = if delta { &self.deltas } else { &self.wholes };
        kind.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The control plane answered.
    pub(crate) fn contact(&self) {
        let mut inner = self.lock();
        inner.connected = true;
        inner.last_contact = Some(Instant::now());
        inner.last_error = None;
    }

    /// The control plane did not answer, or answered with an error. True when this starts
    /// an outage (the previous call succeeded, or this was the first).
    pub(crate) fn contact_failed(&self, error: String) -> bool {
        let mut inner = self.lock();
        let starts = inner.connected || inner.last_error.is_none();
        inner.connected = false;
        inner.last_error = Some(error);
        starts
    }

    /// A snapshot was refused (the previous one keeps serving).
    pub(crate) fn refused(&self, version: &str, error: &str) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        self.lock().refused = Some((version.to_owned(), error.to_owned()));
    }

    /// Writing the last-known-good file failed (`None`: it worked).
    pub(crate) fn lkg_result(&self, error: Option<String>) {
        self.lock().lkg_error = error;
    }

    fn report(&self) -> (bool, serde_json::Value) {
        let inner = self.lock();
        let serving = inner.serving.as_ref();
        let ready = serving.is_some();
        let body = json!({
            "status": if ready { "ready" } else { "no-config" },
            "node": self.node,
            "revision": serving.map_or(0, |s| s.snapshot.revision),
            "version": serving.map(|s| s.snapshot.version.clone()),
            "source": serving.map(|s| s.source.name()),
            "subscriptions": serving.map_or(0, |s| s.snapshot.subscriptions.len()),
            "serving_since": serving.map(|s| s.since),
            "control_plane": {
                "url": self.control_plane,
                "connected": inner.connected,
                "last_contact_seconds_ago": inner.last_contact.map(|t| t.elapsed().as_secs_f64()),
                "last_error": inner.last_error,
            },
            "refused": inner.refused.as_ref().map(|(v, e)| json!({"version": v, "error": e})),
            "last_known_good_error": inner.lkg_error,
        });
        (ready, body)
    }

    /// Data-plane families for `/metrics`.
    fn metrics(&self) -> String {
        let inner = self.lock();
        let age = inner
            .last_contact
            .map_or(-1.0, |t| t.elapsed().as_secs_f64());
        format!(
            "# HELP tollgate_dataplane_connected 1 when the last call to the control plane succeeded.\n\
             # TYPE tollgate_dataplane_connected gauge\n\
             tollgate_dataplane_connected {}\n\
             # HELP tollgate_dataplane_last_contact_age_seconds Seconds since the control plane last answered (-1: never).\n\
             # TYPE tollgate_dataplane_last_contact_age_seconds gauge\n\
             tollgate_dataplane_last_contact_age_seconds {age:.3}\n\
             # HELP tollgate_dataplane_snapshots_applied_total Snapshots applied (from the control plane or the last-known-good file).\n\
             # TYPE tollgate_dataplane_snapshots_applied_total counter\n\
             tollgate_dataplane_snapshots_applied_total {}\n\
             # HELP tollgate_dataplane_snapshots_refused_total Snapshots refused (the previous one kept serving).\n\
             # TYPE tollgate_dataplane_snapshots_refused_total counter\n\
             tollgate_dataplane_snapshots_refused_total {}\n\
             # HELP tollgate_dataplane_snapshots_received_total Answers with a snapshot from the control plane, whole or as a delta.\n\
             # TYPE tollgate_dataplane_snapshots_received_total counter\n\
             tollgate_dataplane_snapshots_received_total{{kind=\"whole\"}} {}\n\
             tollgate_dataplane_snapshots_received_total{{kind=\"delta\"}} {}\n\
             # HELP tollgate_dataplane_snapshot_received_bytes_total Bytes of those answers' bodies.\n\
             # TYPE tollgate_dataplane_snapshot_received_bytes_total counter\n\
             tollgate_dataplane_snapshot_received_bytes_total {}\n",
            u8::from(inner.connected),
            self.applied.load(Ordering::Relaxed),
            self.refusals.load(Ordering::Relaxed),
            self.wholes.load(Ordering::Relaxed),
            self.deltas.load(Ordering::Relaxed),
            self.received_bytes.load(Ordering::Relaxed),
        )
    }
}

#[derive(Clone)]
struct StatusState {
    status: Arc<Status>,
    gw: Arc<Gateway>,
    spool: Arc<Spool>,
}

/// The status listener's router.
pub(crate) fn router(status: Arc<Status>, gw: Arc<Gateway>, spool: Arc<Spool>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(StatusState { status, gw, spool })
}

fn spool_report(spool: &Spool) -> serde_json::Value {
    json!({
        "pending_bytes": spool.pending_bytes(),
        "batches_shipped": spool.shipped.load(Ordering::Relaxed),
        "batches_rejected": spool.rejected.load(Ordering::Relaxed),
        "shipping_errors": spool.errors.load(Ordering::Relaxed),
    })
}

fn spool_metrics(spool: &Spool) -> String {
    format!(
        "# HELP tollgate_dataplane_analytics_spool_bytes Analytics batches waiting for the control plane, bytes.\n\
         # TYPE tollgate_dataplane_analytics_spool_bytes gauge\n\
         tollgate_dataplane_analytics_spool_bytes {}\n\
         # HELP tollgate_dataplane_analytics_batches_total Analytics batches by outcome.\n\
         # TYPE tollgate_dataplane_analytics_batches_total counter\n\
         tollgate_dataplane_analytics_batches_total{{outcome=\"shipped\"}} {}\n\
         tollgate_dataplane_analytics_batches_total{{outcome=\"rejected\"}} {}\n\
         # HELP tollgate_dataplane_analytics_shipping_errors_total Failed attempts to hand in a batch (retried).\n\
         # TYPE tollgate_dataplane_analytics_shipping_errors_total counter\n\
         tollgate_dataplane_analytics_shipping_errors_total {}\n",
        spool.pending_bytes(),
        spool.shipped.load(Ordering::Relaxed),
        spool.rejected.load(Ordering::Relaxed),
        spool.errors.load(Ordering::Relaxed),
    )
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(s): State<StatusState>) -> Response {
    let (ready, mut body) = s.status.report();
    body["analytics"] = spool_report(&s.spool);
    if ready {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, "1")],
            Json(body),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<StatusState>) -> Response {
    let mut text = tollgate_admin_api::gateway_metrics(&s.gw);
    text.push_str(&s.status.metrics());
    text.push_str(&spool_metrics(&s.spool));
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_serving_and_still_ready_when_disconnected() {
        let s = Status::new("http://cp:8081", "node-1");
        let (ready, body) = s.report();
        assert!(!ready);
        assert_eq!(body["status"], "no-config");
        s.set_serving(Serving {
            snapshot: Arc::new(ControlSnapshot::new(
                4,
                "version: 1\n".into(),
                &[1; 32],
                Vec::new(),
            )),
            source: Source::LastKnownGood,
            since: 0,
        });
        s.contact_failed("connection refused".into());
        let (ready, body) = s.report();
        assert!(ready);
        assert_eq!(body["revision"], 4);
        assert_eq!(body["source"], "last-known-good");
        assert_eq!(body["control_plane"]["connected"], false);
        assert_eq!(body["control_plane"]["last_error"], "connection refused");
        s.refused("5.def", "bad");
        assert_eq!(s.report().1["refused"]["version"], "5.def");
        assert!(s
            .metrics()
            .contains("tollgate_dataplane_snapshots_refused_total 1"));
    }
}
