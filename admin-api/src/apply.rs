//! Config writes: the one path by which a policy file becomes a stored revision and the live
//! snapshot (`PUT /config`, products, APIs, rollback, `--config FILE` at start).
//!
//! Order of a write, all under one process-wide mutex (held in synchronous code only):
//! `If-Match` check → build the new text (from the live file, for per-resource writes) →
//! validate and compile (every error) → plan → [dry run: check the gateway can build it,
//! stop] → "unchanged" check → `Gateway::apply` with the next revision number → store the
//! revision with its audit entry. A config the gateway refuses is therefore never stored;
//! when storing fails after the swap, the previous config is applied again. Refused attempts
//! are written to the audit log.

use crate::plan::{plan, Change};
use crate::problem::{FieldError, Problem};
use crate::AdminState;
use axum::http::header::IF_MATCH;
use axum::http::HeaderMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use tollgate_config::PolicyFile;
use tollgate_gateway::snapshot::{build_chains, BuildProblem, Snapshot};
use tollgate_store::{AuditEntry, RevisionSource};
use utoipa::ToSchema;

/// One config write at a time, in this process.
static CONFIG_WRITES: Mutex<()> = Mutex::new(());

/// What a config write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApplyOutcome {
    /// The live revision afterwards (for a dry run or an unchanged config: the live one).
    pub revision: u64,
    /// The plan: what was (or, for a dry run, would be) added, changed or removed.
    pub changes: Vec<Change>,
    /// True when nothing was stored because the config equals the live one.
    pub unchanged: bool,
    /// True for a dry run: nothing was stored or applied.
    pub dry_run: bool,
}

/// Why a config write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyFailure {
    /// The policy file is invalid: every error, with its path (and line, when known).
    Invalid(Vec<FieldError>),
    /// The gateway cannot run it (a policy kind this build lacks, an unresolvable
    /// upstream host...): every problem, with where it came from.
    Refused(Vec<BuildProblem>),
    /// `If-Match` does not name the live revision.
    Stale {
        /// The live revision.
        live: u64,
    },
    /// The thing to change does not exist (per-resource writes).
    NotFound(String),
    /// The store failed.
    Store(String),
}

impl std::fmt::Display for ApplyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyFailure::Invalid(errors) => {
                write!(f, "invalid policy file ({} errors)", errors.len())?;
                for e in errors {
                    write!(f, "\n  {}", e.path)?;
                    if let (Some(line), Some(column)) = (e.line, e.column) {
                        write!(f, " (line {line}, column {column})")?;
                    }
                    write!(f, ": {}", e.message)?;
                }
                Ok(())
            }
            ApplyFailure::Refused(problems) => {
                write!(f, "the gateway refused the config")?;
                for p in problems {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
            ApplyFailure::Stale { live } => write!(f, "the live revision is {live}"),
            ApplyFailure::NotFound(what) => write!(f, "{what} does not exist"),
            ApplyFailure::Store(e) => write!(f, "store failure: {e}"),
        }
    }
}

impl std::error::Error for ApplyFailure {}

impl From<ApplyFailure> for Problem {
    fn from(f: ApplyFailure) -> Problem {
        match f {
            ApplyFailure::Invalid(errors) => Problem::invalid(
                format!("the policy file has {} error(s)", errors.len()),
                errors,
            ),
            ApplyFailure::Refused(problems) => Problem::invalid(
                format!(
                    "the gateway cannot run this config: {} problem(s)",
                    problems.len()
                ),
                problems
                    .into_iter()
                    .map(|p| FieldError::at(p.origin, p.message))
                    .collect(),
            ),
            ApplyFailure::Stale { live } => Problem::precondition_failed(live),
            ApplyFailure::NotFound(what) => Problem::not_found(format!("{what} does not exist")),
            ApplyFailure::Store(e) => Problem::internal("the store failed", &e),
        }
    }
}

/// An `If-Match` precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// `*`: any live config.
    Any,
    /// Entity tags as sent (`"3"`); weak tags never match (RFC 9110 strong comparison).
    Tags(Vec<String>),
}

impl IfMatch {
    /// The request's `If-Match`, if any.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<IfMatch> {
        let mut tags = Vec::new();
        for value in headers.get_all(IF_MATCH) {
            let value = value.to_str().unwrap_or("");
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    return Some(IfMatch::Any);
                }
                tags.push(tag.to_owned());
            }
        }
        (!tags.is_empty() || headers.contains_key(IF_MATCH)).then_some(IfMatch::Tags(tags))
    }

    fn matches(&self, revision: u64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Tags(tags) => {
                let want = format!("\"{revision}\"");
                tags.contains(&want)
            }
        }
    }
}

/// A config write.
#[derive(Debug)]
pub(crate) struct WriteRequest<'a> {
    /// Where the revision comes from.
    pub(crate) source: RevisionSource,
    /// Who (role name or `file`).
    pub(crate) actor: &'a str,
    /// Audit action, e.g. `config.put`.
    pub(crate) action: &'a str,
    /// Audit target, e.g. `config` or `product:starter`.
    pub(crate) target: String,
    /// `If-Match`, checked against the live revision.
    pub(crate) if_match: Option<IfMatch>,
    /// Only the plan.
    pub(crate) dry_run: bool,
    /// The text was assembled by the service (per-resource writes): validation errors lose
    /// their line and column, which would point into text the caller never saw; and a result
    /// equal to the live file is "unchanged".
    pub(crate) assembled: bool,
}

