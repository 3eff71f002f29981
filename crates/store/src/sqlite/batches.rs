//! Analytics batches from data planes, counted once: table `usage_batches` (migration 4).
//!
//! A data plane (`tollgate gateway`) hands in its rollup deltas as numbered batches, in
//! order, and retries a batch until the control plane acknowledges it. The table keeps, per
//! origin (a data plane's run: node id and boot id), the highest batch number added. A
//! batch is added together with that number in one transaction, so a batch retried after a
//! lost acknowledgement, or after a control-plane crash, is recognised and not counted
//! twice.

use rusqlite::{params, Connection, OptionalExtension};
use tollgate_analytics::UsageRow;

use super::{db, to_i64, usage};
use crate::Result;

/// The migration creating the table.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE usage_batches (
        origin     TEXT PRIMARY KEY NOT NULL,
        last_seq   INTEGER NOT NULL CHECK (last_seq >= 1),
        updated_s  INTEGER NOT NULL
    ) WITHOUT ROWID;
"#;

/// Adds `rows` as batch `seq` of `origin` unless a batch of `origin` numbered `seq` or
/// higher was added already; returns whether it was added. Run inside a transaction.
pub(super) fn add(
    conn: &Connection,
    origin: &str,
    seq: u64,
    rows: &[UsageRow],
    now_s: i64,
) -> Result<bool> {
    let seq = to_i64(seq);
    let last: Option<i64> = conn
        .query_row(
            "SELECT last_seq FROM usage_batches WHERE origin = ?1",
            [origin],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    if last.is_some_and(|last| last >= seq) {
        return Ok(false);
    }
    usage::add(conn, rows)?;
    conn.execute(
        "INSERT INTO usage_batches (origin, last_seq, updated_s) VALUES (?1, ?2, ?3)
         ON CONFLICT (origin) DO UPDATE SET last_seq = excluded.last_seq,
                                            updated_s = excluded.updated_s",
        params![origin, seq, now_s],
    )
    .map_err(db)?;
    Ok(true)
}

/// Forgets origins not heard from since `before` (Unix seconds).
pub(super) fn prune(conn: &Connection, before: i64) -> Result<u64> {
    let n = conn
        .execute("DELETE FROM usage_batches WHERE updated_s < ?1", [before])
        .map_err(db)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use crate::{SqliteStore, Store};
    use std::sync::Arc;
    use tollgate_analytics::{Resolution, Usage, UsageFilter, UsageKey, UsageRow};

    fn row(calls: u64) -> UsageRow {
        UsageRow {
            key: UsageKey {
                bucket: 1_800_000_000,
                product: None,
                api: Some(Arc::from("pets")),
                operation: None,
                subscription: None,
                status: 200,
            },
            usage: Usage {
                calls,
                success: calls,
                ..Usage::default()
            },
        }
    }

    fn total(store: &SqliteStore, res: Resolution) -> u64 {
        store
            .usage(res, 0, i64::MAX, &UsageFilter::default())
            .unwrap()
            .iter()
            .map(|r| r.usage.calls)
            .sum()
    }

    #[test]
    fn a_retried_batch_counts_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(tmp.path()).unwrap();
        assert!(store.add_usage_batch("dp-a/boot1", 1, &[row(3)]).unwrap());
        // The same batch again (a lost acknowledgement): not counted.
        assert!(!store.add_usage_batch("dp-a/boot1", 1, &[row(3)]).unwrap());
        assert!(store.add_usage_batch("dp-a/boot1", 2, &[row(4)]).unwrap());
        // An older one, late: not counted either.
        assert!(!store.add_usage_batch("dp-a/boot1", 1, &[row(3)]).unwrap());
        // Another origin numbers its own batches.
        assert!(store.add_usage_batch("dp-b/boot1", 1, &[row(5)]).unwrap());
        assert_eq!(total(&store, Resolution::Minute), 12);
        assert_eq!(total(&store, Resolution::Hour), 12);
        // The numbers survive a reopen (a control-plane restart).
        drop(store);
        let store = SqliteStore::open(tmp.path()).unwrap();
        assert!(!store.add_usage_batch("dp-a/boot1", 2, &[row(4)]).unwrap());
        assert_eq!(total(&store, Resolution::Minute), 12);
        // Pruning forgets silent origins (here: all of them).
        store.prune_usage(0, i64::MAX).unwrap();
        assert!(store.add_usage_batch("dp-a/boot1", 1, &[row(1)]).unwrap());
    }
}
