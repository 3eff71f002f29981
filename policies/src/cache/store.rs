//! The response cache itself: entries in memory, bounded in bytes, plus the bookkeeping of
//! requests that are filling an entry right now (coalescing).
//!
//! Storage is a [`moka`] cache: concurrent, bounded by a weigher (each entry weighs its body
//! plus its head plus a fixed overhead, so `max_bytes` bounds memory, not a count), with
//! TinyLFU admission and LRU eviction (a burst of one-off URLs does not flush the entries
//! that are really reused), and a per-entry expiry (each entry's own TTL). The cache lives
//! in the policies' long-lived registries, outside config snapshots: a config swap keeps
//! every entry. Changing `settings.cache_max_bytes` builds a new bounded cache and moves
//! the entries over (those that do not fit are evicted).

use super::key::CacheKey;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderName;
use moka::notification::RemovalCause;
use moka::Expiry;
use pingora_http::ResponseHeader;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The default memory bound (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The largest single entry, whatever the cache size.
const MAX_ENTRY_CAP: u64 = 16 * 1024 * 1024;

/// The longest an entry is kept (validation allows `cache-store` durations of up to 365
/// days; this bound keeps `Instant` arithmetic from overflowing whatever the caller passes).
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// What an entry weighs besides its body and header bytes (the entry, its key, moka's
/// node and the header map's own structures, roughly).
const ENTRY_OVERHEAD: usize = 256;

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    /// The upstream's answer head (status 200), without hop-by-hop headers,
    /// `Content-Length`, `Transfer-Encoding` and `Age`.
    pub head: ResponseHeader,
    /// The whole body.
    pub body: Bytes,
    /// When it was stored.
    pub stored_at: Instant,
    /// When it stops being fresh.
    pub expires_at: Instant,
    /// The `Age` (seconds) the upstream's answer already had.
    pub initial_age: u64,
    /// The request header values the answer varies on (the upstream's `Vary`, plus
    /// `Accept-Encoding` for an encoded body): a request with other values does not hit.
    pub vary: Vec<(HeaderName, Option<Vec<u8>>)>,
    /// The API it belongs to (for purge).
    pub api: Option<Arc<str>>,
    /// The operation it belongs to (for purge).
    pub operation: Option<Arc<str>>,
    /// The product of the request that stored it (for purge).
    pub product: Option<Arc<str>>,
    weight: u32,
}

impl Entry {
    /// A new entry; its weight is computed here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        head: ResponseHeader,
        body: Bytes,
        ttl: Duration,
        initial_age: u64,
        vary: Vec<(HeaderName, Option<Vec<u8>>)>,
        api: Option<Arc<str>>,
        operation: Option<Arc<str>>,
        product: Option<Arc<str>>,
    ) -> Entry {
        let head_bytes: usize = head
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let vary_bytes: usize = vary
            .iter()
            .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        let weight =
            (body.len() + head_bytes + vary_bytes + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32;
        let now = Instant::now();
        let expires_at = now
            .checked_add(ttl.min(MAX_TTL))
            .unwrap_or(now + Duration::from_secs(365 * 86_400));
        Entry {
            head,
            body,
            stored_at: now,
            expires_at,
            initial_age,
            vary,
            api,
            operation,
            product,
            weight,
        }
    }

    /// Bytes this entry counts for against the bound.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The `Age` to send at `now`, in seconds.
    pub fn age(&self, now: Instant) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_duration_since(self.stored_at).as_secs())
    }

    /// Whether a request with `headers` may be answered by this entry (its `Vary` values).
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, stored)| vary_value(headers, name).as_deref() == stored.as_deref())
    }
}

/// The value of a request header the way `Vary` compares it: every line, trimmed, joined
/// with `,`; `None` when absent.
pub fn vary_value(headers: &http::HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().trim_ascii().to_vec();
    for v in values {
        out.push(b',');
        out.extend_from_slice(v.as_bytes().trim_ascii());
    }
    Some(out)
}

/// Which entries a purge removes: every filter given must match (none given: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeFilter {
    /// Entries of this API.
    pub api: Option<String>,
    /// Entries of this operation (of any API, unless `api` is given too).
    pub operation: Option<String>,
    /// Entries stored for requests of this product.
    pub product: Option<String>,
}

impl PurgeFilter {
    fn matches(&self, e: &Entry) -> bool {
        fn one(want: &Option<String>, have: &Option<Arc<str>>) -> bool {
            want.as_deref()
                .is_none_or(|w| have.as_deref().is_some_and(|h| h == w))
        }
        one(&self.api, &e.api)
            && one(&self.operation, &e.operation)
            && one(&self.product, &e.product)
    }
}

