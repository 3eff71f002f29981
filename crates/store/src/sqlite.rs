//! [`SqliteStore`]: the [`Store`] on an SQLite file in `--data-dir`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior,
};
use sha2::{Digest, Sha256};
use tollgate_analytics::{Resolution, UsageFilter, UsageRow};

use crate::{
    AuditEntry, KeySlot, QuotaCounterRecord, Result, Revision, RevisionMeta, RevisionSource, Store,
    StoreError, SubscriptionRecord, SubscriptionState,
};

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "tollgate.db";

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, in order. Migration `i` (0-based) takes the file from
/// `user_version = i` to `user_version = i + 1`. Never edit a released entry: append.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE installation (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        secret  BLOB NOT NULL CHECK (length(secret) = 32)
    );

    CREATE TABLE revisions (
        revision    INTEGER PRIMARY KEY CHECK (revision >= 1),
        created_at  TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        source      TEXT NOT NULL CHECK (source IN ('file', 'api', 'rollback')),
        author      TEXT NOT NULL,
        text        TEXT NOT NULL
    );

    CREATE TABLE subscriptions (
        id                TEXT PRIMARY KEY NOT NULL,
        display_name      TEXT NOT NULL,
        scope             TEXT NOT NULL,
        owner             TEXT,
        state             TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'cancelled')),
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        primary_digest    BLOB NOT NULL CHECK (length(primary_digest) = 32),
        secondary_digest  BLOB NOT NULL CHECK (length(secondary_digest) = 32)
    );
    CREATE UNIQUE INDEX subscriptions_primary_digest ON subscriptions (primary_digest);
    CREATE UNIQUE INDEX subscriptions_secondary_digest ON subscriptions (secondary_digest);

    CREATE TABLE audit_log (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        target    TEXT NOT NULL,
        revision  INTEGER,
        result    TEXT NOT NULL
    );
    CREATE INDEX audit_log_revision ON audit_log (revision) WHERE revision IS NOT NULL;
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only');
    END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only');
    END;
    "#,
    // 2: quota counters (the current period of each quota counter; see
    // `Store::save_quota_counters`).
    r#"
    CREATE TABLE quota_counters (
        origin           TEXT NOT NULL,
        counter_key      TEXT NOT NULL,
        subscription_id  TEXT,
        period_start_ms  INTEGER NOT NULL,
        period_end_ms    INTEGER NOT NULL CHECK (period_end_ms > period_start_ms),
        calls            INTEGER NOT NULL CHECK (calls >= 0),
        bytes            INTEGER NOT NULL CHECK (bytes >= 0),
        updated_at       TEXT NOT NULL,
        PRIMARY KEY (origin, counter_key)
    );
    CREATE INDEX quota_counters_subscription ON quota_counters (subscription_id);
    CREATE INDEX quota_counters_period_end ON quota_counters (period_end_ms);
    "#,
    // 3: analytics rollups (`usage_minute`, `usage_hour`; see `sqlite/usage.rs`).
    usage::MIGRATION,
    // 4: analytics batches from data planes (`usage_batches`; see `sqlite/batches.rs`).
    batches::MIGRATION,
];

