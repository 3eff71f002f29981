//! Unit tests of `validate-jwt` with static keys: every algorithm family, every known
//! attack, every claim rule, token sources, answers, the cache. Test keys are small fixed
//! PEMs in `testdata/` (made with `openssl genpkey`; test use only).

use super::*;
use crate::{Flow, RequestCtx, TemplateSource, Var};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::Duration;

pub(super) const RSA_A_PRIVATE: &str = include_str!("testdata/rsa_a_private.pem");
pub(super) const RSA_A_PUBLIC: &str = include_str!("testdata/rsa_a_public.pem");
pub(super) const RSA_B_PRIVATE: &str = include_str!("testdata/rsa_b_private.pem");
pub(super) const RSA_B_PUBLIC: &str = include_str!("testdata/rsa_b_public.pem");
pub(super) const EC256_A_PRIVATE: &str = include_str!("testdata/ec256_a_private.pem");
pub(super) const EC256_A_PUBLIC: &str = include_str!("testdata/ec256_a_public.pem");
pub(super) const EC256_B_PRIVATE: &str = include_str!("testdata/ec256_b_private.pem");
pub(super) const EC384_PRIVATE: &str = include_str!("testdata/ec384_private.pem");
pub(super) const EC384_PUBLIC: &str = include_str!("testdata/ec384_public.pem");
pub(super) const ED25519_PRIVATE: &str = include_str!("testdata/ed25519_private.pem");
pub(super) const ED25519_PUBLIC: &str = include_str!("testdata/ed25519_public.pem");
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

/// Seconds since the epoch.
pub(super) fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The signing key for `alg` from a private PEM (or an HMAC secret).
pub(super) fn enc_key(alg: Algorithm, material: &str) -> EncodingKey {
    use jsonwebtoken::AlgorithmFamily as F;
    match alg.family() {
        F::Hmac => EncodingKey::from_secret(material.as_bytes()),
        F::Rsa => EncodingKey::from_rsa_pem(material.as_bytes()).unwrap(),
        F::Ec => EncodingKey::from_ec_pem(material.as_bytes()).unwrap(),
        F::Ed => EncodingKey::from_ed_pem(material.as_bytes()).unwrap(),
    }
}

/// A token with this header and these claims, signed with `material`.
pub(super) fn sign_with(header: &Header, material: &str, claims: &Value) -> String {
    encode(header, claims, &enc_key(header.alg, material)).unwrap()
}

/// A token signed with `alg`, optional `kid`.
pub(super) fn sign(alg: Algorithm, material: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    sign_with(&h, material, claims)
}

/// Claims valid for an hour.
pub(super) fn claims() -> Value {
    json!({"sub": "user-1", "exp": now() + 3600, "iat": now()})
}

/// A definition from JSON (the YAML fields).
pub(super) fn def(v: Value) -> kinds::ValidateJwt {
    serde_json::from_value(v).unwrap()
}

fn policy(v: Value) -> ValidateJwt {
    ValidateJwt::new(&def(v), &JwtRegistry::default())
}

fn hs256() -> ValidateJwt {
    policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}]}))
}

