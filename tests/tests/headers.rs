//! Headers the gateway sets upstream: X-Forwarded-*, traceparent, X-Request-Id, Host.
#![allow(missing_docs)]

use tollgate_tests::*;

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses a W3C traceparent: (trace id, parent id, flags); panics when malformed.
fn parse_traceparent(tp: &str) -> (String, String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {tp:?}");
    assert_eq!(parts[0], "00", "traceparent version in {tp:?}");
    assert!(is_lower_hex(parts[1], 32), "trace id in {tp:?}");
    assert!(is_lower_hex(parts[2], 16), "parent id in {tp:?}");
    assert!(is_lower_hex(parts[3], 2), "flags in {tp:?}");
    assert_ne!(parts[1], "0".repeat(32), "all-zero trace id in {tp:?}");
    assert_ne!(parts[2], "0".repeat(16), "all-zero parent id in {tp:?}");
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

#[tokio::test]
async fn x_forwarded_for_is_overwritten() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let a = fetch(
        client()
            .get(gw.url("/echo/x"))
            .header("X-Forwarded-For", "6.6.6.6"),
    )
    .await;
    assert_eq!(a.status, 200);
    let r = up.expect_last();
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.1"],
        "{:?}",
        r.headers
    );
    let a = get(&gw.url("/echo/y")).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        up.expect_last().header_all("x-forwarded-for"),
        vec!["127.0.0.1"]
    );
}

