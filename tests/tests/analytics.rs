//! Usage analytics end to end (issue 8): exact counts per subscription and outcome after a
//! known mix of 2xx, 401, 429, 5xx, 404 and upstream failures; every `group_by`; filters
//! and ranges; visibility within 5 s; persistence across a restart (including what was
//! still queued at SIGTERM); the subscription usage call; Prometheus families present and
//! moving; OTLP trace export to a local receiver; the JSON access log.
#![allow(missing_docs)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollgate_tests::*;

const TOKEN: &str = "analytics-admin-token";
const OPERATOR: &str = "analytics-operator-token";

/// Waits until the current epoch-aligned hour has at least a minute to go, so the rate
/// limit (1 h windows) does not renew in the middle of a test.
async fn inside_hour() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 3600 - now % 3600;
    if left < 60 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

/// `echo` (subscription required) with operations `ok` and `fail`; products `gold` (no
/// limit) and `tiny` (2 calls per hour per subscription); `down` (no subscription) on a
/// closed port.
fn config(target: &str, closed: u16) -> String {
    format!(
        r#"version: 1
products:
  - id: gold
    apis: [echo]
  - id: tiny
    apis: [echo]
    policies:
      inbound:
        - base
        - rate-limit: {{ calls: 2, renewal_period: 1h }}
apis:
  - id: echo
    path: /echo
    upstream: {{ targets: ["{target}"] }}
    operations:
      - {{ id: ok, method: GET, path: /ok }}
      - {{ id: fail, method: GET, path: /fail }}
  - id: down
    path: /down
    subscription_required: false
    upstream: {{ targets: ["http://127.0.0.1:{closed}"] }}
"#
    )
}

async fn call(gw: &Gateway, key: Option<&str>, path: &str) -> u16 {
    let mut req = client().get(gw.url(path));
    if let Some(k) = key {
        req = req.header("Ocp-Apim-Subscription-Key", k);
    }
    fetch(req).await.status
}

/// `GET /analytics/requests?QUERY` as `admin`; panics unless 200.
async fn report(admin: &Admin, query: &str) -> Value {
    let a = admin.get(&format!("/analytics/requests?{query}")).await;
    assert_eq!(
        a.status,
        200,
        "GET /analytics/requests?{query}: {}",
        a.text()
    );
    a.json()
}

/// Polls the report until its total has `calls` calls (at most `within`); returns it.
async fn wait_for_total(admin: &Admin, query: &str, calls: u64, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let r = report(admin, query).await;
        let total = r["total"]["calls_total"].as_u64().unwrap();
        if total == calls {
            return r;
        }
        assert!(total < calls, "more calls than sent: {r:#}");
        assert!(
            start.elapsed() < within,
            "only {total} of {calls} calls after {within:?}: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (total, success, blocked, failed, other) of a row.
type Counts = (u64, u64, u64, u64, u64);

/// Rows by key (`null` → `"-"`).
fn rows(r: &Value) -> BTreeMap<String, Counts> {
    r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let n = |f: &str| row[f].as_u64().unwrap();
            (
                row["key"].as_str().unwrap_or("-").to_string(),
                (
                    n("calls_total"),
                    n("calls_success"),
                    n("calls_blocked"),
                    n("calls_failed"),
                    n("calls_other"),
                ),
            )
        })
        .collect()
}

