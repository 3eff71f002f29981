//! The response cache end to end (`cache-lookup` / `cache-store`): hits and misses counted
//! at a real upstream, every vary dimension, what is never stored, HEAD, conditional
//! requests, coalescing of concurrent misses, purge through the admin API, the byte bound,
//! config swaps, and the request body of a hit on a kept-alive connection.
#![allow(missing_docs)]

use serde_json::json;
use std::time::Duration;
use tollgate_tests::*;

const ADMIN: &str = "cache-admin-token-0123456789";
const OPERATOR: &str = "cache-operator-token-0123456789";

/// One API `pets` at `/pets` (no subscription required; a key, when sent, scopes the call
/// to its product) with operations `get-a` (`GET /a/{id}`), `get-b` (`GET /b/{id}`) and
/// `post-a` (`POST /a/{id}`), all running `cache-lookup: {lookup}` and
/// `cache-store: {store}`; a second API `other` at `/other` with the same policies;
/// products `gold` and `silver` with both APIs. `settings` is the settings block body
/// (e.g. `cache_max_bytes: 64KiB`), `outbound_extra` more outbound entries after
/// `cache-store`.
fn config(target: &str, lookup: &str, store: &str, settings: &str, outbound_extra: &str) -> String {
    let settings = if settings.is_empty() {
        String::new()
    } else {
        format!("settings: {{ {settings} }}\n")
    };
    format!(
        r#"version: 1
{settings}products:
  - id: gold
    apis: [pets, other]
  - id: silver
    apis: [pets, other]
apis:
  - id: pets
    path: /pets
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - cache-lookup: {{ {lookup} }}
      outbound:
        - cache-store: {{ {store} }}{outbound_extra}
    operations:
      - {{ id: get-a, method: GET, path: "/a/{{id}}" }}
      - {{ id: get-b, method: GET, path: "/b/{{id}}" }}
      - {{ id: post-a, method: POST, path: "/a/{{id}}" }}
  - id: other
    path: /other
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - cache-lookup: {{ {lookup} }}
      outbound:
        - cache-store: {{ {store} }}
"#
    )
}

fn start(yaml: &str) -> Gateway {
    Gateway::builder(yaml)
        .admin_token(ADMIN)
        .operator_token(OPERATOR)
        .start()
}

fn simple(up: &Upstream) -> Gateway {
    start(&config(&up.url(), "", "duration: 60s", "", ""))
}

/// `GET path` with extra headers.
async fn get_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    fetch(req).await
}

/// Asserts a 200 and returns the body.
fn ok(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{:?} {}", a.headers, a.text());
    a.text()
}

