//! `GET /analytics/requests` (usage reports) and `GET /metrics` (Prometheus).
//!
//! Reports read the rollups the gateway's aggregator writes to the store every second
//! (`tollgate-analytics`): rows whose bucket overlaps `[from, to)`, grouped by `group_by`,
//! exact counts and percentiles from the merged latency sketches. Ranges the per-minute rows
//! still cover read minutes; older ranges read the hourly rows (whole hours). Both the admin
//! and the operator token may read them.

use crate::auth::Reader;
use crate::extract::Q;
use crate::problem::{store_problem, Problem};
use crate::AdminState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;
use tollgate_analytics::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use tollgate_analytics::query::{parse_rfc3339, rfc3339, total};
use tollgate_analytics::{report, GroupBy, Metrics, ReportRow, Resolution, UsageFilter};
use utoipa::{IntoParams, ToSchema};

/// The query of `GET /analytics/requests`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AnalyticsQuery {
    /// `subscription`, `product`, `api`, `operation` (keys `API/OPERATION`), `status`,
    /// `minute` or `hour` (keys RFC 3339 times).
    group_by: String,
    /// Start of the range (RFC 3339, inclusive); default: one hour before `to`.
    from: Option<String>,
    /// End of the range (RFC 3339, exclusive); default: now.
    to: Option<String>,
    /// Only calls of this product.
    product: Option<String>,
    /// Only calls of this API.
    api: Option<String>,
    /// Only calls of this operation (an operation id; add `api` to name one API's).
    operation: Option<String>,
    /// Only calls of this subscription.
    subscription: Option<String>,
    /// At most this many rows (1 to 10000, default 1000): the top ones by calls, or the
    /// first ones in time.
    limit: Option<usize>,
}

/// One row of a report.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnalyticsRow {
    /// The group: an id, `API/OPERATION`, a status code or an RFC 3339 time; null for
    /// calls without one (no subscription, no matched API...).
    key: Option<String>,
    /// Calls.
    calls_total: u64,
    /// 2xx and 3xx answers.
    calls_success: u64,
    /// Answers a policy made: 401, 403, 429, rate-limit 503 (subscription check, JWT,
    /// rate limits, quotas, IP filter...).
    calls_blocked: u64,
    /// 5xx answers and upstream errors.
    calls_failed: u64,
    /// The rest (404 no API, 405, 400, 413, the upstream's own 4xx...).
    calls_other: u64,
    /// Request body bytes.
    bytes_in: u64,
    /// Answer body bytes.
    bytes_out: u64,
    /// Average latency in milliseconds (exact); null without calls.
    latency_ms_avg: Option<f64>,
    /// Median latency in milliseconds (within 1%).
    latency_ms_p50: Option<f64>,
    /// 95th percentile latency in milliseconds (within 1%).
    latency_ms_p95: Option<f64>,
    /// 99th percentile latency in milliseconds (within 1%).
    latency_ms_p99: Option<f64>,
    /// Answers from the response cache.
    cache_hits: u64,
    /// Cache lookups that went upstream.
    cache_misses: u64,
    /// Blocked calls refused by a rate limit (`rate-limit`, `rate-limit-by-key`).
    calls_rate_limited: u64,
    /// Blocked calls refused by a quota (`quota`, `quota-by-key`).
    calls_quota_exceeded: u64,
    /// Average upstream latency of the calls that went upstream, milliseconds.
    upstream_latency_ms_avg: Option<f64>,
}

impl From<ReportRow> for AnalyticsRow {
    fn from(r: ReportRow) -> Self {
        AnalyticsRow {
            key: r.key,
            calls_total: r.calls_total,
            calls_success: r.calls_success,
            calls_blocked: r.calls_blocked,
            calls_failed: r.calls_failed,
            calls_other: r.calls_other,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            latency_ms_avg: r.latency_ms_avg,
            latency_ms_p50: r.latency_ms_p50,
            latency_ms_p95: r.latency_ms_p95,
            latency_ms_p99: r.latency_ms_p99,
            cache_hits: r.cache_hits,
            cache_misses: r.cache_misses,
            calls_rate_limited: r.calls_rate_limited,
            calls_quota_exceeded: r.calls_quota_exceeded,
            upstream_latency_ms_avg: r.upstream_latency_ms_avg,
        }
    }
}