/// A request with these headers.
fn req(headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

/// What the policy did with a request carrying `Authorization: Bearer token`.
fn run(p: &ValidateJwt, token: &str) -> Result<serde_json::Map<String, Value>, Answer> {
    run_req(
        p,
        &mut req(&[("Authorization", &format!("Bearer {token}"))]),
        None,
    )
}

fn run_req(
    p: &ValidateJwt,
    r: &mut RequestHeader,
    query: Option<&str>,
) -> Result<serde_json::Map<String, Value>, Answer> {
    let mut ctx = RequestCtx {
        upstream_query: query.map(str::to_owned),
        ..RequestCtx::default()
    };
    match p.inbound(r, &mut ctx) {
        Flow::Continue => Ok(ctx.claims.expect("claims filled")),
        Flow::Respond(a) => Err(a),
        Flow::Wait(_) => panic!("static keys never wait"),
    }
}

/// The `detail` of a refusal, checking the answer's shape on the way.
fn refusal(res: Result<serde_json::Map<String, Value>, Answer>) -> String {
    let a = res.expect_err("the token must be refused");
    assert_eq!(a.status, 401);
    assert!(a.is_error);
    let ct = a
        .headers
        .iter()
        .find(|(n, _)| n == http::header::CONTENT_TYPE);
    assert_eq!(ct.unwrap().1, "application/problem+json");
    let www = a
        .headers
        .iter()
        .find(|(n, _)| n == http::header::WWW_AUTHENTICATE)
        .expect("WWW-Authenticate")
        .1
        .to_str()
        .unwrap()
        .to_owned();
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
    let body: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(body["type"], "urn:tollgate:problem:invalid-token");
    body["detail"].as_str().unwrap().to_owned()
}

fn err(p: &ValidateJwt, token: &str) -> JwtError {
    p.verifier().verify(token).expect_err("must be refused")
}

#[test]
fn every_algorithm_with_static_keys() {
    let cases: &[(Algorithm, &str, Value)] = &[
        (
            Algorithm::HS256,
            SECRET,
            json!({"alg": "HS256", "secret": SECRET}),
        ),
        (
            Algorithm::HS384,
            SECRET,
            json!({"alg": "HS384", "secret": SECRET}),
        ),
        (
            Algorithm::HS512,
            SECRET,
            json!({"alg": "HS512", "secret": SECRET}),
        ),
        (
            Algorithm::RS256,
            RSA_A_PRIVATE,
            json!({"alg": "RS256", "pem": RSA_A_PUBLIC}),
        ),
        (
            Algorithm::RS384,
            RSA_A_PRIVATE,
            json!({"alg": "RS384", "pem": RSA_A_PUBLIC}),
        ),
        (
            Algorithm::RS512,
            RSA_A_PRIVATE,
            json!({"alg": "RS512", "pem": RSA_A_PUBLIC}),
        ),
        (
            Algorithm::PS256,
            RSA_A_PRIVATE,
            json!({"alg": "PS256", "pem": RSA_A_PUBLIC}),
        ),
        (
            Algorithm::PS384,
            RSA_A_PRIVATE,
            json!({"alg": "PS384", "pem": RSA_A_PUBLIC}),
        ),
        (
            Algorithm::PS512,
            RSA_A_PRIVATE,
            json!({"alg": "PS512", "pem": RSA_A_PUBLIC}),
        ),
        (
            Algorithm::ES256,
            EC256_A_PRIVATE,
            json!({"alg": "ES256", "pem": EC256_A_PUBLIC}),
        ),
        (
            Algorithm::ES384,
            EC384_PRIVATE,
            json!({"alg": "ES384", "pem": EC384_PUBLIC}),
        ),
        (
            Algorithm::EdDSA,
            ED25519_PRIVATE,
            json!({"alg": "EdDSA", "pem": ED25519_PUBLIC}),
        ),
    ];
    for (alg, private, key) in cases {
        let p = policy(json!({ "keys": [key] }));
        assert_eq!(p.verifier().broken_keys(), 0, "{alg:?}");
        let token = sign(*alg, private, None, &claims());
        let got = run(&p, &token).unwrap_or_else(|a| panic!("{alg:?}: {:?}", a.body));
        assert_eq!(got["sub"], "user-1", "{alg:?}");
        // The same family's other key does not verify it.
        let forged = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                sign(*alg, "another-secret-another-secret-xx", None, &claims())
            }
            Algorithm::ES256 => sign(*alg, EC256_B_PRIVATE, None, &claims()),
            Algorithm::ES384 | Algorithm::EdDSA => continue,
            _ => sign(*alg, RSA_B_PRIVATE, None, &claims()),
        };
        assert_eq!(err(&p, &forged), JwtError::BadSignature, "{alg:?}");
    }
}

/// `header.payload.` with a hand-written header (no signature).
fn unsigned(header: &Value, claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    )
}

