//! Transports: cleartext HTTP/2 (prior knowledge), TLS on the proxy listeners, and WebSocket
//! upgrades of HTTP/1.1.
#![allow(missing_docs)]

use std::time::Duration;
use tollgate_tests::*;

#[tokio::test]
async fn h2c_prior_knowledge() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let c = h2c_client();
    let a = fetch(c.get(gw.url("/echo/h2?x=1"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.version, http::Version::HTTP_2);
    assert!(a.from_upstream("a"));
    assert!(a.header("x-request-id").is_some());
    let r = up.expect_last();
    assert_eq!(r.uri, "/h2?x=1");
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    // Several streams on the connection, and a gateway answer over h2.
    for i in 0..5 {
        let a = fetch(c.get(gw.url(&format!("/echo/{i}")))).await;
        assert_eq!(a.status, 200);
    }
    let a = fetch(c.get(gw.url("/nothing"))).await;
    assert_eq!(a.version, http::Version::HTTP_2);
    a.assert_problem(404);
    let a = fetch(c.post(gw.url("/echo/post")).body("h2 body")).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.expect_last().body, b"h2 body");
}

#[tokio::test]
async fn tls_listener() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&echo_config(&up.url())).tls().start();
    let c = tls_client();
    let a = fetch(c.get(gw.tls_url("/echo/secure?x=1"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.from_upstream("a"));
    let r = up.expect_last();
    assert_eq!(r.uri, "/secure?x=1");
    assert_eq!(
        r.header_all("x-forwarded-proto"),
        vec!["https"],
        "{:?}",
        r.headers
    );
    // The plain listener keeps working beside it.
    let a = get(&gw.url("/echo/plain")).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.expect_last().header("x-forwarded-proto"), Some("http"));
    // Gateway answers over TLS too.
    let a = fetch(c.get(gw.tls_url("/nothing"))).await;
    a.assert_problem(404);
}

/// A WebSocket upstream on a raw socket: takes `connections` connections one after the
/// other; on each, checks the handshake it gets, answers `101` at once, then echoes what it
/// reads (prefixed `echo:`) until EOF. Returns the request heads it got.
fn websocket_upstream(connections: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let mut heads = Vec::new();
        for _ in 0..connections {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            let head = read_head(&mut s);
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            if !head.contains("\r\nupgrade: websocket\r\n") {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                heads.push(head);
                continue;
            }
            heads.push(head);
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            );
            // Bounded: at most 64 messages.
            let mut buf = [0u8; 4096];
            for _ in 0..64 {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let mut out = b"echo:".to_vec();
                        out.extend_from_slice(&buf[..n]);
                        if s.write_all(&out).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        heads
    });
    (url, handle)
}

/// Opens a connection to `addr` and sends a WebSocket handshake for `/echo/chat`; returns
/// the connection and the answer's head, lower-cased.
fn websocket_handshake(addr: std::net::SocketAddr) -> (std::net::TcpStream, String) {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(
        b"GET /echo/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write");
    let answer = String::from_utf8_lossy(&read_head(&mut c)).to_ascii_lowercase();
    (c, answer)
}