/// The schema version this build writes (the number of known migrations).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The [`Store`] on SQLite, in `DIR/tollgate.db`.
///
/// Layout and guarantees:
///
/// * one file, `DIR/tollgate.db` (plus SQLite's `-wal`/`-shm` files), in WAL mode;
/// * `PRAGMA synchronous=FULL`: a committed admin write is on disk before the call returns,
///   even across a power cut (see [`SqliteStore::open`]);
/// * a versioned schema: `PRAGMA user_version` holds the number of migrations applied, each
///   migration runs in its own transaction, a newer file than this build knows is refused;
/// * every write, together with the audit entry describing it, is one `BEGIN IMMEDIATE`
///   transaction, so the data and the audit log never disagree, whatever kills the process;
/// * the audit log is append-only: nothing here updates or deletes its rows, and triggers make
///   SQLite refuse any `UPDATE` or `DELETE` on it.
///
/// One connection behind a mutex: admin writes are rare and the trait is synchronous, so
/// the lock is only ever held for the duration of one statement or transaction.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    secret: [u8; 32],
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the installation secret.
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if need be) the store in `dir`: `dir/tollgate.db`.
    ///
    /// Creates `dir` if it is missing (mode 0700 on Unix; a new database file gets 0600,
    /// since it holds the installation secret). Sets:
    ///
    /// * `journal_mode=WAL`: readers do not block the writer, and a crash never leaves a
    ///   half-written page in the main file;
    /// * `synchronous=FULL`: in WAL mode, `NORMAL` only syncs at checkpoints, so the last
    ///   committed transactions can be lost on a power cut or kernel crash (not on a process
    ///   crash). FULL syncs the WAL at every commit, so once `add_revision` or a subscription
    ///   change has returned, it survives anything short of a lost disk. This store is not on
    ///   the proxy's hot path (writes are rare admin actions), so the fsync per commit is
    ///   cheap where it matters;
    /// * `foreign_keys=ON`, and a busy timeout of 5 s.
    ///
    /// Then applies any pending schema migration (each in its own transaction; the first
    /// also generates the installation secret) and loads the secret. A file whose schema is
    /// newer than this build knows is refused with [`StoreError::Backend`].
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        create_dir(dir)?;
        let path = dir.join(DB_FILE_NAME);
        let existed = path.exists();
        let mut conn = Connection::open(&path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        if !existed {
            restrict_file(&path)?;
        }
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{}: could not switch to WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;

        migrate(&mut conn, &path)?;
        let secret = load_secret(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            secret,
            path,
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while it was held cannot have left a transaction open
    /// (dropping a `Transaction` rolls it back), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction, committed if `f` succeeds and rolled
    /// back otherwise. `f` gets the transaction's timestamp.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>, &str) -> Result<T>) -> Result<T> {
        let now = now_rfc3339()?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let out = f(&tx, &now)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn installation_secret(&self) -> [u8; 32] {
        self.secret
    }

    fn latest_revision(&self) -> Result<Option<Revision>> {
        let conn = self.lock();
        conn.query_row(
            "SELECT revision, created_at, sha256, source, author, text
             FROM revisions ORDER BY revision DESC LIMIT 1",
            [],
            revision_from_row,
        )
        .optional()
        .map_err(db)?
        .transpose()
    }

    fn revision(&self, n: u64) -> Result<Revision> {
        let Ok(n) = i64::try_from(n) else {
            return Err(StoreError::NotFound);
        };
        let conn = self.lock();
        conn.query_row(
            "SELECT revision, created_at, sha256, source, author, text
             FROM revisions WHERE revision = ?1",
            [n],
            revision_from_row,
        )
        .optional()
        .map_err(db)?
        .ok_or(StoreError::NotFound)?
    }

    fn list_revisions(&self, before: Option<u64>, limit: usize) -> Result<Vec<RevisionMeta>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT revision, created_at, sha256, source, author
                 FROM revisions WHERE revision < ?1 ORDER BY revision DESC LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![cursor(before), sql_limit(limit)], meta_from_row)
            .map_err(db)?;
        rows.map(|r| r.map_err(db)?).collect()
    }

    fn add_revision(
        &self,
        text: &str,
        source: RevisionSource,
        author: &str,
        mut audit: AuditEntry,
    ) -> Result<RevisionMeta> {
        let sha256 = sha256_hex(text.as_bytes());
        self.write(|tx, now| {
            let next: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(revision), 0) + 1 FROM revisions",
                    [],
                    |row| row.get(0),
                )
                .map_err(db)?;
            tx.execute(
                "INSERT INTO revisions (revision, created_at, sha256, source, author, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![next, now, sha256, source_str(source), author, text],
            )
            .map_err(db)?;
            let revision = to_u64(next)?;
            audit.revision = Some(revision);
            insert_audit(tx, &mut audit, now)?;
            Ok(RevisionMeta {
                revision,
                created_at: now.to_owned(),
                sha256,
                source,
                author: author.to_owned(),
            })
        })
    }

    /// Create a subscription; `Conflict` if the id exists (or, astronomically unlikely for
    /// random keys, if one of its digests is already some subscription's same-slot digest).
    /// An empty `created_at`/`updated_at` is filled with the transaction's time; given values
    /// are kept.
    fn create_subscription(&self, sub: &SubscriptionRecord, mut audit: AuditEntry) -> Result<()> {
        self.write(|tx, now| {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM subscriptions WHERE id = ?1",
                    [&sub.id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?
                .is_some();
            if exists {
                return Err(StoreError::Conflict);
            }
            let created_at = if sub.created_at.is_empty() {
                now
            } else {
                &sub.created_at
            };
            let updated_at = if sub.updated_at.is_empty() {
                now
            } else {
                &sub.updated_at
            };
            tx.execute(
                "INSERT INTO subscriptions (id, display_name, scope, owner, state, created_at,
                     updated_at, primary_digest, secondary_digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    sub.id,
                    sub.display_name,
                    sub.scope,
                    sub.owner,
                    state_str(sub.state),
                    created_at,
                    updated_at,
                    &sub.primary_digest[..],
                    &sub.secondary_digest[..],
                ],
            )
            .map_err(conflict_or_db)?;
            insert_audit(tx, &mut audit, now)?;
            Ok(())
        })
    }

    fn subscription(&self, id: &str) -> Result<SubscriptionRecord> {
        let conn = self.lock();
        select_subscription(&conn, id)
    }

    fn list_subscriptions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubscriptionRecord>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, display_name, scope, owner, state, created_at, updated_at,
                        primary_digest, secondary_digest
                 FROM subscriptions WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![after, sql_limit(limit)], subscription_from_row)
            .map_err(db)?;
        rows.map(|r| r.map_err(db)?).collect()
    }

    fn all_subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, display_name, scope, owner, state, created_at, updated_at,
                        primary_digest, secondary_digest
                 FROM subscriptions ORDER BY id",
            )
            .map_err(db)?;
        let rows = stmt.query_map([], subscription_from_row).map_err(db)?;
        rows.map(|r| r.map_err(db)?).collect()
    }

    fn set_subscription_state(
        &self,
        id: &str,
        state: SubscriptionState,
        mut audit: AuditEntry,
    ) -> Result<SubscriptionRecord> {
        self.write(|tx, now| {
            let changed = tx
                .execute(
                    "UPDATE subscriptions SET state = ?1, updated_at = ?2 WHERE id = ?3",
                    params![state_str(state), now, id],
                )
                .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            insert_audit(tx, &mut audit, now)?;
            select_subscription(tx, id)
        })
    }

    /// Replace one key's digest; `NotFound` when absent, `Conflict` if the digest is
    /// already some subscription's digest in that slot.
    fn set_subscription_key(
        &self,
        id: &str,
        slot: KeySlot,
        digest: [u8; 32],
        mut audit: AuditEntry,
    ) -> Result<SubscriptionRecord> {
        let sql = match slot {
            KeySlot::Primary => {
                "UPDATE subscriptions SET primary_digest = ?1, updated_at = ?2 WHERE id = ?3"
            }
            KeySlot::Secondary => {
                "UPDATE subscriptions SET secondary_digest = ?1, updated_at = ?2 WHERE id = ?3"
            }
        };
        self.write(|tx, now| {
            let changed = tx
                .execute(sql, params![&digest[..], now, id])
                .map_err(conflict_or_db)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            insert_audit(tx, &mut audit, now)?;
            select_subscription(tx, id)
        })
    }

    fn delete_subscription(&self, id: &str, mut audit: AuditEntry) -> Result<()> {
        self.write(|tx, now| {
            let changed = tx
                .execute("DELETE FROM subscriptions WHERE id = ?1", [id])
                .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            insert_audit(tx, &mut audit, now)?;
            Ok(())
        })
    }

    fn append_audit(&self, mut audit: AuditEntry) -> Result<()> {
        self.write(|tx, now| {
            insert_audit(tx, &mut audit, now)?;
            Ok(())
        })
    }

    fn save_quota_counters(&self, counters: &[QuotaCounterRecord], now_ms: i64) -> Result<()> {
        self.write(|tx, now| {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO quota_counters (origin, counter_key, subscription_id,
                         period_start_ms, period_end_ms, calls, bytes, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (origin, counter_key) DO UPDATE SET
                         subscription_id = excluded.subscription_id,
                         period_start_ms = excluded.period_start_ms,
                         period_end_ms = excluded.period_end_ms,
                         calls = excluded.calls,
                         bytes = excluded.bytes,
                         updated_at = excluded.updated_at",
                )
                .map_err(db)?;
            for c in counters {
                upsert
                    .execute(params![
                        c.origin,
                        c.counter_key,
                        c.subscription_id,
                        c.period_start_ms,
                        c.period_end_ms,
                        to_i64(c.calls),
                        to_i64(c.bytes),
                        now,
                    ])
                    .map_err(db)?;
            }
            tx.execute(
                "DELETE FROM quota_counters WHERE period_end_ms <= ?1",
                [now_ms],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    fn quota_counters(&self, now_ms: i64) -> Result<Vec<QuotaCounterRecord>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT origin, counter_key, subscription_id, period_start_ms, period_end_ms,
                        calls, bytes
                 FROM quota_counters WHERE period_end_ms > ?1 ORDER BY origin, counter_key",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([now_ms], |row| {
                let origin: String = row.get(0)?;
                let counter_key: String = row.get(1)?;
                let subscription_id: Option<String> = row.get(2)?;
                let period_start_ms: i64 = row.get(3)?;
                let period_end_ms: i64 = row.get(4)?;
                let calls: i64 = row.get(5)?;
                let bytes: i64 = row.get(6)?;
                Ok((|| {
                    Ok(QuotaCounterRecord {
                        origin,
                        counter_key,
                        subscription_id,
                        period_start_ms,
                        period_end_ms,
                        calls: to_u64(calls)?,
                        bytes: to_u64(bytes)?,
                    })
                })())
            })
            .map_err(db)?;
        rows.map(|r| r.map_err(db)?).collect()
    }

    fn reset_quota_counters(&self, subscription_id: &str, mut audit: AuditEntry) -> Result<u64> {
        self.write(|tx, now| {
            let n = tx
                .execute(
                    "DELETE FROM quota_counters WHERE subscription_id = ?1",
                    [subscription_id],
                )
                .map_err(db)?;
            insert_audit(tx, &mut audit, now)?;
            Ok(n as u64)
        })
    }

    fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        self.write(|tx, _| usage::add(tx, rows))
    }

    fn usage(
        &self,
        resolution: Resolution,
        from: i64,
        to: i64,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageRow>> {
        let conn = self.lock();
        usage::query(&conn, resolution, from, to, filter)
    }

    fn usage_coverage(&self) -> Result<(Option<i64>, Option<i64>)> {
        let conn = self.lock();
        usage::coverage(&conn)
    }

    fn prune_usage(&self, minutes_before: i64, hours_before: i64) -> Result<(u64, u64)> {
        self.write(|tx, _| {
            // A data plane that has been silent for the hours' retention sends no more
            // batches of that run.
            batches::prune(tx, hours_before)?;
            usage::prune(tx, minutes_before, hours_before)
        })
    }

    fn add_usage_batch(&self, origin: &str, seq: u64, rows: &[UsageRow]) -> Result<bool> {
        let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
        self.write(|tx, _| batches::add(tx, origin, seq, rows, now_s))
    }

    fn list_audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at, actor, action, target, revision, result
                 FROM audit_log WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![cursor(before), sql_limit(limit)], audit_from_row)
            .map_err(db)?;
        rows.map(|r| r.map_err(db)?).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Opening and migrations.

