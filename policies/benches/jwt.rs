//! `validate-jwt` verifications per second (`cargo bench -p tollgate-policies --bench jwt`):
//! HS256, RS256 (2048-bit) and ES256 (P-256), each cold (cache off: every request checks
//! the signature and the claims) and cached (the same token again: a SHA-256 of the token
//! and a cache lookup). Each iteration is the policy's whole `inbound` on a request with
//! `Authorization: Bearer ...`, claims copied into the context included. Results are
//! reported in docs/benchmarks.md.

#![allow(missing_docs)] // criterion's macros make undocumented items

/// The same allocator as the `tollgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pingora_http::RequestHeader;
use serde_json::json;
use tollgate_policies::jwt::{JwtOptions, JwtRegistry, ValidateJwt};
use tollgate_policies::{Flow, Policy, RequestCtx};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const RSA_PRIVATE: &str = include_str!("../src/jwt/testdata/rsa_a_private.pem");
const RSA_PUBLIC: &str = include_str!("../src/jwt/testdata/rsa_a_public.pem");
const EC_PRIVATE: &str = include_str!("../src/jwt/testdata/ec256_a_private.pem");
const EC_PUBLIC: &str = include_str!("../src/jwt/testdata/ec256_a_public.pem");

fn bench(c: &mut Criterion) {
    let exp = jsonwebtoken::get_current_timestamp() + 24 * 3600;
    // A typical access token: a dozen claims.
    let claims = json!({
        "iss": "https://login.example.com/tenant/v2.0",
        "aud": "api://orders",
        "sub": "0b7c6a3e-4f5d-4c1b-9a2e-1d2c3b4a5f60",
        "exp": exp,
        "nbf": exp - 48 * 3600,
        "iat": exp - 48 * 3600,
        "scope": "orders.read orders.write",
        "roles": ["reader", "writer"],
        "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "azp": "c44b4083-3bb0-49c1-b47d-974e53cbdf3c",
        "ver": "2.0",
    });
    let cases = [
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET.as_bytes()),
            json!({"alg": "HS256", "secret": SECRET}),
        ),
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            json!({"alg": "RS256", "pem": RSA_PUBLIC}),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            json!({"alg": "ES256", "pem": EC_PUBLIC}),
        ),
    ];
    let mut group = c.benchmark_group("validate-jwt");
    group.throughput(Throughput::Elements(1));
    for (name, alg, signing, key) in cases {
        let token = encode(&Header::new(alg), &claims, &signing).unwrap();
        let def = serde_json::from_value(json!({
            "keys": [key],
            "issuers": ["https://login.example.com/tenant/v2.0"],
            "audiences": ["api://orders"],
            "required_claims": {"scope": ["orders.read"]},
        }))
        .unwrap();
        for (mode, cache_max_bytes) in [
            ("cold", 0),
            ("cached", JwtOptions::default().cache_max_bytes),
        ] {
            let options = JwtOptions {
                cache_max_bytes,
                ..JwtOptions::default()
            };
            let policy = ValidateJwt::with_options(&def, &JwtRegistry::default(), options);
            let mut req = RequestHeader::build("GET", b"/orders/42", None).unwrap();
            req.insert_header("Authorization", format!("Bearer {token}"))
                .unwrap();
            group.bench_function(format!("{name}/{mode}"), |b| {
                b.iter(|| {
                    let mut ctx = RequestCtx::default();
                    let flow = policy.inbound(&mut req, &mut ctx);
                    assert!(matches!(flow, Flow::Continue));
                    black_box(ctx.claims)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
