//! One request's [`Event`] and the contract's outcome classes.

use std::net::IpAddr;
use std::sync::Arc;

/// The outcome classes of contract §4 ("Analytics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    /// 2xx and 3xx answers (from the upstream, the cache or a `return-response`).
    Success,
    /// Answers a policy made: subscription key missing or unknown (401), subscription
    /// inactive or out of scope (403), `validate-jwt` (401), rate limits (429, or 503),
    /// quotas (403), `ip-filter`, `check-header`, and every other inbound refusal.
    Blocked,
    /// 5xx answers and upstream errors (refused, reset, timeout, no healthy target).
    Failed,
    /// The rest: 404 no API, 405, 400 malformed, 413, 431, upstream 4xx answers...
    #[default]
    Other,
}

impl Outcome {
    /// `success`, `blocked`, `failed` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Other => "other",
        }
    }
}

/// The outcome of an answer with `status`. `blocked` is true when a policy (or the
/// subscription check) refused the call; `upstream_error` when the upstream could not be
/// reached or failed mid-answer. Status 0 means no answer could be sent (the client left).
pub fn classify(status: u16, blocked: bool, upstream_error: bool) -> Outcome {
    if blocked {
        Outcome::Blocked
    } else if upstream_error || status >= 500 {
        Outcome::Failed
    } else if (200..400).contains(&status) {
        Outcome::Success
    } else {
        Outcome::Other
    }
}

/// `2xx`, `3xx`, `4xx`, `5xx`, or `none` (no answer).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// What refused a blocked call: the policy kind (`rate-limit`, `quota-by-key`,
/// `validate-jwt`...) or `subscription` for the subscription key check.
pub type BlockedBy = &'static str;

/// Whether a blocking kind is a rate limit (`rate-limit`, `rate-limit-by-key`).
pub fn is_rate_limit(kind: &str) -> bool {
    kind.starts_with("rate-limit")
}

/// Whether a blocking kind is a quota (`quota`, `quota-by-key`).
pub fn is_quota(kind: &str) -> bool {
    kind.starts_with("quota")
}

/// One request, as the gateway saw it at its end. Made in the proxy's `logging` phase and
/// handed to the [`crate::Meter`] without blocking.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// When the answer was finished: milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The product the caller's subscription is scoped to, if any.
    pub product: Option<Arc<str>>,
    /// The matched API, if any.
    pub api: Option<Arc<str>>,
    /// The matched operation, if any.
    pub operation: Option<Arc<str>>,
    /// The caller's subscription, if any.
    pub subscription: Option<Arc<str>>,
    /// The status sent (0: none could be sent).
    pub status: u16,
    /// The contract's outcome class.
    pub outcome: Outcome,
    /// What refused the call, when `outcome` is [`Outcome::Blocked`].
    pub blocked_by: Option<BlockedBy>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Answer body bytes sent to the client.
    pub bytes_out: u64,
    /// Time from the start of the request to the end of the answer, in microseconds.
    pub latency_us: u64,
    /// Time from picking an upstream target to its answer's head, in microseconds (`None`
    /// when the call never went upstream).
    pub upstream_latency_us: Option<u64>,
    /// Upstream tries made (0: the call never went upstream; more than 1: a target
    /// refused the connection, or an answer was retried for `upstream.retry_on_status`).
    pub upstream_attempts: u32,
    /// Cache lookup result: `Some(true)` hit, `Some(false)` miss, `None` no lookup.
    pub cache_hit: Option<bool>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// Fields only the access log needs (filled only when it is on).
    pub access: Option<Box<AccessFields>>,
}

/// The access log's own fields. Never the query string (it may carry a subscription key),
/// never a header value.
#[derive(Debug, Clone, Default)]
pub struct AccessFields {
    /// `X-Request-Id`.
    pub request_id: String,
    /// The request method.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The W3C trace id of the request (32 hex digits), if any.
    pub trace_id: Option<String>,
    /// The upstream target (`host:port`) of the last attempt, if any.
    pub upstream: Option<String>,
    /// Pingora's error type when the request failed (`ConnectRefused`...).
    pub error: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_contract() {
        assert_eq!(classify(200, false, false), Outcome::Success);
        assert_eq!(classify(304, false, false), Outcome::Success);
        assert_eq!(classify(401, true, false), Outcome::Blocked);
        assert_eq!(classify(429, true, false), Outcome::Blocked);
        assert_eq!(classify(503, true, false), Outcome::Blocked);
        assert_eq!(classify(500, false, false), Outcome::Failed);
        assert_eq!(classify(502, false, true), Outcome::Failed);
        assert_eq!(classify(0, false, true), Outcome::Failed);
        assert_eq!(classify(404, false, false), Outcome::Other);
        // An upstream's own 401 is not a policy's refusal.
        assert_eq!(classify(401, false, false), Outcome::Other);
        assert_eq!(classify(0, false, false), Outcome::Other);
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(0), "none");
        assert!(is_rate_limit("rate-limit-by-key") && is_quota("quota"));
    }
}
