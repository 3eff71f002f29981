//! The data planes' channel (`GET /control/snapshot`) through the router: who may call,
//! what a snapshot holds, and the long poll (answers at once when `after` is stale, wakes
//! on a config write or a subscription change, 204 when nothing changed).
#![allow(missing_docs)]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_admin_api::{apply_text, router, AdminState, ControlSnapshot, Tokens};
use tollgate_gateway::keys::KeyRing;
use tollgate_gateway::{Gateway, SubscriptionLookup};
use tollgate_store::{RevisionSource, SqliteStore, Store};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const DATAPLANE: &str = "dataplane-token-0123456789";

const CONFIG: &str = "version: 1\napis:\n  - id: pets\n    path: /pets\n    upstream: { targets: [\"http://127.0.0.1:9\"] }\n";

struct H {
    router: Router,
    state: AdminState,
    _dir: tempfile::TempDir,
}

fn harness() -> H {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let keys = Arc::new(KeyRing::new(store.installation_secret()));
    let gateway = Gateway::new(keys.clone());
    let state = AdminState {
        gateway,
        store,
        keys,
        tokens: Tokens {
            admin: ADMIN.into(),
            operator: Some(OPERATOR.into()),
            dataplane: Some(DATAPLANE.into()),
        },
        snapshots: Default::default(),
    };
    H {
        router: router(state.clone()),
        state,
        _dir: dir,
    }
}

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn snapshot(router: &Router, query: &str) -> (StatusCode, Option<ControlSnapshot>) {
    let (status, body) = call(
        router,
        Method::GET,
        &format!("/control/snapshot{query}"),
        Some(DATAPLANE),
        None,
    )
    .await;
    let snap = (status == StatusCode::OK).then(|| serde_json::from_slice(&body).unwrap());
    (status, snap)
}

