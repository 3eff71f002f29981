//! Memory against scale, measured in process with the allocator of the `tollgate` binary
//! (mimalloc) wrapped by a counter of live heap bytes:
//!
//! - the proxy's key ring (`tollgate_gateway::keys::KeyRing::replace_all`, the start-up
//!   build) against the number of subscriptions (two keys each, as the admin API builds
//!   it); then, at that size, the cost of one subscription change (`upsert` / `remove`, what
//!   the admin API does per change) and of one lookup (the proxy's per-request work: HMAC,
//!   map lookup, constant-time compare), beside the same lookup in a `std` `HashMap` (the
//!   structure the ring used before it became a concurrent map);
//! - the rate-limit registry (`tollgate_counters::Counters`, one table, one counter per
//!   distinct key) against the number of distinct keys, and the same for a quota table
//!   (which also records the subscription of each counter).
//!
//! For each size it prints the live heap bytes the structure holds (allocated minus freed
//! while building it, the structure kept alive), the growth of the process's resident set
//! and of its peak resident set (VmHWM: a ring is built beside the one it replaces), and
//! the build time. RSS figures mean something only for the first measurement of a process:
//! bench/scale.sh runs one per process.
//!
//! ```text
//! scale-memory [keyring|rate|quota|all] [SIZES...]     default: all 10000 100000 1000000
//! ```
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tollgate_counters::{CachedPeriod, Counters, Period, SystemClock, TableKind, Take};
use tollgate_gateway::keys::{digest, generate_key, Digest, KeyEntry, KeyRing};
use tollgate_gateway::{Subscription, SubscriptionLookup, SubscriptionScope, SubscriptionState};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to mimalloc unchanged; only counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A `VmRSS` / `VmHWM` line of /proc/self/status, bytes.
fn status_kib(field: &str) -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<isize>().ok())
        .unwrap_or(0)
        * 1024
}

/// Resident set size of this process, bytes.
fn rss() -> isize {
    status_kib("VmRSS:")
}

/// Peak resident set size of this process, bytes.
fn hwm() -> isize {
    status_kib("VmHWM:")
}

fn mib(b: isize) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

struct Figure {
    live: isize,
    rss: isize,
    peak: isize,
    time: Duration,
}

/// Measure `build`, keeping what it returns alive until the figures are read.
fn measure<T>(build: impl FnOnce() -> T) -> (Figure, T) {
    let (l0, r0, h0, t0) = (live(), rss(), hwm(), Instant::now());
    let kept = build();
    let time = t0.elapsed();
    (
        Figure {
            live: live() - l0,
            rss: rss() - r0,
            peak: hwm() - h0,
            time,
        },
        kept,
    )
}

