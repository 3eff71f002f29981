//! Rate limits and quotas end to end (issue 5): exact counts under 16 concurrent clients,
//! a true `Retry-After`, 429/503/403 problem answers, `remaining_calls_header`,
//! `increment_condition: success`, bandwidth (request + response bytes), calendar periods
//! in a time zone, counts that survive config swaps and restarts, and the usage calls.
//! Counters shared through Redis are in `limits_redis.rs`.
#![allow(missing_docs)]

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollgate_tests::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until the current epoch-aligned `period_ms` window has at least `left_ms` to go,
/// so a test that must stay inside one window does not straddle two.
async fn inside_window(period_ms: i64, left_ms: i64) {
    let left = period_ms - now_ms().rem_euclid(period_ms);
    if left < left_ms {
        tokio::time::sleep(Duration::from_millis(left as u64 + 20)).await;
    }
}

/// An API `pets` at `/pets` requiring a subscription, in product `gold`; `product` and
/// `api` are YAML lists of inbound entries (after `base`).
fn config(target: &str, product: &str, api: &str) -> String {
    format!(
        r#"version: 1
products:
  - id: gold
    apis: [pets]
    policies:
      inbound:
        - base
{product}apis:
  - id: pets
    path: /pets
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - base
{api}"#
    )
}

async fn call(gw: &Gateway, key: &str, path: &str) -> Answer {
    fetch(
        client()
            .get(gw.url(path))
            .header("Ocp-Apim-Subscription-Key", key),
    )
    .await
}

fn retry_after(a: &Answer, header: &str) -> u64 {
    a.header(header)
        .unwrap_or_else(|| panic!("no {header} header: {:?}", a.headers))
        .parse()
        .expect("whole seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_n_succeed_under_16_concurrent_clients() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        "        - rate-limit: { calls: 25, renewal_period: 1h }\n",
    ));
    let admin = gw.admin();
    let sub = admin.create_subscription("s1", "api:pets").await;
    inside_window(3_600_000, 60_000).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = gw.url("/pets/x");
        let key = sub.primary.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut statuses = Vec::new();
            for _ in 0..10 {
                let a = fetch(c.get(&url).header("Ocp-Apim-Subscription-Key", &key)).await;
                statuses.push(a.status);
            }
            statuses
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        for s in t.await.unwrap() {
            match s {
                200 => ok += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert_eq!((ok, limited), (25, 135));
    assert_eq!(up.count(), 25, "only counted calls reach the upstream");
}

#[tokio::test]
async fn retry_after_is_true() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        "        - rate-limit: { calls: 2, renewal_period: 2s, remaining_calls_header: X-RateLimit-Remaining }\n",
    ));
    let sub = gw.admin().create_subscription("s1", "api:pets").await;
    for round in 0..2 {
        // Start right after a window began, so the wait is most of a window.
        let into = now_ms().rem_euclid(2000);
        tokio::time::sleep(Duration::from_millis((2000 - into + 50) as u64)).await;
        for left in ["1", "0"] {
            let a = call(&gw, &sub.primary, "/pets/x").await;
            assert_eq!(a.status, 200, "round {round}");
            assert_eq!(a.header("x-ratelimit-remaining"), Some(left));
        }
        let a = call(&gw, &sub.primary, "/pets/x").await;
        let doc = a.assert_problem(429);
        assert_eq!(doc["status"], 429);
        assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));
        let wait = retry_after(&a, "retry-after");
        assert!((1..=2).contains(&wait), "Retry-After {wait}");
        // Well before the advertised time: still refused (with `wait` 2 s, more than a
        // second of the window was left).
        tokio::time::sleep(Duration::from_millis(300)).await;
        if wait >= 2 {
            call(&gw, &sub.primary, "/pets/x").await.assert_problem(429);
        }
        // Right after it: allowed.
        tokio::time::sleep(Duration::from_millis(wait * 1000 - 300 + 20)).await;
        let a = call(&gw, &sub.primary, "/pets/x").await;
        assert_eq!(a.status, 200, "a call after Retry-After succeeds");
    }
}