#[test]
fn alg_none_is_refused() {
    let p = hs256();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = unsigned(&json!({"alg": alg, "typ": "JWT"}), &claims());
        assert_eq!(err(&p, &token), JwtError::UnsupportedAlgorithm, "{alg}");
        let detail = refusal(run(&p, &token));
        assert!(detail.contains("algorithm"), "{detail}");
    }
    // Also with a signature segment borrowed from a valid token.
    let valid = sign(Algorithm::HS256, SECRET, None, &claims());
    let sig = valid.rsplit('.').next().unwrap();
    let token = format!("{}{sig}", unsigned(&json!({"alg": "none"}), &claims()));
    assert_eq!(err(&p, &token), JwtError::UnsupportedAlgorithm);
    // An unknown algorithm, and no `alg` at all.
    let token = unsigned(&json!({"alg": "HS1"}), &claims());
    assert_eq!(err(&p, &token), JwtError::UnsupportedAlgorithm);
    let token = unsigned(&json!({"typ": "JWT"}), &claims());
    assert_eq!(err(&p, &token), JwtError::Malformed);
}

#[test]
fn hs_rs_confusion_is_refused() {
    // The RSA public key is public: an attacker signs HS256 with its PEM as the secret.
    let p = policy(json!({"keys": [{"alg": "RS256", "pem": RSA_A_PUBLIC}]}));
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let forged = sign(alg, RSA_A_PUBLIC, None, &claims());
        assert_eq!(err(&p, &forged), JwtError::AlgorithmMismatch, "{alg:?}");
        refusal(run(&p, &forged));
    }
    assert_eq!(p.verifier().signature_checks(), 0, "no key may even try");
    // Same with a kid that names the RSA key.
    let p = policy(json!({"keys": [{"alg": "RS256", "pem": RSA_A_PUBLIC, "kid": "rsa"}]}));
    let forged = sign(Algorithm::HS256, RSA_A_PUBLIC, Some("rsa"), &claims());
    assert_eq!(err(&p, &forged), JwtError::AlgorithmMismatch);
}

#[test]
fn the_key_decides_the_algorithm() {
    // An RS256 key does not verify PS256 (same RSA key, other algorithm).
    let p = policy(json!({"keys": [{"alg": "RS256", "pem": RSA_A_PUBLIC}]}));
    let token = sign(Algorithm::PS256, RSA_A_PRIVATE, None, &claims());
    assert_eq!(err(&p, &token), JwtError::AlgorithmMismatch);
    let token = sign(Algorithm::RS512, RSA_A_PRIVATE, None, &claims());
    assert_eq!(err(&p, &token), JwtError::AlgorithmMismatch);
    // An ES256 key does not verify ES384, nor HS256 signed with its PEM.
    let p = policy(json!({"keys": [{"alg": "ES256", "pem": EC256_A_PUBLIC}]}));
    let token = sign(Algorithm::ES384, EC384_PRIVATE, None, &claims());
    assert_eq!(err(&p, &token), JwtError::AlgorithmMismatch);
    let token = sign(Algorithm::HS256, EC256_A_PUBLIC, None, &claims());
    assert_eq!(err(&p, &token), JwtError::AlgorithmMismatch);
    // With two keys, each verifies its own algorithm only.
    let p = policy(json!({"keys": [
        {"alg": "HS256", "secret": SECRET},
        {"alg": "RS256", "pem": RSA_A_PUBLIC}
    ]}));
    assert!(p
        .verifier()
        .verify(&sign(Algorithm::HS256, SECRET, None, &claims()))
        .is_ok());
    assert!(p
        .verifier()
        .verify(&sign(Algorithm::RS256, RSA_A_PRIVATE, None, &claims()))
        .is_ok());
    let forged = sign(Algorithm::HS256, RSA_A_PUBLIC, None, &claims());
    assert_eq!(err(&p, &forged), JwtError::BadSignature);
}

