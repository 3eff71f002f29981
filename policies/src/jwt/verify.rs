//! Token verification: header checks, key choice, signature and claims, the cache.
//!
//! Order of the checks, cheapest and most telling first:
//!
//! 1. size cap; then the verified-token cache (a hit still checks `exp`);
//! 2. the header, decoded by us: three segments, a known `alg` (`none` and anything
//!    unknown refused), a string `kid` if any, and no `crit` at all (we implement no
//!    extension, so any critical one is unknown: RFC 7515 §4.1.11). `jku`, `x5u`, `x5c` and
//!    an embedded `jwk` are never read: keys come from the configuration only;
//! 3. the candidate keys: configured keys and JWKS keys whose `kid` matches and whose own
//!    algorithm rule allows the token's `alg` (so an RSA public key is never used as an
//!    HMAC secret, whatever the token says);
//! 4. `jsonwebtoken::decode` with a [`Validation`] allowing exactly that algorithm, `exp`
//!    required, `nbf` checked, the clock skew as leeway, `iss`/`aud` required and checked
//!    when configured;
//! 5. our own checks: `iat` not in the future (beyond the skew), `iss` a string among the
//!    issuers, `required_claims`.

use super::cache::{token_hash, TokenCache};
use super::jwks::{JwksRegistry, KeySource, SourceKind};
use super::keys::{static_key, KeySet, VerifyKey};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_config::model::kinds::{RequiredClaims, ValidateJwt};

/// Why a token was refused. `Display` is the problem's `detail`: it names the reason class
/// (and, for claims, the configured claim name), never the token or a claim's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// No token where the policy looks for one.
    #[error("the request carries no bearer token")]
    Missing,
    /// The token header appears more than once.
    #[error("the request carries more than one token")]
    Ambiguous,
    /// The token is over the size cap (bytes).
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    /// Not a compact JWS with a decodable header and payload.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is `none` or not one we implement.
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// No configured key may verify the token's `alg`.
    #[error("the token's algorithm does not match the key")]
    AlgorithmMismatch,
    /// No key has the token's `kid`.
    #[error("no key matches the token's key id")]
    UnknownKey,
    /// No key is available yet (the JWKS could not be fetched).
    #[error("no signing key is available to verify the token")]
    NoKeys,
    /// The header has a `crit` member.
    #[error("the token has a critical header extension that is not supported")]
    UnsupportedCrit,
    /// The signature does not verify with any candidate key.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// `exp` is past (beyond the clock skew).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the clock skew).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// A required claim is absent.
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    /// A claim has the wrong type (`exp`, `nbf`, `iat` not numbers...).
    #[error("the token's `{0}` claim is malformed")]
    MalformedClaim(String),
    /// `iss` is not among the configured issuers.
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// No `aud` value is among the configured audiences.
    #[error("the token's audience is not accepted")]
    WrongAudience,
    /// A `required_claims` claim has none of the allowed values.
    #[error("the token's `{0}` claim has no allowed value")]
    ClaimNotAllowed(String),
}

impl JwtError {
    /// A short, stable name of the reason class (logs, metrics).
    pub fn class(&self) -> &'static str {
        match self {
            JwtError::Missing => "missing",
            JwtError::Ambiguous => "ambiguous",
            JwtError::TooLarge(_) => "too-large",
            JwtError::Malformed => "malformed",
            JwtError::UnsupportedAlgorithm => "unsupported-algorithm",
            JwtError::AlgorithmMismatch => "algorithm-mismatch",
            JwtError::UnknownKey => "unknown-key",
            JwtError::NoKeys => "no-keys",
            JwtError::UnsupportedCrit => "unsupported-crit",
            JwtError::BadSignature => "bad-signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not-yet-valid",
            JwtError::IssuedInFuture => "issued-in-future",
            JwtError::MissingClaim(_) => "missing-claim",
            JwtError::MalformedClaim(_) => "malformed-claim",
            JwtError::WrongIssuer => "wrong-issuer",
            JwtError::WrongAudience => "wrong-audience",
            JwtError::ClaimNotAllowed(_) => "claim-not-allowed",
        }
    }

    /// Text for `WWW-Authenticate`'s `error_description` (no names, nothing to quote).
    pub fn description(&self) -> &'static str {
        match self {
            JwtError::Missing => "no bearer token",
            JwtError::Ambiguous => "more than one token",
            JwtError::TooLarge(_) => "token too large",
            JwtError::Malformed => "malformed token",
            JwtError::UnsupportedAlgorithm | JwtError::AlgorithmMismatch => {
                "algorithm not accepted"
            }
            JwtError::UnknownKey | JwtError::NoKeys => "no matching key",
            JwtError::UnsupportedCrit => "unsupported critical header",
            JwtError::BadSignature => "invalid signature",
            JwtError::Expired => "the token expired",
            JwtError::NotYetValid => "the token is not valid yet",
            JwtError::IssuedInFuture => "issued in the future",
            JwtError::MissingClaim(_) | JwtError::MalformedClaim(_) => "missing or malformed claim",
            JwtError::WrongIssuer => "issuer not accepted",
            JwtError::WrongAudience => "audience not accepted",
            JwtError::ClaimNotAllowed(_) => "claim value not allowed",
        }
    }
}