fn map(entries: &[(&str, Counts)]) -> BTreeMap<String, Counts> {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The known mix. Returns the number of calls made (24).
async fn traffic(gw: &Gateway, a: &Sub, b: &Sub) -> u64 {
    let mut n = 0;
    let mut expect = |got: u16, want: u16, what: &str| {
        assert_eq!(got, want, "{what}");
        n += 1;
    };
    // Subscription a (gold): 4 × 200, 3 × upstream 500, 1 × upstream 404.
    for _ in 0..4 {
        expect(call(gw, Some(&a.primary), "/echo/ok").await, 200, "a ok");
    }
    for _ in 0..3 {
        expect(
            call(gw, Some(&a.primary), "/echo/fail?status=500").await,
            500,
            "a 500",
        );
    }
    expect(
        call(gw, Some(&a.primary), "/echo/ok?status=404").await,
        404,
        "a upstream 404",
    );
    // Subscription b (tiny, 2 calls per hour): 2 × 200, then 3 × 429.
    for _ in 0..2 {
        expect(call(gw, Some(&b.primary), "/echo/ok").await, 200, "b ok");
    }
    for _ in 0..3 {
        expect(
            call(gw, Some(&b.primary), "/echo/ok").await,
            429,
            "b limited",
        );
    }
    // No subscription: 5 × 401 without a key, 2 × 401 with an unknown key, 2 × 404 no API,
    // 2 × 502 (the `down` API's target refuses connections).
    for _ in 0..5 {
        expect(call(gw, None, "/echo/ok").await, 401, "no key");
    }
    for _ in 0..2 {
        expect(
            call(gw, Some("not-a-key"), "/echo/ok").await,
            401,
            "bad key",
        );
    }
    for _ in 0..2 {
        expect(call(gw, None, "/nowhere").await, 404, "no API");
    }
    for _ in 0..2 {
        expect(call(gw, None, "/down/x").await, 502, "down");
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_per_subscription_and_outcome() {
    let up = Upstream::start("u");
    let gw = Gateway::builder(&config(&up.url(), closed_port()))
        .admin_token(TOKEN)
        .operator_token(OPERATOR)
        .start();
    let admin = gw.admin();
    let a = admin.create_subscription("sub-a", "product:gold").await;
    let b = admin.create_subscription("sub-b", "product:tiny").await;
    inside_hour().await;
    let sent = traffic(&gw, &a, &b).await;
    assert_eq!(sent, 24);

    // Visible within 5 s of the last answer (the contract's bound).
    let by_sub = wait_for_total(
        &admin,
        "group_by=subscription",
        sent,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        rows(&by_sub),
        map(&[
            ("sub-a", (8, 4, 0, 3, 1)),
            ("sub-b", (5, 2, 3, 0, 0)),
            ("-", (11, 0, 7, 2, 2)),
        ])
    );
    let total = &by_sub["total"];
    assert_eq!(total["calls_rate_limited"], 3);
    assert_eq!(total["calls_quota_exceeded"], 0);
    assert_eq!(by_sub["resolution"], "minute");
    assert_eq!(by_sub["next"], Value::Null);
    // Most calls first.
    assert_eq!(by_sub["items"][0]["key"], Value::Null);
    assert_eq!(by_sub["items"][1]["key"], "sub-a");
    for row in by_sub["items"].as_array().unwrap() {
        for f in [
            "latency_ms_avg",
            "latency_ms_p50",
            "latency_ms_p95",
            "latency_ms_p99",
        ] {
            assert!(row[f].as_f64().is_some_and(|v| v >= 0.0), "{f} in {row}");
        }
        let p50 = row["latency_ms_p50"].as_f64().unwrap();
        let p99 = row["latency_ms_p99"].as_f64().unwrap();
        assert!(p50 <= p99, "{row}");
        assert!(row["bytes_out"].as_u64().unwrap() > 0, "{row}");
    }

    let by_status = report(&admin, "group_by=status").await;
    assert_eq!(
        rows(&by_status),
        map(&[
            ("200", (6, 6, 0, 0, 0)),
            ("401", (7, 0, 7, 0, 0)),
            ("404", (3, 0, 0, 0, 3)),
            ("429", (3, 0, 3, 0, 0)),
            ("500", (3, 0, 0, 3, 0)),
            ("502", (2, 0, 0, 2, 0)),
        ])
    );
    let by_api = report(&admin, "group_by=api").await;
    assert_eq!(
        rows(&by_api),
        map(&[
            ("echo", (20, 6, 10, 3, 1)),
            ("down", (2, 0, 0, 2, 0)),
            ("-", (2, 0, 0, 0, 2)),
        ])
    );
    let by_op = report(&admin, "group_by=operation").await;
    assert_eq!(
        rows(&by_op),
        map(&[
            ("echo/ok", (17, 6, 10, 0, 1)),
            ("echo/fail", (3, 0, 0, 3, 0)),
            ("-", (4, 0, 0, 2, 2)),
        ])
    );
    let by_product = report(&admin, "group_by=product").await;
    assert_eq!(
        rows(&by_product),
        map(&[
            ("gold", (8, 4, 0, 3, 1)),
            ("tiny", (5, 2, 3, 0, 0)),
            ("-", (11, 0, 7, 2, 2)),
        ])
    );
    let by_minute = report(&admin, "group_by=minute").await;
    let minutes: u64 = by_minute["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["calls_total"].as_u64().unwrap())
        .sum();
    assert_eq!(minutes, 24);
    assert!(by_minute["items"][0]["key"]
        .as_str()
        .unwrap()
        .ends_with(":00Z"));
    let by_hour = report(&admin, "group_by=hour").await;
    assert_eq!(by_hour["total"]["calls_total"], 24);

    // Filters.
    let only_b = report(&admin, "group_by=status&subscription=sub-b").await;
    assert_eq!(
        rows(&only_b),
        map(&[("200", (2, 2, 0, 0, 0)), ("429", (3, 0, 3, 0, 0))])
    );
    let fail_op = report(&admin, "group_by=subscription&api=echo&operation=fail").await;
    assert_eq!(rows(&fail_op), map(&[("sub-a", (3, 0, 0, 3, 0))]));
    let gold = report(&admin, "group_by=api&product=gold").await;
    assert_eq!(rows(&gold), map(&[("echo", (8, 4, 0, 3, 1))]));
    // Ranges: the future holds nothing; an explicit range around now holds everything.
    let later = report(
        &admin,
        "group_by=api&from=2099-01-01T00:00:00Z&to=2099-01-02T00:00:00Z",
    )
    .await;
    assert_eq!(later["items"], serde_json::json!([]));
    assert_eq!(later["total"]["calls_total"], 0);
    let old = report(
        &admin,
        "group_by=api&from=2000-01-01T00:00:00Z&to=2000-01-01T01:00:00Z",
    )
    .await;
    assert_eq!(old["total"]["calls_total"], 0);
    let limited = report(&admin, "group_by=status&limit=2").await;
    assert_eq!(limited["items"].as_array().unwrap().len(), 2);
    assert_eq!(limited["total"]["calls_total"], 24);

    // Bad queries are 400 problems.
    for q in [
        "group_by=day",
        "",
        "group_by=api&from=yesterday",
        "group_by=api&from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
        "group_by=api&limit=0",
    ] {
        let a = admin.get(&format!("/analytics/requests?{q}")).await;
        assert_admin_problem(&a, 400);
    }
    // The operator reads analytics; no token is 401.
    let operator = admin.with_token(Some(OPERATOR));
    assert_eq!(
        operator
            .get("/analytics/requests?group_by=api")
            .await
            .status,
        200
    );
    let anonymous = admin.with_token(None);
    assert_admin_problem(
        &anonymous.get("/analytics/requests?group_by=api").await,
        401,
    );

    // The subscription's usage call carries its call counts.
    let usage = admin.get("/subscriptions/sub-b/usage").await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    let calls = usage.json()["calls"].clone();
    let hour = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["window"] == "1h")
        .unwrap_or_else(|| panic!("no 1h window in {calls}"));
    assert_eq!(hour["calls_total"], 5);
    assert_eq!(hour["calls_success"], 2);
    assert_eq!(hour["calls_blocked"], 3);
    for c in calls.as_array().unwrap() {
        assert_eq!(c["calls_total"], 5, "{c}");
    }
}

/// A plain config: `echo` requiring a subscription.
fn simple(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    upstream: {{ targets: ["{target}"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_survive_restarts_and_shutdown_flushes_the_queue() {
    let up = Upstream::start("u");
    let cfg = simple(&up.url());
    let mut gw = Gateway::builder(&cfg).admin_token(TOKEN).start();
    let admin = gw.admin();
    let s = admin.create_subscription("keep", "api:echo").await;
    for _ in 0..3 {
        assert_eq!(call(&gw, Some(&s.primary), "/echo/x").await, 200);
    }
    assert_eq!(call(&gw, None, "/echo/x").await, 401);
    wait_for_total(&admin, "group_by=subscription", 4, Duration::from_secs(5)).await;
    // Five more, then SIGTERM at once: whatever was still queued is flushed at shutdown.
    for _ in 0..5 {
        assert_eq!(call(&gw, Some(&s.primary), "/echo/y").await, 200);
    }
    let status = gw.stop(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");

    let gw2 = Gateway::builder(&cfg)
        .admin_token(TOKEN)
        .in_dir(gw.shared_dir())
        .start();
    let admin2 = gw2.admin();
    let r = report(&admin2, "group_by=subscription").await;
    assert_eq!(
        rows(&r),
        map(&[("keep", (8, 8, 0, 0, 0)), ("-", (1, 0, 1, 0, 0))]),
        "{r:#}"
    );
    // New calls add to the stored rows of the same minute and hour.
    assert_eq!(call(&gw2, Some(&s.primary), "/echo/z").await, 200);
    let r = wait_for_total(&admin2, "group_by=hour", 10, Duration::from_secs(5)).await;
    assert_eq!(r["total"]["calls_success"], 9);
    let r = report(&admin2, "group_by=subscription&subscription=keep").await;
    assert_eq!(rows(&r), map(&[("keep", (9, 9, 0, 0, 0))]));
}

/// Parses `name{labels} value` lines of the Prometheus text format.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.rsplit_once(' ').map_or("", |(s, _)| s);
            let bare = series.split('{').next().unwrap_or("");
            bare == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_families_are_present_and_move() {
    let up = Upstream::start("u");
    let closed = closed_port();
    let cfg = format!(
        r#"version: 1
products:
  - id: tiny
    apis: [echo]
    policies:
      inbound:
        - base
        - rate-limit: {{ calls: 1, renewal_period: 1h }}
apis:
  - id: echo
    path: /echo
    upstream: {{ targets: ["{}"] }}
    operations:
      - id: get
        method: GET
        path: /get
        policies:
          inbound: [ base, cache-lookup: {{}} ]
          outbound: [ base, cache-store: {{ duration: 60s }} ]
      - {{ id: post, method: POST, path: /post }}
  - id: down
    path: /down
    subscription_required: false
    upstream: {{ targets: ["http://127.0.0.1:{closed}"] }}
"#,
        up.url()
    );
    let gw = Gateway::builder(&cfg)
        .admin_token(TOKEN)
        .operator_token(OPERATOR)
        .start();
    let admin = gw.admin();
    let operator = admin.with_token(Some(OPERATOR));
    assert_admin_problem(&admin.with_token(None).get("/metrics").await, 401);
    let before = operator.get("/metrics").await;
    assert_eq!(before.status, 200);
    assert!(before
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let before = before.text();
    for family in [
        "tollgate_config_revision",
        "tollgate_config_last_swap_timestamp_seconds",
        "tollgate_jwks_fetch_failures_total",
        "tollgate_analytics_events_dropped_total",
        "tollgate_analytics_queue_length",
        "tollgate_requests_in_flight",
        "tollgate_upstream_target_healthy",
    ] {
        assert!(
            before.contains(&format!("# TYPE {family} ")),
            "no {family} in\n{before}"
        );
    }
    assert_eq!(metric(&before, "tollgate_config_revision", &[]), Some(1.0));
    assert!(metric(&before, "tollgate_config_last_swap_timestamp_seconds", &[]).unwrap() > 1.7e9);
    assert_eq!(
        metric(
            &before,
            "tollgate_upstream_target_healthy",
            &[("api", "echo"), ("target", &up.url())]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&before, "tollgate_requests_total", &[]), None);

    let s = admin.create_subscription("m", "product:tiny").await;
    let key = s.primary.as_str();
    // A cache miss that goes upstream; then the rate limit (1 call per hour, before the
    // cache lookup in the chain) refuses the next two calls; then an upstream failure.
    let first = fetch(
        client()
            .get(gw.url("/echo/get"))
            .header("Ocp-Apim-Subscription-Key", key),
    )
    .await;
    assert_eq!(first.status, 200);
    let limited = fetch(
        client()
            .get(gw.url("/echo/get"))
            .header("Ocp-Apim-Subscription-Key", key),
    )
    .await;
    assert_eq!(limited.status, 429);
    let posted = fetch(
        client()
            .post(gw.url("/echo/post"))
            .header("Ocp-Apim-Subscription-Key", key)
            .body("0123456789"),
    )
    .await;
    assert_eq!(posted.status, 429);
    assert_eq!(call(&gw, None, "/down/x").await, 502);

    let text = {
        let start = Instant::now();
        loop {
            let t = operator.get("/metrics").await.text();
            if metric(&t, "tollgate_requests_total", &[]) == Some(4.0) {
                break t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "requests_total did not reach 4:\n{t}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let echo_get = [("api", "echo"), ("operation", "get"), ("product", "tiny")];
    assert_eq!(
        metric(
            &text,
            "tollgate_requests_total",
            &[
                ("api", "echo"),
                ("operation", "get"),
                ("status_class", "2xx"),
                ("outcome", "success")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_requests_total",
            &[
                ("api", "echo"),
                ("status_class", "4xx"),
                ("outcome", "blocked")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_requests_total",
            &[
                ("api", "down"),
                ("status_class", "5xx"),
                ("outcome", "failed")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "tollgate_request_duration_seconds_count", &echo_get),
        Some(2.0)
    );
    assert!(
        metric(
            &text,
            "tollgate_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        )
        .unwrap()
            >= 4.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_upstream_duration_seconds_count",
            &[("api", "echo")]
        ),
        Some(1.0)
    );
    assert!(metric(&text, "tollgate_response_bytes_total", &echo_get).unwrap() > 0.0);
    assert_eq!(
        metric(
            &text,
            "tollgate_rejections_total",
            &[("api", "echo"), ("reason", "rate-limit")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_cache_lookups_total",
            &[("api", "echo"), ("result", "miss")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "tollgate_analytics_events_dropped_total", &[]),
        Some(0.0)
    );
    assert!(metric(&text, "tollgate_analytics_flushes_total", &[]).unwrap_or(0.0) >= 0.0);
    // No subscription ids in labels.
    assert!(!text.contains("subscription="), "{text}");

    // A config swap moves the revision and the swap time.
    let swapped_before = metric(&text, "tollgate_config_last_swap_timestamp_seconds", &[]).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    admin
        .put_config(&cfg.replace("calls: 1,", "calls: 2,"))
        .await;
    let after = operator.get("/metrics").await.text();
    assert_eq!(metric(&after, "tollgate_config_revision", &[]), Some(2.0));
    assert!(
        metric(&after, "tollgate_config_last_swap_timestamp_seconds", &[]).unwrap()
            > swapped_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_to_the_otlp_endpoint_with_the_callers_trace_id() {
    let up = Upstream::start("u");
    let collector = Upstream::start("otlp");
    let gw = Gateway::builder(&echo_config(&up.url()))
        .admin_token(TOKEN)
        .env("TOLLGATE_OTLP_ENDPOINT", &collector.url())
        .start();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let a = fetch(
        client()
            .get(gw.url("/echo/traced"))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01")),
    )
    .await;
    assert_eq!(a.status, 200);
    // The upstream saw the gateway's span as its parent.
    let upstream_tp = up.expect_last().header("traceparent").unwrap().to_string();
    assert!(
        upstream_tp.starts_with(&format!("00-{trace_id}-")),
        "{upstream_tp}"
    );
    let span_id = upstream_tp.split('-').nth(2).unwrap().to_string();
    assert_ne!(span_id, "00f067aa0ba902b7");
    // The batch goes out within about a second.
    assert!(
        collector.wait_for_requests(1, Duration::from_secs(10)),
        "no OTLP export arrived; gateway log:\n{}",
        gw.log()
    );
    let export = collector
        .requests()
        .into_iter()
        .find(|r| r.path() == "/v1/traces")
        .unwrap_or_else(|| panic!("no POST /v1/traces: {:?}", collector.requests()));
    assert_eq!(export.method, "POST");
    assert_eq!(
        export.header("content-type"),
        Some("application/x-protobuf")
    );
    // Protobuf carries ids as raw bytes: the caller's trace id, the gateway's span id (the
    // upstream's parent) and the caller's span id (the span's parent) are all in the body.
    let bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    };
    let body = &export.body;
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&bytes(trace_id)), "trace id not in the export");
    assert!(contains(&bytes(&span_id)), "span id not in the export");
    assert!(
        contains(&bytes("00f067aa0ba902b7")),
        "parent span id not in the export"
    );
    assert!(contains(b"tollgate"), "service name not in the export");
    assert!(contains(b"http.response.status_code"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_one_json_line_per_request_without_secrets() {
    let up = Upstream::start("u");
    let gw = Gateway::builder(&simple(&up.url()))
        .admin_token(TOKEN)
        .env("TOLLGATE_ACCESS_LOG", "true")
        .start();
    let admin = gw.admin();
    let s = admin.create_subscription("logged", "api:echo").await;
    let a = fetch(client().get(gw.url(&format!("/echo/path?subscription-key={}&x=1", s.primary))))
        .await;
    assert_eq!(a.status, 200);
    let rid = a.header("x-request-id").unwrap().to_string();
    assert_eq!(call(&gw, None, "/echo/nokey").await, 401);
    let found = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        gw.log().contains(&rid) && gw.log().contains("\"/echo/nokey\"")
    });
    assert!(found, "no access log line for {rid}:\n{}", gw.log());
    // A request that fails after it was read (a malformed chunked body) makes Pingora
    // write an error line naming the request: the path and the request id, never the
    // query and the key in it.
    let bad = send_raw(
        gw.addr(),
        format!(
            "POST /echo/chunked?subscription-key={} HTTP/1.1\r\nHost: a\r\n\
             Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            s.primary
        )
        .as_bytes(),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    let bad_rid = bad.header("x-request-id").unwrap().to_string();
    let named = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        gw.log()
            .contains(&format!("POST /echo/chunked request-id={bad_rid}"))
    });
    assert!(named, "no error line names the request:\n{}", gw.log());
    let log = gw.log();
    assert!(!log.contains(&s.primary), "the key leaked into the log");
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ok = lines
        .iter()
        .find(|l| l["request_id"] == rid.as_str())
        .unwrap();
    assert_eq!(ok["path"], "/echo/path");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["subscription"], "logged");
    assert_eq!(ok["api"], "echo");
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(ok["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(
        ok["upstream"].as_str(),
        up.url().strip_prefix("http://"),
        "the upstream's host:port"
    );
    let time = ok["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
        "RFC 3339 UTC with milliseconds: {time}"
    );
    let refused = lines.iter().find(|l| l["path"] == "/echo/nokey").unwrap();
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["outcome"], "blocked");
    assert_eq!(refused["blocked_by"], "subscription");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_there_is_no_access_log_and_analytics_can_be_off() {
    let up = Upstream::start("u");
    let gw = Gateway::builder(&echo_config(&up.url()))
        .admin_token(TOKEN)
        .env("TOLLGATE_ANALYTICS", "off")
        .start();
    let a = fetch(client().get(gw.url("/echo/quiet"))).await;
    assert_eq!(a.status, 200);
    let rid = a.header("x-request-id").unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!gw.log().contains(&rid), "{}", gw.log());
    let r = report(&gw.admin(), "group_by=api").await;
    assert_eq!(r["total"]["calls_total"], 0);
}