/// Create the data directory (0700 on Unix) if it does not exist.
fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))
}

/// Make a freshly created database file readable by its owner only.
fn restrict_file(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Backend(format!("chmod {}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Apply the pending migrations, each in its own `BEGIN IMMEDIATE` transaction (the version
/// is re-read inside it, so two processes opening the same new file cannot both migrate).
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let version: u32 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "{}: schema version {version} is newer than this build of tollgate knows \
                 (up to {SCHEMA_VERSION}); run a newer tollgate or restore an older backup",
                path.display()
            )));
        }
        let Some(sql) = MIGRATIONS.get(version as usize) else {
            // Up to date; nothing was written, the transaction is just dropped.
            return Ok(());
        };
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Backend(format!(
                "{}: migration to schema version {}: {e}",
                path.display(),
                version + 1
            ))
        })?;
        if version == 0 {
            let secret = random_secret()?;
            tx.execute(
                "INSERT INTO installation (id, secret) VALUES (1, ?1)",
                [&secret[..]],
            )
            .map_err(db)?;
        }
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
}

/// 32 bytes from the operating system's CSPRNG.
fn random_secret() -> Result<[u8; 32]> {
    use rand::TryRngCore;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| StoreError::Backend(format!("generating the installation secret: {e}")))?;
    Ok(secret)
}