#[tokio::test]
async fn status_503_custom_header_and_keys() {
    let up = Upstream::start("u");
    let yaml = format!(
        r#"version: 1
apis:
  - id: open
    path: /open
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
    policies:
      inbound:
        - rate-limit-by-key: {{ calls: 1, renewal_period: 1h, status: 503, retry_after_header: X-Retry-In, counter_key: "{{request.header.x-client}}" }}
"#,
        up.url()
    );
    let gw = Gateway::start(&yaml);
    inside_window(3_600_000, 60_000).await;
    let send = |who: &'static str| fetch(client().get(gw.url("/open/x")).header("x-client", who));
    assert_eq!(send("alice").await.status, 200);
    assert_eq!(send("bob").await.status, 200);
    let a = send("alice").await;
    a.assert_problem(503);
    let wait = retry_after(&a, "x-retry-in");
    assert!((1..=3600).contains(&wait), "{wait}");
    assert!(a.header("retry-after").is_none());
}

#[tokio::test]
async fn success_only_counts_2xx_and_3xx() {
    let up = Upstream::start("u");
    let yaml = format!(
        r#"version: 1
apis:
  - id: open
    path: /open
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
    policies:
      inbound:
        - rate-limit-by-key: {{ calls: 2, renewal_period: 1h, counter_key: all, increment_condition: success }}
"#,
        up.url()
    );
    let gw = Gateway::start(&yaml);
    inside_window(3_600_000, 60_000).await;
    for _ in 0..5 {
        let a = fetch(client().get(gw.url("/open/x?status=500"))).await;
        assert_eq!(a.status, 500, "failures are not counted");
    }
    for _ in 0..2 {
        assert_eq!(fetch(client().get(gw.url("/open/x"))).await.status, 200);
    }
    fetch(client().get(gw.url("/open/x")))
        .await
        .assert_problem(429);
}

/// Seconds from now to the next local midnight of a zone `offset_h` hours west of UTC.
fn to_midnight(offset_h: i64) -> i64 {
    let local = now_ms() / 1000 - offset_h * 3600;
    86_400 - local.rem_euclid(86_400)
}

#[tokio::test]
async fn quota_403_until_the_calendar_day_ends_per_product_subscription() {
    let up = Upstream::start("u");
    // Etc/GMT+5 is UTC-5 (POSIX signs): its days end at 05:00 UTC.
    let gw = Gateway::start(&config(
        &up.url(),
        "        - quota: { calls: 3, renewal_period: calendar-day, timezone: Etc/GMT+5 }\n",
        "",
    ));
    if to_midnight(5) < 30 {
        tokio::time::sleep(Duration::from_secs(31)).await;
    }
    let admin = gw.admin();
    let s1 = admin.create_subscription("s1", "product:gold").await;
    let s2 = admin.create_subscription("s2", "product:gold").await;
    for _ in 0..3 {
        assert_eq!(call(&gw, &s1.primary, "/pets/x").await.status, 200);
    }
    let a = call(&gw, &s1.primary, "/pets/x").await;
    let doc = a.assert_problem(403);
    assert!(doc["detail"].as_str().unwrap().contains("quota"), "{doc}");
    let wait = retry_after(&a, "retry-after") as i64;
    let expected = to_midnight(5);
    assert!(
        (wait - expected).abs() <= 2,
        "Retry-After {wait}, midnight in {expected}"
    );
    // Another subscription of the product has its own counter.
    assert_eq!(call(&gw, &s2.primary, "/pets/x").await.status, 200);

    // The usage call lists it with its period end.
    let u = admin.get("/subscriptions/s1/usage").await;
    assert_eq!(u.status, 200, "{}", u.text());
    let u = u.json();
    assert_eq!(u["subscription"], "s1");
    let items = u["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{u}");
    assert_eq!(items[0]["policy"], "product:gold/inbound/1");
    assert_eq!(items[0]["kind"], "quota");
    assert_eq!(items[0]["counter_key"], "s1");
    assert_eq!(items[0]["calls"], 3);
    assert_eq!(items[0]["calls_limit"], 3);
    assert!(
        items[0]["period_end"]
            .as_str()
            .unwrap()
            .ends_with("T05:00:00Z"),
        "{u}"
    );
}