/// Tunables of one verifier (defaults suit production; benches and tests change them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct JwtOptions {
    /// Largest token accepted, in bytes (8 KiB).
    pub max_token_bytes: usize,
    /// Size of the verified-token cache in bytes, approximately (16 MiB); 0 turns it off.
    pub cache_max_bytes: u64,
    /// Longest time a verified token stays cached, whatever its `exp` (5 min).
    pub max_cache_ttl: Duration,
}

impl Default for JwtOptions {
    fn default() -> Self {
        JwtOptions {
            max_token_bytes: 8 * 1024,
            cache_max_bytes: 16 << 20,
            max_cache_ttl: Duration::from_secs(300),
        }
    }
}

/// One `required_claims` rule.
#[derive(Debug)]
enum Required {
    /// The claim must be present (and not `null`).
    Present(String),
    /// The claim must have one of these values.
    OneOf(String, Vec<String>),
}

/// What a check decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Verified; here are the claims.
    Valid(Map<String, Value>),
    /// Refused.
    Invalid(JwtError),
    /// No key fits yet, and refetching these sources may bring one.
    NeedKeys(Vec<Arc<KeySource>>),
}

/// Algorithms in a fixed order: index of the per-algorithm [`Validation`].
const ALGS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn alg_index(alg: Algorithm) -> usize {
    ALGS.iter().position(|a| *a == alg).unwrap_or(0)
}

/// The verification half of `validate-jwt`: keys, rules, cache. Shared by every policy
/// instance with the same definition (see [`super::JwtRegistry`]).
#[derive(Debug)]
pub struct Verifier {
    static_keys: Vec<VerifyKey>,
    sources: Vec<Arc<KeySource>>,
    /// Static keys that could not be parsed (they verify nothing).
    broken_keys: usize,
    /// One per entry of [`ALGS`], each allowing exactly that algorithm.
    validations: Vec<Validation>,
    issuers: Vec<String>,
    required: Vec<Required>,
    skew: u64,
    options: JwtOptions,
    cache: Option<TokenCache>,
    signature_checks: AtomicU64,
    cache_hits: AtomicU64,
}

impl Verifier {
    /// Build from a validated definition; JWKS sources are registered in `jwks` (not
    /// fetched). Static keys that do not parse are logged and verify nothing.
    pub fn new(def: &ValidateJwt, options: JwtOptions, jwks: &JwksRegistry) -> Verifier {
        let mut static_keys = Vec::with_capacity(def.keys.len());
        let mut broken_keys = 0;
        for (i, k) in def.keys.iter().enumerate() {
            match static_key(k) {
                Ok(key) => static_keys.push(key),
                Err(reason) => {
                    broken_keys += 1;
                    tracing::error!(key = i, alg = %k.alg, %reason, "validate-jwt: a configured key is unusable; it verifies nothing");
                }
            }
        }
        let mut sources = Vec::new();
        if let Some(uri) = &def.jwks_uri {
            sources.push(jwks.register(SourceKind::Jwks, uri));
        }
        if let Some(uri) = &def.openid_config {
            sources.push(jwks.register(SourceKind::OpenIdConfig, uri));
        }
        let skew = def
            .clock_skew
            .as_ref()
            .and_then(|s| tollgate_config::duration::parse_duration(s).ok())
            .unwrap_or(Duration::from_secs(30))
            .as_secs();
        let validations = ALGS
            .iter()
            .map(|alg| validation(*alg, skew, &def.issuers, &def.audiences))
            .collect();
        let required = match &def.required_claims {
            None => Vec::new(),
            Some(RequiredClaims::Names(names)) => {
                names.iter().map(|n| Required::Present(n.clone())).collect()
            }
            Some(RequiredClaims::Values(map)) => map
                .iter()
                .map(|(n, v)| Required::OneOf(n.clone(), v.clone()))
                .collect(),
        };
        let cache = (options.cache_max_bytes > 0)
            .then(|| TokenCache::new(options.cache_max_bytes, options.max_cache_ttl));
        Verifier {
            static_keys,
            sources,
            broken_keys,
            validations,
            issuers: def.issuers.clone(),
            required,
            skew,
            options,
            cache,
            signature_checks: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }
    }

