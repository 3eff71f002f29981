//! [`Metrics`]: the Prometheus families of `GET /metrics`.
//!
//! Per-request families are fed by the aggregator thread from the same events as the
//! rollups (never on the request path); state families (upstream health, config revision,
//! JWKS failures, analytics drops, in-flight requests) are set when `/metrics` is scraped.
//! Labels never carry a subscription id (unbounded cardinality); an absent id is the empty
//! label value.

use crate::event::{status_class, Event, Outcome};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Latency buckets, seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every family; see the module docs. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `tollgate_requests_total{product, api, operation, status_class, outcome}`.
    pub requests: IntCounterVec,
    /// `tollgate_request_duration_seconds{product, api, operation, status_class}`.
    pub duration: HistogramVec,
    /// `tollgate_upstream_duration_seconds{api}`: picking a target to its answer's head.
    pub upstream_duration: HistogramVec,
    /// `tollgate_upstream_retries_total{api}`: upstream tries after a request's first.
    pub upstream_retries: IntCounterVec,
    /// `tollgate_request_bytes_total{product, api, operation}`: request body bytes.
    pub bytes_in: IntCounterVec,
    /// `tollgate_response_bytes_total{product, api, operation}`: answer body bytes.
    pub bytes_out: IntCounterVec,
    /// `tollgate_cache_lookups_total{api, operation, result}`: `hit` or `miss`.
    pub cache: IntCounterVec,
    /// `tollgate_rejections_total{api, reason}`: blocked calls by what refused them
    /// (`rate-limit`, `rate-limit-by-key`, `quota`, `quota-by-key`, `subscription`,
    /// `validate-jwt`...).
    pub rejections: IntCounterVec,
    /// `tollgate_upstream_target_healthy{api, target}`: 1 healthy, 0 not.
    pub upstream_healthy: IntGaugeVec,
    /// `tollgate_jwks_fetch_failures_total`.
    pub jwks_failures: IntCounter,
    /// Rate-limit / quota counter-store failures, by what the policy then did
    /// (`error`: every failure; `allowed` / `denied`: the `on_store_error` outcome).
    pub counter_store_errors: IntCounterVec,
    /// `tollgate_analytics_events_dropped_total`: events lost because the queue was full.
    pub analytics_dropped: IntCounter,
    /// `tollgate_analytics_queue_length`: events waiting for the aggregator.
    pub analytics_queue: IntGauge,
    /// `tollgate_analytics_flushes_total`: rollup writes to the store.
    pub analytics_flushes: IntCounter,
    /// `tollgate_analytics_flush_errors_total`: failed rollup writes (retried).
    pub analytics_flush_errors: IntCounter,
    /// `tollgate_config_revision`: the live config revision.
    pub config_revision: IntGauge,
    /// `tollgate_config_last_swap_timestamp_seconds`: when it went live (Unix time).
    pub config_swapped_at: Gauge,
    /// `tollgate_requests_in_flight`.
    pub inflight: IntGauge,
    /// `tollgate_connections_open`: client connections open on the proxy listeners.
    pub connections_open: IntGauge,
    /// `tollgate_connections_max`: their cap (`--max-connections`).
    pub connections_max: IntGauge,
    /// `tollgate_connections_refused_total`: connections closed at once at the cap.
    pub connections_refused: IntCounter,
    /// `tollgate_proxy_protocol_refused_total`: balancer connections closed for a
    /// missing, malformed or late PROXY protocol header.
    pub proxy_protocol_refused: IntCounter,
    /// `tollgate_tls_certificate_not_after_seconds{listener}`: when a TLS listener's
    /// certificate expires (Unix time); no sample without a TLS listener.
    pub tls_not_after: IntGaugeVec,
    /// `tollgate_tls_certificate_reloads_total{listener, outcome}`: reloads of that
    /// certificate (`ok`: a new pair is served; `failed`: the previous one kept serving).
    pub tls_reloads: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("tollgate")
}

