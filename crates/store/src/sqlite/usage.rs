//! Analytics rollups in SQLite: tables `usage_minute` and `usage_hour` (migration 3).
//!
//! Rows are keyed by (bucket, product, api, operation, subscription, status); an absent id
//! is stored as `''` (SQLite's `NULL`s would never conflict in the primary key). Adding
//! deltas reads the existing row, merges counts and the latency sketch in Rust, and writes
//! it back; the caller runs it inside one transaction for every row of a flush, for both
//! tables, so minutes and hours never disagree.

use rusqlite::{params, Connection, OptionalExtension, Row};
use std::sync::Arc;
use tollgate_analytics::{LatencySketch, Resolution, Usage, UsageFilter, UsageKey, UsageRow};

use super::{db, to_i64};
use crate::{Result, StoreError};

/// The migration creating the rollup tables.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE usage_minute (
        bucket                   INTEGER NOT NULL,
        product                  TEXT NOT NULL,
        api                      TEXT NOT NULL,
        operation                TEXT NOT NULL,
        subscription             TEXT NOT NULL,
        status                   INTEGER NOT NULL,
        calls                    INTEGER NOT NULL,
        success                  INTEGER NOT NULL,
        blocked                  INTEGER NOT NULL,
        failed                   INTEGER NOT NULL,
        other                    INTEGER NOT NULL,
        rate_limited             INTEGER NOT NULL,
        quota_exceeded           INTEGER NOT NULL,
        bytes_in                 INTEGER NOT NULL,
        bytes_out                INTEGER NOT NULL,
        latency_us_sum           INTEGER NOT NULL,
        upstream_calls           INTEGER NOT NULL,
        upstream_latency_us_sum  INTEGER NOT NULL,
        cache_hits               INTEGER NOT NULL,
        cache_misses             INTEGER NOT NULL,
        latency_sketch           BLOB NOT NULL,
        PRIMARY KEY (bucket, product, api, operation, subscription, status)
    ) WITHOUT ROWID;
    CREATE INDEX usage_minute_subscription ON usage_minute (subscription, bucket);
    CREATE TABLE usage_hour (
        bucket                   INTEGER NOT NULL,
        product                  TEXT NOT NULL,
        api                      TEXT NOT NULL,
        operation                TEXT NOT NULL,
        subscription             TEXT NOT NULL,
        status                   INTEGER NOT NULL,
        calls                    INTEGER NOT NULL,
        success                  INTEGER NOT NULL,
        blocked                  INTEGER NOT NULL,
        failed                   INTEGER NOT NULL,
        other                    INTEGER NOT NULL,
        rate_limited             INTEGER NOT NULL,
        quota_exceeded           INTEGER NOT NULL,
        bytes_in                 INTEGER NOT NULL,
        bytes_out                INTEGER NOT NULL,
        latency_us_sum           INTEGER NOT NULL,
        upstream_calls           INTEGER NOT NULL,
        upstream_latency_us_sum  INTEGER NOT NULL,
        cache_hits               INTEGER NOT NULL,
        cache_misses             INTEGER NOT NULL,
        latency_sketch           BLOB NOT NULL,
        PRIMARY KEY (bucket, product, api, operation, subscription, status)
    ) WITHOUT ROWID;
    CREATE INDEX usage_hour_subscription ON usage_hour (subscription, bucket);
"#;

const COLUMNS: &str = "bucket, product, api, operation, subscription, status, calls, success, \
    blocked, failed, other, rate_limited, quota_exceeded, bytes_in, bytes_out, latency_us_sum, \
    upstream_calls, upstream_latency_us_sum, cache_hits, cache_misses, latency_sketch";

fn table(res: Resolution) -> &'static str {
    match res {
        Resolution::Minute => "usage_minute",
        Resolution::Hour => "usage_hour",
    }
}

fn id(v: &Option<Arc<str>>) -> &str {
    v.as_deref().unwrap_or("")
}

fn opt_id(s: String) -> Option<Arc<str>> {
    (!s.is_empty()).then(|| Arc::from(s))
}