/// Sends `msg` on an upgraded connection and reads the upstream's echo of it ("" when the
/// connection was closed instead).
fn websocket_echo(c: &mut std::net::TcpStream, msg: &str) -> String {
    use std::io::{Read, Write};
    let mut buf = [0u8; 4096];
    if c.write_all(msg.as_bytes()).is_err() {
        return String::new();
    }
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A WebSocket handshake goes through to the upstream whole, the `101` comes back, and the
/// connection then carries bytes both ways, also after the head deadline (1 s here) has
/// passed: the bytes after a `101` are no request head.
#[test]
fn websocket_upgrade_passes_through() {
    let (url, upstream) = websocket_upstream(1);
    let gw = Gateway::builder(&echo_config(&url))
        .env("TOLLGATE_HEADER_READ_TIMEOUT", "1")
        .start();
    let (mut c, answer) = websocket_handshake(gw.addr());
    assert!(answer.starts_with("http/1.1 101 "), "{answer:?}");
    assert!(answer.contains("\r\nupgrade: websocket\r\n"), "{answer:?}");
    assert!(answer.contains("\r\nconnection: upgrade\r\n"), "{answer:?}");
    assert!(answer.contains("\r\nx-request-id: "), "{answer:?}");
    for (i, pause) in [0u64, 1500].into_iter().enumerate() {
        std::thread::sleep(std::time::Duration::from_millis(pause));
        let msg = format!("frame {i}\r\n");
        assert_eq!(
            websocket_echo(&mut c, &msg),
            format!("echo:{msg}"),
            "message {i}, after a {pause} ms pause"
        );
    }
    drop(c);
    let heads = upstream.join().expect("upstream");
    for line in [
        "\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n",
        "\r\nsec-websocket-version: 13\r\n",
        "\r\nconnection: upgrade\r\n",
        "\r\nx-request-id: ",
    ] {
        assert!(heads[0].contains(line), "{line:?} not in {heads:?}");
    }
}

/// An upstream that answers the handshake at once (here: on the same host, without a
/// pause) races the proxy's own end of the handshake request's empty body; Pingora 0.9.1
/// lost that race about half the time and closed the tunnel right after the `101`
/// (cloudflare/pingora#946, patched in `vendor/pingora-proxy`). Every one of 30 upgrades
/// must carry a message both ways.
#[test]
fn websocket_upgrade_survives_an_upstream_that_answers_at_once() {
    const ROUNDS: usize = 30;
    let (url, upstream) = websocket_upstream(ROUNDS);
    let gw = Gateway::start(&echo_config(&url));
    let mut failed = Vec::new();
    for round in 0..ROUNDS {
        let (mut c, answer) = websocket_handshake(gw.addr());
        assert!(
            answer.starts_with("http/1.1 101 "),
            "round {round}: {answer:?}"
        );
        let msg = format!("round {round}\r\n");
        let echo = websocket_echo(&mut c, &msg);
        if echo != format!("echo:{msg}") {
            failed.push((round, echo));
        }
    }
    assert_eq!(
        failed,
        [],
        "tunnels that did not carry a message, of {ROUNDS}"
    );
    assert_eq!(upstream.join().expect("upstream").len(), ROUNDS);
}

/// Upgrades to anything but a WebSocket are not forwarded: the request goes upstream as a
/// plain one, without `Upgrade` and the `Connection` that names it.
#[test]
fn other_upgrades_are_not_forwarded() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let r = send_raw(
        gw.addr(),
        b"GET /echo/x HTTP/1.1\r\nHost: a\r\nUpgrade: tollgate-test/1\r\nConnection: Upgrade\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.expect_last();
    assert_eq!(seen.header("upgrade"), None, "{:?}", seen.headers);
    assert_eq!(seen.header("connection"), None, "{:?}", seen.headers);
}

/// Whether a TLS handshake with the gateway succeeds when only the certificate in
/// `trusted_pem` is trusted: whether that is the certificate it serves.
async fn serves(addr: std::net::SocketAddr, trusted_pem: &str) -> bool {
    let connector = pki::connector_trusting(trusted_pem);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .is_ok()
}

/// Writes a new self-signed pair for `localhost` over the gateway's files (each by a
/// rename, as certbot and Kubernetes do); returns the certificate's PEM.
fn renew(gw: &Gateway) -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("pair");
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    for (name, text) in [("key.pem", &key), ("cert.pem", &cert)] {
        let tmp = gw.dir().join(format!("{name}.new"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, gw.dir().join(name)).expect("rename");
    }
    cert
}

async fn tls_metric(gw: &Gateway, line: &str) -> bool {
    let a = fetch(
        client()
            .get(gw.admin_url("/metrics"))
            .bearer_auth(gw.admin_token()),
    )
    .await;
    a.text().lines().any(|l| l == line)
}

/// The TLS listener's certificate is replaced without a restart: on SIGHUP, and when its
/// files change. A pair that does not load leaves the previous one serving.
#[tokio::test]
async fn the_tls_certificate_is_reloaded_without_a_restart() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&echo_config(&up.url())).tls().start();
    let first = std::fs::read_to_string(gw.tls_cert_path()).expect("cert");
    assert!(serves(gw.tls_addr(), &first).await);
    // A client keeps its connection across the reload.
    let c = tls_client();
    assert_eq!(fetch(c.get(gw.tls_url("/echo/before"))).await.status, 200);

    // SIGHUP.
    let second = renew(&gw);
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until_async(Duration::from_secs(5), Duration::from_millis(100), || {
            serves(gw.tls_addr(), &second)
        })
        .await,
        "the renewed certificate is not served after SIGHUP"
    );
    assert!(!serves(gw.tls_addr(), &first).await);
    assert_eq!(fetch(c.get(gw.tls_url("/echo/after"))).await.status, 200);
    assert!(
        tls_metric(
            &gw,
            "tollgate_tls_certificate_reloads_total{listener=\"proxy\",outcome=\"ok\"} 1"
        )
        .await
    );

    // No signal: the files' change is noticed (checked every 5 s, read once two checks
    // found the same files).
    let third = renew(&gw);
    assert!(
        wait_until_async(Duration::from_secs(20), Duration::from_millis(100), || {
            serves(gw.tls_addr(), &third)
        })
        .await,
        "the renewed certificate is not served without a signal"
    );

    // A broken renewal: logged, and the served pair stays.
    std::fs::write(
        gw.dir().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until_async(Duration::from_secs(5), Duration::from_millis(100), || {
            tls_metric(
                &gw,
                "tollgate_tls_certificate_reloads_total{listener=\"proxy\",outcome=\"failed\"} 1",
            )
        })
        .await,
        "the failed reload is not counted"
    );
    assert!(serves(gw.tls_addr(), &third).await);
    assert!(
        gw.log().contains("TLS certificate not reloaded"),
        "{}",
        gw.log()
    );
    let a = fetch(
        client()
            .get(gw.admin_url("/metrics"))
            .bearer_auth(gw.admin_token()),
    )
    .await;
    assert!(
        a.text()
            .contains("\ntollgate_tls_certificate_not_after_seconds{listener=\"proxy\"} "),
        "{}",
        a.text()
    );
}

