//! The verified-token cache: a repeated token skips the signature check.
//!
//! Keyed by the SHA-256 of the token (the token itself is never stored), bounded in bytes
//! (each entry weighs about the token's length plus its claims), and each entry expires at
//! the token's `exp`, and at the latest [`JwtOptions::max_cache_ttl`](super::JwtOptions)
//! after it was verified, so a key removed from a JWKS stops being honoured for cached tokens
//! within that time. A hit past `exp` is a miss: the full check runs again and decides (with
//! the clock skew), so the cache never stretches a token's validity.

use moka::sync::Cache;
use moka::Expiry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SHA-256 of a token.
pub(crate) type TokenHash = [u8; 32];

/// Hash a token for the cache.
pub(crate) fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// What a cached entry holds.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The verified claims.
    pub(crate) claims: Map<String, Value>,
    /// The token's `exp` (seconds since the epoch).
    pub(crate) exp: u64,
    /// How long the entry lives from its insertion.
    ttl: Duration,
    /// Approximate size in bytes (the cache's weight).
    weight: u32,
}

/// Entries expire at their own `ttl`.
struct ByTtl;

impl Expiry<TokenHash, Arc<Cached>> for ByTtl {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Arc<Cached>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A bounded cache of verified tokens.
pub(crate) struct TokenCache {
    inner: Cache<TokenHash, Arc<Cached>>,
    max_ttl: Duration,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.inner.entry_count())
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl TokenCache {
    /// A cache of at most `max_bytes` (approximately), entries living at most `max_ttl`.
    pub(crate) fn new(max_bytes: u64, max_ttl: Duration) -> TokenCache {
        TokenCache {
            inner: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_k: &TokenHash, v: &Arc<Cached>| v.weight)
                .expire_after(ByTtl)
                .build(),
            max_ttl,
        }
    }

    /// The cached claims of a token that is not expired at `now` (seconds since the epoch).
    pub(crate) fn get(&self, key: &TokenHash, now: u64) -> Option<Arc<Cached>> {
        let hit = self.inner.get(key)?;
        if now < hit.exp {
            Some(hit)
        } else {
            self.inner.invalidate(key);
            None
        }
    }

    /// Remember a verified token; tokens already expired at `now` are not kept.
    pub(crate) fn insert(
        &self,
        key: TokenHash,
        token_len: usize,
        claims: Map<String, Value>,
        exp: u64,
        now: u64,
    ) {
        if exp <= now {
            return;
        }
        let ttl = Duration::from_secs(exp - now).min(self.max_ttl);
        // The claims are decoded from the token's payload: about its length again.
        let weight = u32::try_from(token_len.saturating_mul(2) + 128).unwrap_or(u32::MAX);
        self.inner.insert(
            key,
            Arc::new(Cached {
                claims,
                exp,
                ttl,
                weight,
            }),
        );
    }

    /// Entries in the cache (approximate: maintenance runs lazily).
    pub(crate) fn len(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }
}
