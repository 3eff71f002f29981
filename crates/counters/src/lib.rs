//! Tollgate's rate-limit and quota counters.
//!
//! [`Counters`] is the long-lived registry the limit policies count in. It lives outside
//! the config snapshot (the gateway makes one per process and hands it to every policy
//! build), and is keyed by stable ids: a table per policy position (`origin`, e.g.
//! `product:starter/inbound/1`) and, inside it, a counter per counter key (the
//! subscription id, or the rendered `counter_key`). A config swap that keeps a policy at
//! its position keeps its counts.
//!
//! Algorithm: **fixed windows** ([`window`]). A counter holds the count of the current
//! window; a check-and-increment is atomic, so with `calls: N` exactly N calls are counted
//! in each window whatever the concurrency, and `Retry-After` is the time left to the
//! window's end (rounded up to whole seconds): the next window starts from zero, so a call
//! sent then succeeds. Error bound: a fixed window is exact *within* a window; over an
//! arbitrary sliding interval of one period a client can get at most `2N` calls through
//! (N at the end of a window and N at the start of the next), never more.
//!
//! Where the counts live: in process ([`local`]), or in Redis ([`shared`]) when every
//! node should share them. Memory stays bounded: [`Counters::sweep`] removes counters
//! whose window is over (they hold nothing a check could use, so this changes no
//! decision), so memory follows the keys active in the current window, not every key ever
//! seen. Quota counters are written to the store by [`Counters::flush`] and loaded back by
//! [`Counters::load`].

pub mod clock;
pub mod local;
pub mod shared;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod window;

pub use clock::{Clock, ManualClock, SystemClock};
pub use local::{Outcome, Refusal, Table, TableKind, Take};
pub use shared::{redacted_url, At, Check, Op, RedisCounters, RedisTls, Remote, SharedError};
pub use window::{CachedPeriod, CalendarKind, Period, PeriodError, Window};

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Longest counter key kept as is; longer rendered keys are replaced by their SHA-256
/// (`sha256:HEX`), so a client cannot make the gateway or Redis hold huge keys.
pub const MAX_KEY_LEN: usize = 200;

/// A counter key as stored: `rendered`, or `sha256:HEX` of it when it is longer than
/// [`MAX_KEY_LEN`] bytes (stable across nodes and restarts).
pub fn counter_key(rendered: &str) -> Cow<'_, str> {
    if rendered.len() <= MAX_KEY_LEN {
        return Cow::Borrowed(rendered);
    }
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let digest = Sha256::digest(rendered.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    Cow::Owned(out)
}

/// A quota counter as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedCounter {
    /// Policy position.
    pub origin: String,
    /// Counter key.
    pub key: String,
    /// The subscription it belongs to (listed under it by the usage call).
    pub subscription: Option<String>,
    /// Its window.
    pub window: Window,
    /// Calls counted.
    pub calls: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// A quota counter of a subscription, for the usage listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Policy position.
    pub origin: Arc<str>,
    /// Counter key.
    pub key: Arc<str>,
    /// The current window.
    pub window: Window,
    /// Calls counted.
    pub calls: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// Counts of counter-store failures (Redis unreachable or too slow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreErrorCounts {
    /// Checks that could not reach the store.
    pub errors: u64,
    /// Of those, calls let through (`on_store_error: allow`).
    pub allowed: u64,
    /// Of those, calls refused (`on_store_error: deny`).
    pub denied: u64,
}

/// The registry of every counter of the process; see the crate docs.
pub struct Counters {
    clock: Arc<dyn Clock>,
    rate: DashMap<Arc<str>, Arc<Table>>,
    quota: DashMap<Arc<str>, Arc<Table>>,
    shared: Option<Arc<RedisCounters>>,
    errors: AtomicU64,
    allowed_on_error: AtomicU64,
    denied_on_error: AtomicU64,
    /// Flushes and resets, one at a time (a reset must not be undone by a flush that read
    /// the counter before it).
    persist: Mutex<()>,
    last_sweep: AtomicI64,
    /// At most one "store unreachable" warning per 10 s in the log (governor's GCRA).
    warn_limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("rate_tables", &self.rate.len())
            .field("quota_tables", &self.quota.len())
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::local(Arc::new(SystemClock))
    }
}

