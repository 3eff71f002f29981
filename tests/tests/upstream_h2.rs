//! `upstream.http2`: HTTP/2 to the upstream (h2c in plain text, ALPN `h2` over TLS), and
//! gRPC's shape through it: `TE: trailers` on the way in, trailers on the way out.
#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tollgate_tests::pki::{server_config, yaml_block, Authority};
use tollgate_tests::upstream::ChannelBody;
use tollgate_tests::*;

/// One API `svc` at `/svc` on `targets` with `http2: true`, and `extra` lines of its
/// upstream (indented 6).
fn h2_config(targets: &[&str], extra: &str) -> String {
    let targets = yaml_strings(targets);
    format!(
        r#"version: 1
apis:
  - id: svc
    path: /svc
    subscription_required: false
    upstream:
      targets: [{targets}]
      http2: true
{extra}"#
    )
}

#[tokio::test]
async fn an_h2c_upstream_serves_http1_and_http2_clients() {
    let up = Upstream::start_h2("h2c");
    let gw = Gateway::start(&h2_config(&[&up.url()], ""));
    let a = get(&gw.url("/svc/things/1?x=2")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.from_upstream("h2c"));
    let r = up.expect_last();
    assert_eq!(r.version, "HTTP/2.0");
    assert_eq!(r.uri, "/things/1?x=2");
    assert!(r.header("x-forwarded-for").is_some(), "{:?}", r.headers);
    // A body from an HTTP/1.1 client, chunked: no Transfer-Encoding goes out on HTTP/2.
    let addr = gw.addr();
    let resp = tokio::task::spawn_blocking(move || {
        send_raw(
            addr,
            b"POST /svc/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nhello \r\n2\r\nh2\r\n0\r\n\r\n",
        )
    })
    .await
    .expect("raw request");
    assert_eq!(resp.status, 200, "{resp:?}");
    let r = up.expect_last();
    assert_eq!(r.body, b"hello h2");
    assert!(r.header("transfer-encoding").is_none(), "{:?}", r.headers);
    // Many at once from an HTTP/2 client: they share connections (streams), all answered.
    let h2 = h2c_client();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = gw.url(&format!("/svc/many/{i}"));
        let h2 = h2.clone();
        tasks.push(tokio::spawn(async move { fetch(h2.get(url)).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(up.count(), 22);
}

/// An HTTP/2 connection with prior knowledge (h2c) to the gateway's plain listener.
async fn h2c_connect<B>(gw: &Gateway) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake::<_, _, B>(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    send
}

/// A gRPC-shaped call: `POST path` with `application/grpc`, `TE: trailers` and `body`;
/// the answer, its body still to read.
fn grpc_request<B>(gw: &Gateway, path: &str, body: B) -> http::Request<B> {
    http::Request::post(format!("http://{}{path}", gw.addr()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request")
}

/// A unary gRPC-shaped call over h2c to the gateway (see [`grpc_request`]).
async fn grpc_call(gw: &Gateway, path: &str, body: &'static [u8]) -> http::Response<Incoming> {
    let mut send = h2c_connect(gw).await;
    let req = grpc_request(gw, path, Full::new(Bytes::from_static(body)));
    tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("in time")
        .expect("an answer")
}

/// gRPC through the gateway: an HTTP/2 client posts `application/grpc` with
/// `TE: trailers`; the upstream's `grpc-status` trailer reaches the client.
#[tokio::test]
async fn grpc_trailers_pass_both_ways() {
    let up = Upstream::start_h2("grpc");
    up.set_answer("application/grpc", b"\0\0\0\0\x02\x08\x01", None);
    up.set_trailers(&[("grpc-status", "0"), ("grpc-message", "fine")]);
    let gw = Gateway::start(&h2_config(&[&up.url()], ""));
    let resp = grpc_call(&gw, "/svc/pkg.Greeter/SayHello", b"\0\0\0\0\x03\x0a\x01x").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..])
    );
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("in time")
        .expect("the body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"fine"[..])
    );
    assert_eq!(collected.to_bytes().as_ref(), b"\0\0\0\0\x02\x08\x01");
    let r = up.expect_last();
    assert_eq!(r.uri, "/pkg.Greeter/SayHello");
    assert_eq!(r.header("te"), Some("trailers"), "{:?}", r.headers);
    assert_eq!(r.body, b"\0\0\0\0\x03\x0a\x01x");
}

/// A server-streaming call: each message reaches the client while the upstream has not
/// yet sent the last, and the trailers come after the last message.
#[tokio::test]
async fn grpc_server_streaming_is_not_held_back() {
    let up = Upstream::start_h2("stream");
    up.set_answer("application/grpc", b"", None);
    up.set_stream(
        &[b"\0\0\0\0\x01a", b"\0\0\0\0\x01b", b"\0\0\0\0\x01c"],
        Duration::from_secs(2),
    );
    up.set_trailers(&[("grpc-status", "0")]);
    let gw = Gateway::start(&h2_config(&[&up.url()], ""));
    let resp = grpc_call(&gw, "/svc/pkg.Feed/Watch", b"\0\0\0\0\0").await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    let mut sent_at_first = None;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("a frame in time")
    {
        let frame = frame.expect("readable");
        if let Some(d) = frame.data_ref() {
            if !d.is_empty() && sent_at_first.is_none() {
                sent_at_first = Some(up.parts_sent());
            }
            data.extend_from_slice(d);
        } else if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    let sent = sent_at_first.expect("data came");
    assert!(
        sent < 3,
        "the first message arrived only after all {sent} were sent"
    );
    assert_eq!(data, b"\0\0\0\0\x01a\0\0\0\0\x01b\0\0\0\0\x01c");
    let trailers = trailers.expect("trailers after the messages");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

/// Reads data frames of `body` until `expect.len()` bytes came (HTTP/2 may split a
/// message), each within 10 s; they must be `expect`.
async fn read_echo(body: &mut Incoming, expect: &[u8]) {
    let mut got = Vec::new();
    while got.len() < expect.len() {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the echo while the request is still open")
            .expect("a frame")
            .expect("readable");
        got.extend_from_slice(frame.data_ref().expect("data"));
    }
    assert_eq!(got, expect);
}

/// A bidirectional stream is full duplex through the gateway: each message the client
/// sends comes back (the upstream echoes it) before the client sends the next, the request
/// still open; closing the request ends the call with the upstream's trailers.
#[tokio::test]
async fn grpc_bidirectional_streaming_is_full_duplex() {
    let up = Upstream::start_h2("bidi");
    up.set_trailers(&[("grpc-status", "0")]);
    let gw = Gateway::start(&h2_config(&[&up.url()], ""));
    let mut send = h2c_connect::<ChannelBody>(&gw).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = grpc_request(&gw, "/svc/pkg.Chat/echo-stream", ChannelBody(rx));
    let first = Bytes::from_static(b"\0\0\0\0\x01a");
    tx.send(Frame::data(first.clone())).await.expect("send");
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("the answer's head while the request is still open")
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    read_echo(&mut body, &first).await;
    let second = Bytes::from_static(b"\0\0\0\0\x02bc");
    tx.send(Frame::data(second.clone())).await.expect("send");
    read_echo(&mut body, &second).await;
    drop(tx);
    let mut trailers = None;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the end in time")
    {
        if let Ok(t) = frame.expect("readable").into_trailers() {
            trailers = Some(t);
        }
    }
    let trailers = trailers.expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(up.expect_last().uri, "/pkg.Chat/echo-stream");
}

/// Over TLS: ALPN `h2`, with the API's own CA; health checks speak HTTP/2 too.
#[tokio::test]
async fn an_https_h2_upstream_with_health_checks() {
    let ca = Authority::new("h2 CA");
    let mut config = Arc::unwrap_or_clone(server_config(&ca.server(&["127.0.0.1"]), None));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let up = Upstream::start_tls("h2-tls", Arc::new(config));
    let ca_block = format!(
        "      health_check: {{ path: /health, interval: 200ms }}\n      tls:\n        ca: {}",
        yaml_block(ca.cert_pem(), 10)
    );
    let gw = Gateway::start(&h2_config(
        &[&format!("https://127.0.0.1:{}", up.port())],
        &ca_block,
    ));
    assert!(
        up.wait_for_health_hits(3, Duration::from_secs(10)),
        "no health checks arrived: {}",
        gw.log()
    );
    let a = get(&gw.url("/svc/secure")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().version, "HTTP/2.0");
}

/// An upstream that speaks only HTTP/1.1 behind `http2: true`: a 502, not a hang.
#[tokio::test]
async fn an_http1_only_upstream_behind_http2_is_502() {
    let up = Upstream::start("h1");
    let gw = Gateway::start(&h2_config(&[&up.url()], ""));
    let a = get(&gw.url("/svc/x")).await;
    a.assert_problem(502);
}

/// A dead HTTP/2 target is skipped like an HTTP/1.1 one: idempotent requests go on to the
/// next target, and the dead one is ejected.
#[tokio::test]
async fn a_dead_http2_target_is_skipped() {
    let up = Upstream::start_h2("alive");
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let config = h2_config(&[&dead, &up.url()], "");
    let gw = Gateway::start(&config);
    for i in 0..6 {
        let a = get(&gw.url(&format!("/svc/{i}"))).await;
        assert_eq!(a.status, 200, "request {i}: {}", a.text());
        assert!(a.from_upstream("alive"));
    }
    assert_eq!(up.count(), 6);
}

/// `upstream.retry_on_status` over HTTP/2: the dropped answer's stream is reset, the
/// request goes again on the connection.
#[tokio::test]
async fn an_http2_answer_in_retry_on_status_is_retried() {
    let up = Upstream::start_h2("h2c");
    let gw = Gateway::start(&h2_config(&[&up.url()], "      retry_on_status: [503]\n"));
    up.fail_next(1, 503);
    let a = get(&gw.url("/svc/again")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 2);
    let second = get(&gw.url("/svc/fine")).await;
    assert_eq!(second.status, 200);
    assert_eq!(up.count(), 3);
}
