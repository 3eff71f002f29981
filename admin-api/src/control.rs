//! `/control/*`: the channel between a control plane (`tollgate admin`) and its data planes
//! (`tollgate gateway --control-plane URL`).
//!
//! # Protocol (version 1)
//!
//! `GET /control/snapshot?after=VERSION&wait=SECONDS` is a long poll in the style of
//! Consul's blocking queries. The answer is a [`ControlSnapshot`]: the policy file text of
//! the live revision (exactly as stored, so a data plane compiles exactly what the control
//! plane compiled), the installation secret and every subscription's key digests, state and
//! scope, and a `version` naming all of it.
//!
//! - Without `after`, or when `after` differs from the live version, the answer comes at
//!   once (200).
//! - When `after` equals the live version, the call waits, up to `wait` seconds (default
//!   30, at most 60), for a config write or a subscription change, and answers 200 with
//!   the new snapshot as soon as one happens; else 204 (no body) when the wait is over.
//!   The data plane then asks again with the same `after`.
//! - The version is `REVISION.HASH`: the config revision, then 16 hex digits of a SHA-256
//!   over the config text's digest, the secret, and every subscription entry. It is
//!   computed from the content, not from a counter, so it survives control-plane restarts:
//!   a data plane that comes back with the version of its last-known-good file is told
//!   nothing new unless something changed. Data planes compare versions for equality only.
//! - A control plane with no config yet (revision 0) has no snapshot: the call waits as if
//!   nothing had changed (and answers 204).
//!
//! Subscription changes make no config revision; they change the version's hash. So a
//! subscription created, suspended or re-keyed reaches every data plane within one round
//! trip, like a config write.
//!
//! `POST /control/usage` is where data planes hand in their analytics rollups: a
//! [`UsageBatch`] of per-minute deltas, numbered per data-plane run (`node`, `boot`, `seq`:
//! 1, 2, 3... sent in order, each retried until acknowledged). The store adds a batch and
//! records its number in one transaction ([`tollgate_store::Store::add_usage_batch`]), so a
//! batch retried after a lost acknowledgement or a control-plane crash is counted once: the
//! control plane's analytics are the exact sum over its data planes. The answer says
//! whether the batch was new (`{"added": true}`) or a repeat (`false`); both are 200.
//!
//! # Who may call
//!
//! The `dataplane` token (`TOLLGATE_DATAPLANE_TOKEN`), which may call nothing else, or the
//! admin token. The operator token may not: the snapshot carries the installation secret.
//!
//! # Wake-ups
//!
//! Every config write and every key ring rebuild in this process rings a process-wide
//! [`tokio::sync::watch`] bell ([`ring`]); waiting polls then recompute the version and
//! answer when it changed. A spurious ring (another state in the same process, as in
//! tests) only costs a recomputation. When the admin listener shuts down ([`crate::serve`]),
//! waiting polls answer 204 at once, so a graceful shutdown never waits out a long poll.

use crate::auth::DataPlaneCaller;
use crate::control_delta::{compose, History, Step, DELTA_CONTENT_TYPE};
use crate::extract::{JsonBody, Q};
use crate::problem::{store_problem, Problem};
use crate::subscriptions::parse_scope;
use crate::AdminState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tollgate_analytics::{LatencySketch, Usage, UsageKey, UsageRow};
use tollgate_gateway::keys::KeyEntry;
use tollgate_gateway::{Subscription, SubscriptionState};
use tollgate_store::StoreError;
use utoipa::{IntoParams, ToSchema};

/// The protocol version this build speaks ([`ControlSnapshot::protocol`]).
pub const PROTOCOL: u32 = 1;

/// How long a poll waits by default when `after` is given.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// The longest wait a poll may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Everything a data plane needs to serve: the config and the subscription keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ControlSnapshot {
    /// The protocol version ([`PROTOCOL`]).
    pub protocol: u32,
    /// Names this whole snapshot: `REVISION.HASH` (compare for equality only).
    pub version: String,
    /// The config revision.
    pub revision: u64,
    /// Hex SHA-256 of `config_text`.
    pub config_sha256: String,
    /// The policy file text of the revision, as stored.
    pub config_text: String,
    /// The installation secret subscription keys are hashed under (64 hex digits).
    pub installation_secret: String,
    /// Every subscription whose scope can be read, in id order.
    pub subscriptions: Vec<SubscriptionKeys>,
    /// When the control plane built this snapshot from its store (RFC 3339 UTC); polls
    /// answered with the same snapshot carry the same time.
    pub issued_at: String,
}