impl Metrics {
    /// Every family, registered in a registry of their own.
    pub fn new() -> Metrics {
        let route = &["product", "api", "operation"];
        let m = Metrics {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                opts(
                    "requests_total",
                    "Requests answered, by route, status class and outcome.",
                ),
                &["product", "api", "operation", "status_class", "outcome"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "request_duration_seconds",
                    "Time from the request's start to the end of its answer.",
                )
                .namespace("tollgate")
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["product", "api", "operation", "status_class"],
            )
            .expect("valid metric"),
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "upstream_duration_seconds",
                    "Time from picking an upstream target to its answer's head.",
                )
                .namespace("tollgate")
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["api"],
            )
            .expect("valid metric"),
            upstream_retries: IntCounterVec::new(
                opts(
                    "upstream_retries_total",
                    "Upstream tries after a request's first: on another target after a \
                     failed connection, or again after an answer in upstream.retry_on_status.",
                ),
                &["api"],
            )
            .expect("valid metric"),
            bytes_in: IntCounterVec::new(
                opts(
                    "request_bytes_total",
                    "Request body bytes read from clients.",
                ),
                route,
            )
            .expect("valid metric"),
            bytes_out: IntCounterVec::new(
                opts("response_bytes_total", "Answer body bytes sent to clients."),
                route,
            )
            .expect("valid metric"),
            cache: IntCounterVec::new(
                opts(
                    "cache_lookups_total",
                    "Cache lookups, by result (hit or miss).",
                ),
                &["api", "operation", "result"],
            )
            .expect("valid metric"),
            rejections: IntCounterVec::new(
                opts(
                    "rejections_total",
                    "Calls refused by a policy or the subscription check, by reason (policy kind).",
                ),
                &["api", "reason"],
            )
            .expect("valid metric"),
            upstream_healthy: IntGaugeVec::new(
                opts(
                    "upstream_target_healthy",
                    "1 when the upstream target is healthy.",
                ),
                &["api", "target"],
            )
            .expect("valid metric"),
            jwks_failures: IntCounter::with_opts(opts(
                "jwks_fetch_failures_total",
                "Failed JWKS / OpenID configuration fetches.",
            ))
            .expect("valid metric"),
            counter_store_errors: IntCounterVec::new(
                opts(
                    "counter_store_errors_total",
                    "Rate-limit and quota counter-store (Redis) failures, by outcome.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            analytics_dropped: IntCounter::with_opts(opts(
                "analytics_events_dropped_total",
                "Request events dropped because the analytics queue was full.",
            ))
            .expect("valid metric"),
            analytics_queue: IntGauge::with_opts(opts(
                "analytics_queue_length",
                "Request events waiting for the analytics aggregator.",
            ))
            .expect("valid metric"),
            analytics_flushes: IntCounter::with_opts(opts(
                "analytics_flushes_total",
                "Rollup writes to the store.",
            ))
            .expect("valid metric"),
            analytics_flush_errors: IntCounter::with_opts(opts(
                "analytics_flush_errors_total",
                "Rollup writes that failed (kept and retried).",
            ))
            .expect("valid metric"),
            config_revision: IntGauge::with_opts(opts(
                "config_revision",
                "The live config revision.",
            ))
            .expect("valid metric"),
            config_swapped_at: Gauge::with_opts(opts(
                "config_last_swap_timestamp_seconds",
                "When the live config went live, Unix time.",
            ))
            .expect("valid metric"),
            inflight: IntGauge::with_opts(opts("requests_in_flight", "Requests being processed."))
                .expect("valid metric"),
            connections_open: IntGauge::with_opts(opts(
                "connections_open",
                "Client connections open on the proxy listeners.",
            ))
            .expect("valid metric"),
            connections_max: IntGauge::with_opts(opts(
                "connections_max",
                "Most client connections open at once on the proxy listeners.",
            ))
            .expect("valid metric"),
            connections_refused: IntCounter::with_opts(opts(
                "connections_refused_total",
                "Client connections closed at once because the cap was reached.",
            ))
            .expect("valid metric"),
            proxy_protocol_refused: IntCounter::with_opts(opts(
                "proxy_protocol_refused_total",
                "Connections from --proxy-protocol balancers closed for a missing, malformed or \
                 late PROXY protocol header.",
            ))
            .expect("valid metric"),
            tls_not_after: IntGaugeVec::new(
                opts(
                    "tls_certificate_not_after_seconds",
                    "When a TLS listener's certificate expires (Unix time), by listener \
                     (proxy, admin).",
                ),
                &["listener"],
            )
            .expect("valid metric"),
            tls_reloads: IntCounterVec::new(
                opts(
                    "tls_certificate_reloads_total",
                    "Reloads of a TLS listener's certificate, by listener and outcome \
                     (failed: the previous one kept serving).",
                ),
                &["listener", "outcome"],
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.upstream_duration.clone()),
            Box::new(m.upstream_retries.clone()),
            Box::new(m.bytes_in.clone()),
            Box::new(m.bytes_out.clone()),
            Box::new(m.cache.clone()),
            Box::new(m.rejections.clone()),
            Box::new(m.upstream_healthy.clone()),
            Box::new(m.jwks_failures.clone()),
            Box::new(m.counter_store_errors.clone()),
            Box::new(m.analytics_dropped.clone()),
            Box::new(m.analytics_queue.clone()),
            Box::new(m.analytics_flushes.clone()),
            Box::new(m.analytics_flush_errors.clone()),
            Box::new(m.config_revision.clone()),
            Box::new(m.config_swapped_at.clone()),
            Box::new(m.inflight.clone()),
            Box::new(m.connections_open.clone()),
            Box::new(m.connections_max.clone()),
            Box::new(m.connections_refused.clone()),
            Box::new(m.proxy_protocol_refused.clone()),
            Box::new(m.tls_not_after.clone()),
            Box::new(m.tls_reloads.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("unique metric names");
        }
        m
    }

    /// Count one request in the per-request families.
    pub fn observe(&self, e: &Event) {
        let product = e.product.as_deref().unwrap_or("");
        let api = e.api.as_deref().unwrap_or("");
        let op = e.operation.as_deref().unwrap_or("");
        let class = status_class(e.status);
        self.requests
            .with_label_values(&[product, api, op, class, e.outcome.as_str()])
            .inc();
        self.duration
            .with_label_values(&[product, api, op, class])
            .observe(e.latency_us as f64 / 1e6);
        if let Some(u) = e.upstream_latency_us {
            self.upstream_duration
                .with_label_values(&[api])
                .observe(u as f64 / 1e6);
        }
        if e.upstream_attempts > 0 {
            self.upstream_retries
                .with_label_values(&[api])
                .inc_by(u64::from(e.upstream_attempts - 1));
        }
        if e.bytes_in > 0 {
            self.bytes_in
                .with_label_values(&[product, api, op])
                .inc_by(e.bytes_in);
        }
        if e.bytes_out > 0 {
            self.bytes_out
                .with_label_values(&[product, api, op])
                .inc_by(e.bytes_out);
        }
        if let Some(hit) = e.cache_hit {
            self.cache
                .with_label_values(&[api, op, if hit { "hit" } else { "miss" }])
                .inc();
        }
        if let Some(reason) = e.blocked_by {
            self.rejections.with_label_values(&[api, reason]).inc();
        }
    }

    /// Count one request like [`Metrics::observe`], through `cache`: one hash lookup per
    /// request instead of one per family (the label sets of a route repeat).
    pub fn observe_cached(&self, cache: &mut ObserveCache, e: &Event) {
        let key = ObserveKey {
            product: e.product.clone(),
            api: e.api.clone(),
            operation: e.operation.clone(),
            status: e.status,
            outcome: e.outcome,
            blocked_by: e.blocked_by,
            cache: e.cache_hit,
        };
        if cache.handles.len() >= ObserveCache::MAX && !cache.handles.contains_key(&key) {
            cache.handles.clear();
        }
        let h = cache.handles.entry(key).or_insert_with(|| self.handles(e));
        h.requests.inc();
        h.duration.observe(e.latency_us as f64 / 1e6);
        if let Some(u) = e.upstream_latency_us {
            h.upstream.observe(u as f64 / 1e6);
        }
        if e.upstream_attempts > 1 {
            h.retries.inc_by(u64::from(e.upstream_attempts - 1));
        }
        if e.bytes_in > 0 {
            h.bytes_in.inc_by(e.bytes_in);
        }
        if e.bytes_out > 0 {
            h.bytes_out.inc_by(e.bytes_out);
        }
        if let Some(c) = &h.cache {
            c.inc();
        }
        if let Some(r) = &h.rejection {
            r.inc();
        }
    }

    fn handles(&self, e: &Event) -> Handles {
        let product = e.product.as_deref().unwrap_or("");
        let api = e.api.as_deref().unwrap_or("");
        let op = e.operation.as_deref().unwrap_or("");
        let class = status_class(e.status);
        Handles {
            requests: self.requests.with_label_values(&[
                product,
                api,
                op,
                class,
                e.outcome.as_str(),
            ]),
            duration: self.duration.with_label_values(&[product, api, op, class]),
            upstream: self.upstream_duration.with_label_values(&[api]),
            retries: self.upstream_retries.with_label_values(&[api]),
            bytes_in: self.bytes_in.with_label_values(&[product, api, op]),
            bytes_out: self.bytes_out.with_label_values(&[product, api, op]),
            cache: e.cache_hit.map(|hit| {
                self.cache
                    .with_label_values(&[api, op, if hit { "hit" } else { "miss" }])
            }),
            rejection: e
                .blocked_by
                .map(|reason| self.rejections.with_label_values(&[api, reason])),
        }
    }

    /// Set a counter that mirrors a monotonic total kept elsewhere.
    pub fn sync_counter(counter: &IntCounter, total: u64) {
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }

    /// Set the health of every upstream target (replacing the previous set, so removed
    /// targets disappear): `(api, target, healthy)`.
    pub fn set_upstream_health<'a>(
        &self,
        targets: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    ) {
        self.upstream_healthy.reset();
        for (api, target, healthy) in targets {
            self.upstream_healthy
                .with_label_values(&[api, target])
                .set(i64::from(healthy));
        }
    }

    /// Prometheus text format (version 0.0.4) of every family.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The label values of one request's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObserveKey {
    product: Option<Arc<str>>,
    api: Option<Arc<str>>,
    operation: Option<Arc<str>>,
    status: u16,
    outcome: Outcome,
    blocked_by: Option<&'static str>,
    cache: Option<bool>,
}