#[tokio::test]
async fn only_the_dataplane_and_admin_tokens_read_snapshots() {
    let h = harness();
    apply_text(&h.state, CONFIG, RevisionSource::File, "file").unwrap();
    let r = &h.router;
    let path = "/control/snapshot";
    assert_eq!(call(r, Method::GET, path, None, None).await.0, 401);
    assert_eq!(call(r, Method::GET, path, Some("nope"), None).await.0, 401);
    let (status, body) = call(r, Method::GET, path, Some(OPERATOR), None).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("key material"));
    assert_eq!(
        call(r, Method::GET, path, Some(DATAPLANE), None).await.0,
        200
    );
    assert_eq!(call(r, Method::GET, path, Some(ADMIN), None).await.0, 200);
    // The dataplane token reads and writes nothing else.
    for p in ["/config", "/subscriptions", "/metrics", "/openapi.json"] {
        assert_eq!(
            call(r, Method::GET, p, Some(DATAPLANE), None).await.0,
            403,
            "GET {p}"
        );
    }
    let (status, _) = call(
        r,
        Method::POST,
        "/subscriptions",
        Some(DATAPLANE),
        Some(json!({"display_name": "x", "scope": "all"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        r,
        Method::POST,
        "/cache/purge",
        Some(DATAPLANE),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_snapshot_holds_the_stored_text_and_the_key_material() {
    let h = harness();
    // No config yet: nothing to hand out.
    assert_eq!(
        snapshot(&h.router, "?wait=0").await.0,
        StatusCode::NO_CONTENT
    );
    apply_text(&h.state, CONFIG, RevisionSource::File, "file").unwrap();
    let (status, body) = call(
        &h.router,
        Method::POST,
        "/subscriptions",
        Some(ADMIN),
        Some(json!({"id": "one", "display_name": "One", "scope": "api:pets"})),
    )
    .await;
    assert_eq!(status, 201);
    let created: Value = serde_json::from_slice(&body).unwrap();
    let key = created["primary_key"].as_str().unwrap();
    let (status, snap) = snapshot(&h.router, "").await;
    assert_eq!(status, 200);
    let snap = snap.unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.revision, 1);
    assert_eq!(snap.config_text, CONFIG);
    assert!(snap.version.starts_with("1."));
    assert_eq!(snap.subscriptions.len(), 1);
    assert_eq!(snap.subscriptions[0].scope, "api:pets");
    // A ring built from the snapshot alone knows the key.
    let (secret, entries) = snap.key_entries().unwrap();
    let ring = KeyRing::new([0; 32]);
    ring.replace_with_secret(secret, entries);
    assert_eq!(&*ring.lookup(key).unwrap().id, "one");
    // Asking with the live version and no wait: nothing new.
    let q = format!("?after={}&wait=0", snap.version);
    assert_eq!(snapshot(&h.router, &q).await.0, StatusCode::NO_CONTENT);
    // A stale version: answered at once.
    let (status, again) = snapshot(&h.router, "?after=0.0000000000000000&wait=30").await;
    assert_eq!(status, 200);
    assert_eq!(again.unwrap().version, snap.version);
}

#[tokio::test]
async fn the_long_poll_wakes_on_config_writes_and_subscription_changes() {
    let h = harness();
    apply_text(&h.state, CONFIG, RevisionSource::File, "file").unwrap();
    let v1 = snapshot(&h.router, "").await.1.unwrap().version;

    // Nothing changes: 204 after the wait.
    let started = Instant::now();
    let q = format!("?after={v1}&wait=1");
    assert_eq!(snapshot(&h.router, &q).await.0, StatusCode::NO_CONTENT);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A subscription change wakes a waiting poll.
    let router = h.router.clone();
    let q = format!("?after={v1}&wait=20");
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        (snapshot(&router, &q).await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = call(
        &h.router,
        Method::POST,
        "/subscriptions",
        Some(ADMIN),
        Some(json!({"id": "two", "display_name": "Two", "scope": "all"})),
    )
    .await;
    assert_eq!(status, 201);
    let ((status, snap), took) = poll.await.unwrap();
    assert_eq!(status, 200);
    let snap = snap.unwrap();
    assert_eq!(snap.revision, 1, "a subscription makes no revision");
    assert_ne!(snap.version, v1);
    assert_eq!(snap.subscriptions[0].id, "two");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let v2 = snap.version;

    // Suspending it changes the version too.
    let router = h.router.clone();
    let q = format!("?after={v2}&wait=20");
    let poll = tokio::spawn(async move { snapshot(&router, &q).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = call(
        &h.router,
        Method::PATCH,
        "/subscriptions/two",
        Some(ADMIN),
        Some(json!({"state": "suspended"})),
    )
    .await;
    assert_eq!(status, 200);
    let snap = poll.await.unwrap().1.unwrap();
    assert_eq!(snap.subscriptions[0].state, "suspended");
    let v3 = snap.version;

    // A config write wakes it with the new text.
    let router = h.router.clone();
    let q = format!("?after={v3}&wait=20");
    let poll = tokio::spawn(async move { snapshot(&router, &q).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = CONFIG.replace("/pets", "/pets2");
    apply_text(&h.state, &next, RevisionSource::Api, "admin").unwrap();
    let snap = poll.await.unwrap().1.unwrap();
    assert_eq!(snap.revision, 2);
    assert_eq!(snap.config_text, next);
    snap.verify().unwrap();
}

#[tokio::test]
async fn usage_batches_count_once_and_only_from_data_planes() {
    use tollgate_admin_api::UsageBatchRow;
    use tollgate_analytics::{Usage, UsageKey, UsageRow};
    let h = harness();
    let mut usage = Usage::default();
    for _ in 0..3 {
        usage.calls += 1;
        usage.success += 1;
        usage.latency.add(1500);
    }
    let bucket = 1_800_000_000;
    let row = UsageRow {
        key: UsageKey {
            bucket,
            product: None,
            api: Some(Arc::from("pets")),
            operation: None,
            subscription: None,
            status: 200,
        },
        usage,
    };
    let batch = |seq: u64| {
        json!({
            "node": "dp-1", "boot": "b1", "seq": seq,
            "rows": [serde_json::to_value(UsageBatchRow::from_row(&row)).unwrap()],
        })
    };
    let post = |token: &'static str, body: Value| {
        let router = h.router.clone();
        async move {
            call(
                &router,
                Method::POST,
                "/control/usage",
                Some(token),
                Some(body),
            )
            .await
        }
    };
    let (status, body) = post(DATAPLANE, batch(1)).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["added"],
        true
    );
    // Sent again (the acknowledgement was lost): acknowledged, not counted.
    let (status, body) = post(DATAPLANE, batch(1)).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["added"],
        false
    );
    let (status, _) = post(ADMIN, batch(2)).await;
    assert_eq!(status, 200);
    assert_eq!(post(OPERATOR, batch(3)).await.0, 403);
    // Malformed: 422 with the path.
    let mut bad = batch(3);
    bad["rows"][0]["bucket"] = json!(bucket + 1);
    let (status, body) = post(DATAPLANE, bad).await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("rows[0]"));
    let mut bad = batch(3);
    bad["node"] = json!("a/b");
    assert_eq!(post(DATAPLANE, bad).await.0, 422);
    // The store holds 2 batches of 3 calls.
    let rows = h
        .state
        .store
        .usage(
            tollgate_analytics::Resolution::Minute,
            0,
            i64::MAX,
            &Default::default(),
        )
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.usage.calls).sum::<u64>(), 6);
}

#[tokio::test]
async fn waiting_polls_share_one_build_of_the_snapshot() {
    const POLLS: usize = 40;
    let h = harness();
    apply_text(&h.state, CONFIG, RevisionSource::File, "file").unwrap();
    let v1 = snapshot(&h.router, "").await.1.unwrap().version;
    let before = h.state.snapshots.builds();
    let mut polls = Vec::new();
    for _ in 0..POLLS {
        let router = h.router.clone();
        let q = format!("?after={v1}&wait=20");
        polls.push(tokio::spawn(async move { snapshot(&router, &q).await }));
    }
    // Every poll has arrived and found nothing new when the builds stop moving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived = h.state.snapshots.builds() - before;
    let (status, _) = call(
        &h.router,
        Method::POST,
        "/subscriptions",
        Some(ADMIN),
        Some(json!({"id": "many", "display_name": "Many", "scope": "all"})),
    )
    .await;
    assert_eq!(status, 201);
    let mut versions = std::collections::HashSet::new();
    for p in polls {
        let (status, snap) = p.await.unwrap();
        assert_eq!(status, 200);
        let snap = snap.unwrap();
        snap.verify().unwrap();
        assert_eq!(snap.subscriptions[0].id, "many");
        versions.insert(snap.version);
    }
    assert_eq!(versions.len(), 1, "{versions:?}");
    let woken = h.state.snapshots.builds() - before - arrived;
    // One build each, plus one per ring of the process-wide bell by the other tests of
    // this file running meanwhile; without sharing, each poll builds at both points.
    assert!(arrived < 10, "{arrived} builds for {POLLS} polls arriving");
    assert!(
        woken < 10,
        "{woken} builds for {POLLS} polls woken by one change"
    );
}