/// Hex SHA-256.
pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn audit_refusal(state: &AdminState, req: &WriteRequest<'_>, result: &str) {
    let entry = AuditEntry::new(req.actor, req.action, &req.target, result);
    if let Err(e) = state.store.append_audit(entry) {
        tracing::error!(error = %e, "cannot write the audit entry of a refused config");
    }
}

/// What the gateway would refuse in `compiled`, without changing anything.
fn build_problems(
    state: &AdminState,
    compiled: &tollgate_config::CompiledConfig,
) -> Vec<BuildProblem> {
    let mut problems = build_chains(compiled).err().unwrap_or_default();
    // As a write would be refused (`Gateway::apply_checked`): a pool that cannot be built,
    // or a new one with a host name that does not resolve.
    if let Err(e) = state.gateway.prepare_pools(compiled, true) {
        problems.extend(e.problems);
    }
    problems
}

/// [`write_config`] on a blocking thread: parsing, validating and applying a policy file is
/// CPU work (and waits for the write mutex), which must not hold up the admin API's
/// runtime. A panic in it is resumed here.
pub(crate) async fn write_config_blocking<F>(
    state: &AdminState,
    req: WriteRequest<'static>,
    make_text: F,
) -> Result<ApplyOutcome, ApplyFailure>
where
    F: FnOnce(&Snapshot) -> Result<String, ApplyFailure> + Send + 'static,
{
    let state = state.clone();
    match tokio::task::spawn_blocking(move || write_config(&state, req, make_text)).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ApplyFailure::Store(format!(
            "the config write was cancelled: {e}"
        ))),
    }
}

/// Runs one config write; `make_text` builds the new policy file text from the live
/// snapshot (under the write lock, so per-resource writes never lose a concurrent change).
pub(crate) fn write_config(
    state: &AdminState,
    req: WriteRequest<'_>,
    make_text: impl FnOnce(&Snapshot) -> Result<String, ApplyFailure>,
) -> Result<ApplyOutcome, ApplyFailure> {
    // A dry run stores and applies nothing: it plans against the snapshot live when it
    // starts, without the write lock, so that planning (parsing, resolving upstream
    // hosts) never holds up a write.
    let _guard = (!req.dry_run).then(|| CONFIG_WRITES.lock().unwrap_or_else(|e| e.into_inner()));
    let live = state.gateway.snapshot();
    if let Some(cond) = &req.if_match {
        if !cond.matches(live.revision) {
            if !req.dry_run {
                audit_refusal(state, &req, "refused: If-Match does not match");
            }
            return Err(ApplyFailure::Stale {
                live: live.revision,
            });
        }
    }
    let text = match make_text(&live) {
        Ok(text) => text,
        Err(failure) => {
            if !req.dry_run {
                audit_refusal(state, &req, &format!("refused: {failure}"));
            }
            return Err(failure);
        }
    };
    let compiled = match tollgate_config::parse_and_compile(&text) {
        Ok(c) => c,
        Err(errors) => {
            let errors: Vec<FieldError> = errors
                .into_iter()
                .map(|e| {
                    let mut e = FieldError::from(e);
                    if req.assembled {
                        e.line = None;
                        e.column = None;
                    }
                    e
                })
                .collect();
            if !req.dry_run {
                audit_refusal(
                    state,
                    &req,
                    &format!("refused: {} validation error(s)", errors.len()),
                );
            }
            return Err(ApplyFailure::Invalid(errors));
        }
    };
    let changes = plan(&live.config.file, &compiled.file);
    if req.dry_run {
        let problems = build_problems(state, &compiled);
        if !problems.is_empty() {
            return Err(ApplyFailure::Refused(problems));
        }
        return Ok(ApplyOutcome {
            revision: live.revision,
            changes,
            unchanged: false,
            dry_run: true,
        });
    }
    let latest = state
        .store
        .list_revisions(None, 1)
        .map_err(|e| ApplyFailure::Store(e.to_string()))?
        .into_iter()
        .next();
    if let Some(latest) = &latest {
        let live_is_latest = latest.revision == live.revision;
        let same_text = latest.sha256.eq_ignore_ascii_case(&sha256_hex(&text));
        let same_file = req.assembled && compiled.file == live.config.file;
        if live_is_latest && (same_text || same_file) {
            return Ok(ApplyOutcome {
                revision: live.revision,
                changes: Vec::new(),
                unchanged: true,
                dry_run: false,
            });
        }
    }
    let next = latest.as_ref().map_or(1, |m| m.revision + 1);
    if let Err(e) = state.gateway.apply_checked(compiled, Some(next)) {
        audit_refusal(
            state,
            &req,
            &format!("refused by the gateway: {} problem(s)", e.problems.len()),
        );
        return Err(ApplyFailure::Refused(e.problems));
    }
    let audit = AuditEntry::new(req.actor, req.action, &req.target, "ok");
    match state
        .store
        .add_revision(&text, req.source, req.actor, audit)
    {
        Ok(meta) => {
            // Data planes waiting on `/control/snapshot` learn of the new revision now.
            crate::control::ring();
            if meta.revision != next {
                // Someone else stored a revision meanwhile (another process on the same
                // store): label the live snapshot with the number it really has.
                tracing::warn!(
                    expected = next,
                    stored = meta.revision,
                    "the store numbered the revision differently"
                );
                if let Ok(c) = tollgate_config::parse_and_compile(&text) {
                    let _ = state.gateway.apply(c, Some(meta.revision));
                }
            }
            Ok(ApplyOutcome {
                revision: meta.revision,
                changes,
                unchanged: false,
                dry_run: false,
            })
        }
        Err(e) => {
            restore(state, &live.config.file, live.revision);
            crate::control::ring();
            Err(ApplyFailure::Store(e.to_string()))
        }
    }
}

