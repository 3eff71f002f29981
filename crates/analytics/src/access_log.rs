//! The JSON access log: one line per request (`--access-log`), written by the aggregator
//! thread so the request path never waits on standard output.
//!
//! Fields: `time` (RFC 3339 UTC, milliseconds), `request_id`, `trace_id`, `client_ip`,
//! `method`, `path` (never the query: it may carry a subscription key), `status`, `outcome`,
//! `blocked_by`, `product`, `api`, `operation`, `subscription` (the id, never a key),
//! `bytes_in`, `bytes_out`, `duration_ms`, `upstream_ms`, `upstream`, `attempts`, `cache`
//! (`hit`, `miss` or null), `error`. No header value is ever logged.

use crate::event::Event;
use serde::Serialize;

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    trace_id: Option<&'a str>,
    client_ip: Option<String>,
    method: &'a str,
    path: &'a str,
    status: u16,
    outcome: &'static str,
    blocked_by: Option<&'static str>,
    product: Option<&'a str>,
    api: Option<&'a str>,
    operation: Option<&'a str>,
    subscription: Option<&'a str>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    upstream: Option<&'a str>,
    attempts: u32,
    cache: Option<&'static str>,
    error: Option<&'static str>,
}

fn time_ms(at_ms: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// Append `event`'s line (with its newline) to `out`.
pub fn write_line(out: &mut Vec<u8>, e: &Event) {
    let access = e.access.as_deref();
    let line = Line {
        time: time_ms(e.at_ms),
        request_id: access.map_or("", |a| a.request_id.as_str()),
        trace_id: access.and_then(|a| a.trace_id.as_deref()),
        client_ip: e.client_ip.map(|ip| ip.to_string()),
        method: access.map_or("", |a| a.method.as_str()),
        path: access.map_or("", |a| a.path.as_str()),
        status: e.status,
        outcome: e.outcome.as_str(),
        blocked_by: e.blocked_by,
        product: e.product.as_deref(),
        api: e.api.as_deref(),
        operation: e.operation.as_deref(),
        subscription: e.subscription.as_deref(),
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        duration_ms: ms(e.latency_us),
        upstream_ms: e.upstream_latency_us.map(ms),
        upstream: access.and_then(|a| a.upstream.as_deref()),
        attempts: access.map_or(0, |a| a.attempts),
        cache: e.cache_hit.map(|h| if h { "hit" } else { "miss" }),
        error: access.and_then(|a| a.error),
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AccessFields, Outcome};

    #[test]
    fn one_json_line_without_secrets() {
        let e = Event {
            at_ms: 1_700_000_000_123,
            api: Some("echo".into()),
            subscription: Some("sub-1".into()),
            status: 200,
            outcome: Outcome::Success,
            latency_us: 1_234,
            client_ip: Some("127.0.0.1".parse().unwrap()),
            access: Some(Box::new(AccessFields {
                request_id: "abc".into(),
                method: "GET".into(),
                path: "/echo/x".into(),
                attempts: 1,
                ..AccessFields::default()
            })),
            ..Event::default()
        };
        let mut out = Vec::new();
        write_line(&mut out, &e);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["path"], "/echo/x");
        assert_eq!(v["subscription"], "sub-1");
        assert_eq!(v["outcome"], "success");
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["cache"], serde_json::Value::Null);
    }
}