#[tokio::test]
async fn a_second_get_is_a_hit_with_age_and_head_is_served_from_it() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    let first = get(&gw.url("/pets/a/1")).await;
    let body = ok(&first);
    assert_eq!(up.count(), 1);
    assert_eq!(first.header("age"), None, "a miss has no Age");
    let second = get(&gw.url("/pets/a/1")).await;
    assert_eq!(ok(&second), body, "a hit serves the stored body");
    assert_eq!(up.count(), 1, "a hit does not reach the upstream");
    let age: u64 = second.header("age").expect("Age on a hit").parse().unwrap();
    assert!(age <= 2, "Age {age}");
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.header("x-upstream"), Some("u"));
    assert!(second.header("x-request-id").is_some());
    assert_ne!(second.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(
        second.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    // HEAD is answered from the GET entry: the length, no body.
    let head = fetch(client().head(gw.url("/pets/a/1"))).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(head.header("age").is_some());
    assert_eq!(up.count(), 1);
    // Another path is another entry; a HEAD miss goes upstream and stores nothing.
    let head = fetch(client().head(gw.url("/pets/a/2"))).await;
    assert_eq!(head.status, 200);
    assert_eq!(up.count(), 2);
    ok(&get(&gw.url("/pets/a/2")).await);
    assert_eq!(up.count(), 3);
    ok(&get(&gw.url("/pets/a/2")).await);
    assert_eq!(up.count(), 3);
    // All query parameters, in a canonical order, by default.
    ok(&get(&gw.url("/pets/a/3?x=1&y=2")).await);
    ok(&get(&gw.url("/pets/a/3?y=2&x=1")).await);
    assert_eq!(up.count(), 4);
    ok(&get(&gw.url("/pets/a/3?y=2&x=2")).await);
    assert_eq!(up.count(), 5);
    // HTTP/2 (h2c) hits the same entry (its `:authority` is the host).
    let h2 = fetch(h2c_client().get(gw.url("/pets/a/1"))).await;
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(ok(&h2), body);
    assert!(h2.header("age").is_some());
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn hits_on_a_body_transforming_route_run_the_transform_again() {
    let up = Upstream::start("u");
    let yaml = config(
        &up.url(),
        "",
        "duration: 60s",
        "",
        "\n        - xml-to-json: {}",
    );
    let gw = start(&yaml);
    up.set_answer("application/xml", b"<r><v>1</v><v>2</v></r>", None);
    let first = get(&gw.url("/pets/a/1")).await;
    let body = ok(&first);
    let json = first.header("content-type").unwrap().to_owned();
    assert!(json.starts_with("application/json"), "{json}");
    let second = get(&gw.url("/pets/a/1")).await;
    assert_eq!(ok(&second), body);
    assert_eq!(second.header("content-type"), Some(json.as_str()));
    assert!(second.header("age").is_some());
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn each_vary_dimension_makes_its_own_entry() {
    let up = Upstream::start("u");
    let gw = start(&config(
        &up.url(),
        "vary_by_query_parameter: [lang], vary_by_header: [Accept-Language], vary_by_subscription: true",
        "duration: 60s",
        "",
        "",
    ));
    let admin = gw.admin();
    let s1 = admin.create_subscription("sub-one", "api:pets").await;
    let s2 = admin.create_subscription("sub-two", "api:pets").await;
    let expect = |a: &Answer, upstream: &Upstream, calls: usize, what: &str| {
        ok(a);
        assert_eq!(upstream.count(), calls, "{what}");
    };
    // Query: only `lang` counts.
    expect(&get(&gw.url("/pets/a/1?lang=de")).await, &up, 1, "first");
    expect(
        &get(&gw.url("/pets/a/1?lang=de&x=9")).await,
        &up,
        1,
        "other params ignored",
    );
    expect(
        &get(&gw.url("/pets/a/1?lang=fr")).await,
        &up,
        2,
        "lang varies",
    );
    expect(
        &get(&gw.url("/pets/a/1")).await,
        &up,
        3,
        "no lang is its own entry",
    );
    // Header.
    expect(
        &get_with(&gw, "/pets/a/1?lang=de", &[("accept-language", "de")]).await,
        &up,
        4,
        "header varies",
    );
    expect(
        &get_with(&gw, "/pets/a/1?lang=de", &[("accept-language", "de")]).await,
        &up,
        4,
        "same header hits",
    );
    // Subscription.
    let k1 = [("ocp-apim-subscription-key", s1.primary.as_str())];
    let k2 = [("ocp-apim-subscription-key", s2.primary.as_str())];
    expect(
        &get_with(&gw, "/pets/a/1?lang=de", &k1).await,
        &up,
        5,
        "sub one",
    );
    expect(
        &get_with(&gw, "/pets/a/1?lang=de", &k1).await,
        &up,
        5,
        "sub one hits",
    );
    expect(
        &get_with(&gw, "/pets/a/1?lang=de", &k2).await,
        &up,
        6,
        "sub two",
    );
    // The other key of the same subscription shares its entries.
    let k1b = [("ocp-apim-subscription-key", s1.secondary.as_str())];
    expect(
        &get_with(&gw, "/pets/a/1?lang=de", &k1b).await,
        &up,
        6,
        "same sub",
    );
    // The subscription key in the query is not part of the key either.
    let path = format!("/pets/a/1?lang=de&subscription-key={}", s2.primary);
    expect(&get(&gw.url(&path)).await, &up, 6, "key in the query");

    // Host: a different Host never hits another host's entry.
    let req = |host: &str| format!("GET /pets/b/1 HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    let mut conn = RawConn::connect(gw.addr());
    assert_eq!(conn.request(&req("a.example")).status, 200);
    assert_eq!(up.count(), 7);
    let again = conn.request(&req("A.EXAMPLE"));
    assert_eq!(again.status, 200);
    assert!(again.header("age").is_some());
    assert_eq!(up.count(), 7, "host names are case-insensitive");
    assert_eq!(conn.request(&req("b.example")).status, 200);
    assert_eq!(up.count(), 8, "another host misses");
}

#[tokio::test]
async fn private_no_store_cookies_posts_and_authorized_requests_are_never_stored() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    let twice = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let gw = &gw;
        async move {
            ok(&get_with(gw, path, &headers).await);
            ok(&get_with(gw, path, &headers).await);
        }
    };
    let cases: [(&str, &[(&str, &str)]); 6] = [
        (
            "/pets/a/private",
            &[("cache-control", "private, max-age=60")],
        ),
        ("/pets/a/no-store", &[("cache-control", "no-store")]),
        ("/pets/a/no-cache", &[("cache-control", "no-cache")]),
        ("/pets/a/cookie", &[("set-cookie", "session=abc")]),
        ("/pets/a/vary-star", &[("vary", "*")]),
        ("/pets/a/404", &[]),
    ];
    let mut expected = 0;
    for (path, headers) in cases {
        up.set_headers(headers);
        if path.ends_with("404") {
            up.set_status(404);
            for _ in 0..2 {
                assert_eq!(get(&gw.url(path)).await.status, 404);
            }
            up.set_status(200);
        } else {
            twice(path, vec![]).await;
        }
        expected += 2;
        assert_eq!(up.count(), expected, "{path} {headers:?} was stored");
    }
    up.set_headers(&[]);
    // POST is neither looked up nor stored, and does not fill the GET entry.
    for _ in 0..2 {
        let a = fetch(client().post(gw.url("/pets/a/9")).body("x")).await;
        assert_eq!(a.status, 200);
    }
    expected += 2;
    assert_eq!(up.count(), expected);
    ok(&get(&gw.url("/pets/a/9")).await);
    assert_eq!(
        up.count(),
        expected + 1,
        "a POST answer was served to a GET"
    );
    expected += 1;
    // Authorization: not stored without allow_private.
    twice("/pets/a/auth", vec![("authorization", "Bearer abc")]).await;
    expected += 2;
    assert_eq!(up.count(), expected);
}

#[tokio::test]
async fn allow_private_stores_authorized_and_private_answers_but_never_cookies() {
    let up = Upstream::start("u");
    let gw = start(&config(
        &up.url(),
        "vary_by_header: [Authorization]",
        "duration: 60s, allow_private: true",
        "",
        "",
    ));
    let auth = [("authorization", "Bearer abc")];
    ok(&get_with(&gw, "/pets/a/1", &auth).await);
    ok(&get_with(&gw, "/pets/a/1", &auth).await);
    assert_eq!(up.count(), 1, "allow_private stores authorized answers");
    ok(&get_with(&gw, "/pets/a/1", &[("authorization", "Bearer other")]).await);
    assert_eq!(up.count(), 2, "varying by Authorization keeps users apart");
    up.set_headers(&[("cache-control", "private")]);
    ok(&get(&gw.url("/pets/a/2")).await);
    ok(&get(&gw.url("/pets/a/2")).await);
    assert_eq!(up.count(), 3);
    up.set_headers(&[("set-cookie", "a=b")]);
    ok(&get(&gw.url("/pets/a/3")).await);
    ok(&get(&gw.url("/pets/a/3")).await);
    assert_eq!(up.count(), 5);
    up.set_headers(&[("cache-control", "no-store")]);
    ok(&get(&gw.url("/pets/a/4")).await);
    ok(&get(&gw.url("/pets/a/4")).await);
    assert_eq!(up.count(), 7);
}

#[tokio::test]
async fn conditional_requests_are_answered_304_from_the_cache() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    up.set_headers(&[
        ("etag", "\"v1\""),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("cache-control", "public, max-age=300"),
    ]);
    let full = get(&gw.url("/pets/a/1")).await;
    let body = ok(&full);
    assert_eq!(up.count(), 1);
    for inm in ["\"v1\"", "W/\"v1\"", "\"v0\", \"v1\"", "*"] {
        let a = get_with(&gw, "/pets/a/1", &[("if-none-match", inm)]).await;
        assert_eq!(a.status, 304, "If-None-Match {inm}");
        assert!(a.body.is_empty());
        assert_eq!(a.header("etag"), Some("\"v1\""));
        assert_eq!(a.header("cache-control"), Some("public, max-age=300"));
        assert!(a.header("age").is_some());
        assert!(a.header("x-request-id").is_some());
        assert_eq!(a.header("content-type"), None);
    }
    let a = get_with(&gw, "/pets/a/1", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(ok(&a), body, "another ETag gets the full answer");
    let a = get_with(
        &gw,
        "/pets/a/1",
        &[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")],
    )
    .await;
    assert_eq!(a.status, 304);
    let a = get_with(
        &gw,
        "/pets/a/1",
        &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
    )
    .await;
    assert_eq!(ok(&a), body);
    assert_eq!(up.count(), 1, "conditional hits stay in the gateway");
    // 304 keeps the connection usable: a raw keep-alive connection goes on.
    let mut conn = RawConn::connect(gw.addr());
    let host = gw.addr();
    let r = conn.request(
        format!("GET /pets/a/1 HTTP/1.1\r\nHost: {host}\r\nIf-None-Match: \"v1\"\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = conn.request(format!("GET /pets/a/1 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), body);
}

#[tokio::test]
async fn client_no_cache_revalidates_and_refreshes_the_entry() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    let first = ok(&get(&gw.url("/pets/a/1")).await);
    assert_eq!(ok(&get(&gw.url("/pets/a/1")).await), first);
    assert_eq!(up.count(), 1);
    let fresh = ok(&get_with(&gw, "/pets/a/1", &[("cache-control", "no-cache")]).await);
    assert_eq!(up.count(), 2, "no-cache goes upstream");
    assert_ne!(fresh, first);
    assert_eq!(
        ok(&get(&gw.url("/pets/a/1")).await),
        fresh,
        "the revalidated answer replaced the entry"
    );
    ok(&get_with(&gw, "/pets/a/1", &[("pragma", "no-cache")]).await);
    assert_eq!(up.count(), 3);
    // no-store: neither served from nor stored.
    ok(&get_with(&gw, "/pets/a/2", &[("cache-control", "no-store")]).await);
    ok(&get(&gw.url("/pets/a/2")).await);
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn ten_concurrent_misses_make_one_upstream_call() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    let c = client();
    let url = gw.url("/pets/a/1?sleep_ms=300");
    let calls = (0..10).map(|_| fetch(c.get(&url)));
    let answers = futures_join_all(calls).await;
    let bodies: Vec<String> = answers.iter().map(ok).collect();
    assert_eq!(up.count(), 1, "coalescing failed");
    assert!(bodies.iter().all(|b| *b == bodies[0]), "different answers");
    // Unstorable answers release the waiters at once: they go upstream themselves.
    up.set_headers(&[("set-cookie", "a=b")]);
    let url = gw.url("/pets/a/2?sleep_ms=300");
    let started = std::time::Instant::now();
    let answers = futures_join_all((0..5).map(|_| fetch(c.get(&url)))).await;
    for a in &answers {
        ok(a);
    }
    assert_eq!(up.count(), 6);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waiters were held too long: {:?}",
        started.elapsed()
    );
}

/// A waiter waits as long as the fill may take upstream: with `forward-request` raising the
/// timeout over `upstream.timeout` + `connect_timeout` (2 s), a 2.5 s fill still serves
/// the requests behind it (before, they gave up after 2 s and went upstream themselves).
#[tokio::test]
async fn waiters_wait_as_long_as_forward_request_lets_the_fill_take() {
    let up = Upstream::start("u");
    let yaml = format!(
        r#"version: 1
apis:
  - id: reports
    path: /reports
    subscription_required: false
    upstream: {{ targets: ["{}"], timeout: 1s, connect_timeout: 1s }}
    policies:
      inbound:
        - forward-request: {{ timeout: 6s }}
        - cache-lookup: {{}}
      outbound:
        - cache-store: {{ duration: 60s }}
    operations:
      - {{ id: get, method: GET, path: "/{{id}}" }}
"#,
        up.url()
    );
    let gw = start(&yaml);
    let c = client();
    let url = gw.url("/reports/1?sleep_ms=2500");
    let first = tokio::spawn(fetch(c.get(&url)));
    // The others arrive while the first is filling.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while up.count() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        up.count(),
        1,
        "the first request did not reach the upstream"
    );
    let rest = futures_join_all((0..3).map(|_| fetch(c.get(&url)))).await;
    let first = first.await.expect("task");
    let body = ok(&first);
    for a in &rest {
        assert_eq!(ok(a), body);
    }
    assert_eq!(
        up.count(),
        1,
        "the waiters gave up before the fill was done"
    );
}

