//! Slow-loris: a request head trickled byte by byte is cut off after
//! `--header-read-timeout`, while an idle keep-alive connection is not (until
//! `--keepalive-timeout`).
#![allow(missing_docs)]

use std::io::Write;
use std::time::{Duration, Instant};
use tollgate_tests::*;

fn start() -> (Upstream, Gateway) {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&echo_config(&up.url()))
        .env("TOLLGATE_HEADER_READ_TIMEOUT", "1")
        .start();
    (up, gw)
}

/// Trickle `x` bytes one every 150 ms after `start` was written; whether and when the
/// gateway closed the connection.
fn trickle(stream: &mut std::net::TcpStream, start: &[u8]) -> (bool, Duration) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = Instant::now();
    stream.write_all(start).expect("write");
    let mut closed = false;
    // One byte every 150 ms: each read is quick, the head never ends. Bounded: 40 bytes.
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(150));
        if stream.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match std::io::Read::read(stream, &mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    (closed, started.elapsed())
}

fn assert_cut(closed: bool, took: Duration) {
    assert!(closed, "the connection stayed open for {took:?}");
    assert!(took < Duration::from_secs(4), "closed only after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
}

#[test]
fn a_trickled_head_is_cut_off() {
    let (up, gw) = start();
    let mut stream = std::net::TcpStream::connect(gw.addr()).expect("connect");
    let (closed, took) = trickle(&mut stream, b"GET /echo/slow HTTP/1.1\r\nHost: a\r\n");
    assert_cut(closed, took);
    assert_eq!(up.count(), 0, "the upstream saw the trickled request");
}

#[test]
fn a_trickled_second_head_on_a_keep_alive_connection_is_cut_off() {
    let (up, gw) = start();
    let mut stream = std::net::TcpStream::connect(gw.addr()).expect("connect");
    stream
        .write_all(b"GET /echo/one HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut stream, &mut buf).expect("first answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "first answer");
    // Idle past the head timeout first: the deadline starts with the next head's first
    // byte, not with the previous answer.
    std::thread::sleep(Duration::from_millis(1200));
    let (closed, took) = trickle(&mut stream, b"GET /echo/slow HTTP/1.1\r\n");
    assert_cut(closed, took);
    assert_eq!(up.count(), 1, "the upstream saw the trickled request");
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let (_up, gw) = start();
    let mut conn = RawConn::connect(gw.addr());
    assert!(
        conn.wait_closed(Duration::from_secs(4)),
        "an idle new connection stayed open"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_not_cut_and_prompt_heads_pass() {
    let (up, gw) = start();
    let mut conn = RawConn::connect(gw.addr());
    let first = conn.request(b"GET /echo/one HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(first.status, 200);
    // Idle longer than the head timeout, between requests.
    std::thread::sleep(Duration::from_millis(1500));
    let second = conn.request(b"GET /echo/two HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(second.status, 200);
    assert_eq!(up.count(), 2);
}

/// Idle connections do not stay open for good (they would use up the process's
/// descriptors): HTTP/1.1 and HTTP/1.0 keep-alive ones after an answer (also one that
/// asked for a longer `Keep-Alive: timeout`) and an h2c one that sent only the preface are
/// closed after `--keepalive-timeout`.
#[test]
fn idle_connections_are_closed_after_the_keepalive_timeout() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&echo_config(&up.url()))
        .env("TOLLGATE_HEADER_READ_TIMEOUT", "1")
        .env("TOLLGATE_KEEPALIVE_TIMEOUT", "2")
        .start();
    let started = Instant::now();
    let mut conns = Vec::new();
    for (head, status) in [
        (&b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"[..], 404),
        (
            &b"GET /echo/a HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=600\r\n\r\n"[..],
            200,
        ),
        (
            &b"GET /echo/b HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"[..],
            200,
        ),
    ] {
        let mut conn = RawConn::connect(gw.addr());
        let a = conn.request(head);
        assert_eq!(a.status, status, "{}", a.text());
        conns.push(conn);
    }
    let mut h2 = RawConn::connect(gw.addr());
    h2.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    conns.push(h2);
    for (i, conn) in conns.iter_mut().enumerate() {
        assert!(
            conn.wait_closed(Duration::from_secs(8)),
            "idle connection {i} stayed open for {:?}",
            started.elapsed()
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    assert_eq!(up.count(), 2, "{:?}", up.requests());
}

/// A pipelined request, parsed from bytes read with the previous one, is being served, not
/// idle: an upstream slower than the keep-alive timeout does not get it cut off. After
/// the last answer, the connection is closed once idle for the keep-alive timeout, also
/// when that is shorter than the head timeout (whose timer the idle wait shares).
#[test]
fn a_pipelined_request_outlives_the_keepalive_timeout() {
    let up = Upstream::start("a");
    up.set_delay(Duration::from_millis(2500));
    let gw = Gateway::builder(&echo_config(&up.url()))
        .env("TOLLGATE_KEEPALIVE_TIMEOUT", "1")
        .env("TOLLGATE_HEADER_READ_TIMEOUT", "30")
        .start();
    let mut conn = RawConn::connect(gw.addr());
    conn.send(
        b"GET /echo/one HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /echo/two HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let statuses: Vec<u16> = (0..2).map(|_| conn.read_response().status).collect();
    assert_eq!(statuses, [200, 200], "{:?}", up.requests());
    let answered = Instant::now();
    assert!(conn.wait_closed(Duration::from_secs(5)));
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(500) && idle < Duration::from_secs(3),
        "closed after {idle:?} idle"
    );
}

/// `--max-connections`: a connection accepted while the cap is reached is closed at once,
/// with no answer; once one closes, new ones are served again.
#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&echo_config(&up.url()))
        .env("TOLLGATE_MAX_CONNECTIONS", "2")
        .admin_token("t0ken-for-the-cap")
        .start();
    let mut held = Vec::new();
    for i in 0..2 {
        let mut conn = RawConn::connect(gw.addr());
        let a = conn.request(format!("GET /echo/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(a.status, 200, "{}", a.text());
        held.push(conn);
    }
    let mut third = RawConn::connect(gw.addr());
    let a = third.request(b"GET /echo/third HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        a.status, 0,
        "a third connection was served past the cap of 2: {a:?}"
    );
    assert!(
        third.wait_closed(Duration::from_secs(1)),
        "a third connection was kept past the cap of 2"
    );
    drop(held.pop());
    // The freed slot is taken by a later connection (the close reaches the gateway soon).
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let mut conn = RawConn::connect(gw.addr());
        let a = conn.request(b"GET /echo/later HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        statuses.push(a.status);
        if a.status != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    let metrics = raw_get(
        gw.admin_addr(),
        "/metrics",
        &["Authorization: Bearer t0ken-for-the-cap"],
    );
    let text = metrics.text();
    assert!(text.contains("tollgate_connections_max 2\n"), "{text}");
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{text}");
    assert_eq!(up.count(), 3, "{:?}", up.requests());
}

/// A TLS 1.3 (or 1.2) ClientHello for x25519 with a fixed key share: enough for the
/// gateway's rustls to answer with a ServerHello.
fn client_hello() -> Vec<u8> {
    fn block(len_bytes: usize, body: &[u8]) -> Vec<u8> {
        let len = body.len().to_be_bytes();
        [&len[len.len() - len_bytes..], body].concat()
    }
    fn ext(id: u16, body: &[u8]) -> Vec<u8> {
        [&id.to_be_bytes()[..], &block(2, body)].concat()
    }
    let mut share = vec![0x00, 0x1d];
    share.extend(block(2, &[[9u8].as_slice(), &[0; 31]].concat()));
    let exts = [
        ext(0x000a, &block(2, &[0x00, 0x1d, 0x00, 0x17])), // supported_groups
        ext(0x000b, &block(1, &[0])),                      // ec_point_formats
        ext(0x000d, &block(2, &[4, 3, 8, 4, 4, 1, 8, 7])), // signature_algorithms
        ext(0x002b, &block(1, &[3, 4, 3, 3])),             // supported_versions
        ext(0x0033, &block(2, &share)),                    // key_share
    ]
    .concat();
    let mut hello = vec![3, 3];
    hello.extend([0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend(block(2, &[0x13, 0x01, 0xc0, 0x2b, 0xc0, 0x2f]));
    hello.extend(block(1, &[0])); // no compression
    hello.extend(block(2, &exts));
    let handshake = [&[1u8][..], &block(3, &hello)].concat();
    [&[0x16, 3, 1][..], &block(2, &handshake)].concat()
}

/// What the TLS listener at `addr` answers to a ClientHello within 2 s (empty when it
/// closes the connection without a word).
fn hello_reply(addr: std::net::SocketAddr) -> Vec<u8> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = s.write_all(&client_hello());
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// The replies of [`hello_reply`] until one starts a handshake (a ServerHello), at most 20
/// tries 100 ms apart.
fn until_server_hello(addr: std::net::SocketAddr) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    for _ in 0..20 {
        let reply = hello_reply(addr);
        let done = reply.first() == Some(&0x16);
        replies.push(reply);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    replies
}

/// Past the cap, a connection to the TLS listener is closed before its handshake: the
/// ClientHello gets no ServerHello (a flood past the cap costs no handshakes).
#[test]
fn past_the_cap_a_tls_connection_gets_no_handshake() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&echo_config(&up.url()))
        .tls()
        .env("TOLLGATE_MAX_CONNECTIONS", "1")
        .start();
    // Under the cap the handshake starts (a handshake never finished takes no slot). The
    // harness's readiness probe may hold the slot until its close reaches the gateway.
    let replies = until_server_hello(gw.tls_addr());
    assert_eq!(
        replies.last().and_then(|r| r.first()),
        Some(&0x16),
        "no ServerHello: {replies:?}"
    );
    // One plain keep-alive connection takes the only slot (once the close of the one
    // above reached the gateway).
    let mut held = None;
    for _ in 0..20 {
        let mut conn = RawConn::connect(gw.addr());
        if conn
            .request(b"GET /echo/held HTTP/1.1\r\nHost: a\r\n\r\n")
            .status
            == 200
        {
            held = Some(conn);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = held.expect("a plain connection under the cap is served");
    let reply = hello_reply(gw.tls_addr());
    assert!(
        reply.is_empty(),
        "a TLS connection past the cap got a handshake answer: {reply:?}"
    );
    drop(held);
    // Once the slot is freed (the close reaches the gateway soon), handshakes resume.
    let replies = until_server_hello(gw.tls_addr());
    assert_eq!(
        replies.last().and_then(|r| r.first()),
        Some(&0x16),
        "{replies:?}"
    );
}

/// The soft descriptor limit (1024 in many shells and containers) is raised to the hard
/// one at start, by `tollgate serve` and by `tollgate admin`, and the default connection
/// cap follows it.
#[test]
fn the_descriptor_limit_is_raised_at_start() {
    fn limits(pid: u32) -> (u64, u64) {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a Max open files line");
        let mut n = line["Max open files".len()..]
            .split_whitespace()
            .map(|v| v.parse::<u64>().expect("a number"));
        (n.next().expect("soft"), n.next().expect("hard"))
    }
    let me = std::process::id();
    let (soft, hard) = limits(me);
    // The gateway inherits this process's limits: lower the soft one for the spawn only.
    let set = |soft: u64| {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &me.to_string(), &format!("--nofile={soft}:{hard}")])
            .status()
            .expect("prlimit (util-linux)")
            .success();
        assert!(ok, "prlimit failed");
    };
    set(1024.min(hard));
    let up = Upstream::start("a");
    let config = echo_config(&up.url());
    let started = std::panic::catch_unwind(move || {
        let serve = Gateway::builder(&config)
            .admin_token("t0ken-for-the-limit")
            .start();
        // The control plane (`tollgate admin`) raises its own too.
        let admin = Gateway::builder(&config)
            .admin_only()
            .admin_token("t0ken-for-the-limit")
            .start();
        (serve, admin)
    });
    set(soft);
    let (gw, admin) = started.expect("the gateway and the control plane started");
    assert_eq!(limits(gw.pid()), (hard, hard), "tollgate serve");
    assert_eq!(limits(admin.pid()), (hard, hard), "tollgate admin");
    let text = raw_get(
        gw.admin_addr(),
        "/metrics",
        &["Authorization: Bearer t0ken-for-the-limit"],
    )
    .text();
    let cap = (hard.saturating_sub(256) / 2).max(16);
    assert!(
        text.contains(&format!("tollgate_connections_max {cap}\n")),
        "{text}"
    );
}

#[tokio::test]
async fn an_http2_connection_outlives_the_head_timeout() {
    let (up, gw) = start();
    let c = h2c_client();
    for round in 0..2 {
        let a = fetch(c.get(gw.url(&format!("/echo/h2-{round}")))).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.version, http::Version::HTTP_2);
        // Longer than the head timeout, on the same HTTP/2 connection.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let a = fetch(c.get(gw.url("/echo/h2-last"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 3);
}

/// `Expect: 100-continue`: the interim `100` is no answer, and the body after it is no
/// head: it may take longer than the head timeout to arrive.
#[test]
fn a_body_after_100_continue_is_no_head() {
    let (up, gw) = start();
    let mut conn = RawConn::connect(gw.addr());
    conn.send(
        b"POST /echo/up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = conn.read_interim();
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send(b"hel");
    std::thread::sleep(Duration::from_millis(1500));
    conn.send(b"lo");
    let answer = conn.read_response();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(up.count(), 1);
    assert_eq!(up.requests()[0].body, b"hello");
}

/// After an interim `100 Continue` and the body, the connection is kept alive like any
/// other: the final answer does not say `Connection: close`, and the next request on the
/// same connection is served.
#[test]
fn a_connection_is_kept_alive_after_100_continue() {
    let (up, gw) = start();
    let mut conn = RawConn::connect(gw.addr());
    for i in 0..3 {
        conn.send(
            format!(
                "POST /echo/c{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        );
        let interim = conn.read_interim();
        assert_eq!(interim.status, 100, "request {i}: {interim:?}");
        let answer = conn.request(b"hello");
        assert_eq!(answer.status, 200, "request {i}: {answer:?}");
        assert_ne!(
            answer.header("connection").map(str::to_ascii_lowercase),
            Some("close".to_string()),
            "request {i}: {answer:?}"
        );
    }
    assert_eq!(up.count(), 3, "{:?}", up.requests());
    assert!(up.requests().iter().all(|r| r.body == b"hello"));
}

/// The next head's deadline cannot be dodged on a keep-alive connection: not by sending
/// its start with the previous request (the rest then starts with a space), nor by empty
/// lines before it (which a watch for `\r\n\r\n` would take for a head's end).
#[test]
fn a_keep_alive_head_cannot_dodge_its_deadline() {
    let (up, gw) = start();
    for (first, then) in [
        (
            &b"GET /echo/one HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/two HTTP/1.1\r\nX-Foo: "[..],
            &b" "[..],
        ),
        (
            &b"GET /echo/one HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            &b"\n\r\n"[..],
        ),
        (&b""[..], &b"\r\n\r\n"[..]),
    ] {
        let mut stream = std::net::TcpStream::connect(gw.addr()).expect("connect");
        if !first.is_empty() {
            stream.write_all(first).expect("write");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = [0u8; 4096];
            let n = std::io::Read::read(&mut stream, &mut buf).expect("first answer");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "first answer");
        }
        let (closed, took) = trickle(&mut stream, then);
        assert_cut(closed, took);
    }
    assert_eq!(up.count(), 2, "{:?}", up.requests());
}
