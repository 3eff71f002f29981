//! The `Policy` contract and the policy implementations.
//!
//! A policy is a value built once per config snapshot from a [`PolicyInstance`]; it has a
//! method per phase, each with a default that does nothing, in the spirit of Pingora's
//! `ProxyHttp`. Phases return [`Flow`]: continue, or answer with an [`Answer`]. Policies never
//! write to the client themselves: the gateway core writes every answer, in one place.
//!
//! Per request, the gateway keeps one [`RequestCtx`] with typed fields that policies read and
//! fill (route, subscription, claims, upstream path and query, extra answer headers).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use tollgate_config::{CertField, PolicyDef, PolicyInstance, TemplateSource, Var};

pub mod cache;
mod check_header;
mod client_cert;
pub mod concurrency;
mod cors;
mod headers;
mod ip_filter;
pub mod jwt;
mod limits;
mod problem;
mod query;
mod return_response;
mod rewrite;
mod simple;
mod transform;
mod validate_content;
mod validate_parameters;

pub use client_cert::ClientCert;
pub use limits::{quota_period, LimitTicket};
pub use problem::{problem_body, Answer, PROBLEM_JSON};

/// What a phase decided.
pub enum Flow {
    /// Go on with the next policy, then the next phase.
    Continue,
    /// Stop here and send this answer instead (the gateway writes it).
    Respond(Answer),
    /// The policy cannot decide yet (a JWKS refetch, a shared counter): the gateway awaits
    /// the future, then calls the same phase of the same policy once more. The future owns
    /// what it needs (it borrows neither the request nor the context); what it learns, it
    /// leaves in the policy's long-lived state, or in a typed field of the request context
    /// it set up before returning (the limit policies use [`RequestCtx::limits`]). A second
    /// `Wait` for the same request is an internal error (500): policies decide on their
    /// second call.
    Wait(Pending),
}

/// A wait asked for by [`Flow::Wait`].
pub type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Continue => f.write_str("Continue"),
            Flow::Respond(a) => f.debug_tuple("Respond").field(a).finish(),
            Flow::Wait(_) => f.write_str("Wait(..)"),
        }
    }
}

/// A request's id: kept as the header value the upstream and the answer share (one
/// allocation per request), read as text only where it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub http::HeaderValue);

impl Default for RequestId {
    fn default() -> Self {
        RequestId(http::HeaderValue::from_static(""))
    }
}

impl RequestId {
    /// The id as text (the gateway makes hex digits; empty before the request is read).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// No id yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Per-request state shared by the gateway and the policies.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// `X-Request-Id` of this request (empty before the request is read).
    pub request_id: RequestId,
    /// The client's address (the TCP peer).
    pub client_ip: Option<IpAddr>,
    /// The matched API's id.
    pub api_id: Option<Arc<str>>,
    /// The matched operation's id.
    pub operation_id: Option<Arc<str>>,
    /// The product the caller's subscription is scoped to, if any.
    pub product_id: Option<Arc<str>>,
    /// The caller's subscription id, if any.
    pub subscription_id: Option<Arc<str>>,
    /// Values of the operation's `{param}` segments (decoded), in template order.
    pub path_params: Vec<(Arc<str>, String)>,
    /// Verified JWT claims (filled by `validate-jwt`).
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// The path sent upstream, relative to the upstream target: the request path after the
    /// API prefix (normalized, prefix stripped, always starting with `/`), *without* the
    /// target's base path. The target is picked after `inbound` runs, so the gateway
    /// prepends the chosen target's `base_path` when it builds the upstream request, after
    /// every `inbound` policy has run. `rewrite-uri` replaces this value with its rendered
    /// path (the template stands for the part after the API prefix); the base path is still
    /// prepended to it.
    pub upstream_path: String,
    /// The query sent upstream, without `?` (`None` when there is none);
    /// `set-query-parameter` and `rewrite-uri` edit it.
    pub upstream_query: Option<String>,
    /// Headers added to the answer the client gets, whoever made it (CORS, limits): upstream
    /// answers, answers made by policies and error answers alike. A name listed here
    /// replaces the answer's own header of that name (so an upstream's CORS headers are not
    /// doubled), except `Vary`, which is appended.
    pub answer_headers: Vec<(HeaderName, HeaderValue)>,
    /// The client's `Accept` header (content negotiation of body transforms).
    pub accept: Option<HeaderValue>,
    /// The request's `Origin` header, if any. The gateway copies it here (a cheap
    /// `HeaderValue` clone) before `inbound` runs, because `outbound` no longer sees the
    /// request head and the `cors` policy placed in `outbound` needs it.
    pub origin: Option<HeaderValue>,
    /// The response cache's state for this request (`cache-lookup`, `cache-store`): its
    /// key, hit or miss, and the answer being copied for storing.
    pub cache: cache::CacheCtx,
    /// What the limit policies (rate limits, quotas) counted for this request: the window
    /// of each counted call (refunds and bandwidth at completion) and pending answers of
    /// shared counters (see [`Flow::Wait`]).
    pub limits: Vec<LimitTicket>,
    /// The read/write timeout on the upstream connection for this request, set by
    /// `forward-request` (`None`: the upstream's `timeout`).
    pub upstream_timeout: Option<std::time::Duration>,
    /// The places this request holds under `limit-concurrency` policies: each is given
    /// back when the context is dropped, at the end of the request whatever ended it.
    pub concurrency: Vec<concurrency::Slot>,
    /// The client certificate of the TLS connection, when the client presented one the
    /// listener trusts (`--tls-client-ca`).
    pub client_cert: Option<Arc<ClientCert>>,
}