fn load_secret(conn: &Connection) -> Result<[u8; 32]> {
    let blob: Option<Vec<u8>> = conn
        .query_row("SELECT secret FROM installation WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(db)?;
    let blob = blob.ok_or_else(|| {
        StoreError::Backend("the installation secret is missing from the store".to_owned())
    })?;
    to_digest(blob, "installation secret")
}

// ---------------------------------------------------------------------------------------
// Rows.

fn insert_audit(tx: &Transaction<'_>, audit: &mut AuditEntry, now: &str) -> Result<()> {
    let revision = audit.revision.map(i64::try_from).transpose().map_err(|_| {
        StoreError::Backend(format!("audit revision out of range: {:?}", audit.revision))
    })?;
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, target, revision, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now,
            audit.actor,
            audit.action,
            audit.target,
            revision,
            audit.result
        ],
    )
    .map_err(db)?;
    audit.id = to_u64(tx.last_insert_rowid())?;
    now.clone_into(&mut audit.at);
    Ok(())
}

fn select_subscription(conn: &Connection, id: &str) -> Result<SubscriptionRecord> {
    conn.query_row(
        "SELECT id, display_name, scope, owner, state, created_at, updated_at,
                primary_digest, secondary_digest
         FROM subscriptions WHERE id = ?1",
        [id],
        subscription_from_row,
    )
    .optional()
    .map_err(db)?
    .ok_or(StoreError::NotFound)?
}

