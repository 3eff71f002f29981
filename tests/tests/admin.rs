//! The admin REST API (contract §4) over real HTTP against the real process: every call's
//! happy path, authentication and roles, `If-Match`, validation errors (with the old config
//! still serving), problem+json errors, and the OpenAPI document.
#![allow(missing_docs)]

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::*;

const ADMIN: &str = "admin-token-for-tests-0123456789";
const OPERATOR: &str = "operator-token-for-tests-0123456789";

/// Two products, three APIs (one with operations, one with its own key names, one open).
/// `gen` is the value of the `X-Gen` header the `pets` API sets on its answers.
fn config(target: &str, gen: u32) -> String {
    format!(
        r#"version: 1
products:
  - id: gold
    title: Gold
    apis: [pets]
    policies:
      outbound:
        - set-header: {{ name: X-Product, value: "gold" }}
apis:
  - id: pets
    path: /pets
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - base
        - set-header: {{ name: X-Gen, value: "{gen}" }}
    operations:
      - id: get-item
        method: GET
        path: /items/{{id}}
  - id: orders
    path: /orders
    subscription_key: {{ header: X-Api-Key, query: api-key }}
    upstream: {{ targets: ["{target}"] }}
  - id: open
    path: /open
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - set-header: {{ name: X-Gen, value: "{gen}" }}
"#
    )
}

fn start(up: &Upstream) -> Gateway {
    Gateway::builder(&config(&up.url(), 1))
        .admin_token(ADMIN)
        .operator_token(OPERATOR)
        .start()
}

/// The `X-Gen` value of a proxied `GET /open/x` (which must answer 200).
async fn served_gen(gw: &Gateway) -> String {
    let a = get(&gw.url("/open/x")).await;
    assert_eq!(a.status, 200, "proxied request: {}", a.text());
    a.header("x-gen").unwrap_or("<none>").to_string()
}

#[tokio::test]
async fn probes_answer_without_a_token() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let anon = Admin::new(&gw.admin_url(""), None);
    for path in ["/healthz", "/readyz"] {
        let a = anon.get(path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
    }
    let ready = anon.get("/readyz").await.json();
    assert_eq!(ready["revision"], 1, "{ready}");
}

/// The admin listener times request heads like the proxy (`--header-read-timeout`): a
/// head that never completes, and an idle keep-alive connection, are closed after it, so
/// clients cannot hold its connections (and the process's descriptors) forever.
#[test]
fn admin_connections_that_send_no_head_are_closed() {
    let up = Upstream::start("u");
    let gw = Gateway::builder(&config(&up.url(), 1))
        .admin_token(ADMIN)
        .env("TOLLGATE_HEADER_READ_TIMEOUT", "1")
        .start();
    let started = std::time::Instant::now();
    let mut partial = RawConn::connect(gw.admin_addr());
    partial.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n");
    let mut idle = RawConn::connect(gw.admin_addr());
    let r = idle.request(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.closed);
    // A whole head sent in two parts within the limit is answered.
    let mut slow = RawConn::connect(gw.admin_addr());
    slow.send(b"GET /healthz HTTP/1.1\r\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = slow.request(b"Host: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    for (name, conn) in [("partial head", &mut partial), ("idle", &mut idle)] {
        assert!(
            conn.wait_closed(std::time::Duration::from_secs(5)),
            "{name} connection still open after {:?}",
            started.elapsed()
        );
    }
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900),
        "closed too early: {took:?}"
    );
}

