//! Rollups: [`Usage`] counts of the calls that share a [`UsageKey`] (a minute or an hour,
//! product, API, operation, subscription and status).

use crate::event::{is_quota, is_rate_limit, Event, Outcome};
use crate::sketch::LatencySketch;
use std::sync::Arc;

/// Seconds in a minute bucket.
pub const MINUTE: i64 = 60;
/// Seconds in an hour bucket.
pub const HOUR: i64 = 3600;

/// The resolution of stored rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// One row per minute and key (kept 48 h by default).
    Minute,
    /// One row per hour and key, derived from the minutes (kept 90 days by default).
    Hour,
}

impl Resolution {
    /// The bucket length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE,
            Resolution::Hour => HOUR,
        }
    }

    /// The start of the bucket holding `unix_secs`.
    pub fn bucket_of(self, unix_secs: i64) -> i64 {
        unix_secs.div_euclid(self.seconds()) * self.seconds()
    }
}

/// What a rollup row is about. `None` ids are calls without one (a 404 has no API, an
/// anonymous call no subscription).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    /// Start of the bucket, Unix seconds (a multiple of 60 or 3600).
    pub bucket: i64,
    /// Product.
    pub product: Option<Arc<str>>,
    /// API.
    pub api: Option<Arc<str>>,
    /// Operation (unique within its API).
    pub operation: Option<Arc<str>>,
    /// Subscription.
    pub subscription: Option<Arc<str>>,
    /// Status sent (0: none).
    pub status: u16,
}

impl UsageKey {
    /// The minute key of `event`.
    pub fn of(event: &Event) -> UsageKey {
        UsageKey {
            bucket: Resolution::Minute.bucket_of(event.at_ms.div_euclid(1000)),
            product: event.product.clone(),
            api: event.api.clone(),
            operation: event.operation.clone(),
            subscription: event.subscription.clone(),
            status: event.status,
        }
    }

    /// The same key in the hour holding its minute.
    pub fn hour(&self) -> UsageKey {
        UsageKey {
            bucket: Resolution::Hour.bucket_of(self.bucket),
            ..self.clone()
        }
    }
}

/// Counts of a set of calls. Every field adds up exactly under [`Usage::merge`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Calls.
    pub calls: u64,
    /// Calls of outcome `success`.
    pub success: u64,
    /// Calls of outcome `blocked`.
    pub blocked: u64,
    /// Calls of outcome `failed`.
    pub failed: u64,
    /// Calls of outcome `other`.
    pub other: u64,
    /// Blocked calls refused by a rate limit (`rate-limit`, `rate-limit-by-key`).
    pub rate_limited: u64,
    /// Blocked calls refused by a quota (`quota`, `quota-by-key`).
    pub quota_exceeded: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Answer body bytes.
    pub bytes_out: u64,
    /// Sum of the total latencies, microseconds.
    pub latency_us_sum: u64,
    /// Calls that went upstream.
    pub upstream_calls: u64,
    /// Sum of their upstream latencies, microseconds.
    pub upstream_latency_us_sum: u64,
    /// Cache hits.
    pub cache_hits: u64,
    /// Cache misses.
    pub cache_misses: u64,
    /// Total latencies.
    pub latency: LatencySketch,
}

impl Usage {
    /// Count one call.
    pub fn record(&mut self, e: &Event) {
        self.calls += 1;
        match e.outcome {
            Outcome::Success => self.success += 1,
            Outcome::Blocked => self.blocked += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Other => self.other += 1,
        }
        if let Some(kind) = e.blocked_by.filter(|_| e.outcome == Outcome::Blocked) {
            if is_rate_limit(kind) {
                self.rate_limited += 1;
            } else if is_quota(kind) {
                self.quota_exceeded += 1;
            }
        }
        self.bytes_in += e.bytes_in;
        self.bytes_out += e.bytes_out;
        self.latency_us_sum += e.latency_us;
        if let Some(u) = e.upstream_latency_us {
            self.upstream_calls += 1;
            self.upstream_latency_us_sum += u;
        }
        match e.cache_hit {
            Some(true) => self.cache_hits += 1,
            Some(false) => self.cache_misses += 1,
            None => {}
        }
        self.latency.add(e.latency_us);
    }

    /// Add `other`'s calls to these.
    pub fn merge(&mut self, other: &Usage) {
        self.calls += other.calls;
        self.success += other.success;
        self.blocked += other.blocked;
        self.failed += other.failed;
        self.other += other.other;
        self.rate_limited += other.rate_limited;
        self.quota_exceeded += other.quota_exceeded;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.latency_us_sum += other.latency_us_sum;
        self.upstream_calls += other.upstream_calls;
        self.upstream_latency_us_sum += other.upstream_latency_us_sum;
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
        self.latency.merge(&other.latency);
    }
}

/// One rollup row: a key and its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// What it counts.
    pub key: UsageKey,
    /// The counts.
    pub usage: Usage,
}

/// Which rows a query reads: each given id must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Product id.
    pub product: Option<String>,
    /// API id.
    pub api: Option<String>,
    /// Operation id.
    pub operation: Option<String>,
    /// Subscription id.
    pub subscription: Option<String>,
}

impl UsageFilter {
    /// Whether `key` passes.
    pub fn matches(&self, key: &UsageKey) -> bool {
        fn ok(want: &Option<String>, have: &Option<Arc<str>>) -> bool {
            want.as_deref()
                .is_none_or(|w| have.as_deref().is_some_and(|h| h == w))
        }
        ok(&self.product, &key.product)
            && ok(&self.api, &key.api)
            && ok(&self.operation, &key.operation)
            && ok(&self.subscription, &key.subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_records() {
        assert_eq!(Resolution::Minute.bucket_of(125), 120);
        assert_eq!(Resolution::Hour.bucket_of(7_300), 7_200);
        assert_eq!(Resolution::Minute.bucket_of(-1), -60);
        let e = Event {
            at_ms: 3_725_500,
            api: Some("a".into()),
            status: 429,
            outcome: Outcome::Blocked,
            blocked_by: Some("rate-limit"),
            latency_us: 1500,
            cache_hit: Some(false),
            ..Event::default()
        };
        let key = UsageKey::of(&e);
        assert_eq!(key.bucket, 3_720);
        assert_eq!(key.hour().bucket, 3_600);
        let mut u = Usage::default();
        u.record(&e);
        u.record(&Event {
            outcome: Outcome::Success,
            status: 200,
            bytes_out: 10,
            upstream_latency_us: Some(700),
            cache_hit: Some(true),
            ..e.clone()
        });
        assert_eq!(
            (u.calls, u.blocked, u.success, u.rate_limited),
            (2, 1, 1, 1)
        );
        assert_eq!((u.cache_hits, u.cache_misses, u.upstream_calls), (1, 1, 1));
        let mut twice = u.clone();
        twice.merge(&u);
        assert_eq!(twice.calls, 4);
        assert_eq!(twice.latency.count(), 4);
        let f = UsageFilter {
            api: Some("a".into()),
            ..UsageFilter::default()
        };
        assert!(f.matches(&key));
        assert!(!UsageFilter {
            subscription: Some("s".into()),
            ..UsageFilter::default()
        }
        .matches(&key));
    }
}
