//! Subscription keys: generation, hashing, and the in-memory key ring the proxy reads.
//!
//! Keys are 32 random bytes, URL-safe base64 without padding (43 characters). Only their
//! HMAC-SHA256 digests under a per-installation secret are stored. The proxy looks a key up
//! by its digest in a concurrent map ([`DashMap`]), so the hot path does no store I/O and
//! takes no lock but the read side of one map shard; the digest found is compared again in
//! constant time.
//!
//! # Changes
//!
//! A subscription change touches only that subscription's digests:
//! [`KeyRing::upsert`] maps its (at most two) new digests and unmaps the (at most two) old
//! ones, [`KeyRing::remove`] unmaps them. Both mutate the live map in place: O(1) whatever
//! the number of subscriptions. The ring keeps no id → digests index (its table would add
//! about 45% to the ring's memory): the caller names the digests it replaces, which
//! the admin API reads from the store row before the change (see
//! `tollgate_admin_api::subscriptions`). A digest is unmapped only while it still belongs
//! to the subscription named, so a stale or mistaken digest list never removes another
//! subscription's key.
//!
//! Whole replacements ([`KeyRing::replace_all`] at start, [`KeyRing::replace_with_secret`]
//! when a data plane applies a snapshot) build a new map sized up front and swap it in with
//! the secret ([`ArcSwap`]).
//!
//! # Secret and digests together
//!
//! The secret and the map live in one `Ring` behind the `ArcSwap`: a lookup loads the ring
//! once, hashes with its secret and searches its map, so it never hashes with one
//! installation's secret and searches another's digests. A data plane (`tollgate gateway`)
//! receives the installation secret and the digests from its control plane and swaps both in
//! one store.
//!
//! Writers (incremental changes and replacements) are serialized by a mutex readers never
//! take, so an incremental change cannot land in a ring that a replacement has just retired.

use crate::{Subscription, SubscriptionLookup};
use arc_swap::ArcSwap;
use base64::Engine;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// A key digest.
pub type Digest = [u8; 32];

/// A new random key: 32 bytes from the OS generator, URL-safe base64 without padding.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 keyed with `secret`, ready for a message.
fn keyed(secret: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// HMAC-SHA256 of `key` under `secret`.
pub fn digest(secret: &[u8; 32], key: &str) -> Digest {
    finish(keyed(secret), key)
}

fn finish(mut mac: Hmac<Sha256>, key: &str) -> Digest {
    mac.update(key.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Hashes a digest for the map by taking its first eight bytes.
///
/// A digest is HMAC output under a secret the caller does not know, so it is already
/// uniformly spread and cannot be chosen to collide: running it through SipHash again (the
/// map's default, there against chosen keys) would only cost time on every lookup.
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestHash;

/// The hasher [`DigestHash`] builds.
#[derive(Debug, Default)]
pub struct DigestHasher(u64);

impl std::hash::BuildHasher for DigestHash {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A digest hashes as its length, then its 32 bytes: the length adds nothing.
        // Anything shorter (never a digest) is folded in whole.
        match bytes.first_chunk::<8>() {
            Some(head) => self.0 ^= u64::from_le_bytes(*head),
            None => {
                for &b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(b);
                }
            }
        }
    }

    fn write_usize(&mut self, _len: usize) {}
}

/// The map of digests to subscriptions.
type DigestMap = DashMap<Digest, Subscription, DigestHash>;

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
    /// HMAC already keyed with `secret`: a lookup clones it instead of hashing the key
    /// blocks again (two of the four SHA-256 compressions of a digest).
    mac: Hmac<Sha256>,
    map: DigestMap,
}

impl Ring {
    fn new(secret: [u8; 32], map: DigestMap) -> Ring {
        Ring {
            secret,
            mac: keyed(&secret),
            map,
        }
    }

    fn digest(&self, key: &str) -> Digest {
        finish(self.mac.clone(), key)
    }
}

