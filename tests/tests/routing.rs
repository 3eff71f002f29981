//! Routing: prefix stripping, target base paths, longest prefix on segment boundaries,
//! operations (404 / 405 with `Allow`).
#![allow(missing_docs)]

use tollgate_tests::*;

#[tokio::test]
async fn prefix_is_stripped_and_query_unchanged() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let a = get(&gw.url("/echo/a/b?x=1&y=two%20words")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.from_upstream("a"));
    assert!(
        a.header("x-request-id").is_some(),
        "proxied answer without X-Request-Id"
    );
    let r = up.expect_last();
    assert_eq!(r.method, "GET");
    assert_eq!(r.uri, "/a/b?x=1&y=two%20words");
}

#[tokio::test]
async fn api_root_goes_to_upstream_root() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let a = get(&gw.url("/echo/")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/");
    let a = get(&gw.url("/echo?x=1")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/?x=1");
}

#[tokio::test]
async fn target_base_path_is_prepended() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&format!("{}/base", up.url())));
    let a = get(&gw.url("/echo/a/b?x=1")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/base/a/b?x=1");
}

#[tokio::test]
async fn methods_and_bodies_pass_through() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let c = client();
    let a = fetch(c.post(gw.url("/echo/items")).body("hello body")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/items");
    assert_eq!(r.body, b"hello body");
    let a = fetch(c.delete(gw.url("/echo/items/1"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.expect_last().method, "DELETE");
}

#[tokio::test]
async fn large_body_arrives_intact() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let a = fetch(client().put(gw.url("/echo/blob")).body(body.clone())).await;
    assert_eq!(a.status, 200);
    let r = up.expect_last();
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the body was altered on the way");
}

#[tokio::test]
async fn longest_prefix_on_segment_boundaries() {
    let short = Upstream::start("short");
    let long = Upstream::start("long");
    let gw = Gateway::start(&format!(
        r#"version: 1
apis:
  - id: api
    path: /api
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
  - id: api-v2
    path: /api/v2
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
"#,
        short.url(),
        long.url()
    ));
    let a = get(&gw.url("/api/v2/x")).await;
    assert!(
        a.from_upstream("long"),
        "/api/v2/x went to {:?}",
        a.header("x-upstream")
    );
    assert_eq!(long.expect_last().uri, "/x");

    let a = get(&gw.url("/api/v2x/y")).await;
    assert!(
        a.from_upstream("short"),
        "/api/v2x/y went to {:?}",
        a.header("x-upstream")
    );
    assert_eq!(short.expect_last().uri, "/v2x/y");

    let a = get(&gw.url("/api/v1/z")).await;
    assert!(a.from_upstream("short"));
    assert_eq!(short.expect_last().uri, "/v1/z");

    let before = short.count() + long.count();
    let a = get(&gw.url("/apix/y")).await;
    a.assert_problem(404);
    assert_eq!(
        short.count() + long.count(),
        before,
        "/apix reached an upstream"
    );
}

#[tokio::test]
async fn no_api_is_404_problem() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    for path in ["/nothing", "/", "/ech", "/echoo/x"] {
        let a = get(&gw.url(path)).await;
        a.assert_problem(404);
    }
    assert_eq!(up.count(), 0);
}

fn petstore(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: petstore
    path: /petstore
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    operations:
      - {{ id: get-pet, method: GET, path: "/pets/{{id}}" }}
      - {{ id: put-pet, method: PUT, path: "/pets/{{id}}" }}
      - {{ id: add-pet, method: POST, path: /pets }}
"#
    )
}

#[tokio::test]
async fn operations_route_by_method_and_template() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&petstore(&up.url()));
    let c = client();
    let a = fetch(c.get(gw.url("/petstore/pets/42?lang=de"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/pets/42?lang=de");
    let a = fetch(c.post(gw.url("/petstore/pets")).body("{}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/pets");
    assert_eq!(up.expect_last().method, "POST");
}

#[tokio::test]
async fn operation_method_mismatch_is_405_with_allow() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&petstore(&up.url()));
    let c = client();
    let a = fetch(c.delete(gw.url("/petstore/pets/42"))).await;
    a.assert_problem(405);
    let allow = a
        .header("allow")
        .unwrap_or_else(|| panic!("405 without Allow: {:?}", a.headers));
    let methods: Vec<String> = allow
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    assert!(methods.contains(&"GET".to_string()), "Allow: {allow}");
    assert!(methods.contains(&"PUT".to_string()), "Allow: {allow}");
    assert!(!methods.contains(&"POST".to_string()), "Allow: {allow}");
    let a = fetch(c.get(gw.url("/petstore/pets"))).await;
    a.assert_problem(405);
    assert!(a.header("allow").is_some_and(|v| v.contains("POST")));
    assert_eq!(up.count(), 0, "a 405 reached the upstream");
}

#[tokio::test]
async fn no_operation_matches_is_404() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&petstore(&up.url()));
    for path in ["/petstore/other", "/petstore/pets/1/2", "/petstore/"] {
        let a = get(&gw.url(path)).await;
        a.assert_problem(404);
    }
    assert_eq!(up.count(), 0, "a 404 reached the upstream");
}