// The row mappers return `rusqlite::Result<Result<T>>`: the outer error is SQLite's, the
// inner one a value this build cannot read (a bad state string, a short digest).

fn meta_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RevisionMeta>> {
    let revision: i64 = row.get(0)?;
    let created_at: String = row.get(1)?;
    let sha256: String = row.get(2)?;
    let source: String = row.get(3)?;
    let author: String = row.get(4)?;
    Ok((|| {
        Ok(RevisionMeta {
            revision: to_u64(revision)?,
            created_at,
            sha256,
            source: parse_source(&source)?,
            author,
        })
    })())
}

fn revision_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Revision>> {
    let text: String = row.get(5)?;
    Ok(meta_from_row(row)?.map(|meta| Revision { meta, text }))
}

fn subscription_from_row(row: &Row<'_>) -> rusqlite::Result<Result<SubscriptionRecord>> {
    let id: String = row.get(0)?;
    let display_name: String = row.get(1)?;
    let scope: String = row.get(2)?;
    let owner: Option<String> = row.get(3)?;
    let state: String = row.get(4)?;
    let created_at: String = row.get(5)?;
    let updated_at: String = row.get(6)?;
    let primary: Vec<u8> = row.get(7)?;
    let secondary: Vec<u8> = row.get(8)?;
    Ok((|| {
        Ok(SubscriptionRecord {
            state: parse_state(&state)?,
            primary_digest: to_digest(primary, "primary key digest")?,
            secondary_digest: to_digest(secondary, "secondary key digest")?,
            id,
            display_name,
            scope,
            owner,
            created_at,
            updated_at,
        })
    })())
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<Result<AuditEntry>> {
    let id: i64 = row.get(0)?;
    let at: String = row.get(1)?;
    let actor: String = row.get(2)?;
    let action: String = row.get(3)?;
    let target: String = row.get(4)?;
    let revision: Option<i64> = row.get(5)?;
    let result: String = row.get(6)?;
    Ok((|| {
        Ok(AuditEntry {
            id: to_u64(id)?,
            at,
            actor,
            action,
            target,
            revision: revision.map(to_u64).transpose()?,
            result,
        })
    })())
}

// ---------------------------------------------------------------------------------------
// Small conversions.

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

/// A UNIQUE or PRIMARY KEY violation is a [`StoreError::Conflict`]; anything else is a
/// backend failure (a CHECK violation is a bug, not a conflict).
fn conflict_or_db(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(err, _) = &e {
        if err.code == ErrorCode::ConstraintViolation
            && (err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
        {
            return StoreError::Conflict;
        }
    }
    db(e)
}

/// `before` as an exclusive upper bound for an INTEGER column.
fn cursor(before: Option<u64>) -> i64 {
    before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX))
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A count for an INTEGER column (saturating: SQLite integers are signed 64-bit).
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Backend(format!("negative number in store: {n}")))
}

