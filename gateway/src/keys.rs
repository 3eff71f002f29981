//! Subscription keys: generation, hashing, and the in-memory key ring the proxy reads.
//!
//! Keys are 32 random bytes, URL-safe base64 without padding (43 characters). Only their
//! HMAC-SHA256 digests under a per-installation secret are stored. The proxy looks a key up
//! by its digest in an immutable map swapped as a whole (`ArcSwap`) on every change, so the
//! hot path takes no lock and does no store I/O; the digest found is compared again in
//! constant time.
//!
//! A data plane (`tollgate gateway`) receives the installation secret and the digests from
//! its control plane: [`KeyRing::replace_with_secret`] swaps both in one store, so a lookup
//! never hashes with one installation's secret and searches another's digests.

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

/// The secret and the digests it made, swapped together.
struct Ring {
    secret: [u8; 32],
    map: HashMap<Digest, Subscription>,
}

/// The proxy's view of every subscription key.
pub struct KeyRing {
    ring: ArcSwap<Ring>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("KeyRing")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

fn index(entries: impl IntoIterator<Item = KeyEntry>) -> HashMap<Digest, Subscription> {
    let mut map = HashMap::new();
    for e in entries {
        map.insert(e.primary, e.subscription.clone());
        map.insert(e.secondary, e.subscription);
    }
    map
}

impl KeyRing {
    /// An empty ring for keys hashed under `secret`.
    pub fn new(secret: [u8; 32]) -> KeyRing {
        KeyRing {
            ring: ArcSwap::from_pointee(Ring {
                secret,
                map: HashMap::new(),
            }),
        }
    }

    /// The digest of `key` under this installation's secret.
    pub fn digest(&self, key: &str) -> Digest {
        digest(&self.ring.load().secret, key)
    }

    /// The installation secret keys are hashed under (a control plane hands it to its data
    /// planes over their authenticated channel).
    pub fn secret(&self) -> [u8; 32] {
        self.ring.load().secret
    }

    /// Replace the whole ring (after any subscription change), keeping the secret.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = KeyEntry>) {
        let map = index(entries);
        // Callers serialize their rebuilds; a control plane never changes its secret and a
        // data plane only calls `replace_with_secret`.
        let secret = self.ring.load().secret;
        self.ring.store(Arc::new(Ring { secret, map }));
    }

    /// Replace the secret and the whole ring in one step (a data plane applying a snapshot
    /// from its control plane).
    pub fn replace_with_secret(
        &self,
        secret: [u8; 32],
        entries: impl IntoIterator<Item = KeyEntry>,
    ) {
        self.ring.store(Arc::new(Ring {
            secret,
            map: index(entries),
        }));
    }

    /// How many keys the ring holds (two per subscription).
    pub fn len(&self) -> usize {
        self.ring.load().map.len()
    }

    /// True when the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SubscriptionLookup for KeyRing {
    fn lookup(&self, key: &str) -> Option<Subscription> {
        let ring = self.ring.load();
        let d = digest(&ring.secret, key);
        let (stored, sub) = ring.map.get_key_value(&d)?;
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

    #[test]
    fn the_secret_swaps_with_the_digests() {
        let cp = KeyRing::new([7; 32]);
        let key = generate_key();
        let entry = KeyEntry {
            primary: cp.digest(&key),
            secondary: cp.digest(&generate_key()),
            subscription: sub("one"),
        };
        // A data plane starts with a placeholder secret and learns the real one.
        let dp = KeyRing::new([0; 32]);
        dp.replace_all([entry.clone()]);
        assert!(dp.lookup(&key).is_none());
        dp.replace_with_secret(cp.secret(), [entry]);
        assert_eq!(&*dp.lookup(&key).unwrap().id, "one");
        assert_eq!(dp.secret(), [7; 32]);
        // A later replace_all keeps the secret.
        dp.replace_all([]);
        assert_eq!(dp.secret(), [7; 32]);
        assert!(dp.lookup(&key).is_none());
    }
}