/// Counters of the cache, for analytics and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went upstream (nothing usable stored, or the client asked to revalidate).
    pub misses: u64,
    /// Answers stored.
    pub stores: u64,
    /// Entries evicted (or refused admission) to stay under the byte bound.
    pub evictions: u64,
    /// Entries dropped because they expired.
    pub expirations: u64,
    /// Entries removed by purges.
    pub purged: u64,
    /// Bytes held now (bodies, heads and overhead).
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
    /// The byte bound.
    pub max_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    purged: AtomicU64,
}

/// Each entry expires at its own time.
struct PerEntryExpiry;

impl Expiry<u128, Arc<Entry>> for PerEntryExpiry {
    fn expire_after_create(
        &self,
        _key: &u128,
        value: &Arc<Entry>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &u128,
        value: &Arc<Entry>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(updated_at))
    }
}

type Store = moka::sync::Cache<u128, Arc<Entry>>;

fn build_store(max_bytes: u64, counters: &Arc<Counters>) -> Store {
    let c = counters.clone();
    moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_k: &u128, e: &Arc<Entry>| e.weight)
        .expire_after(PerEntryExpiry)
        .eviction_listener(move |_k, _v, cause| match cause {
            RemovalCause::Size => {
                c.evictions.fetch_add(1, Ordering::Relaxed);
            }
            RemovalCause::Expired => {
                c.expirations.fetch_add(1, Ordering::Relaxed);
            }
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        })
        .build()
}

/// Requests filling an entry right now: key → (fill id, the channel its waiters watch).
#[derive(Debug, Default)]
struct Fills {
    map: Mutex<HashMap<u128, (u64, watch::Sender<()>)>>,
    next: AtomicU64,
}

/// The response cache (see the module docs). Shared by every `cache-lookup` and
/// `cache-store` policy through the registries.
pub struct ResponseCache {
    store: ArcSwap<Store>,
    max_bytes: AtomicU64,
    counters: Arc<Counters>,
    fills: Arc<Fills>,
    resize: Mutex<()>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("max_bytes", &self.max_bytes.load(Ordering::Relaxed))
            .field("entries", &self.store.load().entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache::new(DEFAULT_MAX_BYTES)
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry for this request.
    Hit(Arc<Entry>),
    /// Nothing usable: this request goes upstream and fills the entry; the others for the
    /// same key wait for it until the guard is dropped.
    Fill(FillGuard),
    /// Another request is filling the entry: wait for the receiver to close (bounded), then
    /// look up again.
    Wait(watch::Receiver<()>),
    /// Nothing usable, and this request does not fill (it may not, or another one does and
    /// this one may not wait).
    Miss,
}

/// How a lookup may go.
#[derive(Debug, Clone, Copy)]
pub struct LookupMode {
    /// Answer from a stored entry (false when the client asked to revalidate).
    pub use_entry: bool,
    /// Wait for another request's fill.
    pub may_wait: bool,
    /// Become the filler when nobody fills.
    pub may_fill: bool,
}

impl ResponseCache {
    /// An empty cache bounded to `max_bytes`.
    pub fn new(max_bytes: u64) -> ResponseCache {
        let counters = Arc::new(Counters::default());
        ResponseCache {
            store: ArcSwap::from_pointee(build_store(max_bytes, &counters)),
            max_bytes: AtomicU64::new(max_bytes),
            counters,
            fills: Arc::new(Fills::default()),
            resize: Mutex::new(()),
        }
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// The largest answer stored: an eighth of the bound, at most 16 MiB.
    pub fn max_entry_bytes(&self) -> u64 {
        (self.max_bytes() / 8).min(MAX_ENTRY_CAP)
    }

    /// Change the byte bound (a config with another `settings.cache_max_bytes`). The
    /// entries move to the new bound; those that do not fit are evicted. No-op when equal.
    pub fn set_max_bytes(&self, max_bytes: u64) {
        let _guard = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        if self.max_bytes() == max_bytes {
            return;
        }
        let old = self.store.load_full();
        let new = build_store(max_bytes, &self.counters);
        for (k, v) in old.iter() {
            new.insert(*k, v);
        }
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.store.store(Arc::new(new));
        old.invalidate_all();
    }

    /// Find the entry for `key` that fits a request with `headers`, or say what to do.
    pub fn lookup(&self, key: CacheKey, headers: &http::HeaderMap, mode: LookupMode) -> Lookup {
        if mode.use_entry {
            if let Some(e) = self.fresh(key, headers) {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(e);
            }
        }
        let mut fills = self.fills.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, tx)) = fills.get(&key.0) {
            if mode.may_wait && mode.use_entry {
                return Lookup::Wait(tx.subscribe());
            }
        } else if mode.may_fill {
            let id = self.fills.next.fetch_add(1, Ordering::Relaxed);
            let (tx, _) = watch::channel(());
            fills.insert(key.0, (id, tx));
            drop(fills);
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Fill(FillGuard {
                fills: self.fills.clone(),
                key,
                id,
            });
        }
        drop(fills);
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss
    }

