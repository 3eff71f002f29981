//! Policies in their chains: the small kinds end to end, and the `base` inheritance rule
//! over the global, API and operation scopes.
#![allow(missing_docs)]

use std::time::Duration;
use tollgate_tests::*;

/// One API `api` at `/api` with `policies` (YAML at API level, indented 4) and optional
/// `operations` (YAML, indented 4); `global` is the top-level `policies:` block body.
fn config(target: &str, global: &str, api_policies: &str, operations: &str) -> String {
    let mut s = String::from("version: 1\n");
    if !global.is_empty() {
        s.push_str("policies:\n");
        s.push_str(global);
        s.push('\n');
    }
    s.push_str(&format!(
        r#"apis:
  - id: api
    path: /api
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#
    ));
    if !api_policies.is_empty() {
        s.push_str("    policies:\n");
        s.push_str(api_policies);
        s.push('\n');
    }
    if !operations.is_empty() {
        s.push_str("    operations:\n");
        s.push_str(operations);
        s.push('\n');
    }
    s
}

#[tokio::test]
async fn set_header_inbound_and_outbound() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - set-header: { name: X-To-Upstream, value: "in" }
        - set-header: { name: X-Secret, exists_action: delete }
        - set-header: { name: X-Existing, value: "new" }
      outbound:
        - set-header: { name: X-To-Client, value: "out" }
        - set-header: { name: X-Upstream, exists_action: delete }"#,
        "",
    ));
    let a = fetch(
        client()
            .get(gw.url("/api/x"))
            .header("X-Secret", "s")
            .header("X-Existing", "old"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    assert_eq!(r.header("x-to-upstream"), Some("in"));
    assert_eq!(
        r.header("x-secret"),
        None,
        "exists_action: delete did not delete"
    );
    assert_eq!(
        r.header_all("x-existing"),
        vec!["new"],
        "override did not override"
    );
    assert_eq!(a.header("x-to-client"), Some("out"));
    assert_eq!(
        a.header("x-upstream"),
        None,
        "outbound delete did not delete"
    );
}

#[tokio::test]
async fn set_header_skip_and_append() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - set-header: { name: X-Skip, value: "policy", exists_action: skip }
        - set-header: { name: X-Skip-Absent, value: "policy", exists_action: skip }
        - set-header: { name: X-Append, value: "policy", exists_action: append }"#,
        "",
    ));
    let a = fetch(
        client()
            .get(gw.url("/api/x"))
            .header("X-Skip", "client")
            .header("X-Append", "client"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    assert_eq!(r.header_all("x-skip"), vec!["client"]);
    assert_eq!(r.header_all("x-skip-absent"), vec!["policy"]);
    let appended = r.header_all("x-append").join(",");
    assert!(
        appended.contains("client") && appended.contains("policy"),
        "append gave {appended:?}"
    );
}

#[tokio::test]
async fn set_header_templates() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - set-header: { name: X-Api, value: "{api.id}" }
        - set-header: { name: X-Op, value: "{operation.id}" }
        - set-header: { name: X-Ip, value: "{client.ip}" }
        - set-header: { name: X-Copy, value: "h={request.header.X-Src};q={request.query.q}" }"#,
        r#"      - { id: get-thing, method: GET, path: "/things/{id}" }"#,
    ));
    let a = fetch(
        client()
            .get(gw.url("/api/things/7?q=qv"))
            .header("X-Src", "hv"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    assert_eq!(r.header("x-api"), Some("api"));
    assert_eq!(r.header("x-op"), Some("get-thing"));
    assert_eq!(r.header("x-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("x-copy"), Some("h=hv;q=qv"));
}

#[tokio::test]
async fn set_query_parameter() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - set-query-parameter: { name: added, value: "1" }
        - set-query-parameter: { name: mode, value: "b" }
        - set-query-parameter: { name: drop, exists_action: delete }"#,
        "",
    ));
    let a = get(&gw.url("/api/x?keep=k&mode=a&drop=d")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.expect_last();
    let mut pairs = r.query_pairs();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            ("added".to_string(), "1".to_string()),
            ("keep".to_string(), "k".to_string()),
            ("mode".to_string(), "b".to_string()),
        ],
        "upstream uri {}",
        r.uri
    );
    assert_eq!(r.path(), "/x");
}

#[tokio::test]
async fn rewrite_uri_with_operation_parameters() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        "",
        r#"      - id: get-item
        method: GET
        path: "/items/{id}"
        policies:
          inbound:
            - base
            - rewrite-uri: { template: "/v2/items/{id}" }"#,
    ));
    let a = get(&gw.url("/api/items/42?x=1")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/v2/items/42?x=1");
}