fn to_digest(blob: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    let len = blob.len();
    <[u8; 32]>::try_from(blob)
        .map_err(|_| StoreError::Backend(format!("{what} has {len} bytes, expected 32")))
}

fn source_str(source: RevisionSource) -> &'static str {
    match source {
        RevisionSource::File => "file",
        RevisionSource::Api => "api",
        RevisionSource::Rollback => "rollback",
    }
}

fn parse_source(s: &str) -> Result<RevisionSource> {
    match s {
        "file" => Ok(RevisionSource::File),
        "api" => Ok(RevisionSource::Api),
        "rollback" => Ok(RevisionSource::Rollback),
        other => Err(StoreError::Backend(format!(
            "unknown revision source in store: {other:?}"
        ))),
    }
}

fn state_str(state: SubscriptionState) -> &'static str {
    match state {
        SubscriptionState::Active => "active",
        SubscriptionState::Suspended => "suspended",
        SubscriptionState::Cancelled => "cancelled",
    }
}

fn parse_state(s: &str) -> Result<SubscriptionState> {
    match s {
        "active" => Ok(SubscriptionState::Active),
        "suspended" => Ok(SubscriptionState::Suspended),
        "cancelled" => Ok(SubscriptionState::Cancelled),
        other => Err(StoreError::Backend(format!(
            "unknown subscription state in store: {other:?}"
        ))),
    }
}

/// Lowercase hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Now, RFC 3339 UTC to the second: `2026-11-22T02:30:00Z`.
fn now_rfc3339() -> Result<String> {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .map_err(|e| StoreError::Backend(format!("formatting the time: {e}")))
}

mod batches;
mod usage;

#[cfg(test)]
mod tests;
