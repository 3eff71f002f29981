//! The PROXY protocol on the proxy listeners (`--proxy-protocol NETS`): a balancer in the
//! networks starts each connection with a header (v1 or v2) naming the client, who is then
//! the client for policies, `X-Forwarded-For` and logs; without a valid header in time its
//! connection is closed. Peers outside the networks are clients themselves.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_tests::*;

fn config(target: &str) -> String {
    echo_config(target)
        + r#"    policies:
      inbound:
        - ip-filter: { action: forbid, addresses: [198.51.100.0/24] }
        - set-header: { name: X-Client, value: "{client.ip}" }
"#
}

fn v1(client: &str, port: u16) -> Vec<u8> {
    let family = if client.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if client.contains(':') {
        "2001:db8::1"
    } else {
        "10.0.0.1"
    };
    format!("PROXY {family} {client} {dst} {port} 443\r\n").into_bytes()
}

/// A v2 header: PROXY (`local` false) or LOCAL, with the client's address.
fn v2(client: Option<SocketAddr>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let mut body = Vec::new();
    let family = match client {
        None => {
            h.push(0x20);
            0x00
        }
        Some(SocketAddr::V4(a)) => {
            h.push(0x21);
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&[10, 0, 0, 1]);
            body.extend_from_slice(&a.port().to_be_bytes());
            body.extend_from_slice(&443u16.to_be_bytes());
            0x11
        }
        Some(SocketAddr::V6(a)) => {
            h.push(0x21);
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            body.extend_from_slice(&a.port().to_be_bytes());
            body.extend_from_slice(&443u16.to_be_bytes());
            0x21
        }
    };
    // A TLV (PP2_TYPE_NOOP) that must be skipped.
    body.extend_from_slice(&[0x04, 0, 2, 0, 0]);
    h.push(family);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&body);
    h
}

const GET: &[u8] = b"GET /echo/x HTTP/1.1\r\nHost: gw\r\n\r\n";

/// The client the upstream was told about (`{client.ip}` and `X-Forwarded-For`), which
/// must agree.
fn told(up: &Upstream) -> String {
    let r = up.expect_last();
    let client = r.header("x-client").unwrap_or_default().to_string();
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec![client.as_str()],
        "{:?}",
        r.headers
    );
    client
}

#[test]
fn a_balancer_names_the_client_in_its_header() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&config(&up.url()))
        .env("TOLLGATE_PROXY_PROTOCOL", "192.0.2.0/24,127.0.0.1")
        .env("TOLLGATE_HEADER_READ_TIMEOUT", "2")
        .env("TOLLGATE_ACCESS_LOG", "true")
        .start();

    // v1, header and request in one write; a second request on the same connection keeps
    // the client.
    let mut c = RawConn::connect(gw.addr());
    let a = c.request(&[v1("203.0.113.7", 4711), GET.to_vec()].concat());
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(told(&up), "203.0.113.7");
    assert_eq!(c.request(GET).status, 200);
    assert_eq!(told(&up), "203.0.113.7");

    // v1 over IPv6, the header in pieces and the request after a pause.
    let mut c = RawConn::connect(gw.addr());
    let header = v1("2001:db8::7", 4711);
    c.send(&header[..9]);
    std::thread::sleep(Duration::from_millis(50));
    c.send(&header[9..]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.request(GET).status, 200);
    assert_eq!(told(&up), "2001:db8::7");

    // v2 over IPv4 and IPv6, with a TLV.
    for client in ["203.0.113.8:1000", "[2001:db8::8]:1000"] {
        let header = v2(Some(client.parse().unwrap()));
        let a = RawConn::connect(gw.addr()).request(&[header, GET.to_vec()].concat());
        assert_eq!(a.status, 200, "{a:?}");
        let ip = client.parse::<SocketAddr>().unwrap().ip().to_string();
        assert_eq!(told(&up), ip);
    }

    // The named client is the one policies see.
    let a = RawConn::connect(gw.addr()).request(&[v1("198.51.100.9", 1), GET.to_vec()].concat());
    a.assert_problem(403);

    // A balancer's own connections (v2 LOCAL, v1 UNKNOWN) keep the real peer.
    for header in [v2(None), b"PROXY UNKNOWN\r\n".to_vec()] {
        let a = RawConn::connect(gw.addr()).request(&[header, GET.to_vec()].concat());
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(told(&up), "127.0.0.1");
    }

    // The access log names the client from the header (written after the answer).
    let wanted = "\"client_ip\":\"203.0.113.7\"";
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || gw
            .log()
            .contains(wanted)),
        "{}",
        gw.log()
    );

    // From a trusted peer, no header (a plain request, garbage, a bad address) closes the
    // connection unanswered, and nothing reaches the upstream.
    let before = up.count();
    for bytes in [
        GET.to_vec(),
        b"\x16\x03\x01\x00\x05hello".to_vec(),
        b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 443\r\n".to_vec(),
        [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 1 443\n".to_vec(),
            GET.to_vec(),
        ]
        .concat(),
    ] {
        let mut c = RawConn::connect(gw.addr());
        let a = c.request(&bytes);
        assert_eq!(a.status, 0, "{:?}: {a:?}", String::from_utf8_lossy(&bytes));
        assert!(a.closed, "{a:?}");
    }
    assert_eq!(up.count(), before);
    // The operator sees why, and how many: the four above. (The harness's readiness probe
    // connected and closed without a byte, as a balancer's TCP health check does: that is
    // no refusal.)
    assert!(
        gw.log().contains("no valid PROXY protocol header"),
        "{}",
        gw.log()
    );
    let metrics = raw_get(
        gw.admin_addr(),
        "/metrics",
        &[&format!("Authorization: Bearer {}", gw.admin_token())],
    )
    .text();
    assert!(
        metrics.contains("\ntollgate_proxy_protocol_refused_total 4\n"),
        "{metrics}"
    );

    // A header that never ends is cut at the head deadline (2 s), counted from the
    // connection's start.
    let mut c = RawConn::connect(gw.addr());
    let started = Instant::now();
    c.send(b"PROXY TCP4 203.0.113.7 ");
    assert!(c.wait_closed(Duration::from_secs(8)), "still open");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    // The gateway still serves.
    let a = RawConn::connect(gw.addr()).request(&[v1("203.0.113.7", 1), GET.to_vec()].concat());
    assert_eq!(a.status, 200);
}