impl RequestCtx {
    /// First value of query parameter `name` in the upstream query, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.upstream_query.as_deref()?;
        query_pairs(q)
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The header names a `Connection` value lists (RFC 9110 §7.6.1: hop-by-hop headers),
/// without its `keep-alive` and `close` options and tokens that are no header name; none
/// for a value that is not visible ASCII.
pub fn connection_names(value: &HeaderValue) -> impl Iterator<Item = HeaderName> + '_ {
    // The values peers send, whole, as they send them, name nothing.
    let v = value.as_bytes();
    let list = if v == b"keep-alive" || v == b"close" {
        None
    } else {
        value.to_str().ok()
    };
    list.into_iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|o| {
            !o.is_empty()
                && !o.eq_ignore_ascii_case("keep-alive")
                && !o.eq_ignore_ascii_case("close")
        })
        .filter_map(|o| HeaderName::from_bytes(o.as_bytes()).ok())
}

/// Decode `application/x-www-form-urlencoded`-style query pairs (`+` is a space).
pub fn query_pairs(
    q: &str,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    q.split('&').filter(|s| !s.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k), decode_component(v))
    })
}

/// Percent-decode one query component, `+` standing for a space.
pub(crate) fn decode_component(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let replaced = s.replace('+', " ");
    std::borrow::Cow::Owned(
        percent_encoding::percent_decode_str(&replaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The request seen through a template: resolves `{request.header.X}` against the request
/// head and everything else against the context. Used in `inbound`; where the request head is
/// gone (`outbound`, `on_error`), render against the [`RequestCtx`] itself, which is a
/// [`TemplateSource`] too.
#[derive(Debug)]
pub struct TemplateView<'a> {
    /// The request head (current state, after earlier policies).
    pub req: &'a RequestHeader,
    /// The request context.
    pub ctx: &'a RequestCtx,
}

impl TemplateSource for TemplateView<'_> {
    fn write_var(&self, var: &Var, out: &mut String) {
        match var {
            Var::RequestHeader(name) => {
                if let Some(v) = self.req.headers.get(name).and_then(|v| v.to_str().ok()) {
                    out.push_str(v);
                }
            }
            other => self.ctx.write_var(other, out),
        }
    }
}

/// The context alone as a template source, for phases where the request head is gone
/// (`outbound`, `on_error`): every variable resolves as in [`TemplateView`] except
/// `{request.header.NAME}`, which renders as empty.
impl TemplateSource for RequestCtx {
    fn write_var(&self, var: &Var, out: &mut String) {
        use std::fmt::Write;
        match var {
            Var::SubscriptionId => out.push_str(self.subscription_id.as_deref().unwrap_or("")),
            Var::ProductId => out.push_str(self.product_id.as_deref().unwrap_or("")),
            Var::ApiId => out.push_str(self.api_id.as_deref().unwrap_or("")),
            Var::OperationId => out.push_str(self.operation_id.as_deref().unwrap_or("")),
            Var::ClientIp => {
                if let Some(ip) = self.client_ip {
                    let _ = write!(out, "{ip}");
                }
            }
            Var::RequestHeader(_) => {}
            Var::RequestQuery(name) => {
                if let Some(v) = self.query_param(name) {
                    out.push_str(&v);
                }
            }
            Var::JwtClaim(name) => match self.claims.as_ref().and_then(|c| c.get(name)) {
                Some(serde_json::Value::String(s)) => out.push_str(s),
                Some(serde_json::Value::Null) | None => {}
                Some(other) => {
                    let _ = write!(out, "{other}");
                }
            },
            Var::PathParam(name) => {
                if let Some((_, v)) = self.path_params.iter().find(|(k, _)| **k == **name) {
                    out.push_str(v);
                }
            }
            Var::ClientCertificate(field) => {
                if let Some(c) = &self.client_cert {
                    out.push_str(match field {
                        CertField::Thumbprint => &c.thumbprint,
                        CertField::SerialNumber => &c.serial_number,
                        CertField::Subject => &c.subject,
                        CertField::CommonName => c.common_name.as_deref().unwrap_or(""),
                        CertField::IssuerSubject => &c.issuer_subject,
                    });
                }
            }
        }
    }
}

/// A policy: one method per phase, each defaulting to "do nothing, continue".
pub trait Policy: Send + Sync + Debug {
    /// Runs in the `inbound` section, in chain order, after routing and authentication and
    /// before an upstream is picked. May edit the request head and the context, or answer.
    /// Default: continue.
    fn inbound(&self, _req: &mut RequestHeader, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }

    /// Runs in the `outbound` section on the answer's head, before it goes to the client
    /// (upstream answers only, not answers Tollgate made). May edit it, or replace the
    /// answer. Default: continue.
    fn outbound(&self, _resp: &mut ResponseHeader, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }

    /// Runs in the `on_error` section when the request failed (a policy answered with an
    /// error, or the upstream failed) on the answer about to be sent. May add headers to it
    /// through the context, or replace it. Default: continue.
    fn on_error(&self, _answer: &Answer, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }

    /// Runs once when the request is over (always, whoever answered), for every policy of
    /// the chain's inbound, backend and outbound sections: what it needs to account for it
    /// (counters that count only successes, bandwidth quotas). Must not block. Default:
    /// nothing.
    fn on_complete(&self, _done: &Completed, _ctx: &RequestCtx) {}

    /// Whether this policy transforms whole bodies (`xml-to-json`, `json-to-xml`). The
    /// gateway then buffers the request and the answer of every route that runs it, so a
    /// transform can fix `Content-Type`/`Content-Length` and answer with an error status
    /// after seeing the whole body. Default: false.
    fn transforms_bodies(&self) -> bool {
        false
    }

    /// Inbound, after every `inbound` phase ran: transform the whole request body. `Ok(None)`
    /// leaves it; `Ok(Some(new))` replaces it (the policy fixes `Content-Type` on `req`, the
    /// gateway `Content-Length`); `Err(answer)` refuses the request (e.g. 400 for a
    /// malformed body). Only called when [`Policy::transforms_bodies`] is true.
    fn transform_request_body(
        &self,
        _req: &mut RequestHeader,
        _body: &[u8],
        _ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>, Answer> {
        Ok(None)
    }

    /// Outbound, after every `outbound` phase ran: transform the whole (decoded) answer
    /// body, as [`Policy::transform_request_body`] does for requests; `Err(answer)` replaces
    /// the upstream's answer (e.g. 502 for a malformed upstream body).
    fn transform_response_body(
        &self,
        _resp: &mut ResponseHeader,
        _body: &[u8],
        _ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>, Answer> {
        Ok(None)
    }
}

/// How a request ended, for [`Policy::on_complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// The status the client got (0 when no answer could be sent).
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Answer body bytes sent to the client.
    pub bytes_out: u64,
    /// True when Tollgate (a policy or the core) made the answer, false when it came from the
    /// upstream.
    pub answered_by_gateway: bool,
}

/// The policies of one section, ready to run.
pub type Chain = Arc<[Arc<dyn Policy>]>;

/// Why a policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The kind exists in the contract but this build does not enforce it yet.
    #[error("policy kind `{0}` is not available in this build yet")]
    NotAvailable(&'static str),
    /// The policy's definition cannot be used (e.g. a key that does not parse).
    #[error("{0}")]
    Invalid(String),
}

/// Long-lived state that policies share across config snapshots (counters, caches, key
/// sets), keyed by stable ids. The gateway makes one at start and hands it to every build,
/// so a config swap keeps it.
#[derive(Debug, Default)]
pub struct Registries {
    /// `validate-jwt`: JWKS sources and shared verifiers (warm token caches).
    pub jwt: jwt::JwtRegistry,
    /// `cache-lookup` / `cache-store`: the response cache (bounded in bytes).
    pub cache: Arc<cache::ResponseCache>,
    /// Rate-limit and quota counters (local, or shared through Redis).
    pub counters: Arc<tollgate_counters::Counters>,
    /// `limit-concurrency`: requests in flight per policy origin and key.
    pub concurrency: Arc<concurrency::InFlight>,
}

impl Registries {
    /// Periodic maintenance of the registries; the gateway calls it every 500 ms from a
    /// background task (inside a tokio runtime). Starts due JWKS fetches without waiting
    /// for them; evicts rate-limit and quota counters whose window is over.
    pub async fn tick(&self) {
        self.jwt.tick().await;
        // Evict counters whose window is over (at most once a second).
        self.counters.sweep();
    }
}

/// Build the runtime policy for a compiled policy instance.
pub fn build(
    instance: &PolicyInstance,
    registries: &Arc<Registries>,
) -> Result<Arc<dyn Policy>, BuildError> {
    if let PolicyDef::ValidateJwt(def) = &instance.def {
        return jwt::build(def, registries);
    }
    if let PolicyDef::LimitConcurrency(def) = &instance.def {
        return Ok(Arc::new(concurrency::LimitConcurrency::new(
            def,
            &instance.origin,
            &registries.concurrency,
        )));
    }
    if let Some(p) = cache::build(&instance.def, &registries.cache) {
        return Ok(p);
    }
    if let Some(limit) = limits::build(instance, &registries.counters) {
        return Ok(limit);
    }
    simple::build(&instance.def).ok_or(BuildError::NotAvailable(instance.def.kind()))
}

/// Build the runtime policies of one section: one per instance, in order, each as [`build`]
/// makes it, except that every run of consecutive limit policies (`rate-limit`,
/// `rate-limit-by-key`, `quota`, `quota-by-key`) is linked, so that with counters in Redis
/// the first of a run checks the counters of the whole run in one round trip (the outcome is
/// that of checking them one after another: the first refusal answers, the policies after it
/// count nothing).
pub fn build_section(
    instances: &[PolicyInstance],
    registries: &Arc<Registries>,
) -> Vec<Result<Arc<dyn Policy>, BuildError>> {
    let mut out = Vec::with_capacity(instances.len());
    let mut rest = instances;
    while let Some(first) = rest.first() {
        let run = rest.iter().take_while(|i| limits::handles(&i.def)).count();
        if run == 0 {
            out.push(build(first, registries));
            rest = &rest[1..];
        } else {
            out.extend(
                limits::build_run(&rest[..run], &registries.counters)
                    .into_iter()
                    .map(Ok),
            );
            rest = &rest[run..];
        }
    }
    out
}

/// Run `outbound` of every policy in `chain`; the first answer wins. (Outbound phases answer
/// synchronously: the head is about to go out.)
pub fn run_outbound(
    chain: &[Arc<dyn Policy>],
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Flow {
    for p in chain {
        match p.outbound(resp, ctx) {
            Flow::Continue | Flow::Wait(_) => {}
            answer => return answer,
        }
    }
    Flow::Continue
}

/// Whether `def` is a kind this build can run.
pub fn is_available(def: &PolicyDef) -> bool {
    matches!(
        def,
        PolicyDef::ValidateJwt(_) | PolicyDef::CacheLookup(_) | PolicyDef::CacheStore { .. }
    ) || limits::handles(def)
        || simple::build(def).is_some()
}

/// A status code from a policy field that validation already checked.
pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Body helper for answers.
pub(crate) fn body_from(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &'static [u8]) -> Vec<String> {
        let v = HeaderValue::from_bytes(v).expect("value");
        connection_names(&v)
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    #[test]
    fn connection_names_are_the_listed_headers() {
        assert!(names(b"keep-alive").is_empty());
        assert!(names(b"close").is_empty());
        assert_eq!(
            names(b"Keep-Alive, X-Hop ,,close,Upgrade"),
            ["x-hop", "upgrade"]
        );
        assert_eq!(names(b"x-a, bad name, x-b"), ["x-a", "x-b"]);
        assert!(names(b"x-a, caf\xc3\xa9").is_empty(), "not visible ASCII");
    }
}
