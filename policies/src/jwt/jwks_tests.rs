//! JWKS life cycle against a real HTTP server (axum on an ephemeral port): first fetch,
//! `kid` rotation with a single-flight refetch, the refetch rate limit, failures keeping the
//! last good set, `Cache-Control` within bounds, OpenID discovery, and the policy's
//! `Flow::Wait` round trip.

use super::tests::{
    claims, def, sign, EC256_A_PRIVATE, RSA_A_PRIVATE, RSA_B_PRIVATE, RSA_B_PUBLIC,
};
use super::*;
use crate::{Flow, RequestCtx};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the test identity provider serves, changeable while it runs.
#[derive(Debug)]
struct Served {
    jwks: Value,
    status: u16,
    cache_control: Option<String>,
    delay: Duration,
}

/// A small identity provider: `/jwks` and `/.well-known/openid-configuration`.
#[derive(Debug, Clone)]
struct Idp {
    served: Arc<Mutex<Served>>,
    jwks_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
    base: Arc<Mutex<String>>,
}

impl Idp {
    async fn start(jwks: Value) -> Idp {
        let idp = Idp {
            served: Arc::new(Mutex::new(Served {
                jwks,
                status: 200,
                cache_control: None,
                delay: Duration::ZERO,
            })),
            jwks_hits: Arc::default(),
            discovery_hits: Arc::default(),
            base: Arc::default(),
        };
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .with_state(idp.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *idp.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        idp
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.lock().unwrap())
    }

    fn hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    fn set(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.served.lock().unwrap());
    }
}

async fn serve_jwks(State(idp): State<Idp>) -> impl IntoResponse {
    idp.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let (body, status, cc, delay) = {
        let s = idp.served.lock().unwrap();
        (
            s.jwks.to_string(),
            s.status,
            s.cache_control.clone(),
            s.delay,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    if let Some(cc) = cc {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    resp
}

async fn serve_discovery(State(idp): State<Idp>) -> impl IntoResponse {
    idp.discovery_hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"issuer": "https://idp.test", "jwks_uri": idp.url("/jwks")}))
}

/// The public JWK of a private PEM, with `kid` (and its `alg`, unless `with_alg` is false).
fn jwk(alg: Algorithm, private: &str, kid: &str, with_alg: bool) -> Jwk {
    let mut k = Jwk::from_encoding_key(&super::tests::enc_key(alg, private), alg).unwrap();
    k.common.key_id = Some(kid.to_owned());
    if !with_alg {
        k.common.key_algorithm = None;
    }
    k
}

fn jwks(keys: Vec<Jwk>) -> Value {
    serde_json::to_value(JwkSet { keys }).unwrap()
}

/// Short timings so tests run in seconds.
fn fast() -> JwksConfig {
    JwksConfig {
        refetch_interval: Duration::from_millis(400),
        retry_min: Duration::from_millis(200),
        ..JwksConfig::default()
    }
}

fn verifier_for(reg: &JwtRegistry, v: Value) -> Arc<Verifier> {
    reg.verifier(&def(v), &JwtOptions::default())
}

