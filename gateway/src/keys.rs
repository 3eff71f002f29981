//! Subscription keys: generation, hashing, and the in-memory key ring the proxy reads.
//!
//! Keys are 32 random bytes, URL-safe base64 without padding (43 characters). Only their
//! HMAC-SHA256 digests under a per-installation secret are stored. The proxy looks a key up
//! by its digest in an immutable map swapped as a whole (`ArcSwap`) on every change, so the
//! hot path takes no lock and does no store I/O; the digest found is compared again in
//! constant time.

use crate::{Subscription, SubscriptionLookup};
use arc_swap::ArcSwap;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A key digest.
pub type Digest = [u8; 32];

/// A new random key: 32 bytes from the OS generator, URL-safe base64 without padding.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 of `key` under `secret`.
pub fn digest(secret: &[u8; 32], key: &str) -> Digest {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(key.as_bytes());
    mac.finalize().into_bytes().into()
}

/// One subscription's entry in the ring.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// Digest of the primary key.
    pub primary: Digest,
    /// Digest of the secondary key.
    pub secondary: Digest,
    /// What the proxy needs to know.
    pub subscription: Subscription,
}

/// The proxy's view of every subscription key.
#[derive(Debug)]
pub struct KeyRing {
    secret: [u8; 32],
    map: ArcSwap<HashMap<Digest, Subscription>>,
}

impl KeyRing {
    /// An empty ring for keys hashed under `secret`.
    pub fn new(secret: [u8; 32]) -> KeyRing {
        KeyRing {
            secret,
            map: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// The digest of `key` under this installation's secret.
    pub fn digest(&self, key: &str) -> Digest {
        digest(&self.secret, key)
    }

    /// Replace the whole ring (after any subscription change).
    pub fn replace_all(&self, entries: impl IntoIterator<Item = KeyEntry>) {
        let mut map = HashMap::new();
        for e in entries {
            map.insert(e.primary, e.subscription.clone());
            map.insert(e.secondary, e.subscription);
        }
        self.map.store(Arc::new(map));
    }

    /// How many keys the ring holds (two per subscription).
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// True when the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SubscriptionLookup for KeyRing {
    fn lookup(&self, key: &str) -> Option<Subscription> {
        let d = self.digest(key);
        let map = self.map.load();
        let (stored, sub) = map.get_key_value(&d)?;
        bool::from(stored.ct_eq(&d)).then(|| sub.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SubscriptionScope, SubscriptionState};

    fn sub(id: &str) -> Subscription {
        Subscription {
            id: id.into(),
            state: SubscriptionState::Active,
            scope: SubscriptionScope::All,
        }
    }

    #[test]
    fn keys_are_long_random_and_url_safe() {
        let a = generate_key();
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, generate_key());
    }

    #[test]
    fn lookup_by_either_key_and_only_those() {
        let ring = KeyRing::new([7; 32]);
        let (p, s) = (generate_key(), generate_key());
        ring.replace_all([KeyEntry {
            primary: ring.digest(&p),
            secondary: ring.digest(&s),
            subscription: sub("one"),
        }]);
        assert_eq!(&*ring.lookup(&p).unwrap().id, "one");
        assert_eq!(&*ring.lookup(&s).unwrap().id, "one");
        assert!(ring.lookup(&generate_key()).is_none());
        assert!(ring.lookup("").is_none());
        // A different installation secret gives different digests.
        let other = KeyRing::new([8; 32]);
        assert_ne!(other.digest(&p), ring.digest(&p));
    }
}
