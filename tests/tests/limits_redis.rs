//! Counters shared through a real Redis (`--redis URL`, here `TOLLGATE_REDIS_URL`): two
//! `tollgate serve` processes against one Redis keep a limit exact; a Redis outage lets
//! rate limits through and refuses quotas (the documented `on_store_error` defaults, each
//! overridable); when Redis comes back, the nodes reconnect by themselves. Consecutive limit
//! policies cost one round trip per request (counted with `INFO commandstats`), and a
//! refusal leaves the limits after it uncounted.
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
  - id: chain
    path: /chain
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - rate-limit-by-key: {{ calls: 100, renewal_period: 1h, counter_key: c }}
        - quota-by-key: {{ calls: 100, renewal_period: 1h, counter_key: c }}
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
        // A rate limit and a quota checked in one round trip: the rate limit lets the call
        // through, the quota after it refuses, as when each made its own.
        let c = fetch(client().get(gw.url("/chain/x"))).await;
        let doc = c.assert_problem(503);
        assert!(
            doc["detail"].as_str().unwrap().contains("counter store"),
            "{doc}"
        );
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
    // Per check: 3 × (rl, q, rl-deny, q-allow, and the chain's two policies).
    assert!(value("error") >= 18.0, "{metrics}");
    assert!(
        value("allowed") >= 9.0 && value("denied") >= 9.0,
        "{metrics}"
    );

    // Back: the node reconnects by itself (the restarted Redis starts with empty counters).
    redis.restart();
    assert!(
        wait_until_async(
            Duration::from_secs(10),
            Duration::from_millis(200),
            || async { status(&gw, "/rl-deny/x").await == 200 }
        )
        .await,
        "the node did not reconnect to Redis within 10 s"
    );
    assert_eq!(status(&gw, "/q/x").await, 200);
    assert_eq!(status(&gw, "/q/x").await, 200);
    assert_eq!(status(&gw, "/q/x").await, 403);
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

/// A product-like chain: a rate limit then a quota per subscription, and the reverse order.
fn chain_config(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: rq
    path: /rq
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - rate-limit: {{ calls: 3, renewal_period: 1h, remaining_calls_header: X-RateLimit-Remaining }}
        - quota: {{ calls: 100, renewal_period: 1h }}
  - id: qr
    path: /qr
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - quota: {{ calls: 2, renewal_period: calendar-month, timezone: Europe/Berlin }}
        - rate-limit-by-key: {{ calls: 100, renewal_period: 1h, counter_key: "{{subscription.id}}", remaining_calls_header: X-RateLimit-Remaining }}
  - id: big
    path: /big
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - set-header: {{ name: X-Before, value: "1" }}
        - rate-limit: {{ calls: 1000, renewal_period: 1h }}
        - rate-limit-by-key: {{ calls: 1000, renewal_period: 1m, counter_key: "{{client.ip}}" }}
        - quota: {{ calls: 1000, renewal_period: 1h }}
        - quota-by-key: {{ calls: 1000, renewal_period: calendar-day, counter_key: "{{api.id}}" }}
"#
    )
}

#[tokio::test]
async fn a_rate_limit_and_a_quota_cost_one_redis_round_trip_per_request() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let gw = Gateway::builder(&chain_config(&up.url()))
        .env("TOLLGATE_REDIS_URL", &redis.url())
        .start();
    let admin = gw.admin();
    let sub = admin.create_subscription("s1", "all").await;
    inside_window(3_600_000, 60_000).await;
    inside_window(60_000, 10_000).await;
    let call = |path: &'static str| {
        fetch(
            client()
                .get(gw.url(path))
                .header("Ocp-Apim-Subscription-Key", &sub.primary),
        )
    };
    // Warm up: connect, load the script.
    assert_eq!(call("/rq/x").await.status, 200);
    assert_eq!(call("/big/x").await.status, 200);
    let before = redis.script_runs();
    // rate-limit + quota: 2 more calls (the limit is 3).
    for _ in 0..2 {
        assert_eq!(call("/rq/x").await.status, 200);
    }
    // Four limits in a row, after another policy.
    for _ in 0..20 {
        assert_eq!(call("/big/x").await.status, 200);
    }
    let runs = redis.script_runs() - before;
    assert_eq!(
        runs, 22,
        "one script run per request, not one per limit policy"
    );
    // Every counter of the four was counted each time.
    let u = admin.get("/subscriptions/s1/usage").await.json();
    let items = u["items"].as_array().unwrap();
    let calls = |policy: &str| {
        items
            .iter()
            .find(|i| i["policy"] == policy)
            .unwrap_or_else(|| panic!("no {policy}: {u}"))["calls"]
            .clone()
    };
    assert_eq!(calls("api:big/inbound/3"), 21, "{u}");
    assert_eq!(calls("api:big/inbound/4"), 21, "{u}");
    assert_eq!(calls("api:rq/inbound/1"), 3, "{u}");
}