/// Poll `check` every 20 ms for up to 5 s.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fetch_on_tick_then_tokens_verify() {
    let idp = Idp::start(jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)])).await;
    let reg = JwtRegistry::with_jwks_config(fast());
    let v = verifier_for(&reg, json!({"jwks_uri": idp.url("/jwks")}));
    // Building fetched nothing.
    assert_eq!(idp.hits(), 0);
    let token = sign(Algorithm::RS256, RSA_A_PRIVATE, Some("k1"), &claims());
    assert_eq!(v.verify(&token), Err(JwtError::NoKeys));
    reg.tick().await;
    assert!(eventually(|| v.sources()[0].key_count() == 1).await);
    assert_eq!(idp.hits(), 1);
    assert_eq!(v.verify(&token).unwrap()["sub"], "user-1");
    // Not due again: further ticks fetch nothing.
    for _ in 0..3 {
        reg.tick().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idp.hits(), 1);
    assert_eq!(
        v.sources()[0].refresh_interval(),
        Some(Duration::from_secs(600))
    );
    assert_eq!(reg.jwks().fetch_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_waits_for_the_first_fetch() {
    let idp = Idp::start(jwks(vec![jwk(
        Algorithm::ES256,
        EC256_A_PRIVATE,
        "ec",
        true,
    )]))
    .await;
    let registries = crate::Registries::default();
    let p = ValidateJwt::new(&def(json!({"jwks_uri": idp.url("/jwks")})), &registries.jwt);
    let token = sign(Algorithm::ES256, EC256_A_PRIVATE, Some("ec"), &claims());
    let mut r = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
    r.insert_header("Authorization", format!("Bearer {token}"))
        .unwrap();
    let mut ctx = RequestCtx::default();
    // First call: no keys yet, a fetch may help: wait.
    let Flow::Wait(pending) = p.inbound(&mut r, &mut ctx) else {
        panic!("expected a wait");
    };
    pending.await;
    // Second call decides.
    assert!(matches!(p.inbound(&mut r, &mut ctx), Flow::Continue));
    assert_eq!(ctx.claims.unwrap()["sub"], "user-1");
    assert_eq!(idp.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_rotation_refetches_once_under_concurrency() {
    let idp = Idp::start(jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)])).await;
    let reg = JwtRegistry::with_jwks_config(fast());
    let v = verifier_for(&reg, json!({"jwks_uri": idp.url("/jwks")}));
    let old = sign(Algorithm::RS256, RSA_A_PRIVATE, Some("k1"), &claims());
    assert!(v.verify_fetching(&old).await.is_ok());
    assert_eq!(idp.hits(), 1);
    // The provider rotates: k2 appears. Let the rate-limit window pass.
    idp.set(|s| {
        s.jwks = jwks(vec![
            jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true),
            jwk(Algorithm::RS256, RSA_B_PRIVATE, "k2", true),
        ]);
        s.delay = Duration::from_millis(300);
    });
    tokio::time::sleep(Duration::from_millis(450)).await;
    let new = sign(Algorithm::RS256, RSA_B_PRIVATE, Some("k2"), &claims());
    assert_eq!(v.verify(&new), Err(JwtError::UnknownKey));
    // 50 concurrent requests with the new kid: one fetch.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let v = v.clone();
            let t = new.clone();
            tokio::spawn(async move { v.verify_fetching(&t).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap()["sub"], "user-1");
    }
    assert_eq!(idp.hits(), 2, "one refetch for 50 requests");
    assert_eq!(v.sources()[0].key_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refetches_are_rate_limited() {
    let idp = Idp::start(jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)])).await;
    let reg = JwtRegistry::with_jwks_config(fast());
    let v = verifier_for(&reg, json!({"jwks_uri": idp.url("/jwks")}));
    // Signed beforehand: RSA signing is slow in a debug build.
    let tokens: Vec<String> = (0..40)
        .map(|i| {
            sign(
                Algorithm::RS256,
                RSA_A_PRIVATE,
                Some(&format!("random-{i}")),
                &claims(),
            )
        })
        .collect();
    reg.tick().await;
    assert!(eventually(|| v.sources()[0].key_count() == 1).await);
    assert_eq!(idp.hits(), 1);
    // Unknown kids right after a fetch (within the 400 ms window): refused at once, no
    // fetch.
    for t in &tokens[..20] {
        assert_eq!(v.verify_fetching(t).await, Err(JwtError::UnknownKey));
    }
    assert_eq!(idp.hits(), 1);
    // After the interval, one more fetch for the next unknown kid, then quiet again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for t in &tokens[20..] {
        assert_eq!(v.verify_fetching(t).await, Err(JwtError::UnknownKey));
    }
    assert_eq!(idp.hits(), 2);
    // A known kid never triggers a fetch.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let t = sign(Algorithm::RS256, RSA_A_PRIVATE, Some("k1"), &claims());
    assert!(v.verify_fetching(&t).await.is_ok());
    assert_eq!(idp.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_keeps_the_last_good_set() {
    let idp = Idp::start(jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)])).await;
    let reg = JwtRegistry::with_jwks_config(fast());
    let v = verifier_for(&reg, json!({"jwks_uri": idp.url("/jwks")}));
    let good = sign(Algorithm::RS256, RSA_A_PRIVATE, Some("k1"), &claims());
    assert!(v.verify_fetching(&good).await.is_ok());
    let source = v.sources()[0].clone();

    // The provider fails: 500.
    idp.set(|s| s.status = 500);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let unknown = sign(Algorithm::RS256, RSA_A_PRIVATE, Some("nope"), &claims());
    assert_eq!(v.verify_fetching(&unknown).await, Err(JwtError::UnknownKey));
    assert_eq!(idp.hits(), 2);
    assert_eq!(source.failure_count(), 1);
    assert_eq!(reg.jwks().failure_count(), 1);
    assert_eq!(source.key_count(), 1);
    assert!(v.verify(&good).is_ok(), "the last good set still verifies");

    // A document with no usable key (only a symmetric key) is a failure too.
    idp.set(|s| {
        s.status = 200;
        s.jwks = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "nope"}]});
    });
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(v.verify_fetching(&unknown).await, Err(JwtError::UnknownKey));
    assert_eq!(source.failure_count(), 2);
    assert!(v.verify(&good).is_ok());

    // Not JSON, and too big.
    idp.set(|s| s.jwks = json!("not a jwks"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let _ = v.verify_fetching(&unknown).await;
    assert_eq!(source.failure_count(), 3);
    idp.set(|s| s.jwks = json!({"keys": [], "pad": "x".repeat(2 << 20)}));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let _ = v.verify_fetching(&unknown).await;
    assert_eq!(source.failure_count(), 4);
    assert!(v.verify(&good).is_ok());

    // A failed scheduled fetch is retried after a backoff, not at every tick.
    assert!(!source.is_due(Instant::now()));
    // Recovery.
    idp.set(|s| s.jwks = jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while source.fetch_count() < 2 && Instant::now() < deadline {
        reg.tick().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(source.fetch_count(), 2, "a later tick retries and recovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_is_honoured_within_bounds() {
    let cases: &[(Option<&str>, u64)] = &[
        (Some("public, max-age=120"), 120),
        (Some("max-age=5"), 60),
        (Some("max-age=99999999"), 24 * 3600),
        (Some("no-store"), 60),
        (Some("max-age=\"300\", must-revalidate"), 300),
        (None, 600),
        (Some("max-age=abc"), 600),
    ];
    for (cc, expected) in cases {
        let idp = Idp::start(jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)])).await;
        idp.set(|s| s.cache_control = cc.map(str::to_owned));
        let reg = JwtRegistry::default();
        let v = verifier_for(&reg, json!({"jwks_uri": idp.url("/jwks")}));
        reg.tick().await;
        assert!(eventually(|| v.sources()[0].fetch_count() == 1).await);
        assert_eq!(
            v.sources()[0].refresh_interval(),
            Some(Duration::from_secs(*expected)),
            "{cc:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_drives_the_refresh() {
    let idp = Idp::start(jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)])).await;
    idp.set(|s| s.cache_control = Some("max-age=1".into()));
    let reg = JwtRegistry::with_jwks_config(JwksConfig {
        min_refresh: Duration::from_millis(500),
        ..fast()
    });
    let v = verifier_for(&reg, json!({"jwks_uri": idp.url("/jwks")}));
    reg.tick().await;
    assert!(eventually(|| v.sources()[0].fetch_count() == 1).await);
    // Before max-age: nothing; after it, the next tick refreshes.
    reg.tick().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(idp.hits(), 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    reg.tick().await;
    assert!(eventually(|| v.sources()[0].fetch_count() == 2).await);
    assert_eq!(idp.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_discovery_leads_to_the_jwks() {
    let idp = Idp::start(jwks(vec![jwk(
        Algorithm::ES256,
        EC256_A_PRIVATE,
        "ec1",
        false,
    )]))
    .await;
    let reg = JwtRegistry::with_jwks_config(fast());
    let v = verifier_for(
        &reg,
        json!({"openid_config": idp.url("/.well-known/openid-configuration"), "issuers": ["https://idp.test"]}),
    );
    assert_eq!(v.sources()[0].kind(), SourceKind::OpenIdConfig);
    let mut c = claims();
    c["iss"] = json!("https://idp.test");
    let token = sign(Algorithm::ES256, EC256_A_PRIVATE, Some("ec1"), &c);
    assert!(v.verify_fetching(&token).await.is_ok());
    assert_eq!(idp.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(idp.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_must_agree_with_the_token_alg() {
    // k1 is published for RS256 only; k2 has no `alg` (any RSA algorithm); an encryption
    // key and a symmetric key are ignored.
    let mut enc = jwk(Algorithm::RS256, RSA_B_PRIVATE, "enc", false);
    enc.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
    let mut set = jwks(vec![
        jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true),
        jwk(Algorithm::RS256, RSA_B_PRIVATE, "k2", false),
        enc,
    ]);
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "hs", "alg": "HS256"}));
    let idp = Idp::start(set).await;
    let reg = JwtRegistry::with_jwks_config(fast());
    let v = verifier_for(&reg, json!({"jwks_uri": idp.url("/jwks")}));
    let ok = sign(Algorithm::RS256, RSA_A_PRIVATE, Some("k1"), &claims());
    assert!(v.verify_fetching(&ok).await.is_ok());
    assert_eq!(v.sources()[0].key_count(), 2);
    // PS256 with k1's RSA key: k1 says RS256.
    let ps = sign(Algorithm::PS256, RSA_A_PRIVATE, Some("k1"), &claims());
    assert_eq!(v.verify(&ps), Err(JwtError::AlgorithmMismatch));
    // k2 has no alg: any RSA algorithm, but still not HS256 with its public key.
    let ps2 = sign(Algorithm::PS384, RSA_B_PRIVATE, Some("k2"), &claims());
    assert!(v.verify(&ps2).is_ok());
    let confused = sign(Algorithm::HS256, RSA_B_PUBLIC, Some("k2"), &claims());
    assert_eq!(v.verify(&confused), Err(JwtError::AlgorithmMismatch));
    // The published symmetric key is not a key.
    let hs = sign(
        Algorithm::HS256,
        "secret-secret-secret-secret",
        Some("hs"),
        &claims(),
    );
    assert_eq!(v.verify(&hs), Err(JwtError::UnknownKey));
    // The encryption key does not verify signatures.
    let by_enc = sign(Algorithm::RS256, RSA_B_PRIVATE, Some("enc"), &claims());
    assert_eq!(v.verify(&by_enc), Err(JwtError::UnknownKey));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outlive_config_swaps_and_go_when_unused() {
    let idp = Idp::start(jwks(vec![jwk(Algorithm::RS256, RSA_A_PRIVATE, "k1", true)])).await;
    let reg = JwtRegistry::with_jwks_config(fast());
    let d = def(json!({"jwks_uri": idp.url("/jwks")}));
    let first = ValidateJwt::new(&d, &reg);
    reg.tick().await;
    assert!(eventually(|| first.verifier().sources()[0].fetch_count() == 1).await);
    assert_eq!(idp.hits(), 1);
    // A new snapshot with another policy on the same address: no refetch, keys at hand.
    let d2 = def(json!({"jwks_uri": idp.url("/jwks"), "issuers": ["x"]}));
    let second = ValidateJwt::new(&d2, &reg);
    drop(first);
    reg.tick().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idp.hits(), 1);
    assert_eq!(second.verifier().sources()[0].key_count(), 1);
    assert_eq!(reg.jwks().sources().len(), 1);
    // Once no policy uses it, the next tick drops it.
    drop(second);
    reg.tick().await;
    assert!(reg.jwks().sources().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_fails_fast_and_is_counted() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reg = JwtRegistry::with_jwks_config(fast());
    let v = verifier_for(
        &reg,
        json!({"jwks_uri": format!("http://127.0.0.1:{port}/jwks")}),
    );
    let token = sign(Algorithm::RS256, RSA_A_PRIVATE, Some("k1"), &claims());
    assert_eq!(v.verify_fetching(&token).await, Err(JwtError::NoKeys));
    assert_eq!(reg.jwks().failure_count(), 1);
    // Within the rate-limit window: no new attempt.
    assert_eq!(v.verify_fetching(&token).await, Err(JwtError::NoKeys));
    assert_eq!(reg.jwks().failure_count(), 1);
}