/// A client that pipelines requests and stops reading their answers does not hold its
/// admin connection for good: a write the client does not take within the head timeout
/// closes it, before all the answers went out.
#[test]
fn an_admin_client_that_stops_reading_is_cut_off() {
    use std::io::{Read, Write};
    let up = Upstream::start("u");
    let gw = Gateway::builder(&config(&up.url(), 1))
        .admin_token(ADMIN)
        .env("TOLLGATE_HEADER_READ_TIMEOUT", "1")
        .start();
    let mut s = std::net::TcpStream::connect(gw.admin_addr()).expect("connect");
    // 400 answers of about 50 KiB: far more than the sockets' buffers hold.
    let one = b"GET /dashboard/uPlot.iife.min.js HTTP/1.1\r\nHost: a\r\n\r\n";
    let requests = 400;
    let _ = s.write_all(&one.repeat(requests));
    std::thread::sleep(std::time::Duration::from_secs(4));
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    // Bounded: at most 30 MB or a 5 s silence.
    while got < 30 << 20 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < requests * 50_000,
        "all {requests} answers were written ({got} bytes): the stalled writer was never cut off"
    );
    // The listener still answers.
    let r = raw_get(gw.admin_addr(), "/healthz", &[]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn missing_or_unknown_token_is_401_with_a_challenge() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let anon = Admin::new(&gw.admin_url(""), None);
    let wrong = anon.with_token(Some("not-a-token"));
    let reads = [
        "/config",
        "/config/revisions",
        "/config/revisions/1",
        "/config/effective?api=pets",
        "/products",
        "/products/gold",
        "/apis",
        "/apis/pets",
        "/subscriptions",
        "/subscriptions/nope",
        "/openapi.json",
    ];
    for path in reads {
        let a = anon.get(path).await;
        assert_admin_problem(&a, 401);
        let challenge = a.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer"),
            "GET {path} without a token: WWW-Authenticate {challenge:?}"
        );
        let a = wrong.get(path).await;
        assert_admin_problem(&a, 401);
        let challenge = a.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("invalid_token"),
            "GET {path} with an unknown token: WWW-Authenticate {challenge:?}"
        );
    }
    // Writes too, before their body is looked at.
    let a = anon.put_yaml("/config", "not even yaml: [").await;
    assert_admin_problem(&a, 401);
    assert!(a.header("www-authenticate").is_some());
    let a = wrong
        .post_json(
            "/subscriptions",
            &json!({"display_name": "x", "scope": "all"}),
        )
        .await;
    assert_admin_problem(&a, 401);
    // Another scheme is no token.
    let a = fetch(
        client()
            .get(gw.admin_url("/config"))
            .header("authorization", format!("Basic {ADMIN}")),
    )
    .await;
    assert_admin_problem(&a, 401);
    assert!(a.header("www-authenticate").is_some());
    // Nothing changed.
    assert_eq!(gw.admin().live_revision().await, 1);
    assert!(gw.admin().all_pages("/subscriptions", 5).await.is_empty());
}

