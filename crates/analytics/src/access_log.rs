//! The JSON access log: one line per request (`--access-log`), written by the aggregator
//! thread so the request path never waits on standard output.
//!
//! Fields: `time` (RFC 3339 UTC, milliseconds), `request_id`, `trace_id`, `client_ip`,
//! `method`, `path` (never the query: it may carry a subscription key), `status`, `outcome`,
//! `blocked_by`, `product`, `api`, `operation`, `subscription` (the id, never a key),
//! `bytes_in`, `bytes_out`, `duration_ms`, `upstream_ms`, `upstream`, `attempts`, `cache`
//! (`hit`, `miss` or null), `error`. No header value is ever logged.

use crate::event::Event;
use std::net::IpAddr;

/// Writes access log lines. The line's shape is fixed, so its keys and punctuation are
/// written as they are and only the values go through `serde_json` (escaping, numbers);
/// the time's date and second are formatted once per second.
///
/// The bytes are those `serde_json` writes for a struct of these fields in this order
/// (the tests hold the two side by side).
#[derive(Debug, Default)]
pub struct LineWriter {
    /// The second of the last line's time and its text up to the milliseconds
    /// (`2023-11-14T22:13:20.`); empty when it could not be formatted.
    second: Option<(i64, Vec<u8>)>,
}

impl LineWriter {
    /// Append `e`'s line (with its newline) to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, e: &Event) {
        let access = e.access.as_deref();
        out.extend_from_slice(b"{\"time\":\"");
        self.time(out, e.at_ms);
        out.extend_from_slice(b"\",\"request_id\":");
        value(out, access.map_or("", |a| a.request_id.as_str()));
        out.extend_from_slice(b",\"trace_id\":");
        value(out, access.and_then(|a| a.trace_id.as_deref()));
        out.extend_from_slice(b",\"client_ip\":");
        match e.client_ip {
            Some(ip) => {
                let mut buf = [0u8; 48];
                out.push(b'"');
                out.extend_from_slice(ip_text(ip, &mut buf));
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"method\":");
        value(out, access.map_or("", |a| a.method.as_str()));
        out.extend_from_slice(b",\"path\":");
        value(out, access.map_or("", |a| a.path.as_str()));
        out.extend_from_slice(b",\"status\":");
        int(out, e.status);
        out.extend_from_slice(b",\"outcome\":");
        value(out, e.outcome.as_str());
        out.extend_from_slice(b",\"blocked_by\":");
        value(out, e.blocked_by);
        out.extend_from_slice(b",\"product\":");
        value(out, e.product.as_deref());
        out.extend_from_slice(b",\"api\":");
        value(out, e.api.as_deref());
        out.extend_from_slice(b",\"operation\":");
        value(out, e.operation.as_deref());
        out.extend_from_slice(b",\"subscription\":");
        value(out, e.subscription.as_deref());
        out.extend_from_slice(b",\"bytes_in\":");
        int(out, e.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        int(out, e.bytes_out);
        out.extend_from_slice(b",\"duration_ms\":");
        value(out, ms(e.latency_us));
        out.extend_from_slice(b",\"upstream_ms\":");
        value(out, e.upstream_latency_us.map(ms));
        out.extend_from_slice(b",\"upstream\":");
        value(out, access.and_then(|a| a.upstream.as_deref()));
        out.extend_from_slice(b",\"attempts\":");
        int(out, e.upstream_attempts);
        out.extend_from_slice(b",\"cache\":");
        value(out, e.cache_hit.map(|h| if h { "hit" } else { "miss" }));
        out.extend_from_slice(b",\"error\":");
        value(out, access.and_then(|a| a.error));
        out.extend_from_slice(b"}\n");
    }

    /// RFC 3339 UTC with milliseconds (nothing when out of `time`'s range).
    fn time(&mut self, out: &mut Vec<u8>, at_ms: i64) {
        let (second, milli) = (at_ms.div_euclid(1000), at_ms.rem_euclid(1000));
        if self.second.as_ref().is_none_or(|(s, _)| *s != second) {
            self.second = Some((second, second_text(second)));
        }
        let text = self.second.as_ref().map_or(&[][..], |(_, t)| t.as_slice());
        if text.is_empty() {
            return;
        }
        out.extend_from_slice(text);
        let milli = milli as u32; // 0..1000
        out.extend_from_slice(&[
            b'0' + (milli / 100) as u8,
            b'0' + (milli / 10 % 10) as u8,
            b'0' + (milli % 10) as u8,
            b'Z',
        ]);
    }
}

/// `2023-11-14T22:13:20.` for a Unix second (empty when out of range).
fn second_text(second: i64) -> Vec<u8> {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].");
    time::OffsetDateTime::from_unix_timestamp(second)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .map(String::into_bytes)
        .unwrap_or_default()
}