/// A certificate or key that does not load stops the start with a message naming the
/// file (Pingora's own loading aborted the process with an unrelated error).
#[test]
fn a_bad_tls_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_file(dir.path(), "cert.pem", "garbage");
    let run = run_serve_tls(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &cert, &cert, &[]);
    run.assert_code(1, "a bad certificate");
    assert!(
        run.stderr
            .contains("holds no `-----BEGIN CERTIFICATE-----` block")
            && run.stderr.contains("cert.pem"),
        "{}",
        run.stderr
    );
}

/// `protocols` on an API: an HTTPS-only API answers 426 (with `Upgrade`) over plain HTTP
/// unless a trusted proxy says the client used HTTPS; an HTTP-only one is not routed over
/// HTTPS (404). Unlisted protocols are refused at validation.
#[tokio::test]
async fn apis_are_served_over_the_protocols_they_list() {
    let up = Upstream::start("a");
    let config = |trusted: &str| {
        format!(
            r#"version: 1
settings: {{ trusted_proxies: [{trusted}] }}
apis:
  - id: secure
    path: /secure
    subscription_required: false
    protocols: [https]
    upstream: {{ targets: ["{0}"] }}
  - id: plain
    path: /plain
    subscription_required: false
    protocols: [http]
    upstream: {{ targets: ["{0}"] }}
  - id: both
    path: /both
    subscription_required: false
    upstream: {{ targets: ["{0}"] }}
"#,
            up.url()
        )
    };
    let gw = Gateway::builder(&config("10.0.0.0/8")).tls().start();
    let a = get(&gw.url("/secure/x")).await;
    let p = a.assert_problem(426);
    assert_eq!(p["type"], "urn:tollgate:problem:https-required");
    assert_eq!(a.header("upgrade"), Some("TLS/1.2, HTTP/1.1"));
    assert_eq!(get(&gw.url("/plain/x")).await.status, 200);
    assert_eq!(get(&gw.url("/both/x")).await.status, 200);
    let c = tls_client();
    assert_eq!(fetch(c.get(gw.tls_url("/secure/x"))).await.status, 200);
    fetch(c.get(gw.tls_url("/plain/x")))
        .await
        .assert_problem(404);
    assert_eq!(fetch(c.get(gw.tls_url("/both/x"))).await.status, 200);
    // A client's own X-Forwarded-Proto changes nothing; a trusted proxy's does.
    let claim = |gw: &Gateway| {
        fetch(
            client()
                .get(gw.url("/secure/x"))
                .header("X-Forwarded-Proto", "https"),
        )
    };
    assert_eq!(claim(&gw).await.status, 426);
    let behind = Gateway::start(&config("127.0.0.1"));
    assert_eq!(claim(&behind).await.status, 200);

    let dir = tempfile::tempdir().expect("dir");
    let file = write_file(
        dir.path(),
        "policy.yaml",
        &config("10.0.0.0/8")
            .replace("protocols: [http]", "protocols: [http, ftp]")
            .replace("protocols: [https]", "protocols: []"),
    );
    let run = run_tollgate(&["validate", &file], &[]);
    run.assert_code(1, "bad protocols");
    assert!(
        run.stderr.contains("apis[1].protocols[1]"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("unknown protocol `ftp`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("apis[0].protocols"), "{}", run.stderr);
}

/// The plain and the TLS listener given the same address: a clear refusal at start
/// (Pingora aborted the process with "IO Safety violation"; the test harness's random
/// ports once picked the same port for both).
#[test]
fn one_address_for_both_proxy_listeners_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("pair");
    let cert = write_file(dir.path(), "cert.pem", &ck.cert.pem());
    let key = write_file(dir.path(), "key.pem", &ck.signing_key.serialize_pem());
    let addr = format!("127.0.0.1:{}", free_port());
    let run = run_serve_tls(dir.path(), &addr, &addr, &cert, &key, &[]);
    run.assert_code(1, "one address for both listeners");
    assert!(
        run.stderr.contains(&format!("cannot listen on {addr}")),
        "{}",
        run.stderr
    );
}