/// The series of one label set, resolved once.
#[derive(Debug)]
struct Handles {
    requests: IntCounter,
    duration: Histogram,
    upstream: Histogram,
    retries: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    cache: Option<IntCounter>,
    rejection: Option<IntCounter>,
}

/// Resolved series by label set, for [`Metrics::observe_cached`] (owned by the one thread
/// that observes; bounded: cleared when it reaches [`ObserveCache::MAX`] entries).
#[derive(Debug, Default)]
pub struct ObserveCache {
    /// foldhash: the keys are configured ids and a status, not attacker-chosen bytes, and
    /// SipHash was most of this lookup's cost.
    handles: HashMap<ObserveKey, Handles, foldhash::fast::RandomState>,
}

impl ObserveCache {
    /// Most label sets kept.
    pub const MAX: usize = 10_000;
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_and_move() {
        let m = Metrics::new();
        m.observe(&Event {
            api: Some("echo".into()),
            status: 429,
            outcome: Outcome::Blocked,
            blocked_by: Some("rate-limit"),
            latency_us: 2_000,
            bytes_out: 100,
            cache_hit: Some(true),
            upstream_latency_us: Some(1_000),
            ..Event::default()
        });
        // The cached path renders the same as the direct one (it makes every series of a
        // route at once: with bytes both ways, the same series exist).
        let cached = Metrics::new();
        let mut cache = ObserveCache::default();
        let e = Event {
            api: Some("echo".into()),
            status: 429,
            outcome: Outcome::Blocked,
            blocked_by: Some("rate-limit"),
            latency_us: 2_000,
            bytes_in: 5,
            bytes_out: 100,
            cache_hit: Some(true),
            upstream_latency_us: Some(1_000),
            upstream_attempts: 3,
            ..Event::default()
        };
        cached.observe_cached(&mut cache, &e);
        assert_eq!(cached.render(), {
            let direct = Metrics::new();
            direct.observe(&e);
            direct.render()
        });
        Metrics::sync_counter(&m.analytics_dropped, 3);
        Metrics::sync_counter(&m.analytics_dropped, 2);
        m.set_upstream_health([("echo", "127.0.0.1:1", true)]);
        let text = m.render();
        assert!(cached
            .render()
            .contains("tollgate_upstream_retries_total{api=\"echo\"} 2\n"));
        for needle in [
            "tollgate_requests_total{api=\"echo\",operation=\"\",outcome=\"blocked\",product=\"\",status_class=\"4xx\"} 1",
            "tollgate_request_duration_seconds_bucket{api=\"echo\",operation=\"\",product=\"\",status_class=\"4xx\",le=\"0.0025\"} 1",
            "tollgate_response_bytes_total{api=\"echo\",operation=\"\",product=\"\"} 100",
            "tollgate_cache_lookups_total{api=\"echo\",operation=\"\",result=\"hit\"} 1",
            "tollgate_rejections_total{api=\"echo\",reason=\"rate-limit\"} 1",
            "tollgate_upstream_target_healthy{api=\"echo\",target=\"127.0.0.1:1\"} 1",
            "tollgate_analytics_events_dropped_total 3",
            "tollgate_upstream_duration_seconds_count{api=\"echo\"} 1",
            "tollgate_config_revision 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
