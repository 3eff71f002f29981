//! The admin router through `tower::ServiceExt::oneshot`, with a real `SqliteStore` in a
//! temp dir and a real `Gateway` (upstream targets are never contacted).

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_admin_api::{apply_text, load_latest, refresh_keys, router, AdminState, Tokens};
use tollgate_gateway::keys::KeyRing;
use tollgate_gateway::{Gateway, SubscriptionLookup, SubscriptionState};
use tollgate_store::{RevisionSource, SqliteStore, Store};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const DATAPLANE: &str = "dataplane-token-0123456789";

const CONFIG: &str = r#"version: 1
policies:
  inbound:
    - set-header: { name: x-global, value: "1" }
products:
  - id: starter
    title: Starter
    apis: [pets]
  - id: gold
    apis: [pets]
    policies:
      inbound:
        - base
        - ip-filter: { action: forbid, addresses: [192.0.2.0/24] }
apis:
  - id: pets
    path: /pets
    subscription_required: true
    upstream: { targets: ["http://127.0.0.1:9"] }
    policies:
      inbound:
        - base
        - set-header: { name: x-api, value: pets }
    operations:
      - id: list
        method: GET
        path: /pets
      - id: get
        method: GET
        path: "/pets/{id}"
        policies:
          inbound:
            - base
            - check-header: { name: x-tenant }
          outbound:
            - set-header: { name: x-out, value: "1" }
  - id: orders
    path: /orders
    subscription_required: true
    upstream: { targets: ["http://127.0.0.1:9"] }
"#;

struct Harness {
    state: AdminState,
    router: Router,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    /// Asserts a problem+json answer with this status, and returns its document.
    fn problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            "application/problem+json",
            "{}",
            self.text()
        );
        let doc = self.json();
        assert_eq!(doc["status"], status.as_u16());
        assert!(doc["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tollgate:problem:"));
        assert!(doc["title"].is_string() && doc["detail"].is_string());
        doc
    }
}

/// A request: method, path, token, optional (content type, body), extra headers.
struct Call<'a> {
    method: Method,
    path: &'a str,
    token: Option<&'a str>,
    body: Option<(&'a str, String)>,
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            token: Some(ADMIN),
            body: None,
            headers: Vec::new(),
        }
    }
    fn token(mut self, token: Option<&'a str>) -> Self {
        self.token = token;
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(("application/json", body.to_string()));
        self
    }
    fn raw(mut self, content_type: &'a str, body: impl Into<String>) -> Self {
        self.body = Some((content_type, body.into()));
        self
    }
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let keys = Arc::new(KeyRing::new(store.installation_secret()));
        let gateway = Gateway::new(keys.clone());
        let state = AdminState {
            gateway,
            store,
            keys,
            tokens: Tokens {
                admin: ADMIN.into(),
                operator: Some(OPERATOR.into()),
                dataplane: Some(DATAPLANE.into()),
            },
            snapshots: Default::default(),
        };
        Harness {
            router: router(state.clone()),
            state,
            _dir: dir,
        }
    }

    /// A harness with `CONFIG` live as revision 1.
    fn with_config() -> Harness {
        let h = Harness::new();
        let outcome = apply_text(&h.state, CONFIG, RevisionSource::File, "file").unwrap();
        assert_eq!(outcome.revision, 1);
        h
    }

    async fn call(&self, c: Call<'_>) -> Answer {
        let mut req = Request::builder().method(c.method).uri(c.path);
        if let Some(t) = c.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in c.headers {
            req = req.header(k, v);
        }
        let req = match c.body {
            Some((ct, body)) => req
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(body))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Call::new(Method::GET, path)).await
    }

    fn live_revision(&self) -> u64 {
        self.state.gateway.snapshot().revision
    }

    fn stored_revisions(&self) -> usize {
        self.state.store.list_revisions(None, 1000).unwrap().len()
    }
}

// ---- probes, auth, errors --------------------------------------------------------------

#[tokio::test]
async fn probes_need_no_token() {
    let h = Harness::new();
    let a = h.call(Call::new(Method::GET, "/healthz").token(None)).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h.call(Call::new(Method::GET, "/readyz").token(None)).await;
    a.problem(StatusCode::SERVICE_UNAVAILABLE);
    apply_text(&h.state, CONFIG, RevisionSource::File, "file").unwrap();
    let a = h.call(Call::new(Method::GET, "/readyz").token(None)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["revision"], 1);
}

