//! Subscriptions through the proxy: keys made by the admin API authenticate at once, by
//! header or query parameter (default or per-API names), never reach the upstream; state
//! changes, key rotation and deletion take effect for the next request; scopes `api:ID`,
//! `product:ID` and `all`; a product subscription gets the product's policies. A change
//! touches only its own subscription's keys (the others keep working), concurrent
//! regenerations of one key leave exactly one new key working, and a restart rebuilds the
//! same keys from the store.
#![allow(missing_docs)]

use serde_json::json;
use std::time::Duration;
use tollgate_tests::*;

const ADMIN: &str = "admin-token-for-subscription-tests";

/// `pets` (default key names) and `orders` (own key names) are in products `gold` and
/// `silver`; `open` needs no subscription. Product policies set `X-Product`; `pets` names
/// its outbound section with `base`, `orders` does not name it.
fn config(target: &str) -> String {
    format!(
        r#"version: 1
products:
  - id: gold
    apis: [pets]
    policies:
      outbound:
        - set-header: {{ name: X-Product, value: "gold:{{product.id}}" }}
  - id: silver
    apis: [orders]
    policies:
      outbound:
        - set-header: {{ name: X-Product, value: "silver" }}
apis:
  - id: pets
    path: /pets
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - base
        - set-header: {{ name: X-Api, value: "pets" }}
  - id: orders
    path: /orders
    subscription_key: {{ header: X-Api-Key, query: api-key }}
    upstream: {{ targets: ["{target}"] }}
  - id: open
    path: /open
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#
    )
}

fn start(up: &Upstream) -> Gateway {
    Gateway::builder(&config(&up.url()))
        .admin_token(ADMIN)
        .start()
}

/// `GET path` with `key` in the default header.
async fn with_header(gw: &Gateway, path: &str, key: &str) -> Answer {
    fetch(
        client()
            .get(gw.url(path))
            .header("Ocp-Apim-Subscription-Key", key),
    )
    .await
}

fn assert_no_key_upstream(up: &Upstream, key: &str) {
    let r = up.expect_last();
    for (name, value) in &r.headers {
        assert!(
            !name.eq_ignore_ascii_case("ocp-apim-subscription-key")
                && !name.eq_ignore_ascii_case("x-api-key"),
            "the upstream saw the key header {name}: {value}"
        );
        assert!(
            !value.contains(key),
            "the upstream saw the key in header {name}: {value}"
        );
    }
    assert!(
        !r.uri.contains(key)
            && !r
                .query_pairs()
                .iter()
                .any(|(k, _)| k == "subscription-key" || k == "api-key"),
        "the upstream saw the key in the query: {}",
        r.uri
    );
}

#[tokio::test]
async fn primary_by_header_and_secondary_by_query_reach_the_upstream_without_the_key() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let sub = gw.admin().create_subscription("s1", "api:pets").await;

    let a = with_header(&gw, "/pets/items/1?x=1", &sub.primary).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.from_upstream("u"));
    assert_no_key_upstream(&up, &sub.primary);
    assert_eq!(up.expect_last().uri, "/items/1?x=1");

    let a = get(&gw.url(&format!(
        "/pets/items/2?a=1&subscription-key={}&b=2",
        sub.secondary
    )))
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_key_upstream(&up, &sub.secondary);
    assert_eq!(
        up.expect_last().uri,
        "/items/2?a=1&b=2",
        "only the key parameter is removed"
    );
    // The primary by query and the secondary by header work too.
    let a = get(&gw.url(&format!("/pets/q?subscription-key={}", sub.primary))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_key_upstream(&up, &sub.primary);
    let a = with_header(&gw, "/pets/h", &sub.secondary).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_key_upstream(&up, &sub.secondary);
}

#[tokio::test]
async fn missing_or_wrong_key_is_401() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let sub = gw.admin().create_subscription("s1", "all").await;
    let before = up.count();
    fetch(client().get(gw.url("/pets/x")))
        .await
        .assert_problem(401);
    with_header(&gw, "/pets/x", "not-a-key")
        .await
        .assert_problem(401);
    get(&gw.url("/pets/x?subscription-key=nope"))
        .await
        .assert_problem(401);
    // A key one character off.
    let mut off = sub.primary.clone();
    let last = off.pop().unwrap();
    off.push(if last == 'A' { 'B' } else { 'A' });
    with_header(&gw, "/pets/x", &off).await.assert_problem(401);
    // `orders` reads its own names only: the default header is no key there.
    fetch(
        client()
            .get(gw.url("/orders/x"))
            .header("Ocp-Apim-Subscription-Key", &sub.primary),
    )
    .await
    .assert_problem(401);
    assert_eq!(up.count(), before, "a refused request reached the upstream");
    // An API that needs no subscription passes without a key.
    assert_eq!(get(&gw.url("/open/x")).await.status, 200);
}