#[test]
fn unusable_static_keys_verify_nothing() {
    // Not a PEM of that family, an EC key on the wrong curve, a private key.
    for key in [
        json!({"alg": "RS256", "pem": EC256_A_PUBLIC}),
        json!({"alg": "ES256", "pem": EC384_PUBLIC}),
        json!({"alg": "ES384", "pem": EC256_A_PUBLIC}),
        json!({"alg": "EdDSA", "pem": RSA_A_PUBLIC}),
        json!({"alg": "RS256", "pem": RSA_A_PRIVATE}),
        json!({"alg": "RS256", "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}),
    ] {
        let p = policy(json!({ "keys": [key.clone()] }));
        assert_eq!(p.verifier().broken_keys(), 1, "{key}");
        let token = sign(Algorithm::RS256, RSA_A_PRIVATE, None, &claims());
        assert!(run(&p, &token).is_err());
    }
}

#[test]
fn expiry_and_skew() {
    let p = hs256(); // default skew 30 s
    let t = |c: Value| sign(Algorithm::HS256, SECRET, None, &c);
    assert_eq!(err(&p, &t(json!({"exp": now() - 100}))), JwtError::Expired);
    assert!(
        p.verifier().verify(&t(json!({"exp": now() - 10}))).is_ok(),
        "within the skew"
    );
    let detail = refusal(run(&p, &t(json!({"exp": now() - 100}))));
    assert_eq!(detail, "the token has expired");
    // `exp` is required, and must be a number.
    assert_eq!(
        err(&p, &t(json!({"sub": "x"}))),
        JwtError::MissingClaim("exp".into())
    );
    // (jsonwebtoken counts a mistyped required `exp` as absent: refused either way.)
    let e = err(&p, &t(json!({"exp": (now() + 100).to_string()})));
    assert!(
        matches!(e, JwtError::MissingClaim(ref c) | JwtError::MalformedClaim(ref c) if c == "exp"),
        "{e:?}"
    );
    // Skew 0: no grace.
    let strict = policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "clock_skew": "0s"}));
    assert_eq!(
        err(&strict, &t(json!({"exp": now() - 10}))),
        JwtError::Expired
    );
    // A long skew.
    let lax = policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "clock_skew": "5m"}));
    assert!(lax
        .verifier()
        .verify(&t(json!({"exp": now() - 200})))
        .is_ok());
}

#[test]
fn nbf_and_iat() {
    let p = hs256();
    let t = |c: Value| sign(Algorithm::HS256, SECRET, None, &c);
    let exp = now() + 3600;
    assert_eq!(
        err(&p, &t(json!({"exp": exp, "nbf": now() + 100}))),
        JwtError::NotYetValid
    );
    assert!(p
        .verifier()
        .verify(&t(json!({"exp": exp, "nbf": now() + 10})))
        .is_ok());
    assert_eq!(
        err(&p, &t(json!({"exp": exp, "nbf": "soon"}))),
        JwtError::MalformedClaim("nbf".into())
    );
    assert_eq!(
        err(&p, &t(json!({"exp": exp, "iat": now() + 100}))),
        JwtError::IssuedInFuture
    );
    assert!(p
        .verifier()
        .verify(&t(json!({"exp": exp, "iat": now() + 10})))
        .is_ok());
    assert_eq!(
        err(&p, &t(json!({"exp": exp, "iat": "yesterday"}))),
        JwtError::MalformedClaim("iat".into())
    );
    let strict = policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "clock_skew": 0}));
    assert_eq!(
        err(&strict, &t(json!({"exp": exp, "nbf": now() + 5}))),
        JwtError::NotYetValid
    );
    assert_eq!(
        err(&strict, &t(json!({"exp": exp, "iat": now() + 5}))),
        JwtError::IssuedInFuture
    );
}

