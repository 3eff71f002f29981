//! Tollgate's embedded store: config revisions, subscriptions, quota counters and the audit
//! log.
//!
//! The admin service depends on the [`Store`] trait; [`SqliteStore`] implements it on
//! SQLite in `--data-dir` (WAL mode, versioned migrations, every write in a transaction so
//! a crash at any point leaves a consistent store). Subscription keys are never stored:
//! only their HMAC-SHA256 digests under a per-installation secret.

use serde::{Deserialize, Serialize};
pub use tollgate_analytics::{Resolution, UsageFilter, UsageRow};

mod sqlite;

pub use sqlite::{SqliteStore, DB_FILE_NAME, SCHEMA_VERSION};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist.
    #[error("not found")]
    NotFound,
    /// A thing with this id exists already.
    #[error("already exists")]
    Conflict,
    /// The database failed.
    #[error("store failure: {0}")]
    Backend(String),
}

/// Store results.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a config revision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionSource {
    /// `--config FILE` at start.
    File,
    /// The admin API (`PUT /config`, products, APIs).
    Api,
    /// `POST /config/rollback`.
    Rollback,
}

/// A stored config revision, without its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionMeta {
    /// 1, 2, 3... in order of creation.
    pub revision: u64,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Hex SHA-256 of `text`.
    pub sha256: String,
    /// Where it came from.
    pub source: RevisionSource,
    /// Who made it (role name, or `file`).
    pub author: String,
}

/// A stored config revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Metadata.
    #[serde(flatten)]
    pub meta: RevisionMeta,
    /// The full policy file text as submitted (YAML or JSON).
    pub text: String,
}

/// Subscription states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionState {
    /// Calls pass.
    Active,
    /// Calls are refused until reactivated.
    Suspended,
    /// Calls are refused for good.
    Cancelled,
}

/// A stored subscription. Keys are only ever held as digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// `[a-z0-9-]{1,64}`.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// `product:ID`, `api:ID` or `all`.
    pub scope: String,
    /// Owner (free text, e.g. an e-mail address).
    pub owner: Option<String>,
    /// State.
    pub state: SubscriptionState,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// HMAC-SHA256 digest of the primary key.
    #[serde(skip)]
    pub primary_digest: [u8; 32],
    /// HMAC-SHA256 digest of the secondary key.
    #[serde(skip)]
    pub secondary_digest: [u8; 32],
}

/// Which of a subscription's two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

/// One audit log entry (append-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number (assigned by the store).
    pub id: u64,
    /// RFC 3339 UTC (assigned by the store).
    pub at: String,
    /// Who: role name (`admin`, `operator`) or `file`.
    pub actor: String,
    /// What: e.g. `config.put`, `subscription.create`.
    pub action: String,
    /// On what: e.g. `config`, `subscription:abc`.
    pub target: String,
    /// The config revision the action made, if any.
    pub revision: Option<u64>,
    /// `ok`, or what went wrong.
    pub result: String,
}

/// A quota counter as stored: the counts of its current period. The gateway writes the
/// counters that changed at most every second and at shutdown, and loads them at start, so
/// a restart keeps quota usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaCounterRecord {
    /// The quota's policy position (`product:gold/inbound/1`).
    pub origin: String,
    /// The counter key (the subscription id, or the rendered `counter_key`).
    pub counter_key: String,
    /// The subscription the counter is listed under (usage calls), if any.
    pub subscription_id: Option<String>,
    /// Start of the period, Unix milliseconds.
    pub period_start_ms: i64,
    /// End of the period (exclusive), Unix milliseconds.
    pub period_end_ms: i64,
    /// Calls counted in the period.
    pub calls: u64,
    /// Bytes (request + response bodies) counted in the period.
    pub bytes: u64,
}

