//! Request smuggling shapes: each must be answered 400 problem+json with `X-Request-Id`
//! and the connection closed, and nothing (neither the request nor a smuggled one behind
//! it) may reach the upstream. That includes the shapes Pingora's own parser refuses before
//! Tollgate's hooks run (the vendored `pingora-proxy` asks Tollgate for that answer, see
//! `vendor/pingora-proxy/PATCHES.md`).
#![allow(missing_docs)]

use std::time::Duration;
use tollgate_tests::*;

fn check_rejected(shape: &str, request: &str) {
    check_refused(shape, request, 400, "malformed-request");
}

fn check_refused(shape: &str, request: &str, status: u16, slug: &str) {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let r = send_raw(gw.addr(), request.as_bytes());
    assert_eq!(
        r.status,
        status,
        "{shape}: expected {status}, got {} {:?}; body {:?}",
        r.status,
        r.reason,
        r.text()
    );
    assert!(
        r.closed,
        "{shape}: the connection stayed open after the {status}"
    );
    let doc = r.assert_problem(status);
    assert_eq!(
        doc["type"],
        format!("urn:tollgate:problem:{slug}"),
        "{shape}: {doc}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        up.count(),
        0,
        "{shape}: the upstream received {:?}",
        up.requests()
    );
}

/// A transfer coding other than chunked (RFC 9112 §6.1: 501) would reach the upstream
/// as a plain chunked body, its coded bytes taken for content; chunked twice is malformed.
#[test]
fn transfer_codings_other_than_chunked() {
    check_refused(
        "TE gzip, chunked",
        "POST /echo/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n",
        501,
        "unsupported-transfer-coding",
    );
    check_rejected(
        "TE chunked, chunked",
        "POST /echo/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn content_length_and_transfer_encoding() {
    check_rejected(
        "CL+TE",
        "POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_and_content_length() {
    check_rejected(
        "TE+CL",
        "POST /echo/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\
         5c\r\nGET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n\r\n0\r\n\r\n",
    );
}

#[test]
fn duplicate_content_length_different() {
    check_rejected(
        "CL 5 + CL 6",
        "POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
}

#[test]
fn duplicate_content_length_identical() {
    check_rejected(
        "CL 5 + CL 5",
        "POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
}

#[test]
fn content_length_with_plus_sign() {
    check_rejected(
        "CL +3",
        "POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
    );
}

#[test]
fn http11_without_host() {
    check_rejected("HTTP/1.1 without Host", "GET /echo/x HTTP/1.1\r\n\r\n");
}

#[test]
fn duplicate_host() {
    check_rejected(
        "duplicate Host",
        "GET /echo/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    );
}

#[test]
fn well_formed_requests_still_pass() {
    // The same server accepts the honest versions of those shapes.
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let r = send_raw(
        gw.addr(),
        b"POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.expect_last().body, b"hello");
    let r = send_raw(
        gw.addr(),
        b"POST /echo/y HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.expect_last().body, b"hello");
    assert_eq!(up.count(), 2);
}
