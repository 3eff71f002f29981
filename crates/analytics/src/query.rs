//! Reports: rollup rows grouped by one dimension, as `GET /analytics/requests` answers them.
//!
//! Counts are sums of the stored rows, so they are exact; latency percentiles come from the
//! merged sketches of the group (within 1%), the average from the exact sum.

use crate::rollup::{Resolution, Usage, UsageRow};
use serde::Serialize;
use std::collections::HashMap;

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// Subscription id.
    Subscription,
    /// Product id.
    Product,
    /// API id.
    Api,
    /// `API/OPERATION` (operation ids are unique within their API only).
    Operation,
    /// Status code.
    Status,
    /// Minute (RFC 3339 start of the minute).
    Minute,
    /// Hour (RFC 3339 start of the hour).
    Hour,
}

impl GroupBy {
    /// Parse `subscription`, `product`, `api`, `operation`, `status`, `minute`, `hour`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "subscription" => GroupBy::Subscription,
            "product" => GroupBy::Product,
            "api" => GroupBy::Api,
            "operation" => GroupBy::Operation,
            "status" => GroupBy::Status,
            "minute" => GroupBy::Minute,
            "hour" => GroupBy::Hour,
            _ => return None,
        })
    }

    /// Whether the groups are time buckets (sorted by time rather than by calls).
    pub fn is_time(self) -> bool {
        matches!(self, GroupBy::Minute | GroupBy::Hour)
    }
}

/// One row of a report (contract §4), plus a few extensions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    /// The group: an id, `API/OPERATION`, a status code, or an RFC 3339 time. `null` for
    /// calls without one (no subscription, no matched API...).
    pub key: Option<String>,
    /// Calls.
    pub calls_total: u64,
    /// 2xx/3xx answers.
    pub calls_success: u64,
    /// Answers a policy made (401, 403, 429, rate-limit 503).
    pub calls_blocked: u64,
    /// 5xx answers and upstream errors.
    pub calls_failed: u64,
    /// The rest.
    pub calls_other: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Answer body bytes.
    pub bytes_out: u64,
    /// Average latency (exact), milliseconds; `null` without calls.
    pub latency_ms_avg: Option<f64>,
    /// Median latency, milliseconds (within 1%).
    pub latency_ms_p50: Option<f64>,
    /// 95th percentile latency, milliseconds (within 1%).
    pub latency_ms_p95: Option<f64>,
    /// 99th percentile latency, milliseconds (within 1%).
    pub latency_ms_p99: Option<f64>,
    /// Cache hits.
    pub cache_hits: u64,
    /// Cache misses.
    pub cache_misses: u64,
    /// Extension: blocked calls refused by a rate limit.
    pub calls_rate_limited: u64,
    /// Extension: blocked calls refused by a quota.
    pub calls_quota_exceeded: u64,
    /// Extension: average upstream latency of the calls that went upstream, milliseconds.
    pub upstream_latency_ms_avg: Option<f64>,
}

fn ms(micros: f64) -> f64 {
    (micros / 1000.0 * 1000.0).round() / 1000.0
}

impl ReportRow {
    /// The row of `usage` under `key`.
    pub fn from_usage(key: Option<String>, u: &Usage) -> ReportRow {
        let avg = |sum: u64, n: u64| (n > 0).then(|| ms(sum as f64 / n as f64));
        let q = |q: f64| u.latency.quantile(q).map(ms);
        ReportRow {
            key,
            calls_total: u.calls,
            calls_success: u.success,
            calls_blocked: u.blocked,
            calls_failed: u.failed,
            calls_other: u.other,
            bytes_in: u.bytes_in,
            bytes_out: u.bytes_out,
            latency_ms_avg: avg(u.latency_us_sum, u.calls),
            latency_ms_p50: q(0.50),
            latency_ms_p95: q(0.95),
            latency_ms_p99: q(0.99),
            cache_hits: u.cache_hits,
            cache_misses: u.cache_misses,
            calls_rate_limited: u.rate_limited,
            calls_quota_exceeded: u.quota_exceeded,
            upstream_latency_ms_avg: avg(u.upstream_latency_us_sum, u.upstream_calls),
        }
    }
}

