//! Upstream pools: errors (502/503/504), round robin, retry on a dead target, active health
//! checks.
#![allow(missing_docs)]

use std::time::{Duration, Instant};
use tollgate_tests::*;

fn pool_config(targets: &[String], extra: &str) -> String {
    let targets = yaml_strings(targets);
    format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: [{targets}]{extra} }}
"#
    )
}

#[tokio::test]
async fn connection_refused_is_502() {
    let port = closed_port();
    let gw = Gateway::start(&pool_config(&[format!("http://127.0.0.1:{port}")], ""));
    let t0 = Instant::now();
    let a = get(&gw.url("/echo/x")).await;
    a.assert_problem(502);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    let doc = a.json();
    let detail = doc["detail"].as_str().unwrap_or("");
    assert!(
        !detail.contains(&port.to_string()),
        "the problem leaks the internal address: {detail}"
    );
}

/// GETs `url` of an API whose upstream timeout is 1 s and whose upstream does not answer
/// in time: a 504 problem, after the timeout and well before 5 s.
async fn assert_504_after_1s_timeout(url: &str, what: &str) {
    let t0 = Instant::now();
    let a = get(url).await;
    let took = t0.elapsed();
    a.assert_problem(504);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "504 after {took:?} (timeout 1s, {what})"
    );
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let hole = Blackhole::start();
    let gw = Gateway::start(&pool_config(&[hole.url()], ", timeout: 1s"));
    assert_504_after_1s_timeout(&gw.url("/echo/x"), "silent upstream").await;
    assert!(hole.accepted() >= 1, "the gateway never connected");
}

/// With one proxy thread the gateway hands Pingora's timeouts to tokio's timer
/// (`gateway/src/server.rs`, `run`): the upstream timeout still fires, and a
/// timer cancelled by an answer in time leaves nothing behind that breaks the next request.
#[tokio::test]
async fn one_proxy_thread_times_out_and_keeps_serving() {
    let hole = Blackhole::start();
    let up = Upstream::start("slow-sometimes");
    let config = format!(
        r#"version: 1
apis:
  - id: hole
    path: /hole
    subscription_required: false
    upstream: {{ targets: ["{}"], timeout: 1s }}
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{}"], timeout: 1s }}
"#,
        hole.url(),
        up.url()
    );
    let gw = Gateway::builder(&config).threads(1).start();
    let c = client();
    for i in 0..50 {
        let a = fetch(c.get(gw.url(&format!("/echo/fast/{i}")))).await;
        assert_eq!(a.status, 200, "request {i}: {}", a.text());
    }
    assert_504_after_1s_timeout(&gw.url("/hole/x"), "silent upstream").await;
    up.set_delay(Duration::from_millis(1500));
    assert_504_after_1s_timeout(&gw.url("/echo/slow"), "upstream delay 1.5s").await;
    up.set_delay(Duration::ZERO);
    for i in 0..20 {
        let a = fetch(c.get(gw.url(&format!("/echo/again/{i}")))).await;
        assert_eq!(a.status, 200, "request {i} after the timeout: {}", a.text());
    }
    assert_eq!(
        up.count(),
        50 + 1 + 20,
        "every request reached the upstream once"
    );
}

#[tokio::test]
async fn no_healthy_target_is_503() {
    let up = Upstream::start("sick");
    up.set_health(500);
    let gw = Gateway::start(&pool_config(
        &[up.url()],
        ", health_check: { path: /health, interval: 1s }",
    ));
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut last;
    loop {
        last = fetch(c.get(gw.url("/echo/x"))).await;
        if last.status == 503 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last.assert_problem(503);
    assert!(up.health_hits() >= 1, "no health check reached the target");
}

#[tokio::test]
async fn upstream_error_statuses_pass_through() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&pool_config(&[up.url()], ""));
    let a = get(&gw.url("/echo/x?status=500")).await;
    assert_eq!(a.status, 500);
    assert!(
        a.from_upstream("a"),
        "the upstream's own answer was replaced"
    );
    assert_eq!(a.json()["upstream"], "a");
    assert!(a.header("x-request-id").is_some());
    let a = get(&gw.url("/echo/x?status=404")).await;
    assert_eq!(a.status, 404);
    assert!(a.from_upstream("a"));
}