/// Behind a load balancer (`settings.trusted_proxies`): for a connection from a trusted
/// address the client is the rightmost `X-Forwarded-For` entry that is not itself a
/// trusted proxy, for the upstream's `X-Forwarded-For`, `{client.ip}`, `ip-filter`, rate
/// limits and analytics alike; what the client wrote left of it is dropped. A peer that is
/// not trusted is the client, as without the setting.
#[tokio::test]
async fn a_trusted_proxy_names_the_client() {
    let up = Upstream::start("a");
    let config = |trusted: &str| {
        format!(
            r#"version: 1
settings: {{ trusted_proxies: [{trusted}] }}
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
    policies:
      inbound:
        - ip-filter: {{ action: forbid, addresses: [198.51.100.0/24] }}
        - set-header: {{ name: X-Client, value: "{{client.ip}}" }}
        - rate-limit-by-key: {{ calls: 2, renewal_period: 60s, counter_key: "{{client.ip}}" }}
"#,
            up.url()
        )
    };
    let gw = Gateway::builder(&config("127.0.0.1, 10.0.0.0/8"))
        .env("TOLLGATE_ACCESS_LOG", "true")
        .start();
    let c = client();
    let call = |xff: &'static str, extra: &'static [(&'static str, &'static str)]| {
        let mut req = c.get(gw.url("/echo/x")).header("X-Forwarded-For", xff);
        for (n, v) in extra {
            req = req.header(*n, *v);
        }
        fetch(req)
    };
    let a = call(
        "1.1.1.1, 203.0.113.7, 10.0.0.2",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "api.example.com"),
            ("X-Request-Id", "lb-7f3a-42"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The balancer's request id is the request's id, both ways.
    assert_eq!(a.header("x-request-id"), Some("lb-7f3a-42"));
    let r = up.expect_last();
    assert_eq!(r.header("x-request-id"), Some("lb-7f3a-42"));
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["203.0.113.7, 10.0.0.2, 127.0.0.1"],
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-client"), Some("203.0.113.7"));
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-forwarded-host"), Some("api.example.com"));
    // ip-filter sees the client, not the balancer.
    call("198.51.100.9", &[]).await.assert_problem(403);
    // Rate limits count per client: a second client has its own two calls.
    assert_eq!(call("203.0.113.7", &[]).await.status, 200);
    call("203.0.113.7", &[]).await.assert_problem(429);
    assert_eq!(call("192.0.2.1", &[]).await.status, 200);
    assert_eq!(up.expect_last().header("x-client"), Some("192.0.2.1"));
    // No usable entry: the peer is the client.
    assert_eq!(call("unknown", &[]).await.status, 200);
    let r = up.expect_last();
    assert_eq!(r.header("x-client"), Some("127.0.0.1"));
    assert_eq!(r.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    // The access log names the client the balancer named (the line is written after
    // the answer: wait for it, bounded).
    let wanted = "\"client_ip\":\"203.0.113.7\"";
    for _ in 0..50 {
        if gw.log().contains(wanted) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(gw.log().contains(wanted), "{}", gw.log());

    // The same file without the gateway's own peer among the trusted: the header is the
    // client's word, and overwritten.
    let edge = Gateway::start(&config("10.0.0.0/8"));
    let a = fetch(
        client()
            .get(edge.url("/echo/x"))
            .header("X-Forwarded-For", "203.0.113.7")
            .header("X-Forwarded-Proto", "https")
            .header("X-Request-Id", "lb-7f3a-42"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_ne!(a.header("x-request-id"), Some("lb-7f3a-42"));
    let r = up.expect_last();
    assert_eq!(r.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.header("x-client"), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn x_forwarded_proto_and_host() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let a = fetch(
        client()
            .get(gw.url("/echo/x"))
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "evil.example"),
    )
    .await;
    assert_eq!(a.status, 200);
    let r = up.expect_last();
    assert_eq!(
        r.header_all("x-forwarded-proto"),
        vec!["http"],
        "{:?}",
        r.headers
    );
    let host = gw.addr().to_string();
    assert_eq!(
        r.header_all("x-forwarded-host"),
        vec![host.as_str()],
        "{:?}",
        r.headers
    );
}

#[test]
fn forwarded_host_is_the_client_host_and_upstream_host_is_the_target() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let r = send_raw(
        gw.addr(),
        b"GET /echo/x HTTP/1.1\r\nHost: api.example.test:8443\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let rec = up.expect_last();
    assert_eq!(
        rec.header("x-forwarded-host"),
        Some("api.example.test:8443")
    );
    let target_host = up.addr().to_string();
    assert_eq!(
        rec.header_all("host"),
        vec![target_host.as_str()],
        "{:?}",
        rec.headers
    );
}

#[tokio::test]
async fn traceparent_is_created_when_absent() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let c = client();
    fetch(c.get(gw.url("/echo/1"))).await;
    let tp1 = up.expect_last().header("traceparent").map(str::to_string);
    fetch(c.get(gw.url("/echo/2"))).await;
    let tp2 = up.expect_last().header("traceparent").map(str::to_string);
    let tp1 = tp1.expect("no traceparent upstream");
    let tp2 = tp2.expect("no traceparent upstream");
    let (t1, _, _) = parse_traceparent(&tp1);
    let (t2, _, _) = parse_traceparent(&tp2);
    assert_ne!(t1, t2, "two requests share a trace id");
}

#[tokio::test]
async fn traceparent_is_continued() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let a = fetch(
        client()
            .get(gw.url("/echo/x"))
            .header("traceparent", TRACEPARENT_SAMPLE),
    )
    .await;
    assert_eq!(a.status, 200);
    let r = up.expect_last();
    assert_eq!(r.header_all("traceparent").len(), 1, "{:?}", r.headers);
    let (trace, parent, _) = parse_traceparent(r.header("traceparent").unwrap());
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(parent, "00f067aa0ba902b7", "the parent id was not replaced");
}

#[tokio::test]
async fn invalid_traceparent_is_replaced() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let c = client();
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ] {
        let a = fetch(c.get(gw.url("/echo/x")).header("traceparent", bad)).await;
        assert_eq!(a.status, 200);
        let r = up.expect_last();
        let tps = r.header_all("traceparent");
        assert_eq!(tps.len(), 1, "{bad}: {:?}", r.headers);
        assert_ne!(tps[0], bad, "invalid traceparent {bad:?} went upstream");
        parse_traceparent(tps[0]);
    }
}

#[tokio::test]
async fn tracestate_follows_the_trace_it_belongs_to() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let c = client();
    // A continued trace keeps the caller's vendor state.
    let a = fetch(
        c.get(gw.url("/echo/x"))
            .header("traceparent", TRACEPARENT_SAMPLE)
            .header("tracestate", "vendor=abc"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.expect_last().header("tracestate"), Some("vendor=abc"));
    // A new trace (no valid traceparent) drops it: it described another trace.
    for tp in [None, Some("garbage")] {
        let mut req = c.get(gw.url("/echo/x")).header("tracestate", "vendor=abc");
        if let Some(tp) = tp {
            req = req.header("traceparent", tp);
        }
        assert_eq!(fetch(req).await.status, 200);
        let r = up.expect_last();
        assert_eq!(r.header("tracestate"), None, "{tp:?}: {:?}", r.headers);
    }
}

#[tokio::test]
async fn request_id_upstream_matches_answer_and_is_not_client_chosen() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let a = fetch(
        client()
            .get(gw.url("/echo/x"))
            .header("X-Request-Id", "client-chosen-id"),
    )
    .await;
    assert_eq!(a.status, 200);
    let answer_ids = a.header_all("x-request-id");
    assert_eq!(answer_ids.len(), 1, "{:?}", a.headers);
    assert_ne!(
        answer_ids[0], "client-chosen-id",
        "the client's X-Request-Id was trusted"
    );
    let r = up.expect_last();
    assert_eq!(
        r.header_all("x-request-id"),
        answer_ids,
        "upstream {:?}",
        r.headers
    );
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let a = fetch(
        client()
            .get(gw.url("/echo/x"))
            .header("Connection", "keep-alive, X-Drop-Me")
            .header("X-Drop-Me", "1")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Connection", "keep-alive")
            .header("X-Keep-Me", "2"),
    )
    .await;
    assert_eq!(a.status, 200);
    let r = up.expect_last();
    assert_eq!(r.header("x-keep-me"), Some("2"));
    assert_eq!(r.header("proxy-connection"), None, "{:?}", r.headers);
    assert_eq!(
        r.header("x-drop-me"),
        None,
        "a Connection-listed header went upstream"
    );
    assert_eq!(r.header("keep-alive"), None);
}