/// A report.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnalyticsReport {
    /// What the rows are grouped by.
    group_by: String,
    /// Start of the range (RFC 3339).
    from: String,
    /// End of the range (RFC 3339, exclusive).
    to: String,
    /// `minute` or `hour`: the rollups read (hours for ranges older than the minutes kept;
    /// a bucket is counted whole when it overlaps the range).
    resolution: &'static str,
    /// The rows: by calls (most first) for ids, in order for statuses and times.
    items: Vec<AnalyticsRow>,
    /// Always null: a report is one page (see `limit`).
    next: Option<String>,
    /// Every call of the range and filters (`key` null), also those beyond `limit`.
    total: AnalyticsRow,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `GET /analytics/requests`.
#[utoipa::path(
    get,
    path = "/analytics/requests",
    tag = "analytics",
    description = "Usage report: calls grouped by `group_by` over `[from, to)`, with the \
        contract's outcome classes, bytes, latency percentiles and cache hits. Calls appear \
        within about a second of their answer. Counts are exact; percentiles come from \
        mergeable sketches (within 1%). Admin and operator tokens may read.",
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "The report.", body = AnalyticsReport),
        (status = 400, description = "Unknown `group_by`, a time that is not RFC 3339, or \
            `from` not before `to`.")
    )
)]
pub(crate) async fn requests(
    _: Reader,
    State(state): State<AdminState>,
    Q(q): Q<AnalyticsQuery>,
) -> Result<Json<AnalyticsReport>, Problem> {
    let group_by = GroupBy::parse(&q.group_by).ok_or_else(|| {
        Problem::bad_request(format!(
            "group_by must be subscription, product, api, operation, status, minute or hour, \
             not {:?}",
            q.group_by
        ))
    })?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, Problem> {
        v.as_deref()
            .map(|t| {
                parse_rfc3339(t).ok_or_else(|| {
                    Problem::bad_request(format!("{name} is not an RFC 3339 time: {t:?}"))
                })
            })
            .transpose()
    };
    let to = time("to", &q.to)?.unwrap_or_else(|| now_secs() + 1);
    let from = time("from", &q.from)?.unwrap_or(to - 3600);
    if from >= to {
        return Err(Problem::bad_request("from must be before to"));
    }
    let limit = match q.limit {
        Some(0) => return Err(Problem::bad_request("limit must be between 1 and 10000")),
        Some(n) => n.min(10_000),
        None => 1000,
    };
    let filter = UsageFilter {
        product: q.product,
        api: q.api,
        operation: q.operation,
        subscription: q.subscription,
    };
    let store = state.store.clone();
    let (resolution, rows) = tokio::task::spawn_blocking(move || {
        let resolution = if group_by == GroupBy::Minute {
            Resolution::Minute
        } else {
            // Hours only when minutes were pruned: the hours reach further back than the
            // oldest minute kept, and the range starts before it.
            match store.usage_coverage()? {
                (Some(minute), Some(hour))
                    if from < minute && hour < Resolution::Hour.bucket_of(minute) =>
                {
                    Resolution::Hour
                }
                (None, Some(_)) => Resolution::Hour,
                _ => Resolution::Minute,
            }
        };
        store
            .usage(resolution, from, to, &filter)
            .map(|rows| (resolution, rows))
    })
    .await
    .map_err(|e| Problem::internal("the analytics query failed", &e))?
    .map_err(|e| store_problem(e, "analytics"))?;
    let mut items = report(&rows, group_by);
    items.truncate(limit);
    Ok(Json(AnalyticsReport {
        group_by: q.group_by,
        from: rfc3339(from),
        to: rfc3339(to),
        resolution: match resolution {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
        },
        items: items.into_iter().map(AnalyticsRow::from).collect(),
        next: None,
        total: total(&rows).into(),
    }))
}

/// A subscription's calls over one window, for `GET /subscriptions/{id}/usage`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CallCounts {
    /// `1h`, `24h` or `30d`: the window, ending now.
    window: &'static str,
    /// Start of the window (RFC 3339; counted from this minute, or hour for `30d`).
    from: String,
    /// Calls.
    calls_total: u64,
    /// 2xx and 3xx answers.
    calls_success: u64,
    /// Answers a policy made.
    calls_blocked: u64,
    /// 5xx answers and upstream errors.
    calls_failed: u64,
    /// The rest.
    calls_other: u64,
    /// Request body bytes.
    bytes_in: u64,
    /// Answer body bytes.
    bytes_out: u64,
}

