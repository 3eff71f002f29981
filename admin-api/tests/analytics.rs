//! `/analytics/requests`, `/metrics` and the dashboard's files through the router
//! (`oneshot`), on a real `SqliteStore` holding rollups written through the store trait.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tollgate_admin_api::{router, AdminState, Tokens};
use tollgate_analytics::{classify, Event, Usage, UsageKey, UsageRow};
use tollgate_gateway::keys::KeyRing;
use tollgate_gateway::Gateway;
use tollgate_store::{SqliteStore, Store};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-analytics";
const OPERATOR: &str = "operator-token-analytics";

fn setup() -> (Router, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let keys = Arc::new(KeyRing::new(store.installation_secret()));
    let state = AdminState {
        gateway: Gateway::new(keys.clone()),
        store: store.clone(),
        keys,
        tokens: Tokens {
            admin: ADMIN.into(),
            operator: Some(OPERATOR.into()),
            dataplane: None,
        },
        snapshots: Default::default(),
    };
    (router(state), store, dir)
}

async fn get(
    r: &Router,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = r
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn rows(now: i64) -> Vec<UsageRow> {
    let mut out = Vec::new();
    for (sub, status, n, latency_ms) in [
        (Some("a"), 200u16, 5u64, 10u64),
        (Some("a"), 429, 2, 1),
        (None, 401, 3, 1),
        (Some("b"), 502, 1, 30),
    ] {
        let e = Event {
            at_ms: now * 1000,
            api: Some("pets".into()),
            operation: Some("get".into()),
            subscription: sub.map(Into::into),
            status,
            outcome: classify(status, status == 401 || status == 429, false),
            blocked_by: match status {
                401 => Some("subscription"),
                429 => Some("rate-limit"),
                _ => None,
            },
            latency_us: latency_ms * 1000,
            bytes_out: 100,
            ..Event::default()
        };
        let mut usage = Usage::default();
        for _ in 0..n {
            usage.record(&e);
        }
        out.push(UsageRow {
            key: UsageKey::of(&e),
            usage,
        });
    }
    out
}

#[tokio::test]
async fn reports_are_exact_and_checked() {
    let (r, store, _dir) = setup();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    store.add_usage(&rows(now)).unwrap();

    let (status, _, body) = get(
        &r,
        "/analytics/requests?group_by=subscription",
        Some(OPERATOR),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let items = doc["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["key"], "a");
    assert_eq!(items[0]["calls_total"], 7);
    assert_eq!(items[0]["calls_success"], 5);
    assert_eq!(items[0]["calls_blocked"], 2);
    assert_eq!(items[0]["calls_rate_limited"], 2);
    assert_eq!(items[0]["bytes_out"], 700);
    assert_eq!(items[1]["key"], Value::Null);
    assert_eq!(items[1]["calls_blocked"], 3);
    assert_eq!(items[2]["key"], "b");
    assert_eq!(items[2]["calls_failed"], 1);
    let p99 = items[2]["latency_ms_p99"].as_f64().unwrap();
    assert!((p99 - 30.0).abs() <= 0.3, "{p99}");
    assert_eq!(doc["total"]["calls_total"], 11);
    assert_eq!(doc["resolution"], "minute");

    let (_, _, body) = get(
        &r,
        "/analytics/requests?group_by=operation&subscription=a",
        Some(ADMIN),
    )
    .await;
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["items"][0]["key"], "pets/get");
    assert_eq!(doc["items"][0]["calls_total"], 7);

    for bad in [
        "group_by=week",
        "group_by=api&to=soon",
        "group_by=api&limit=0",
    ] {
        let (status, headers, _) =
            get(&r, &format!("/analytics/requests?{bad}"), Some(ADMIN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json"));
    }
    let (status, _, _) = get(&r, "/analytics/requests?group_by=api", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_need_a_token_and_speak_prometheus() {
    let (r, _store, _dir) = setup();
    let (status, _, _) = get(&r, "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, body) = get(&r, "/metrics", Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("# TYPE tollgate_config_revision gauge"));
    assert!(text.contains("tollgate_requests_in_flight 0"));
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_token() {
    let (r, _store, _dir) = setup();
    let (status, headers, body) = get(&r, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("/dashboard/uPlot.iife.min.js") && html.contains("/dashboard/app.js"));
    for (file, ct) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
        ("uPlot-LICENSE", "text/plain"),
    ] {
        let (status, headers, body) = get(&r, &format!("/dashboard/{file}"), None).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(ct),
            "{file}"
        );
        assert!(!body.is_empty());
    }
    let (status, _, _) = get(&r, "/dashboard/../Cargo.toml", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&r, "/dashboard/secret.txt", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
