//! What the proxy tells operators about its requests: the analytics [`Meter`] (rollups,
//! Prometheus metrics, the JSON access log; see `tollgate-analytics`), an OpenTelemetry
//! tracer (set only when `--otlp-endpoint` is given), and when the live config was swapped.
//!
//! Everything per request happens once, in the proxy's `logging` phase: one [`Event`]
//! handed to the meter without blocking, and, with a tracer, one server span built from
//! what the request already recorded (start time, trace ids) and ended at once, so no span
//! object lives through the request's phases.

use crate::trace::TraceIds;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer,
};
use opentelemetry::{Context, KeyValue};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;
use tollgate_analytics::{Meter, Metrics, Outcome};

/// The proxy's telemetry; one per [`crate::Gateway`], shared with the admin API.
pub struct Telemetry {
    meter: Meter,
    tracer: OnceLock<BoxedTracer>,
    swapped_at_ms: AtomicI64,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("meter", &self.meter)
            .field("tracing", &self.tracer.get().is_some())
            .finish()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            meter: Meter::new(Arc::new(Metrics::new())),
            tracer: OnceLock::new(),
            swapped_at_ms: AtomicI64::new(0),
        }
    }
}

impl Telemetry {
    /// The analytics hand-off (off until started by the binary).
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The Prometheus families.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.meter.metrics()
    }

    /// Export a span per request through `tracer` from now on. Only the first call counts.
    pub fn set_tracer(&self, tracer: BoxedTracer) -> Result<(), String> {
        self.tracer
            .set(tracer)
            .map_err(|_| "a tracer is already set".to_owned())
    }

    /// The tracer, when spans are exported.
    pub fn tracer(&self) -> Option<&BoxedTracer> {
        self.tracer.get()
    }

    /// When the live config was swapped in, Unix milliseconds (0: never).
    pub fn swapped_at_ms(&self) -> i64 {
        self.swapped_at_ms.load(Ordering::Relaxed)
    }

    /// Note a config swap now.
    pub(crate) fn mark_swap(&self) {
        self.swapped_at_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What one request's server span says.
#[derive(Debug, Clone)]
pub struct SpanInfo<'a> {
    /// The request's trace ids (its own span id, and the caller's span when continued).
    pub ids: TraceIds,
    /// When the request started.
    pub start: SystemTime,
    /// When its answer ended.
    pub end: SystemTime,
    /// Request method.
    pub method: &'a str,
    /// Request path, without the query.
    pub path: &'a str,
    /// Status sent (0: none).
    pub status: u16,
    /// Outcome class.
    pub outcome: Outcome,
    /// What refused the call, if blocked.
    pub blocked_by: Option<&'static str>,
    /// API id.
    pub api: Option<&'a str>,
    /// Operation id.
    pub operation: Option<&'a str>,
    /// Product id.
    pub product: Option<&'a str>,
    /// Subscription id (never a key).
    pub subscription: Option<&'a str>,
    /// `X-Request-Id`.
    pub request_id: &'a str,
    /// The upstream target of the last attempt.
    pub upstream: Option<String>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// Pingora's error type when the request failed.
    pub error: Option<&'static str>,
}

/// Record one finished request as a `SERVER` span: child of the caller's span when the
/// request carried a valid `traceparent` (same trace id; sampled or not as the caller
/// said), with the span id the upstream saw as its parent.
pub fn export_span<T: Tracer>(tracer: &T, info: &SpanInfo<'_>) {
    let ids = info.ids;
    let parent = match ids.parent_span_id {
        Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(ids.trace_id),
            SpanId::from(parent),
            TraceFlags::new(ids.flags),
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let name = match (info.api, info.operation) {
        (Some(api), Some(op)) => format!("{} {api}/{op}", info.method),
        (Some(api), None) => format!("{} {api}", info.method),
        _ => info.method.to_owned(),
    };
    let mut attributes = Vec::with_capacity(14);
    attributes.push(KeyValue::new("http.request.method", info.method.to_owned()));
    attributes.push(KeyValue::new("url.path", info.path.to_owned()));
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(info.status),
    ));
    attributes.push(KeyValue::new(
        "tollgate.request_id",
        info.request_id.to_owned(),
    ));
    attributes.push(KeyValue::new("tollgate.outcome", info.outcome.as_str()));
    for (key, value) in [
        ("tollgate.api.id", info.api),
        ("tollgate.operation.id", info.operation),
        ("tollgate.product.id", info.product),
        ("tollgate.subscription.id", info.subscription),
        ("tollgate.blocked_by", info.blocked_by),
        ("error.type", info.error),
    ] {
        if let Some(v) = value {
            attributes.push(KeyValue::new(key, v.to_owned()));
        }
    }
    if let Some(ip) = info.client_ip {
        attributes.push(KeyValue::new("client.address", ip.to_string()));
    }
    if let Some(up) = &info.upstream {
        attributes.push(KeyValue::new("server.address", up.clone()));
    }
    let mut builder = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_trace_id(TraceId::from(ids.trace_id))
        .with_span_id(SpanId::from(ids.span_id))
        .with_start_time(info.start)
        .with_attributes(attributes);
    if info.status >= 500 || info.outcome == Outcome::Failed {
        builder = builder.with_status(Status::error(format!("status {}", info.status)));
    }
    let mut span = builder.start_with_context(tracer, &parent);
    span.end_with_timestamp(info.end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use std::time::Duration;

    fn info(ids: TraceIds, status: u16) -> SpanInfo<'static> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanInfo {
            ids,
            start,
            end: start + Duration::from_millis(12),
            method: "GET",
            path: "/echo/x",
            status,
            outcome: tollgate_analytics::classify(status, false, false),
            blocked_by: None,
            api: Some("echo"),
            operation: Some("get-x"),
            product: None,
            subscription: Some("sub-1"),
            request_id: "rid",
            upstream: Some("127.0.0.1:9".into()),
            client_ip: Some("127.0.0.1".parse().unwrap()),
            error: None,
        }
    }

    #[test]
    fn spans_continue_the_callers_trace_with_the_upstreams_parent_id() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("tollgate");
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ids = TraceIds::from_incoming(Some(incoming));
        export_span(&tracer, &info(ids, 200));
        // A fresh trace, failed.
        let fresh = TraceIds::from_incoming(None);
        export_span(&tracer, &info(fresh, 502));
        // The caller said "not sampled": nothing is exported.
        let unsampled = TraceIds::from_incoming(Some(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ));
        export_span(&tracer, &info(unsampled, 200));
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let s = &spans[0];
        assert_eq!(s.name, "GET echo/get-x");
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(
            s.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            s.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert_eq!(s.span_context.span_id(), SpanId::from(ids.span_id));
        // The upstream got this very span as its parent.
        let tp = ids.traceparent_value();
        assert!(tp
            .to_str()
            .unwrap()
            .contains(&format!("{:016x}", ids.span_id)));
        assert_eq!(
            s.end_time.duration_since(s.start_time).unwrap(),
            Duration::from_millis(12)
        );
        let attr = |k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attr("tollgate.subscription.id").as_deref(), Some("sub-1"));
        assert_eq!(attr("tollgate.outcome").as_deref(), Some("success"));
        let f = &spans[1];
        assert_eq!(f.span_context.trace_id(), TraceId::from(fresh.trace_id));
        assert_eq!(f.parent_span_id, SpanId::INVALID);
        assert!(matches!(f.status, Status::Error { .. }));
    }
}