/// Joins futures without another dependency.
async fn futures_join_all<F: std::future::Future<Output = Answer> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<Answer> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn purge_by_product_api_operation_or_everything() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    let admin = gw.admin();
    let gold = admin.create_subscription("gold-sub", "product:gold").await;
    let silver = admin
        .create_subscription("silver-sub", "product:silver")
        .await;
    let g = [("ocp-apim-subscription-key", gold.primary.as_str())];
    let s = [("ocp-apim-subscription-key", silver.primary.as_str())];
    // Seven entries: pets/get-a ×3 (gold, silver, none), pets/get-b ×2 (gold, none),
    // other ×2 (gold, none).
    let fill = || async {
        ok(&get_with(&gw, "/pets/a/1", &g).await);
        ok(&get_with(&gw, "/pets/a/1", &s).await);
        ok(&get(&gw.url("/pets/a/1")).await);
        ok(&get_with(&gw, "/pets/b/1", &g).await);
        ok(&get(&gw.url("/pets/b/1")).await);
        ok(&get_with(&gw, "/other/x", &g).await);
        ok(&get(&gw.url("/other/x")).await);
    };
    fill().await;
    assert_eq!(up.count(), 7, "products have their own entries");
    fill().await;
    assert_eq!(up.count(), 7, "everything was a hit");
    let operator = admin.with_token(Some(OPERATOR));
    let purge = |body: serde_json::Value| {
        let operator = operator.clone();
        async move {
            let a = operator.post_json("/cache/purge", &body).await;
            assert_eq!(a.status, 200, "{}", a.text());
            a.json()["purged"].as_u64().unwrap()
        }
    };
    assert_eq!(purge(json!({"product": "gold"})).await, 3);
    assert_eq!(purge(json!({"api": "pets", "operation": "get-a"})).await, 2);
    assert_eq!(purge(json!({"operation": "get-b"})).await, 1);
    assert_eq!(purge(json!({"api": "other"})).await, 1);
    assert_eq!(purge(json!({})).await, 0);
    // Everything misses again.
    let before = up.count();
    fill().await;
    assert_eq!(up.count(), before + 7);
    assert_eq!(purge(json!({})).await, 7);
    fill().await;
    assert_eq!(up.count(), before + 14);
    // No token: 401; the counters are visible.
    let a = admin
        .with_token(None)
        .post_json("/cache/purge", &json!({}))
        .await;
    assert_eq!(a.status, 401);
    let stats = admin.get("/cache/stats").await.json();
    assert_eq!(stats["purged"], 14);
    assert_eq!(stats["entries"], 7);
    assert!(stats["hits"].as_u64().unwrap() >= 7);
}