#[tokio::test]
async fn operator_reads_and_plans_but_may_not_write() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let sub = admin.create_subscription("s1", "api:pets").await;
    let op = Admin::new(&gw.admin_url(""), Some(OPERATOR));
    for path in [
        "/config",
        "/config/revisions",
        "/config/revisions/1",
        "/config/effective?api=pets",
        "/products",
        "/products/gold",
        "/apis",
        "/apis/pets",
        "/subscriptions",
        "/subscriptions/s1",
        "/openapi.json",
    ] {
        let a = op.get(path).await;
        assert_eq!(a.status, 200, "operator GET {path}: {}", a.text());
    }
    let text = config(&up.url(), 2);
    // The operator may plan a config change (what `tollgate diff` asks), not make it.
    let plan = op.put_yaml("/config?dry_run=true", &text).await;
    assert_eq!(plan.status, 200, "operator dry run: {}", plan.text());
    let plan = plan.json();
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert!(
        !plan["changes"].as_array().unwrap().is_empty(),
        "no changes planned: {plan}"
    );
    let writes: Vec<(&str, Answer)> = vec![
        ("PUT /config", op.put_yaml("/config", &text).await),
        (
            "PUT /config?dry_run=false",
            op.put_yaml("/config?dry_run=false", &text).await,
        ),
        (
            "POST /config/rollback",
            op.post_json("/config/rollback", &json!({"revision": 1}))
                .await,
        ),
        (
            "PUT /products/silver",
            op.put_json("/products/silver", &json!({"apis": ["orders"]}))
                .await,
        ),
        ("DELETE /products/gold", op.delete("/products/gold").await),
        (
            "PUT /apis/x",
            op.put_json(
                "/apis/x",
                &json!({"path": "/x", "upstream": {"targets": [up.url()]}}),
            )
            .await,
        ),
        ("DELETE /apis/open", op.delete("/apis/open").await),
        (
            "POST /subscriptions",
            op.post_json(
                "/subscriptions",
                &json!({"display_name": "x", "scope": "all"}),
            )
            .await,
        ),
        (
            "PATCH /subscriptions/s1",
            op.patch_json("/subscriptions/s1", &json!({"state": "suspended"}))
                .await,
        ),
        (
            "regenerate-primary-key",
            op.post_empty("/subscriptions/s1/regenerate-primary-key")
                .await,
        ),
        (
            "regenerate-secondary-key",
            op.post_empty("/subscriptions/s1/regenerate-secondary-key")
                .await,
        ),
        ("secrets", op.post_empty("/subscriptions/s1/secrets").await),
        (
            "DELETE /subscriptions/s1",
            op.delete("/subscriptions/s1").await,
        ),
    ];
    for (what, a) in &writes {
        assert_eq!(a.status, 403, "operator {what}: {}", a.text());
        assert_admin_problem(a, 403);
    }
    // Nothing changed: same revision, the subscription is active and its keys still work.
    assert_eq!(admin.live_revision().await, 1);
    assert_eq!(admin.revisions().await.len(), 1);
    let s = admin.get("/subscriptions/s1").await.json();
    assert_eq!(s["state"], "active");
    let a = fetch(
        client()
            .get(gw.url("/pets/items/1"))
            .header("ocp-apim-subscription-key", &sub.primary),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = fetch(
        client()
            .get(gw.url("/pets/items/1"))
            .header("ocp-apim-subscription-key", &sub.secondary),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test]
async fn config_get_put_if_match_dry_run_revisions_and_rollback() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let rev1_text = config(&up.url(), 1);

    // GET /config: JSON by default, YAML on request, ETag "1".
    let a = admin.get("/config").await;
    assert_eq!(a.status, 200);
    assert!(a
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(a.header("etag"), Some("\"1\""));
    let live = a.json();
    assert_eq!(live["apis"].as_array().map(Vec::len), Some(3), "{live}");
    assert_eq!(live["products"][0]["id"], "gold");
    let a = fetch(
        admin
            .req(Method::GET, "/config")
            .header("accept", "application/yaml"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("content-type").is_some_and(|c| c.contains("yaml")),
        "{:?}",
        a.headers
    );
    assert_eq!(a.header("etag"), Some("\"1\""));
    assert!(a.text().contains("id: pets"), "{}", a.text());
    assert_eq!(served_gen(&gw).await, "1");

    // PUT with the right If-Match: revision 2, the plan names the changed section.
    let rev2_text = config(&up.url(), 2);
    let a = fetch(
        admin
            .req(Method::PUT, "/config")
            .header("content-type", "application/yaml")
            .header("if-match", "\"1\"")
            .body(rev2_text.clone()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("etag"), Some("\"2\""));
    let doc = a.json();
    assert_eq!(doc["revision"], 2, "{doc}");
    let changes = doc["changes"].as_array().expect("changes").clone();
    assert!(
        changes
            .contains(&json!({"action": "changed", "kind": "policies", "id": "api:pets/outbound"})),
        "{doc}"
    );
    assert!(
        changes
            .contains(&json!({"action": "changed", "kind": "policies", "id": "api:open/outbound"})),
        "{doc}"
    );
    assert_eq!(served_gen(&gw).await, "2", "the PUT is not live at once");

    // A stale If-Match: 412, the live ETag in the answer, nothing changes.
    let a = fetch(
        admin
            .req(Method::PUT, "/config")
            .header("content-type", "application/yaml")
            .header("if-match", "\"1\"")
            .body(config(&up.url(), 99)),
    )
    .await;
    assert_admin_problem(&a, 412);
    assert_eq!(a.header("etag"), Some("\"2\""));
    assert_eq!(admin.live_revision().await, 2);
    assert_eq!(served_gen(&gw).await, "2");

    // JSON body, If-Match: *.
    let mut as_json = admin.get("/config").await.json();
    as_json["apis"][2]["policies"]["outbound"][0]["set-header"]["value"] = json!("3");
    let a = fetch(
        admin
            .req(Method::PUT, "/config")
            .header("content-type", "application/json")
            .header("if-match", "*")
            .body(as_json.to_string()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["revision"], 3);
    assert_eq!(served_gen(&gw).await, "3");

    // Dry run: the plan only.
    let a = admin
        .put_yaml("/config?dry_run=true", &config(&up.url(), 4))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    assert_eq!(doc["dry_run"], true, "{doc}");
    assert_eq!(doc["revision"], 3, "{doc}");
    assert!(!doc["changes"].as_array().unwrap().is_empty(), "{doc}");
    assert_eq!(admin.live_revision().await, 3);
    assert_eq!(
        admin.revisions().await.len(),
        3,
        "a dry run stored a revision"
    );
    assert_eq!(served_gen(&gw).await, "3");

    // The same text again: nothing stored.
    let rev4_text = config(&up.url(), 4);
    assert_eq!(admin.put_config(&rev4_text).await["revision"], 4);
    let doc = admin.put_config(&rev4_text).await;
    assert_eq!(doc["revision"], 4, "{doc}");
    assert_eq!(doc["unchanged"], true, "{doc}");
    assert_eq!(admin.revisions().await.len(), 4);

    // Revisions: newest first, with their metadata; one with its text as submitted.
    let revs = admin.revisions().await;
    let numbers: Vec<u64> = revs
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![4, 3, 2, 1]);
    let sources: Vec<&str> = revs.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(sources, vec!["api", "api", "api", "file"]);
    for r in &revs {
        let sha = r["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{r}"
        );
        let at = r["created_at"].as_str().unwrap();
        assert!(
            at.len() >= 20 && at.as_bytes()[4] == b'-' && at.contains('T') && at.ends_with('Z'),
            "created_at is not RFC 3339 UTC: {at}"
        );
    }
    let page = admin.get("/config/revisions?limit=2").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    let next = page["next"].as_str().expect("a next cursor").to_string();
    let page2 = admin
        .get(&format!("/config/revisions?limit=2&cursor={next}"))
        .await
        .json();
    let n2: Vec<u64> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(n2, vec![2, 1], "{page2}");
    assert!(page2["next"].is_null(), "{page2}");
    let r2 = admin.get("/config/revisions/2").await;
    assert_eq!(r2.status, 200);
    let r2 = r2.json();
    assert_eq!(r2["revision"], 2);
    assert_eq!(
        r2["text"], rev2_text,
        "revision 2's text is not the one submitted"
    );
    assert_eq!(r2["source"], "api");
    let r1 = admin.get("/config/revisions/1").await.json();
    assert_eq!(r1["text"], rev1_text);
    assert_eq!(r1["source"], "file");
    assert_admin_problem(&admin.get("/config/revisions/999").await, 404);
    assert_admin_problem(&admin.get("/config/revisions/abc").await, 400);

    // Rollback to 2: a new revision 5 with 2's text, live at once.
    let a = admin
        .post_json("/config/rollback", &json!({"revision": 2}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["revision"], 5);
    assert_eq!(a.header("etag"), Some("\"5\""));
    assert_eq!(admin.live_revision().await, 5);
    let r5 = admin.get("/config/revisions/5").await.json();
    assert_eq!(r5["source"], "rollback");
    assert_eq!(r5["text"], rev2_text);
    assert_eq!(r5["sha256"], r2["sha256"]);
    assert_eq!(served_gen(&gw).await, "2");
    assert_admin_problem(
        &admin
            .post_json("/config/rollback", &json!({"revision": 999}))
            .await,
        404,
    );
    // Rollback honours If-Match.
    let a = fetch(
        admin
            .req(Method::POST, "/config/rollback")
            .header("content-type", "application/json")
            .header("if-match", "\"4\"")
            .body(json!({"revision": 1}).to_string()),
    )
    .await;
    assert_admin_problem(&a, 412);
    assert_eq!(admin.live_revision().await, 5);
}

#[tokio::test]
async fn invalid_config_is_422_with_every_error_and_the_old_one_keeps_serving() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    assert_eq!(served_gen(&gw).await, "1");
    let bad = format!(
        r#"version: 1
apis:
  - id: Bad_Id
    path: no-slash
    upstream: {{ targets: ["{}"] }}
  - id: two
    path: /two
    upstream: {{ targets: ["{}"] }}
    policies:
      inbound:
        - no-such-policy: {{}}
        - set-header: {{ name: X-A, value: "x", exists_action: sideways }}
"#,
        up.url(),
        up.url()
    );
    let a = admin.put_yaml("/config", &bad).await;
    let doc = assert_admin_problem(&a, 422);
    let errors = doc["errors"].as_array().expect("errors").clone();
    assert!(
        errors.len() >= 3,
        "expected every error (at least 3), got {}",
        a.text()
    );
    for e in &errors {
        assert!(
            e["path"].is_string() && e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error without path or message: {e}"
        );
    }
    let paths: Vec<&str> = errors.iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(
        paths.iter().any(|p| p.starts_with("apis[0]")),
        "no error about apis[0]: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("apis[1]")),
        "no error about apis[1]: {paths:?}"
    );
    // A YAML syntax error and a JSON syntax error are 422 too, with a line.
    let a = admin
        .put_yaml("/config", "version: 1\napis: [ {id: x\n")
        .await;
    let doc = assert_admin_problem(&a, 422);
    assert!(
        doc["errors"][0]["line"].is_u64(),
        "a syntax error without a line: {doc}"
    );
    let a = fetch(
        admin
            .req(Method::PUT, "/config")
            .header("content-type", "application/json")
            .body("{\"version\": 1, \"apis\": [}"),
    )
    .await;
    assert_admin_problem(&a, 422);
    // Neither YAML nor JSON.
    let a = fetch(
        admin
            .req(Method::PUT, "/config")
            .header("content-type", "text/plain")
            .body(config(&up.url(), 5)),
    )
    .await;
    assert_admin_problem(&a, 415);

    // The live config is untouched and still serves.
    assert_eq!(admin.live_revision().await, 1);
    assert_eq!(admin.revisions().await.len(), 1);
    for _ in 0..5 {
        assert_eq!(served_gen(&gw).await, "1");
    }
    // A valid one afterwards is taken.
    admin.put_config(&config(&up.url(), 2)).await;
    assert_eq!(served_gen(&gw).await, "2");
}

#[tokio::test]
async fn effective_policy_chain() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let a = admin
        .get("/config/effective?api=pets&operation=get-item&product=gold")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    assert_eq!(doc["revision"], 1);
    let outbound: Vec<(String, String)> = doc["outbound"]
        .as_array()
        .expect("outbound")
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap_or("").to_string(),
                p["origin"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        outbound,
        vec![
            (
                "set-header".to_string(),
                "product:gold/outbound/0".to_string()
            ),
            ("set-header".to_string(), "api:pets/outbound/1".to_string()),
        ],
        "{doc}"
    );
    assert_eq!(doc["outbound"][0]["name"], "X-Product", "{doc}");
    // Without a product: the API's own chain.
    let doc = admin.get("/config/effective?api=pets").await.json();
    assert_eq!(doc["outbound"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["outbound"][0]["value"], "1", "{doc}");
    // Errors.
    assert_admin_problem(&admin.get("/config/effective?api=nope").await, 404);
    assert_admin_problem(
        &admin.get("/config/effective?api=pets&operation=nope").await,
        404,
    );
    assert_admin_problem(
        &admin.get("/config/effective?api=pets&product=nope").await,
        404,
    );
    assert_admin_problem(&admin.get("/config/effective").await, 400);
    assert_admin_problem(
        &admin.get("/config/effective?api=orders&product=gold").await,
        422,
    );
}

#[tokio::test]
async fn products_crud() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let list = admin.get("/products").await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], "gold");
    assert!(list["next"].is_null());
    let a = admin.get("/products/gold").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("etag"), Some("\"1\""));
    assert_eq!(a.json()["apis"], json!(["pets"]));
    assert_admin_problem(&admin.get("/products/nope").await, 404);

    // Create (JSON): 201 + Location, a new revision.
    let a = admin
        .put_json(
            "/products/silver",
            &json!({"title": "Silver", "apis": ["orders"]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.header("location"), Some("/products/silver"));
    assert_eq!(a.json()["revision"], 2);
    assert_eq!(a.header("etag"), Some("\"2\""));
    // Replace (YAML): 200.
    let a = admin
        .put_yaml(
            "/products/silver",
            "title: Silver 2\napis: [orders, open]\n",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["revision"], 3);
    let p = admin.get("/products/silver").await.json();
    assert_eq!(p["title"], "Silver 2");
    assert_eq!(p["apis"], json!(["orders", "open"]));
    let list = admin.all_pages("/products", 5).await;
    assert_eq!(list.len(), 2);
    // Pagination.
    let page = admin.get("/products?limit=1").await.json();
    assert_eq!(page["items"][0]["id"], "gold", "{page}");
    let next = page["next"].as_str().expect("next").to_string();
    let page = admin
        .get(&format!("/products?limit=1&cursor={next}"))
        .await
        .json();
    assert_eq!(page["items"][0]["id"], "silver", "{page}");
    assert!(page["next"].is_null(), "{page}");
    // Invalid: an unknown API, an id differing from the path's.
    let doc = assert_admin_problem(
        &admin
            .put_json("/products/bad", &json!({"apis": ["no-such-api"]}))
            .await,
        422,
    );
    assert!(!doc["errors"].as_array().unwrap().is_empty(), "{doc}");
    assert_admin_problem(
        &admin
            .put_json("/products/silver", &json!({"id": "other", "apis": []}))
            .await,
        422,
    );
    // Stale If-Match.
    let a = fetch(
        admin
            .req(Method::PUT, "/products/silver")
            .header("content-type", "application/json")
            .header("if-match", "\"1\"")
            .body(json!({"apis": []}).to_string()),
    )
    .await;
    assert_admin_problem(&a, 412);
    // Delete.
    let a = admin.delete("/products/silver").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["revision"], 4);
    assert_admin_problem(&admin.get("/products/silver").await, 404);
    assert_admin_problem(&admin.delete("/products/silver").await, 404);
    assert_eq!(admin.revisions().await.len(), 4);
}

