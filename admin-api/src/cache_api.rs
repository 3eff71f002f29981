//! `/cache/*`: the gateway's response cache (`cache-lookup` / `cache-store`).
//!
//! `POST /cache/purge` removes the entries of a product, an API, an operation, any
//! combination of them (every filter given must match), or all of them (an empty object,
//! or no body at all), and answers how many it removed. The admin and the operator may
//! purge (contract §1); each purge is audited. `GET /cache/stats` (any token) shows the
//! cache's counters.

use crate::auth::{Purger, Reader};
use crate::extract::JsonBody;
use crate::problem::Problem;
use crate::AdminState;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::Json;
use serde::{Deserialize, Serialize};
use tollgate_policies::cache::PurgeFilter;
use tollgate_store::AuditEntry;
use utoipa::ToSchema;

/// What to purge: every filter given must match; none given purges everything.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// Entries of this API.
    api: Option<String>,
    /// Entries of this operation (of any API, unless `api` is given too).
    operation: Option<String>,
    /// Entries stored for calls of this product's subscriptions.
    product: Option<String>,
}

/// The answer of a purge.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Purged {
    /// How many entries were removed.
    purged: u64,
}

/// The response cache's counters.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CacheStatsDoc {
    /// Calls answered from the cache.
    hits: u64,
    /// Calls looked up and sent upstream.
    misses: u64,
    /// Answers stored.
    stores: u64,
    /// Entries evicted (or refused admission) to stay under the byte bound.
    evictions: u64,
    /// Entries dropped when they expired.
    expirations: u64,
    /// Entries removed by purges.
    purged: u64,
    /// Bytes held now.
    bytes: u64,
    /// Entries held now.
    entries: u64,
    /// The byte bound (`settings.cache_max_bytes`).
    max_bytes: u64,
}

/// Whether a request has no body at all (no `Content-Type`, no or a zero `Content-Length`,
/// not chunked).
fn has_no_body(req: &Request) -> bool {
    let h = req.headers();
    !h.contains_key(CONTENT_TYPE)
        && !h.contains_key(TRANSFER_ENCODING)
        && h.get(CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0")
}

/// `POST /cache/purge`.
#[utoipa::path(
    post,
    path = "/cache/purge",
    tag = "cache",
    description = "Removes response cache entries: those of a `product`, an `api`, an \
        `operation` (of any API unless `api` is given), or any combination (every filter \
        given must match). An empty object, or no body at all, purges everything. The \
        admin and the operator token may purge.",
    request_body(content = PurgeRequest, content_type = "application/json"),
    responses((status = 200, description = "How many entries were removed.", body = Purged))
)]
pub(crate) async fn purge(
    who: Purger,
    State(state): State<AdminState>,
    req: Request,
) -> Result<Json<Purged>, Problem> {
    let body = if has_no_body(&req) {
        PurgeRequest::default()
    } else {
        JsonBody::<PurgeRequest>::from_request(req, &state).await?.0
    };
    let filter = PurgeFilter {
        api: body.api,
        operation: body.operation,
        product: body.product,
    };
    let purged = state.gateway.registries().cache.purge(&filter);
    let mut target = String::from("cache");
    for (name, value) in [
        ("product", &filter.product),
        ("api", &filter.api),
        ("operation", &filter.operation),
    ] {
        if let Some(v) = value {
            target.push_str(&format!(" {name}={v}"));
        }
    }
    let audit = AuditEntry::new(
        who.actor(),
        "cache.purge",
        &target,
        &format!("ok: {purged} purged"),
    );
    if let Err(e) = state.store.append_audit(audit) {
        tracing::error!(error = %e, "cannot write the audit entry of a cache purge");
    }
    Ok(Json(Purged { purged }))
}

/// `GET /cache/stats`.
#[utoipa::path(
    get,
    path = "/cache/stats",
    tag = "cache",
    description = "The response cache's counters since the start, and what it holds now.",
    responses((status = 200, description = "The counters.", body = CacheStatsDoc))
)]
pub(crate) async fn stats(_: Reader, State(state): State<AdminState>) -> Json<CacheStatsDoc> {
    let s = state.gateway.registries().cache.stats();
    Json(CacheStatsDoc {
        hits: s.hits,
        misses: s.misses,
        stores: s.stores,
        evictions: s.evictions,
        expirations: s.expirations,
        purged: s.purged,
        bytes: s.bytes,
        entries: s.entries,
        max_bytes: s.max_bytes,
    })
}
