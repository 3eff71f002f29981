//! Opening the control plane: the store in `--data-dir`, the subscription key ring, the
//! admin tokens, the newest stored config, and `--config FILE` on top when it differs.

use crate::ServeArgs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use tollgate_admin_api::{AdminState, Tokens};
use tollgate_counters::{Counters, PersistedCounter, SystemClock, Window};
use tollgate_gateway::keys::{generate_key, KeyRing};
use tollgate_gateway::Gateway;
use tollgate_policies::Registries;
use tollgate_store::{QuotaCounterRecord, RevisionSource, SqliteStore, Store};

/// Open the store and everything that hangs off it; apply the newest stored revision and
/// then `--config` (as a new revision only when it differs from the newest stored one).
pub(crate) fn open(args: &ServeArgs) -> Result<AdminState, String> {
    let store = SqliteStore::open(&args.data_dir)
        .map_err(|e| format!("cannot open the store in {}: {e}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let keys = Arc::new(KeyRing::new(store.installation_secret()));
    let counters = open_counters(args, &*store)?;
    let registries = Registries {
        counters,
        ..Registries::default()
    };
    let gateway = Gateway::with_registries(keys.clone(), Arc::new(registries));
    let tokens = Tokens {
        admin: admin_token(&args.data_dir)?,
        operator: std::env::var("TOLLGATE_OPERATOR_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        dataplane: std::env::var("TOLLGATE_DATAPLANE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let state = AdminState {
        gateway,
        store,
        keys,
        tokens,
        snapshots: Default::default(),
    };
    let n = tollgate_admin_api::refresh_keys(&*state.store, &state.keys)
        .map_err(|e| format!("cannot load subscriptions: {e}"))?;
    tracing::info!(subscriptions = n, "subscriptions loaded");
    match tollgate_admin_api::load_latest(&state) {
        Ok(Some(rev)) => tracing::info!(revision = rev, "stored config is live"),
        Ok(None) => tracing::info!("no stored config yet"),
        Err(e) => tracing::error!("the newest stored config cannot be applied: {e}"),
    }
    if let Some(file) = &args.config {
        apply_file(&state, file)
            .map_err(|e| format!("{}: the config was refused:\n{e}", file.display()))?;
    }
    Ok(state)
}

/// Counters in the Redis of `--redis` (with `--redis-ca`, `--redis-cert` and `--redis-key`
/// read now), or `None` without `--redis`; nothing connects yet.
pub(crate) fn redis_counters(
    args: &ServeArgs,
    clock: Arc<dyn tollgate_counters::Clock>,
) -> Result<Option<Counters>, String> {
    let Some(url) = &args.redis else {
        return Ok(None);
    };
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))
    };
    let tls = tollgate_counters::RedisTls {
        ca: args
            .redis_ca
            .as_deref()
            .map(|p| read("--redis-ca", p))
            .transpose()?,
        client: match (&args.redis_cert, &args.redis_key) {
            (Some(cert), Some(key)) => {
                Some((read("--redis-cert", cert)?, read("--redis-key", key)?))
            }
            _ => None,
        },
    };
    let c = Counters::redis_with_tls(url, &tls, clock)?;
    tracing::info!(redis = ?c.shared(), tls = ?tls, "rate-limit and quota counters are shared through Redis");
    Ok(Some(c))
}

/// The rate-limit and quota counters: in Redis with `--redis URL` (nothing connects before
/// the first check), else in process; the stored quota counters are loaded either way.
fn open_counters(args: &ServeArgs, store: &dyn Store) -> Result<Arc<Counters>, String> {
    let clock: Arc<dyn tollgate_counters::Clock> = Arc::new(SystemClock);
    let counters = match redis_counters(args, clock.clone())? {
        Some(c) => c,
        None => Counters::local(clock),
    };
    let rows = store
        .quota_counters(counters.now_ms())
        .map_err(|e| format!("cannot load the quota counters: {e}"))?;
    let n = counters.load(
        rows.into_iter()
            .map(|r| PersistedCounter {
                origin: r.origin,
                key: r.counter_key,
                subscription: r.subscription_id,
                window: Window {
                    start_ms: r.period_start_ms,
                    end_ms: r.period_end_ms,
                },
                calls: r.calls,
                bytes: r.bytes,
            })
            .collect(),
    );
    tracing::info!(counters = n, "quota counters loaded");
    Ok(Arc::new(counters))
}

/// Write the quota counters that changed since the last flush to the store.
pub(crate) fn flush_counters(state: &AdminState) {
    let counters = &state.gateway.registries().counters;
    let store = &state.store;
    let result = counters.flush(|rows, now_ms| {
        let records: Vec<QuotaCounterRecord> = rows
            .iter()
            .map(|r| QuotaCounterRecord {
                origin: r.origin.clone(),
                counter_key: r.key.clone(),
                subscription_id: r.subscription.clone(),
                period_start_ms: r.window.start_ms,
                period_end_ms: r.window.end_ms,
                calls: r.calls,
                bytes: r.bytes,
            })
            .collect();
        store.save_quota_counters(&records, now_ms)
    });
    match result {
        Ok(0) => {}
        Ok(n) => tracing::debug!(counters = n, "quota counters written"),
        Err(e) => {
            tracing::error!("cannot write the quota counters (retried at the next flush): {e}")
        }
    }
}

/// Read `file` (with `${env:NAME}` substitution) and apply it as a `file` revision, unless it
/// equals the newest stored one.
pub(crate) fn apply_file(state: &AdminState, file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let text = tollgate_config::substitute_env(&text).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let outcome = tollgate_admin_api::apply_text(state, &text, RevisionSource::File, "file")
        .map_err(|f| f.to_string())?;
    if outcome.unchanged {
        tracing::info!(revision = outcome.revision, file = %file.display(), "config file unchanged");
    } else {
        tracing::info!(
            revision = outcome.revision,
            changes = outcome.changes.len(),
            file = %file.display(),
            "config file applied"
        );
    }
    Ok(())
}

/// The admin token: `TOLLGATE_ADMIN_TOKEN`, else `DATA_DIR/admin-token`, made on first start
/// (mode 0600). The secret itself is never logged.
fn admin_token(dir: &Path) -> Result<String, String> {
    if let Ok(t) = std::env::var("TOLLGATE_ADMIN_TOKEN") {
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let path = dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => return Err(format!("{} is empty", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let token = generate_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(token.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "no TOLLGATE_ADMIN_TOKEN set: generated an admin token and stored it in this file"
    );
    Ok(token)
}