/// The proxy's view of every subscription key.
pub struct KeyRing {
    ring: ArcSwap<Ring>,
    /// Serializes writers; lookups never take it.
    writes: Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("KeyRing")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

/// A map sized for `entries` (two keys each) before it is filled, so that a large ring is
/// allocated once instead of grown by doubling (which left the smaller tables resident).
fn index(entries: impl IntoIterator<Item = KeyEntry>) -> DigestMap {
    let entries = entries.into_iter();
    let keys = 2 * entries.size_hint().0;
    // The map is split in shards filled unevenly: a little headroom keeps the fullest one
    // from doubling.
    let map = DashMap::with_capacity_and_hasher(keys + keys / 32, DigestHash);
    for e in entries {
        map.insert(e.primary, e.subscription.clone());
        map.insert(e.secondary, e.subscription);
    }
    map
}

/// Unmaps `d` if it still belongs to subscription `id`.
fn unmap(map: &DigestMap, d: &Digest, id: &str) {
    map.remove_if(d, |_, sub| &*sub.id == id);
}

impl KeyRing {
    /// An empty ring for keys hashed under `secret`.
    pub fn new(secret: [u8; 32]) -> KeyRing {
        KeyRing {
            ring: ArcSwap::from_pointee(Ring::new(secret, DashMap::with_hasher(DigestHash))),
            writes: Mutex::new(()),
        }
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panicking writer leaves nothing half-done to see.
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The digest of `key` under this installation's secret.
    pub fn digest(&self, key: &str) -> Digest {
        self.ring.load().digest(key)
    }

    /// The installation secret keys are hashed under (a control plane hands it to its data
    /// planes over their authenticated channel).
    pub fn secret(&self) -> [u8; 32] {
        self.ring.load().secret
    }

    /// Adds or changes one subscription: maps `entry`'s two digests to its subscription (a
    /// state or scope change replaces the value in place), then unmaps the digests of
    /// `replaced` that `entry` no longer has, if they still belong to this subscription.
    /// `replaced` holds the digests the ring had for it before (none for a new one).
    ///
    /// Between the two steps a lookup may find both an old and a new key: a rotated key
    /// stops working before this call returns.
    ///
    /// `replaced` must be what the ring holds for this subscription: changes to one
    /// subscription come one at a time, each naming the digests the previous one left (the
    /// admin API reads them from the store row under its write lock). Two changes racing
    /// on one subscription with the same `replaced` would leave both their new digests.
    pub fn upsert(&self, entry: KeyEntry, replaced: &[Digest]) {
        let _w = self.writer();
        let ring = self.ring.load();
        let id = entry.subscription.id.clone();
        let (primary, secondary) = (entry.primary, entry.secondary);
        ring.map.insert(primary, entry.subscription.clone());
        ring.map.insert(secondary, entry.subscription);
        for d in replaced {
            if *d != primary && *d != secondary {
                unmap(&ring.map, d, &id);
            }
        }
    }

    /// Removes one subscription's keys: unmaps each of `digests` that still belongs to
    /// subscription `id`.
    pub fn remove(&self, id: &str, digests: &[Digest]) {
        let _w = self.writer();
        let ring = self.ring.load();
        for d in digests {
            unmap(&ring.map, d, id);
        }
    }

    /// Replaces the whole ring, keeping the secret (at start, from every stored
    /// subscription).
    pub fn replace_all(&self, entries: impl IntoIterator<Item = KeyEntry>) {
        // Built outside the lock: only the swap is serialized with the other writers.
        let map = index(entries);
        let _w = self.writer();
        let secret = self.ring.load().secret;
        self.ring.store(Arc::new(Ring::new(secret, map)));
    }

    /// Replaces the secret and the whole ring in one step (a data plane applying a snapshot
    /// from its control plane).
    pub fn replace_with_secret(
        &self,
        secret: [u8; 32],
        entries: impl IntoIterator<Item = KeyEntry>,
    ) {
        let map = index(entries);
        let _w = self.writer();
        self.ring.store(Arc::new(Ring::new(secret, map)));
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
        let d = ring.digest(key);
        let found = ring.map.get(&d)?;
        bool::from(found.key().ct_eq(&d)).then(|| found.value().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SubscriptionScope, SubscriptionState};
    use std::collections::BTreeMap;

    fn sub(id: &str) -> Subscription {
        Subscription {
            id: id.into(),
            state: SubscriptionState::Active,
            scope: SubscriptionScope::All,
        }
    }

    /// What the ring maps, comparable: digest → (id, state, scope).
    type Dump = BTreeMap<Digest, (String, SubscriptionState, SubscriptionScope)>;

    fn dump(ring: &KeyRing) -> Dump {
        ring.ring
            .load()
            .map
            .iter()
            .map(|e| {
                let s = e.value();
                (*e.key(), (s.id.to_string(), s.state, s.scope.clone()))
            })
            .collect()
    }

    /// A subscription with real keys, as the admin API makes it.
    struct Made {
        primary: String,
        secondary: String,
        entry: KeyEntry,
    }

    fn make(ring: &KeyRing, id: &str) -> Made {
        let (primary, secondary) = (generate_key(), generate_key());
        Made {
            entry: KeyEntry {
                primary: ring.digest(&primary),
                secondary: ring.digest(&secondary),
                subscription: sub(id),
            },
            primary,
            secondary,
        }
    }

    fn found(ring: &KeyRing, key: &str) -> Option<String> {
        ring.lookup(key).map(|s| s.id.to_string())
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
    fn digests_that_share_their_hashed_bytes_stay_apart() {
        // The map hashes a digest by its first eight bytes: two digests equal there
        // collide, and must still be told apart by the rest.
        let map: DigestMap = DashMap::with_hasher(DigestHash);
        let (mut a, mut b) = ([3u8; 32], [3u8; 32]);
        a[31] = 1;
        b[31] = 2;
        map.insert(a, sub("a"));
        map.insert(b, sub("b"));
        assert_eq!(&*map.get(&a).unwrap().id, "a");
        assert_eq!(&*map.get(&b).unwrap().id, "b");
        assert!(map.get(&[3u8; 32]).is_none());
        // The ring's own digests spread: the hashes of a few hundred differ.
        let ring = KeyRing::new([7; 32]);
        let hashes: std::collections::HashSet<u64> = (0..256)
            .map(|_| std::hash::BuildHasher::hash_one(&DigestHash, ring.digest(&generate_key())))
            .collect();
        assert_eq!(hashes.len(), 256);
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

    #[test]
    fn upsert_adds_one_subscription_and_leaves_the_others() {
        let ring = KeyRing::new([7; 32]);
        let a = make(&ring, "a");
        ring.replace_all([a.entry.clone()]);
        let b = make(&ring, "b");
        ring.upsert(b.entry.clone(), &[]);
        assert_eq!(ring.len(), 4);
        for (key, id) in [
            (&a.primary, "a"),
            (&a.secondary, "a"),
            (&b.primary, "b"),
            (&b.secondary, "b"),
        ] {
            assert_eq!(found(&ring, key).as_deref(), Some(id));
        }
        // Upserting the same entry again changes nothing.
        ring.upsert(b.entry.clone(), &[b.entry.primary, b.entry.secondary]);
        assert_eq!(ring.len(), 4);
        assert_eq!(found(&ring, &b.primary).as_deref(), Some("b"));
    }

    #[test]
    fn regenerating_a_key_refuses_the_old_one_and_keeps_the_other() {
        let ring = KeyRing::new([7; 32]);
        let a = make(&ring, "a");
        let other = make(&ring, "other");
        ring.replace_all([a.entry.clone(), other.entry.clone()]);

        // Primary.
        let p2 = generate_key();
        let mut e = a.entry.clone();
        e.primary = ring.digest(&p2);
        ring.upsert(e.clone(), &[a.entry.primary, a.entry.secondary]);
        assert_eq!(
            found(&ring, &a.primary),
            None,
            "the old primary still works"
        );
        assert_eq!(found(&ring, &p2).as_deref(), Some("a"));
        assert_eq!(found(&ring, &a.secondary).as_deref(), Some("a"));

        // Secondary.
        let s2 = generate_key();
        let before = [e.primary, e.secondary];
        e.secondary = ring.digest(&s2);
        ring.upsert(e.clone(), &before);
        assert_eq!(
            found(&ring, &a.secondary),
            None,
            "the old secondary still works"
        );
        assert_eq!(found(&ring, &s2).as_deref(), Some("a"));
        assert_eq!(found(&ring, &p2).as_deref(), Some("a"));

        // Both at once.
        let (p3, s3) = (generate_key(), generate_key());
        let before = [e.primary, e.secondary];
        e.primary = ring.digest(&p3);
        e.secondary = ring.digest(&s3);
        ring.upsert(e, &before);
        for old in [&p2, &s2] {
            assert_eq!(found(&ring, old), None);
        }
        assert_eq!(found(&ring, &p3).as_deref(), Some("a"));
        assert_eq!(found(&ring, &s3).as_deref(), Some("a"));

        // Two keys per subscription, nothing left behind; the other one untouched.
        assert_eq!(ring.len(), 4);
        assert_eq!(found(&ring, &other.primary).as_deref(), Some("other"));
        assert_eq!(found(&ring, &other.secondary).as_deref(), Some("other"));
    }

    #[test]
    fn state_and_scope_change_in_place() {
        let ring = KeyRing::new([7; 32]);
        let a = make(&ring, "a");
        ring.upsert(a.entry.clone(), &[]);
        let digests = [a.entry.primary, a.entry.secondary];

        let mut e = a.entry.clone();
        e.subscription.state = SubscriptionState::Suspended;
        ring.upsert(e.clone(), &digests);
        for key in [&a.primary, &a.secondary] {
            let s = ring
                .lookup(key)
                .expect("a suspended subscription is still known");
            assert_eq!(s.state, SubscriptionState::Suspended);
        }

        e.subscription.state = SubscriptionState::Active;
        e.subscription.scope = SubscriptionScope::Product("gold".into());
        ring.upsert(e, &digests);
        for key in [&a.primary, &a.secondary] {
            let s = ring.lookup(key).unwrap();
            assert_eq!(s.state, SubscriptionState::Active);
            assert_eq!(s.scope, SubscriptionScope::Product("gold".into()));
        }
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn remove_takes_only_that_subscriptions_keys() {
        let ring = KeyRing::new([7; 32]);
        let a = make(&ring, "a");
        let b = make(&ring, "b");
        ring.replace_all([a.entry.clone(), b.entry.clone()]);
        ring.remove("a", &[a.entry.primary, a.entry.secondary]);
        assert_eq!(found(&ring, &a.primary), None);
        assert_eq!(found(&ring, &a.secondary), None);
        assert_eq!(found(&ring, &b.primary).as_deref(), Some("b"));
        assert_eq!(ring.len(), 2);
        // A digest that belongs to another subscription is left alone (by remove or by
        // upsert), whatever the caller says.
        ring.remove("a", &[b.entry.primary]);
        let c = make(&ring, "c");
        ring.upsert(c.entry, &[b.entry.secondary]);
        assert_eq!(found(&ring, &b.primary).as_deref(), Some("b"));
        assert_eq!(found(&ring, &b.secondary).as_deref(), Some("b"));
        assert_eq!(ring.len(), 4);
        // Removing what is not there is a no-op.
        ring.remove("zz", &[[1; 32]]);
        assert_eq!(ring.len(), 4);
    }

    #[test]
    fn changes_after_a_replacement_land_in_the_new_ring() {
        let cp = KeyRing::new([7; 32]);
        let a = make(&cp, "a");
        let dp = KeyRing::new([0; 32]);
        dp.replace_with_secret(cp.secret(), [a.entry.clone()]);
        let b = make(&cp, "b");
        dp.upsert(b.entry.clone(), &[]);
        assert_eq!(found(&dp, &b.primary).as_deref(), Some("b"));
        assert_eq!(found(&dp, &a.primary).as_deref(), Some("a"));
        dp.replace_with_secret(cp.secret(), [b.entry]);
        assert_eq!(found(&dp, &a.primary), None);
        assert_eq!(found(&dp, &b.secondary).as_deref(), Some("b"));
        assert_eq!(dp.len(), 2);
    }

    /// xorshift64*: reproducible per thread, no shared generator.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// One subscription as the writers and readers of the concurrency test know it.
    #[derive(Clone)]
    struct Known {
        primary: String,
        secondary: String,
        entry: KeyEntry,
    }

    #[test]
    fn concurrent_upserts_and_removes_leave_exactly_the_expected_ring() {
        const IDS: usize = 48;
        const WRITERS: u64 = 6;
        const OPS: usize = 1500;
        let ring = Arc::new(KeyRing::new([9; 32]));
        // Each subscription's current truth; a writer holds its lock across the ring
        // change, as the admin API holds its write lock across store write + ring change.
        let truth: Arc<Vec<Mutex<Option<Known>>>> =
            Arc::new((0..IDS).map(|_| Mutex::new(None)).collect());
        // Half of them exist from the start (a full rebuild).
        let mut initial = Vec::new();
        for (i, slot) in truth.iter().enumerate().step_by(2) {
            let m = make(&ring, &format!("s{i}"));
            initial.push(m.entry.clone());
            *slot.lock().unwrap() = Some(Known {
                primary: m.primary,
                secondary: m.secondary,
                entry: m.entry,
            });
        }
        ring.replace_all(initial);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (ring, truth) = (ring.clone(), truth.clone());
                std::thread::spawn(move || {
                    let mut x = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
                    for _ in 0..OPS {
                        let i = (next(&mut x) % IDS as u64) as usize;
                        let mut cur = truth[i].lock().unwrap();
                        let before: Vec<Digest> = cur
                            .iter()
                            .flat_map(|k| [k.entry.primary, k.entry.secondary])
                            .collect();
                        let op = next(&mut x) % 6;
                        match (cur.as_mut(), op) {
                            (None, _) => {
                                let m = make(&ring, &format!("s{i}"));
                                ring.upsert(m.entry.clone(), &before);
                                *cur = Some(Known {
                                    primary: m.primary,
                                    secondary: m.secondary,
                                    entry: m.entry,
                                });
                            }
                            (Some(k), 0) => {
                                k.primary = generate_key();
                                k.entry.primary = ring.digest(&k.primary);
                                ring.upsert(k.entry.clone(), &before);
                            }
                            (Some(k), 1) => {
                                k.secondary = generate_key();
                                k.entry.secondary = ring.digest(&k.secondary);
                                ring.upsert(k.entry.clone(), &before);
                            }
                            (Some(k), 2) => {
                                k.entry.subscription.state = match k.entry.subscription.state {
                                    SubscriptionState::Active => SubscriptionState::Suspended,
                                    _ => SubscriptionState::Active,
                                };
                                ring.upsert(k.entry.clone(), &before);
                            }
                            (Some(k), 3) => {
                                k.entry.subscription.scope =
                                    SubscriptionScope::Api(format!("api-{}", op ^ t).into());
                                ring.upsert(k.entry.clone(), &before);
                            }
                            (Some(k), 4) => {
                                k.primary = generate_key();
                                k.secondary = generate_key();
                                k.entry.primary = ring.digest(&k.primary);
                                k.entry.secondary = ring.digest(&k.secondary);
                                ring.upsert(k.entry.clone(), &before);
                            }
                            (Some(_), _) => {
                                ring.remove(&format!("s{i}"), &before);
                                *cur = None;
                            }
                        }
                    }
                })
            })
            .collect();

        // Readers check, while the writers run, that a subscription's current keys always
        // find it, with its current state and scope (its lock is held, so it cannot change
        // meanwhile; the others do).
        let readers: Vec<_> = (0..2u64)
            .map(|t| {
                let (ring, truth, stop) = (ring.clone(), truth.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut x = 0xD1B5_4A32_D192_ED03 ^ (t + 1);
                    let mut checks = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || checks == 0 {
                        let i = (next(&mut x) % IDS as u64) as usize;
                        let cur = truth[i].lock().unwrap();
                        if let Some(k) = cur.as_ref() {
                            for key in [&k.primary, &k.secondary] {
                                let s = ring.lookup(key).expect("a current key is refused");
                                assert_eq!(s.id, k.entry.subscription.id);
                                assert_eq!(s.state, k.entry.subscription.state);
                                assert_eq!(s.scope, k.entry.subscription.scope);
                            }
                            checks += 1;
                        }
                    }
                    checks
                })
            })
            .collect();

        for w in writers {
            w.join().expect("a writer panicked");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("a reader panicked") > 0);
        }

        let mut expected = Dump::new();
        for slot in truth.iter() {
            if let Some(k) = slot.lock().unwrap().as_ref() {
                let s = &k.entry.subscription;
                for d in [k.entry.primary, k.entry.secondary] {
                    expected.insert(d, (s.id.to_string(), s.state, s.scope.clone()));
                }
            }
        }
        assert!(!expected.is_empty());
        let got = dump(&ring);
        assert_eq!(got.len(), expected.len(), "stale or missing digests");
        assert!(got == expected, "the ring differs from the expected set");
        assert_eq!(ring.len(), expected.len());
    }
}