#[tokio::test]
async fn the_byte_bound_evicts_and_big_answers_are_not_stored() {
    let up = Upstream::start("u");
    let gw = start(&config(
        &up.url(),
        "",
        "duration: 60s",
        "cache_max_bytes: 64KiB",
        "",
    ));
    up.set_answer("text/plain", &vec![b'x'; 4000], None);
    for i in 0..40 {
        ok(&get(&gw.url(&format!("/pets/a/{i}"))).await);
    }
    assert_eq!(up.count(), 40);
    let stats = gw.admin().get("/cache/stats").await.json();
    assert!(stats["bytes"].as_u64().unwrap() <= 64 * 1024, "{stats}");
    assert!(stats["evictions"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["entries"].as_u64().unwrap() < 40, "{stats}");
    assert_eq!(stats["stores"], 40);
    // Some of them still hit.
    let before = up.count();
    for i in 0..40 {
        ok(&get(&gw.url(&format!("/pets/a/{i}"))).await);
    }
    let misses = up.count() - before;
    assert!(misses > 0 && misses < 40, "{misses} misses of 40");
    // One answer over an eighth of the bound (8 KiB) is never stored.
    up.set_answer("text/plain", &vec![b'y'; 9000], None);
    let before = up.count();
    ok(&get(&gw.url("/pets/b/big")).await);
    let a = get(&gw.url("/pets/b/big")).await;
    assert_eq!(a.body.len(), 9000);
    assert_eq!(up.count(), before + 2);
}

#[tokio::test]
async fn ttl_is_capped_by_the_upstream_max_age() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    up.set_headers(&[("cache-control", "max-age=1")]);
    ok(&get(&gw.url("/pets/a/1")).await);
    ok(&get(&gw.url("/pets/a/1")).await);
    assert_eq!(up.count(), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    ok(&get(&gw.url("/pets/a/1")).await);
    assert_eq!(up.count(), 2, "the entry outlived the upstream's max-age");
}

#[tokio::test]
async fn a_config_swap_keeps_entries_and_hits_run_the_new_outbound_section() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    let body = ok(&get(&gw.url("/pets/a/1")).await);
    let swapped = config(
        &up.url(),
        "",
        "duration: 60s",
        "",
        "\n        - set-header: { name: X-Swapped, value: \"yes\" }",
    );
    gw.admin().put_config(&swapped).await;
    let a = get(&gw.url("/pets/a/1")).await;
    assert_eq!(ok(&a), body);
    assert_eq!(up.count(), 1, "the swap dropped the entry");
    assert_eq!(a.header("x-swapped"), Some("yes"));
    assert!(a.header("age").is_some());
}

