//! The in-process counters of one policy position: a concurrent map from counter key to a
//! slot holding the current window's counts.
//!
//! Each check-and-increment locks only its own slot (a `std::sync::Mutex` around four
//! integers, held for a few nanoseconds and never across an `.await`), while the map's
//! shard is only read-locked; so checks of different keys run in parallel, and checks of one
//! key are serialized, which is what makes "exactly N per window" hold under any
//! concurrency.

use crate::window::Window;
use dashmap::DashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Whether a table belongs to a rate limit or a quota (only quotas are persisted and listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// `rate-limit`, `rate-limit-by-key`.
    Rate,
    /// `quota`, `quota-by-key`.
    Quota,
}

/// What a check asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Take<'a> {
    /// Refuse when this many calls were already counted in the window.
    pub calls_limit: Option<u64>,
    /// Refuse when this many bytes were already counted in the window.
    pub bytes_limit: Option<u64>,
    /// The caller's subscription (recorded with a quota counter, for the usage listing).
    pub subscription: Option<&'a Arc<str>>,
}

/// Why a check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The calls limit is reached.
    Calls,
    /// The bandwidth limit is reached.
    Bandwidth,
}

/// The result of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when the call was counted; why not otherwise.
    pub refused: Option<Refusal>,
    /// Calls counted in the window, this one included when it was allowed.
    pub calls: u64,
    /// Bytes counted in the window.
    pub bytes: u64,
}

#[derive(Debug)]
pub(crate) struct SlotState {
    pub(crate) window: Window,
    pub(crate) calls: u64,
    pub(crate) bytes: u64,
    pub(crate) subscription: Option<Arc<str>>,
    /// Changed since the last flush to the store.
    pub(crate) dirty: bool,
}

/// One counter.
#[derive(Debug)]
pub(crate) struct Slot(Mutex<SlotState>);

impl Slot {
    fn new(window: Window, subscription: Option<&Arc<str>>) -> Slot {
        Slot(Mutex::new(SlotState {
            window,
            calls: 0,
            bytes: 0,
            subscription: subscription.cloned(),
            dirty: false,
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Nothing can panic while the lock is held (integer arithmetic only).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SlotState {
    /// Move to `window` if the slot holds an older one (its counts start over).
    fn roll(&mut self, window: Window, subscription: Option<&Arc<str>>) {
        if self.window.start_ms != window.start_ms {
            self.window = window;
            self.calls = 0;
            self.bytes = 0;
            self.subscription = subscription.cloned();
            self.dirty = true;
        } else if self.subscription.is_none() && subscription.is_some() {
            self.subscription = subscription.cloned();
        }
    }
}

/// The counters of one policy position (`origin`), keyed by counter key.
#[derive(Debug)]
pub struct Table {
    origin: Arc<str>,
    kind: TableKind,
    pub(crate) slots: DashMap<Arc<str>, Slot>,
}

impl Table {
    pub(crate) fn new(origin: Arc<str>, kind: TableKind) -> Table {
        Table {
            origin,
            kind,
            // More shards than dashmap's default (4 × CPUs): a sweep write-locks one shard at
            // a time, so smaller shards keep each pause short with a million keys.
            slots: DashMap::with_shard_amount(64),
        }
    }

    /// The policy position this table counts for.
    pub fn origin(&self) -> &Arc<str> {
        &self.origin
    }

    /// Rate limit or quota.
    pub fn kind(&self) -> TableKind {
        self.kind
    }

    /// Counters held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table holds no counter.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Run `f` on the slot of `key`, created for `window` when missing. The map's shard is
    /// read-locked (or, on creation, write-locked) and the slot locked while `f` runs.
    fn with_slot<T>(
        &self,
        key: &str,
        window: Window,
        subscription: Option<&Arc<str>>,
        f: impl FnOnce(&mut SlotState) -> T,
    ) -> T {
        if let Some(slot) = self.slots.get(key) {
            let mut s = slot.lock();
            s.roll(window, subscription);
            return f(&mut s);
        }
        let slot = self
            .slots
            .entry(Arc::from(key))
            .or_insert_with(|| Slot::new(window, subscription));
        let mut s = slot.lock();
        s.roll(window, subscription);
        f(&mut s)
    }

    /// Atomically: refuse if a limit of `take` is reached in `window`, else count one call.
    pub fn take(&self, key: &str, window: Window, take: Take<'_>) -> Outcome {
        self.with_slot(key, window, take.subscription, |s| {
            let refused = if take.calls_limit.is_some_and(|l| s.calls >= l) {
                Some(Refusal::Calls)
            } else if take.bytes_limit.is_some_and(|l| s.bytes >= l) {
                Some(Refusal::Bandwidth)
            } else {
                s.calls += 1;
                s.dirty = true;
                None
            };
            Outcome {
                refused,
                calls: s.calls,
                bytes: s.bytes,
            }
        })
    }

    /// Give back one call counted in `window` (a request that did not count after all),
    /// unless that window is over.
    pub fn refund(&self, key: &str, window: Window) {
        if let Some(slot) = self.slots.get(key) {
            let mut s = slot.lock();
            if s.window.start_ms == window.start_ms && s.calls > 0 {
                s.calls -= 1;
                s.dirty = true;
            }
        }
    }

    /// Count `bytes` in `window`, unless that window is over.
    pub fn add_bytes(&self, key: &str, window: Window, bytes: u64) {
        if let Some(slot) = self.slots.get(key) {
            let mut s = slot.lock();
            if s.window.start_ms == window.start_ms {
                s.bytes = s.bytes.saturating_add(bytes);
                s.dirty = true;
            }
        }
    }

    /// Record counts learnt from a shared store (the local copy used for listings and
    /// persistence when counters live in Redis).
    pub fn mirror(
        &self,
        key: &str,
        window: Window,
        calls: u64,
        bytes: u64,
        subscription: Option<&Arc<str>>,
    ) {
        self.with_slot(key, window, subscription, |s| {
            if s.calls != calls || s.bytes != bytes {
                s.calls = calls;
                s.bytes = bytes;
                s.dirty = true;
            }
        });
    }

    /// Set a counter (loading persisted counts at start).
    pub(crate) fn restore(
        &self,
        key: &str,
        window: Window,
        calls: u64,
        bytes: u64,
        subscription: Option<Arc<str>>,
    ) {
        self.slots.insert(
            Arc::from(key),
            Slot(Mutex::new(SlotState {
                window,
                calls,
                bytes,
                subscription,
                dirty: false,
            })),
        );
    }

    /// The counts of `key` in `window` (zero when it has none there).
    pub fn get(&self, key: &str, window: Window) -> (u64, u64) {
        match self.slots.get(key) {
            Some(slot) => {
                let s = slot.lock();
                if s.window.start_ms == window.start_ms {
                    (s.calls, s.bytes)
                } else {
                    (0, 0)
                }
            }
            None => (0, 0),
        }
    }

    /// Remove every counter whose window ended at or before `now_ms`: such a counter holds
    /// nothing a check could use (the next check starts the window over), so evicting it
    /// changes no decision. Returns how many were removed; shrinks the map when it became
    /// mostly empty.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let before = self.slots.len();
        self.slots
            .retain(|_, slot| slot.lock().window.end_ms > now_ms);
        let after = self.slots.len();
        if self.slots.capacity() > 4 * after + 1024 {
            self.slots.shrink_to_fit();
        }
        before - after
    }
}