#[tokio::test]
async fn apis_crud() {
    let up = Upstream::start("u");
    let other = Upstream::start("other");
    let gw = start(&up);
    let admin = gw.admin();
    let ids: Vec<String> = admin
        .all_pages("/apis", 5)
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["pets", "orders", "open"]);
    let a = admin.get("/apis/pets").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("etag"), Some("\"1\""));
    let pets = a.json();
    assert_eq!(pets["path"], "/pets");
    assert_eq!(pets["operations"][0]["id"], "get-item", "{pets}");
    assert_admin_problem(&admin.get("/apis/nope").await, 404);

    // A new API is routed at once.
    fetch(client().get(gw.url("/extra/x")))
        .await
        .assert_problem(404);
    let a = admin
        .put_json(
            "/apis/extra",
            &json!({"path": "/extra", "subscription_required": false,
                    "upstream": {"targets": [other.url()]}}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.header("location"), Some("/apis/extra"));
    assert_eq!(a.json()["revision"], 2);
    let r = get(&gw.url("/extra/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.from_upstream("other"));
    assert_eq!(other.expect_last().uri, "/x");
    // Replaced: now at another path.
    let a = admin
        .put_yaml(
            "/apis/extra",
            &format!(
                "path: /extra2\nsubscription_required: false\nupstream: {{ targets: [\"{}\"] }}\n",
                other.url()
            ),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(get(&gw.url("/extra2/y")).await.status, 200);
    fetch(client().get(gw.url("/extra/x")))
        .await
        .assert_problem(404);
    // Invalid: every error, nothing stored.
    let a = admin
        .put_json(
            "/apis/bad",
            &json!({"path": "no-slash", "upstream": {"targets": []},
                    "policies": {"inbound": [{"no-such-policy": {}}]}}),
        )
        .await;
    let doc = assert_admin_problem(&a, 422);
    assert!(
        doc["errors"].as_array().unwrap().len() >= 2,
        "expected several errors: {doc}"
    );
    // Deleting an API a product lists is refused.
    assert_admin_problem(&admin.delete("/apis/pets").await, 422);
    // Delete.
    let a = admin.delete("/apis/extra").await;
    assert_eq!(a.status, 200, "{}", a.text());
    fetch(client().get(gw.url("/extra2/y")))
        .await
        .assert_problem(404);
    assert_admin_problem(&admin.delete("/apis/extra").await, 404);
    assert_eq!(admin.live_revision().await, 4);
}

#[tokio::test]
async fn subscriptions_crud_and_errors() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();

    // Create with an id: 201, Location, two distinct 43-character keys.
    let a = admin
        .post_json(
            "/subscriptions",
            &json!({"id": "acme", "display_name": "Acme", "scope": "product:gold", "owner": "ops@acme.test"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.header("location"), Some("/subscriptions/acme"));
    let doc = a.json();
    let (k1, k2) = (
        doc["primary_key"].as_str().unwrap().to_string(),
        doc["secondary_key"].as_str().unwrap().to_string(),
    );
    assert_eq!(k1.len(), 43, "{doc}");
    assert_eq!(k2.len(), 43, "{doc}");
    assert_ne!(k1, k2);
    assert_eq!(doc["state"], "active");
    assert_eq!(doc["scope"], "product:gold");
    assert_eq!(doc["owner"], "ops@acme.test");
    // Without an id: one is generated.
    let a = admin
        .post_json(
            "/subscriptions",
            &json!({"display_name": "Anon", "scope": "all"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    let gen_id = a.json()["id"].as_str().unwrap().to_string();
    assert!(
        gen_id.starts_with("sub-") && gen_id.len() == 20,
        "generated id {gen_id}"
    );
    assert_eq!(
        a.header("location").map(str::to_string),
        Some(format!("/subscriptions/{gen_id}"))
    );
    admin.create_subscription("beta", "api:pets").await;

    // Read: no keys.
    let a = admin.get("/subscriptions/acme").await;
    assert_eq!(a.status, 200);
    let s = a.json();
    assert_eq!(s["id"], "acme");
    assert_eq!(s["display_name"], "Acme");
    assert!(
        s.get("primary_key").is_none() && s.get("secondary_key").is_none(),
        "{s}"
    );
    assert!(!a.text().contains(&k1) && !a.text().contains(&k2));
    // List: ordered by id, paginated, no keys.
    let page = admin.get("/subscriptions?limit=2").await;
    assert!(!page.text().contains(&k1));
    let page = page.json();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["acme", "beta"], "{page}");
    let next = page["next"].as_str().expect("next").to_string();
    let page2 = admin
        .get(&format!("/subscriptions?limit=2&cursor={next}"))
        .await
        .json();
    assert_eq!(page2["items"][0]["id"], gen_id.as_str(), "{page2}");
    assert!(page2["next"].is_null(), "{page2}");
    assert_admin_problem(&admin.get("/subscriptions?limit=0").await, 400);

    // State changes.
    let a = admin
        .patch_json("/subscriptions/acme", &json!({"state": "suspended"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["state"], "suspended");
    assert_eq!(
        admin.get("/subscriptions/acme").await.json()["state"],
        "suspended"
    );
    let a = admin
        .patch_json("/subscriptions/acme", &json!({"state": "active"}))
        .await;
    assert_eq!(a.json()["state"], "active");

    // Key rotation.
    let a = admin
        .post_empty("/subscriptions/acme/regenerate-primary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let p2 = a.json()["primary_key"].as_str().unwrap().to_string();
    assert!(p2.len() == 43 && p2 != k1);
    let a = admin
        .post_empty("/subscriptions/acme/regenerate-secondary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let s2 = a.json()["secondary_key"].as_str().unwrap().to_string();
    assert!(s2.len() == 43 && s2 != k2);
    let a = admin.post_empty("/subscriptions/acme/secrets").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    assert_eq!(doc["id"], "acme");
    let (p3, s3) = (
        doc["primary_key"].as_str().unwrap(),
        doc["secondary_key"].as_str().unwrap(),
    );
    assert!(p3 != p2 && s3 != s2 && p3 != s3);

    // Cancelled is final.
    let a = admin
        .patch_json("/subscriptions/acme", &json!({"state": "cancelled"}))
        .await;
    assert_eq!(a.json()["state"], "cancelled");
    assert_admin_problem(
        &admin
            .patch_json("/subscriptions/acme", &json!({"state": "active"}))
            .await,
        409,
    );

    // Delete.
    let a = admin.delete("/subscriptions/acme").await;
    assert_eq!(a.status, 204, "{}", a.text());
    assert_admin_problem(&admin.get("/subscriptions/acme").await, 404);

    // Unknown subscription: 404 everywhere.
    for (what, a) in [
        ("GET", admin.get("/subscriptions/ghost").await),
        (
            "PATCH",
            admin
                .patch_json("/subscriptions/ghost", &json!({"state": "suspended"}))
                .await,
        ),
        ("DELETE", admin.delete("/subscriptions/ghost").await),
        (
            "regenerate-primary-key",
            admin
                .post_empty("/subscriptions/ghost/regenerate-primary-key")
                .await,
        ),
        (
            "regenerate-secondary-key",
            admin
                .post_empty("/subscriptions/ghost/regenerate-secondary-key")
                .await,
        ),
        (
            "secrets",
            admin.post_empty("/subscriptions/ghost/secrets").await,
        ),
    ] {
        assert_eq!(a.status, 404, "{what} unknown subscription: {}", a.text());
        assert_admin_problem(&a, 404);
    }

    // Malformed JSON: 400 problem+json.
    for (method, path, body) in [
        (Method::POST, "/subscriptions", "{not json"),
        (
            Method::POST,
            "/subscriptions",
            "{\"display_name\": \"x\", \"scope\": \"all\"",
        ),
        (Method::PATCH, "/subscriptions/beta", "{\"state\": "),
        (Method::PATCH, "/subscriptions/beta", "[1, 2"),
        (Method::POST, "/config/rollback", "{\"revision\": 1,,}"),
    ] {
        let a = fetch(
            admin
                .req(method.clone(), path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(
            a.status,
            400,
            "{method} {path} malformed JSON {body:?}: {}",
            a.text()
        );
        assert_admin_problem(&a, 400);
    }
    // Wrong shape, invalid values: 422 with the field.
    let doc = assert_admin_problem(
        &admin
            .post_json(
                "/subscriptions",
                &json!({"display_name": "x", "scope": "all", "colour": "red"}),
            )
            .await,
        422,
    );
    assert!(doc["errors"].is_array(), "{doc}");
    for (body, field) in [
        (
            json!({"display_name": "x", "scope": "product:nope"}),
            "scope",
        ),
        (json!({"display_name": "x", "scope": "api:nope"}), "scope"),
        (json!({"display_name": "x", "scope": "everything"}), "scope"),
        (
            json!({"id": "Bad Id", "display_name": "x", "scope": "all"}),
            "id",
        ),
        (json!({"display_name": "", "scope": "all"}), "display_name"),
    ] {
        let a = admin.post_json("/subscriptions", &body).await;
        let doc = assert_admin_problem(&a, 422);
        assert!(
            doc["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["path"] == field)),
            "{body}: no error on {field}: {doc}"
        );
    }
    // Not JSON at all.
    let a = fetch(
        admin
            .req(Method::POST, "/subscriptions")
            .header("content-type", "text/plain")
            .body("hello"),
    )
    .await;
    assert_admin_problem(&a, 415);
    // Duplicate id.
    let a = admin
        .post_json(
            "/subscriptions",
            &json!({"id": "beta", "display_name": "again", "scope": "all"}),
        )
        .await;
    assert_admin_problem(&a, 409);
    // Subscriptions make no config revision.
    assert_eq!(admin.live_revision().await, 1);
}

/// Malformed JSON is 400 whatever the parser met before the syntax error: here a field the
/// call does not know comes first.
#[tokio::test]
async fn malformed_json_is_400_even_after_an_unknown_field() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    admin.create_subscription("beta", "api:pets").await;
    for (method, path, body) in [
        (
            Method::PATCH,
            "/subscriptions/beta",
            "{\"display_name\": \"x\", ",
        ),
        (Method::POST, "/subscriptions", "{\"colour\": \"red\", "),
        (Method::POST, "/config/rollback", "{\"rev\": 1"),
    ] {
        let a = fetch(
            admin
                .req(method.clone(), path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(
            a.status,
            400,
            "{method} {path} with malformed JSON {body:?}: {}",
            a.text()
        );
        assert_admin_problem(&a, 400);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    assert_admin_problem(&admin.get("/no/such/thing").await, 404);
    let a = admin.delete("/config").await;
    assert_admin_problem(&a, 405);
    assert!(
        a.header("allow").is_some(),
        "405 without Allow: {:?}",
        a.headers
    );
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let a = gw.admin().get("/openapi.json").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        a.headers
    );
    let doc: Value = a.json();
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.1"), "openapi: {version:?}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/config", "get"),
        ("/config", "put"),
        ("/subscriptions", "post"),
        ("/subscriptions", "get"),
        ("/products/{id}", "get"),
        ("/products/{id}", "put"),
        ("/products/{id}", "delete"),
        ("/config/revisions", "get"),
        ("/config/rollback", "post"),
        ("/subscriptions/{id}", "patch"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "no {method} {path} in the OpenAPI document; paths: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
}

/// `POST /config/rollback?dry_run=true` answers the plan of the rollback and changes
/// nothing: same live revision, no new stored revision, the old config still serving. (It
/// used to roll back for real.) Without `dry_run` the same call does roll back.
#[tokio::test]
async fn rollback_dry_run_changes_nothing() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin().with_token(Some(ADMIN));
    admin.put_config(&config(&up.url(), 2)).await;
    assert_eq!(admin.live_revision().await, 2);
    assert_eq!(served_gen(&gw).await, "2");

    let a = admin
        .post_json("/config/rollback?dry_run=true", &json!({"revision": 1}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    assert_eq!(doc["dry_run"], true, "{doc}");
    assert_eq!(doc["revision"], 2, "{doc}");
    assert_eq!(doc["unchanged"], false, "{doc}");
    assert!(
        doc["changes"].as_array().is_some_and(|c| !c.is_empty()),
        "the plan lists what would change: {doc}"
    );
    assert_eq!(a.header("etag"), Some("\"2\""));
    assert_eq!(admin.live_revision().await, 2);
    assert_eq!(admin.revisions().await.len(), 2);
    assert_eq!(served_gen(&gw).await, "2");
    // A dry run of a rollback to a missing revision is still a 404; `dry_run=false` rolls back.
    assert_admin_problem(
        &admin
            .post_json("/config/rollback?dry_run=true", &json!({"revision": 9}))
            .await,
        404,
    );
    let a = admin
        .post_json("/config/rollback?dry_run=false", &json!({"revision": 1}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["revision"], 3);
    assert_eq!(served_gen(&gw).await, "1");
}

/// A policy file nested 100,000 levels deep (`x: [[[[...`) is refused at once with a 422
/// naming the line, by `PUT /config` and by the per-resource writes, and the admin API keeps
/// answering meanwhile. Parsing it used to take libyaml tens of seconds (quadratic in the
/// depth), inside the async handler and under the config write mutex, stalling the API.
#[tokio::test]
async fn deeply_nested_documents_are_refused_promptly() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin().with_token(Some(ADMIN));
    let deep = format!("version: 1\nx: {}\n", "[".repeat(100_000));
    let t0 = std::time::Instant::now();
    let puts = (0..2).map(|_| {
        let admin = admin.clone();
        let deep = deep.clone();
        tokio::spawn(async move { admin.put_yaml("/config?dry_run=true", &deep).await })
    });
    let puts: Vec<_> = puts.collect();
    let health = get(&gw.admin_url("/healthz")).await;
    assert_eq!(health.status, 200);
    for put in puts {
        let a = put.await.expect("PUT task");
        let doc = assert_admin_problem(&a, 422);
        let errors = doc["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{doc}");
        assert_eq!(errors[0]["line"], 2, "{doc}");
        assert!(
            errors[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nests more than 64 levels deep")),
            "{doc}"
        );
    }
    let a = admin.put_yaml("/config", &deep).await;
    assert_admin_problem(&a, 422);
    let a = admin
        .put_yaml(
            "/apis/deep",
            &format!("path: /deep\nupstream: {}\n", "{a: ".repeat(50_000)),
        )
        .await;
    let doc = assert_admin_problem(&a, 422);
    assert!(
        doc.to_string().contains("nests more than 64 levels"),
        "{doc}"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(admin.live_revision().await, 1);
    assert_eq!(served_gen(&gw).await, "1");
}

/// `GET /apis/{id}/upstream` and the upstream health gauge give a verdict only where health
/// checks run: on `tollgate serve` (true: no check configured), not on `tollgate admin`,
/// which proxies nothing (null, and no gauge).
#[tokio::test]
async fn upstream_health_is_reported_only_where_it_is_checked() {
    let up = Upstream::start("u");
    let config = echo_config(&up.url());
    let serve = Gateway::builder(&config).admin_token(ADMIN).start();
    let control = Gateway::builder(&config)
        .admin_only()
        .admin_token(ADMIN)
        .start();
    let address = up.addr().to_string();
    for (gw, healthy, gauge) in [(&serve, json!(true), true), (&control, Value::Null, false)] {
        let admin = Admin::new(&gw.admin_url(""), Some(ADMIN));
        let doc = admin.get("/apis/echo/upstream").await;
        assert_eq!(doc.status, 200, "{}", doc.text());
        assert_eq!(
            doc.json(),
            json!({"api": "echo", "targets": [{
                "target": up.url(),
                "weight": 1,
                "addresses": [{"address": address, "healthy": healthy}],
            }]})
        );
        let metrics = admin.get("/metrics").await.text();
        assert_eq!(
            metrics.contains("tollgate_upstream_target_healthy{"),
            gauge,
            "{metrics}"
        );
    }
}