    /// Signature verifications attempted so far (cache hits make none).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// Tokens answered from the cache so far.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// Entries in the verified-token cache.
    pub fn cached_tokens(&self) -> u64 {
        self.cache.as_ref().map_or(0, TokenCache::len)
    }

    /// Configured keys that could not be parsed.
    pub fn broken_keys(&self) -> usize {
        self.broken_keys
    }

    /// The JWKS sources this verifier takes keys from.
    pub fn sources(&self) -> &[Arc<KeySource>] {
        &self.sources
    }

    /// The size cap on tokens.
    pub fn max_token_bytes(&self) -> usize {
        self.options.max_token_bytes
    }

    /// Verify `token` with the keys at hand now (never fetches).
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        match self.check(token, false) {
            Outcome::Valid(claims) => Ok(claims),
            Outcome::Invalid(e) => Err(e),
            Outcome::NeedKeys(_) => Err(JwtError::UnknownKey),
        }
    }

    /// Verify `token`, refetching JWKS documents first when no key fits and the rate
    /// limit allows it (what the policy does across its two calls).
    pub async fn verify_fetching(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        match self.check(token, true) {
            Outcome::NeedKeys(sources) => {
                refetch_all(sources).await;
                self.verify(token)
            }
            Outcome::Valid(claims) => Ok(claims),
            Outcome::Invalid(e) => Err(e),
        }
    }

    /// The whole check. With `may_wait`, a token no key fits yields [`Outcome::NeedKeys`]
    /// when a refetch may help; without, it is refused.
    pub(crate) fn check(&self, token: &str, may_wait: bool) -> Outcome {
        if token.len() > self.options.max_token_bytes {
            return Outcome::Invalid(JwtError::TooLarge(self.options.max_token_bytes));
        }
        let now = jsonwebtoken::get_current_timestamp();
        let hash = self.cache.as_ref().map(|_| token_hash(token));
        if let (Some(cache), Some(hash)) = (&self.cache, &hash) {
            if let Some(hit) = cache.get(hash, now) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Outcome::Valid(hit.claims.clone());
            }
        }
        let header = match parse_header(token) {
            Ok(h) => h,
            Err(e) => return Outcome::Invalid(e),
        };
        let alg = header.alg;
        let kid = header.kid.as_deref();

        // Candidate keys: the configuration decides what each key may verify.
        let sets: Vec<Arc<KeySet>> = self.sources.iter().filter_map(|s| s.keys()).collect();
        let mut any_key = false;
        let mut kid_known = false;
        let mut candidates: Vec<&VerifyKey> = Vec::new();
        for key in self
            .static_keys
            .iter()
            .chain(sets.iter().flat_map(|s| s.keys.iter()))
        {
            any_key = true;
            if !key.matches_kid(kid) {
                continue;
            }
            if kid.is_some() && key.kid.as_deref() == kid {
                kid_known = true;
            }
            if key.allows(alg) {
                candidates.push(key);
            }
        }
        if candidates.is_empty() {
            if may_wait && !kid_known {
                let now = Instant::now();
                let waiting: Vec<Arc<KeySource>> = self
                    .sources
                    .iter()
                    .filter(|s| s.may_wait(now))
                    .cloned()
                    .collect();
                if !waiting.is_empty() {
                    return Outcome::NeedKeys(waiting);
                }
            }
            return Outcome::Invalid(if kid_known {
                JwtError::AlgorithmMismatch
            } else if !any_key {
                JwtError::NoKeys
            } else if kid.is_some() {
                JwtError::UnknownKey
            } else {
                JwtError::AlgorithmMismatch
            });
        }

        let validation = &self.validations[alg_index(alg)];
        let mut claims = None;
        for key in candidates {
            self.signature_checks.fetch_add(1, Ordering::Relaxed);
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    // This key does not verify it: try the next candidate.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::Provider(_) => continue,
                    other => return Outcome::Invalid(map_error(other)),
                },
            }
        }
        let Some(claims) = claims else {
            return Outcome::Invalid(JwtError::BadSignature);
        };
        if let Err(e) = self.check_claims(&claims, now) {
            return Outcome::Invalid(e);
        }
        if let (Some(cache), Some(hash)) = (&self.cache, hash) {
            if let Some(exp) = claims.get("exp").and_then(numeric) {
                cache.insert(hash, token.len(), claims.clone(), exp, now);
            }
        }
        Outcome::Valid(claims)
    }

    /// The checks `jsonwebtoken` does not do.
    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<(), JwtError> {
        if let Some(iat) = claims.get("iat") {
            let iat = numeric(iat).ok_or_else(|| JwtError::MalformedClaim("iat".into()))?;
            if iat > now.saturating_add(self.skew) {
                return Err(JwtError::IssuedInFuture);
            }
        }
        if !self.issuers.is_empty() {
            // `jsonwebtoken` also accepts an array `iss`; a JWT's issuer is one string.
            match claims.get("iss") {
                Some(Value::String(iss)) if self.issuers.iter().any(|i| i == iss) => {}
                _ => return Err(JwtError::WrongIssuer),
            }
        }
        for rule in &self.required {
            match rule {
                Required::Present(name) => {
                    if claims.get(name).is_none_or(Value::is_null) {
                        return Err(JwtError::MissingClaim(name.clone()));
                    }
                }
                Required::OneOf(name, allowed) => {
                    let value = match claims.get(name) {
                        None | Some(Value::Null) => {
                            return Err(JwtError::MissingClaim(name.clone()))
                        }
                        Some(v) => v,
                    };
                    if !claim_allows(name, value, allowed) {
                        return Err(JwtError::ClaimNotAllowed(name.clone()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `value` (of claim `name`) has one of the `allowed` values: a string equal to one;
/// an array with at least one element that is; for `scope`/`scp` strings, one of the
/// space-separated scopes; numbers and booleans compare by their JSON text.
fn claim_allows(name: &str, value: &Value, allowed: &[String]) -> bool {
    let scalar = |v: &Value| match v {
        Value::String(s) => allowed.iter().any(|a| a == s),
        Value::Number(_) | Value::Bool(_) => {
            let text = v.to_string();
            allowed.contains(&text)
        }
        _ => false,
    };
    match value {
        Value::Array(items) => items.iter().any(scalar),
        Value::String(s) if name == "scope" || name == "scp" => s
            .split_ascii_whitespace()
            .any(|part| allowed.iter().any(|a| a == part)),
        other => scalar(other),
    }
}

/// A NumericDate claim as whole seconds (`None` if not a non-negative number).
fn numeric(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// A `Validation` allowing exactly `alg`, per the policy.
fn validation(alg: Algorithm, skew: u64, issuers: &[String], audiences: &[String]) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = skew;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.reject_tokens_expiring_in_less_than = 0;
    let mut required = vec!["exp"];
    if !issuers.is_empty() {
        v.set_issuer(issuers);
        required.push("iss");
    }
    if audiences.is_empty() {
        // Without configured audiences, `aud` is not checked (jsonwebtoken would refuse
        // every token that has one).
        v.validate_aud = false;
    } else {
        v.validate_aud = true;
        v.set_audience(audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// Errors of `jsonwebtoken::decode` after the signature verified (or before it started).
fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => JwtError::MalformedClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtError::AlgorithmMismatch,
        ErrorKind::InvalidAlgorithmName => JwtError::UnsupportedAlgorithm,
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        _ => JwtError::Malformed,
    }
}

/// What we read of a token's header.
#[derive(Debug)]
struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// Decode and check the header ourselves: `alg` known and not `none`, `kid` a string, no
/// `crit`. Other members (`jku`, `x5u`, `x5c`, `jwk`...) are ignored.
fn parse_header(token: &str) -> Result<Header, JwtError> {
    let mut parts = token.split('.');
    let (Some(head), Some(_payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| JwtError::Malformed)?;
    let map: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    if map.contains_key("crit") {
        return Err(JwtError::UnsupportedCrit);
    }
    let alg = match map.get("alg") {
        Some(Value::String(a)) => {
            Algorithm::from_str(a).map_err(|_| JwtError::UnsupportedAlgorithm)?
        }
        _ => return Err(JwtError::Malformed),
    };
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    Ok(Header { alg, kid })
}

/// Refetch `sources` (each in its own task, so a fetch outlives a caller that goes away)
/// and wait for all of them.
pub(crate) async fn refetch_all(sources: Vec<Arc<KeySource>>) {
    let tasks: Vec<_> = sources
        .into_iter()
        .map(|s| tokio::spawn(s.refetch()))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}