/// RFC 3339 UTC of Unix seconds, to the second (`2026-11-22T02:30:00Z`).
pub fn rfc3339(unix_secs: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// Parse an RFC 3339 time into Unix seconds (fractions are truncated).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Group `rows` by `group_by`: time groups in time order, the others by calls (most first,
/// then by key). `rows` may be minute or hour rows; grouping minutes by hour is exact.
pub fn report(rows: &[UsageRow], group_by: GroupBy) -> Vec<ReportRow> {
    let mut groups: HashMap<GroupKey, Usage> = HashMap::new();
    for row in rows {
        let k = &row.key;
        let key = match group_by {
            GroupBy::Subscription => GroupKey::Text(k.subscription.as_deref().map(str::to_owned)),
            GroupBy::Product => GroupKey::Text(k.product.as_deref().map(str::to_owned)),
            GroupBy::Api => GroupKey::Text(k.api.as_deref().map(str::to_owned)),
            GroupBy::Operation => GroupKey::Text(match (&k.api, &k.operation) {
                (Some(a), Some(o)) => Some(format!("{a}/{o}")),
                _ => None,
            }),
            GroupBy::Status => GroupKey::Status(k.status),
            GroupBy::Minute => GroupKey::Time(Resolution::Minute.bucket_of(k.bucket)),
            GroupBy::Hour => GroupKey::Time(Resolution::Hour.bucket_of(k.bucket)),
        };
        groups.entry(key).or_default().merge(&row.usage);
    }
    let mut out: Vec<(GroupKey, Usage)> = groups.into_iter().collect();
    if group_by.is_time() || group_by == GroupBy::Status {
        out.sort_by(|a, b| a.0.cmp(&b.0));
    } else {
        out.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then_with(|| a.0.cmp(&b.0)));
    }
    out.into_iter()
        .map(|(k, u)| ReportRow::from_usage(k.render(), &u))
        .collect()
}

/// Sum of every row (a report's total line).
pub fn total(rows: &[UsageRow]) -> ReportRow {
    let mut u = Usage::default();
    for r in rows {
        u.merge(&r.usage);
    }
    ReportRow::from_usage(None, &u)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum GroupKey {
    Text(Option<String>),
    Status(u16),
    Time(i64),
}

impl GroupKey {
    fn render(self) -> Option<String> {
        match self {
            GroupKey::Text(t) => t,
            GroupKey::Status(s) => Some(s.to_string()),
            GroupKey::Time(t) => Some(rfc3339(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Outcome};
    use crate::rollup::UsageKey;

    fn row(bucket: i64, sub: Option<&str>, status: u16, outcome: Outcome, n: u64) -> UsageRow {
        let mut usage = Usage::default();
        for i in 0..n {
            usage.record(&Event {
                status,
                outcome,
                latency_us: 1000 * (i + 1),
                bytes_out: 10,
                ..Event::default()
            });
        }
        UsageRow {
            key: UsageKey {
                bucket,
                product: None,
                api: Some("echo".into()),
                operation: Some("get".into()),
                subscription: sub.map(Into::into),
                status,
            },
            usage,
        }
    }

    #[test]
    fn groups_are_exact_sums() {
        let rows = vec![
            row(60, Some("a"), 200, Outcome::Success, 3),
            row(120, Some("a"), 200, Outcome::Success, 2),
            row(120, Some("a"), 401, Outcome::Blocked, 1),
            row(120, None, 401, Outcome::Blocked, 4),
            row(3_600, Some("b"), 502, Outcome::Failed, 1),
        ];
        let by_sub = report(&rows, GroupBy::Subscription);
        assert_eq!(by_sub[0].key, Some("a".into()));
        assert_eq!(by_sub[0].calls_total, 6);
        assert_eq!(by_sub[0].calls_success, 5);
        assert_eq!(by_sub[0].calls_blocked, 1);
        assert_eq!(by_sub[0].bytes_out, 60);
        assert_eq!(by_sub[1].key, None);
        assert_eq!(by_sub[1].calls_blocked, 4);
        assert_eq!(by_sub[2].calls_failed, 1);
        let by_minute = report(&rows, GroupBy::Minute);
        assert_eq!(
            by_minute
                .iter()
                .map(|r| r.key.clone().unwrap())
                .collect::<Vec<_>>(),
            [
                "1970-01-01T00:01:00Z",
                "1970-01-01T00:02:00Z",
                "1970-01-01T01:00:00Z"
            ]
        );
        assert_eq!(by_minute[1].calls_total, 7);
        let by_hour = report(&rows, GroupBy::Hour);
        assert_eq!(by_hour.len(), 2);
        assert_eq!(by_hour[0].calls_total, 10);
        let by_op = report(&rows, GroupBy::Operation);
        assert_eq!(by_op[0].key.as_deref(), Some("echo/get"));
        let by_status = report(&rows, GroupBy::Status);
        assert_eq!(by_status[0].key.as_deref(), Some("200"));
        let t = total(&rows);
        assert_eq!(t.calls_total, 11);
        // 3 rows of 1..3 ms, 2 of 1..2, 1, 4 of 1..4, 1: avg exact.
        let sum_ms: f64 = (1 + 2 + 3 + 1 + 2 + 1 + 1 + 2 + 3 + 4 + 1) as f64;
        assert_eq!(
            t.latency_ms_avg,
            Some(((sum_ms / 11.0) * 1000.0).round() / 1000.0)
        );
        let p99 = t.latency_ms_p99.unwrap();
        assert!((p99 - 4.0).abs() <= 0.04, "{p99}");
    }

    #[test]
    fn times_and_group_names() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(GroupBy::parse("operation"), Some(GroupBy::Operation));
        assert_eq!(GroupBy::parse("day"), None);
    }
}
