//! Scale-out, end to end with real processes on loopback: one control plane (`tollgate
//! admin`), two data planes (`tollgate gateway --control-plane URL`), a real upstream.
//!
//! - config propagation time, measured over 20 changes on both data planes (p99 < 1 s);
//! - a subscription created (suspended, re-keyed) on the control plane works (stops working)
//!   on both data planes within 1 s;
//! - the data planes keep serving with the control plane killed; one restarted meanwhile
//!   starts from its last-known-good file and serves; when the control plane is back, both
//!   catch up with what changed.
//!
//! The tests of this file run one at a time (a lock): they measure latencies on a shared
//! two-core machine.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tollgate_tests::*;

const ADMIN_TOKEN: &str = "admin-token-scale-out";
const DP_TOKEN: &str = "dataplane-token-scale-out";

/// One test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(target: &str, generation: u32) -> String {
    format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - set-header: {{ name: X-Gen, value: "{generation}" }}
  - id: keyed
    path: /keyed
    upstream: {{ targets: ["{target}"] }}
"#
    )
}

fn control_plane(config: &str) -> Gateway {
    Gateway::builder(config)
        .admin_only()
        .admin_token(ADMIN_TOKEN)
        .env("TOLLGATE_DATAPLANE_TOKEN", DP_TOKEN)
        .start()
}

fn data_plane(cp_url: &str) -> GatewayBuilder {
    Gateway::builder("")
        .data_plane(cp_url)
        .env("TOLLGATE_TOKEN", DP_TOKEN)
}

async fn readyz(dp: &Gateway) -> serde_json::Value {
    let a = get(&dp.status_url("/readyz")).await;
    serde_json::from_slice(&a.body).unwrap_or_else(|_| panic!("readyz: {}", a.text()))
}

async fn generation(dp: &Gateway) -> Option<u32> {
    let a = get(&dp.url("/echo/x")).await;
    (a.status == 200)
        .then(|| a.header("x-gen").and_then(|g| g.parse().ok()))
        .flatten()
}

async fn status_with_key(dp: &Gateway, key: &str) -> u16 {
    fetch(
        client()
            .get(dp.url("/keyed/x"))
            .header("Ocp-Apim-Subscription-Key", key),
    )
    .await
    .status
}