/// The subscription's call counts over the last hour, 24 hours and 30 days.
pub(crate) fn subscription_calls(
    store: &dyn tollgate_store::Store,
    subscription: &str,
) -> Result<Vec<CallCounts>, Problem> {
    let now = now_secs() + 1;
    let filter = UsageFilter {
        subscription: Some(subscription.to_owned()),
        ..UsageFilter::default()
    };
    let mut out = Vec::with_capacity(3);
    for (window, secs, res) in [
        ("1h", 3600, Resolution::Minute),
        ("24h", 24 * 3600, Resolution::Minute),
        ("30d", 30 * 24 * 3600, Resolution::Hour),
    ] {
        let from = now - secs;
        let rows = store
            .usage(res, from, now, &filter)
            .map_err(|e| store_problem(e, "analytics"))?;
        let t = total(&rows);
        out.push(CallCounts {
            window,
            from: rfc3339(res.bucket_of(from)),
            calls_total: t.calls_total,
            calls_success: t.calls_success,
            calls_blocked: t.calls_blocked,
            calls_failed: t.calls_failed,
            calls_other: t.calls_other,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
        });
    }
    Ok(out)
}

/// Set the state families of `metrics` from the gateway, then render every family.
pub(crate) fn render_metrics(state: &AdminState) -> String {
    gateway_metrics(&state.gateway)
}

/// The Prometheus text of `gw`'s metrics, as `GET /metrics` serves them (a data plane
/// serves the same on its status listener).
pub fn gateway_metrics(gw: &tollgate_gateway::Gateway) -> String {
    let telemetry = gw.telemetry();
    let m = telemetry.metrics();
    let snap = gw.snapshot();
    let mut health = Vec::new();
    // A process that runs no health check (`tollgate admin`) has no verdict to give.
    let checked = if gw.health_checked() {
        &snap.apis[..]
    } else {
        &[]
    };
    for (api, runtime) in snap.config.apis.iter().zip(checked) {
        let healthy = runtime.pool.targets_healthy();
        for (t, healthy) in runtime.pool.def.targets.iter().zip(healthy) {
            let scheme = if t.tls { "https" } else { "http" };
            health.push((
                api.id.to_string(),
                format!("{scheme}://{}", t.authority()),
                healthy,
            ));
        }
    }
    m.set_upstream_health(health.iter().map(|(a, t, h)| (a.as_str(), t.as_str(), *h)));
    m.config_revision.set(snap.revision as i64);
    m.config_swapped_at
        .set(telemetry.swapped_at_ms() as f64 / 1000.0);
    m.inflight.set(gw.inflight() as i64);
    let conns = gw.connections();
    m.connections_open
        .set(i64::try_from(conns.open()).unwrap_or(i64::MAX));
    m.connections_max
        .set(i64::try_from(conns.max()).unwrap_or(i64::MAX));
    Metrics::sync_counter(&m.connections_refused, conns.refused());
    Metrics::sync_counter(&m.proxy_protocol_refused, conns.proxy_protocol_refused());
    for (listener, cert) in gw.listener_certs() {
        m.tls_not_after
            .with_label_values(&[listener])
            .set(cert.not_after());
        let (ok, failed) = cert.reload_counts();
        Metrics::sync_counter(&m.tls_reloads.with_label_values(&[listener, "ok"]), ok);
        Metrics::sync_counter(
            &m.tls_reloads.with_label_values(&[listener, "failed"]),
            failed,
        );
    }
    Metrics::sync_counter(&m.jwks_failures, gw.registries().jwt.jwks().failure_count());
    let store_errors = gw.registries().counters.store_errors();
    for (outcome, n) in [
        ("error", store_errors.errors),
        ("allowed", store_errors.allowed),
        ("denied", store_errors.denied),
    ] {
        Metrics::sync_counter(&m.counter_store_errors.with_label_values(&[outcome]), n);
    }
    Metrics::sync_counter(&m.analytics_dropped, telemetry.meter().dropped());
    m.analytics_queue.set(telemetry.meter().queued() as i64);
    m.render()
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "analytics",
    description = "Prometheus text format (0.0.4): `tollgate_requests_total` and \
        `tollgate_request_duration_seconds` by product, API, operation and status class \
        (never by subscription), `tollgate_upstream_duration_seconds`, request and response \
        bytes, cache lookups, rejections by reason (rate limits, quotas...), upstream target \
        health, JWKS fetch failures, analytics queue and drops, config revision and last \
        swap time. Admin and operator tokens may read.",
    responses((status = 200, description = "The metrics.", content_type = "text/plain", body = String))
)]
pub(crate) async fn metrics(_: Reader, State(state): State<AdminState>) -> Response {
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        render_metrics(&state),
    )
        .into_response()
}
