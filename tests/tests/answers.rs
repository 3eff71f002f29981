//! Answers the gateway makes itself: problem+json, X-Request-Id, subscription keys, body
//! and header limits, keep-alive after an early answer.
#![allow(missing_docs)]

use std::time::Duration;
use tollgate_tests::*;

fn keyed_config(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: keyed
    path: /keyed
    upstream: {{ targets: ["{target}"] }}
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#
    )
}

#[tokio::test]
async fn subscription_required_without_key_is_401() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    let a = get(&gw.url("/keyed/x")).await;
    a.assert_problem(401);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn subscription_required_with_unknown_key_is_401() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    let c = client();
    let a = fetch(
        c.get(gw.url("/keyed/x"))
            .header("Ocp-Apim-Subscription-Key", "0123456789abcdef"),
    )
    .await;
    a.assert_problem(401);
    let a = fetch(c.get(gw.url("/keyed/x?subscription-key=0123456789abcdef"))).await;
    a.assert_problem(401);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn subscription_key_is_removed_before_upstream() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    let a = fetch(
        client()
            .get(gw.url("/echo/x?a=1&subscription-key=secret-q&b=2&subscription-key=secret-q2"))
            .header("Ocp-Apim-Subscription-Key", "secret-h"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    assert_eq!(
        r.header("ocp-apim-subscription-key"),
        None,
        "{:?}",
        r.headers
    );
    assert_eq!(r.path(), "/x");
    assert_eq!(
        r.query_pairs(),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        "upstream uri {}",
        r.uri
    );
    assert!(!r.uri.contains("secret"), "{}", r.uri);
}

#[tokio::test]
async fn custom_subscription_key_names_are_removed_too() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    subscription_key: {{ header: X-My-Key, query: mykey }}
    upstream: {{ targets: ["{}"] }}
"#,
        up.url()
    ));
    let a = fetch(
        client()
            .get(gw.url("/echo/x?mykey=s1&keep=1"))
            .header("X-My-Key", "s2"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    assert_eq!(r.header("x-my-key"), None);
    assert_eq!(r.uri, "/x?keep=1");
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    let c = client();
    let mut ids = Vec::new();
    for (path, status) in [
        ("/echo/x", 200),
        ("/none", 404),
        ("/keyed/x", 401),
        ("/echo/y", 200),
    ] {
        let a = fetch(c.get(gw.url(path))).await;
        assert_eq!(a.status, status, "{path}: {}", a.text());
        let id = a
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{path} ({status}) without X-Request-Id"));
        assert!(!id.is_empty());
        ids.push(id.to_string());
    }
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), ids.len(), "request ids repeat: {ids:?}");
}

fn limits_config(target: &str) -> String {
    format!(
        r#"version: 1
settings: {{ max_request_body: 1KiB, max_request_headers: 4KiB }}
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#
    )
}

#[tokio::test]
async fn body_over_limit_is_413_and_upstream_untouched() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&limits_config(&up.url()));
    let body = "x".repeat(2000);
    let req = format!(
        "POST /echo/upload HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = send_raw(gw.addr(), req.as_bytes());
    r.assert_problem(413);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(up.count(), 0, "the upstream was contacted");

    // Under the limit it passes.
    let a = fetch(client().post(gw.url("/echo/upload")).body("y".repeat(500))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().body.len(), 500);
}

#[tokio::test]
async fn default_body_limit_is_10_mib() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    // Only the head: the length alone must be refused, before any body is read.
    let req = format!(
        "POST /echo/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024 + 1
    );
    let r = send_raw(gw.addr(), req.as_bytes());
    r.assert_problem(413);
    assert_eq!(up.count(), 0);
}

/// An API's own `max_request_body` replaces the settings' for its requests, larger or
/// smaller, by the declared length and for a chunked body as it streams.
#[tokio::test]
async fn an_apis_own_body_limit_replaces_the_settings() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        r#"version: 1
settings: {{ max_request_body: 1KiB }}
apis:
  - id: uploads
    path: /uploads
    subscription_required: false
    max_request_body: 8KiB
    upstream: {{ targets: ["{target}"] }}
  - id: tiny
    path: /tiny
    subscription_required: false
    max_request_body: 100
    upstream: {{ targets: ["{target}"] }}
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#,
        target = up.url()
    ));
    let c = client();
    let post = |path: &str, n: usize| c.post(gw.url(path)).body("x".repeat(n));
    // Over the settings' limit, under the API's.
    let a = fetch(post("/uploads/f", 4000)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().body.len(), 4000);
    fetch(post("/uploads/f", 9000)).await.assert_problem(413);
    fetch(post("/echo/f", 4000)).await.assert_problem(413);
    // Under the settings' limit, over the API's.
    fetch(post("/tiny/f", 500)).await.assert_problem(413);
    assert_eq!(fetch(post("/tiny/f", 100)).await.status, 200);
    assert_eq!(up.count(), 2);
    // A chunked body is held to the API's limit as it streams.
    let chunked = |path: &str, n: usize| {
        let chunk = "y".repeat(n);
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{n:x}\r\n{chunk}\r\n0\r\n\r\n"
        )
    };
    let r = send_raw(gw.addr(), chunked("/uploads/c", 4000).as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.expect_last().body.len(), 4000);
    send_raw(gw.addr(), chunked("/uploads/c", 9000).as_bytes()).assert_problem(413);
    send_raw(gw.addr(), chunked("/tiny/c", 500).as_bytes()).assert_problem(413);
}