    fn fresh(&self, key: CacheKey, headers: &http::HeaderMap) -> Option<Arc<Entry>> {
        let e = self.store.load().get(&key.0)?;
        (e.expires_at > Instant::now() && e.matches(headers)).then_some(e)
    }

    /// Store `entry` under `key` (an entry over [`ResponseCache::max_entry_bytes`] is
    /// refused). Returns whether it was handed to the store (which may still refuse to
    /// admit it when it is full of more popular entries).
    pub fn insert(&self, key: CacheKey, entry: Entry) -> bool {
        if u64::from(entry.weight) > self.max_entry_bytes() {
            return false;
        }
        self.store.load().insert(key.0, Arc::new(entry));
        self.counters.stores.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Remove every entry `filter` matches; returns how many.
    pub fn purge(&self, filter: &PurgeFilter) -> u64 {
        let store = self.store.load_full();
        let keys: Vec<u128> = store
            .iter()
            .filter(|(_, e)| filter.matches(e))
            .map(|(k, _)| *k)
            .collect();
        let mut n = 0;
        for k in keys {
            if store.remove(&k).is_some() {
                n += 1;
            }
        }
        self.counters.purged.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// The counters, and the bytes and entries held now (pending maintenance is run first
    /// so they are current).
    pub fn stats(&self) -> CacheStats {
        let store = self.store.load_full();
        store.run_pending_tasks();
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            stores: c.stores.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            purged: c.purged.load(Ordering::Relaxed),
            bytes: store.weighted_size(),
            entries: store.entry_count(),
            max_bytes: self.max_bytes(),
        }
    }
}

/// A request filling an entry. Dropping it (stored or not, the request finished or
/// failed) releases the key and wakes every request waiting for it.
pub struct FillGuard {
    fills: Arc<Fills>,
    key: CacheKey,
    id: u64,
}

impl FillGuard {
    /// The key being filled.
    pub fn key(&self) -> CacheKey {
        self.key
    }
}

impl std::fmt::Debug for FillGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillGuard")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut fills = self.fills.map.lock().unwrap_or_else(|e| e.into_inner());
        if fills.get(&self.key.0).is_some_and(|(id, _)| *id == self.id) {
            // Dropping the sender closes every waiter's receiver.
            fills.remove(&self.key.0);
        }
    }
}

/// Wait (at most `limit`) until the fill a [`Lookup::Wait`] named is over.
pub async fn wait_for_fill(mut rx: watch::Receiver<()>, limit: Duration) {
    // `changed` fails once the sender is gone; nothing is ever sent.
    let _ = tokio::time::timeout(limit, async move { while rx.changed().await.is_ok() {} }).await;
}