impl std::fmt::Debug for ControlSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, never the digests.
        f.debug_struct("ControlSnapshot")
            .field("protocol", &self.protocol)
            .field("version", &self.version)
            .field("revision", &self.revision)
            .field("config_sha256", &self.config_sha256)
            .field("subscriptions", &self.subscriptions.len())
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

/// One subscription's key material, as a data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionKeys {
    /// Subscription id.
    pub id: String,
    /// `active`, `suspended` or `cancelled`.
    pub state: String,
    /// `all`, `product:ID` or `api:ID`.
    pub scope: String,
    /// HMAC-SHA256 digest of the primary key (64 hex digits).
    pub primary: String,
    /// HMAC-SHA256 digest of the secondary key (64 hex digits).
    pub secondary: String,
}

impl ControlSnapshot {
    /// A snapshot of `config_text` as `revision`, with its digest, its version and the
    /// time now (`subscriptions` in id order).
    pub fn new(
        revision: u64,
        config_text: String,
        secret: &[u8; 32],
        subscriptions: Vec<SubscriptionKeys>,
    ) -> ControlSnapshot {
        let installation_secret = hex(secret);
        let config_sha256 = crate::apply::sha256_hex(&config_text);
        ControlSnapshot {
            protocol: PROTOCOL,
            version: version_of(
                revision,
                &config_sha256,
                &installation_secret,
                &subscriptions,
            ),
            revision,
            config_sha256,
            config_text,
            installation_secret,
            subscriptions,
            issued_at: now_rfc3339(),
        }
    }

    /// Checks what a data plane must check before using a snapshot: the protocol, the
    /// config text's digest, and that the version names this content.
    pub fn verify(&self) -> Result<(), String> {
        if self.protocol != PROTOCOL {
            return Err(format!(
                "protocol {} (this build speaks {PROTOCOL})",
                self.protocol
            ));
        }
        if !crate::apply::sha256_hex(&self.config_text).eq_ignore_ascii_case(&self.config_sha256) {
            return Err("the config text does not match its SHA-256".into());
        }
        let want = version_of(
            self.revision,
            &self.config_sha256,
            &self.installation_secret,
            &self.subscriptions,
        );
        if want != self.version {
            return Err(format!(
                "the version {} does not name this content ({want})",
                self.version
            ));
        }
        Ok(())
    }

    /// The installation secret and the key ring entries (for
    /// [`tollgate_gateway::keys::KeyRing::replace_with_secret`]). Fails on a malformed
    /// secret, digest, state or scope: a data plane then refuses the whole snapshot.
    pub fn key_entries(&self) -> Result<([u8; 32], Vec<KeyEntry>), String> {
        let secret = unhex32(&self.installation_secret)
            .ok_or_else(|| "the installation secret is not 64 hex digits".to_owned())?;
        let mut entries = Vec::with_capacity(self.subscriptions.len());
        for s in &self.subscriptions {
            let bad = |what: &str| format!("subscription {}: bad {what}", s.id);
            let state = match s.state.as_str() {
                "active" => SubscriptionState::Active,
                "suspended" => SubscriptionState::Suspended,
                "cancelled" => SubscriptionState::Cancelled,
                _ => return Err(bad("state")),
            };
            entries.push(KeyEntry {
                primary: unhex32(&s.primary).ok_or_else(|| bad("primary digest"))?,
                secondary: unhex32(&s.secondary).ok_or_else(|| bad("secondary digest"))?,
                subscription: Subscription {
                    id: Arc::from(s.id.as_str()),
                    state,
                    scope: parse_scope(&s.scope).ok_or_else(|| bad("scope"))?,
                },
            });
        }
        Ok((secret, entries))
    }
}

