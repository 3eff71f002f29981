//! `validate-jwt`: bearer tokens checked against static keys, a JWKS or an OpenID discovery
//! document; the verified claims go to [`RequestCtx::claims`] for later policies and
//! templates (`{jwt.claim.sub}`).
//!
//! The pieces:
//!
//! - [`ValidateJwt`], the policy: finds the token (a header, `Authorization` with the
//!   `Bearer` scheme by default, or a query parameter), asks the [`Verifier`], fills the
//!   claims or answers `failed_status` (401) with problem+json and
//!   `WWW-Authenticate: Bearer error="invalid_token"`. When no key fits the token and a
//!   JWKS refetch may bring one, it answers [`Flow::Wait`] and decides on its second call
//!   with whatever keys exist then.
//! - [`Verifier`] (`verify.rs`): the checks, in order, and the verified-token cache
//!   (`cache.rs`).
//! - Keys (`keys.rs`): the configured key decides the algorithm, never the token.
//! - [`JwksRegistry`] (`jwks.rs`): JWKS documents fetched, cached, refreshed and refetched
//!   outside the config snapshots.
//! - [`JwtRegistry`]: the long-lived part that lives in [`crate::Registries`]: the JWKS
//!   sources, and the verifiers shared by identical definitions (so a config swap that
//!   keeps a `validate-jwt` keeps its warm cache).
//!
//! The token is never logged, stored or echoed: the cache keys on its SHA-256, answers and
//! logs name only the reason class.

mod cache;
mod jwks;
mod keys;
mod verify;

#[cfg(test)]
mod jwks_tests;
#[cfg(test)]
mod tests;

pub use jwks::{JwksConfig, JwksRegistry, KeySource, SourceKind};
pub use verify::{JwtError, JwtOptions, Verifier};

use crate::{Answer, Flow, Policy, RequestCtx};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tollgate_config::model::kinds;
use verify::Outcome;

/// The long-lived state of `validate-jwt`, kept in [`crate::Registries`] across config
/// swaps: JWKS sources (keyed by address) and verifiers (keyed by a hash of their
/// definition, held weakly: a verifier lives as long as a policy uses it).
#[derive(Debug, Default)]
pub struct JwtRegistry {
    jwks: JwksRegistry,
    verifiers: Mutex<HashMap<[u8; 32], Weak<Verifier>>>,
}

impl JwtRegistry {
    /// A registry whose JWKS sources use these timings (tests shorten them).
    pub fn with_jwks_config(config: JwksConfig) -> JwtRegistry {
        JwtRegistry {
            jwks: JwksRegistry::with_config(config),
            verifiers: Mutex::default(),
        }
    }

    /// The JWKS sources.
    pub fn jwks(&self) -> &JwksRegistry {
        &self.jwks
    }

    /// Maintenance, every 500 ms: start the JWKS fetches that are due.
    pub async fn tick(&self) {
        self.jwks.tick().await;
    }

    /// The verifier for `def` with `options`: the live one if an identical definition has
    /// one, else a new one. No I/O.
    pub fn verifier(&self, def: &kinds::ValidateJwt, options: &JwtOptions) -> Arc<Verifier> {
        let mut hasher = Sha256::new();
        hasher.update(serde_json::to_vec(def).unwrap_or_default());
        hasher.update(serde_json::to_vec(options).unwrap_or_default());
        let id: [u8; 32] = hasher.finalize().into();
        let mut map = self.verifiers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = map.get(&id).and_then(Weak::upgrade) {
            return live;
        }
        map.retain(|_, v| v.strong_count() > 0);
        let verifier = Arc::new(Verifier::new(def, options.clone(), &self.jwks));
        map.insert(id, Arc::downgrade(&verifier));
        verifier
    }
}

/// Where the token is.
#[derive(Debug)]
enum TokenSource {
    /// A header; with `bearer`, its value must use the `Bearer` scheme (the `Authorization`
    /// header); otherwise a `Bearer ` prefix is optional.
    Header { name: HeaderName, bearer: bool },
    /// A query parameter (percent-decoded).
    Query(String),
}

/// The `validate-jwt` policy.
#[derive(Debug)]
pub struct ValidateJwt {
    source: TokenSource,
    verifier: Arc<Verifier>,
    failed_status: StatusCode,
}

impl ValidateJwt {
    /// Build from a validated definition with the default options. No I/O: JWKS sources
    /// are only registered in `registry`.
    pub fn new(def: &kinds::ValidateJwt, registry: &JwtRegistry) -> ValidateJwt {
        ValidateJwt::with_options(def, registry, JwtOptions::default())
    }