/// The upstream's `Connection` and the headers it names stop at the gateway, which answers
/// with its own `Connection` and keeps the client's connection, on both ways of editing
/// answers (plain header map, and Pingora's head with `preserve_header_case`).
#[test]
fn hop_by_hop_answer_headers_are_not_passed_back() {
    // The streaming path, the case-preserving one, and the buffered one (a transform).
    for mode in ["default", "preserve-case", "buffered"] {
        let up = Upstream::start("a");
        up.set_headers(&[
            ("Connection", "keep-alive, X-Up-Hop"),
            ("Connection", "X-Up-Hop-Too"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("X-Up-Hop", "1"),
            ("X-Up-Hop-Too", "2"),
            ("X-Kept", "3"),
        ]);
        let config = match mode {
            "preserve-case" => echo_config_preserving_case(&up.url()),
            // xml-to-json leaves a text/plain answer as it is, but buffers it.
            "buffered" => format!(
                "{}    policies: {{ outbound: [ {{ xml-to-json: {{}} }} ] }}\n",
                echo_config(&up.url())
            ),
            _ => echo_config(&up.url()),
        };
        let gw = Gateway::start(&config);
        let mut conn = RawConn::connect(gw.addr());
        for round in 0..2 {
            let r = conn.request(b"GET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n");
            let what = format!("{mode}, request {round}: {r:?}");
            assert_eq!(r.status, 200, "{what}");
            assert!(!r.closed, "{what}");
            let connection: Vec<&str> = r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(connection, ["keep-alive"], "{what}");
            for gone in ["keep-alive", "x-up-hop", "x-up-hop-too"] {
                assert_eq!(r.header(gone), None, "{gone}: {what}");
            }
            assert_eq!(r.header("x-kept"), Some("3"), "{what}");
            assert!(
                r.header("x-request-id").is_some_and(|v| v.len() == 32),
                "{what}"
            );
        }
        assert_eq!(up.count(), 2);
    }
}

/// [`echo_config`] with `upstream.preserve_header_case: true`.
fn echo_config_preserving_case(target: &str) -> String {
    let config = echo_config(target).replace(
        "upstream: { targets:",
        "upstream: { preserve_header_case: true, targets:",
    );
    assert!(config.contains("preserve_header_case: true"), "{config}");
    config
}

/// A one-shot upstream on a raw socket: records the request head as bytes and answers with
/// a custom reason phrase and a mixed-case header.
fn raw_upstream() -> (String, std::thread::JoinHandle<Vec<u8>>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let head = read_head(&mut s);
        let _ = s.write_all(
            b"HTTP/1.1 299 Quite Fine\r\nContent-Length: 2\r\nX-Mixed-Case: yes\r\n\r\nok",
        );
        head
    });
    (url, handle)
}