#[tokio::test]
async fn tokens_and_roles() {
    let h = Harness::with_config();
    // No token.
    let a = h.call(Call::new(Method::GET, "/config").token(None)).await;
    a.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("www-authenticate"), "Bearer");
    // Unknown token.
    let a = h
        .call(Call::new(Method::GET, "/config").token(Some("nope")))
        .await;
    a.problem(StatusCode::UNAUTHORIZED);
    assert!(a.header("www-authenticate").starts_with("Bearer"));
    // Another scheme.
    let a = h
        .call(
            Call::new(Method::GET, "/config")
                .token(None)
                .header("authorization", "Basic YWRtaW46eA=="),
        )
        .await;
    a.problem(StatusCode::UNAUTHORIZED);
    // Operator reads.
    for path in [
        "/config",
        "/config/revisions",
        "/products",
        "/apis",
        "/subscriptions",
        "/openapi.json",
        "/config/effective?api=pets",
    ] {
        let a = h
            .call(Call::new(Method::GET, path).token(Some(OPERATOR)))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
    }
    // Operator writes: 403, and nothing changes.
    let writes = [
        Call::new(Method::PUT, "/config").raw("application/yaml", CONFIG),
        Call::new(Method::POST, "/config/rollback").json(json!({"revision": 1})),
        Call::new(Method::PUT, "/products/new").json(json!({"apis": []})),
        Call::new(Method::DELETE, "/products/starter"),
        Call::new(Method::PUT, "/apis/new").json(json!({})),
        Call::new(Method::DELETE, "/apis/orders"),
        Call::new(Method::POST, "/subscriptions")
            .json(json!({"display_name": "x", "scope": "all"})),
        Call::new(Method::PATCH, "/subscriptions/x").json(json!({"state": "active"})),
        Call::new(Method::DELETE, "/subscriptions/x"),
        Call::new(Method::POST, "/subscriptions/x/regenerate-primary-key"),
        Call::new(Method::POST, "/subscriptions/x/regenerate-secondary-key"),
        Call::new(Method::POST, "/subscriptions/x/secrets"),
    ];
    for call in writes {
        let what = format!("{} {}", call.method, call.path);
        let a = h.call(call.token(Some(OPERATOR))).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.text());
        a.problem(StatusCode::FORBIDDEN);
    }
    assert_eq!(h.stored_revisions(), 1);
    // Writes without a token: 401 before the body is looked at.
    let a = h
        .call(
            Call::new(Method::PUT, "/config")
                .token(None)
                .raw("text/plain", "junk"),
        )
        .await;
    a.problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_routes_methods_and_bodies_are_problems() {
    let h = Harness::with_config();
    h.get("/nope").await.problem(StatusCode::NOT_FOUND);
    h.call(Call::new(Method::GET, "/nope").token(None))
        .await
        .problem(StatusCode::NOT_FOUND);
    let a = h.call(Call::new(Method::POST, "/config")).await;
    a.problem(StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.header("allow").contains("GET"));
    // Malformed JSON.
    h.call(Call::new(Method::POST, "/subscriptions").raw("application/json", "{\"display_name\":"))
        .await
        .problem(StatusCode::BAD_REQUEST);
    // Unknown field.
    let doc = h
        .call(
            Call::new(Method::POST, "/subscriptions")
                .json(json!({"display_name": "x", "scope": "all", "colour": "blue"})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(doc["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("colour"));
    // Missing field, wrong type.
    h.call(Call::new(Method::POST, "/subscriptions").json(json!({"scope": "all"})))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    h.call(Call::new(Method::POST, "/config/rollback").json(json!({"revision": "one"})))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // Wrong content type.
    h.call(Call::new(Method::POST, "/subscriptions").raw("text/plain", "{}"))
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    h.call(Call::new(Method::PUT, "/config").raw("text/plain", CONFIG))
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    h.call(Call::new(Method::PUT, "/config"))
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Bad path and query parameters.
    h.get("/config/revisions/abc")
        .await
        .problem(StatusCode::BAD_REQUEST);
    h.get("/config/revisions?limit=x")
        .await
        .problem(StatusCode::BAD_REQUEST);
    h.get("/config/revisions?limit=0")
        .await
        .problem(StatusCode::BAD_REQUEST);
    h.get("/config/revisions?cursor=zz")
        .await
        .problem(StatusCode::BAD_REQUEST);
    h.get("/config/effective")
        .await
        .problem(StatusCode::BAD_REQUEST);
}

// ---- config -----------------------------------------------------------------------------

#[tokio::test]
async fn get_config_as_json_and_yaml() {
    let h = Harness::with_config();
    let a = h.get("/config").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("etag"), "\"1\"");
    assert!(a.header("content-type").starts_with("application/json"));
    let doc = a.json();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["apis"][0]["id"], "pets");
    let a = h
        .call(Call::new(Method::GET, "/config").header("accept", "application/yaml"))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "application/yaml");
    assert_eq!(a.header("etag"), "\"1\"");
    // The YAML served is a valid policy file equal to the live one.
    let again = tollgate_config::parse_and_compile(&a.text()).unwrap();
    assert_eq!(again.file, h.state.gateway.snapshot().config.file);
}

#[tokio::test]
async fn put_config_yaml_and_json_with_etags() {
    let h = Harness::new();
    let a = h
        .call(Call::new(Method::PUT, "/config").raw("application/yaml", CONFIG))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.header("etag"), "\"1\"");
    let doc = a.json();
    assert_eq!(doc["revision"], 1);
    assert_eq!(doc["unchanged"], false);
    let changes = doc["changes"].as_array().unwrap();
    assert!(changes.contains(&json!({"action": "added", "kind": "api", "id": "pets"})));
    assert!(changes.contains(&json!({"action": "added", "kind": "product", "id": "gold"})));
    assert_eq!(h.live_revision(), 1);

    // The same text again: nothing new.
    let a = h
        .call(Call::new(Method::PUT, "/config").raw("text/yaml", CONFIG))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["unchanged"], true);
    assert_eq!(a.json()["revision"], 1);
    assert_eq!(h.stored_revisions(), 1);

    // JSON body, with a matching If-Match.
    let mut file = h.get("/config").await.json();
    file["apis"][1]["path"] = json!("/orders-v2");
    let a = h
        .call(
            Call::new(Method::PUT, "/config")
                .json(file.clone())
                .header("if-match", "\"1\""),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["revision"], 2);
    assert_eq!(
        a.json()["changes"],
        json!([{"action": "changed", "kind": "api", "id": "orders"}])
    );
    assert_eq!(h.live_revision(), 2);

    // A stale If-Match: 412, nothing changes.
    file["apis"][1]["path"] = json!("/orders-v3");
    let a = h
        .call(
            Call::new(Method::PUT, "/config")
                .json(file.clone())
                .header("if-match", "\"1\""),
        )
        .await;
    a.problem(StatusCode::PRECONDITION_FAILED);
    assert_eq!(a.header("etag"), "\"2\"");
    assert_eq!(h.live_revision(), 2);
    assert_eq!(h.stored_revisions(), 2);

    // If-Match: * passes.
    let a = h
        .call(
            Call::new(Method::PUT, "/config")
                .json(file)
                .header("if-match", "*"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["revision"], 3);

    // The audit log has the writes and the refusal.
    let audit = h.state.store.list_audit(None, 100).unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "config.put" && e.result == "ok"));
    assert!(audit
        .iter()
        .any(|e| e.action == "config.put" && e.result.starts_with("refused")));
}