/// Makes `file` live again as `revision` (after a store failure).
fn restore(state: &AdminState, file: &PolicyFile, revision: u64) {
    let result = tollgate_config::compile_file(file)
        .map_err(|e| format!("{} error(s)", e.len()))
        .and_then(|c| {
            state
                .gateway
                .apply(c, Some(revision))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::error!(error = %e, revision, "cannot restore the previous config");
    }
}

/// Validates `text`, and unless it equals the latest stored revision that is also live,
/// applies it to the gateway and stores it as a new revision from `source` by `actor`
/// (audited). Used by `PUT /config` and, at start, for `--config FILE`
/// (`RevisionSource::File`, actor `file`).
pub fn apply_text(
    state: &AdminState,
    text: &str,
    source: RevisionSource,
    actor: &str,
) -> Result<ApplyOutcome, ApplyFailure> {
    let action = match source {
        RevisionSource::File => "config.file",
        RevisionSource::Api => "config.put",
        RevisionSource::Rollback => "config.rollback",
    };
    let req = WriteRequest {
        source,
        actor,
        action,
        target: "config".to_owned(),
        if_match: None,
        dry_run: false,
        assembled: false,
    };
    write_config(state, req, |_| Ok(text.to_owned()))
}

/// Applies the newest stored revision to the gateway (at start). `Ok(None)` when the store
/// holds no revision yet; `Err` when it cannot be read, compiled or applied (the gateway then
/// keeps its current, usually empty, config).
pub fn load_latest(state: &AdminState) -> Result<Option<u64>, String> {
    let _guard = CONFIG_WRITES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(rev) = state.store.latest_revision().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let n = rev.meta.revision;
    let compiled = tollgate_config::parse_and_compile(&rev.text).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("revision {n} is invalid:\n  {}", list.join("\n  "))
    })?;
    state
        .gateway
        .apply(compiled, Some(n))
        .map_err(|e| format!("revision {n} was refused by the gateway:\n  {e}"))?;
    crate::control::ring();
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn if_match_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(IfMatch::from_headers(&h), None);
        h.insert(IF_MATCH, HeaderValue::from_static("\"1\", \"3\""));
        let m = IfMatch::from_headers(&h).unwrap();
        assert!(m.matches(3) && m.matches(1) && !m.matches(2));
        h.insert(IF_MATCH, HeaderValue::from_static("W/\"3\""));
        assert!(!IfMatch::from_headers(&h).unwrap().matches(3));
        h.insert(IF_MATCH, HeaderValue::from_static("*"));
        assert!(IfMatch::from_headers(&h).unwrap().matches(0));
    }

    /// A dry run (an operator's plan, `tollgate diff`) does not wait for a write in
    /// progress, nor makes one wait.
    #[test]
    fn a_dry_run_does_not_take_the_write_lock() {
        use std::sync::Arc;
        use tollgate_gateway::keys::KeyRing;
        use tollgate_gateway::Gateway;
        use tollgate_store::{SqliteStore, Store};
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let keys = Arc::new(KeyRing::new(store.installation_secret()));
        let state = crate::AdminState {
            gateway: Gateway::new(keys.clone()),
            store,
            keys,
            tokens: crate::Tokens {
                admin: "a".into(),
                operator: None,
                dataplane: None,
            },
            snapshots: Default::default(),
        };
        let held = CONFIG_WRITES.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let req = WriteRequest {
                source: RevisionSource::Api,
                actor: "operator",
                action: "config.put",
                target: "config".into(),
                if_match: None,
                dry_run: true,
                assembled: false,
            };
            let outcome = write_config(&state, req, |_| Ok("version: 1\n".to_string()));
            let _ = tx.send(outcome.map(|o| o.dry_run).map_err(|e| e.to_string()));
        });
        // Bounded: a plan that waits for the held lock fails here after 10 s.
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(held);
        assert_eq!(got, Ok(Ok(true)));
    }

    #[test]
    fn sha_is_lowercase_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
