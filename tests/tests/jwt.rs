//! `validate-jwt` end to end: the real gateway, a real upstream, and a JWKS served by a real
//! HTTP server (an [`Upstream`] answering a fixed JSON document). Static HS256 keys, a
//! JWKS with key rotation, claims reaching the upstream through `set-header` templates,
//! `failed_status`, the query source, the size limits, and a log that never holds a token.
#![allow(missing_docs)]

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tollgate_tests::*;

const SECRET: &str = "an-end-to-end-secret-of-32-bytes-or-more";
/// A P-256 test key (the policies crate's unit-test key).
const EC_PRIVATE: &str = include_str!("../../policies/src/jwt/testdata/ec256_a_private.pem");
const EC2_PRIVATE: &str = include_str!("../../policies/src/jwt/testdata/ec256_b_private.pem");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn es256(private: &str, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.to_owned());
    encode(
        &h,
        claims,
        &EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn jwk(private: &str, kid: &str) -> Jwk {
    let key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
    let mut k = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    k.common.key_id = Some(kid.to_owned());
    k
}

fn jwks(keys: Vec<Jwk>) -> Vec<u8> {
    serde_json::to_vec(&JwkSet { keys }).unwrap()
}

/// One API `api` at `/api` whose inbound section is `inbound` (YAML list items, indented 8).
fn config(target: &str, inbound: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: api
    path: /api
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
{inbound}
"#
    )
}

fn static_inbound(extra: &str) -> String {
    format!(
        r#"        - validate-jwt: {{ keys: [ {{ alg: HS256, secret: "{SECRET}" }} ], issuers: ["https://idp.test"]{extra} }}
        - set-header: {{ name: X-User, value: "{{jwt.claim.sub}}" }}
        - set-header: {{ name: X-Tier, value: "{{jwt.claim.tier}}" }}"#
    )
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "tier": 2, "iss": "https://idp.test", "exp": now() + 600, "iat": now()})
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Checks a refusal: status, problem+json, the challenge; returns the detail.
fn refused(a: &Answer, status: u16) -> String {
    let body = a.assert_problem(status);
    let www = a.header("www-authenticate").expect("WWW-Authenticate");
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
    body["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn static_hs256_key() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&config(&up.url(), &static_inbound("")))
        .env(
            "RUST_LOG",
            "info,tollgate_policies=debug,tollgate_gateway=debug",
        )
        .start();
    let c = client();

    // No token: 401 with the challenge, the upstream never sees the request.
    let a = fetch(c.get(gw.url("/api/x"))).await;
    assert_eq!(refused(&a, 401), "the request carries no bearer token");
    assert_eq!(up.count(), 0);

    // A valid token: through, claims rendered into headers for the upstream.
    let good = hs256(&claims("alice"));
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&good)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let rec = up.expect_last();
    assert_eq!(rec.header("x-user"), Some("alice"));
    assert_eq!(rec.header("x-tier"), Some("2"));
    // Again (a cache hit): same outcome.
    let a = fetch(
        c.get(gw.url("/api/y"))
            .header("Authorization", bearer(&good)),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.expect_last().header("x-user"), Some("alice"));

    // Refusals name the reason class.
    let expired = hs256(&json!({"sub": "bob", "iss": "https://idp.test", "exp": now() - 3600}));
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&expired)),
    )
    .await;
    assert_eq!(refused(&a, 401), "the token has expired");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the"),
    )
    .unwrap();
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&forged)),
    )
    .await;
    assert_eq!(refused(&a, 401), "the token's signature is not valid");
    let wrong_iss = hs256(&json!({"sub": "eve", "iss": "https://evil.test", "exp": now() + 60}));
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&wrong_iss)),
    )
    .await;
    assert_eq!(refused(&a, 401), "the token's issuer is not accepted");
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", format!("Basic {good}")),
    )
    .await;
    refused(&a, 401);
    assert_eq!(up.count(), 2, "no refused request reached the upstream");

    // A refusal keeps the connection usable (keep-alive): the next request goes through.
    let a = fetch(
        c.get(gw.url("/api/z"))
            .header("Authorization", bearer(&good)),
    )
    .await;
    assert_eq!(a.status, 200);

    // No token, nor any part of one, in the log (debug level for our crates).
    let log = gw.log();
    for token in [&good, &expired, &forged, &wrong_iss] {
        for part in token.split('.') {
            assert!(!log.contains(part), "a token part appears in the log");
        }
    }
    assert!(
        log.contains("validate-jwt refused"),
        "refusals are logged (without the token)"
    );
}