#[tokio::test]
async fn the_request_body_of_a_hit_is_drained_before_the_next_request() {
    let up = Upstream::start("u");
    let gw = simple(&up);
    let body = ok(&get(&gw.url("/pets/a/1")).await);
    let mut conn = RawConn::connect(gw.addr());
    // A GET with a body that looks like a request: it must not be read as one.
    let host = gw.addr();
    let smuggled = format!("GET /pets/a/evil HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let first = format!(
        "GET /pets/a/1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let r = conn.request(first.as_bytes());
    assert_eq!(r.status, 200);
    assert!(r.header("age").is_some(), "not a hit");
    assert_eq!(r.text(), body);
    let r = conn.request(format!("GET /pets/a/1 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200, "the connection broke");
    assert_eq!(r.text(), body);
    assert_eq!(up.count(), 1);
    assert!(
        up.requests().iter().all(|r| !r.uri.contains("evil")),
        "the hit's body was read as a request"
    );
    // Chunked too.
    let r = conn.request(
        format!(
            "GET /pets/a/1 HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = conn.request(format!("GET /pets/a/1 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 1);
}

/// An upstream on a raw socket that answers each request on each connection with a
/// `103 Early Hints` and then a `200` (body `hinted`), for up to `connections`
/// connections; counts the requests it answered.
fn early_hints_upstream(
    connections: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let counted = counted.clone();
            std::thread::spawn(move || loop {
                let head = read_head(&mut s);
                if head.is_empty() {
                    break;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                               HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhinted";
                if s.write_all(answer).is_err() {
                    break;
                }
            });
        }
    });
    (url, count)
}

/// An interim `103 Early Hints` before the upstream's `200` is passed on to the client,
/// and the `200` is what the cache stores and the outbound policies see: the next
/// request is a hit, and the outbound header is on the final answer only.
#[test]
fn an_interim_answer_before_the_final_one_is_passed_on_and_not_cached() {
    let (url, count) = early_hints_upstream(4);
    let gw = start(&config(
        &url,
        "",
        "duration: 60s",
        "",
        "\n        - set-header: { name: X-Outbound, value: \"ran\" }",
    ));
    let mut conn = RawConn::connect(gw.addr());
    conn.send(b"GET /pets/a/1 HTTP/1.1\r\nHost: a\r\n\r\n");
    let interim = conn.read_interim();
    assert_eq!(interim.status, 103, "{interim:?}");
    assert_eq!(
        interim.header("link"),
        Some("</style.css>; rel=preload"),
        "{interim:?}"
    );
    assert_eq!(interim.header("x-outbound"), None, "{interim:?}");
    let first = conn.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body, b"hinted");
    assert_eq!(first.header("x-outbound"), Some("ran"), "{first:?}");
    let again = send_raw(
        gw.addr(),
        b"GET /pets/a/1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body, b"hinted");
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the second request was not a cache hit: {again:?}"
    );
}

/// A cache hit is an answer too: with `cors` listed after `cache-lookup` (which answers
/// before the policies after it run), an allowed origin still gets its grant on a hit,
/// and another origin none.
#[test]
fn a_cache_hit_carries_the_cors_grant_of_a_later_cors() {
    let up = Upstream::start("a");
    let gw = start(&format!(
        r#"version: 1
apis:
  - id: c
    path: /c
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
    policies:
      inbound:
        - cache-lookup: {{}}
        - cors: {{ allowed_origins: ["https://app.example"] }}
      outbound:
        - cache-store: {{ duration: 60s }}
"#,
        up.url()
    ));
    let get = |origin: &str| {
        send_raw(
            gw.addr(),
            format!(
                "GET /c/x HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    for round in 0..2 {
        let a = get("https://app.example");
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("https://app.example"),
            "round {round}: {a:?}"
        );
    }
    let a = get("https://evil.example");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("access-control-allow-origin"), None, "{a:?}");
    assert!(a.header("age").is_some(), "not a hit: {a:?}");
    assert_eq!(up.count(), 1, "{:?}", up.requests());
}