/// Merge `rows` (minute deltas) into the minute rows and the hour rows holding them.
pub(super) fn add(conn: &Connection, rows: &[UsageRow]) -> Result<()> {
    for row in rows {
        let minute = UsageKey {
            bucket: Resolution::Minute.bucket_of(row.key.bucket),
            ..row.key.clone()
        };
        merge_one(conn, Resolution::Minute, &minute, &row.usage)?;
        merge_one(conn, Resolution::Hour, &minute.hour(), &row.usage)?;
    }
    Ok(())
}

fn merge_one(conn: &Connection, res: Resolution, key: &UsageKey, delta: &Usage) -> Result<()> {
    let t = table(res);
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM {t} WHERE bucket = ?1 AND product = ?2 AND api = ?3
             AND operation = ?4 AND subscription = ?5 AND status = ?6"
        ))
        .map_err(db)?
        .query_row(
            params![
                key.bucket,
                id(&key.product),
                id(&key.api),
                id(&key.operation),
                id(&key.subscription),
                key.status
            ],
            usage_row,
        )
        .optional()
        .map_err(db)?
        .transpose()?;
    let mut usage = existing.map(|r| r.usage).unwrap_or_default();
    usage.merge(delta);
    let u = &usage;
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {t} ({COLUMNS}) VALUES
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
          ?20, ?21)"
    ))
    .map_err(db)?
    .execute(params![
        key.bucket,
        id(&key.product),
        id(&key.api),
        id(&key.operation),
        id(&key.subscription),
        key.status,
        to_i64(u.calls),
        to_i64(u.success),
        to_i64(u.blocked),
        to_i64(u.failed),
        to_i64(u.other),
        to_i64(u.rate_limited),
        to_i64(u.quota_exceeded),
        to_i64(u.bytes_in),
        to_i64(u.bytes_out),
        to_i64(u.latency_us_sum),
        to_i64(u.upstream_calls),
        to_i64(u.upstream_latency_us_sum),
        to_i64(u.cache_hits),
        to_i64(u.cache_misses),
        u.latency.encode(),
    ])
    .map_err(db)?;
    Ok(())
}

/// Rows of `res` whose bucket overlaps `[from, to)` (Unix seconds), matching `filter`.
pub(super) fn query(
    conn: &Connection,
    res: Resolution,
    from: i64,
    to: i64,
    filter: &UsageFilter,
) -> Result<Vec<UsageRow>> {
    let t = table(res);
    // A bucket [b, b + len) overlaps [from, to) when b > from - len and b < to.
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM {t}
             WHERE bucket > ?1 AND bucket < ?2
               AND (?3 IS NULL OR product = ?3)
               AND (?4 IS NULL OR api = ?4)
               AND (?5 IS NULL OR operation = ?5)
               AND (?6 IS NULL OR subscription = ?6)
             ORDER BY bucket"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(
            params![
                from.saturating_sub(res.seconds()),
                to,
                filter.product,
                filter.api,
                filter.operation,
                filter.subscription
            ],
            usage_row,
        )
        .map_err(db)?;
    rows.map(|r| r.map_err(db)?).collect()
}

/// Delete rows past their retention; returns (minute rows, hour rows) deleted.
pub(super) fn prune(
    conn: &Connection,
    minutes_before: i64,
    hours_before: i64,
) -> Result<(u64, u64)> {
    let m = conn
        .execute(
            "DELETE FROM usage_minute WHERE bucket < ?1",
            [minutes_before],
        )
        .map_err(db)?;
    let h = conn
        .execute("DELETE FROM usage_hour WHERE bucket < ?1", [hours_before])
        .map_err(db)?;
    Ok((m as u64, h as u64))
}

/// The oldest minute bucket and the oldest hour bucket stored, if any.
pub(super) fn coverage(conn: &Connection) -> Result<(Option<i64>, Option<i64>)> {
    let oldest = |t: &str| -> Result<Option<i64>> {
        conn.query_row(&format!("SELECT MIN(bucket) FROM {t}"), [], |r| r.get(0))
            .map_err(db)
    };
    Ok((oldest("usage_minute")?, oldest("usage_hour")?))
}