#[tokio::test]
async fn failed_status_and_query_source() {
    let up = Upstream::start("a");
    let inbound = format!(
        r#"        - validate-jwt: {{ keys: [ {{ alg: HS256, secret: "{SECRET}" }} ], query: access_token, failed_status: 403 }}
        - set-header: {{ name: X-User, value: "{{jwt.claim.sub}}" }}"#
    );
    let gw = Gateway::start(&config(&up.url(), &inbound));
    let c = client();
    let a = fetch(c.get(gw.url("/api/x"))).await;
    let detail = refused(&a, 403);
    assert_eq!(detail, "the request carries no bearer token");
    assert_eq!(a.json()["title"], "Forbidden");
    // The header is not where this policy looks.
    let good = hs256(&claims("carol"));
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&good)),
    )
    .await;
    refused(&a, 403);
    let a = fetch(c.get(gw.url(&format!("/api/x?access_token={good}&q=1")))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().header("x-user"), Some("carol"));
}

#[tokio::test]
async fn size_limits() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up.url(), &static_inbound("")));
    let c = client();
    // A token over 8 KiB: 401 from the policy.
    let mut big = claims("dave");
    big["pad"] = json!("x".repeat(9 * 1024));
    let big = hs256(&big);
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&big)),
    )
    .await;
    assert_eq!(refused(&a, 401), "the token is larger than 8192 bytes");
    // A header over the gateway's head limit (32 KiB): 431 from the core.
    let huge = format!("Bearer {}", "a".repeat(40 * 1024));
    let a = fetch(c.get(gw.url("/api/x")).header("Authorization", huge)).await;
    a.assert_problem(431);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn jwks_with_key_rotation() {
    let idp = Upstream::start("idp");
    idp.set_answer("application/json", &jwks(vec![jwk(EC_PRIVATE, "k1")]), None);
    let up = Upstream::start("a");
    let inbound = format!(
        r#"        - validate-jwt: {{ jwks_uri: "{}/jwks", audiences: ["api://e2e"] }}
        - set-header: {{ name: X-User, value: "{{jwt.claim.sub}}" }}"#,
        idp.url()
    );
    let gw = Gateway::start(&config(&up.url(), &inbound));
    let c = client();
    let token = |private: &str, kid: &str, sub: &str| {
        es256(
            private,
            kid,
            &json!({"sub": sub, "aud": "api://e2e", "exp": now() + 600}),
        )
    };

    let t1 = token(EC_PRIVATE, "k1", "erin");
    let a = fetch(c.get(gw.url("/api/x")).header("Authorization", bearer(&t1))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.expect_last().header("x-user"), Some("erin"));
    let first_fetch = Instant::now();
    assert_eq!(
        idp.count(),
        1,
        "fetched once, at start or on the first request"
    );
    assert_eq!(idp.expect_last().path(), "/jwks");
    let a = fetch(c.get(gw.url("/api/x"))).await;
    refused(&a, 401);

    // The provider rotates in k2. Past the 5 s refetch window, 20 concurrent requests
    // with the new kid make exactly one refetch and all pass.
    idp.set_answer(
        "application/json",
        &jwks(vec![jwk(EC_PRIVATE, "k1"), jwk(EC2_PRIVATE, "k2")]),
        None,
    );
    let t2 = token(EC2_PRIVATE, "k2", "frank");
    let wait = Duration::from_millis(5500).saturating_sub(first_fetch.elapsed());
    tokio::time::sleep(wait).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let url = gw.url("/api/rotated");
            let auth = bearer(&t2);
            tokio::spawn(async move { fetch(c.get(url).header("Authorization", auth)).await })
        })
        .collect();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert_eq!(idp.count(), 2, "one refetch for 20 requests");
    // Old tokens still pass; a kid nobody has is refused without a new fetch.
    let a = fetch(c.get(gw.url("/api/x")).header("Authorization", bearer(&t1))).await;
    assert_eq!(a.status, 200);
    let t3 = token(EC2_PRIVATE, "k3", "gina");
    let a = fetch(c.get(gw.url("/api/x")).header("Authorization", bearer(&t3))).await;
    assert_eq!(refused(&a, 401), "no key matches the token's key id");
    assert_eq!(idp.count(), 2);
    // Wrong audience.
    let t4 = es256(
        EC_PRIVATE,
        "k1",
        &json!({"sub": "h", "aud": "api://other", "exp": now() + 60}),
    );
    let a = fetch(c.get(gw.url("/api/x")).header("Authorization", bearer(&t4))).await;
    assert_eq!(refused(&a, 401), "the token's audience is not accepted");
}

