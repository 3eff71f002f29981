//! `/subscriptions/{id}/usage`: a subscription's quota counters, and their reset.
//!
//! The counters are read from the gateway's counter registry (loaded from the store at
//! start, written back to it every second), or from Redis when counters are shared, so
//! the numbers are those the next call is checked against. Listed: every `quota` that
//! applies to the subscription in the live config (its product's, its API's, the global
//! ones), at zero when unused in the current period, and every `quota-by-key` counter the
//! subscription's calls opened in its current period.

use crate::auth::{Reader, Writer};
use crate::extract::P;
use crate::problem::{store_problem, Problem};
use crate::subscriptions::parse_scope;
use crate::AdminState;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_counters::{At, CachedPeriod, Op, TableKind, UsageRow, Window};
use tollgate_gateway::SubscriptionScope;
use tollgate_store::{AuditEntry, StoreError};
use utoipa::ToSchema;

/// One quota counter.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageItem {
    /// The quota's policy position (`product:gold/inbound/1`).
    policy: String,
    /// `quota` or `quota-by-key` (null when no live policy is at that position any more).
    kind: Option<&'static str>,
    /// The counter key (the subscription id for `quota`).
    counter_key: String,
    /// Calls counted in the current period.
    calls: u64,
    /// The quota's `calls`, if it limits calls.
    calls_limit: Option<u64>,
    /// Bytes (request + response bodies) counted in the current period.
    bandwidth: u64,
    /// The quota's `bandwidth` in bytes, if it limits bandwidth.
    bandwidth_limit: Option<u64>,
    /// Start of the current period (RFC 3339 UTC).
    period_start: String,
    /// End of the current period, when the counter renews (RFC 3339 UTC).
    period_end: String,
}

/// A subscription's quota usage.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Usage {
    /// Subscription id.
    subscription: String,
    /// Its quota counters, by policy position and counter key.
    items: Vec<UsageItem>,
    /// Its calls over the last hour, 24 hours and 30 days, from the analytics rollups
    /// (what the gateway answered, blocked calls included).
    calls: Vec<crate::analytics::CallCounts>,
}

/// The answer of a reset.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageReset {
    /// Subscription id.
    subscription: String,
    /// How many counters were reset.
    reset: u64,
}

/// A quota of the live config that applies to a subscription.
struct LiveQuota {
    by_key: bool,
    calls: Option<u64>,
    bandwidth: Option<u64>,
    period: Arc<CachedPeriod>,
}

/// The quotas (by origin) of every chain a subscription with `scope` runs through.
fn live_quotas(state: &AdminState, scope: &str) -> BTreeMap<Arc<str>, LiveQuota> {
    let snap = state.gateway.snapshot();
    let config = &snap.config;
    let mut chains = Vec::new();
    match parse_scope(scope) {
        Some(SubscriptionScope::All) => {
            for api in &config.apis {
                chains.extend(api.chains.iter().take(api.operations.len() + 1));
            }
        }
        Some(SubscriptionScope::Api(id)) => {
            if let Some(api) = config.api_index(&id).map(|i| &config.apis[i]) {
                chains.extend(api.chains.iter().take(api.operations.len() + 1));
            }
        }
        Some(SubscriptionScope::Product(id)) => {
            if let Some(p) = config.product_index(&id) {
                for api in &config.apis {
                    if let Some(slot) = api.product_slot(p) {
                        let from = api.chain_index(slot, None);
                        chains.extend(api.chains.iter().skip(from).take(api.operations.len() + 1));
                    }
                }
            }
        }
        None => {}
    }
    let mut out = BTreeMap::new();
    for chain in chains {
        for inst in chain
            .inbound
            .iter()
            .chain(&chain.backend)
            .chain(&chain.outbound)
        {
            let (def, by_key) = match &inst.def {
                tollgate_config::PolicyDef::Quota(d) => (d, false),
                tollgate_config::PolicyDef::QuotaByKey(d) => (d, true),
                _ => continue,
            };
            out.entry(inst.origin.clone()).or_insert_with(|| LiveQuota {
                by_key,
                calls: def.calls,
                bandwidth: def.bandwidth,
                period: Arc::new(CachedPeriod::new(tollgate_policies::quota_period(def))),
            });
        }
    }
    out
}

/// Unix milliseconds as RFC 3339 UTC (milliseconds shown only when not zero).
fn rfc3339(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::new();
    };
    let fmt: &[time::format_description::FormatItem<'static>] = if ms.rem_euclid(1000) == 0 {
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z")
    } else {
        time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        )
    };
    t.format(fmt).unwrap_or_default()
}

fn sub_problem(id: &str) -> impl FnOnce(StoreError) -> Problem + '_ {
    move |e| store_problem(e, &format!("subscription `{id}`"))
}

