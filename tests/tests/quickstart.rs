//! The README's short tour against `examples/quickstart.yaml` (its demo upstream replaced by
//! the harness's echo server on an ephemeral port): what a first-time user is told they
//! will see, step by step.
#![allow(missing_docs)]

use tollgate_tests::*;

const TOKEN: &str = "quickstart-admin-token-0123456789";

#[tokio::test]
async fn the_readme_tour_holds() {
    let up = Upstream::start("demo");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.yaml");
    let yaml = std::fs::read_to_string(path).expect("examples/quickstart.yaml");
    assert!(
        yaml.contains("http://127.0.0.1:9000"),
        "the example's upstream moved"
    );
    let yaml = yaml.replace("http://127.0.0.1:9000", &up.url());
    let gw = Gateway::builder(&yaml).admin_token(TOKEN).start();
    let c = client();

    // Proxied: the /echo prefix stripped, the query unchanged, the outbound headers of
    // the global and API scopes on the answer.
    let a = get(&gw.url("/echo/items?color=red")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/items?color=red");
    assert_eq!(a.header("x-powered-by"), Some("Tollgate"));
    assert_eq!(a.header("x-api"), Some("echo"));

    // rewrite-uri on the get-item operation.
    let a = get(&gw.url("/echo/items/42")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, "/v2/items/42");

    // check-header: not JSON → 415; the method of no operation → 405 with Allow.
    let seen = up.count();
    let a = fetch(
        c.post(gw.url("/echo/items"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("x=1"),
    )
    .await;
    a.assert_problem(415);
    let a = fetch(c.delete(gw.url("/echo/items"))).await;
    a.assert_problem(405);
    assert!(a.header("allow").is_some_and(|v| v.contains("POST")));

    // The mocked operation and the ip-filter that forbids loopback callers.
    let a = get(&gw.url("/status")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json(),
        serde_json::json!({"status": "green", "version": 1})
    );
    get(&gw.url("/status/internal")).await.assert_problem(403);

    // The CORS preflight, answered by the gateway.
    let a = fetch(
        c.request(reqwest::Method::OPTIONS, gw.url("/echo/items"))
            .header("Origin", "http://localhost:3000")
            .header("Access-Control-Request-Method", "POST"),
    )
    .await;
    assert_eq!(a.status, 204, "{:?} {}", a.headers, a.text());
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );

    // Nothing routes here: 404, with X-Request-Id like every answer.
    let a = get(&gw.url("/nope")).await;
    a.assert_problem(404);
    assert!(a.header("x-request-id").is_some());
    assert_eq!(up.count(), seen, "a refusal or a mock reached the upstream");

    // Subscription keys: 401 without; a subscription to the starter product, then 200
    // with the product's outbound header.
    get(&gw.url("/secure/hello")).await.assert_problem(401);
    let sub = gw
        .admin()
        .post_json(
            "/subscriptions",
            &serde_json::json!({"display_name": "Demo", "scope": "product:starter"}),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.text());
    let key = sub.json()["primary_key"]
        .as_str()
        .expect("primary_key")
        .to_string();
    let a = fetch(
        c.get(gw.url("/secure/hello"))
            .header("Ocp-Apim-Subscription-Key", &key),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-plan"), Some("starter"));
    let r = up.expect_last();
    assert_eq!(r.uri, "/hello");
    assert!(r.header("ocp-apim-subscription-key").is_none());
    assert!(r.header("x-subscription").is_some(), "{:?}", r.headers);
}