#[tokio::test]
async fn check_header() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - check-header: { name: X-Version, values: ["1", "2"], failed_status: 400, failed_message: "X-Version must be 1 or 2" }"#,
        "",
    ));
    let c = client();
    let a = fetch(c.get(gw.url("/api/x"))).await;
    let doc = a.assert_problem(400);
    assert!(
        doc["detail"]
            .as_str()
            .is_some_and(|d| d.contains("X-Version must be 1 or 2")),
        "failed_message not in the problem: {doc}"
    );
    let a = fetch(c.get(gw.url("/api/x")).header("X-Version", "3")).await;
    a.assert_problem(400);
    assert_eq!(up.count(), 0);
    let a = fetch(c.get(gw.url("/api/x")).header("X-Version", "2")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn ip_filter_forbid() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - ip-filter: { action: forbid, addresses: [127.0.0.1/8] }"#,
        "",
    ));
    let a = get(&gw.url("/api/x")).await;
    a.assert_problem(403);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn ip_filter_allow_ignores_x_forwarded_for() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - ip-filter: { action: allow, addresses: [10.0.0.0/8] }"#,
        "",
    ));
    let c = client();
    let a = fetch(c.get(gw.url("/api/x"))).await;
    a.assert_problem(403);
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("X-Forwarded-For", "10.1.2.3"),
    )
    .await;
    a.assert_problem(403);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn ip_filter_allow_lets_the_client_in() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - ip-filter: { action: allow, addresses: [127.0.0.1, "::1"] }"#,
        "",
    ));
    let a = get(&gw.url("/api/x")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

fn cors_config(target: &str) -> String {
    config(
        target,
        "",
        r#"      inbound:
        - cors: { allowed_origins: ["https://app.example"], allowed_methods: [GET, PUT], allowed_headers: [X-Custom], expose_headers: [X-Upstream], max_age: 600 }"#,
        "",
    )
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&cors_config(&up.url()));
    let a = fetch(
        client()
            .request(reqwest::Method::OPTIONS, gw.url("/api/x"))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "PUT")
            .header("Access-Control-Request-Headers", "X-Custom"),
    )
    .await;
    assert_eq!(a.status, 204, "{:?} {}", a.headers, a.text());
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = a
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(methods.contains("PUT"), "Allow-Methods {methods:?}");
    let headers = a
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(headers.contains("x-custom"), "Allow-Headers {headers:?}");
    assert_eq!(a.header("access-control-max-age"), Some("600"));
    assert!(a.header("x-request-id").is_some());
    assert_eq!(up.count(), 0, "the preflight reached the upstream");
}

/// The usual browser setup: an API behind subscription keys, with operations, and `cors`
/// at API level after another policy. A preflight carries no key and asks about another
/// method than its own `OPTIONS`: it is answered by the `cors` policy before the key check
/// and before any other policy (it was 405 here, and 401 without operations). Refusals
/// made before the chain runs (no key, no such method) carry the CORS headers for an
/// allowed origin, so the page can read them.
#[tokio::test]
async fn cors_works_on_an_api_with_keys_and_operations() {
    let up = Upstream::start("a");
    let yaml = config(
        &up.url(),
        "",
        r#"      inbound:
        - rate-limit: { calls: 1, renewal_period: 60s }
        - cors: { allowed_origins: ["https://app.example"], allowed_methods: [GET, PUT], allowed_headers: [X-Custom, Ocp-Apim-Subscription-Key] }"#,
        r#"      - { id: get-x, method: GET, path: "/x/{id}" }
      - { id: put-x, method: PUT, path: "/x/{id}" }"#,
    )
    .replace("subscription_required: false", "subscription_required: true");
    let gw = Gateway::start(&yaml);
    let c = client();
    let preflight = |method: &str, origin: &str| {
        fetch(
            c.request(reqwest::Method::OPTIONS, gw.url("/api/x/7"))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", method)
                .header(
                    "Access-Control-Request-Headers",
                    "ocp-apim-subscription-key",
                ),
        )
    };
    // More than the rate limit's one call: preflights are not counted.
    for _ in 0..3 {
        let a = preflight("PUT", "https://app.example").await;
        assert_eq!(a.status, 204, "{:?} {}", a.headers, a.text());
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert!(a
            .header("access-control-allow-headers")
            .is_some_and(|h| h.to_ascii_lowercase().contains("ocp-apim-subscription-key")));
    }
    assert_eq!(preflight("DELETE", "https://app.example").await.status, 403);
    assert_eq!(preflight("PUT", "https://evil.example").await.status, 403);
    assert_eq!(up.count(), 0, "a preflight reached the upstream");

    // Refusals before the chain: the allowed origin can read them, another gets no grant.
    let a = fetch(
        c.get(gw.url("/api/x/7"))
            .header("Origin", "https://app.example"),
    )
    .await;
    a.assert_problem(401);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let a = fetch(
        c.get(gw.url("/api/x/7"))
            .header("Origin", "https://evil.example"),
    )
    .await;
    a.assert_problem(401);
    assert_eq!(a.header("access-control-allow-origin"), None);
    let a = fetch(
        c.delete(gw.url("/api/x/7"))
            .header("Origin", "https://app.example"),
    )
    .await;
    a.assert_problem(405);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    // With a key, the actual request runs the whole chain (the rate limit included) and
    // gets its grant once, from the chain's own run.
    let sub = gw.admin().create_subscription("web", "api:api").await;
    let call = || {
        fetch(
            c.put(gw.url("/api/x/7"))
                .header("Origin", "https://app.example")
                .header("Ocp-Apim-Subscription-Key", &sub.primary),
        )
    };
    let a = call().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.headers
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1,
        "{:?}",
        a.headers
    );
    assert_eq!(up.count(), 1);
    let a = call().await;
    a.assert_problem(429);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[tokio::test]
