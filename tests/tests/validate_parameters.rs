//! `validate-parameters`: query parameters, headers and path parameters checked against
//! JSON Schemas (values read by the schema's `type`); 400 `invalid-parameters` listing
//! every problem, upstream never contacted; `detect` logs and lets through; bad
//! definitions are refused by `tollgate validate`.
#![allow(missing_docs)]

use std::time::Duration;
use tollgate_tests::*;

fn config(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: pets
    path: /pets
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    operations:
      - id: list
        method: GET
        path: /pets
        policies:
          inbound:
            - validate-parameters:
                unspecified_query: prevent
                query:
                  limit: {{ schema: {{ type: integer, minimum: 1, maximum: 100 }} }}
                  status: {{ required: true, schema: {{ type: string, enum: [available, sold] }} }}
                  tags: {{ schema: {{ type: array, items: {{ type: string, maxLength: 5 }}, maxItems: 3 }} }}
                  cheap: {{ schema: {{ type: boolean }} }}
                headers:
                  X-Tenant: {{ required: true, schema: {{ type: string, pattern: "^[a-z]+$" }} }}
      - id: show
        method: GET
        path: /pets/{{id}}
        policies:
          inbound:
            - validate-parameters:
                path:
                  id: {{ schema: {{ type: integer, minimum: 1 }} }}
  - id: watched
    path: /watched
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - validate-parameters:
            action: detect
            query:
              limit: {{ schema: {{ type: integer }} }}
"#
    )
}

async fn list(gw: &Gateway, query: &str, tenant: Option<&str>) -> Answer {
    let mut req = client().get(gw.url(&format!("/pets/pets?{query}")));
    if let Some(t) = tenant {
        req = req.header("X-Tenant", t);
    }
    fetch(req).await
}

/// The `(in, name)` of each problem listed.
fn problems(a: &Answer) -> Vec<(String, String)> {
    let p = a.assert_problem(400);
    assert_eq!(p["type"], "urn:tollgate:problem:invalid-parameters", "{p}");
    p["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            (
                e["in"].as_str().expect("in").to_owned(),
                e["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect()
}

fn pair(place: &str, name: &str) -> (String, String) {
    (place.to_owned(), name.to_owned())
}

#[tokio::test]
async fn parameters_are_checked_against_their_schemas() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config(&up.url()));

    // Everything right: numbers, booleans and lists read from the text; passed unchanged.
    let q = "status=sold&limit=10&tags=a,b&tags=c&cheap=true";
    let a = list(&gw, q, Some("acme")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().uri, format!("/pets?{q}"));
    let seen = up.count();

    // Missing: the required query parameter and header, both listed.
    let a = list(&gw, "limit=5", None).await;
    let got = problems(&a);
    assert!(got.contains(&pair("query", "status")), "{got:?}");
    assert!(got.contains(&pair("header", "x-tenant")), "{got:?}");
    assert!(
        a.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("parameter `status` is required")),
        "{}",
        a.text()
    );
    // Wrong values, each named.
    for (query, name) in [
        ("status=lost", "status"),
        ("status=sold&limit=0", "limit"),
        ("status=sold&limit=ten", "limit"),
        ("status=sold&limit=1&limit=2", "limit"),
        ("status=sold&tags=a,b,c,d", "tags"),
        ("status=sold&tags=toolong", "tags"),
        ("status=sold&cheap=yes", "cheap"),
        ("status=sold&colour=red", "colour"),
    ] {
        let got = problems(&list(&gw, query, Some("acme")).await);
        assert_eq!(got, vec![pair("query", name)], "{query}");
    }
    let got = problems(&list(&gw, "status=sold", Some("ACME")).await);
    assert_eq!(got, vec![pair("header", "x-tenant")]);

    // Path parameters.
    assert_eq!(
        fetch(client().get(gw.url("/pets/pets/7"))).await.status,
        200
    );
    for id in ["0", "seven"] {
        let a = fetch(client().get(gw.url(&format!("/pets/pets/{id}")))).await;
        assert_eq!(problems(&a), vec![pair("path", "id")], "{id}");
    }
    assert_eq!(
        up.count(),
        seen + 1,
        "a refused request reached the upstream"
    );

    // `detect`: logged, let through.
    let a = fetch(client().get(gw.url("/watched/x?limit=many"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let id = a.header("x-request-id").expect("request id").to_owned();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            gw.log().lines().any(|l| {
                l.contains("validate-parameters (detect)") && l.contains(&id) && l.contains("limit")
            })
        }),
        "{}",
        gw.log()
    );
}

#[test]
fn bad_parameter_definitions_are_refused_by_validate() {
    assert_inbound_refused(
        r#"        - validate-parameters:
            headers: { "bad header": {} }
            path: { "pet-id": {} }
            query: { limit: { schema: { type: int } } }
            unspecified_query: deny
        - validate-parameters: {}
        - validate-parameters: { query: { page: { requred: true } } }
"#,
        &[
            "not a valid header name",
            "`pet-id` is not a path parameter name",
            "query.limit.schema",
            "requred",
            "unspecified_query",
            "inbound[1].validate-parameters",
            "nothing to validate",
        ],
    );
}