/// Calls counted in Redis under the counter key matching `pattern` (`KEYS`), 0 when none.
fn redis_count(redis: &RedisServer, pattern: &str) -> u64 {
    let keys = redis
        .command(&format!("KEYS {pattern}"))
        .unwrap_or_default();
    // `*1\r\n$LEN\r\nKEY\r\n`
    let key = keys
        .lines()
        .find(|l| l.starts_with("tollgate:"))
        .unwrap_or_else(|| panic!("no key {pattern}: {keys:?}"))
        .to_owned();
    let reply = redis.command(&format!("HGET {key} c")).unwrap_or_default();
    reply
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_refusal_in_a_chain_leaves_the_limits_after_it_uncounted() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let gw = Gateway::builder(&chain_config(&up.url()))
        .env("TOLLGATE_REDIS_URL", &redis.url())
        .start();
    let admin = gw.admin();
    let sub = admin.create_subscription("s1", "all").await;
    inside_window(3_600_000, 60_000).await;
    let call = |path: &'static str| {
        fetch(
            client()
                .get(gw.url(path))
                .header("Ocp-Apim-Subscription-Key", &sub.primary),
        )
    };
    // rate-limit (3) then quota (100): the refused calls consume no quota.
    for left in ["2", "1", "0"] {
        let a = call("/rq/x").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-ratelimit-remaining"), Some(left));
    }
    for _ in 0..4 {
        let a = call("/rq/x").await;
        let doc = a.assert_problem(429);
        assert_eq!(
            doc["type"], "urn:tollgate:problem:rate-limit-exceeded",
            "{doc}"
        );
        let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&wait), "{wait}");
        assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));
    }
    assert_eq!(redis_count(&redis, "tollgate:q:api:rq/inbound/1|s1|*"), 3);
    assert_eq!(redis_count(&redis, "tollgate:rl:api:rq/inbound/0|s1|*"), 3);
    let u = admin.get("/subscriptions/s1/usage").await.json();
    let q = u["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["policy"] == "api:rq/inbound/1")
        .unwrap_or_else(|| panic!("{u}"))
        .clone();
    assert_eq!(q["calls"], 3, "{u}");

    // quota (2) then rate-limit-by-key (100): the quota refuses with 403 and the rate limit
    // after it neither counts nor answers its header.
    for left in ["99", "98"] {
        let a = call("/qr/x").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-ratelimit-remaining"), Some(left));
    }
    for _ in 0..3 {
        let a = call("/qr/x").await;
        let doc = a.assert_problem(403);
        assert_eq!(doc["type"], "urn:tollgate:problem:quota-exceeded", "{doc}");
        let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!(wait >= 1, "{wait}");
        assert_eq!(a.header("x-ratelimit-remaining"), None);
    }
    assert_eq!(redis_count(&redis, "tollgate:rl:api:qr/inbound/1|s1|*"), 2);
    assert_eq!(redis_count(&redis, "tollgate:q:api:qr/inbound/0|s1|*"), 2);
}

/// A managed-Redis set-up: `rediss://` with a password, the server's certificate from a
/// private CA (`--redis-ca`), and a client certificate the server demands (`--redis-cert`,
/// `--redis-key`). Two such nodes share one quota through it; a node that does not trust
/// the server's certificate cannot count (quotas deny, 503), and no log holds the password.
#[tokio::test]
async fn redis_over_tls_with_a_password_and_a_client_certificate() {
    use tollgate_tests::pki::Authority;
    let ca = Authority::new("redis CA");
    let server = ca.server(&["127.0.0.1"]);
    let me = ca.client("tollgate-node");
    let password = "s3cret-pa55word";
    let redis = RedisServer::start_tls(&RedisTlsOptions {
        cert_pem: server.cert_pem.clone(),
        key_pem: server.key_pem.clone(),
        client_ca_pem: ca.cert_pem().to_owned(),
        require_client_cert: true,
        password: Some(password.to_owned()),
    });
    let files = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| write_file(files.path(), name, text);
    let (ca_file, cert_file, key_file) = (
        write("ca.pem", ca.cert_pem()),
        write("me.pem", &me.cert_pem),
        write("me.key", &me.key_pem),
    );
    let up = Upstream::start("u");
    let node = || {
        Gateway::builder(&config(&up.url()))
            .env("TOLLGATE_REDIS_URL", &redis.tls_url())
            .env("TOLLGATE_REDIS_CA", &ca_file)
            .env("TOLLGATE_REDIS_CERT", &cert_file)
            .env("TOLLGATE_REDIS_KEY", &key_file)
            .start()
    };
    let (a, b) = (node(), node());
    inside_window(3_600_000, 60_000).await;
    assert_eq!(status(&a, "/q/x").await, 200);
    assert_eq!(status(&b, "/q/x").await, 200);
    fetch(client().get(a.url("/q/x"))).await.assert_problem(403);
    assert_eq!(redis_count(&redis, "tollgate:q:*"), 2);
    // The system's store does not know the private CA: nothing is counted, quotas deny.
    let doubting = Gateway::builder(&config(&up.url()))
        .env("TOLLGATE_REDIS_URL", &redis.tls_url())
        .env("TOLLGATE_REDIS_CERT", &cert_file)
        .env("TOLLGATE_REDIS_KEY", &key_file)
        .start();
    fetch(client().get(doubting.url("/q/x")))
        .await
        .assert_problem(503);
    assert_eq!(redis_count(&redis, "tollgate:q:*"), 2);
    for gw in [&a, &b, &doubting] {
        assert!(!gw.log().contains(password), "{}", gw.log());
    }
}