#[tokio::test]
async fn headers_over_limit_are_431() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&limits_config(&up.url()));
    let c = client();
    let a = fetch(c.get(gw.url("/echo/x")).header("X-Big", "b".repeat(6000))).await;
    a.assert_problem(431);
    assert_eq!(up.count(), 0);
    let a = fetch(c.get(gw.url("/echo/x")).header("X-Big", "b".repeat(2000))).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test]
async fn default_header_limit_is_32_kib() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let c = client();
    let a = fetch(
        c.get(gw.url("/echo/x"))
            .header("X-Big", "b".repeat(40 * 1024)),
    )
    .await;
    a.assert_problem(431);
    assert_eq!(up.count(), 0);
    let a = fetch(
        c.get(gw.url("/echo/x"))
            .header("X-Big", "b".repeat(20 * 1024)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

/// Past Pingora's own parser limits (256 header lines, a 1 MiB head), far from or beyond
/// `max_request_headers`, the answer is still a 431 problem, not a 400.
#[test]
fn heads_past_the_parsers_limits_are_431_too() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let lines: String = (0..300).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let r = send_raw(
        gw.addr(),
        format!("GET /echo/x HTTP/1.1\r\nHost: a\r\n{lines}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431, "300 header lines: {r:?}");
    let p = r.assert_problem(431);
    assert_eq!(p["type"], "urn:tollgate:problem:headers-too-large");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    assert!(r.closed, "the connection stays open after a 431");
    // A head past 1 MiB (the gateway's own limit is far below; the parser stops first).
    let big = "b".repeat(1100 * 1024);
    let r = send_raw(
        gw.addr(),
        format!("GET /echo/x HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431, "1.1 MiB head: {:?}", r.headers);
    r.assert_problem(431);
    // (The test upstream takes at most 100 header lines itself.)
    let lines: String = (0..50).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let r = send_raw(
        gw.addr(),
        format!("GET /echo/x HTTP/1.1\r\nHost: a\r\n{lines}Connection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "52 lines: {r:?}");
    assert_eq!(up.count(), 1);
}

/// Requests shorter than the HTTP/2 preface (24 bytes), such as a health checker's
/// `GET / HTTP/1.0` with no header, are answered at once: Pingora's peek for the h2c
/// preface waited for 24 bytes, and so for the head deadline (then closed unanswered).
#[test]
fn requests_shorter_than_the_h2_preface_are_answered() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    for req in [
        "GET / HTTP/1.0\r\n\r\n",
        "GET /echo HTTP/1.0\r\n\r\n",
        "GET /\r\n\r\n",
    ] {
        assert!(req.len() < 24);
        let started = std::time::Instant::now();
        let mut conn = RawConn::connect(gw.addr());
        conn.set_read_timeout(Duration::from_secs(3));
        let r = conn.request(req.as_bytes());
        assert_ne!(
            r.status,
            0,
            "{req:?}: no answer after {:?}",
            started.elapsed()
        );
        assert!(r.header("x-request-id").is_some(), "{req:?}: {r:?}");
    }
    let r = send_raw(gw.addr(), b"GET /echo HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.expect_last().uri, "/");
}

/// CONNECT is refused with a 405 problem (no tunnel is ever opened), not Pingora's bare
/// 405.
#[test]
fn connect_is_a_405_problem() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    for target in ["example.com:443", "/echo/x"] {
        let r = send_raw(
            gw.addr(),
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 405, "{target}: {r:?}");
        r.assert_problem(405);
        assert!(r.header("x-request-id").is_some(), "{r:?}");
        assert!(r.header("server").is_none(), "{r:?}");
        assert!(
            r.closed,
            "{target}: the connection stays open after CONNECT"
        );
    }
    assert_eq!(up.count(), 0);
}

/// A refusal written before the request's body was read closes the connection (the body
/// is not read only to be thrown away), and says so; the body never reaches the upstream.
#[test]
fn a_refusal_with_an_unread_body_closes_the_connection() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    let r = send_raw(
        gw.addr(),
        b"POST /keyed/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(r.closed, "the connection stayed open");
    assert_eq!(up.count(), 0);
}

#[test]
fn keep_alive_survives_401_and_404() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    let mut conn = RawConn::connect(gw.addr());
    let r = conn.request(b"GET /keyed/x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(!r.closed, "connection closed after a 401");
    let r = conn.request(b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.closed, "connection closed after a 404");
    let r = conn.request(b"GET /echo/ok HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.expect_last().uri, "/ok");
    let r = conn.request(b"GET /keyed/y HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 401, "{r:?}");
    let r = conn.request(b"GET /echo/again HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
}

/// Requests pipelined in one write (RFC 9112 §9.3.2) are all answered, in order: a
/// proxied GET, a POST with a body, a 401, a 404, and a proxied GET again.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    let mut conn = RawConn::connect(gw.addr());
    conn.send(
        b"GET /echo/one HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo/two HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /keyed/x HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /echo/three HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let statuses: Vec<u16> = (0..5).map(|_| conn.read_response().status).collect();
    assert_eq!(statuses, [200, 200, 401, 404, 200]);
    let seen: Vec<(String, String, Vec<u8>)> = up
        .requests()
        .into_iter()
        .map(|r| (r.method, r.uri, r.body))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET".to_string(), "/one".to_string(), vec![]),
            ("POST".to_string(), "/two".to_string(), b"hello".to_vec()),
            ("GET".to_string(), "/three".to_string(), vec![]),
        ]
    );
    // The connection is still usable.
    let r = conn.request(b"GET /echo/four HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
}

/// A head Pingora's parser refuses (a duplicate `Host`, differing `Content-Length`s)
/// pipelined behind good requests gets the same problem answer as on its own: after the
/// answers before it, a 400 problem+json with `X-Request-Id`, then the connection closed;
/// nothing behind it reaches the upstream.
#[test]
fn a_malformed_head_pipelined_behind_good_ones_gets_a_problem() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&keyed_config(&up.url()));
    for bad in [
        "GET /echo/bad HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
        "POST /echo/bad HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ] {
        up.clear();
        let mut conn = RawConn::connect(gw.addr());
        conn.send(
            format!(
                "GET /echo/one HTTP/1.1\r\nHost: t\r\n\r\n\
                 GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n\
                 {bad}\
                 GET /echo/after HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(conn.read_response().status, 200);
        assert_eq!(conn.read_response().status, 404);
        let r = conn.read_response();
        let problem = r.assert_problem(400);
        assert_eq!(problem["type"], "urn:tollgate:problem:malformed-request");
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        assert!(conn.wait_closed(Duration::from_secs(5)), "left open");
        let uris: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(uris, ["/one"]);
    }
}

#[test]
fn keep_alive_survives_a_policy_answer() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        r#"version: 1
apis:
  - id: denied
    path: /denied
    subscription_required: false
    upstream: {{ targets: ["{0}"] }}
    policies:
      inbound:
        - ip-filter: {{ action: forbid, addresses: [127.0.0.0/8] }}
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{0}"] }}
"#,
        up.url()
    ));
    let mut conn = RawConn::connect(gw.addr());
    let r = conn.request(b"GET /denied/x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 403, "{r:?}");
    let r = conn.request(b"GET /echo/x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "after a 403 on the same connection: {r:?}");
    assert_eq!(up.count(), 1);
}

#[test]
fn chunked_body_over_limit_is_refused() {
    // The limit holds for bodies without a Content-Length too.
    let up = Upstream::start("a");
    let gw = Gateway::start(&limits_config(&up.url()));
    let mut req = String::from(
        "POST /echo/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..4 {
        req.push_str(&format!("400\r\n{}\r\n", "z".repeat(1024)));
    }
    req.push_str("0\r\n\r\n");
    let r = send_raw(gw.addr(), req.as_bytes());
    r.assert_problem(413);
    std::thread::sleep(Duration::from_millis(200));
    for rec in up.requests() {
        assert!(
            rec.body.len() <= 1024,
            "the upstream received a {}-byte body over the 1 KiB limit",
            rec.body.len()
        );
    }
}

#[test]
fn keep_alive_survives_405() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        r#"version: 1
apis:
  - id: ops
    path: /ops
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
    operations:
      - {{ id: get-it, method: GET, path: /it }}
"#,
        up.url()
    ));
    let mut conn = RawConn::connect(gw.addr());
    let r = conn.request(b"DELETE /ops/it HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 405, "{r:?}");
    let r = conn.request(b"GET /ops/it HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
}
