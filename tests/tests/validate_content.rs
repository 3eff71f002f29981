//! `validate-content`: JSON bodies checked against a JSON Schema. Requests that do not
//! match get a 400 listing where and why (415 for a body that is not JSON), and never
//! reach the upstream; 2xx JSON answers that do not match become 502; `action: detect`
//! logs and lets through. A bad schema is refused by `tollgate validate`.
#![allow(missing_docs)]

use std::time::Duration;
use tollgate_tests::*;

const SCHEMA: &str = r#"{ type: object, required: [name], additionalProperties: false,
              properties: { name: { type: string, minLength: 1 },
                            age: { type: integer, minimum: 0 },
                            email: { type: string, format: email },
                            code: { type: string, pattern: "^[A-Z]{3}$" } } }"#;

fn config(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: people
    path: /people
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - validate-content:
            schema: {SCHEMA}
  - id: answers
    path: /answers
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - validate-content:
            schema: {SCHEMA}
  - id: watched
    path: /watched
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - validate-content:
            action: detect
            schema: {SCHEMA}
  - id: small
    path: /small
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - validate-content:
            max_size: 64
            schema: {{ type: object }}
      outbound:
        - validate-content:
            max_size: 64
            schema: {{ type: object }}
  - id: converted
    path: /converted
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - xml-to-json: {{}}
        - validate-content:
            schema: {{ type: object, required: [person] }}
"#
    )
}

async fn post(url: &str, content_type: Option<&str>, body: &str) -> Answer {
    let mut req = client().post(url).body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    fetch(req).await
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn request_bodies_are_checked_against_the_schema() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config(&up.url()));
    let url = gw.url("/people/x");

    // A matching body reaches the upstream as sent.
    let body = r#"{"name":"Ada","age":36,"email":"ada@example.com","code":"ABC"}"#;
    let a = post(&url, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().body, body.as_bytes());
    let a = post(
        &url,
        Some("application/merge-patch+json"),
        r#"{"name":"B"}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    // No body: nothing to check.
    assert_eq!(fetch(client().get(&url)).await.status, 200);
    let seen = up.count();

    // Mismatches: every one listed with where it is (at most 10), the first in `detail`.
    let a = post(
        &url,
        JSON,
        r#"{"age":-1,"email":"not-an-address","code":"abcd","extra":true}"#,
    )
    .await;
    let p = a.assert_problem(400);
    assert_eq!(p["type"], "urn:tollgate:problem:invalid-body");
    let errors = p["errors"].as_array().expect("errors").clone();
    let pointers: Vec<&str> = errors
        .iter()
        .map(|e| e["pointer"].as_str().expect("pointer"))
        .collect();
    for wanted in ["", "/age", "/email", "/code"] {
        assert!(pointers.contains(&wanted), "{wanted}: {p}");
    }
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())),
        "{p}"
    );
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("the request body does not match the schema: ")),
        "{p}"
    );
    // The client's values are not echoed back in the messages.
    assert!(!a.text().contains("not-an-address"), "{}", a.text());
    let a = post(&url, JSON, r#"["Ada"]"#).await;
    assert_eq!(a.assert_problem(400)["errors"][0]["pointer"], "");

    // Not JSON at all, not declared JSON, compressed.
    let p = post(&url, JSON, r#"{"name":"#).await.assert_problem(400);
    assert_eq!(p["type"], "urn:tollgate:problem:malformed-body");
    let p = post(&url, Some("text/plain"), r#"{"name":"Ada"}"#)
        .await
        .assert_problem(415);
    assert_eq!(p["type"], "urn:tollgate:problem:unsupported-media-type");
    post(&url, None, r#"{"name":"Ada"}"#)
        .await
        .assert_problem(415);
    let a = fetch(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(vec![0x1f, 0x8b, 0, 0]),
    )
    .await;
    a.assert_problem(415);
    assert_eq!(up.count(), seen, "a refused body reached the upstream");

    // Over `max_size`: 413, before anything is parsed.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64));
    let p = fetch(
        client()
            .post(gw.url("/small/x"))
            .header("content-type", "application/json")
            .body(big),
    )
    .await
    .assert_problem(413);
    assert_eq!(p["type"], "urn:tollgate:problem:payload-too-large");
    assert_eq!(up.count(), seen, "a refused body reached the upstream");

    // `detect`: logged with the request id, let through.
    let a = post(&gw.url("/watched/x"), JSON, r#"{"age":"old"}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), seen + 1);
    let id = a.header("x-request-id").expect("request id").to_owned();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            gw.log()
                .lines()
                .any(|l| l.contains("validate-content (detect)") && l.contains(&id))
        }),
        "{}",
        gw.log()
    );

    // After a transform: the JSON `xml-to-json` made is what is checked.
    let a = post(
        &gw.url("/converted/x"),
        Some("application/xml"),
        "<person><name>Ada</name></person>",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = post(
        &gw.url("/converted/x"),
        Some("application/xml"),
        "<animal><name>Rex</name></animal>",
    )
    .await;
    assert_eq!(a.assert_problem(400)["errors"][0]["pointer"], "");
}

#[tokio::test]
async fn upstream_answers_are_checked_when_they_are_2xx_json() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config(&up.url()));
    let url = gw.url("/answers/1");

    up.set_answer("application/json", br#"{"name":"Ada"}"#, None);
    let a = fetch(client().get(&url)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), r#"{"name":"Ada"}"#);

    // A 2xx JSON answer that does not match: 502.
    up.set_answer("application/json", br#"{"nom":"Ada"}"#, None);
    let p = fetch(client().get(&url)).await.assert_problem(502);
    assert_eq!(p["type"], "urn:tollgate:problem:bad-upstream-body");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("the upstream's answer does not match the schema")),
        "{p}"
    );
    up.set_answer("application/json", b"{", None);
    fetch(client().get(&url)).await.assert_problem(502);

    // An answer over `max_size`: not passed on unchecked.
    up.set_answer(
        "application/json",
        format!(r#"{{"pad":"{}"}}"#, "x".repeat(64)).as_bytes(),
        None,
    );
    let p = fetch(client().get(gw.url("/small/x")))
        .await
        .assert_problem(502);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("max_size")),
        "{p}"
    );

    // An error answer, a non-JSON answer: the upstream's own, untouched.
    up.set_answer("application/json", br#"{"error":"no such person"}"#, None);
    up.set_status(404);
    let a = fetch(client().get(&url)).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.text(), r#"{"error":"no such person"}"#);
    up.set_status(200);
    up.set_answer("text/html", b"<p>hello</p>", None);
    let a = fetch(client().get(&url)).await;
    assert_eq!((a.status, a.text().as_str()), (200, "<p>hello</p>"));
}

#[test]
fn bad_schemas_are_refused_by_validate() {
    assert_inbound_refused(
        r#"        - validate-content:
            schema: { type: strin }
        - validate-content:
            schema: { $ref: "https://example.com/person.json" }
        - validate-content:
            schema: [ 1 ]
            action: block
        - validate-content: {}
        - validate-content: { schema: {}, max_size: 11MiB }
"#,
        &[
            "inbound[0].validate-content.schema",
            "not a usable JSON Schema",
            "(at /type)",
            "inbound[1].validate-content.schema",
            "may only point inside the schema",
            "inbound[2].validate-content.schema",
            "a JSON Schema is a mapping",
            "inbound[2].validate-content.action",
            "inbound[3].validate-content",
            "schema",
            "inbound[4].validate-content.max_size",
            "at most 10MiB",
        ],
    );
}