#[test]
fn issuers() {
    let p = policy(json!({
        "keys": [{"alg": "HS256", "secret": SECRET}],
        "issuers": ["https://idp.example", "https://other.example"]
    }));
    let t = |iss: Value| {
        let mut c = claims();
        if !iss.is_null() {
            c["iss"] = iss;
        }
        sign(Algorithm::HS256, SECRET, None, &c)
    };
    assert!(p
        .verifier()
        .verify(&t(json!("https://other.example")))
        .is_ok());
    assert_eq!(
        err(&p, &t(json!("https://evil.example"))),
        JwtError::WrongIssuer
    );
    assert_eq!(
        err(&p, &t(Value::Null)),
        JwtError::MissingClaim("iss".into())
    );
    // An array issuer is not an issuer.
    assert_eq!(
        err(&p, &t(json!(["https://idp.example"]))),
        JwtError::WrongIssuer
    );
    assert_eq!(
        refusal(run(&p, &t(json!("https://evil.example")))),
        "the token's issuer is not accepted"
    );
}

#[test]
fn audiences() {
    let p = policy(json!({
        "keys": [{"alg": "HS256", "secret": SECRET}],
        "audiences": ["api://orders"]
    }));
    let t = |aud: Value| {
        let mut c = claims();
        if !aud.is_null() {
            c["aud"] = aud;
        }
        sign(Algorithm::HS256, SECRET, None, &c)
    };
    assert!(p.verifier().verify(&t(json!("api://orders"))).is_ok());
    assert!(p
        .verifier()
        .verify(&t(json!(["api://other", "api://orders"])))
        .is_ok());
    assert_eq!(err(&p, &t(json!("api://other"))), JwtError::WrongAudience);
    assert_eq!(err(&p, &t(json!(["api://other"]))), JwtError::WrongAudience);
    // A token without `aud` fails when audiences are configured.
    assert_eq!(
        err(&p, &t(Value::Null)),
        JwtError::MissingClaim("aud".into())
    );
    // Without configured audiences, `aud` is not checked.
    assert!(hs256()
        .verifier()
        .verify(&t(json!("api://anything")))
        .is_ok());
}

#[test]
fn required_claims_by_name_and_by_value() {
    let names = policy(json!({
        "keys": [{"alg": "HS256", "secret": SECRET}],
        "required_claims": ["sub", "tenant"]
    }));
    let t = |extra: Value| {
        let mut c = claims();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        sign(Algorithm::HS256, SECRET, None, &c)
    };
    assert!(names.verifier().verify(&t(json!({"tenant": "t1"}))).is_ok());
    assert_eq!(
        err(&names, &t(json!({}))),
        JwtError::MissingClaim("tenant".into())
    );
    assert_eq!(
        err(&names, &t(json!({"tenant": null}))),
        JwtError::MissingClaim("tenant".into())
    );
    assert_eq!(
        refusal(run(&names, &t(json!({})))),
        "the token has no `tenant` claim"
    );

    let values = policy(json!({
        "keys": [{"alg": "HS256", "secret": SECRET}],
        "required_claims": {"role": ["admin", "owner"], "scope": ["orders.write"], "level": ["3"]}
    }));
    let ok = json!({"role": "admin", "scope": "orders.read orders.write", "level": 3});
    assert!(values.verifier().verify(&t(ok.clone())).is_ok());
    let mut arr = ok.clone();
    arr["role"] = json!(["user", "owner"]);
    assert!(values.verifier().verify(&t(arr)).is_ok());
    let mut wrong = ok.clone();
    wrong["role"] = json!("user");
    assert_eq!(
        err(&values, &t(wrong)),
        JwtError::ClaimNotAllowed("role".into())
    );
    let mut wrong = ok.clone();
    wrong["scope"] = json!("orders.read");
    assert_eq!(
        err(&values, &t(wrong)),
        JwtError::ClaimNotAllowed("scope".into())
    );
    let mut wrong = ok.clone();
    wrong["level"] = json!(2);
    assert_eq!(
        err(&values, &t(wrong)),
        JwtError::ClaimNotAllowed("level".into())
    );
    let mut missing = ok.clone();
    missing.as_object_mut().unwrap().remove("role");
    assert_eq!(
        err(&values, &t(missing)),
        JwtError::MissingClaim("role".into())
    );
    // An object is never an allowed value.
    let mut obj = ok;
    obj["role"] = json!({"admin": true});
    assert_eq!(
        err(&values, &t(obj)),
        JwtError::ClaimNotAllowed("role".into())
    );
}