/// Polls `check` every 5 ms until it holds; the time it took, or `None` after `limit`.
async fn time_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When `dp` first answered from generation `g` (polled every 5 ms, at most 10 s).
async fn served_at(dp: &Gateway, g: u32) -> Option<Instant> {
    let limit = Instant::now() + Duration::from_secs(10);
    while Instant::now() < limit {
        if generation(dp).await == Some(g) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_changes_reach_every_data_plane_within_a_second() {
    let _serial = SERIAL.lock().await;
    let up = Upstream::start("u");
    let cp = control_plane(&config(&up.url(), 0));
    let dps = [
        data_plane(&cp.admin_url("")).start(),
        data_plane(&cp.admin_url("")).start(),
    ];
    for dp in &dps {
        assert_eq!(generation(dp).await, Some(0));
        let r = readyz(dp).await;
        assert_eq!(r["revision"], 1);
        assert_eq!(r["source"], "control-plane");
    }
    let admin = cp.admin();
    let mut samples = Vec::new();
    for g in 1..=20u32 {
        let text = config(&up.url(), g);
        // Measured from the moment the write is sent to the control plane to the first
        // answer of each data plane from the new config.
        let sent = Instant::now();
        let (put, a, b) = tokio::join!(
            admin.put_config(&text),
            served_at(&dps[0], g),
            served_at(&dps[1], g)
        );
        assert!(put["revision"].as_u64().unwrap() > 1);
        for (i, seen) in [a, b].into_iter().enumerate() {
            let seen = seen.unwrap_or_else(|| panic!("data plane {i} never served generation {g}"));
            samples.push(seen - sent);
        }
        // Settle between changes, so each one is measured on its own.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples.sort();
    let p50 = percentile(&samples, 50.0);
    let p99 = percentile(&samples, 99.0);
    eprintln!(
        "config propagation over {} samples (20 changes x 2 data planes): p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        p50,
        p99,
        samples.last().unwrap()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // Every data plane says which revision it serves: the control plane's.
    let live = admin.live_revision().await;
    for dp in &dps {
        assert_eq!(readyz(dp).await["revision"], live);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_changes_reach_every_data_plane_within_a_second() {
    let _serial = SERIAL.lock().await;
    let up = Upstream::start("u");
    let cp = control_plane(&config(&up.url(), 0));
    let dps = [
        data_plane(&cp.admin_url("")).start(),
        data_plane(&cp.admin_url("")).start(),
    ];
    let admin = cp.admin();
    for dp in &dps {
        assert_eq!(status_with_key(dp, "no-such-key").await, 401);
    }

    // Created: works on both within 1 s.
    let sent = Instant::now();
    let sub = admin.create_subscription("alice", "api:keyed").await;
    for dp in &dps {
        let took = time_until(Duration::from_secs(5), || async {
            status_with_key(dp, &sub.primary).await == 200
        })
        .await
        .expect("the new key never worked");
        assert!(sent.elapsed() < Duration::from_secs(1), "took {took:?}");
        assert_eq!(status_with_key(dp, &sub.secondary).await, 200);
        assert_eq!(readyz(dp).await["subscriptions"], 1);
    }

    // Suspended: refused (403) on both within 1 s.
    let sent = Instant::now();
    let a = admin
        .patch_json(
            "/subscriptions/alice",
            &serde_json::json!({"state": "suspended"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    for dp in &dps {
        time_until(Duration::from_secs(5), || async {
            status_with_key(dp, &sub.primary).await == 403
        })
        .await
        .expect("the suspension never arrived");
        assert!(sent.elapsed() < Duration::from_secs(1));
    }

    // Reactivated and re-keyed: the old primary key stops working, the new one works.
    let a = admin
        .patch_json(
            "/subscriptions/alice",
            &serde_json::json!({"state": "active"}),
        )
        .await;
    assert_eq!(a.status, 200);
    let sent = Instant::now();
    let a = admin
        .post_empty("/subscriptions/alice/regenerate-primary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let new_key = a.json()["primary_key"].as_str().unwrap().to_string();
    for dp in &dps {
        time_until(Duration::from_secs(5), || async {
            status_with_key(dp, &new_key).await == 200
        })
        .await
        .expect("the new key never worked");
        assert!(sent.elapsed() < Duration::from_secs(1));
        assert_eq!(status_with_key(dp, &sub.primary).await, 401);
        assert_eq!(status_with_key(dp, &sub.secondary).await, 200);
    }
    // No subscription change made a config revision.
    assert_eq!(admin.live_revision().await, 1);
}

/// A counter of the data plane's `/metrics` (the whole line's name, labels included).
async fn dp_counter(dp: &Gateway, name: &str) -> u64 {
    let text = get(&dp.status_url("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// `/metrics` lines of a data plane's snapshot transfers.
const WHOLE: &str = "tollgate_dataplane_snapshots_received_total{kind=\"whole\"}";
const DELTA: &str = "tollgate_dataplane_snapshots_received_total{kind=\"delta\"}";
const BYTES: &str = "tollgate_dataplane_snapshot_received_bytes_total";

/// A control plane serving `config(upstream, 0)` with ten subscriptions (`s0`..`s9`), so
/// that one change is a small delta.
async fn control_plane_with_ten(up: &Upstream) -> Gateway {
    let cp = control_plane(&config(&up.url(), 0));
    let admin = cp.admin();
    for i in 0..10 {
        admin
            .create_subscription(&format!("s{i}"), "api:keyed")
            .await;
    }
    cp
}

/// Waits (bounded) until `dp` serves `n` subscriptions.
async fn wait_for_subscriptions(dp: &Gateway, n: u64) {
    time_until(Duration::from_secs(5), || async {
        readyz(dp).await["subscriptions"] == n
    })
    .await
    .expect("the data plane never got the subscriptions");
}

/// After the first whole snapshot, subscription changes (and a config change) reach a data
/// plane as deltas: the changed entries only, applied to the snapshot it holds and
/// verified against the version. A caller without a snapshot, or with a version the
/// control plane does not know, gets the whole snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_changes_travel_as_deltas() {
    let _serial = SERIAL.lock().await;
    let up = Upstream::start("u");
    let cp = control_plane_with_ten(&up).await;
    let admin = cp.admin();
    let dp = data_plane(&cp.admin_url("")).start();
    wait_for_subscriptions(&dp, 10).await;
    assert_eq!(dp_counter(&dp, WHOLE).await, 1);
    assert_eq!(dp_counter(&dp, DELTA).await, 0);
    let whole_bytes = dp_counter(&dp, BYTES).await;

    // A new subscription, then a suspension: each a delta of one entry.
    let v0 = readyz(&dp).await["version"].as_str().unwrap().to_string();
    let sub = admin.create_subscription("alice", "api:keyed").await;
    time_until(Duration::from_secs(5), || async {
        status_with_key(&dp, &sub.primary).await == 200
    })
    .await
    .expect("the new key never worked");
    let a = admin
        .patch_json(
            "/subscriptions/s3",
            &serde_json::json!({"state": "suspended"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    time_until(Duration::from_secs(5), || async {
        readyz(&dp).await["version"] != v0 && dp_counter(&dp, DELTA).await >= 2
    })
    .await
    .expect("the suspension never arrived as a delta");
    assert_eq!(
        dp_counter(&dp, WHOLE).await,
        1,
        "a whole snapshot was sent again"
    );
    let delta_bytes = dp_counter(&dp, BYTES).await - whole_bytes;
    assert!(
        delta_bytes * 2 < whole_bytes,
        "two deltas took {delta_bytes} bytes, the whole snapshot {whole_bytes}"
    );

    // What the control plane answers, asked directly: from v0, the two entries; from a
    // version it does not know, or without delta=true, the whole snapshot.
    let poll = |query: String| {
        fetch(
            client()
                .get(cp.admin_url(&format!("/control/snapshot?wait=0&{query}")))
                .bearer_auth(DP_TOKEN),
        )
    };
    let a = poll(format!("after={v0}&delta=true")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("content-type"),
        Some("application/vnd.tollgate.snapshot-delta+json")
    );
    let d = a.json();
    assert_eq!(d["base"], v0.as_str());
    let ids: Vec<&str> = d["upserts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "s3"]);
    assert_eq!(d["removed"].as_array().unwrap().len(), 0);
    assert!(
        d.get("config_text").is_none(),
        "same revision: no config text"
    );
    for query in [
        format!("after={v0}"),
        "after=1.0000000000000000&delta=true".into(),
    ] {
        let a = poll(query).await;
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.json()["subscriptions"].as_array().unwrap().len(), 11);
    }

    // A deleted subscription and a config change: one delta with the new config text.
    let a = admin.delete("/subscriptions/s7").await;
    assert!(a.status == 204 || a.status == 200, "{}", a.text());
    admin.put_config(&config(&up.url(), 1)).await;
    time_until(Duration::from_secs(5), || async {
        generation(&dp).await == Some(1) && readyz(&dp).await["subscriptions"] == 10
    })
    .await
    .expect("the config change never arrived");
    assert_eq!(
        dp_counter(&dp, WHOLE).await,
        1,
        "a whole snapshot was sent again"
    );
    assert!(dp_counter(&dp, DELTA).await >= 3);
    assert_eq!(status_with_key(&dp, &sub.primary).await, 200);
}

/// Between a data plane and its control plane: passes every call on, but spoils the next
/// delta it carries while `spoil` is set (one subscription's state changed, as a bug or a
/// tampering would), then clears `spoil`. Returns its address.
async fn spoiling_relay(
    control_plane: String,
    spoil: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (http, base, spoil) = (http.clone(), control_plane.clone(), spoil.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (http, base, spoil) = (http.clone(), base.clone(), spoil.clone());
                    async move {
                        let uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        let mut out = http.get(format!("{base}{uri}"));
                        for name in ["authorization", "x-tollgate-node"] {
                            if let Some(v) = req.headers().get(name) {
                                out = out.header(name, v.clone());
                            }
                        }
                        let resp = out.send().await.expect("control plane");
                        let status = resp.status();
                        let kind = resp.headers().get("content-type").cloned();
                        let mut body = resp.bytes().await.expect("body").to_vec();
                        let is_delta = kind
                            .as_ref()
                            .is_some_and(|k| k.as_bytes().ends_with(b"delta+json"));
                        if is_delta && spoil.swap(false, Ordering::SeqCst) {
                            let mut d: serde_json::Value =
                                serde_json::from_slice(&body).expect("delta");
                            d["upserts"][0]["state"] = "cancelled".into();
                            body = serde_json::to_vec(&d).expect("json");
                        }
                        let mut answer = hyper::Response::builder().status(status.as_u16());
                        if let Some(k) = kind {
                            answer = answer.header("content-type", k);
                        }
                        Ok::<_, std::convert::Infallible>(
                            answer
                                .body(Full::new(bytes::Bytes::from(body)).boxed())
                                .expect("answer"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A delta that does not produce the version it names (spoiled on the way here) is not
/// applied: the data plane keeps serving what it had, asks for the whole snapshot, and
/// serves that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delta_that_does_not_verify_is_dropped_for_the_whole_snapshot() {
    let _serial = SERIAL.lock().await;
    let up = Upstream::start("u");
    let cp = control_plane_with_ten(&up).await;
    let admin = cp.admin();
    let spoil = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = spoiling_relay(cp.admin_url(""), spoil.clone()).await;
    let dp = data_plane(&format!("http://{relay}")).start();
    wait_for_subscriptions(&dp, 10).await;
    assert_eq!(dp_counter(&dp, WHOLE).await, 1);

    spoil.store(true, std::sync::atomic::Ordering::SeqCst);
    let sub = admin.create_subscription("alice", "api:keyed").await;
    time_until(Duration::from_secs(10), || async {
        status_with_key(&dp, &sub.primary).await == 200
    })
    .await
    .expect("the new key never worked");
    assert!(
        !spoil.load(std::sync::atomic::Ordering::SeqCst),
        "no delta went by"
    );
    assert_eq!(dp_counter(&dp, DELTA).await, 1, "the spoiled delta");
    assert_eq!(dp_counter(&dp, WHOLE).await, 2, "then the whole snapshot");
    assert!(dp.log().contains("did not apply"), "{}", dp.log());
    assert_eq!(readyz(&dp).await["subscriptions"], 11);
    // It goes on with deltas.
    let bob = admin.create_subscription("bob", "api:keyed").await;
    time_until(Duration::from_secs(10), || async {
        status_with_key(&dp, &bob.primary).await == 200
    })
    .await
    .expect("the next key never worked");
    assert_eq!(dp_counter(&dp, DELTA).await, 2);
    assert_eq!(dp_counter(&dp, WHOLE).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_planes_outlive_the_control_plane_and_restart_from_last_known_good() {
    let _serial = SERIAL.lock().await;
    let up = Upstream::start("u");
    let mut cp = control_plane(&config(&up.url(), 0));
    let cp_addr: SocketAddr = cp.admin_addr();
    let cp_dir = cp.shared_dir();
    let mut dp1 = data_plane(&cp.admin_url("")).start();
    let dp2 = data_plane(&cp.admin_url("")).start();
    let admin = cp.admin();
    let sub = admin.create_subscription("bob", "all").await;
    admin.put_config(&config(&up.url(), 2)).await;
    for dp in [&dp1, &dp2] {
        time_until(Duration::from_secs(5), || async {
            generation(dp).await == Some(2) && status_with_key(dp, &sub.primary).await == 200
        })
        .await
        .expect("the data plane never caught up");
    }

    // The last-known-good file: private (it holds the installation secret and digests).
    let lkg = dp1.data_dir().join("last-known-good.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&lkg).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "last-known-good.json mode {mode:o}");
    let text = std::fs::read_to_string(&lkg).unwrap();
    assert!(!text.contains(&sub.primary), "a key in plain text");

    // The control plane dies: both data planes keep serving, unchanged.
    cp.kill9();
    let until = Instant::now() + Duration::from_secs(2);
    let mut served = 0;
    while Instant::now() < until {
        for dp in [&dp1, &dp2] {
            assert_eq!(generation(dp).await, Some(2));
            assert_eq!(status_with_key(dp, &sub.primary).await, 200);
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served > 10);
    for dp in [&dp1, &dp2] {
        let r = readyz(dp).await;
        assert_eq!(r["status"], "ready");
        assert_eq!(r["revision"], 2);
        assert_eq!(r["control_plane"]["connected"], false, "{r}");
    }

    // A data plane restarted meanwhile starts from its last-known-good file and serves.
    let dp1_dir = dp1.shared_dir();
    dp1.kill9();
    drop(dp1);
    let dp1 = data_plane(&format!("http://{cp_addr}"))
        .in_dir(dp1_dir)
        .start();
    let r = readyz(&dp1).await;
    assert_eq!(r["source"], "last-known-good", "{r}");
    assert_eq!(r["revision"], 2);
    assert_eq!(generation(&dp1).await, Some(2));
    assert_eq!(status_with_key(&dp1, &sub.primary).await, 200);
    assert_eq!(status_with_key(&dp1, "no-such-key").await, 401);

    // The control plane comes back where the data planes look for it; a change made there
    // reaches both (the reconnect backoff is at most 5 s).
    let cp = Gateway::builder(&config(&up.url(), 0))
        .admin_only()
        .without_config_flag()
        .in_dir(cp_dir)
        .admin_listen(cp_addr)
        .admin_token(ADMIN_TOKEN)
        .env("TOLLGATE_DATAPLANE_TOKEN", DP_TOKEN)
        .start();
    let admin = cp.admin();
    assert_eq!(admin.live_revision().await, 2);
    admin.put_config(&config(&up.url(), 3)).await;
    let carol = admin.create_subscription("carol", "api:keyed").await;
    for dp in [&dp1, &dp2] {
        time_until(Duration::from_secs(15), || async {
            generation(dp).await == Some(3) && status_with_key(dp, &carol.primary).await == 200
        })
        .await
        .expect("the data plane never caught up with the control plane");
        let r = readyz(dp).await;
        assert_eq!(r["revision"], 3);
        assert_eq!(r["source"], "control-plane");
        assert_eq!(r["control_plane"]["connected"], true);
        // Keys made before the outage still work: the installation secret is the same.
        assert_eq!(status_with_key(dp, &sub.primary).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_plane_needs_the_dataplane_token() {
    let _serial = SERIAL.lock().await;
    let up = Upstream::start("u");
    let cp = control_plane(&config(&up.url(), 0));
    // The dataplane token takes snapshots and reads nothing else; the operator token may not
    // take snapshots (router tests), the admin token may.
    let dp_client = cp.admin().with_token(Some(DP_TOKEN));
    assert_eq!(dp_client.get("/config").await.status, 403);
    assert_eq!(cp.admin().get("/control/snapshot").await.status, 200);
    let a = dp_client.get("/control/snapshot").await;
    assert_eq!(a.status, 200);
    let snap = a.json();
    assert_eq!(snap["revision"], 1);
    assert_eq!(snap["installation_secret"].as_str().unwrap().len(), 64);
    // A data plane with a wrong token never becomes ready, and says why.
    let data = tempfile::tempdir().unwrap();
    let dp = std::process::Command::new(tollgate_bin())
        .args(["gateway", "--control-plane", &cp.admin_url("")])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--status-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data.path())
        .env("TOLLGATE_TOKEN", "wrong")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = dp.id();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = tokio::task::spawn_blocking(move || dp.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("401"), "{log}");
    assert!(log.contains("TOLLGATE_DATAPLANE_TOKEN"), "{log}");
}

/// Sleeps into the next window of `period_ms` when less than `left_ms` of this one is left.
async fn inside_window(period_ms: i64, left_ms: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let left = period_ms - now.rem_euclid(period_ms);
    if left < left_ms {
        tokio::time::sleep(Duration::from_millis(left as u64 + 20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_exact_across_data_planes_sharing_redis() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let text = format!(
        r#"version: 1
apis:
  - id: limited
    path: /limited
    upstream: {{ targets: ["{}"] }}
    policies:
      inbound:
        - rate-limit: {{ calls: 10, renewal_period: 1h }}
        - quota: {{ calls: 1000, renewal_period: 1h }}
"#,
        up.url()
    );
    let cp = Gateway::builder(&text)
        .admin_only()
        .admin_token(ADMIN_TOKEN)
        .env("TOLLGATE_DATAPLANE_TOKEN", DP_TOKEN)
        .env("TOLLGATE_REDIS_URL", &redis.url())
        .start();
    let dps = [
        data_plane(&cp.admin_url(""))
            .env("TOLLGATE_REDIS_URL", &redis.url())
            .start(),
        data_plane(&cp.admin_url(""))
            .env("TOLLGATE_REDIS_URL", &redis.url())
            .start(),
    ];
    let admin = cp.admin();
    let sub = admin.create_subscription("shared", "api:limited").await;
    for dp in &dps {
        time_until(Duration::from_secs(5), || async {
            let a = fetch(
                client()
                    .head(dp.url("/nothing-here"))
                    .header("Ocp-Apim-Subscription-Key", &sub.primary),
            )
            .await;
            a.status == 404
        })
        .await
        .expect("data plane up");
    }
    // The new key is on both data planes before any counted call.
    let known = |dp: &Gateway| {
        let url = dp.status_url("/readyz");
        async move {
            let a = get(&url).await;
            serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()["subscriptions"] == 1
        }
    };
    for dp in &dps {
        time_until(Duration::from_secs(5), || known(dp))
            .await
            .expect("the subscription never reached the data plane");
    }
    inside_window(3_600_000, 60_000).await;
    // 30 concurrent calls, alternating between the two data planes: exactly 10 pass.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let url = dps[i % 2].url("/limited/x");
        let key = sub.primary.clone();
        tasks.push(tokio::spawn(async move {
            fetch(client().get(url).header("Ocp-Apim-Subscription-Key", key))
                .await
                .status
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, limited), (10, 20), "one limit across both data planes");
    // The control plane's usage call reads the shared quota counter: the 10 calls that
    // passed the rate limit, from both data planes.
    let u = admin.get("/subscriptions/shared/usage").await.json();
    let quota = u["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "quota")
        .unwrap_or_else(|| panic!("no quota item: {u}"))
        .clone();
    assert_eq!(quota["calls"], 10, "{u}");
    assert_eq!(quota["calls_limit"], 1000, "{u}");
}

/// The control plane's analytics total (`GET /analytics/requests?group_by=status`).
async fn analytics_total(admin: &Admin) -> serde_json::Value {
    let a = admin.get("/analytics/requests?group_by=status").await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

/// Polls the control plane's analytics until they count `calls` calls (at most `within`);
/// panics if they ever count more.
async fn wait_for_calls(admin: &Admin, calls: u64, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let r = analytics_total(admin).await;
        let total = r["total"]["calls_total"].as_u64().unwrap();
        assert!(total <= calls, "more calls than were sent: {r:#}");
        if total == calls {
            return r;
        }
        assert!(
            start.elapsed() < within,
            "{total} of {calls} calls after {within:?}: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `n` calls to `dp`: `ok` of them to the echo API, the rest to no API (404).
async fn send(dp: &Gateway, n: u64, ok: u64) {
    for i in 0..n {
        let path = if i < ok { "/echo/a" } else { "/nowhere" };
        let status = get(&dp.url(path)).await.status;
        assert_eq!(status, if i < ok { 200 } else { 404 });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analytics_are_the_exact_sum_over_data_planes() {
    let _serial = SERIAL.lock().await;
    let up = Upstream::start("u");
    let mut cp = control_plane(&config(&up.url(), 0));
    let cp_addr = cp.admin_addr();
    let cp_dir = cp.shared_dir();
    let dp1 = data_plane(&cp.admin_url("")).start();
    let mut dp2 = data_plane(&cp.admin_url("")).start();
    let admin = cp.admin();

    // Both nodes' calls, summed on the control plane, exactly (and not more, later).
    send(&dp1, 37, 30).await;
    send(&dp2, 23, 20).await;
    let r = wait_for_calls(&admin, 60, Duration::from_secs(10)).await;
    let by_status: std::collections::BTreeMap<String, u64> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["key"].to_string(), i["calls_total"].as_u64().unwrap()))
        .collect();
    assert_eq!(by_status.get("\"200\"").copied(), Some(50), "{r:#}");
    assert_eq!(by_status.get("\"404\"").copied(), Some(10), "{r:#}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(analytics_total(&admin).await["total"]["calls_total"], 60);

    // The control plane goes away: the data planes spool. One of them is even restarted
    // (a graceful stop: its last rollups go to the spool, which the next run ships).
    cp.kill9();
    drop(cp);
    send(&dp1, 11, 11).await;
    send(&dp2, 9, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spooled = readyz(&dp1).await["analytics"]["pending_bytes"]
        .as_u64()
        .unwrap();
    assert!(spooled > 0, "dp1 spooled nothing");
    let dp2_dir = dp2.shared_dir();
    let exit = dp2.stop(Duration::from_secs(20));
    assert!(exit.success(), "{exit:?}");
    drop(dp2);
    let dp2 = data_plane(&format!("http://{cp_addr}"))
        .in_dir(dp2_dir)
        .start();
    send(&dp2, 4, 4).await;

    // Back: everything arrives, once.
    let cp = Gateway::builder(&config(&up.url(), 0))
        .admin_only()
        .without_config_flag()
        .in_dir(cp_dir)
        .admin_listen(cp_addr)
        .admin_token(ADMIN_TOKEN)
        .env("TOLLGATE_DATAPLANE_TOKEN", DP_TOKEN)
        .start();
    let admin = cp.admin();
    wait_for_calls(&admin, 60 + 11 + 9 + 4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(analytics_total(&admin).await["total"]["calls_total"], 84);
    for dp in [&dp1, &dp2] {
        let r = readyz(dp).await;
        assert_eq!(r["analytics"]["pending_bytes"], 0, "{r}");
        assert_eq!(r["analytics"]["batches_rejected"], 0, "{r}");
    }
}
