//! W3C Trace Context (`traceparent`) and request ids.
//!
//! An incoming valid `traceparent` is continued: same trace id and flags, a new parent id
//! for the hop to the upstream. Anything else (absent or malformed) starts a new sampled
//! trace. Request ids are 128 random bits in hex, made by Tollgate for every request; a
//! client-sent `X-Request-Id` is never trusted.

use http::HeaderValue;

/// A new request id: 32 lower-case hex digits, as the header value sent upstream and to
/// the client (made once, then shared; its text is `to_str` of it).
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    hex_into(&mut buf, &rand::random::<u128>().to_be_bytes());
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| unreachable!("hex digits"))
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    // The lengths are fixed by the callers: this cannot fail.
    hex::encode_to_slice(bytes, out).unwrap_or_else(|_| unreachable!("buffer sized for the hex"));
}

/// The trace identity of one request: the trace it belongs to, the span the gateway makes
/// for it (the parent id the upstream sees), and the caller's span when the request came
/// with a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace id (never 0).
    pub trace_id: u128,
    /// The gateway's span for this request (never 0).
    pub span_id: u64,
    /// The caller's span, when the incoming `traceparent` was valid.
    pub parent_span_id: Option<u64>,
    /// Trace flags (bit 0: sampled); new traces are sampled.
    pub flags: u8,
}

fn nonzero_u64() -> u64 {
    loop {
        let s = rand::random::<u64>();
        if s != 0 {
            return s;
        }
    }
}

impl TraceIds {
    /// Continue the incoming `traceparent` when it is valid (same trace id and flags, a new
    /// span id); otherwise start a new sampled trace.
    pub fn from_incoming(incoming: Option<&[u8]>) -> TraceIds {
        let span_id = nonzero_u64();
        if let Some((trace_id, parent, flags)) = incoming.and_then(parse_ids) {
            return TraceIds {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                flags,
            };
        }
        let trace_id = loop {
            let t = rand::random::<u128>();
            if t != 0 {
                break t;
            }
        };
        TraceIds {
            trace_id,
            span_id,
            parent_span_id: None,
            flags: 1,
        }
    }

    /// `00-TRACE-SPAN-FLAGS`: the `traceparent` sent upstream, as a header value.
    pub fn traceparent_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.traceparent_bytes())
            .unwrap_or_else(|_| unreachable!("hex digits and dashes"))
    }

    fn traceparent_bytes(&self) -> [u8; 55] {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut buf[3..35], &self.trace_id.to_be_bytes());
        hex_into(&mut buf[36..52], &self.span_id.to_be_bytes());
        hex_into(&mut buf[53..55], &[self.flags]);
        buf
    }

    /// The trace id in hex (32 digits).
    pub fn trace_id_hex(&self) -> String {
        // Into a buffer: `hex::encode` collects the digits one `char` at a time.
        let mut buf = [0u8; 32];
        hex_into(&mut buf, &self.trace_id.to_be_bytes());
        std::str::from_utf8(&buf)
            .unwrap_or_else(|_| unreachable!("hex digits"))
            .to_owned()
    }
}

/// `(trace id, parent span id, flags)` of a valid `traceparent`.
fn parse_ids(v: &[u8]) -> Option<(u128, u64, u8)> {
    let (trace_id, flags) = parse_traceparent(v)?;
    let v = std::str::from_utf8(v).ok()?.trim();
    let parent = v.split('-').nth(2)?;
    Some((
        u128::from_str_radix(trace_id, 16).ok()?,
        u64::from_str_radix(parent, 16).ok()?,
        u8::from_str_radix(flags, 16).ok()?,
    ))
}

/// `(trace id, flags)` of a valid `traceparent`.
fn parse_traceparent(v: &[u8]) -> Option<(&str, &str)> {
    let v = std::str::from_utf8(v).ok()?.trim();
    let mut parts = v.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; later versions may add more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !lower_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if !lower_hex(parent, 16) || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    if !lower_hex(flags, 2) {
        return None;
    }
    Some((trace_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `traceparent` sent upstream for an incoming one (if any), as text.
    fn next_traceparent(incoming: Option<&[u8]>) -> String {
        let v = TraceIds::from_incoming(incoming).traceparent_value();
        v.to_str().expect("ASCII").to_owned()
    }

    #[test]
    fn continues_a_valid_trace() {
        let inc = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = next_traceparent(Some(inc));
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_ne!(&out[36..52], "00f067aa0ba902b7");
        assert_eq!(out.len(), 55);
    }

    #[test]
    fn starts_a_new_trace_for_bad_input() {
        for bad in [
            &b"garbage"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let out = next_traceparent(Some(bad));
            assert_eq!(out.len(), 55);
            assert!(!out.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
            assert!(!out.contains("4BF92F"));
        }
        let fresh = next_traceparent(None);
        assert!(fresh.starts_with("00-") && fresh.ends_with("-01"));
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn traceparent_renders_every_field() {
        let ids = TraceIds {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            parent_span_id: None,
            flags: 1,
        };
        assert_eq!(
            ids.traceparent_value(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(ids.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let small = TraceIds {
            trace_id: 1,
            span_id: 2,
            parent_span_id: None,
            flags: 0,
        };
        assert_eq!(
            small.traceparent_value(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
    }
}
