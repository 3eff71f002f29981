//! W3C Trace Context (`traceparent`) and request ids.
//!
//! An incoming valid `traceparent` is continued: same trace id and flags, a new parent id
//! for the hop to the upstream. Anything else (absent or malformed) starts a new sampled
//! trace. Request ids are 128 random bits in hex, made by Tollgate for every request; a
//! client-sent `X-Request-Id` is never trusted.

use std::fmt::Write;

/// A new request id: 32 lower-case hex digits.
pub fn new_request_id() -> String {
    hex128(rand::random::<u128>())
}

fn hex128(v: u128) -> String {
    let mut s = String::with_capacity(32);
    let _ = write!(s, "{v:032x}");
    s
}

/// The `traceparent` to send upstream, given the incoming one (if any).
pub fn next_traceparent(incoming: Option<&[u8]>) -> String {
    let span = loop {
        let s = rand::random::<u64>();
        if s != 0 {
            break s;
        }
    };
    if let Some((trace_id, flags)) = incoming.and_then(parse_traceparent) {
        let mut s = String::with_capacity(55);
        let _ = write!(s, "00-{trace_id}-{span:016x}-{flags}");
        return s;
    }
    let trace = loop {
        let t = rand::random::<u128>();
        if t != 0 {
            break t;
        }
    };
    let mut s = String::with_capacity(55);
    let _ = write!(s, "00-{trace:032x}-{span:016x}-01");
    s
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
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