#[tokio::test]
async fn invalid_config_lists_every_error_and_changes_nothing() {
    let h = Harness::with_config();
    let bad = r#"version: 1
products:
  - id: Bad_Id
    apis: [nope]
apis:
  - id: pets
    path: /pets
    upstream: { targets: ["ftp://x"] }
"#;
    let a = h
        .call(Call::new(Method::PUT, "/config").raw("application/yaml", bad))
        .await;
    let doc = a.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let errors = doc["errors"].as_array().unwrap();
    assert!(errors.len() >= 3, "{errors:?}");
    for e in errors {
        assert!(e["path"].is_string() && e["message"].is_string());
        assert!(e["line"].is_u64(), "{e}");
        assert!(e.get("column").is_some());
    }
    assert!(errors.iter().any(|e| e["path"] == "products[0].id"));
    assert_eq!(h.live_revision(), 1);
    assert_eq!(h.stored_revisions(), 1);
    assert_eq!(h.state.gateway.snapshot().config.apis.len(), 2);

    // A YAML syntax error is one error with its position.
    let doc = h
        .call(Call::new(Method::PUT, "/config").raw("application/yaml", "version: [1\n"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(doc["errors"].as_array().unwrap().len(), 1);
    // Malformed JSON config: 422 with its position (it is a policy file error).
    let doc = h
        .call(Call::new(Method::PUT, "/config").raw("application/json", "{\"version\": 1,"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(doc["errors"][0]["line"], 1);
    // A config the gateway cannot run (a policy kind this build lacks, or an upstream it
    // cannot resolve) is refused as 422 too, and never stored.
    let unresolvable = CONFIG.replace("http://127.0.0.1:9", "http://no-such-host.invalid:80");
    let doc = h
        .call(Call::new(Method::PUT, "/config").raw("application/yaml", unresolvable))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(doc["errors"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with("api:"));
    assert_eq!(h.live_revision(), 1);
    assert_eq!(h.stored_revisions(), 1);
    let audit = h.state.store.list_audit(None, 100).unwrap();
    assert!(
        audit
            .iter()
            .filter(|e| e.result.starts_with("refused"))
            .count()
            >= 3,
        "{audit:?}"
    );
}

#[tokio::test]
async fn dry_run_plans_without_a_revision() {
    let h = Harness::with_config();
    let next = CONFIG
        .replace(
            "  - id: starter\n    title: Starter\n    apis: [pets]\n",
            "",
        )
        .replace(
            "        path: /pets\n",
            "        path: /pets\n        policies: { outbound: [ base ] }\n",
        );
    let a = h
        .call(Call::new(Method::PUT, "/config?dry_run=true").raw("application/yaml", next.clone()))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["revision"], 1);
    let changes = doc["changes"].as_array().unwrap();
    assert!(changes.contains(&json!({"action": "removed", "kind": "product", "id": "starter"})));
    assert!(changes.contains(
        &json!({"action": "added", "kind": "policies", "id": "api:pets/operation:list/outbound"})
    ));
    assert_eq!(h.live_revision(), 1);
    assert_eq!(h.stored_revisions(), 1);
    // An invalid dry run is a 422 like a real one.
    h.call(Call::new(Method::PUT, "/config?dry_run=true").raw("application/yaml", "version: 2\n"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.stored_revisions(), 1);
}

#[tokio::test]
async fn revisions_pagination_and_rollback() {
    let h = Harness::with_config();
    // Revisions 2..=5: each with another orders path.
    for i in 2..=5 {
        let text = CONFIG.replace("path: /orders", &format!("path: /orders-{i}"));
        let a = h
            .call(Call::new(Method::PUT, "/config").raw("application/yaml", text))
            .await;
        assert_eq!(a.json()["revision"], i);
    }
    let page = h.get("/config/revisions?limit=2").await.json();
    let revs: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [5, 4]);
    let item = &page["items"][0];
    assert_eq!(item["source"], "api");
    assert_eq!(item["sha256"].as_str().unwrap().len(), 64);
    assert!(item["created_at"].as_str().unwrap().ends_with('Z'));
    let mut seen = revs;
    let mut next = page["next"].as_str().unwrap().to_owned();
    loop {
        let page = h
            .get(&format!("/config/revisions?limit=2&cursor={next}"))
            .await
            .json();
        for r in page["items"].as_array().unwrap() {
            seen.push(r["revision"].as_u64().unwrap());
        }
        match page["next"].as_str() {
            Some(n) => next = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, [5, 4, 3, 2, 1]);

    // One revision with its text.
    let a = h.get("/config/revisions/1").await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = a.json();
    assert_eq!(doc["revision"], 1);
    assert_eq!(doc["source"], "file");
    assert_eq!(doc["text"], CONFIG);
    h.get("/config/revisions/99")
        .await
        .problem(StatusCode::NOT_FOUND);

    // Rollback to 1: a new revision 6 with revision 1's text.
    let a = h
        .call(Call::new(Method::POST, "/config/rollback").json(json!({"revision": 1})))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["revision"], 6);
    assert_eq!(a.header("etag"), "\"6\"");
    assert_eq!(
        a.json()["changes"],
        json!([{"action": "changed", "kind": "api", "id": "orders"}])
    );
    assert_eq!(h.live_revision(), 6);
    let doc = h.get("/config/revisions/6").await.json();
    assert_eq!(doc["source"], "rollback");
    assert_eq!(doc["text"], CONFIG);
    assert_eq!(h.get("/config").await.json()["apis"][1]["path"], "/orders");
    // A missing revision: 404; a stale If-Match: 412.
    h.call(Call::new(Method::POST, "/config/rollback").json(json!({"revision": 42})))
        .await
        .problem(StatusCode::NOT_FOUND);
    h.call(
        Call::new(Method::POST, "/config/rollback")
            .json(json!({"revision": 2}))
            .header("if-match", "\"5\""),
    )
    .await
    .problem(StatusCode::PRECONDITION_FAILED);
    assert_eq!(h.live_revision(), 6);
}

#[tokio::test]
async fn effective_chain() {
    let h = Harness::with_config();
    let doc = h
        .get("/config/effective?api=pets&operation=get&product=gold")
        .await
        .json();
    assert_eq!(doc["revision"], 1);
    let inbound: Vec<(String, String)> = doc["inbound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        inbound,
        [
            ("set-header".into(), "global/inbound/0".into()),
            ("ip-filter".into(), "product:gold/inbound/1".into()),
            ("set-header".into(), "api:pets/inbound/1".into()),
            (
                "check-header".into(),
                "api:pets/operation:get/inbound/1".into()
            ),
        ]
    );
    // Fields as written.
    assert_eq!(doc["inbound"][1]["action"], "forbid");
    assert_eq!(doc["inbound"][1]["addresses"], json!(["192.0.2.0/24"]));
    assert_eq!(doc["inbound"][2]["value"], "pets");
    assert_eq!(doc["outbound"][0]["kind"], "set-header");
    assert_eq!(
        doc["outbound"][0]["origin"],
        "api:pets/operation:get/outbound/0"
    );
    assert_eq!(doc["backend"], json!([]));

    // Without product: no IP filter; without operation: the API-wide chain.
    let doc = h.get("/config/effective?api=pets").await.json();
    let origins: Vec<&str> = doc["inbound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins, ["global/inbound/0", "api:pets/inbound/1"]);
    assert_eq!(doc["outbound"], json!([]));

    h.get("/config/effective?api=nope")
        .await
        .problem(StatusCode::NOT_FOUND);
    h.get("/config/effective?api=pets&operation=nope")
        .await
        .problem(StatusCode::NOT_FOUND);
    h.get("/config/effective?api=pets&product=nope")
        .await
        .problem(StatusCode::NOT_FOUND);
    h.get("/config/effective?api=orders&product=gold")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

// ---- products and APIs ----------------------------------------------------------------

#[tokio::test]
async fn products_crud_makes_revisions() {
    let h = Harness::with_config();
    let page = h.get("/products").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], Value::Null);
    let page = h.get("/products?limit=1").await.json();
    assert_eq!(page["items"][0]["id"], "starter");
    let next = page["next"].as_str().unwrap().to_owned();
    let page = h
        .get(&format!("/products?limit=1&cursor={next}"))
        .await
        .json();
    assert_eq!(page["items"][0]["id"], "gold");
    assert_eq!(page["next"], Value::Null);

    let a = h.get("/products/starter").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["title"], "Starter");
    assert_eq!(a.header("etag"), "\"1\"");
    h.get("/products/nope").await.problem(StatusCode::NOT_FOUND);

    // Create.
    let a = h
        .call(
            Call::new(Method::PUT, "/products/silver")
                .json(json!({"title": "Silver", "apis": ["pets", "orders"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.header("location"), "/products/silver");
    assert_eq!(a.json()["revision"], 2);
    assert_eq!(
        a.json()["changes"],
        json!([{"action": "added", "kind": "product", "id": "silver"}])
    );
    assert_eq!(h.live_revision(), 2);
    assert_eq!(
        h.get("/products/silver").await.json()["apis"],
        json!(["pets", "orders"])
    );

    // Replace (YAML body, matching If-Match).
    let a = h
        .call(
            Call::new(Method::PUT, "/products/silver")
                .raw(
                    "application/yaml",
                    "id: silver\ntitle: Silver 2\napis: [pets]\n",
                )
                .header("if-match", "\"2\""),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["revision"], 3);
    assert_eq!(h.get("/products/silver").await.json()["title"], "Silver 2");
    // The same again: unchanged, no revision.
    let a = h
        .call(
            Call::new(Method::PUT, "/products/silver")
                .json(json!({"title": "Silver 2", "apis": ["pets"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["unchanged"], true);
    assert_eq!(h.stored_revisions(), 3);
    // Stored text is a whole valid policy file.
    let text = h.state.store.revision(3).unwrap().text;
    assert!(tollgate_config::parse_and_compile(&text).is_ok());

    // Invalid: every error, paths into the whole file, no line.
    let doc = h
        .call(
            Call::new(Method::PUT, "/products/silver").json(json!({"apis": ["nope"], "colour": 1})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let errors = doc["errors"].as_array().unwrap();
    assert!(errors.len() >= 2, "{errors:?}");
    assert!(errors
        .iter()
        .all(|e| e["path"].as_str().unwrap().starts_with("products[2]")));
    assert!(errors.iter().all(|e| e["line"].is_null()));
    // Id mismatch.
    h.call(Call::new(Method::PUT, "/products/silver").json(json!({"id": "gold"})))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // Not an object.
    h.call(Call::new(Method::PUT, "/products/silver").json(json!([1])))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // Stale If-Match.
    h.call(
        Call::new(Method::PUT, "/products/silver")
            .json(json!({"apis": []}))
            .header("if-match", "\"1\""),
    )
    .await
    .problem(StatusCode::PRECONDITION_FAILED);
    assert_eq!(h.live_revision(), 3);

    // Dry run of a delete.
    let a = h
        .call(Call::new(Method::DELETE, "/products/silver?dry_run=true"))
        .await;
    assert_eq!(a.json()["dry_run"], true);
    assert_eq!(h.live_revision(), 3);
    // Delete.
    let a = h.call(Call::new(Method::DELETE, "/products/silver")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["revision"], 4);
    assert_eq!(
        a.json()["changes"],
        json!([{"action": "removed", "kind": "product", "id": "silver"}])
    );
    h.get("/products/silver")
        .await
        .problem(StatusCode::NOT_FOUND);
    h.call(Call::new(Method::DELETE, "/products/silver"))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(h.stored_revisions(), 4);
    let audit = h.state.store.list_audit(None, 100).unwrap();
    assert!(audit.iter().any(|e| e.action == "product.delete"
        && e.target == "product:silver"
        && e.revision == Some(4)));
}

#[tokio::test]
async fn apis_crud_makes_revisions() {
    let h = Harness::with_config();
    let page = h.get("/apis").await.json();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pets", "orders"]);
    let pets = h.get("/apis/pets").await.json();
    assert_eq!(pets["operations"].as_array().unwrap().len(), 2);
    h.get("/apis/nope").await.problem(StatusCode::NOT_FOUND);

    let api = json!({
        "path": "/users",
        "upstream": {"targets": ["http://127.0.0.1:9"]},
        "operations": [{"id": "me", "method": "GET", "path": "/me"}]
    });
    let a = h
        .call(Call::new(Method::PUT, "/apis/users").json(api.clone()))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.header("location"), "/apis/users");
    assert_eq!(a.json()["revision"], 2);
    assert_eq!(
        h.state.gateway.snapshot().config.api_index("users"),
        Some(2)
    );

    // Change an operation.
    let mut api2 = api.clone();
    api2["operations"][0]["path"] = json!("/me/profile");
    let a = h
        .call(Call::new(Method::PUT, "/apis/users").json(api2))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.json()["changes"],
        json!([{"action": "changed", "kind": "operation", "id": "users/me"}])
    );
    // A path taken by another API: 422.
    let mut clash = api.clone();
    clash["path"] = json!("/pets");
    h.call(Call::new(Method::PUT, "/apis/users").json(clash))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // Deleting an API a product lists: 422, nothing changes.
    let doc = h
        .call(Call::new(Method::DELETE, "/apis/pets"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(doc["errors"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with("products["));
    assert_eq!(h.live_revision(), 3);
    // Delete.
    let a = h.call(Call::new(Method::DELETE, "/apis/users")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["revision"], 4);
    h.get("/apis/users").await.problem(StatusCode::NOT_FOUND);
    h.call(Call::new(Method::DELETE, "/apis/users"))
        .await
        .problem(StatusCode::NOT_FOUND);
}

// ---- subscriptions ----------------------------------------------------------------------

async fn create(h: &Harness, body: Value) -> Value {
    let a = h
        .call(Call::new(Method::POST, "/subscriptions").json(body))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let doc = a.json();
    assert_eq!(
        a.header("location"),
        format!("/subscriptions/{}", doc["id"].as_str().unwrap())
    );
    doc
}

#[tokio::test]
async fn subscription_lifecycle() {
    let h = Harness::with_config();
    let doc = create(
        &h,
        json!({"id": "acme", "display_name": "Acme", "scope": "product:gold", "owner": "ops@acme.test"}),
    )
    .await;
    assert_eq!(doc["id"], "acme");
    assert_eq!(doc["state"], "active");
    assert_eq!(doc["scope"], "product:gold");
    assert_eq!(doc["owner"], "ops@acme.test");
    assert!(doc["created_at"].as_str().unwrap().ends_with('Z'));
    let primary = doc["primary_key"].as_str().unwrap().to_owned();
    let secondary = doc["secondary_key"].as_str().unwrap().to_owned();
    assert_eq!(primary.len(), 43);
    assert_eq!(secondary.len(), 43);
    assert_ne!(primary, secondary);
    // The proxy's ring knows both keys at once.
    let found = h.state.keys.lookup(&primary).unwrap();
    assert_eq!(&*found.id, "acme");
    assert_eq!(found.state, SubscriptionState::Active);
    assert!(h.state.keys.lookup(&secondary).is_some());

    // Generated id.
    let doc = create(&h, json!({"display_name": "Anon", "scope": "all"})).await;
    let id = doc["id"].as_str().unwrap();
    assert!(id.starts_with("sub-") && id.len() == 20, "{id}");

    // Read: never keys.
    let a = h.get("/subscriptions/acme").await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = a.json();
    assert_eq!(doc["display_name"], "Acme");
    assert!(doc.get("primary_key").is_none() && doc.get("secondary_key").is_none());
    assert!(!a.text().contains(&primary));

    // States.
    let patch = |state: &'static str| {
        Call::new(Method::PATCH, "/subscriptions/acme").json(json!({ "state": state }))
    };
    let a = h.call(patch("suspended")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["state"], "suspended");
    assert_eq!(
        h.state.keys.lookup(&primary).unwrap().state,
        SubscriptionState::Suspended
    );
    let a = h.call(patch("active")).await;
    assert_eq!(a.json()["state"], "active");
    assert_eq!(
        h.state.keys.lookup(&primary).unwrap().state,
        SubscriptionState::Active
    );

    // Regenerate the primary key: the old one dies, the secondary lives.
    let a = h
        .call(Call::new(
            Method::POST,
            "/subscriptions/acme/regenerate-primary-key",
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let new_primary = a.json()["primary_key"].as_str().unwrap().to_owned();
    assert_eq!(new_primary.len(), 43);
    assert!(a.json().get("secondary_key").is_none());
    assert!(h.state.keys.lookup(&primary).is_none());
    assert!(h.state.keys.lookup(&secondary).is_some());
    assert!(h.state.keys.lookup(&new_primary).is_some());

    // Regenerate the secondary key.
    let a = h
        .call(Call::new(
            Method::POST,
            "/subscriptions/acme/regenerate-secondary-key",
        ))
        .await;
    let new_secondary = a.json()["secondary_key"].as_str().unwrap().to_owned();
    assert!(h.state.keys.lookup(&secondary).is_none());
    assert!(h.state.keys.lookup(&new_secondary).is_some());
    assert!(h.state.keys.lookup(&new_primary).is_some());

    // Secrets: both keys rotate.
    let a = h
        .call(Call::new(Method::POST, "/subscriptions/acme/secrets"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json();
    assert_eq!(doc["id"], "acme");
    let (p3, s3) = (
        doc["primary_key"].as_str().unwrap(),
        doc["secondary_key"].as_str().unwrap(),
    );
    assert!(h.state.keys.lookup(&new_primary).is_none());
    assert!(h.state.keys.lookup(&new_secondary).is_none());
    assert_eq!(&*h.state.keys.lookup(p3).unwrap().id, "acme");
    assert_eq!(&*h.state.keys.lookup(s3).unwrap().id, "acme");

    // Cancel: final.
    let a = h.call(patch("cancelled")).await;
    assert_eq!(a.json()["state"], "cancelled");
    assert_eq!(
        h.state.keys.lookup(p3).unwrap().state,
        SubscriptionState::Cancelled
    );
    h.call(patch("active")).await.problem(StatusCode::CONFLICT);
    h.call(patch("suspended"))
        .await
        .problem(StatusCode::CONFLICT);
    h.call(Call::new(
        Method::POST,
        "/subscriptions/acme/regenerate-primary-key",
    ))
    .await
    .problem(StatusCode::CONFLICT);
    assert_eq!(
        h.get("/subscriptions/acme").await.json()["state"],
        "cancelled"
    );
    // Unknown state value.
    h.call(Call::new(Method::PATCH, "/subscriptions/acme").json(json!({"state": "paused"})))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);

    // Delete: 204, then 404; its keys are gone.
    let a = h
        .call(Call::new(Method::DELETE, "/subscriptions/acme"))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(a.body.is_empty());
    assert!(h.state.keys.lookup(p3).is_none());
    h.get("/subscriptions/acme")
        .await
        .problem(StatusCode::NOT_FOUND);
    h.call(Call::new(Method::DELETE, "/subscriptions/acme"))
        .await
        .problem(StatusCode::NOT_FOUND);

    // Audit: every change, by the admin role.
    let audit = h.state.store.list_audit(None, 100).unwrap();
    for action in [
        "subscription.create",
        "subscription.suspend",
        "subscription.activate",
        "subscription.regenerate-primary-key",
        "subscription.regenerate-secondary-key",
        "subscription.secrets",
        "subscription.cancel",
        "subscription.delete",
    ] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor == "admin"),
            "{action}: {audit:?}"
        );
    }
}

#[tokio::test]
async fn subscription_errors() {
    let h = Harness::with_config();
    for path in [
        "/subscriptions/ghost/regenerate-primary-key",
        "/subscriptions/ghost/regenerate-secondary-key",
        "/subscriptions/ghost/secrets",
    ] {
        h.call(Call::new(Method::POST, path))
            .await
            .problem(StatusCode::NOT_FOUND);
    }
    h.get("/subscriptions/ghost")
        .await
        .problem(StatusCode::NOT_FOUND);
    h.call(Call::new(Method::PATCH, "/subscriptions/ghost").json(json!({"state": "active"})))
        .await
        .problem(StatusCode::NOT_FOUND);
    h.call(Call::new(Method::DELETE, "/subscriptions/ghost"))
        .await
        .problem(StatusCode::NOT_FOUND);

    // Scope checks: every error at once.
    let doc = h
        .call(
            Call::new(Method::POST, "/subscriptions")
                .json(json!({"id": "Bad Id", "display_name": " ", "scope": "product:nope"})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["id", "display_name", "scope"]);
    for scope in ["api:nope", "nothing", "product:", "all:x"] {
        h.call(
            Call::new(Method::POST, "/subscriptions")
                .json(json!({"display_name": "x", "scope": scope})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    create(
        &h,
        json!({"id": "one", "display_name": "x", "scope": "api:orders"}),
    )
    .await;
    h.call(
        Call::new(Method::POST, "/subscriptions")
            .json(json!({"id": "one", "display_name": "x", "scope": "all"})),
    )
    .await
    .problem(StatusCode::CONFLICT);
    assert_eq!(h.state.keys.len(), 2);
    // Refused changes are audited too.
    let audit = h.state.store.list_audit(None, 100).unwrap();
    assert!(audit.iter().any(|e| e.action == "subscription.create"
        && e.target == "subscription:one"
        && e.result.starts_with("refused: 409")));
    assert!(audit.iter().any(|e| e.action == "subscription.delete"
        && e.target == "subscription:ghost"
        && e.result.starts_with("refused: 404")));
}

#[tokio::test]
async fn subscription_list_pagination() {
    let h = Harness::with_config();
    for i in 0..7 {
        create(
            &h,
            json!({"id": format!("s{i}"), "display_name": format!("S{i}"), "scope": "all"}),
        )
        .await;
    }
    let page = h.get("/subscriptions").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 7);
    assert_eq!(page["next"], Value::Null);
    assert!(page["items"][0].get("primary_key").is_none());
    let mut ids = Vec::new();
    let mut url = "/subscriptions?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = h.get(&url).await.json();
        pages += 1;
        for s in page["items"].as_array().unwrap() {
            ids.push(s["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => url = format!("/subscriptions?limit=3&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    assert_eq!(h.state.keys.len(), 14);
}

// ---- start-up helpers and the document --------------------------------------------------

#[tokio::test]
async fn start_up_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let primary;
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let keys = Arc::new(KeyRing::new(store.installation_secret()));
        let state = AdminState {
            gateway: Gateway::new(keys.clone()),
            store,
            keys,
            tokens: Tokens {
                admin: ADMIN.into(),
                operator: None,
                dataplane: None,
            },
            snapshots: Default::default(),
        };
        assert_eq!(load_latest(&state).unwrap(), None);
        let out = apply_text(&state, CONFIG, RevisionSource::File, "file").unwrap();
        assert_eq!((out.revision, out.unchanged), (1, false));
        // The same file at the next start: not stored again.
        let out = apply_text(&state, CONFIG, RevisionSource::File, "file").unwrap();
        assert_eq!((out.revision, out.unchanged), (1, true));
        let err = apply_text(
            &state,
            "version: 1\napis: 3\n",
            RevisionSource::File,
            "file",
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
        let audit = state.store.list_audit(None, 10).unwrap();
        assert!(audit
            .iter()
            .any(|e| e.action == "config.file" && e.actor == "file" && e.revision == Some(1)));
        let h = Harness {
            router: router(state.clone()),
            state,
            _dir: tempfile::tempdir().unwrap(),
        };
        primary = create(
            &h,
            json!({"id": "keep", "display_name": "x", "scope": "all"}),
        )
        .await["primary_key"]
            .as_str()
            .unwrap()
            .to_owned();
        // The operator token is not configured: it is unknown.
        h.call(Call::new(Method::GET, "/config").token(Some(OPERATOR)))
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
    // A restart: the latest revision and the keys come back.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let keys = Arc::new(KeyRing::new(store.installation_secret()));
    let state = AdminState {
        gateway: Gateway::new(keys.clone()),
        store,
        keys,
        tokens: Tokens {
            admin: ADMIN.into(),
            operator: None,
            dataplane: None,
        },
        snapshots: Default::default(),
    };
    assert!(state.keys.lookup(&primary).is_none());
    assert_eq!(refresh_keys(state.store.as_ref(), &state.keys).unwrap(), 1);
    assert_eq!(&*state.keys.lookup(&primary).unwrap().id, "keep");
    assert_eq!(load_latest(&state).unwrap(), Some(1));
    assert_eq!(state.gateway.snapshot().revision, 1);
    assert_eq!(state.gateway.snapshot().config.apis.len(), 2);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let h = Harness::new();
    let a = h.get("/openapi.json").await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = a.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(
        doc["paths"]["/subscriptions/{id}/secrets"]["post"]["description"]
            .as_str()
            .unwrap()
            .contains("BOTH")
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    h.call(Call::new(Method::GET, "/openapi.json").token(None))
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cache_purge_and_stats() {
    let h = Harness::with_config();
    // Admin and operator may purge; each purge is audited.
    for token in [ADMIN, OPERATOR] {
        let a = h
            .call(
                Call::new(Method::POST, "/cache/purge")
                    .token(Some(token))
                    .json(json!({"api": "pets", "operation": "get-pet"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.json(), json!({"purged": 0}));
    }
    // No body at all, or `{}`: everything.
    let a = h
        .call(Call::new(Method::POST, "/cache/purge").token(Some(OPERATOR)))
        .await;
    assert_eq!(a.json(), json!({"purged": 0}));
    let a = h
        .call(
            Call::new(Method::POST, "/cache/purge")
                .token(Some(ADMIN))
                .json(json!({})),
        )
        .await;
    assert_eq!(a.json(), json!({"purged": 0}));
    // Bad bodies and no token.
    let a = h
        .call(
            Call::new(Method::POST, "/cache/purge")
                .token(Some(ADMIN))
                .json(json!({"apis": "x"})),
        )
        .await;
    a.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let a = h
        .call(
            Call::new(Method::POST, "/cache/purge")
                .token(Some(ADMIN))
                .raw("text/plain", "api=x"),
        )
        .await;
    a.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = h
        .call(Call::new(Method::POST, "/cache/purge").token(None))
        .await;
    a.problem(StatusCode::UNAUTHORIZED);
    let audit = h.state.store.list_audit(None, 100).unwrap();
    let purges: Vec<_> = audit.iter().filter(|e| e.action == "cache.purge").collect();
    assert_eq!(purges.len(), 4, "{purges:?}");
    assert!(purges
        .iter()
        .any(|e| e.actor == "operator" && e.target == "cache api=pets operation=get-pet"));
    // The counters, for any token.
    let a = h
        .call(Call::new(Method::GET, "/cache/stats").token(Some(OPERATOR)))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["max_bytes"], 256 << 20);
    assert_eq!(a.json()["entries"], 0);
}

// ---- the key ring follows the store ----------------------------------------------------

/// Every key an answer showed.
fn keys_in(doc: &Value) -> Vec<String> {
    ["primary_key", "secondary_key"]
        .iter()
        .filter_map(|k| doc[*k].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscription_changes_leave_the_ring_equal_to_a_rebuild() {
    let h = Arc::new(Harness::with_config());
    let mut issued: Vec<String> = Vec::new();
    for i in 0..6 {
        let scope = ["all", "product:gold", "api:pets"][i % 3];
        let doc = create(
            &h,
            json!({"id": format!("c{i}"), "display_name": "c", "scope": scope}),
        )
        .await;
        issued.extend(keys_in(&doc));
    }
    assert_eq!(h.state.keys.len(), 12);

    // Eight clients, each changing random subscriptions of the six (and re-creating the
    // deleted ones), at the same time.
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let h = h.clone();
            tokio::spawn(async move {
                let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ (t + 1);
                let mut keys = Vec::new();
                for _ in 0..40 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = format!("c{}", x % 6);
                    let (method, path, body) = match (x >> 8) % 7 {
                        0 => (
                            Method::POST,
                            format!("/subscriptions/{id}/regenerate-primary-key"),
                            None,
                        ),
                        1 => (
                            Method::POST,
                            format!("/subscriptions/{id}/regenerate-secondary-key"),
                            None,
                        ),
                        2 => (Method::POST, format!("/subscriptions/{id}/secrets"), None),
                        3 => (
                            Method::PATCH,
                            format!("/subscriptions/{id}"),
                            Some(json!({"state": "suspended"})),
                        ),
                        4 => (
                            Method::PATCH,
                            format!("/subscriptions/{id}"),
                            Some(json!({"state": "active"})),
                        ),
                        5 => (Method::DELETE, format!("/subscriptions/{id}"), None),
                        _ => (
                            Method::POST,
                            "/subscriptions".to_owned(),
                            Some(
                                json!({"id": id, "display_name": "c", "scope": "product:starter"}),
                            ),
                        ),
                    };
                    let mut call = Call::new(method, &path);
                    if let Some(body) = body {
                        call = call.json(body);
                    }
                    let a = h.call(call).await;
                    // 404 (deleted meanwhile) and 409 (exists already) are expected.
                    assert!(
                        a.status.is_success()
                            || a.status == StatusCode::NOT_FOUND
                            || a.status == StatusCode::CONFLICT,
                        "{path}: {} {}",
                        a.status,
                        a.text()
                    );
                    if a.status.is_success() && !a.body.is_empty() {
                        keys.extend(keys_in(&a.json()));
                    }
                }
                keys
            })
        })
        .collect();
    for t in tasks {
        issued.extend(t.await.unwrap());
    }

    // The ring, changed one subscription at a time, equals one rebuilt from the store: the
    // same number of keys (no stale digest left), and every key ever issued finds the same
    // subscription, state and scope in both, or nothing in both.
    let rebuilt = KeyRing::new(h.state.store.installation_secret());
    let n = refresh_keys(h.state.store.as_ref(), &rebuilt).unwrap();
    assert_eq!(h.state.keys.len(), 2 * n);
    assert_eq!(rebuilt.len(), 2 * n);
    let mut live_keys = 0;
    for key in &issued {
        let (live, want) = (h.state.keys.lookup(key), rebuilt.lookup(key));
        match (&live, &want) {
            (None, None) => {}
            (Some(l), Some(w)) => {
                assert_eq!(
                    (&l.id, l.state, &l.scope),
                    (&w.id, w.state, &w.scope),
                    "key of {}",
                    w.id
                );
                live_keys += 1;
            }
            _ => panic!("the live ring and the store disagree on a key: {live:?} vs {want:?}"),
        }
    }
    assert_eq!(
        live_keys,
        2 * n,
        "every stored key was issued by some answer"
    );
}