#[tokio::test]
async fn per_api_key_names() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let sub = gw.admin().create_subscription("s1", "api:orders").await;
    let a = fetch(
        client()
            .get(gw.url("/orders/list"))
            .header("X-Api-Key", &sub.primary),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_key_upstream(&up, &sub.primary);
    let a = get(&gw.url(&format!("/orders/list?api-key={}&n=3", sub.secondary))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_key_upstream(&up, &sub.secondary);
    assert_eq!(up.expect_last().uri, "/list?n=3");
}

#[tokio::test]
async fn scopes_api_product_and_all() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let api_pets = admin.create_subscription("api-pets", "api:pets").await;
    let gold = admin.create_subscription("gold", "product:gold").await;
    let silver = admin.create_subscription("silver", "product:silver").await;
    let all = admin.create_subscription("all", "all").await;

    let orders = |key: &str| {
        client()
            .get(gw.url("/orders/x"))
            .header("X-Api-Key", key.to_string())
    };
    // api:pets.
    assert_eq!(
        with_header(&gw, "/pets/x", &api_pets.primary).await.status,
        200
    );
    fetch(orders(&api_pets.primary)).await.assert_problem(403);
    // product:gold holds pets only.
    assert_eq!(with_header(&gw, "/pets/x", &gold.primary).await.status, 200);
    fetch(orders(&gold.primary)).await.assert_problem(403);
    // product:silver holds orders only.
    assert_eq!(fetch(orders(&silver.primary)).await.status, 200);
    with_header(&gw, "/pets/x", &silver.primary)
        .await
        .assert_problem(403);
    // all.
    assert_eq!(with_header(&gw, "/pets/x", &all.primary).await.status, 200);
    assert_eq!(fetch(orders(&all.secondary)).await.status, 200);
    // Any key on an API that needs none.
    assert_eq!(
        fetch(
            client()
                .get(gw.url("/open/x"))
                .header("Ocp-Apim-Subscription-Key", &api_pets.primary)
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn product_subscriptions_get_the_product_policies() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let gold = admin.create_subscription("gold", "product:gold").await;
    let silver = admin.create_subscription("silver", "product:silver").await;
    let api = admin.create_subscription("api-pets", "api:pets").await;
    let all = admin.create_subscription("all", "all").await;

    // `pets` names its outbound with `base`: product, then API.
    let a = with_header(&gw, "/pets/x", &gold.primary).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-product"), Some("gold:gold"), "{:?}", a.headers);
    assert_eq!(a.header("x-api"), Some("pets"));
    // `orders` does not name outbound: it inherits the product's.
    let a = fetch(
        client()
            .get(gw.url("/orders/x"))
            .header("X-Api-Key", &silver.secondary),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-product"), Some("silver"), "{:?}", a.headers);
    // Not for subscriptions scoped to the API or to everything.
    for key in [&api.primary, &all.primary] {
        let a = with_header(&gw, "/pets/x", key).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("x-product"), None, "{:?}", a.headers);
        assert_eq!(a.header("x-api"), Some("pets"));
    }
}

#[tokio::test]
async fn admin_changes_take_effect_for_the_next_request() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let sub = admin.create_subscription("s1", "api:pets").await;
    assert_eq!(with_header(&gw, "/pets/x", &sub.primary).await.status, 200);

    // Suspend → 403 at once (both keys); reactivate → 200.
    let a = admin
        .patch_json("/subscriptions/s1", &json!({"state": "suspended"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    with_header(&gw, "/pets/x", &sub.primary)
        .await
        .assert_problem(403);
    with_header(&gw, "/pets/x", &sub.secondary)
        .await
        .assert_problem(403);
    let a = admin
        .patch_json("/subscriptions/s1", &json!({"state": "active"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(with_header(&gw, "/pets/x", &sub.primary).await.status, 200);

    // Regenerate the primary: the old one 401 at once, the secondary still 200, the new 200.
    let a = admin
        .post_empty("/subscriptions/s1/regenerate-primary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let primary2 = a.json()["primary_key"].as_str().unwrap().to_string();
    with_header(&gw, "/pets/x", &sub.primary)
        .await
        .assert_problem(401);
    assert_eq!(
        with_header(&gw, "/pets/x", &sub.secondary).await.status,
        200
    );
    assert_eq!(with_header(&gw, "/pets/x", &primary2).await.status, 200);

    // Regenerate the secondary: likewise.
    let a = admin
        .post_empty("/subscriptions/s1/regenerate-secondary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let secondary2 = a.json()["secondary_key"].as_str().unwrap().to_string();
    with_header(&gw, "/pets/x", &sub.secondary)
        .await
        .assert_problem(401);
    assert_eq!(with_header(&gw, "/pets/x", &primary2).await.status, 200);
    assert_eq!(with_header(&gw, "/pets/x", &secondary2).await.status, 200);

    // `/secrets` rotates both.
    let a = admin.post_empty("/subscriptions/s1/secrets").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    let (p3, s3) = (
        doc["primary_key"].as_str().unwrap().to_string(),
        doc["secondary_key"].as_str().unwrap().to_string(),
    );
    with_header(&gw, "/pets/x", &primary2)
        .await
        .assert_problem(401);
    with_header(&gw, "/pets/x", &secondary2)
        .await
        .assert_problem(401);
    assert_eq!(with_header(&gw, "/pets/x", &p3).await.status, 200);
    assert_eq!(with_header(&gw, "/pets/x", &s3).await.status, 200);

    // Cancel → 403; delete → 401.
    admin
        .patch_json("/subscriptions/s1", &json!({"state": "cancelled"}))
        .await;
    with_header(&gw, "/pets/x", &p3).await.assert_problem(403);
    let a = admin.delete("/subscriptions/s1").await;
    assert_eq!(a.status, 204, "{}", a.text());
    with_header(&gw, "/pets/x", &p3).await.assert_problem(401);
    with_header(&gw, "/pets/x", &s3).await.assert_problem(401);
}

#[tokio::test]
async fn removing_the_scoped_product_refuses_its_subscriptions() {
    let up = Upstream::start("u");
    let gw = start(&up);
    let admin = gw.admin();
    let gold = admin.create_subscription("gold", "product:gold").await;
    assert_eq!(with_header(&gw, "/pets/x", &gold.primary).await.status, 200);
    let a = admin.delete("/products/gold").await;
    assert_eq!(a.status, 200, "{}", a.text());
    with_header(&gw, "/pets/x", &gold.primary)
        .await
        .assert_problem(403);
    // The subscription itself stays.
    assert_eq!(admin.get("/subscriptions/gold").await.status, 200);
}

/// The status of `GET /pets/x` with `key`, and the same through `/orders` (its own header).
async fn statuses(gw: &Gateway, key: &str) -> (u16, u16) {
    let pets = with_header(gw, "/pets/x", key).await.status;
    let orders = fetch(client().get(gw.url("/orders/x")).header("X-Api-Key", key))
        .await
        .status;
    (pets, orders)
}

/// What each key of the test below must get: `(what, key, pets status, orders status)`.
type Expect = Vec<(String, String, u16, u16)>;

async fn check_all(gw: &Gateway, expect: &Expect, when: &str) {
    for (what, key, pets, orders) in expect {
        assert_eq!(
            statuses(gw, key).await,
            (*pets, *orders),
            "{what} {when} (statuses through /pets and /orders)"
        );
    }
}

#[tokio::test]
async fn each_change_touches_only_its_subscription_and_a_restart_keeps_them_all() {
    let up = Upstream::start("u");
    let mut gw = start(&up);
    let admin = gw.admin();

    // Twenty subscriptions created at once, on all scopes.
    let scopes = ["all", "api:pets", "product:silver", "api:orders"];
    let created: Vec<Sub> = {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let admin = admin.clone();
                let scope = scopes[i % scopes.len()];
                tokio::spawn(async move {
                    admin
                        .create_subscription(&format!("bulk-{i:02}"), scope)
                        .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    };
    let allowed = |scope: &str| match scope {
        "all" => (200, 200),
        "api:pets" => (200, 403),
        _ => (403, 200),
    };
    let mut expect: Expect = Vec::new();
    for (i, sub) in created.iter().enumerate() {
        let (pets, orders) = allowed(scopes[i % scopes.len()]);
        for (slot, key) in [("primary", &sub.primary), ("secondary", &sub.secondary)] {
            expect.push((format!("{} {slot}", sub.id), key.clone(), pets, orders));
        }
    }
    check_all(&gw, &expect, "after creation").await;

    // bulk-00 (all): regenerate the primary. The old key is refused, the new one works.
    let a = admin
        .post_empty("/subscriptions/bulk-00/regenerate-primary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let p0 = a.json()["primary_key"].as_str().unwrap().to_string();
    expect[0].2 = 401;
    expect[0].3 = 401;
    expect.push(("bulk-00 new primary".into(), p0, 200, 200));

    // bulk-01 (api:pets): regenerate the secondary.
    let a = admin
        .post_empty("/subscriptions/bulk-01/regenerate-secondary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let s1 = a.json()["secondary_key"].as_str().unwrap().to_string();
    expect[3].2 = 401;
    expect[3].3 = 401;
    expect.push(("bulk-01 new secondary".into(), s1, 200, 403));

    // bulk-02 (product:silver): suspended, both keys 403.
    let a = admin
        .patch_json("/subscriptions/bulk-02", &json!({"state": "suspended"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    for e in &mut expect[4..6] {
        e.2 = 403;
        e.3 = 403;
    }

    // bulk-03 (api:orders): deleted, both keys 401.
    let a = admin.delete("/subscriptions/bulk-03").await;
    assert_eq!(a.status, 204, "{}", a.text());
    for e in &mut expect[6..8] {
        e.2 = 401;
        e.3 = 401;
    }

    // bulk-04 (all): suspended, then active again.
    for state in ["suspended", "active"] {
        let a = admin
            .patch_json("/subscriptions/bulk-04", &json!({"state": state}))
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
    }

    // bulk-05 (api:pets): eight regenerations of the primary at once. The answers come from
    // changes made one after the other: the last stored key works, the seven others and
    // the original are refused, the secondary is untouched.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move {
                let a = admin
                    .post_empty("/subscriptions/bulk-05/regenerate-primary-key")
                    .await;
                assert_eq!(a.status, 200, "{}", a.text());
                a.json()["primary_key"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let mut raced = Vec::new();
    for t in tasks {
        raced.push(t.await.unwrap());
    }
    let mut working = Vec::new();
    for key in &raced {
        match statuses(&gw, key).await {
            (200, 403) => working.push(key.clone()),
            (401, 401) => {}
            other => panic!("a raced primary of bulk-05 got {other:?}"),
        }
    }
    assert_eq!(
        working.len(),
        1,
        "exactly one of the concurrently regenerated primaries must work"
    );
    expect[10].2 = 401;
    expect[10].3 = 401;
    for key in raced {
        let ok = working.contains(&key);
        let status = if ok { (200, 403) } else { (401, 401) };
        expect.push(("bulk-05 raced primary".into(), key, status.0, status.1));
    }

    // A new subscription after all that, and a bad request that changes nothing.
    let late = admin.create_subscription("late", "product:gold").await;
    expect.push(("late primary".into(), late.primary.clone(), 200, 403));
    expect.push(("late secondary".into(), late.secondary.clone(), 200, 403));
    let a = admin
        .post_empty("/subscriptions/bulk-03/regenerate-primary-key")
        .await;
    assert_eq!(a.status, 404, "{}", a.text());

    check_all(&gw, &expect, "after the changes").await;

    // A restart on the same data directory rebuilds the ring from the store: the same keys
    // work, the same are refused.
    let exit = gw.stop(Duration::from_secs(15));
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM: {exit}");
    let gw2 = Gateway::builder(&config(&up.url()))
        .admin_token(ADMIN)
        .without_config_flag()
        .in_dir(gw.shared_dir())
        .start();
    check_all(&gw2, &expect, "after a restart").await;

    // And changes after the restart are incremental on the rebuilt ring.
    let a = gw2
        .admin()
        .post_empty("/subscriptions/late/regenerate-secondary-key")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let late2 = a.json()["secondary_key"].as_str().unwrap().to_string();
    assert_eq!(statuses(&gw2, &late.secondary).await, (401, 401));
    assert_eq!(statuses(&gw2, &late2).await, (200, 403));
    assert_eq!(statuses(&gw2, &late.primary).await, (200, 403));
}