fn usage_row(row: &Row<'_>) -> rusqlite::Result<Result<UsageRow>> {
    let n = |i: usize| -> rusqlite::Result<u64> {
        Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
    };
    let key = UsageKey {
        bucket: row.get(0)?,
        product: opt_id(row.get(1)?),
        api: opt_id(row.get(2)?),
        operation: opt_id(row.get(3)?),
        subscription: opt_id(row.get(4)?),
        status: row.get(5)?,
    };
    let usage = Usage {
        calls: n(6)?,
        success: n(7)?,
        blocked: n(8)?,
        failed: n(9)?,
        other: n(10)?,
        rate_limited: n(11)?,
        quota_exceeded: n(12)?,
        bytes_in: n(13)?,
        bytes_out: n(14)?,
        latency_us_sum: n(15)?,
        upstream_calls: n(16)?,
        upstream_latency_us_sum: n(17)?,
        cache_hits: n(18)?,
        cache_misses: n(19)?,
        latency: LatencySketch::default(),
    };
    let sketch: Vec<u8> = row.get(20)?;
    Ok(LatencySketch::decode(&sketch)
        .map_err(|e| StoreError::Backend(format!("stored latency sketch: {e}")))
        .map(|latency| UsageRow {
            key,
            usage: Usage { latency, ..usage },
        }))
}

#[cfg(test)]
mod tests {
    use crate::{SqliteStore, Store};
    use tollgate_analytics::{
        classify, report, Event, GroupBy, Resolution, Usage, UsageFilter, UsageKey, UsageRow,
    };

    fn delta(at_secs: i64, sub: Option<&str>, status: u16, n: u64) -> UsageRow {
        let mut usage = Usage::default();
        let e = Event {
            at_ms: at_secs * 1000,
            api: Some("echo".into()),
            subscription: sub.map(Into::into),
            status,
            outcome: classify(status, status == 401, false),
            latency_us: 2_000,
            bytes_out: 5,
            ..Event::default()
        };
        for _ in 0..n {
            usage.record(&e);
        }
        UsageRow {
            key: UsageKey::of(&e),
            usage,
        }
    }

    #[test]
    fn deltas_merge_into_minutes_and_hours_and_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000 / 3600 * 3600;
        {
            let store = SqliteStore::open(tmp.path()).unwrap();
            store
                .add_usage(&[
                    delta(t0 + 5, Some("a"), 200, 3),
                    delta(t0 + 5, None, 401, 2),
                ])
                .unwrap();
            // The same minute again, and the next minute.
            store
                .add_usage(&[
                    delta(t0 + 30, Some("a"), 200, 4),
                    delta(t0 + 65, Some("a"), 200, 1),
                ])
                .unwrap();
        }
        let store = SqliteStore::open(tmp.path()).unwrap();
        let all = UsageFilter::default();
        let minutes = store
            .usage(Resolution::Minute, t0, t0 + 3600, &all)
            .unwrap();
        assert_eq!(minutes.len(), 3);
        let first_a = minutes
            .iter()
            .find(|r| r.key.bucket == t0 && r.key.status == 200)
            .unwrap();
        assert_eq!(first_a.usage.calls, 7);
        assert_eq!(first_a.usage.latency.count(), 7);
        let hours = store.usage(Resolution::Hour, t0, t0 + 3600, &all).unwrap();
        assert_eq!(hours.len(), 2);
        let by_sub = report(&hours, GroupBy::Subscription);
        assert_eq!(by_sub[0].key.as_deref(), Some("a"));
        assert_eq!(by_sub[0].calls_total, 8);
        assert_eq!(by_sub[0].bytes_out, 40);
        assert_eq!(by_sub[1].calls_blocked, 2);
        // A range inside the first minute still reads it (buckets overlapping the range).
        let inner = store
            .usage(Resolution::Minute, t0 + 10, t0 + 20, &all)
            .unwrap();
        assert_eq!(inner.iter().map(|r| r.usage.calls).sum::<u64>(), 9);
        let only_a = UsageFilter {
            subscription: Some("a".into()),
            ..UsageFilter::default()
        };
        let rows = store
            .usage(Resolution::Minute, t0, t0 + 3600, &only_a)
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.usage.calls).sum::<u64>(), 8);
        assert_eq!(store.usage_coverage().unwrap(), (Some(t0), Some(t0)));
        assert_eq!(store.prune_usage(t0 + 60, t0).unwrap(), (2, 0));
        assert_eq!(
            store
                .usage(Resolution::Minute, t0, t0 + 3600, &all)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(store.prune_usage(t0 + 60, t0 + 3600).unwrap(), (0, 2));
    }
}
