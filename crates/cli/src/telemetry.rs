//! Starting the proxy's telemetry: the analytics aggregator (rollups into the store,
//! Prometheus metrics, the JSON access log on stdout) and, with `--otlp-endpoint`, the
//! OpenTelemetry tracer exporting one span per request over OTLP/HTTP (protobuf).

use clap::Args;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::Arc;
use std::time::Duration;
use tollgate_analytics::{MeterOptions, UsageRow, UsageSink};
use tollgate_gateway::server::Hook;
use tollgate_gateway::Gateway;
use tollgate_store::Store;

/// Analytics, access log and trace flags.
#[derive(Debug, Args)]
pub(crate) struct TelemetryArgs {
    /// Usage analytics and request metrics: `on` or `off` (off: no rollups, the request
    /// families of /metrics stay at zero).
    #[arg(long, env = "TOLLGATE_ANALYTICS", default_value = "on", value_parser = ["on", "off"])]
    analytics: String,
    /// How long per-minute analytics rows are kept (e.g. `48h`).
    #[arg(
        long,
        env = "TOLLGATE_ANALYTICS_MINUTE_RETENTION",
        default_value = "48h"
    )]
    analytics_minute_retention: String,
    /// How long per-hour analytics rows are kept (e.g. `90d`).
    #[arg(long, env = "TOLLGATE_ANALYTICS_HOUR_RETENTION", default_value = "90d")]
    analytics_hour_retention: String,
    /// Write one JSON line per request to stdout.
    #[arg(long, env = "TOLLGATE_ACCESS_LOG")]
    access_log: bool,
    /// Export a trace span per request to this OTLP/HTTP collector (e.g.
    /// `http://127.0.0.1:4318`; `/v1/traces` is added when the URL has no path).
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// Writes rollups to the store.
struct StoreSink(Arc<dyn Store>);

impl UsageSink for StoreSink {
    fn add(&mut self, rows: &[UsageRow]) -> Result<(), String> {
        self.0.add_usage(rows).map_err(|e| e.to_string())
    }

    fn prune(&mut self, minutes_before: i64, hours_before: i64) -> Result<(), String> {
        let (m, h) = self
            .0
            .prune_usage(minutes_before, hours_before)
            .map_err(|e| e.to_string())?;
        if m + h > 0 {
            tracing::info!(
                minute_rows = m,
                hour_rows = h,
                "analytics rows past retention deleted"
            );
        }
        Ok(())
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    tollgate_config::duration::parse_duration_str(text).map_err(|e| format!("--{flag} {text}: {e}"))
}

/// Start what `args` asks for on `gw`; returns the hooks to run at shutdown (flush the
/// analytics queue, export the last spans).
pub(crate) fn start(
    gw: &Arc<Gateway>,
    store: &Arc<dyn Store>,
    args: &TelemetryArgs,
) -> Result<Vec<Hook>, String> {
    start_with_sink(gw, Some(Box::new(StoreSink(store.clone()))), args)
}

/// [`start`] with rollups going to `sink` (a data plane has no store: its rollups go to
/// the control plane, or nowhere).
pub(crate) fn start_with_sink(
    gw: &Arc<Gateway>,
    sink: Option<Box<dyn UsageSink>>,
    args: &TelemetryArgs,
) -> Result<Vec<Hook>, String> {
    let mut hooks: Vec<Hook> = Vec::new();
    let opts = MeterOptions {
        rollups: args.analytics == "on",
        access_log: args.access_log,
        minute_retention: duration(
            "analytics-minute-retention",
            &args.analytics_minute_retention,
        )?,
        hour_retention: duration("analytics-hour-retention", &args.analytics_hour_retention)?,
        ..MeterOptions::default()
    };
    let telemetry = gw.telemetry().clone();
    telemetry
        .meter()
        .start(sink, opts, Box::new(std::io::stdout()))?;
    hooks.push(Box::new(move || {
        if !telemetry.meter().flush(Duration::from_secs(10)) {
            tracing::error!("the analytics queue could not be flushed at shutdown");
        }
    }));
    if let Some(endpoint) = &args.otlp_endpoint {
        let provider = tracer_provider(endpoint)?;
        let tracer = provider.tracer("tollgate");
        gw.telemetry()
            .set_tracer(opentelemetry::global::BoxedTracer::new(Box::new(tracer)))?;
        tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
        hooks.push(Box::new(move || {
            if let Err(e) = provider.shutdown() {
                tracing::warn!("exporting the last spans failed: {e}");
            }
        }));
    }
    Ok(hooks)
}

/// `endpoint` with `/v1/traces` when it names no path.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .with_timeout(Duration::from_secs(5))
        .with_headers(Default::default())
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .with_max_queue_size(8192)
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(Resource::builder().with_service_name("tollgate").build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_to_a_bare_endpoint() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/custom/traces"),
            "http://c:4318/custom/traces"
        );
    }
}