#[tokio::test]
async fn bandwidth_counts_request_and_response_bytes() {
    let up = Upstream::start("u");
    up.set_answer("text/plain", &[b'x'; 400], None);
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        "        - quota: { bandwidth: 1000, renewal_period: 1h }\n",
    ));
    let sub = gw.admin().create_subscription("s1", "api:pets").await;
    inside_window(3_600_000, 60_000).await;
    // 400 bytes out.
    assert_eq!(call(&gw, &sub.primary, "/pets/x").await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 300 in + 400 out: 1100 in all (without the request's bytes it would be 800).
    let a = fetch(
        client()
            .post(gw.url("/pets/x"))
            .header("Ocp-Apim-Subscription-Key", &sub.primary)
            .body(vec![b'y'; 300]),
    )
    .await;
    assert_eq!(a.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = call(&gw, &sub.primary, "/pets/x").await;
    let doc = a.assert_problem(403);
    assert!(
        doc["detail"].as_str().unwrap().contains("bandwidth"),
        "{doc}"
    );
    assert!(retry_after(&a, "retry-after") >= 1);
    let u = gw.admin().get("/subscriptions/s1/usage").await.json();
    assert_eq!(u["items"][0]["bandwidth"], 1100, "{u}");
    assert_eq!(u["items"][0]["bandwidth_limit"], 1000, "{u}");
}

#[tokio::test]
async fn quota_counts_survive_swaps_and_restarts_and_can_be_reset() {
    let up = Upstream::start("u");
    let quota = "        - quota: { calls: 5, renewal_period: 1d }\n";
    let mut gw = Gateway::builder(&config(&up.url(), quota, ""))
        .admin_token("admin-t")
        .operator_token("op-t")
        .start();
    inside_window(86_400_000, 120_000).await;
    let admin = gw.admin();
    let sub = admin.create_subscription("s1", "product:gold").await;
    assert_eq!(call(&gw, &sub.primary, "/pets/x").await.status, 200);

    // A config swap that keeps the quota at its position keeps the count.
    let swapped = config(
        &up.url(),
        quota,
        "        - set-header: { name: X-Gen, value: \"2\" }\n",
    );
    admin.put_config(&swapped).await;
    assert_eq!(call(&gw, &sub.primary, "/pets/x").await.status, 200);
    let u = admin.get("/subscriptions/s1/usage").await.json();
    assert_eq!(u["items"][0]["calls"], 2, "{u}");

    // A clean restart keeps it (flushed at shutdown).
    let dir = gw.shared_dir();
    assert!(gw.stop(Duration::from_secs(10)).success());
    let mut gw = Gateway::builder(&swapped)
        .admin_token("admin-t")
        .operator_token("op-t")
        .in_dir(dir.clone())
        .start();
    let admin = gw.admin();
    let u = admin.get("/subscriptions/s1/usage").await.json();
    assert_eq!(u["items"][0]["calls"], 2, "after a restart: {u}");
    assert_eq!(call(&gw, &sub.primary, "/pets/x").await.status, 200);

    // A crash loses at most the last second: written every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gw.kill9();
    let gw = Gateway::builder(&swapped)
        .admin_token("admin-t")
        .operator_token("op-t")
        .in_dir(dir)
        .start();
    let admin = gw.admin();
    for _ in 0..2 {
        assert_eq!(call(&gw, &sub.primary, "/pets/x").await.status, 200);
    }
    call(&gw, &sub.primary, "/pets/x").await.assert_problem(403);

    // Reset: operators may not, admins may; the counter starts over.
    let op = admin.with_token(Some("op-t"));
    assert_admin_problem(&op.post_empty("/subscriptions/s1/usage/reset").await, 403);
    assert_admin_problem(
        &admin.post_empty("/subscriptions/nope/usage/reset").await,
        404,
    );
    assert_admin_problem(&admin.get("/subscriptions/nope/usage").await, 404);
    let r = admin.post_empty("/subscriptions/s1/usage/reset").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"subscription": "s1", "reset": 1}));
    let u: Value = op.get("/subscriptions/s1/usage").await.json();
    assert_eq!(u["items"][0]["calls"], 0, "{u}");
    assert_eq!(call(&gw, &sub.primary, "/pets/x").await.status, 200);
}
