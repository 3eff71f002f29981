//! Path normalization, over raw sockets (a URL library would resolve `..` itself): dot
//! segments are resolved over the whole path before routing, unreserved escapes decoded,
//! encoded separators, backslashes and control characters refused, double encoding kept,
//! and an operation-level policy cannot be bypassed by spelling the path differently.
#![allow(missing_docs)]

use std::net::SocketAddr;
use tollgate_tests::*;

struct Two {
    echo: Upstream,
    other: Upstream,
    gw: Gateway,
}

fn two_apis() -> Two {
    let echo = Upstream::start("echo");
    let other = Upstream::start("other");
    let gw = Gateway::start(&format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
  - id: other
    path: /other
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
"#,
        echo.url(),
        other.url()
    ));
    Two { echo, other, gw }
}

fn upstream_path(addr: SocketAddr, up: &Upstream, target: &str) -> String {
    let before = up.count();
    let r = raw_get(addr, target, &[]);
    assert_eq!(r.status, 200, "{target}: {r:?}");
    assert_eq!(
        up.count(),
        before + 1,
        "{target} did not reach {}",
        up.name()
    );
    up.expect_last().uri
}

#[test]
fn dot_segments_are_resolved() {
    let t = two_apis();
    let a = t.gw.addr();
    assert_eq!(upstream_path(a, &t.echo, "/echo/x/../y"), "/y");
    assert_eq!(upstream_path(a, &t.echo, "/echo/x/./y"), "/x/y");
    assert_eq!(upstream_path(a, &t.echo, "/echo/x/%2e%2e/admin"), "/admin");
    assert_eq!(
        upstream_path(a, &t.echo, "/echo/x/%2E%2E/admin?q=1"),
        "/admin?q=1"
    );
    assert_eq!(upstream_path(a, &t.echo, "/echo/a/b/%2e/../c"), "/a/c");
}

#[test]
fn dot_segments_can_leave_the_api() {
    let t = two_apis();
    let a = t.gw.addr();
    // `/echo/../other/z` is `/other/z`: it routes to the other API.
    assert_eq!(upstream_path(a, &t.other, "/echo/../other/z"), "/z");
    assert_eq!(upstream_path(a, &t.other, "/echo/%2e%2e/other/z"), "/z");
    // `/echo/%2e%2e/admin` is `/admin`: no API there.
    let r = raw_get(a, "/echo/%2e%2e/admin", &[]);
    r.assert_problem(404);
    let r = raw_get(a, "/echo/../../../etc/passwd", &[]);
    r.assert_problem(404);
    assert_eq!(t.echo.count(), 0, "{:?}", t.echo.requests());
}

#[test]
fn unreserved_escapes_are_decoded() {
    let t = two_apis();
    let a = t.gw.addr();
    assert_eq!(upstream_path(a, &t.echo, "/echo/%61dmin/x"), "/admin/x");
    assert_eq!(upstream_path(a, &t.echo, "/%65cho/y"), "/y");
}

#[test]
fn double_encoding_is_kept() {
    let t = two_apis();
    let a = t.gw.addr();
    assert_eq!(
        upstream_path(a, &t.echo, "/echo/%252e%252e/admin"),
        "/%252e%252e/admin"
    );
}

#[test]
fn encoded_slash_backslash_and_controls_are_400() {
    let t = two_apis();
    let a = t.gw.addr();
    for target in [
        "/echo/a%2Fb",
        "/echo/a%2fb",
        "/echo/..%2f..%2fother",
        "/echo/a%5Cb",
        "/echo/a\\b",
        "/echo/..\\other",
        "/echo/a%0d%0aX-Injected:%20yes",
        "/echo/a%00b",
    ] {
        let r = raw_get(a, target, &[]);
        assert_eq!(r.status, 400, "{target}: {r:?}");
        if r.body.is_empty() || !r.is_problem() {
            eprintln!("{target}: plain 400, body {:?}", r.text());
        } else {
            r.assert_problem(400);
        }
    }
    assert_eq!(
        t.echo.count() + t.other.count(),
        0,
        "{:?}",
        t.echo.requests()
    );
}

