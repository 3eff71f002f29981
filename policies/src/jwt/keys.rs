//! Verification keys: static keys from the policy file and keys taken from a JWKS document.
//!
//! A key carries the algorithms it may verify. That rule comes from the key, never from a
//! token: a static key verifies exactly its configured `alg`; a JWKS key verifies its `alg`
//! member when it has one (and that `alg` must agree with its `kty`/`crv`), otherwise the
//! algorithms its type allows (RSA: RS*/PS*; EC P-256: ES256; EC P-384: ES384; OKP Ed25519:
//! EdDSA). Symmetric (`oct`) keys from a published JWKS are ignored: a shared secret has no
//! business in a public document, and accepting one would let anyone who can read it sign.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::str::FromStr;
use tollgate_config::model::kinds::JwtKey;

/// Which token algorithms a key may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlgRule {
    /// Exactly this one.
    Exact(Algorithm),
    /// Any RSA algorithm (RS256/384/512, PS256/384/512): a JWKS RSA key without `alg`.
    AnyRsa,
}

/// One key that can verify signatures.
#[derive(Debug)]
pub(crate) struct VerifyKey {
    /// Key id (`kid`) when the key has one.
    pub(crate) kid: Option<String>,
    /// Algorithms it may verify.
    pub(crate) rule: AlgRule,
    /// The key itself (its `Debug` never shows key material).
    pub(crate) key: DecodingKey,
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        match self.rule {
            AlgRule::Exact(a) => a == alg,
            AlgRule::AnyRsa => alg.family() == AlgorithmFamily::Rsa,
        }
    }

    /// Whether this key is a candidate for a token with key id `kid`: a key without a `kid`
    /// matches every token; a key with one matches tokens naming it, and tokens naming none.
    pub(crate) fn matches_kid(&self, kid: Option<&str>) -> bool {
        match (&self.kid, kid) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        }
    }
}

/// Parse a static key of the policy file. Errors are meant for the operator's log.
pub(crate) fn static_key(k: &JwtKey) -> Result<VerifyKey, String> {
    let alg =
        Algorithm::from_str(&k.alg).map_err(|_| format!("unsupported algorithm `{}`", k.alg))?;
    let key = match alg.family() {
        AlgorithmFamily::Hmac => {
            let secret = k
                .secret
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{} needs a non-empty `secret`", k.alg))?;
            DecodingKey::from_secret(secret.as_bytes())
        }
        family => {
            let pem = k
                .pem
                .as_deref()
                .ok_or_else(|| format!("{} needs a `pem` public key", k.alg))?;
            if pem.contains("PRIVATE KEY") {
                return Err("`pem` holds a private key: give the public key".to_owned());
            }
            let parsed = match family {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_ed_pem(pem.as_bytes()),
            };
            let key = parsed.map_err(|e| format!("`pem` is not a {} public key: {e}", k.alg))?;
            if family == AlgorithmFamily::Ec && !ec_point_fits(alg, key.as_bytes()) {
                return Err(format!(
                    "`pem` is an EC key on the wrong curve for {}",
                    k.alg
                ));
            }
            key
        }
    };
    Ok(VerifyKey {
        kid: k.kid.clone(),
        rule: AlgRule::Exact(alg),
        key,
    })
}

/// Whether a SEC1 point (uncompressed or compressed) has the size of `alg`'s curve.
fn ec_point_fits(alg: Algorithm, point: &[u8]) -> bool {
    match alg {
        Algorithm::ES256 => matches!(point.len(), 33 | 65),
        Algorithm::ES384 => matches!(point.len(), 49 | 97),
        _ => false,
    }
}

/// Turn a JWKS key into a verification key; `Err` says why it is skipped.
pub(crate) fn jwk_key(jwk: &Jwk) -> Result<VerifyKey, &'static str> {
    let common = &jwk.common;
    if let Some(usage) = &common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return Err("`use` is not `sig`");
        }
    }
    if let Some(ops) = &common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("`key_ops` does not allow `verify`");
        }
    }
    // What the key type allows.
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgRule::AnyRsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => AlgRule::Exact(Algorithm::ES256),
            EllipticCurve::P384 => AlgRule::Exact(Algorithm::ES384),
            _ => return Err("unsupported curve"),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => AlgRule::Exact(Algorithm::EdDSA),
            _ => return Err("unsupported curve"),
        },
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are not taken from a JWKS"),
    };
    // The `alg` member, when present, narrows it and must agree with the type.
    let rule = match common.key_algorithm {
        None => by_type,
        Some(ka) => {
            let alg = key_algorithm(ka).ok_or("unsupported `alg`")?;
            let fits = match by_type {
                AlgRule::Exact(a) => a == alg,
                AlgRule::AnyRsa => alg.family() == AlgorithmFamily::Rsa,
            };
            if !fits {
                return Err("`alg` does not match the key type");
            }
            AlgRule::Exact(alg)
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "malformed key parameters")?;
    Ok(VerifyKey {
        kid: common.key_id.clone(),
        rule,
        key,
    })
}

/// A JWK `alg` as a signature algorithm (`None` for encryption or unknown algorithms).
fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::RSA1_5
        | KeyAlgorithm::RSA_OAEP
        | KeyAlgorithm::RSA_OAEP_256
        | KeyAlgorithm::UNKNOWN_ALGORITHM => return None,
    })
}

/// The keys of one JWKS document, as usable verification keys.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    /// Usable keys, in document order.
    pub(crate) keys: Vec<VerifyKey>,
    /// Keys of the document that were skipped (unsupported or not for signatures).
    pub(crate) skipped: usize,
}

/// Most keys taken from one JWKS document (real ones hold a handful).
pub(crate) const MAX_JWKS_KEYS: usize = 64;

/// Parse a JWKS document: every key that parses and may verify signatures, at most
/// [`MAX_JWKS_KEYS`]. A key that does not parse is skipped, not fatal: one exotic key must
/// not take down the others.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut set = KeySet::default();
    for raw in doc.keys {
        if set.keys.len() >= MAX_JWKS_KEYS {
            set.skipped += 1;
            continue;
        }
        match serde_json::from_value::<Jwk>(raw)
            .map_err(|_| "unparsable key")
            .and_then(|jwk| jwk_key(&jwk))
        {
            Ok(k) => set.keys.push(k),
            Err(_) => set.skipped += 1,
        }
    }
    Ok(set)
}