#[tokio::test]
async fn jwks_provider_down_at_start() {
    let idp = Upstream::start("idp");
    idp.set_status(503);
    idp.set_answer("application/json", b"{}", None);
    let up = Upstream::start("a");
    let inbound = format!(
        r#"        - validate-jwt: {{ jwks_uri: "{}/jwks" }}"#,
        idp.url()
    );
    let gw = Gateway::start(&config(&up.url(), &inbound));
    let c = client();
    let t1 = es256(EC_PRIVATE, "k1", &json!({"sub": "x", "exp": now() + 600}));
    let a = fetch(c.get(gw.url("/api/x")).header("Authorization", bearer(&t1))).await;
    assert_eq!(
        refused(&a, 401),
        "no signing key is available to verify the token"
    );
    // The provider recovers: a retry (backoff) or the next refetch brings the keys.
    idp.set_answer("application/json", &jwks(vec![jwk(EC_PRIVATE, "k1")]), None);
    idp.set_status(200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut status = 0;
    while Instant::now() < deadline {
        let a = fetch(c.get(gw.url("/api/x")).header("Authorization", bearer(&t1))).await;
        status = a.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
    assert!(
        gw.log().contains("JWKS fetch failed"),
        "failures are logged"
    );
}

#[tokio::test]
async fn claims_as_a_rate_limit_key() {
    let up = Upstream::start("a");
    let inbound = format!(
        r#"        - validate-jwt: {{ keys: [ {{ alg: HS256, secret: "{SECRET}" }} ] }}
        - rate-limit-by-key: {{ calls: 2, renewal_period: 60s, counter_key: "{{jwt.claim.sub}}" }}"#
    );
    let gw = Gateway::start(&config(&up.url(), &inbound));
    let c = client();
    let alice = hs256(&claims("alice"));
    let bob = hs256(&claims("bob"));
    for _ in 0..2 {
        let a = fetch(
            c.get(gw.url("/api/x"))
                .header("Authorization", bearer(&alice)),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&alice)),
    )
    .await;
    a.assert_problem(429);
    // Another subject has its own counter.
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&bob)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

/// `clock_skew` is at most a day: a longer one (here 60 years) is refused by `PUT /config`
/// with its path and the maximum, and the live config keeps serving. It used to be
/// accepted and then made every request panic in jsonwebtoken (`now - leeway` overflowed).
/// A skew of exactly one day works.
#[tokio::test]
async fn clock_skew_is_bounded() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up.url(), &static_inbound(", clock_skew: 1d")));
    let c = client();
    let good = hs256(&claims("alice"));
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&good)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());

    let admin = gw.admin();
    let live = admin.live_revision().await;
    let a = admin
        .put_yaml(
            "/config",
            &config(&up.url(), &static_inbound(", clock_skew: 21900d")),
        )
        .await;
    let doc = assert_admin_problem(&a, 422);
    let errors = doc["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{doc}");
    assert_eq!(
        errors[0]["path"], "apis[0].policies.inbound[0].validate-jwt.clock_skew",
        "{doc}"
    );
    assert_eq!(
        errors[0]["message"], "`21900d` is too long: the maximum is 1d (86400 seconds)",
        "{doc}"
    );
    assert!(errors[0]["line"].as_u64().is_some(), "{doc}");
    assert_eq!(admin.live_revision().await, live);
    let a = fetch(
        c.get(gw.url("/api/x"))
            .header("Authorization", bearer(&good)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
}
