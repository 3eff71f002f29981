//! Memory against scale, measured in process with the allocator of the `tollgate` binary
//! (mimalloc) wrapped by a counter of live heap bytes:
//!
//! - the proxy's key ring (`tollgate_gateway::keys::KeyRing::replace_all`) against the number
//!   of subscriptions (two keys each, as the admin API builds it);
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
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_counters::{CachedPeriod, Counters, Period, SystemClock, TableKind, Take};
use tollgate_gateway::keys::{KeyEntry, KeyRing};
use tollgate_gateway::{Subscription, SubscriptionScope, SubscriptionState};

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

fn keyring(n: usize) {
    let product: Arc<str> = Arc::from("gold");
    let ring = KeyRing::new([7u8; 32]);
    let (f, ()) = measure(|| {
        ring.replace_all((0..n as u64).map(|i| KeyEntry {
            primary: pseudo_digest(i, 1),
            secondary: pseudo_digest(i, 2),
            subscription: Subscription {
                // The admin API's generated ids: `sub-` and 16 hex digits.
                id: Arc::from(format!("sub-{i:016x}").as_str()),
                state: SubscriptionState::Active,
                scope: if i % 2 == 0 {
                    SubscriptionScope::All
                } else {
                    SubscriptionScope::Product(product.clone())
                },
            },
        }))
    });
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
    drop(ring);
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