#[test]
fn header_names_go_out_lower_case_and_reason_phrases_pass_through() {
    let (url, upstream) = raw_upstream();
    let gw = Gateway::start(&echo_config(&url));
    let r = send_raw(
        gw.addr(),
        b"GET /echo/x HTTP/1.1\r\nHost: a\r\nX-Client-Thing: 1\r\nUser-Agent: raw\r\n\r\n",
    );
    assert_eq!(r.status, 299, "{r:?}");
    assert_eq!(r.reason, "Quite Fine", "the upstream's reason phrase");
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "x-mixed-case" && v == "yes"),
        "{:?}",
        r.headers
    );
    assert!(r.headers.iter().any(|(n, _)| n == "x-request-id"));
    let head = String::from_utf8(upstream.join().expect("upstream")).expect("utf-8 head");
    // Names as docs/behaviour.md ("Header names") says: lower case, `Host` title-cased.
    for line in [
        "\r\nx-client-thing: 1\r\n",
        "\r\nuser-agent: raw\r\n",
        "\r\nHost: 127.0.0.1:",
    ] {
        assert!(head.contains(line), "{line:?} not in {head:?}");
    }
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "traceparent",
        "x-request-id",
    ] {
        assert!(
            head.contains(&format!("\r\n{name}: ")),
            "{name} not in {head:?}"
        );
    }
}

#[test]
fn preserve_header_case_keeps_the_spellings_both_ways() {
    let (url, upstream) = raw_upstream();
    let gw = Gateway::start(&echo_config_preserving_case(&url));
    let r = send_raw(
        gw.addr(),
        b"GET /echo/x HTTP/1.1\r\nHost: a\r\nX-Client-Thing: 1\r\nuser-AGENT: raw\r\nX-Forwarded-For: 9.9.9.9\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n",
    );
    assert_eq!(r.status, 299, "{r:?}");
    assert_eq!(r.reason, "Quite Fine", "the upstream's reason phrase");
    // The upstream's spelling reaches the client, and the answer still gets its id.
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "X-Mixed-Case" && v == "yes"),
        "{:?}",
        r.headers
    );
    assert!(
        r.headers.iter().any(|(n, _)| n == "X-Request-Id"),
        "{:?}",
        r.headers
    );
    let head = String::from_utf8(upstream.join().expect("upstream")).expect("utf-8 head");
    // The client's spellings reach the upstream; the contract's headers are there, in
    // title case, and the client's X-Forwarded-For and Connection-listed header are not.
    for line in [
        "\r\nX-Client-Thing: 1\r\n",
        "\r\nuser-AGENT: raw\r\n",
        "\r\nHost: 127.0.0.1:",
        "\r\nX-Forwarded-For: 127.0.0.1\r\n",
        "\r\nX-Forwarded-Proto: http\r\n",
        "\r\nX-Forwarded-Host: a\r\n",
        "\r\nTraceparent: 00-",
        "\r\nX-Request-Id: ",
    ] {
        assert!(head.contains(line), "{line:?} not in {head:?}");
    }
    assert!(!head.contains("9.9.9.9"), "{head:?}");
    assert!(!head.to_ascii_lowercase().contains("x-hop"), "{head:?}");
}

/// A `Connection` that names `Host` or a forwarding header would have the gateway strip a
/// header it sets itself: Pingora refuses such a request, and the client gets a 400 problem.
#[test]
fn connection_naming_a_gateway_header_is_refused() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    for named in ["Host", "X-Forwarded-For", "x-forwarded-host"] {
        let r = send_raw(
            gw.addr(),
            format!("GET /echo/x HTTP/1.1\r\nHost: a\r\nConnection: {named}\r\n\r\n").as_bytes(),
        );
        r.assert_problem(400);
    }
    assert_eq!(up.count(), 0);
}