/// Cleartext HTTP/2 (prior knowledge) after the header: the preface comes after it.
#[tokio::test]
async fn h2c_after_the_header() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&config(&up.url()))
        .env("TOLLGATE_PROXY_PROTOCOL", "127.0.0.0/8")
        .start();
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(&v2(Some("203.0.113.9:5000".parse().unwrap())))
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = http::Request::get(format!("http://{}/echo/h2", gw.addr()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .expect("in time")
            .expect("answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(told(&up), "203.0.113.9");
    }
}

/// On the TLS listener the header comes before the handshake.
#[tokio::test]
async fn tls_after_the_header() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&config(&up.url()))
        .env("TOLLGATE_PROXY_PROTOCOL", "127.0.0.1")
        .tls()
        .start();
    let pem = std::fs::read_to_string(gw.tls_cert_path()).unwrap();
    let connector = pki::connector_trusting(&pem);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    let mut tcp = tokio::net::TcpStream::connect(gw.tls_addr()).await.unwrap();
    tcp.write_all(&v1("203.0.113.10", 4711)).await.unwrap();
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(name.clone(), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    stream
        .write_all(b"GET /echo/tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert_eq!(told(&up), "203.0.113.10");
    assert_eq!(up.expect_last().header("x-forwarded-proto"), Some("https"));

    // Without the header the handshake fails: the ClientHello is no header.
    let tcp = tokio::net::TcpStream::connect(gw.tls_addr()).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("refused in time");
    assert!(refused.is_err(), "a handshake without a header succeeded");
}

/// Peers outside the networks are clients: a plain request is served with the peer as
/// the client, and a header they send is no header but a malformed request.
#[test]
fn other_peers_are_clients_and_cannot_name_one() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&config(&up.url()))
        .env("TOLLGATE_PROXY_PROTOCOL", "10.0.0.0/8")
        .start();
    let a = RawConn::connect(gw.addr()).request(GET);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(told(&up), "127.0.0.1");
    let before = up.count();
    let a = RawConn::connect(gw.addr()).request(&[v1("203.0.113.7", 1), GET.to_vec()].concat());
    a.assert_problem(400);
    assert_eq!(up.count(), before);
}

#[test]
fn a_bad_network_is_refused_at_start() {
    let out = std::process::Command::new(tollgate_bin())
        .args(["serve", "--proxy-protocol", "10.0.0.0/8,balancer"])
        .output()
        .expect("run tollgate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`balancer` is not an IP address or a CIDR network"),
        "{err}"
    );
}