/// A batch of analytics rollup deltas from a data plane (`POST /control/usage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// The data plane's node id (`[A-Za-z0-9._-]{1,64}`).
    pub node: String,
    /// Its run: a random id made at each start (`[A-Za-z0-9._-]{1,64}`); batches are
    /// numbered per run.
    pub boot: String,
    /// The batch number within the run: 1, 2, 3..., sent in order.
    pub seq: u64,
    /// The deltas: one row per (minute, product, API, operation, subscription, status).
    pub rows: Vec<UsageBatchRow>,
}

/// One rollup delta on the wire: the key of a
/// [`tollgate_analytics::UsageRow`] and its counts, the latency sketch in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatchRow {
    /// Start of the minute, Unix seconds (a multiple of 60).
    pub bucket: i64,
    /// Product id.
    pub product: Option<String>,
    /// API id.
    pub api: Option<String>,
    /// Operation id.
    pub operation: Option<String>,
    /// Subscription id.
    pub subscription: Option<String>,
    /// Status sent (0: none).
    pub status: u16,
    /// Calls (= success + blocked + failed + other).
    pub calls: u64,
    /// Calls answered 2xx/3xx.
    pub success: u64,
    /// Calls a policy refused.
    pub blocked: u64,
    /// Calls that failed (5xx, upstream errors).
    pub failed: u64,
    /// The other calls.
    pub other: u64,
    /// Blocked by a rate limit.
    pub rate_limited: u64,
    /// Blocked by a quota.
    pub quota_exceeded: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Answer body bytes.
    pub bytes_out: u64,
    /// Sum of total latencies, microseconds.
    pub latency_us_sum: u64,
    /// Calls that went upstream.
    pub upstream_calls: u64,
    /// Sum of their upstream latencies, microseconds.
    pub upstream_latency_us_sum: u64,
    /// Cache hits.
    pub cache_hits: u64,
    /// Cache misses.
    pub cache_misses: u64,
    /// The latency sketch's encoded form, in hex.
    pub latency_sketch: String,
}

fn arc(id: &Option<String>) -> Option<Arc<str>> {
    id.as_deref().map(Arc::from)
}

impl UsageBatchRow {
    /// The wire form of `row`.
    pub fn from_row(row: &UsageRow) -> UsageBatchRow {
        let (k, u) = (&row.key, &row.usage);
        UsageBatchRow {
            bucket: k.bucket,
            product: k.product.as_deref().map(str::to_owned),
            api: k.api.as_deref().map(str::to_owned),
            operation: k.operation.as_deref().map(str::to_owned),
            subscription: k.subscription.as_deref().map(str::to_owned),
            status: k.status,
            calls: u.calls,
            success: u.success,
            blocked: u.blocked,
            failed: u.failed,
            other: u.other,
            rate_limited: u.rate_limited,
            quota_exceeded: u.quota_exceeded,
            bytes_in: u.bytes_in,
            bytes_out: u.bytes_out,
            latency_us_sum: u.latency_us_sum,
            upstream_calls: u.upstream_calls,
            upstream_latency_us_sum: u.upstream_latency_us_sum,
            cache_hits: u.cache_hits,
            cache_misses: u.cache_misses,
            latency_sketch: hex(&u.latency.encode()),
        }
    }

    /// The row, checked: a minute bucket, outcomes adding up to the calls, a sketch that
    /// decodes and counts the calls.
    pub fn to_row(&self) -> Result<UsageRow, String> {
        if self.bucket.rem_euclid(60) != 0 {
            return Err(format!(
                "bucket {} is not the start of a minute",
                self.bucket
            ));
        }
        let outcomes = [self.success, self.blocked, self.failed, self.other]
            .iter()
            .try_fold(0u64, |a, b| a.checked_add(*b));
        if outcomes != Some(self.calls) {
            return Err("success + blocked + failed + other must equal calls".into());
        }
        let bytes = unhex(&self.latency_sketch).ok_or("latency_sketch is not hex")?;
        let latency = LatencySketch::decode(&bytes)?;
        if latency.count() != self.calls {
            return Err("the latency sketch does not count the calls".into());
        }
        Ok(UsageRow {
            key: UsageKey {
                bucket: self.bucket,
                product: arc(&self.product),
                api: arc(&self.api),
                operation: arc(&self.operation),
                subscription: arc(&self.subscription),
                status: self.status,
            },
            usage: Usage {
                calls: self.calls,
                success: self.success,
                blocked: self.blocked,
                failed: self.failed,
                other: self.other,
                rate_limited: self.rate_limited,
                quota_exceeded: self.quota_exceeded,
                bytes_in: self.bytes_in,
                bytes_out: self.bytes_out,
                latency_us_sum: self.latency_us_sum,
                upstream_calls: self.upstream_calls,
                upstream_latency_us_sum: self.upstream_latency_us_sum,
                cache_hits: self.cache_hits,
                cache_misses: self.cache_misses,
                latency,
            },
        })
    }
}