/// The `vary` list of an entry: the values the request `req` has for `names`.
pub fn vary_of(req: &http::HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, Option<Vec<u8>>)> {
    names
        .iter()
        .map(|n| (n.clone(), vary_value(req, n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: usize, ttl: Duration, api: &str, op: &str, product: Option<&str>) -> Entry {
        Entry::new(
            ResponseHeader::build(200, None).unwrap(),
            Bytes::from(vec![b'x'; body]),
            ttl,
            0,
            Vec::new(),
            Some(api.into()),
            Some(op.into()),
            product.map(Into::into),
        )
    }

    const ALL: LookupMode = LookupMode {
        use_entry: true,
        may_wait: true,
        may_fill: true,
    };

    #[test]
    fn hit_after_insert_and_fill_coalescing() {
        let c = ResponseCache::new(1 << 20);
        let h = http::HeaderMap::new();
        let k = CacheKey(1);
        let Lookup::Fill(guard) = c.lookup(k, &h, ALL) else {
            panic!("first lookup fills")
        };
        let Lookup::Wait(rx) = c.lookup(k, &h, ALL) else {
            panic!("second lookup waits")
        };
        // A request that may not wait goes upstream without filling.
        let no_wait = LookupMode {
            may_wait: false,
            ..ALL
        };
        assert!(matches!(c.lookup(k, &h, no_wait), Lookup::Miss));
        assert!(c.insert(k, entry(10, Duration::from_secs(60), "a", "o", None)));
        drop(guard);
        assert!(rx.has_changed().is_err(), "waiters are woken");
        assert!(matches!(c.lookup(k, &h, ALL), Lookup::Hit(_)));
        // A revalidating request does not use the entry and fills.
        let revalidate = LookupMode {
            use_entry: false,
            ..ALL
        };
        assert!(matches!(c.lookup(k, &h, revalidate), Lookup::Fill(_)));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.stores, s.entries), (1, 3, 1, 1));
    }

    #[test]
    fn huge_ttl_and_age_do_not_overflow() {
        let mut e = entry(10, Duration::MAX, "a", "o", None);
        assert!(e.expires_at > e.stored_at + Duration::from_secs(365 * 86_400));
        e.initial_age = u64::MAX;
        assert_eq!(e.age(Instant::now() + Duration::from_secs(5)), u64::MAX);
        let c = ResponseCache::new(1 << 20);
        assert!(c.insert(CacheKey(7), e));
        let h = http::HeaderMap::new();
        assert!(matches!(c.lookup(CacheKey(7), &h, ALL), Lookup::Hit(_)));
    }

    #[test]
    fn expired_entries_miss() {
        let c = ResponseCache::new(1 << 20);
        let h = http::HeaderMap::new();
        c.insert(
            CacheKey(2),
            entry(10, Duration::from_millis(20), "a", "o", None),
        );
        assert!(matches!(c.lookup(CacheKey(2), &h, ALL), Lookup::Hit(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(c.lookup(CacheKey(2), &h, ALL), Lookup::Fill(_)));
    }

    #[test]
    fn vary_values_must_match() {
        let c = ResponseCache::new(1 << 20);
        let mut de = http::HeaderMap::new();
        de.insert(http::header::ACCEPT_LANGUAGE, "de".parse().unwrap());
        let mut e = entry(10, Duration::from_secs(60), "a", "o", None);
        e.vary = vary_of(&de, &[http::header::ACCEPT_LANGUAGE]);
        c.insert(CacheKey(3), e);
        assert!(matches!(c.lookup(CacheKey(3), &de, ALL), Lookup::Hit(_)));
        let mut fr = http::HeaderMap::new();
        fr.insert(http::header::ACCEPT_LANGUAGE, "fr".parse().unwrap());
        assert!(matches!(c.lookup(CacheKey(3), &fr, ALL), Lookup::Fill(_)));
        assert!(!matches!(
            c.lookup(CacheKey(3), &http::HeaderMap::new(), ALL),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn bounded_in_bytes_and_big_entries_refused() {
        let c = ResponseCache::new(64 * 1024);
        assert_eq!(c.max_entry_bytes(), 8 * 1024);
        assert!(!c.insert(
            CacheKey(9),
            entry(9 * 1024, Duration::from_secs(60), "a", "o", None)
        ));
        for i in 0..100u128 {
            c.insert(
                CacheKey(100 + i),
                entry(4000, Duration::from_secs(60), "a", "o", None),
            );
        }
        let s = c.stats();
        assert!(s.bytes <= 64 * 1024, "{s:?}");
        assert!(s.entries < 100, "{s:?}");
        assert!(s.evictions > 0, "{s:?}");
    }

    #[test]
    fn purge_by_filters_and_resize_keeps_entries() {
        let c = ResponseCache::new(1 << 20);
        let ttl = Duration::from_secs(60);
        c.insert(CacheKey(1), entry(10, ttl, "a", "o1", Some("p")));
        c.insert(CacheKey(2), entry(10, ttl, "a", "o2", None));
        c.insert(CacheKey(3), entry(10, ttl, "b", "o1", Some("p")));
        c.insert(CacheKey(4), entry(10, ttl, "b", "o2", Some("q")));
        c.set_max_bytes(2 << 20);
        assert_eq!(c.stats().entries, 4);
        let f = |api: Option<&str>, op: Option<&str>, product: Option<&str>| PurgeFilter {
            api: api.map(Into::into),
            operation: op.map(Into::into),
            product: product.map(Into::into),
        };
        assert_eq!(c.purge(&f(Some("a"), Some("o1"), None)), 1);
        assert_eq!(c.purge(&f(None, None, Some("p"))), 1);
        assert_eq!(c.purge(&f(None, Some("o2"), None)), 2);
        assert_eq!(c.purge(&f(None, None, None)), 0);
        c.insert(CacheKey(5), entry(10, ttl, "c", "o", None));
        assert_eq!(c.purge(&PurgeFilter::default()), 1);
        assert_eq!(c.stats().purged, 5);
    }
}