#[test]
fn crit_is_refused() {
    let p = hs256();
    let mut h = Header::new(Algorithm::HS256);
    h.crit = Some(vec!["exp".into()]);
    let token = sign_with(&h, SECRET, &claims());
    assert_eq!(err(&p, &token), JwtError::UnsupportedCrit);
    h.crit = Some(vec!["b64".into()]);
    let token = sign_with(&h, SECRET, &claims());
    assert_eq!(err(&p, &token), JwtError::UnsupportedCrit);
    // Even an empty list (which RFC 7515 forbids).
    h.crit = Some(vec![]);
    assert_eq!(
        err(&p, &sign_with(&h, SECRET, &claims())),
        JwtError::UnsupportedCrit
    );
    assert_eq!(p.verifier().signature_checks(), 0);
}

#[test]
fn jku_x5u_and_embedded_jwk_are_ignored() {
    let p = policy(json!({"keys": [{"alg": "ES256", "pem": EC256_A_PUBLIC}]}));
    // The attacker embeds their own public key and signs with its private half.
    let attacker = enc_key(Algorithm::ES256, EC256_B_PRIVATE);
    let mut h = Header::new(Algorithm::ES256);
    h.jwk = Some(Jwk::from_encoding_key(&attacker, Algorithm::ES256).unwrap());
    h.jku = Some("https://attacker.example/jwks.json".into());
    h.x5u = Some("https://attacker.example/cert.pem".into());
    let forged = sign_with(&h, EC256_B_PRIVATE, &claims());
    assert_eq!(err(&p, &forged), JwtError::BadSignature);
    refusal(run(&p, &forged));
    // The same headers on a token signed with the configured key: ignored, it verifies
    // (and nothing was fetched: the policy has no JWKS source).
    let genuine = sign_with(&h, EC256_A_PRIVATE, &claims());
    assert!(run(&p, &genuine).is_ok());
    assert!(p.verifier().sources().is_empty());
}

#[test]
fn static_key_ids() {
    let p = policy(json!({"keys": [
        {"alg": "HS256", "secret": SECRET, "kid": "k1"},
        {"alg": "HS256", "secret": "the-second-secret-is-long-enough!!", "kid": "k2"}
    ]}));
    assert!(p
        .verifier()
        .verify(&sign(Algorithm::HS256, SECRET, Some("k1"), &claims()))
        .is_ok());
    assert!(p
        .verifier()
        .verify(&sign(Algorithm::HS256, SECRET, None, &claims()))
        .is_ok());
    assert_eq!(
        err(&p, &sign(Algorithm::HS256, SECRET, Some("k2"), &claims())),
        JwtError::BadSignature
    );
    assert_eq!(
        err(&p, &sign(Algorithm::HS256, SECRET, Some("k3"), &claims())),
        JwtError::UnknownKey
    );
    // A key without a kid verifies tokens naming any kid.
    assert!(hs256()
        .verifier()
        .verify(&sign(Algorithm::HS256, SECRET, Some("zz"), &claims()))
        .is_ok());
}

#[test]
fn malformed_tokens() {
    let p = hs256();
    let valid = sign(Algorithm::HS256, SECRET, None, &claims());
    for bad in [
        "abc".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d.e".to_owned(),
        format!("{valid}.extra"),
        "!!!.@@@.###".to_owned(),
        valid.replacen('.', ".x", 1),
    ] {
        let e = err(&p, &bad);
        assert!(
            matches!(e, JwtError::Malformed | JwtError::BadSignature),
            "{bad}: {e:?}"
        );
    }
    // A tampered payload fails the signature.
    let mut parts: Vec<&str> = valid.split('.').collect();
    let other = sign(
        Algorithm::HS256,
        SECRET,
        None,
        &json!({"sub": "admin", "exp": now() + 9}),
    );
    parts[1] = other.split('.').nth(1).unwrap();
    assert_eq!(err(&p, &parts.join(".")), JwtError::BadSignature);
}

