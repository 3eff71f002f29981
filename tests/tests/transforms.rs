//! xml-to-json and json-to-xml through the gateway: requests (inbound) and answers
//! (outbound), content negotiation, lengths, compressed upstream bodies, and refusals (400
//! for a client's malformed or hostile body, 502 for an upstream's).
#![allow(missing_docs)]

use std::io::Write;
use tollgate_tests::*;

fn config(target: &str, inbound: &str, outbound: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: conv
    path: /conv
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound: [ {inbound} ]
      outbound: [ {outbound} ]
"#
    )
}

async fn post(url: &str, content_type: &str, body: &[u8], accept: Option<&str>) -> Answer {
    let mut req = client()
        .post(url)
        .header("content-type", content_type)
        .body(body.to_vec());
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    fetch(req).await
}

#[tokio::test]
async fn request_xml_becomes_json_with_its_length() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up.url(), "{ xml-to-json: {} }", ""));
    let xml = br#"<?xml version="1.0"?><order id="7"><item>a</item><item>b</item><note/></order>"#;
    let a = post(&gw.url("/conv/orders"), "application/xml", xml, None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    assert!(r.header("transfer-encoding").is_none());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"order": {"@id": "7", "item": ["a", "b"], "note": null}})
    );
}

/// A client that sends `Expect: 100-continue` gets the interim answer from the gateway
/// (which reads the whole body before it contacts the upstream), then the transformed
/// exchange; a declared length over the limit gets the 413 instead, at once.
#[test]
fn expect_continue_is_answered_on_a_transform_route() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up.url(), "{ xml-to-json: {} }", ""));
    let xml = b"<a>1</a>";
    let mut conn = RawConn::connect(gw.addr());
    conn.set_read_timeout(std::time::Duration::from_secs(3));
    conn.send(
        format!(
            "POST /conv/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            xml.len()
        )
        .as_bytes(),
    );
    let interim = conn.read_interim();
    assert_eq!(interim.status, 100, "{interim:?}");
    assert_eq!(up.count(), 0);
    let answer = conn.request(xml);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(up.expect_last().body, br#"{"a":"1"}"#);
    // The connection is kept alive after the interim answer, like after any other.
    assert_ne!(
        answer.header("connection").map(str::to_ascii_lowercase),
        Some("close".to_string()),
        "{answer:?}"
    );
    let again = conn.request(
        format!(
            "POST /conv/y HTTP/1.1\r\nHost: a\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\n\r\n{}",
            xml.len(),
            String::from_utf8_lossy(xml)
        )
        .as_bytes(),
    );
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(up.count(), 2);
    let big = send_raw(
        gw.addr(),
        b"POST /conv/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/xml\r\n\
          Content-Length: 99999999999\r\nExpect: 100-continue\r\n\r\n",
    );
    big.assert_problem(413);
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn hostile_or_malformed_request_bodies_are_400_and_never_reach_the_upstream() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up.url(), "{ xml-to-json: {} }", ""));
    let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#;
    let xxe = br#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>"#;
    let deep = {
        let mut s = String::new();
        for _ in 0..100_000 {
            s.push_str("<a>");
        }
        for _ in 0..100_000 {
            s.push_str("</a>");
        }
        s.into_bytes()
    };
    for body in [
        &laughs[..],
        &xxe[..],
        b"<a><b></a>",
        b"not xml at all <",
        &deep[..],
    ] {
        let a = post(&gw.url("/conv/x"), "application/xml", body, None).await;
        a.assert_problem(400);
        assert!(!a.text().contains("passwd"));
    }
    assert_eq!(up.count(), 0, "a refused body reached the upstream");
    // The gateway keeps serving.
    let a = post(&gw.url("/conv/x"), "application/xml", b"<ok/>", None).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn other_content_types_pass_untouched() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up.url(), "{ xml-to-json: {} }", ""));
    let a = post(&gw.url("/conv/x"), "text/plain", b"<a/>", None).await;
    assert_eq!(a.status, 200);
    let r = up.expect_last();
    assert_eq!(r.body, b"<a/>");
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn answer_xml_becomes_json_by_accept() {
    let up = Upstream::start("a");
    up.set_answer("application/xml", b"<r><v>1</v><v>2</v></r>", None);
    let gw = Gateway::start(&config(&up.url(), "base", "{ xml-to-json: {} }"));
    let a = fetch(
        client()
            .get(gw.url("/conv/r"))
            .header("accept", "application/json"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(a.json(), serde_json::json!({"r": {"v": ["1", "2"]}}));
    assert_eq!(
        a.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(a.body.len())
    );
    assert!(a.header("x-request-id").is_some());
    // A HEAD gets the GET's head: the transformed type and length, no body. It is asked
    // upstream as a GET (the length depends on the transformed body).
    let get_length = a.header("content-length").unwrap().to_string();
    let mut conn = RawConn::connect(gw.addr());
    let h = conn.request(b"HEAD /conv/r HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\n");
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(
        h.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(h.header("content-length"), Some(get_length.as_str()));
    assert!(h.body.is_empty(), "{h:?}");
    assert_eq!(up.expect_last().method, "GET");
    // The connection carries on after the bodiless answer.
    let g = conn.request(b"GET /conv/r HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\n");
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.body.len().to_string(), get_length);
    // A 204 has no Content-Length (RFC 9110 §8.6).
    up.set_status(204);
    up.set_answer("application/xml", b"", None);
    let n = raw_get(gw.addr(), "/conv/r", &["Accept: application/json"]);
    assert_eq!(n.status, 204, "{n:?}");
    assert_eq!(n.header("content-length"), None, "{n:?}");
    up.set_status(200);
    up.set_answer("application/xml", b"<r><v>1</v><v>2</v></r>", None);
    // A client that asks for XML only keeps XML.
    let a = fetch(
        client()
            .get(gw.url("/conv/r"))
            .header("accept", "application/xml"),
    )
    .await;
    assert_eq!(a.header("content-type"), Some("application/xml"));
    assert_eq!(&a.body[..], b"<r><v>1</v><v>2</v></r>");
}

#[tokio::test]
async fn a_gzip_upstream_body_is_decoded_first() {
    let up = Upstream::start("a");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"<r><v>zipped</v></r>").unwrap();
    up.set_answer("text/xml", &gz.finish().unwrap(), Some("gzip"));
    let gw = Gateway::start(&config(&up.url(), "base", "{ xml-to-json: {} }"));
    let a = get(&gw.url("/conv/r")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.header("content-encoding").is_none());
    assert_eq!(a.json(), serde_json::json!({"r": {"v": "zipped"}}));
}

#[tokio::test]
async fn a_malformed_upstream_body_is_502() {
    let up = Upstream::start("a");
    up.set_answer("application/xml", b"<r><unclosed></r>", None);
    let gw = Gateway::start(&config(&up.url(), "base", "{ xml-to-json: {} }"));
    let a = get(&gw.url("/conv/r")).await;
    a.assert_problem(502);
    up.set_answer(
        "application/xml",
        br#"<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><r>&e;</r>"#,
        None,
    );
    let a = get(&gw.url("/conv/r")).await;
    a.assert_problem(502);
    assert!(!a.text().contains("root:"));
}

#[tokio::test]
async fn json_to_xml_in_both_directions() {
    let up = Upstream::start("a");
    up.set_answer(
        "application/json",
        br#"{"a":1,"b":[true,null],"c":"x<y"}"#,
        None,
    );
    let gw = Gateway::start(&config(
        &up.url(),
        "{ json-to-xml: { root_element: doc } }",
        "{ json-to-xml: { root_element: answer, consider_accept_header: false } }",
    ));
    let a = post(
        &gw.url("/conv/d"),
        "application/json",
        br##"{"item": {"@id": "3", "#text": "t"}}"##,
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = String::from_utf8(up.expect_last().body).unwrap();
    assert!(sent.contains(r#"<item id="3">t</item>"#), "{sent}");
    assert_eq!(
        a.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let text = a.text();
    assert!(
        text.contains("<answer>")
            && text.contains("<c>x&lt;y</c>")
            && text.contains("<b>true</b><b/>"),
        "{text}"
    );
    // Malformed JSON from the client: 400.
    let a = post(&gw.url("/conv/d"), "application/json", b"{\"a\": ", None).await;
    a.assert_problem(400);
}

/// An upstream that answers `101 Switching Protocols` to a request that asked for no
/// upgrade is broken: 502 at once, on the buffered path (which removes `Upgrade`, and
/// waited for an answer that would never come) and on the streaming path (which passed
/// the 101 on to a client that cannot use it).
#[test]
fn a_101_to_a_plain_request_is_502_at_once() {
    use std::io::Write;
    for outbound in ["{ xml-to-json: {} }", "base"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = format!("http://{}", listener.local_addr().expect("addr"));
        let upstream = std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            let _ = read_head(&mut s);
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\n\r\n",
            );
            // Hold the connection (bounded) as an upgraded one would be.
            let _ = read_head(&mut s);
        });
        let gw = Gateway::start(&config(&target, "base", outbound));
        let started = std::time::Instant::now();
        let r = raw_get(gw.addr(), "/conv/x", &[]);
        assert_eq!(r.status, 502, "outbound {outbound}: {r:?}");
        r.assert_problem(502);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "outbound {outbound}: answered after {:?}",
            started.elapsed()
        );
        drop(gw);
        upstream.join().expect("upstream thread");
    }
}