fn guarded_config(target: &str, admin_inbound: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: api
    path: /api
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    operations:
      - id: public
        method: GET
        path: "/public/{{x}}"
      - id: admin
        method: GET
        path: "/admin/{{x}}"
        policies:
          inbound:
            - base
            - {admin_inbound}
"#
    )
}

/// Spellings of the admin operation that must meet its policy (403).
const BYPASSES: &[&str] = &[
    "/api/admin/x",
    "/api/public/../admin/x",
    "/api/public/%2e%2e/admin/x",
    "/api/public/%2E%2E/admin/x",
    "/api/public/.%2e/admin/x",
    "/api/%61dmin/x",
    "/api/ad%6din/x",
    "/api/./admin/x",
    "/api/public/x/../../admin/x",
];

/// Odd spellings that may be refused or routed nowhere, but must never reach the upstream.
const NEVER_UPSTREAM: &[&str] = &["/api//admin/x", "/api/%41dmin/x", "/api/admin/x/"];

fn check_guarded(admin_inbound: &str) {
    let up = Upstream::start("a");
    let gw = Gateway::start(&guarded_config(&up.url(), admin_inbound));
    // The public operation works.
    let r = raw_get(gw.addr(), "/api/public/x", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.count(), 1);
    let mut failures = Vec::new();
    for target in BYPASSES {
        let r = raw_get(gw.addr(), target, &[]);
        if r.status != 403 {
            failures.push(format!("{target} -> {} {}", r.status, r.text()));
        }
    }
    for target in NEVER_UPSTREAM {
        let r = raw_get(gw.addr(), target, &[]);
        if (200..300).contains(&r.status) {
            failures.push(format!("{target} -> {} {}", r.status, r.text()));
        } else {
            eprintln!("{target} -> {}", r.status);
        }
    }
    assert!(
        failures.is_empty(),
        "the admin policy was bypassed:\n{}\nupstream saw {:?}",
        failures.join("\n"),
        up.requests().iter().map(|r| &r.uri).collect::<Vec<_>>()
    );
    assert_eq!(up.count(), 1, "{:?}", up.requests());
}

#[test]
fn operation_policy_cannot_be_bypassed_return_response() {
    check_guarded(r#"return-response: { status: 403, body: "admins only" }"#);
}

#[test]
fn operation_policy_cannot_be_bypassed_ip_filter() {
    check_guarded("ip-filter: { action: forbid, addresses: [127.0.0.1] }");
}

/// A target that is neither origin-form (`/x`) nor absolute-form (`http://host/x`) is
/// refused with a 400 problem, never routed as "/" to an API mounted at the root.
#[test]
fn targets_without_a_leading_slash_are_400_not_the_root_api() {
    let up = Upstream::start("root");
    let gw = Gateway::start(&format!(
        r#"version: 1
apis:
  - id: root
    path: /
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
"#,
        up.url()
    ));
    for line in [
        "GET  /x HTTP/1.1",
        "GET abc HTTP/1.1",
        "GET a/x HTTP/1.1",
        "GET \x01/x HTTP/1.1",
        "GET *:80 HTTP/1.1",
    ] {
        let r = send_raw(
            gw.addr(),
            format!("{line}\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 400, "{line:?}: {r:?}");
        r.assert_problem(400);
        assert!(r.header("x-request-id").is_some(), "{line:?}: {r:?}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.requests());
    // Absolute-form routes on its path.
    let a = gw.addr();
    assert_eq!(
        upstream_path(a, &up, &format!("http://{a}/x?y=1")),
        "/x?y=1"
    );
    assert_eq!(upstream_path(a, &up, &format!("http://{a}")), "/");
}