#[test]
fn size_cap() {
    let p = hs256();
    let mut c = claims();
    c["pad"] = json!("x".repeat(9000));
    let big = sign(Algorithm::HS256, SECRET, None, &c);
    assert_eq!(err(&p, &big), JwtError::TooLarge(8192));
    let detail = refusal(run(&p, &big));
    assert_eq!(detail, "the token is larger than 8192 bytes");
    // Just under the cap is fine.
    let mut c = claims();
    c["pad"] = json!("x".repeat(5000));
    assert!(run(&p, &sign(Algorithm::HS256, SECRET, None, &c)).is_ok());
}

#[test]
fn header_sources() {
    let p = hs256();
    let token = sign(Algorithm::HS256, SECRET, None, &claims());
    for value in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER   {token}  "),
    ] {
        assert!(
            run_req(&p, &mut req(&[("Authorization", &value)]), None).is_ok(),
            "{value}"
        );
    }
    assert_eq!(
        refusal(run_req(&p, &mut req(&[]), None)),
        "the request carries no bearer token"
    );
    for value in [
        token.clone(),
        format!("Basic {token}"),
        "Bearer ".to_owned(),
        "Bearer".to_owned(),
    ] {
        let detail = refusal(run_req(&p, &mut req(&[("Authorization", &value)]), None));
        assert_eq!(detail, "the request carries no bearer token", "{value}");
    }
    let two = &mut req(&[
        ("Authorization", &format!("Bearer {token}")),
        ("Authorization", &format!("Bearer {token}")),
    ]);
    assert_eq!(
        refusal(run_req(&p, two, None)),
        "the request carries more than one token"
    );
    // A custom header: the Bearer prefix is optional.
    let custom = policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "header": "X-Token"}));
    assert!(run_req(&custom, &mut req(&[("X-Token", &token)]), None).is_ok());
    assert!(run_req(
        &custom,
        &mut req(&[("x-token", &format!("Bearer {token}"))]),
        None
    )
    .is_ok());
    assert!(run_req(
        &custom,
        &mut req(&[("Authorization", &format!("Bearer {token}"))]),
        None
    )
    .is_err());
}

#[test]
fn query_source() {
    let p = policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "query": "access_token"}));
    let token = sign(Algorithm::HS256, SECRET, None, &claims());
    let q = format!("a=1&access_token={token}");
    assert!(run_req(&p, &mut req(&[]), Some(&q)).is_ok());
    // The header is not looked at.
    let r = &mut req(&[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(
        refusal(run_req(&p, r, Some("a=1"))),
        "the request carries no bearer token"
    );
    assert!(run_req(&p, &mut req(&[]), Some("access_token=")).is_err());
    assert!(run_req(&p, &mut req(&[]), None).is_err());
}

#[test]
fn answers_never_echo_the_token() {
    let p = policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "failed_status": 403}));
    let forged = sign(
        Algorithm::HS256,
        "wrong-secret-wrong-secret-wrong-secret",
        None,
        &claims(),
    );
    let a = run(&p, &forged).unwrap_err();
    assert_eq!(a.status, 403);
    let body = String::from_utf8(a.body.to_vec()).unwrap();
    assert!(!body.contains(&forged));
    for part in forged.split('.') {
        assert!(!body.contains(part), "{body}");
    }
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["title"], "Forbidden");
    assert_eq!(json["detail"], "the token's signature is not valid");
    let www = a
        .headers
        .iter()
        .find(|(n, _)| n == http::header::WWW_AUTHENTICATE)
        .unwrap();
    assert_eq!(
        www.1,
        "Bearer error=\"invalid_token\", error_description=\"invalid signature\""
    );
}

#[test]
fn claims_reach_the_context_and_templates() {
    let p = hs256();
    let token = sign(
        Algorithm::HS256,
        SECRET,
        None,
        &json!({"sub": "alice", "tier": 3, "exp": now() + 60}),
    );
    let mut ctx = RequestCtx::default();
    let mut r = req(&[("Authorization", &format!("Bearer {token}"))]);
    assert!(matches!(p.inbound(&mut r, &mut ctx), Flow::Continue));
    let mut out = String::new();
    ctx.write_var(&Var::JwtClaim("sub".into()), &mut out);
    out.push('|');
    ctx.write_var(&Var::JwtClaim("tier".into()), &mut out);
    assert_eq!(out, "alice|3");
}