fn pseudo_digest(i: u64, salt: u64) -> [u8; 32] {
    // Distinct, well spread 32-byte values (the ring is keyed by HMAC digests).
    let mut d = [0u8; 32];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    for chunk in d.chunks_mut(8) {
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 29;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    d
}

fn entry(i: u64, product: &Arc<str>) -> KeyEntry {
    KeyEntry {
        primary: pseudo_digest(i, 1),
        secondary: pseudo_digest(i, 2),
        subscription: Subscription {
            // The admin API's generated ids: `sub-` and 16 hex digits.
            id: Arc::from(format!("sub-{i:016x}").as_str()),
            state: SubscriptionState::Active,
            scope: if i.is_multiple_of(2) {
                SubscriptionScope::All
            } else {
                SubscriptionScope::Product(product.clone())
            },
        },
    }
}

/// How many subscriptions with real keys the change and lookup figures use.
const REAL: usize = 10_000;
/// How many lookups the lookup figures time.
const LOOKUPS: usize = 1_000_000;

fn per_op(t: Duration, ops: usize) -> f64 {
    t.as_secs_f64() * 1e9 / ops as f64
}

fn keyring(n: usize) {
    let product: Arc<str> = Arc::from("gold");
    let ring = KeyRing::new([7u8; 32]);
    let (f, ()) = measure(|| ring.replace_all((0..n as u64).map(|i| entry(i, &product))));
    assert_eq!(ring.len(), 2 * n);
    println!(
        "key ring, {n} subscriptions ({} keys): live heap {} ({:.0} B/subscription), RSS +{}, peak RSS +{}, replace_all {:.1} ms",
        2 * n,
        mib(f.live),
        f.live as f64 / n as f64,
        mib(f.rss),
        mib(f.peak),
        f.time.as_secs_f64() * 1e3
    );
    changes_and_lookups(&ring, n, &product);
    drop(ring);
}

/// At `n` subscriptions: `REAL` more with real keys created, one key of each rotated, and
/// each deleted, one `upsert` / `remove` at a time; lookups of their keys in the ring and
/// in a `std` `HashMap` holding the same entries.
fn changes_and_lookups(ring: &KeyRing, n: usize, product: &Arc<str>) {
    let secret = ring.secret();
    let mut real: Vec<(String, String, KeyEntry)> = (0..REAL)
        .map(|i| {
            let (p, s) = (generate_key(), generate_key());
            let mut e = entry((n + i) as u64, product);
            e.primary = digest(&secret, &p);
            e.secondary = digest(&secret, &s);
            (p, s, e)
        })
        .collect();
    let t0 = Instant::now();
    for (_, _, e) in &real {
        ring.upsert(e.clone(), &[]);
    }
    let create = t0.elapsed();
    // New primary keys, made before the clock starts.
    let rotated: Vec<(String, KeyEntry)> = real
        .iter()
        .map(|(_, _, e)| {
            let p = generate_key();
            let mut e = e.clone();
            e.primary = digest(&secret, &p);
            (p, e)
        })
        .collect();
    let t0 = Instant::now();
    for ((_, _, old), (_, new)) in real.iter().zip(&rotated) {
        ring.upsert(new.clone(), &[old.primary, old.secondary]);
    }
    let rotate = t0.elapsed();
    for ((p, _, e), (p2, e2)) in real.iter_mut().zip(rotated) {
        *p = p2;
        *e = e2;
    }
    assert_eq!(ring.len(), 2 * (n + REAL));

    // Lookups in a scattered order (a stride prime to REAL), primary and secondary keys.
    let order: Vec<&str> = (0..LOOKUPS)
        .map(|k| {
            let (p, s, _) = &real[(k * 7919) % REAL];
            if k.is_multiple_of(2) {
                p.as_str()
            } else {
                s.as_str()
            }
        })
        .collect();
    let ring_lookups = || {
        let t0 = Instant::now();
        for key in &order {
            let sub = ring.lookup(key);
            assert!(sub.is_some());
            std::hint::black_box(sub);
        }
        t0.elapsed()
    };

    // The same lookup in a std HashMap of the same entries.
    let mut map: HashMap<Digest, Subscription> = HashMap::with_capacity(2 * (n + REAL));
    for i in 0..n as u64 {
        let e = entry(i, product);
        map.insert(e.primary, e.subscription.clone());
        map.insert(e.secondary, e.subscription);
    }
    for (_, _, e) in &real {
        map.insert(e.primary, e.subscription.clone());
        map.insert(e.secondary, e.subscription.clone());
    }
    let std_lookups = || {
        let t0 = Instant::now();
        for key in &order {
            let d = ring.digest(key);
            let sub = map
                .get_key_value(&d)
                .and_then(|(stored, sub)| bool::from(stored.ct_eq(&d)).then(|| sub.clone()));
            assert!(sub.is_some());
            std::hint::black_box(sub);
        }
        t0.elapsed()
    };
    // The HMAC alone, as the ring computes it (keyed once, cloned per key).
    let hmacs = || {
        let t0 = Instant::now();
        for key in &order {
            std::hint::black_box(ring.digest(key));
        }
        t0.elapsed()
    };
    // Alternated, best of three each: the machine is shared.
    let (mut lookup, mut lookup_std, mut hmac) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        lookup = lookup.min(ring_lookups());
        lookup_std = lookup_std.min(std_lookups());
        hmac = hmac.min(hmacs());
    }
    drop(map);

    let t0 = Instant::now();
    for (_, _, e) in &real {
        ring.remove(&e.subscription.id, &[e.primary, e.secondary]);
    }
    let remove = t0.elapsed();
    assert_eq!(ring.len(), 2 * n);
    println!(
        "key ring, {n} subscriptions: one change: create {:.2} µs, rotate a key {:.2} µs, delete {:.2} µs; \
         one lookup: {:.0} ns (std HashMap: {:.0} ns; HMAC alone {:.0} ns)",
        per_op(create, REAL) / 1e3,
        per_op(rotate, REAL) / 1e3,
        per_op(remove, REAL) / 1e3,
        per_op(lookup, LOOKUPS),
        per_op(lookup_std, LOOKUPS),
        per_op(hmac, LOOKUPS),
    );
}

fn registry(kind: TableKind, n: usize) {
    let subscription: Arc<str> = Arc::from("sub-0000000000000001");
    let (f, counters) = measure(|| {
        let counters = Counters::local(Arc::new(SystemClock));
        let table = counters.table(kind, "api:bench/inbound/0");
        let period = CachedPeriod::new(Period::fixed(Duration::from_secs(3600)));
        let take = Take {
            calls_limit: Some(u64::MAX),
            bytes_limit: None,
            subscription: (kind == TableKind::Quota).then_some(&subscription),
        };
        for i in 0..n as u64 {
            let w = period.window_at(counters.now_ms());
            let out = table.take(&format!("sub-{i:016x}"), w, take);
            assert!(out.refused.is_none());
        }
        counters
    });
    assert_eq!(counters.len(), n);
    println!(
        "{} registry, {n} distinct keys: live heap {} ({:.0} B/key), approx_memory() {}, RSS +{}, peak RSS +{}, {:.0} ns/first check",
        match kind {
            TableKind::Rate => "rate-limit",
            TableKind::Quota => "quota",
        },
        mib(f.live),
        f.live as f64 / n as f64,
        mib(counters.approx_memory() as isize),
        mib(f.rss),
        mib(f.peak),
        f.time.as_secs_f64() * 1e9 / n as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args
        .iter()
        .find(|a| ["keyring", "rate", "quota", "all"].contains(&a.as_str()))
        .map_or("all", |a| a.as_str());
    let mut sizes: Vec<usize> = args
        .iter()
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000, 1_000_000];
    }
    if matches!(what, "keyring" | "all") {
        for &n in &sizes {
            keyring(n);
        }
    }
    if matches!(what, "rate" | "all") {
        for &n in &sizes {
            registry(TableKind::Rate, n);
        }
    }
    if matches!(what, "quota" | "all") {
        for &n in &sizes {
            registry(TableKind::Quota, n);
        }
    }
}