/// The store the admin service works on.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The per-installation secret keys are hashed under (32 random bytes made at first
    /// open, kept in the store).
    fn installation_secret(&self) -> [u8; 32];

    /// The newest revision, if any.
    fn latest_revision(&self) -> Result<Option<Revision>>;
    /// Revision `n`.
    fn revision(&self, n: u64) -> Result<Revision>;
    /// Revisions newest first, those below `before` when given, at most `limit`.
    fn list_revisions(&self, before: Option<u64>, limit: usize) -> Result<Vec<RevisionMeta>>;
    /// Store `text` as the next revision and write the audit entry for it, in one
    /// transaction. `audit.revision` is filled with the new number.
    fn add_revision(
        &self,
        text: &str,
        source: RevisionSource,
        author: &str,
        audit: AuditEntry,
    ) -> Result<RevisionMeta>;

    /// Create a subscription; `Conflict` if the id exists.
    fn create_subscription(&self, sub: &SubscriptionRecord, audit: AuditEntry) -> Result<()>;
    /// One subscription.
    fn subscription(&self, id: &str) -> Result<SubscriptionRecord>;
    /// Subscriptions ordered by id, those after `after` when given, at most `limit`.
    fn list_subscriptions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubscriptionRecord>>;
    /// Every subscription (to build the proxy's in-memory key map).
    fn all_subscriptions(&self) -> Result<Vec<SubscriptionRecord>>;
    /// Change the state; returns the updated record.
    fn set_subscription_state(
        &self,
        id: &str,
        state: SubscriptionState,
        audit: AuditEntry,
    ) -> Result<SubscriptionRecord>;
    /// Replace one key's digest; returns the updated record.
    fn set_subscription_key(
        &self,
        id: &str,
        slot: KeySlot,
        digest: [u8; 32],
        audit: AuditEntry,
    ) -> Result<SubscriptionRecord>;
    /// Delete; `NotFound` when absent.
    fn delete_subscription(&self, id: &str, audit: AuditEntry) -> Result<()>;

    /// Write quota counters (insert or replace each by `(origin, counter_key)`) and delete
    /// every stored counter whose period ended at or before `now_ms`, in one transaction.
    fn save_quota_counters(&self, counters: &[QuotaCounterRecord], now_ms: i64) -> Result<()>;
    /// Every stored quota counter whose period ends after `now_ms`.
    fn quota_counters(&self, now_ms: i64) -> Result<Vec<QuotaCounterRecord>>;
    /// Delete the quota counters of a subscription and write the audit entry, in one
    /// transaction. Returns how many were deleted.
    fn reset_quota_counters(&self, subscription_id: &str, audit: AuditEntry) -> Result<u64>;

    /// Add analytics deltas: each row (a minute's counts for one key) is merged into its
    /// stored minute row and into the hour row holding that minute (counts added, latency
    /// sketches merged), every row of the call in one transaction.
    fn add_usage(&self, rows: &[UsageRow]) -> Result<()>;
    /// Add analytics deltas handed in by a data plane as batch `seq` of `origin` (its node
    /// and run), like [`Store::add_usage`], unless a batch of `origin` numbered `seq` or
    /// higher was added already: the batch and its number are stored in one transaction, so
    /// a retried batch is counted once. Returns whether the rows were added.
    fn add_usage_batch(&self, origin: &str, seq: u64, rows: &[UsageRow]) -> Result<bool>;
    /// Stored rollup rows of `resolution` whose bucket overlaps `[from, to)` (Unix seconds)
    /// and that match `filter`, oldest first.
    fn usage(
        &self,
        resolution: Resolution,
        from: i64,
        to: i64,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageRow>>;
    /// The starts of the oldest stored minute row and of the oldest stored hour row, if any:
    /// a range older than the minutes kept is read from the hours.
    fn usage_coverage(&self) -> Result<(Option<i64>, Option<i64>)>;
    /// Delete minute rows whose bucket starts before `minutes_before` and hour rows whose
    /// bucket starts before `hours_before` (Unix seconds), in one transaction. Returns how
    /// many of each were deleted.
    fn prune_usage(&self, minutes_before: i64, hours_before: i64) -> Result<(u64, u64)>;

    /// Append an audit entry on its own (e.g. a refused config).
    fn append_audit(&self, audit: AuditEntry) -> Result<()>;
    /// Audit entries newest first, those below `before` when given, at most `limit`.
    fn list_audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>>;
}

impl AuditEntry {
    /// An entry to be completed by the store (id, time, revision).
    pub fn new(actor: &str, action: &str, target: &str, result: &str) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: String::new(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            revision: None,
            result: result.to_owned(),
        }
    }
}