async fn cors_actual_request_gets_allow_origin() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&cors_config(&up.url()));
    let c = client();
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Origin", "https://app.example"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(a
        .header("access-control-expose-headers")
        .is_some_and(|h| h.to_ascii_lowercase().contains("x-upstream")));
    // Another origin gets no CORS grant, nor does a request without Origin; their answers
    // say they vary by it all the same (a shared cache must not hand them to the allowed
    // origin, nor the other way round).
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Origin", "https://evil.example"),
    )
    .await;
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert_eq!(a.header("vary"), Some("Origin"), "{:?}", a.headers);
    let a = fetch(c.get(gw.url("/api/x"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert_eq!(a.header("vary"), Some("Origin"), "{:?}", a.headers);
    let a = fetch(
        c.request(reqwest::Method::OPTIONS, gw.url("/api/x"))
            .header("Origin", "https://evil.example")
            .header("Access-Control-Request-Method", "PUT"),
    )
    .await;
    assert_eq!(
        a.header("access-control-allow-origin"),
        None,
        "{:?}",
        a.headers
    );
}

#[tokio::test]
async fn return_response_does_not_call_the_upstream() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - return-response: { status: 418, headers: { X-Mock: "yes", Content-Type: text/plain }, body: "short and stout" }"#,
        "",
    ));
    let a = get(&gw.url("/api/x")).await;
    assert_eq!(a.status, 418);
    assert_eq!(a.header("x-mock"), Some("yes"));
    assert!(a
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    assert_eq!(a.text(), "short and stout");
    assert!(a.header("x-request-id").is_some());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn mock_response_with_json_body() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        "",
        r#"      - id: mocked
        method: GET
        path: /mocked
        policies:
          inbound:
            - mock-response: { status: 200, body: { ok: true, n: 3 } }
      - { id: real, method: GET, path: /real }"#,
    ));
    let a = get(&gw.url("/api/mocked")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), serde_json::json!({"ok": true, "n": 3}));
    assert!(a.header("content-type").is_some_and(|c| c.contains("json")));
    assert_eq!(up.count(), 0);
    let a = get(&gw.url("/api/real")).await;
    assert!(a.from_upstream("a"));
}

// ---------- inheritance: global → API → operation ----------

const GLOBAL: &str = r#"  inbound:
    - set-header: { name: X-Global, value: "g" }
    - set-header: { name: X-Order, value: "global" }"#;

#[tokio::test]
async fn api_without_a_section_inherits_the_global_one() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up.url(), GLOBAL, "", ""));
    get(&gw.url("/api/x")).await;
    let r = up.expect_last();
    assert_eq!(r.header("x-global"), Some("g"));
}

#[tokio::test]
async fn base_places_the_parent_chain() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        GLOBAL,
        r#"      inbound:
        - base
        - set-header: { name: X-Api, value: "a" }
        - set-header: { name: X-Order, value: "api" }"#,
        "",
    ));
    get(&gw.url("/api/x")).await;
    let r = up.expect_last();
    assert_eq!(r.header("x-global"), Some("g"));
    assert_eq!(r.header("x-api"), Some("a"));
    assert_eq!(
        r.header_all("x-order"),
        vec!["api"],
        "the API's policy ran before base"
    );
}

#[tokio::test]
async fn base_after_own_policies_runs_parent_last() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        GLOBAL,
        r#"      inbound:
        - set-header: { name: X-Order, value: "api" }
        - base"#,
        "",
    ));
    get(&gw.url("/api/x")).await;
    let r = up.expect_last();
    assert_eq!(r.header_all("x-order"), vec!["global"]);
}