impl Counters {
    /// In-process counters reading `clock`.
    pub fn local(clock: Arc<dyn Clock>) -> Counters {
        Counters {
            clock,
            rate: DashMap::new(),
            quota: DashMap::new(),
            shared: None,
            errors: AtomicU64::new(0),
            allowed_on_error: AtomicU64::new(0),
            denied_on_error: AtomicU64::new(0),
            persist: Mutex::new(()),
            last_sweep: AtomicI64::new(i64::MIN),
            warn_limiter: RateLimiter::direct(
                Quota::with_period(std::time::Duration::from_secs(10))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)),
            ),
        }
    }

    /// Counters shared through the Redis at `url` (nothing connects before the first
    /// check). The local tables then only mirror what Redis answered (usage listings,
    /// persistence).
    pub fn redis(url: &str, clock: Arc<dyn Clock>) -> Result<Counters, String> {
        Counters::redis_with_tls(url, &RedisTls::default(), clock)
    }

    /// [`Counters::redis`] with TLS material for a `rediss://` URL.
    pub fn redis_with_tls(
        url: &str,
        tls: &RedisTls,
        clock: Arc<dyn Clock>,
    ) -> Result<Counters, String> {
        let shared = RedisCounters::with_tls(url, tls, clock.clone())?;
        let mut c = Counters::local(clock);
        c.shared = Some(Arc::new(shared));
        Ok(c)
    }

    /// The shared store, when counters live in Redis.
    pub fn shared(&self) -> Option<&Arc<RedisCounters>> {
        self.shared.as_ref()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Now, by the injected clock (ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The table of policy position `origin` (made on first use; the same table for every
    /// build of a policy at that position).
    pub fn table(&self, kind: TableKind, origin: &str) -> Arc<Table> {
        let map = self.map(kind);
        if let Some(t) = map.get(origin) {
            return t.clone();
        }
        let origin: Arc<str> = Arc::from(origin);
        map.entry(origin.clone())
            .or_insert_with(|| Arc::new(Table::new(origin, kind)))
            .clone()
    }

    fn map(&self, kind: TableKind) -> &DashMap<Arc<str>, Arc<Table>> {
        match kind {
            TableKind::Rate => &self.rate,
            TableKind::Quota => &self.quota,
        }
    }

    /// Counters held in memory, over every table.
    pub fn len(&self) -> usize {
        self.tables().map(|t| t.len()).sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An estimate of the memory the counters take (bytes): map capacity times the size of
    /// an entry, plus the keys' text.
    pub fn approx_memory(&self) -> usize {
        let entry = std::mem::size_of::<(Arc<str>, local::Slot)>() + 8;
        self.tables()
            .map(|t| {
                let keys: usize = t.slots.iter().map(|e| e.key().len() + 16).sum();
                t.slots.capacity() * entry + keys
            })
            .sum()
    }

    fn tables(&self) -> impl Iterator<Item = Arc<Table>> + '_ {
        self.rate
            .iter()
            .map(|e| e.value().clone())
            .chain(self.quota.iter().map(|e| e.value().clone()))
    }

    /// Evict every counter whose window is over, and every empty table no policy uses any
    /// more. Runs at most once per second (extra calls return 0 at once). Returns how many
    /// counters were evicted.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000 && now >= last {
            return 0;
        }
        self.last_sweep.store(now, Ordering::Relaxed);
        self.sweep_at(now)
    }

    /// [`Counters::sweep`] at `now_ms`, unconditionally.
    pub fn sweep_at(&self, now_ms: i64) -> usize {
        let mut evicted = 0;
        for map in [&self.rate, &self.quota] {
            for table in map.iter().map(|e| e.value().clone()).collect::<Vec<_>>() {
                evicted += table.sweep(now_ms);
            }
            // A table only this registry holds, and empty: no policy counts there now.
            map.retain(|_, t| !(t.is_empty() && Arc::strong_count(t) == 1));
        }
        evicted
    }

    /// Record a counter-store failure: counted, and logged at most every 10 s.
    pub fn record_store_error(&self, err: &dyn std::fmt::Display, allowed: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if allowed {
            self.allowed_on_error.fetch_add(1, Ordering::Relaxed);
        } else {
            self.denied_on_error.fetch_add(1, Ordering::Relaxed);
        }
        if self.warn_limiter.check().is_ok() {
            tracing::warn!(
                error = %err,
                errors_so_far = self.errors.load(Ordering::Relaxed),
                "the counter store failed; limits apply their on_store_error setting"
            );
        }
    }

    /// Record a failure of a background counter update (a refund, bytes at completion):
    /// counted as an error, logged at most every 10 s.
    pub fn record_background_error(&self, err: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.warn_limiter.check().is_ok() {
            tracing::warn!(error = %err, "a counter update could not reach the counter store");
        }
    }

    /// Counter-store failures so far (the `tollgate_counter_store_errors_total` metric).
    pub fn store_errors(&self) -> StoreErrorCounts {
        StoreErrorCounts {
            errors: self.errors.load(Ordering::Relaxed),
            allowed: self.allowed_on_error.load(Ordering::Relaxed),
            denied: self.denied_on_error.load(Ordering::Relaxed),
        }
    }

    /// Load persisted quota counters (at start). Counters whose window is over are skipped.
    /// Returns how many were loaded.
    pub fn load(&self, rows: Vec<PersistedCounter>) -> usize {
        let now = self.now_ms();
        let mut n = 0;
        for row in rows {
            if row.window.end_ms <= now {
                continue;
            }
            self.table(TableKind::Quota, &row.origin).restore(
                &row.key,
                row.window,
                row.calls,
                row.bytes,
                row.subscription.as_deref().map(Arc::from),
            );
            n += 1;
        }
        n
    }

    /// Write the quota counters changed since the last flush: `save(changed, now_ms)` gets
    /// them (it should also drop stored counters whose window ended before `now_ms`). When
    /// `save` fails, the counters stay marked as changed for the next flush. Returns how
    /// many were written.
    pub fn flush<E>(
        &self,
        save: impl FnOnce(&[PersistedCounter], i64) -> Result<(), E>,
    ) -> Result<usize, E> {
        let _guard = self.persist.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now_ms();
        let mut rows = Vec::new();
        for table in self
            .quota
            .iter()
            .map(|e| e.value().clone())
            .collect::<Vec<_>>()
        {
            for entry in table.slots.iter() {
                let mut s = entry.value().lock();
                if !s.dirty || s.window.end_ms <= now {
                    continue;
                }
                s.dirty = false;
                rows.push(PersistedCounter {
                    origin: table.origin().to_string(),
                    key: entry.key().to_string(),
                    subscription: s.subscription.as_deref().map(str::to_owned),
                    window: s.window,
                    calls: s.calls,
                    bytes: s.bytes,
                });
            }
        }
        match save(&rows, now) {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                for row in &rows {
                    if let Some(t) = self.quota.get(row.origin.as_str()) {
                        if let Some(slot) = t.slots.get(row.key.as_str()) {
                            slot.lock().dirty = true;
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// The live quota counters of `subscription` held here.
    pub fn usage(&self, subscription: &str) -> Vec<UsageRow> {
        let now = self.now_ms();
        let mut rows = Vec::new();
        for table in self
            .quota
            .iter()
            .map(|e| e.value().clone())
            .collect::<Vec<_>>()
        {
            for entry in table.slots.iter() {
                let s = entry.value().lock();
                if s.window.end_ms > now && s.subscription.as_deref() == Some(subscription) {
                    rows.push(UsageRow {
                        origin: table.origin().clone(),
                        key: entry.key().clone(),
                        window: s.window,
                        calls: s.calls,
                        bytes: s.bytes,
                    });
                }
            }
        }
        rows.sort_by(|a, b| (&a.origin, &a.key).cmp(&(&b.origin, &b.key)));
        rows
    }

    /// Remove every quota counter of `subscription` held here, then run `store` (which
    /// deletes the persisted ones), with flushes held off meanwhile. Returns the removed
    /// counters (to delete them from Redis too) and what `store` answered.
    pub fn reset_subscription<T, E>(
        &self,
        subscription: &str,
        store: impl FnOnce() -> Result<T, E>,
    ) -> Result<(Vec<UsageRow>, T), E> {
        let _guard = self.persist.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = Vec::new();
        for table in self
            .quota
            .iter()
            .map(|e| e.value().clone())
            .collect::<Vec<_>>()
        {
            table.slots.retain(|key, slot| {
                let s = slot.lock();
                if s.subscription.as_deref() == Some(subscription) {
                    removed.push(UsageRow {
                        origin: table.origin().clone(),
                        key: key.clone(),
                        window: s.window,
                        calls: s.calls,
                        bytes: s.bytes,
                    });
                    false
                } else {
                    true
                }
            });
        }
        let out = store()?;
        Ok((removed, out))
    }
}

#[cfg(test)]
mod tests;