#[test]
fn cache_hit_skips_the_signature() {
    let p = policy(json!({"keys": [{"alg": "RS256", "pem": RSA_A_PUBLIC}]}));
    let v = p.verifier();
    let token = sign(Algorithm::RS256, RSA_A_PRIVATE, None, &claims());
    assert!(run(&p, &token).is_ok());
    assert_eq!((v.signature_checks(), v.cache_hits()), (1, 0));
    for _ in 0..5 {
        assert_eq!(run(&p, &token).unwrap()["sub"], "user-1");
    }
    assert_eq!((v.signature_checks(), v.cache_hits()), (1, 5));
    assert_eq!(v.cached_tokens(), 1);
    // Refused tokens are not cached.
    let forged = sign(Algorithm::RS256, RSA_B_PRIVATE, None, &claims());
    assert!(run(&p, &forged).is_err());
    assert!(run(&p, &forged).is_err());
    assert_eq!(v.signature_checks(), 3);
    // With the cache off, every verification checks the signature.
    let off = ValidateJwt::with_options(
        &def(json!({"keys": [{"alg": "RS256", "pem": RSA_A_PUBLIC}]})),
        &JwtRegistry::default(),
        JwtOptions {
            cache_max_bytes: 0,
            ..JwtOptions::default()
        },
    );
    assert!(run(&off, &token).is_ok());
    assert!(run(&off, &token).is_ok());
    assert_eq!(
        (
            off.verifier().signature_checks(),
            off.verifier().cache_hits()
        ),
        (2, 0)
    );
}

#[test]
fn cache_respects_exp() {
    let p = policy(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "clock_skew": 0}));
    let v = p.verifier();
    let exp = now() + 1;
    let token = sign(
        Algorithm::HS256,
        SECRET,
        None,
        &json!({"sub": "s", "exp": exp}),
    );
    assert!(run(&p, &token).is_ok());
    assert!(run(&p, &token).is_ok());
    assert_eq!((v.signature_checks(), v.cache_hits()), (1, 1));
    // Past exp (and the zero skew), the cached entry no longer answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while now() <= exp + 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(err(&p, &token), JwtError::Expired);
    assert_eq!(v.cache_hits(), 1);
    assert_eq!(v.signature_checks(), 2);
}

#[test]
fn identical_definitions_share_a_verifier() {
    let reg = JwtRegistry::default();
    let d = def(json!({"keys": [{"alg": "HS256", "secret": SECRET}]}));
    let a = ValidateJwt::new(&d, &reg);
    let b = ValidateJwt::new(&d, &reg);
    assert!(Arc::ptr_eq(a.verifier(), b.verifier()));
    let other = def(json!({"keys": [{"alg": "HS256", "secret": SECRET}], "issuers": ["i"]}));
    let c = ValidateJwt::new(&other, &reg);
    assert!(!Arc::ptr_eq(a.verifier(), c.verifier()));
    // A token verified through one is a cache hit through the other.
    let token = sign(Algorithm::HS256, SECRET, None, &claims());
    assert!(run(&a, &token).is_ok());
    assert!(run(&b, &token).is_ok());
    assert_eq!(b.verifier().cache_hits(), 1);
}

#[test]
fn debug_output_holds_no_secret() {
    let p = hs256();
    let text = format!("{p:?}");
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn a_static_key_that_does_not_parse_refuses_the_config() {
    let def: tollgate_config::model::kinds::ValidateJwt = serde_json::from_value(serde_json::json!({
        "keys": [ { "alg": "RS256", "pem": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n" } ]
    }))
    .unwrap();
    let err = super::build(&def, &crate::Registries::default()).unwrap_err();
    assert!(err.to_string().contains("keys[0] (RS256)"), "{err}");
}