#[tokio::test]
async fn section_without_base_drops_the_parent() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        GLOBAL,
        r#"      inbound:
        - set-header: { name: X-Api, value: "a" }"#,
        "",
    ));
    get(&gw.url("/api/x")).await;
    let r = up.expect_last();
    assert_eq!(r.header("x-api"), Some("a"));
    assert_eq!(
        r.header("x-global"),
        None,
        "the global chain ran without base"
    );
}

#[tokio::test]
async fn operation_scopes() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        GLOBAL,
        r#"      inbound:
        - base
        - set-header: { name: X-Api, value: "a" }"#,
        r#"      - { id: inherits, method: GET, path: /inherits }
      - id: extends
        method: GET
        path: /extends
        policies:
          inbound:
            - base
            - set-header: { name: X-Op, value: "o" }
      - id: replaces
        method: GET
        path: /replaces
        policies:
          inbound:
            - set-header: { name: X-Op, value: "only" }
      - id: empties
        method: GET
        path: /empties
        policies:
          inbound: []"#,
    ));
    let c = client();
    let seen = |name: &str| {
        let r = up.expect_last();
        (
            r.header("x-global").map(str::to_string),
            r.header("x-api").map(str::to_string),
            r.header("x-op").map(str::to_string),
            name.to_string(),
        )
    };
    let some = |s: &str| Some(s.to_string());

    fetch(c.get(gw.url("/api/inherits"))).await;
    assert_eq!(
        seen("inherits"),
        (some("g"), some("a"), None, "inherits".into())
    );
    fetch(c.get(gw.url("/api/extends"))).await;
    assert_eq!(
        seen("extends"),
        (some("g"), some("a"), some("o"), "extends".into())
    );
    fetch(c.get(gw.url("/api/replaces"))).await;
    assert_eq!(
        seen("replaces"),
        (None, None, some("only"), "replaces".into())
    );
    fetch(c.get(gw.url("/api/empties"))).await;
    assert_eq!(seen("empties"), (None, None, None, "empties".into()));
}

#[tokio::test]
async fn outbound_inheritance() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        r#"  outbound:
    - set-header: { name: X-Global-Out, value: "g" }"#,
        r#"      outbound:
        - base
        - set-header: { name: X-Api-Out, value: "a" }"#,
        r#"      - { id: plain, method: GET, path: /plain }
      - id: own
        method: GET
        path: /own
        policies:
          outbound:
            - set-header: { name: X-Op-Out, value: "o" }"#,
    ));
    let a = get(&gw.url("/api/plain")).await;
    assert_eq!(a.header("x-global-out"), Some("g"));
    assert_eq!(a.header("x-api-out"), Some("a"));
    let a = get(&gw.url("/api/own")).await;
    assert_eq!(a.header("x-global-out"), None);
    assert_eq!(a.header("x-api-out"), None);
    assert_eq!(a.header("x-op-out"), Some("o"));
}

/// `limit-concurrency`: two slow requests in flight take both places, a third is refused
/// at once (429) without reaching the upstream; the places come back when the requests
/// end, also when the client gave up; with a `counter_key`, keys are counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_concurrency_refuses_past_max_count_and_gives_places_back() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "",
        r#"      inbound:
        - limit-concurrency: { max_count: 2, counter_key: "{request.header.X-Tenant}" }"#,
        "",
    ));
    let slow = |tenant: &'static str| {
        let url = gw.url("/api/slow?sleep_ms=3000");
        tokio::spawn(async move {
            fetch(client().get(url).header("X-Tenant", tenant))
                .await
                .status
        })
    };
    let (one, two) = (slow("a"), slow("a"));
    assert!(
        up.wait_for_requests(2, Duration::from_secs(10)),
        "the slow requests did not arrive"
    );
    let refused = fetch(client().get(gw.url("/api/third")).header("X-Tenant", "a")).await;
    refused.assert_problem(429);
    assert_eq!(up.count(), 2, "the refused request reached the upstream");
    // Another key has places of its own.
    let other = fetch(client().get(gw.url("/api/other")).header("X-Tenant", "b")).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!((one.await.unwrap(), two.await.unwrap()), (200, 200));
    // Both ended: their places are free again.
    let again = fetch(client().get(gw.url("/api/again")).header("X-Tenant", "a")).await;
    assert_eq!(again.status, 200, "{}", again.text());

    // A client that gives up: its place comes back once the gateway is done with it.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    for _ in 0..2 {
        let r = impatient
            .get(gw.url("/api/slow?sleep_ms=1000"))
            .header("X-Tenant", "a")
            .send()
            .await;
        assert!(r.is_err(), "the request did not time out: {r:?}");
    }
    let mut statuses = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while statuses.last() != Some(&200) && std::time::Instant::now() < deadline {
        let s = fetch(client().get(gw.url("/api/after")).header("X-Tenant", "a"))
            .await
            .status;
        statuses.push(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        statuses.last(),
        Some(&200),
        "the places never came back: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}
