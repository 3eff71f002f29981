//! Counters shared through a real Redis (`--redis URL`, here `TOLLGATE_REDIS_URL`): two
//! `tollgate serve` processes against one Redis keep a limit exact; a Redis outage lets
//! rate limits through and refuses quotas (the documented `on_store_error` defaults, each
//! overridable); when Redis comes back, the nodes reconnect by themselves.
#![allow(missing_docs)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollgate_tests::*;

async fn inside_window(period_ms: i64, left_ms: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let left = period_ms - now.rem_euclid(period_ms);
    if left < left_ms {
        tokio::time::sleep(Duration::from_millis(left as u64 + 20)).await;
    }
}

fn config(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: rl
    path: /rl
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - rate-limit-by-key: {{ calls: 30, renewal_period: 1h, counter_key: shared }}
  - id: q
    path: /q
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - quota-by-key: {{ calls: 2, renewal_period: 1h, counter_key: shared }}
  - id: rl-deny
    path: /rl-deny
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - rate-limit-by-key: {{ calls: 100, renewal_period: 1h, counter_key: d, on_store_error: deny }}
  - id: q-allow
    path: /q-allow
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - quota-by-key: {{ calls: 100, renewal_period: 1h, counter_key: a, on_store_error: allow }}
"#
    )
}

fn node(redis: &RedisServer, target: &str) -> Gateway {
    Gateway::builder(&config(target))
        .env("TOLLGATE_REDIS_URL", &redis.url())
        .start()
}

async fn status(gw: &Gateway, path: &str) -> u16 {
    fetch(client().get(gw.url(path))).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_exact_limit() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let a = node(&redis, &up.url());
    let b = node(&redis, &up.url());
    inside_window(3_600_000, 60_000).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let url = if i % 2 == 0 {
            a.url("/rl/x")
        } else {
            b.url("/rl/x")
        };
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut statuses = Vec::new();
            for _ in 0..5 {
                statuses.push(fetch(c.get(&url)).await.status);
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
    assert_eq!(
        (ok, limited),
        (30, 50),
        "30 calls in all, across both nodes"
    );
    // Both nodes see the same, exhausted counter.
    assert_eq!(status(&a, "/rl/x").await, 429);
    assert_eq!(status(&b, "/rl/x").await, 429);
    // A quota too: one call on each node, the third refused on either.
    assert_eq!(status(&a, "/q/x").await, 200);
    assert_eq!(status(&b, "/q/x").await, 200);
    let r = fetch(client().get(a.url("/q/x"))).await;
    r.assert_problem(403);
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn a_redis_outage_allows_rate_limits_denies_quotas_and_recovers() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("u");
    let gw = node(&redis, &up.url());
    inside_window(3_600_000, 60_000).await;
    assert_eq!(status(&gw, "/q/x").await, 200);
    assert_eq!(status(&gw, "/q/x").await, 200);
    assert_eq!(status(&gw, "/q/x").await, 403);
    assert_eq!(status(&gw, "/rl-deny/x").await, 200);

    redis.kill();
    // Rate limits allow by default, quotas deny by default (503, not a quota 403).
    for _ in 0..3 {
        assert_eq!(status(&gw, "/rl/x").await, 200);
        let q = fetch(client().get(gw.url("/q/x"))).await;
        let doc = q.assert_problem(503);
        assert!(
            doc["detail"].as_str().unwrap().contains("counter store"),
            "{doc}"
        );
        // Each default can be flipped per policy.
        assert_eq!(status(&gw, "/rl-deny/x").await, 503);
        assert_eq!(status(&gw, "/q-allow/x").await, 200);
    }

    // The failures are on /metrics, by what the policies did about them.
    let metrics = gw.admin().get("/metrics").await.text();
    let value = |outcome: &str| -> f64 {
        let prefix = format!("tollgate_counter_store_errors_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(value("error") >= 12.0, "{metrics}");
    assert!(
        value("allowed") >= 6.0 && value("denied") >= 6.0,
        "{metrics}"
    );

    // Back: the node reconnects by itself (the restarted Redis starts with empty counters).
    redis.restart();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            status(&gw, "/rl-deny/x").await == 200
        })
        .await,
        "the node did not reconnect to Redis within 10 s"
    );
    assert_eq!(status(&gw, "/q/x").await, 200);
    assert_eq!(status(&gw, "/q/x").await, 200);
    assert_eq!(status(&gw, "/q/x").await, 403);
}

/// Polls `check` every 200 ms until it is true or `timeout` passed.
async fn wait_until_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn usage_reads_and_resets_the_shared_counters() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let yaml = format!(
        r#"version: 1
apis:
  - id: pets
    path: /pets
    upstream: {{ targets: ["{}"] }}
    policies:
      inbound:
        - quota: {{ calls: 3, renewal_period: 1h }}
"#,
        up.url()
    );
    let gw = Gateway::builder(&yaml)
        .env("TOLLGATE_REDIS_URL", &redis.url())
        .start();
    inside_window(3_600_000, 60_000).await;
    let admin = gw.admin();
    let sub = admin.create_subscription("s1", "api:pets").await;
    let call = || {
        fetch(
            client()
                .get(gw.url("/pets/x"))
                .header("Ocp-Apim-Subscription-Key", &sub.primary),
        )
    };
    assert_eq!(call().await.status, 200);
    assert_eq!(call().await.status, 200);
    let u = admin.get("/subscriptions/s1/usage").await.json();
    assert_eq!(u["items"][0]["calls"], 2, "{u}");
    assert_eq!(u["items"][0]["policy"], "api:pets/inbound/0", "{u}");
    // The counter is in Redis, under a key naming its window.
    let keys = redis.command("KEYS tollgate:q:*").unwrap_or_default();
    assert!(keys.contains("api:pets/inbound/0|s1|"), "{keys}");
    let r = admin.post_empty("/subscriptions/s1/usage/reset").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u = admin.get("/subscriptions/s1/usage").await.json();
    assert_eq!(u["items"][0]["calls"], 0, "{u}");
    for _ in 0..3 {
        assert_eq!(call().await.status, 200);
    }
    call().await.assert_problem(403);
}