/// The answer of `POST /control/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageAck {
    /// True when the batch was added now; false when it had been added before (a retry).
    pub added: bool,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `POST /control/usage`.
#[utoipa::path(
    post,
    path = "/control/usage",
    tag = "control",
    request_body(content = UsageBatch, content_type = "application/json"),
    description = "A data plane hands in a batch of analytics rollup deltas, numbered per run         (`node`, `boot`, `seq`). The batch and its number are stored in one transaction: a         batch sent again (`seq` not above the highest one stored for that run) is acknowledged         and not counted twice. Dataplane and admin tokens only.",
    responses(
        (status = 200, description = "Stored now, or stored before (`added: false`).", body = UsageAck),
        (status = 403, description = "The operator token may not hand in analytics."),
        (status = 422, description = "A malformed batch."),
    )
)]
pub(crate) async fn usage(
    _: DataPlaneCaller,
    State(state): State<AdminState>,
    JsonBody(batch): JsonBody<UsageBatch>,
) -> Result<Json<UsageAck>, Problem> {
    let invalid = |path: String, message: String| {
        Problem::invalid(
            "the batch is malformed",
            vec![crate::problem::FieldError::at(path, message)],
        )
    };
    if !valid_name(&batch.node) {
        return Err(invalid(
            "node".into(),
            "expected [A-Za-z0-9._-]{1,64}".into(),
        ));
    }
    if !valid_name(&batch.boot) {
        return Err(invalid(
            "boot".into(),
            "expected [A-Za-z0-9._-]{1,64}".into(),
        ));
    }
    if batch.seq == 0 {
        return Err(invalid("seq".into(), "batches are numbered from 1".into()));
    }
    let mut rows = Vec::with_capacity(batch.rows.len());
    for (i, r) in batch.rows.iter().enumerate() {
        rows.push(r.to_row().map_err(|e| invalid(format!("rows[{i}]"), e))?);
    }
    let origin = format!("{}/{}", batch.node, batch.boot);
    let seq = batch.seq;
    let store = state.store.clone();
    let added = tokio::task::spawn_blocking(move || store.add_usage_batch(&origin, seq, &rows))
        .await
        .map_err(|e| Problem::internal("the analytics task failed", &e))?
        .map_err(|e| store_problem(e, "analytics batch"))?;
    Ok(Json(UsageAck { added }))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes from hex digits (an even number of them).
fn unhex(text: &str) -> Option<Vec<u8>> {
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// 32 bytes from 64 hex digits.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// `REVISION.HASH` of a snapshot's content.
fn version_of(
    revision: u64,
    config_sha256: &str,
    secret: &str,
    subs: &[SubscriptionKeys],
) -> String {
    let mut h = Sha256::new();
    h.update(b"tollgate-control-v1\n");
    h.update(config_sha256.to_ascii_lowercase().as_bytes());
    h.update(b"\n");
    h.update(secret.as_bytes());
    for s in subs {
        for part in [&s.id, &s.state, &s.scope, &s.primary, &s.secondary] {
            h.update(b"\n");
            h.update(part.as_bytes());
        }
    }
    let digest = h.finalize();
    format!("{revision}.{}", &hex(&digest)[..16])
}

fn state_name(s: tollgate_store::SubscriptionState) -> &'static str {
    match s {
        tollgate_store::SubscriptionState::Active => "active",
        tollgate_store::SubscriptionState::Suspended => "suspended",
        tollgate_store::SubscriptionState::Cancelled => "cancelled",
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The live snapshot, or `None` when there is none yet (no config, or the live revision is
/// being stored right now).
pub fn current_snapshot(state: &AdminState) -> Result<Option<ControlSnapshot>, StoreError> {
    let revision = state.gateway.snapshot().revision;
    if revision == 0 {
        return Ok(None);
    }
    let rev = match state.store.revision(revision) {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut subscriptions = Vec::new();
    for sub in state.store.all_subscriptions()? {
        // The same rule as the control plane's own key ring: never grant access on a scope
        // that cannot be read.
        if parse_scope(&sub.scope).is_none() {
            continue;
        }
        subscriptions.push(SubscriptionKeys {
            id: sub.id,
            state: state_name(sub.state).to_owned(),
            scope: sub.scope,
            primary: hex(&sub.primary_digest),
            secondary: hex(&sub.secondary_digest),
        });
    }
    subscriptions.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Some(ControlSnapshot::new(
        revision,
        rev.text,
        &state.keys.secret(),
        subscriptions,
    )))
}

fn bell() -> &'static watch::Sender<u64> {
    static BELL: OnceLock<watch::Sender<u64>> = OnceLock::new();
    BELL.get_or_init(|| watch::channel(0).0)
}

fn closing_flag() -> &'static watch::Sender<bool> {
    static CLOSING: OnceLock<watch::Sender<bool>> = OnceLock::new();
    CLOSING.get_or_init(|| watch::channel(false).0)
}

/// The admin listener is shutting down: waiting polls answer 204 at once (so a graceful
/// shutdown does not wait out their long polls), and new ones do not wait.
pub(crate) fn close() {
    closing_flag().send_replace(true);
}

/// Wakes every waiting poll: something a snapshot holds may have changed (called after
/// every config write and key ring rebuild).
pub(crate) fn ring() {
    bell().send_modify(|n| *n = n.wrapping_add(1));
}

/// The query of `GET /control/snapshot`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotQuery {
    /// The version the caller holds: answer only when the live one differs.
    after: Option<String>,
    /// Seconds to wait for a change when `after` is the live version (default 30, at most
    /// 60; 0 answers at once).
    wait: Option<u64>,
    /// The caller holds the snapshot named by `after` and can apply a delta to it: answer
    /// with the changes since (`application/vnd.tollgate.snapshot-delta+json`, a
    /// [`ControlDelta`]) when they are known and smaller than the snapshot.
    delta: Option<bool>,
}

/// The live snapshot as sent, shared by every poll of one control plane: a change is read
/// from the store, hashed and serialized once however many data planes wait, and a poll
/// that finds nothing new reads nothing (without it, each poll did all of that on arrival
/// and at each change: with N data planes, N times the subscriptions per change and per
/// 30-second round of polls).
///
/// An entry serves a poll that read the bell at or before the value the entry was built
/// at, while the gateway still serves the revision it holds. The bell value is read before
/// the store, so a change that lands while an entry is built rings after that read and the
/// next poll builds again.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    inner: Arc<tokio::sync::Mutex<Cached>>,
    builds: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("builds", &self.builds())
            .finish_non_exhaustive()
    }
}