/// `GET /subscriptions/{id}/usage`.
#[utoipa::path(
    get,
    path = "/subscriptions/{id}/usage",
    tag = "subscriptions",
    description = "The subscription's quota counters in their current period: every `quota` \
        of the live config that applies to it (at zero when unused), and every \
        `quota-by-key` counter its calls opened, each with its limits and the end of its \
        period (when it renews); and its call counts by outcome over the last hour, 24 hours \
        and 30 days (`calls`, from the analytics rollups).",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The quota counters.", body = Usage),
        (status = 404, description = "No such subscription."),
        (status = 503, description = "Counters are shared through Redis, which cannot be reached.")
    )
)]
pub(crate) async fn get_usage(
    _: Reader,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Json<Usage>, Problem> {
    let sub = state.store.subscription(&id).map_err(sub_problem(&id))?;
    let quotas = live_quotas(&state, &sub.scope);
    let counters = state.gateway.registries().counters.clone();
    let shared = counters.shared().cloned();
    let now = match &shared {
        Some(s) => s.now_estimate(),
        None => counters.now_ms(),
    };
    let mut rows: BTreeMap<(Arc<str>, Arc<str>), UsageRow> = counters
        .usage(&id)
        .into_iter()
        .map(|r| ((r.origin.clone(), r.key.clone()), r))
        .collect();
    let key: Arc<str> = Arc::from(id.as_str());
    for (origin, q) in &quotas {
        if !q.by_key {
            rows.entry((origin.clone(), key.clone()))
                .or_insert_with(|| UsageRow {
                    origin: origin.clone(),
                    key: key.clone(),
                    window: q.period.window_at(now),
                    calls: 0,
                    bytes: 0,
                });
        }
    }
    if let Some(shared) = shared {
        for ((origin, key), row) in rows.iter_mut() {
            let Some(q) = quotas.get(origin) else {
                continue;
            };
            let at = At::Now(q.period.clone());
            match shared.run(TableKind::Quota, origin, key, at, Op::Get).await {
                Ok(remote) => {
                    row.window = remote.window;
                    row.calls = remote.outcome.calls;
                    row.bytes = remote.outcome.bytes;
                }
                Err(e) => {
                    return Err(Problem::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "counter-store-unavailable",
                        "Service Unavailable",
                        format!("the shared counters cannot be read: {e}"),
                    ))
                }
            }
        }
    }
    let items = rows
        .into_values()
        .map(|r| {
            let q = quotas.get(&r.origin);
            UsageItem {
                policy: r.origin.to_string(),
                kind: q.map(|q| if q.by_key { "quota-by-key" } else { "quota" }),
                counter_key: r.key.to_string(),
                calls: r.calls,
                calls_limit: q.and_then(|q| q.calls),
                bandwidth: r.bytes,
                bandwidth_limit: q.and_then(|q| q.bandwidth),
                period_start: rfc3339(r.window.start_ms),
                period_end: rfc3339(r.window.end_ms),
            }
        })
        .collect();
    let calls = crate::analytics::subscription_calls(&*state.store, &id)?;
    Ok(Json(Usage {
        subscription: id,
        items,
        calls,
    }))
}

/// `POST /subscriptions/{id}/usage/reset`.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/usage/reset",
    tag = "subscriptions",
    description = "Reset every quota counter of the subscription to zero for the rest of its \
        current period (in the gateway, the store and, when counters are shared, Redis). \
        Audited as `subscription.usage-reset`.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "How many counters were reset.", body = UsageReset),
        (status = 404, description = "No such subscription."),
        (status = 503, description = "Counters are shared through Redis, which cannot be reached; \
            the local and stored counters were reset.")
    )
)]
pub(crate) async fn reset_usage(
    writer: Writer,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Json<UsageReset>, Problem> {
    let target = format!("subscription:{id}");
    let refused = |problem: Problem| {
        let entry = AuditEntry::new(
            writer.actor(),
            "subscription.usage-reset",
            &target,
            &format!("refused: {}", problem.summary()),
        );
        if let Err(e) = state.store.append_audit(entry) {
            tracing::error!(error = %e, "cannot write the audit entry of a refused change");
        }
        problem
    };
    let sub = match state.store.subscription(&id) {
        Ok(s) => s,
        Err(e) => return Err(refused(sub_problem(&id)(e))),
    };
    let counters = state.gateway.registries().counters.clone();
    let audit = AuditEntry::new(writer.actor(), "subscription.usage-reset", &target, "ok");
    let store = state.store.clone();
    let (removed, stored) = counters
        .reset_subscription(&id, || store.reset_quota_counters(&id, audit))
        .map_err(|e| refused(sub_problem(&id)(e)))?;
    let mut reset = (removed.len() as u64).max(stored);
    if let Some(shared) = counters.shared() {
        let quotas = live_quotas(&state, &sub.scope);
        let now = shared.now_estimate();
        let mut keys: Vec<String> = removed
            .iter()
            .map(|r| shared.key(TableKind::Quota, &r.origin, &r.key, r.window))
            .collect();
        let mut plain = 0;
        for (origin, q) in &quotas {
            if !q.by_key {
                let w: Window = q.period.window_at(now);
                let k = shared.key(TableKind::Quota, origin, &id, w);
                if !keys.contains(&k) {
                    keys.push(k);
                    plain += 1;
                }
            }
        }
        if let Err(e) = shared.delete(keys).await {
            return Err(Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "counter-store-unavailable",
                "Service Unavailable",
                format!("the shared counters cannot be reset: {e}"),
            ));
        }
        reset = reset.max(removed.len() as u64 + plain);
    }
    Ok(Json(UsageReset {
        subscription: id,
        reset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_772_404_200_000), "2026-03-01T22:30:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }
}