/// A JSON value as `serde_json` writes it (strings escaped, `None` as `null`).
fn value(out: &mut Vec<u8>, v: impl serde::Serialize) {
    // Writing to a Vec fails only when serializing does, which these types never do.
    let _ = serde_json::to_writer(&mut *out, &v);
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// The text of an address, without `fmt` for IPv4 (the common case: this runs for every
/// request that adds an `X-Forwarded-For` or writes an access log line).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let d = digits.format(octet).as_bytes();
                buf[len..len + d.len()].copy_from_slice(d);
                len += d.len();
            }
            len
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // The longest IPv6 text is 39 bytes (45 with an embedded IPv4).
            let mut w = &mut buf[..];
            let _ = write!(w, "{v6}");
            48 - w.len()
        }
    };
    &buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AccessFields, Outcome};
    use serde::Serialize;

    /// The line as `serde_json` writes a struct of its fields: the oracle of
    /// [`LineWriter`] (the access log was written this way before).
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

    fn reference(e: &Event) -> Vec<u8> {
        const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let access = e.access.as_deref();
        let line = Line {
            time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(FORMAT).ok())
                .unwrap_or_default(),
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
            attempts: e.upstream_attempts,
            cache: e.cache_hit.map(|h| if h { "hit" } else { "miss" }),
            error: access.and_then(|a| a.error),
        };
        let mut out = serde_json::to_vec(&line).unwrap();
        out.push(b'\n');
        out
    }

    fn write_line(out: &mut Vec<u8>, e: &Event) {
        LineWriter::default().write(out, e);
    }

    #[test]
    fn the_same_bytes_as_serde_json_writes() {
        let full = Event {
            at_ms: 1_700_000_000_007,
            product: Some("starter".into()),
            api: Some("echo \"quoted\" \\ back".into()),
            operation: Some("get\u{1}\u{1f}\t\r\nop".into()),
            subscription: Some("sub-é-✓".into()),
            status: 503,
            outcome: Outcome::Blocked,
            blocked_by: Some("rate-limit"),
            bytes_in: u64::MAX,
            bytes_out: 12_345,
            latency_us: 12_000,
            upstream_latency_us: Some(1),
            upstream_attempts: 3,
            cache_hit: Some(false),
            client_ip: Some("2001:db8::ffff:10.0.0.1".parse().unwrap()),
            access: Some(Box::new(AccessFields {
                request_id: "0123456789abcdef0123456789abcdef".into(),
                method: "PURGE".into(),
                path: "/a/%22/\u{7f}/</script>".into(),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                upstream: Some("[::1]:8080".into()),
                error: Some("ConnectRefused"),
            })),
        };
        let bare = Event::default();
        let mut events = vec![full.clone(), bare];
        for (at_ms, latency_us, ip) in [
            (0, 0, "0.0.0.0"),
            (999, 999, "255.255.255.255"),
            (-1, 1_234_567, "10.20.3.4"),
            (-1_000, 5, "::"),
            (1_700_000_000_999, u64::MAX / 1000, "127.0.0.1"),
            (i64::MAX, 1_000_000_000, "::1"),
            (i64::MIN, 7, "fe80::1"),
        ] {
            let mut e = full.clone();
            e.at_ms = at_ms;
            e.latency_us = latency_us;
            e.upstream_latency_us = None;
            e.cache_hit = Some(true);
            e.client_ip = Some(ip.parse().unwrap());
            events.push(e);
        }
        // One writer for all: its cached second must follow the times.
        let mut w = LineWriter::default();
        for e in events.iter().chain(events.iter().rev()) {
            let mut out = Vec::new();
            w.write(&mut out, e);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(reference(e)).unwrap(),
                "at_ms {}",
                e.at_ms
            );
        }
    }

    #[test]
    fn ip_text_is_the_display_form() {
        for ip in [
            "1.2.3.4",
            "0.0.0.0",
            "255.0.10.100",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 48];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes());
        }
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let mut buf = [0u8; 48];
        assert_eq!(ip_text(longest, &mut buf), longest.to_string().as_bytes());
    }

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
                ..AccessFields::default()
            })),
            upstream_attempts: 1,
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