    /// Build with explicit options (cache size, token cap).
    pub fn with_options(
        def: &kinds::ValidateJwt,
        registry: &JwtRegistry,
        options: JwtOptions,
    ) -> ValidateJwt {
        let source = match (&def.query, &def.header) {
            (Some(q), _) => TokenSource::Query(q.clone()),
            (None, Some(h)) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(name) => TokenSource::Header {
                    bearer: name == http::header::AUTHORIZATION,
                    name,
                },
                // Validation checked the name; fall back to the default rather than panic.
                Err(_) => TokenSource::Header {
                    name: http::header::AUTHORIZATION,
                    bearer: true,
                },
            },
            (None, None) => TokenSource::Header {
                name: http::header::AUTHORIZATION,
                bearer: true,
            },
        };
        ValidateJwt {
            source,
            verifier: registry.verifier(def, &options),
            failed_status: crate::status(def.failed_status.unwrap_or(401)),
        }
    }

    /// The verifier (counters, sources).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The token of this request, or why there is none.
    fn token<'r>(
        &self,
        req: &'r RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<Cow<'r, str>, JwtError> {
        match &self.source {
            TokenSource::Header { name, bearer } => {
                let mut values = req.headers.get_all(name).iter();
                let value = values.next().ok_or(JwtError::Missing)?;
                if values.next().is_some() {
                    return Err(JwtError::Ambiguous);
                }
                let max = self.verifier.max_token_bytes();
                // Over the cap (plus room for the scheme): refuse before any more work.
                if value.len() > max + 64 {
                    return Err(JwtError::TooLarge(max));
                }
                let text = value.to_str().map_err(|_| JwtError::Malformed)?.trim();
                let token = match split_bearer(text) {
                    Some(t) => t,
                    None if *bearer => return Err(JwtError::Missing),
                    None => text,
                };
                if token.is_empty() {
                    return Err(JwtError::Missing);
                }
                Ok(Cow::Borrowed(token))
            }
            TokenSource::Query(name) => match ctx.query_param(name) {
                Some(t) if !t.trim().is_empty() => Ok(Cow::Owned(t.trim().to_owned())),
                _ => Err(JwtError::Missing),
            },
        }
    }

    /// The refusal answer.
    fn refuse(&self, err: &JwtError, ctx: &RequestCtx) -> Flow {
        tracing::debug!(
            request_id = ctx.request_id.as_str(),
            reason = err.class(),
            "validate-jwt refused the request"
        );
        let title = self
            .failed_status
            .canonical_reason()
            .unwrap_or("Unauthorized");
        let challenge = format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            err.description()
        );
        let challenge = HeaderValue::try_from(challenge)
            .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
        Flow::Respond(
            Answer::problem(self.failed_status, "invalid-token", title, &err.to_string())
                .with_header(http::header::WWW_AUTHENTICATE, challenge),
        )
    }
}

/// The credentials of a `Bearer` value (scheme case-insensitive), if it is one.
fn split_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

impl Policy for ValidateJwt {
    /// Verifies the token and fills [`RequestCtx::claims`], or answers `failed_status`.
    /// May ask to wait once for a JWKS refetch (unknown `kid`, no keys yet).
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let outcome = match self.token(req, ctx) {
            Ok(token) => self.verifier.check(&token, true),
            Err(e) => Outcome::Invalid(e),
        };
        match outcome {
            Outcome::Valid(claims) => {
                ctx.claims = Some(claims);
                Flow::Continue
            }
            Outcome::Invalid(e) => self.refuse(&e, ctx),
            Outcome::NeedKeys(sources) => Flow::Wait(Box::pin(verify::refetch_all(sources))),
        }
    }
}

/// Build the policy (called by [`crate::build`]). A static key that does not parse (wrong
/// PEM type, wrong curve, a private key given as `pem`) refuses the whole config, so
/// `tollgate validate` and the admin API say so instead of a policy that verifies nothing.
pub(crate) fn build(
    def: &kinds::ValidateJwt,
    registries: &crate::Registries,
) -> Result<Arc<dyn Policy>, crate::BuildError> {
    for (i, k) in def.keys.iter().enumerate() {
        if let Err(reason) = keys::static_key(k) {
            return Err(crate::BuildError::Invalid(format!(
                "validate-jwt keys[{i}] ({}): {reason}",
                k.alg
            )));
        }
    }
    Ok(Arc::new(ValidateJwt::new(def, &registries.jwt)))
}