#[tokio::test]
async fn round_robin_spreads_requests() {
    let ups = [
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    ];
    let gw = Gateway::start(&pool_config(
        &ups.iter().map(Upstream::url).collect::<Vec<_>>(),
        "",
    ));
    let c = client();
    for i in 0..30 {
        let a = fetch(c.get(gw.url(&format!("/echo/{i}")))).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let counts: Vec<usize> = ups.iter().map(Upstream::count).collect();
    eprintln!("round robin spread over a, b, c: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 30);
    for (u, n) in ups.iter().zip(&counts) {
        assert!(*n >= 5, "{} got {n} of 30 requests: {counts:?}", u.name());
    }
}

#[tokio::test]
async fn dead_target_is_skipped_for_idempotent_requests() {
    let a_up = Upstream::start("a");
    let b_up = Upstream::start("b");
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let gw = Gateway::start(&pool_config(&[a_up.url(), dead, b_up.url()], ""));
    let c = client();
    let mut failures = Vec::new();
    for i in 0..30 {
        let a = fetch(c.get(gw.url(&format!("/echo/{i}")))).await;
        if a.status != 200 {
            failures.push(format!("GET #{i}: {} {}", a.status, a.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "with one dead target of three: {failures:#?}"
    );
    eprintln!("a={}, b={}", a_up.count(), b_up.count());
    assert!(a_up.count() >= 5 && b_up.count() >= 5);
}

#[tokio::test]
async fn health_check_takes_a_failing_target_out() {
    let ups = [
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    ];
    let gw = Gateway::start(&pool_config(
        &ups.iter().map(Upstream::url).collect::<Vec<_>>(),
        ", health_check: { path: /health, interval: 1s }",
    ));
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || ups
            .iter()
            .all(|u| u.health_hits() >= 1)),
        "health checks did not start: {:?}",
        ups.iter().map(Upstream::health_hits).collect::<Vec<_>>()
    );
    ups[1].set_health(500);
    let c = client();
    // Within a few seconds, b stops getting traffic.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut clean_streak = 0;
    while clean_streak < 9 && Instant::now() < deadline {
        let before = ups[1].count();
        let a = fetch(c.get(gw.url("/echo/x"))).await;
        assert_eq!(a.status, 200, "{}", a.text());
        if ups[1].count() == before {
            clean_streak += 1;
        } else {
            clean_streak = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        clean_streak >= 9,
        "b (health 500) still gets traffic after 8 s"
    );
    let before = ups[1].count();
    for _ in 0..30 {
        let a = fetch(c.get(gw.url("/echo/x"))).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert_eq!(ups[1].count(), before, "the unhealthy target got traffic");
    assert!(ups[0].count() > 0 && ups[2].count() > 0);

    // And it comes back once healthy again.
    ups[1].set_health(200);
    let deadline = Instant::now() + Duration::from_secs(8);
    while ups[1].count() == before && Instant::now() < deadline {
        let a = fetch(c.get(gw.url("/echo/x"))).await;
        assert_eq!(a.status, 200, "{}", a.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ups[1].count() > before,
        "b did not come back after its health recovered"
    );
}

/// An `https://` target: its certificate is checked against the trust store (the system's,
/// or the bundle `SSL_CERT_FILE` names) and the target's host name. An upstream the store
/// does not vouch for is a 502, and the request never reaches it.
#[tokio::test]
async fn an_https_upstream_is_verified() {
    let up = Upstream::start("a");
    // The TLS upstream: a gateway terminating TLS on a self-signed certificate, in front
    // of the echo upstream.
    let front = Gateway::builder(&echo_config(&up.url())).tls().start();
    let target = format!("https://localhost:{}/echo", front.tls_addr().port());
    let config = echo_config(&target);
    let cert = front.tls_cert_path();
    let trusting = Gateway::builder(&config)
        .env("SSL_CERT_FILE", cert.to_str().expect("a UTF-8 path"))
        .start();
    let a = get(&trusting.url("/echo/over-tls")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.from_upstream("a"));
    let r = up.expect_last();
    assert_eq!(r.uri, "/over-tls");
    assert_eq!(
        r.header("x-forwarded-proto"),
        Some("https"),
        "{:?}",
        r.headers
    );
    // The system's store does not know the self-signed certificate.
    let doubting = Gateway::builder(&config).start();
    let a = get(&doubting.url("/echo/not-trusted")).await;
    let doc = a.assert_problem(502);
    assert!(
        doc["detail"].as_str().is_some_and(|d| d.contains("TLS")),
        "{doc}"
    );
    assert_eq!(up.count(), 1, "{:?}", up.requests());
}

/// An answer the upstream sends bit by bit (server-sent events, long downloads) reaches
/// the client bit by bit: the client holds the first part while the upstream has not yet
/// produced the last, so nothing waited for the whole body.
#[tokio::test]
async fn a_streamed_answer_is_not_held_back() {
    let up = Upstream::start("sse");
    up.set_answer("text/event-stream", b"", None);
    up.set_stream(
        &[b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"],
        Duration::from_secs(2),
    );
    let gw = Gateway::start(&pool_config(&[up.url()], ""));
    let mut resp = client()
        .get(gw.url("/echo/events"))
        .send()
        .await
        .expect("answer head");
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the first part in time")
        .expect("readable")
        .expect("a part");
    assert_eq!(&first[..], b"data: one\n\n");
    assert!(
        up.parts_sent() < 3,
        "the first part arrived only after the upstream sent all {}",
        up.parts_sent()
    );
    let mut rest = Vec::new();
    while let Some(part) = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the rest in time")
        .expect("readable")
    {
        rest.extend_from_slice(&part);
    }
    assert_eq!(rest, b"data: two\n\ndata: three\n\n");
}

fn weighted_config(a: &Upstream, a_weight: u32, b: &Upstream, b_weight: u32) -> String {
    format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream:
      targets:
        - {{ url: "{}", weight: {a_weight} }}
        - {{ url: "{}", weight: {b_weight} }}
"#,
        a.url(),
        b.url()
    )
}

/// Weights split the requests (a canary at a quarter), a weight of 0 drains a target, and
/// a config write moves the split without a restart.
#[tokio::test]
async fn weights_split_requests_and_a_swap_shifts_them() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let gw = Gateway::start(&weighted_config(&stable, 3, &canary, 1));
    let c = client();
    for i in 0..40 {
        let a = fetch(c.get(gw.url(&format!("/echo/{i}")))).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert_eq!((stable.count(), canary.count()), (30, 10));
    // Promote the canary: the old target drained, every request to the new one.
    gw.admin()
        .put_config(&weighted_config(&stable, 0, &canary, 1))
        .await;
    for i in 0..20 {
        let a = fetch(c.get(gw.url(&format!("/echo/after/{i}")))).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(
            a.from_upstream("canary"),
            "request {i} went to the drained target"
        );
    }
    assert_eq!((stable.count(), canary.count()), (30, 30));
    // The admin API shows the weights it routes by.
    let doc = gw.admin().get("/apis/echo/upstream").await.json();
    let weights: Vec<u64> = doc["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["weight"].as_u64().expect("a weight"))
        .collect();
    assert_eq!(weights, [0, 1], "{doc}");
}

/// `forward-request` gives one operation a longer upstream timeout than its API's: the
/// slow report is answered, the same slowness elsewhere is a 504; on the buffered path
/// (a body transform) too.
#[tokio::test]
async fn forward_request_timeout_overrides_the_upstreams() {
    let up = Upstream::start("slow");
    let config = format!(
        r#"version: 1
apis:
  - id: api
    path: /api
    subscription_required: false
    upstream: {{ targets: ["{}"], timeout: 1s }}
    operations:
      - id: report
        method: GET
        path: /report
        policies:
          backend: [ forward-request: {{ timeout: 10s }} ]
      - id: report-xml
        method: GET
        path: /report.xml
        policies:
          backend: [ forward-request: {{ timeout: 10s }} ]
          outbound: [ xml-to-json: {{ apply: always, consider_accept_header: false }} ]
      - id: other
        method: GET
        path: /other
"#,
        up.url()
    );
    let gw = Gateway::start(&config);
    let a = get(&gw.url("/api/report?sleep_ms=1800")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    get(&gw.url("/api/other?sleep_ms=1800"))
        .await
        .assert_problem(504);
    up.set_answer("application/xml", b"<r><n>1</n></r>", None);
    let a = get(&gw.url("/api/report.xml?sleep_ms=1800")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["r"]["n"], "1", "{}", a.text());
}

/// `upstream.rewrite_location`: a `Location` (and `Content-Location`) into the target comes
/// out under the API's public path, on the streaming and the buffered path; one elsewhere
/// passes; without the option nothing is touched.
#[tokio::test]
async fn rewrite_location_moves_target_urls_under_the_api() {
    let up = Upstream::start("loc");
    let target = format!("{}/v1", up.url());
    let config = format!(
        r#"version: 1
apis:
  - id: pets
    path: /petstore
    subscription_required: false
    upstream: {{ targets: ["{target}"], rewrite_location: true }}
    operations:
      - {{ id: create, method: POST, path: /pets }}
      - id: xml
        method: GET
        path: /pets.xml
        policies:
          outbound: [ xml-to-json: {{ apply: always, consider_accept_header: false }} ]
  - id: plain
    path: /plain
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#
    );
    let gw = Gateway::start(&config);
    let internal = format!("{target}/pets/42");
    up.set_headers(&[("Location", &internal), ("Content-Location", "/v1/pets/42")]);
    let a = fetch(client().post(gw.url("/petstore/pets")).body("{}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("location"), Some("/petstore/pets/42"));
    assert_eq!(a.header("content-location"), Some("/petstore/pets/42"));
    // The buffered path too.
    up.set_answer("application/xml", b"<pet><id>42</id></pet>", None);
    let a = get(&gw.url("/petstore/pets.xml")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("location"), Some("/petstore/pets/42"));
    // Somewhere else: unchanged.
    up.set_headers(&[("Location", "https://login.example.com/start")]);
    let a = get(&gw.url("/petstore/pets.xml")).await;
    assert_eq!(
        a.header("location"),
        Some("https://login.example.com/start")
    );
    // Without the option: the internal URL as the upstream wrote it.
    up.set_headers(&[("Location", &internal)]);
    let a = get(&gw.url("/plain/pets")).await;
    assert_eq!(a.header("location"), Some(internal.as_str()));
}

/// `upstream.outlier_detection`: a target answering 5xx three times in a row is skipped
/// for its ejection time (the other takes every request), then takes requests again; the
/// 5xx answers themselves reach the client (they are answers, not failures to connect).
#[tokio::test]
async fn a_target_answering_5xx_in_a_row_is_ejected_for_a_while() {
    let (bad, good) = (Upstream::start("bad"), Upstream::start("good"));
    bad.set_status(503);
    let gw = Gateway::start(&pool_config(
        &[bad.url(), good.url()],
        ", outlier_detection: { consecutive_5xx: 3, ejection_time: 2s }",
    ));
    let c = client();
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(fetch(c.get(gw.url(&format!("/echo/{i}")))).await.status);
    }
    // Round robin: bad, good, bad, good, bad (the third 503: ejected), good.
    assert_eq!(statuses, [503, 200, 503, 200, 503, 200]);
    let ejected_at = Instant::now();
    for i in 0..10 {
        let a = fetch(c.get(gw.url(&format!("/echo/after-{i}")))).await;
        assert_eq!(a.status, 200, "request {i} went to the ejected target");
    }
    assert!(
        ejected_at.elapsed() < Duration::from_secs(2),
        "too slow to tell"
    );
    assert_eq!(bad.count(), 3);
    // The admin API tells which address is skipped, and for how long.
    let doc = gw.admin().get("/apis/echo/upstream").await.json();
    let left = &doc["targets"][0]["addresses"][0]["ejected_for_seconds"];
    assert!(left.as_f64().is_some_and(|s| s > 0.0 && s <= 2.0), "{doc}");
    assert!(
        doc["targets"][1]["addresses"][0]
            .get("ejected_for_seconds")
            .is_none(),
        "{doc}"
    );
    // After the ejection time it takes requests again (and is ejected again after three).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut back = 0;
    for i in 0..4 {
        if fetch(c.get(gw.url(&format!("/echo/back-{i}"))))
            .await
            .status
            == 503
        {
            back += 1;
        }
    }
    assert!(back >= 1, "the ejected target never came back");
    // A validation error names the field.
    let bad_config = pool_config(&[good.url()], ", outlier_detection: { consecutive_5xx: 0 }");
    let dir = tempfile::tempdir().expect("dir");
    let file = write_file(dir.path(), "policy.yaml", &bad_config);
    let run = run_tollgate(&["validate", &file], &[]);
    run.assert_code(1, "consecutive_5xx: 0");
    assert!(
        run.stderr
            .contains("upstream.outlier_detection.consecutive_5xx"),
        "{}",
        run.stderr
    );
}

/// `upstream.retry_on_status`: an idempotent request whose answer has a listed status is
/// sent again, to the other target; a `POST` is not, and gets the answer as it is.
#[tokio::test]
async fn listed_statuses_are_retried_on_another_target_for_idempotent_requests() {
    let (bad, good) = (Upstream::start("bad"), Upstream::start("good"));
    bad.set_status(503);
    let gw = Gateway::start(&pool_config(
        &[bad.url(), good.url()],
        ", retry_on_status: [502, 503]",
    ));
    let c = client();
    for i in 0..8 {
        let a = fetch(c.get(gw.url(&format!("/echo/{i}")))).await;
        assert_eq!(a.status, 200, "GET #{i}: {}", a.text());
        assert_eq!(a.header("x-upstream"), Some("good"));
    }
    // Round robin sent half of the first tries to the bad target (a retry does not move
    // it on, or every first try would go to the bad one).
    assert_eq!(bad.count(), 4, "first tries on the bad target");
    assert_eq!(good.count(), 8);
    let (bad_before, good_before) = (bad.count(), good.count());
    let mut posts = Vec::new();
    for i in 0..6 {
        posts.push(fetch(c.post(gw.url(&format!("/echo/p{i}"))).body("x")).await);
    }
    assert_eq!(
        bad.count() + good.count() - bad_before - good_before,
        6,
        "a POST was sent twice"
    );
    let refused: Vec<_> = posts.iter().filter(|a| a.status == 503).collect();
    assert!(!refused.is_empty(), "no POST went to the bad target");
    // The upstream's own answer, not one the gateway made.
    assert_eq!(refused[0].header("x-upstream"), Some("bad"));
    assert_eq!(refused[0].json()["upstream"], "bad");
    // The retries are counted per API.
    // (The metrics are counted off the request path: wait for all of them.)
    let admin = gw.admin();
    let expected = format!("tollgate_upstream_retries_total{{api=\"echo\"}} {bad_before}\n");
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = admin.get("/metrics").await.text();
        if metrics.contains(&expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(&expected), "{expected}: {metrics}");
}

/// With one target the retry goes to it again. The body of a `PUT` is sent again whole
/// (and counted once against the body limit); past Pingora's 64 KiB retry buffer, and when
/// the retries run out, the client gets the upstream's answer as it is. Routes that
/// buffer bodies (transforms) retry the same way.
#[tokio::test]
async fn one_target_is_tried_again_and_the_last_answer_goes_to_the_client() {
    let up = Upstream::start("only");
    let config = format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    max_request_body: 48KiB
    upstream: &up {{ targets: ["{}"], retries: 2, retry_on_status: [502] }}
    operations:
      - {{ id: any, method: "*", path: "/{{rest}}" }}
      - id: transformed
        method: GET
        path: /xml/{{rest}}
        policies: {{ outbound: [ {{ xml-to-json: {{}} }} ] }}
  - id: big
    path: /big
    subscription_required: false
    max_request_body: 1MiB
    upstream: *up
"#,
        up.url()
    );
    let gw = Gateway::start(&config);
    let c = client();

    up.fail_next(2, 502);
    let a = fetch(c.get(gw.url("/echo/twice"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 3);

    // Three 502s in a row: retries: 2 is spent, the third answer is the client's.
    up.clear();
    up.fail_next(3, 502);
    let a = fetch(c.get(gw.url("/echo/thrice"))).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["upstream"], "only", "{}", a.text());
    assert_eq!(up.count(), 3);

    // 40,000 bytes of the 48 KiB limit: counted twice, the retry would be refused (413).
    up.clear();
    up.fail_next(1, 502);
    let body = "b".repeat(150 * 1024);
    let a = fetch(
        c.put(gw.url("/echo/small"))
            .body(body[..40_000].to_string()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = up.requests();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|r| r.body.len() == 40_000));

    // Over the 64 KiB Pingora keeps to send again: not retried.
    up.clear();
    up.fail_next(1, 502);
    let a = fetch(c.put(gw.url("/big/large")).body(body)).await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(a.json()["upstream"], "only");
    assert_eq!(up.count(), 1);

    // A buffered route (xml-to-json) retries too.
    up.clear();
    up.fail_next(1, 502);
    let a = fetch(c.get(gw.url("/echo/xml/doc"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 2);
}

/// `retry_on_status` takes 5xx statuses only, and needs retries to spend.
#[test]
fn retry_on_status_is_validated() {
    let dir = tempfile::tempdir().expect("dir");
    for (extra, expected) in [
        (", retry_on_status: [404]", "only 5xx answers can be retried, not 404"),
        (
            ", retries: 0, retry_on_status: [503]",
            "upstream.retries (line 6, column 50): with `retry_on_status`, `retries` must be between 1 and 10, not 0",
        ),
        (
            ", retries: 11, retry_on_status: [503]",
            "must be between 1 and 10, not 11",
        ),
    ] {
        let file = write_file(
            dir.path(),
            "policy.yaml",
            &pool_config(&["http://127.0.0.1:9".to_string()], extra),
        );
        let run = run_tollgate(&["validate", &file], &[]);
        run.assert_code(1, extra);
        assert!(run.stderr.contains(expected), "{extra}: {}", run.stderr);
    }
}