impl SnapshotCache {
    /// How many snapshots were built from the store (a figure for tests and logs).
    pub fn builds(&self) -> u64 {
        self.builds.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What [`SnapshotCache`] holds: the last snapshot built, and how the ones before it
/// changed into each other (for deltas).
#[derive(Default)]
struct Cached {
    built: Option<Built>,
    history: History,
}

/// A snapshot built for [`SnapshotCache`].
struct Built {
    bell: u64,
    revision: u64,
    /// `None`: no snapshot yet (no config).
    snapshot: Option<Live>,
}

/// The live snapshot: as sent whole (its JSON), and as data to make deltas from.
#[derive(Clone)]
struct Live {
    snapshot: Arc<ControlSnapshot>,
    body: axum::body::Bytes,
    /// The changes remembered when it was built, oldest first.
    steps: Vec<Arc<Step>>,
}

/// The live snapshot, from the cache or built (`bell`: the bell's value read before this
/// call).
async fn build(state: &AdminState, bell: u64) -> Result<Option<Live>, Problem> {
    let revision = state.gateway.snapshot().revision;
    // Polls waiting on one change queue here while the first builds, then take its result.
    let mut cached = state.snapshots.inner.lock().await;
    if let Some(b) = cached
        .built
        .as_ref()
        .filter(|b| b.bell >= bell && b.revision == revision)
    {
        return Ok(b.snapshot.clone());
    }
    let before = cached
        .built
        .as_ref()
        .and_then(|b| b.snapshot.as_ref())
        .map(|l| l.snapshot.clone());
    let st = state.clone();
    let built = tokio::task::spawn_blocking(move || -> Result<_, Problem> {
        let Some(snap) = current_snapshot(&st).map_err(|e| store_problem(e, "snapshot"))? else {
            return Ok(None);
        };
        let body = serde_json::to_vec(&snap)
            .map_err(|e| Problem::internal("the snapshot cannot be written", &e))?;
        // What changed since the snapshot built before (one pass over both, in id order).
        let step = before
            .filter(|b| b.version != snap.version)
            .map(|b| Step::between(&b, &snap));
        Ok(Some((Arc::new(snap), axum::body::Bytes::from(body), step)))
    })
    .await
    .map_err(|e| Problem::internal("the snapshot task failed", &e))??;
    state
        .snapshots
        .builds
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let live = built.map(|(snapshot, body, step)| {
        if let Some(step) = step {
            cached.history.push(step, snapshot.subscriptions.len());
        }
        Live {
            steps: cached.history.steps(),
            snapshot,
            body,
        }
    });
    cached.built = Some(Built {
        bell,
        revision,
        snapshot: live.clone(),
    });
    Ok(live)
}

/// `GET /control/snapshot`.
#[utoipa::path(
    get,
    path = "/control/snapshot",
    tag = "control",
    params(SnapshotQuery),
    description = "The data planes' long poll: the live config text, the installation secret \
        and every subscription's key digests, named by a `version`. Without `after`, or when \
        `after` differs from the live version, answers at once; else waits up to `wait` \
        seconds for a config write or a subscription change, and answers 204 when none came. \
        Dataplane and admin tokens only (the operator token gets 403): the answer holds key \
        material. See docs/scaling.md.",
    responses(
        (status = 200, description = "A snapshot newer than `after` (`application/json`), or \
            with `delta=true` the changes from `after` to it \
            (`application/vnd.tollgate.snapshot-delta+json`, a `ControlDelta`).", body = ControlSnapshot),
        (status = 204, description = "Nothing changed during the wait."),
        (status = 403, description = "The operator token may not read key material."),
    )
)]
pub(crate) async fn snapshot(
    _: DataPlaneCaller,
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    Q(query): Q<SnapshotQuery>,
) -> Result<Response, Problem> {
    let node = headers
        .get("x-tollgate-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .chars()
        .take(64)
        .collect::<String>();
    let wait = match (&query.after, query.wait) {
        (_, Some(secs)) => Duration::from_secs(secs).min(MAX_WAIT),
        (Some(_), None) => DEFAULT_WAIT,
        (None, None) => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before looking, so a change made while the snapshot is built still wakes
    // this poll.
    let mut rx = bell().subscribe();
    let mut closing = closing_flag().subscribe();
    loop {
        if *closing.borrow_and_update() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let bell = *rx.borrow_and_update();
        if let Some(live) = build(&state, bell).await? {
            let version = live.snapshot.version.as_str();
            if query.after.as_deref() != Some(version) {
                let delta = match (&query.after, query.delta) {
                    (Some(after), Some(true)) => compose(&live.steps, after, &live.snapshot),
                    _ => None,
                };
                tracing::debug!(
                    %node,
                    after = query.after.as_deref().unwrap_or("-"),
                    %version,
                    delta = delta.is_some(),
                    "snapshot sent to a data plane"
                );
                if let Some(delta) = delta {
                    let body = serde_json::to_vec(&delta)
                        .map_err(|e| Problem::internal("the delta cannot be written", &e))?;
                    let kind = [(axum::http::header::CONTENT_TYPE, DELTA_CONTENT_TYPE)];
                    return Ok((kind, body).into_response());
                }
                let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
                return Ok((json, live.body).into_response());
            }
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The bell lives as long as the process: cannot happen, but never spin.
                    tokio::time::sleep_until(deadline).await;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            _ = closing.changed() => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlSnapshot {
        let subs = vec![SubscriptionKeys {
            id: "a".into(),
            state: "active".into(),
            scope: "api:x".into(),
            primary: hex(&[1; 32]),
            secondary: hex(&[2; 32]),
        }];
        ControlSnapshot::new(3, "version: 1\n".to_owned(), &[7; 32], subs)
    }

    #[test]
    fn a_snapshot_verifies_and_yields_its_keys() {
        let s = sample();
        s.verify().unwrap();
        assert!(s.version.starts_with("3."));
        let (secret, entries) = s.key_entries().unwrap();
        assert_eq!(secret, [7; 32]);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].primary, [1; 32]);
        assert_eq!(&*entries[0].subscription.id, "a");
        // The debug form holds neither the secret nor a digest.
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(&hex(&[7; 32])) && !dbg.contains(&hex(&[1; 32])));
    }

    #[test]
    fn tampering_is_caught() {
        let mut s = sample();
        s.config_text.push('#');
        assert!(s.verify().is_err());
        let mut s = sample();
        s.subscriptions[0].state = "suspended".into();
        assert!(s.verify().unwrap_err().contains("version"));
        let mut s = sample();
        s.protocol = 2;
        assert!(s.verify().is_err());
        let mut s = sample();
        s.subscriptions[0].primary = "zz".into();
        assert!(s.key_entries().is_err());
    }

    #[test]
    fn the_version_follows_every_part() {
        let s = sample();
        let base = version_of(
            3,
            &s.config_sha256,
            &s.installation_secret,
            &s.subscriptions,
        );
        assert_eq!(base, s.version);
        assert_ne!(
            base,
            version_of(3, &s.config_sha256, &hex(&[8; 32]), &s.subscriptions)
        );
        assert_ne!(
            base,
            version_of(3, &s.config_sha256, &s.installation_secret, &[])
        );
        assert_ne!(
            base,
            version_of(
                4,
                &s.config_sha256,
                &s.installation_secret,
                &s.subscriptions
            )
        );
    }

    #[test]
    fn usage_rows_survive_the_wire_and_bad_ones_are_refused() {
        let mut usage = Usage::default();
        for (latency, outcome) in [(100u64, 0), (2500, 1), (90_000, 0)] {
            usage.calls += 1;
            if outcome == 0 {
                usage.success += 1;
            } else {
                usage.blocked += 1;
                usage.rate_limited += 1;
            }
            usage.latency_us_sum += latency;
            usage.latency.add(latency);
        }
        usage.bytes_out = 42;
        let row = UsageRow {
            key: UsageKey {
                bucket: 1_800_000_000,
                product: Some(Arc::from("gold")),
                api: Some(Arc::from("pets")),
                operation: None,
                subscription: Some(Arc::from("s1")),
                status: 200,
            },
            usage,
        };
        let wire = UsageBatchRow::from_row(&row);
        let json = serde_json::to_string(&wire).unwrap();
        let back: UsageBatchRow = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_row().unwrap(), row);
        let mut bad = wire.clone();
        bad.bucket += 1;
        assert!(bad.to_row().is_err());
        let mut bad = wire.clone();
        bad.calls += 1;
        assert!(bad.to_row().is_err());
        let mut bad = wire.clone();
        bad.latency_sketch = "zz".into();
        assert!(bad.to_row().is_err());
        let mut bad = wire;
        bad.success -= 1;
        bad.other += 1;
        bad.latency_sketch = hex(&LatencySketch::default().encode());
        assert!(bad.to_row().unwrap_err().contains("sketch"));
        assert!(valid_name("dp-1.a_b") && !valid_name("") && !valid_name("a/b"));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(unhex32(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex32("00"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }
}
