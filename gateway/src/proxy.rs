//! The Pingora `ProxyHttp` implementation: the request's path through Tollgate.
//!
//! `request_filter` does everything that decides whether a request goes upstream, in this
//! order: pin the snapshot, check the raw head (smuggling shapes, header size), check the
//! declared body size, normalize the path, route (API, then operation), authenticate the
//! subscription key, then run the inbound and backend sections of the effective chain.
//! Any of these may answer instead; [`Proxy::write_answer`] is the one place where Tollgate
//! writes an answer of its own, with `Content-Length`, `X-Request-Id` and a deliberate
//! keep-alive decision (kept for policy rejections, closed for malformed requests).

use crate::checks::check_h1_head;
use crate::deadline::HeaderDeadline;
use crate::forwarded::{from_trusted_peer, is_trusted, Forwarded};
use crate::normalize::normalize_path;
use crate::pool::Pool;
use crate::snapshot::{ApiRuntime, RuntimeChain, Snapshot};
use crate::telemetry::{export_span, unix_ms, SpanInfo};
use crate::trace::{new_request_id, TraceIds};
use crate::{Gateway, InflightGuard, SubscriptionScope, SubscriptionState};
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tollgate_analytics::{classify, AccessFields, Event};
use tollgate_config::{ApiDef, OpMatch, MAX_STATUS_RETRIES};
use tollgate_policies::{connection_names, run_outbound, Answer, Flow, RequestCtx, RequestId};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");
static CLOSE: HeaderValue = HeaderValue::from_static("close");

/// The proxy service.
pub struct Proxy {
    gw: Arc<Gateway>,
    /// Upstream connections of the buffered path (see [`crate::buffered`]).
    pub(crate) connector: pingora_core::connectors::http::Connector,
    /// Longest idle time of an HTTP/1.x keep-alive connection between requests, seconds
    /// (at least one).
    keepalive_secs: u64,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("gw", &self.gw)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy serving `gw`'s live config, closing HTTP/1.x keep-alive connections idle
    /// for `keepalive_secs` between requests (at least one: zero would be no limit).
    pub fn new(gw: Arc<Gateway>, keepalive_secs: u64) -> Proxy {
        Proxy {
            gw,
            connector: pingora_core::connectors::http::Connector::new(None),
            keepalive_secs: keepalive_secs.max(1),
        }
    }
}

/// A boxed future borrowing the request.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    _inflight: InflightGuard,
    pub(crate) snap: Option<Arc<Snapshot>>,
    pub(crate) chain: Option<Arc<RuntimeChain>>,
    pub(crate) pool: Option<Arc<Pool>>,
    /// State shared with the policies. Boxed: Pingora moves each request's future, `Ctx`
    /// included, into fresh boxes, and this is most of `Ctx`'s size.
    pub(crate) req: Box<RequestCtx>,
    /// Bit set of target indexes already tried.
    pub(crate) tried: u64,
    pub(crate) attempts: u32,
    pub(crate) target: Option<usize>,
    pub(crate) body_limit: u64,
    pub(crate) body_seen: u64,
    /// Status of the answer Tollgate made itself, if any.
    pub(crate) answered: Option<u16>,
    /// An outbound policy replaced the upstream's answer with this body.
    pub(crate) replace_body: Option<Bytes>,
    pub(crate) orig_host: Option<HeaderValue>,
    pub(crate) incoming_traceparent: Option<HeaderValue>,
    pub(crate) start: Instant,
    /// What refused the call (policy kind, or `subscription`), for analytics.
    pub(crate) blocked_by: Option<&'static str>,
    /// When the first upstream target was picked.
    pub(crate) upstream_start: Option<Instant>,
    /// From picking the first target to the upstream answer's head, microseconds.
    pub(crate) upstream_us: Option<u64>,
    /// This request's trace identity (set once it is routed; see [`TraceIds`]).
    pub(crate) trace: Option<TraceIds>,
    /// An interim answer (`100 Continue`, `103 Early Hints`) was passed on to the client.
    pub(crate) interim_sent: bool,
    /// What the trusted proxy in front said (`settings.trusted_proxies`), when the
    /// connection came from one.
    pub(crate) forwarded: Option<Box<Forwarded>>,
}

/// The answers the core makes when a request cannot be proxied, shared by the streaming
/// path (`fail_to_proxy`) and the buffered path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failure {
    /// 413: the request body is over the limit.
    BodyTooLarge,
    /// 503: no target is healthy (or every one was tried).
    NoHealthyUpstream,
    /// 504: connecting or reading timed out.
    UpstreamTimeout,
    /// 502, with what went wrong.
    BadGateway(&'static str),
}

/// Detail of the most common 502.
pub(crate) const REFUSED_OR_RESET: &str = "the upstream refused or reset the connection";

/// The 502 detail for a failure to connect to or talk with an upstream.
pub(crate) fn bad_gateway_detail(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert => {
            "the TLS handshake with the upstream failed (is its certificate trusted, and \
             does it name the target's host?)"
        }
        _ => REFUSED_OR_RESET,
    }
}

impl Failure {
    /// The problem answer.
    pub(crate) fn answer(self) -> Answer {
        match self {
            Failure::BodyTooLarge => problem(
                413,
                "payload-too-large",
                "Content Too Large",
                "the request body is larger than the limit",
            ),
            Failure::NoHealthyUpstream => problem(
                503,
                "no-healthy-upstream",
                "Service Unavailable",
                "no healthy upstream target",
            ),
            Failure::UpstreamTimeout => problem(
                504,
                "upstream-timeout",
                "Gateway Timeout",
                "the upstream did not answer in time",
            ),
            Failure::BadGateway(detail) => problem(502, "bad-gateway", "Bad Gateway", detail),
        }
    }
}

/// An answer the core makes, before `X-Request-Id` and friends are added.
pub(crate) fn problem(status: u16, slug: &str, title: &str, detail: &str) -> Answer {
    Answer::problem(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        slug,
        title,
        detail,
    )
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Put the context's answer headers on an answer: a name listed there replaces the answer's
/// own header of that name, except `Vary`, which is appended.
fn add_answer_headers<H: HeaderEdit + ?Sized>(h: &mut H, headers: &[(HeaderName, HeaderValue)]) {
    for (i, (name, value)) in headers.iter().enumerate() {
        let first = !headers[..i].iter().any(|(n, _)| n == name);
        if first && *name != http::header::VARY {
            h.put(name, value.clone());
        } else {
            h.add(name, value.clone());
        }
    }
}

/// `upstream.rewrite_location`: the answer's `Location` and `Content-Location` into the
/// target that answered, under the API's public prefix (see [`crate::location`]).
pub(crate) fn rewrite_location(resp: &mut ResponseHeader, ctx: &Ctx) {
    if let (Some(pool), Some(t)) = (ctx.pool.as_deref(), ctx.target) {
        if let Some(prefix) = &pool.def.rewrite_location {
            crate::location::rewrite(resp, pool.target(t), prefix);
        }
    }
}

/// Whether an upstream answer with `status` is dropped and the request tried again
/// (`upstream.retry_on_status`): an idempotent request whose body can be sent again, with
/// retries left. The dropped answer counts for `upstream.outlier_detection`. The retry goes
/// to a target not tried yet, or, once every one has been, to any (the same one, for an
/// API with one target). `resendable`: the whole request body is at hand to send again.
pub(crate) fn retry_on_status(
    ctx: &mut Ctx,
    status: u16,
    idempotent: bool,
    resendable: bool,
) -> bool {
    let (Some(pool), Some(t)) = (ctx.pool.as_deref(), ctx.target) else {
        return false;
    };
    let def = &pool.def;
    if def.retry_on_status.is_empty()
        || !idempotent
        || !resendable
        || ctx.attempts > def.retries.min(MAX_STATUS_RETRIES)
        || !def.retry_on_status.contains(&status)
    {
        return false;
    }
    pool.answered(t, status);
    if ctx.tried.count_ones() as usize >= pool.len() {
        ctx.tried = 0;
    }
    true
}

/// The answer's head came from the target the request was sent to: its status counts
/// for `upstream.outlier_detection`.
pub(crate) fn note_answer(resp: &ResponseHeader, ctx: &Ctx) {
    if let (Some(pool), Some(t)) = (ctx.pool.as_deref(), ctx.target) {
        pool.answered(t, resp.status.as_u16());
    }
}

/// Remove `Connection`, the headers it names (RFC 9110 §7.6.1) and `Keep-Alive` from an
/// answer, as the response cache does from the heads it keeps.
fn drop_hop_by_hop(h: &mut dyn HeaderEdit) {
    // One pass over the few headers of an answer, where a lookup of each name would hash it.
    let (mut connection, mut keep_alive) = (false, false);
    let mut named: Vec<HeaderName> = Vec::new();
    for (name, value) in h.map() {
        if name == http::header::CONNECTION {
            connection = true;
            named.extend(connection_names(value));
        } else if name == KEEP_ALIVE {
            keep_alive = true;
        }
    }
    if connection {
        h.del(&http::header::CONNECTION);
    }
    if keep_alive {
        h.del(&KEEP_ALIVE);
    }
    for name in &named {
        h.del(name);
    }
}

/// The header edits of the proxy, made either on a plain `http` header map (the default:
/// names go out as `http` spells them) or through Pingora's head, which keeps the
/// spelling of every name it holds (`upstream.preserve_header_case`; see below).
pub(crate) trait HeaderEdit {
    /// The map, to read.
    fn map(&self) -> &HeaderMap;
    /// Set `name` to `value` alone.
    fn put(&mut self, name: &HeaderName, value: HeaderValue);
    /// Add a value of `name`.
    fn add(&mut self, name: &HeaderName, value: HeaderValue);
    /// Remove every value of `name`.
    fn del(&mut self, name: &HeaderName);
    /// Room for `n` more names (where the map is edited directly).
    fn reserve(&mut self, _n: usize) {}
}

impl HeaderEdit for HeaderMap {
    fn map(&self) -> &HeaderMap {
        self
    }
    fn put(&mut self, name: &HeaderName, value: HeaderValue) {
        self.insert(name.clone(), value);
    }
    fn add(&mut self, name: &HeaderName, value: HeaderValue) {
        self.append(name.clone(), value);
    }
    fn del(&mut self, name: &HeaderName) {
        self.remove(name);
    }
    fn reserve(&mut self, n: usize) {
        HeaderMap::reserve(self, n);
    }
}

/// How a header Tollgate adds is spelled where spellings are kept: `X-Request-Id`,
/// `Traceparent` (each word capitalized).
fn title_case(name: &HeaderName) -> String {
    let mut out = String::with_capacity(name.as_str().len());
    let mut up = true;
    for c in name.as_str().chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c });
        up = c == '-';
    }
    out
}

// Pingora's heads refuse nothing these edits make: a `HeaderName` and a `HeaderValue` are
// valid already, so their `Result`s are dropped.
macro_rules! pingora_head_edits {
    ($head:ty) => {
        impl HeaderEdit for $head {
            fn map(&self) -> &HeaderMap {
                &self.headers
            }
            fn put(&mut self, name: &HeaderName, value: HeaderValue) {
                let _ = self.insert_header(title_case(name), value);
            }
            fn add(&mut self, name: &HeaderName, value: HeaderValue) {
                let _ = self.append_header(title_case(name), value);
            }
            fn del(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    };
}
pingora_head_edits!(RequestHeader);
pingora_head_edits!(ResponseHeader);

/// Whether the request's upstream keeps header name spellings.
fn preserve_case(ctx: &Ctx) -> bool {
    ctx.pool
        .as_ref()
        .is_some_and(|p| p.def.preserve_header_case)
}

// Tollgate edits header maps directly. Pingora's `insert_header` parses each name and keeps
// a second, case-preserving name map in step: two allocations and two map inserts per
// header, a quarter of a bare proxy's instructions for the headers the contract adds to
// every request. Editing the `http::HeaderMap` drops that map, so header names go out in
// lower case, a few common ones title-cased (docs/behaviour.md, "Header names"), unless
// the API's upstream asks to keep them (`upstream.preserve_header_case`: the edits then go
// through Pingora's head, see [`HeaderEdit`]).

/// Edit the request head's parts (header map, URI) directly.
pub(crate) fn edit_request<T>(
    req: &mut RequestHeader,
    f: impl FnOnce(&mut http::request::Parts) -> T,
) -> T {
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    let out = f(&mut parts);
    *req = RequestHeader::from(parts);
    out
}

/// Runs the first `cors` policy of `chain`'s inbound section on the request: a preflight
/// gets its answer, returned here; an actual request from an allowed origin gets the CORS
/// headers on the answer about to be made.
fn run_cors(chain: &RuntimeChain, session: &mut Session, ctx: &mut Ctx) -> Option<Answer> {
    let policy = chain.inbound.get(chain.cors?)?;
    match policy.inbound(session.req_header_mut(), &mut ctx.req) {
        Flow::Respond(a) => Some(a),
        Flow::Continue | Flow::Wait(_) => None,
    }
}

/// [`run_cors`] on `api`'s chain without a product for operation `op` (the global, API and
/// operation scopes; a product's policies need the key a browser does not send with a
/// preflight), ahead of the chain: a preflight gets its answer; a refusal made before the
/// chain runs gets the grant, so that a browser lets the page read it.
fn cors_before_chain(
    runtime: &ApiRuntime,
    api: &ApiDef,
    op: Option<usize>,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Option<Answer> {
    run_cors(&runtime.chains[api.chain_index(0, op)], session, ctx)
}

/// Policy `i` of section `s` (0: inbound) answered (a refusal, a mock, a cache hit) ahead
/// of the inbound section's `cors`: its grant goes on that answer too, wherever the policy
/// file put it.
fn grant_cors_ahead(
    chain: &RuntimeChain,
    s: usize,
    i: usize,
    session: &mut Session,
    ctx: &mut Ctx,
) {
    if chain.cors.is_some_and(|c| s == 0 && c > i) {
        run_cors(chain, session, ctx);
    }
}

/// Edit an answer head's headers: through Pingora's head when `preserve` (spellings kept),
/// else on its header map directly (see [`edit_response_headers`]).
pub(crate) fn edit_answer<T>(
    resp: &mut ResponseHeader,
    preserve: bool,
    f: impl FnOnce(&mut dyn HeaderEdit) -> T,
) -> T {
    if preserve {
        f(resp)
    } else {
        edit_response_headers(resp, |h| f(h))
    }
}

/// Edit an answer head's header map directly (its reason phrase is kept).
pub(crate) fn edit_response_headers<T>(
    resp: &mut ResponseHeader,
    f: impl FnOnce(&mut HeaderMap) -> T,
) -> T {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, empty).into();
    let out = f(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        // A phrase the upstream sent passes through; it was valid when parsed.
        let _ = resp.set_reason_phrase(reason.as_deref());
    }
    out
}

/// The names of a request head that [`Proxy::prepare_upstream`] may remove, by presence.
#[derive(Default)]
struct Removable {
    connection: bool,
    /// `Proxy-Connection` or `Keep-Alive`.
    proxy_hop: bool,
    forwarded_for: bool,
    forwarded_host: bool,
    tracestate: bool,
}

/// The client address as an `X-Forwarded-For` value.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 48];
    HeaderValue::from_bytes(tollgate_analytics::access_log::ip_text(ip, &mut buf))
        .unwrap_or_else(|_| unreachable!("an address is text"))
}

/// Remove query parameter `name` (its encoded form as written) from a raw query.
fn strip_query_param(query: &str, name: &str) -> Option<String> {
    let mut out = String::with_capacity(query.len());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let decoded = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
        if decoded == name {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    (!out.is_empty()).then_some(out)
}

impl Proxy {
    /// Write an answer Tollgate made. The only place that does.
    pub(crate) async fn write_answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut answer: Answer,
        close: bool,
    ) -> Result<()> {
        if answer.is_error {
            if let Some(chain) = ctx.chain.clone() {
                for p in chain.on_error.iter() {
                    if let Flow::Respond(replacement) = p.on_error(&answer, &mut ctx.req) {
                        answer = replacement;
                        break;
                    }
                }
            }
        }
        let mut resp = ResponseHeader::build_no_case(
            answer.status,
            Some(answer.headers.len() + ctx.req.answer_headers.len() + 4),
        )?;
        edit_response_headers(&mut resp, |h| {
            for (name, value) in answer.headers.drain(..) {
                h.append(name, value);
            }
        });
        self.write_head_and_body(session, ctx, resp, answer.body, close)
            .await
    }

    /// The second half of [`Proxy::write_answer`], also used for cache hits (whose head is
    /// ready): adds the context's answer headers, `Content-Length` (not on a 304, which
    /// stands for a body it does not carry, nor on a 204 or 1xx), `X-Request-Id` and the
    /// keep-alive decision,
    /// then writes head and body (no body for `HEAD`, 204 and 304).
    pub(crate) async fn write_head_and_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut resp: ResponseHeader,
        body: Bytes,
        close: bool,
    ) -> Result<()> {
        let status = resp.status;
        if ctx.req.request_id.is_empty() {
            // Answered before `request_filter` ran (Pingora refused the request itself).
            ctx.req.request_id = RequestId(new_request_id());
        }
        edit_answer(&mut resp, preserve_case(ctx), |h| {
            add_answer_headers(h, &ctx.req.answer_headers);
            // Never on a 204 or 1xx (RFC 9110 §8.6), nor a 304.
            if !(status == StatusCode::NOT_MODIFIED
                || status == StatusCode::NO_CONTENT
                || status.is_informational())
            {
                h.put(&CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            h.put(&X_REQUEST_ID, ctx.req.request_id.0.clone());
            if close {
                h.put(&http::header::CONNECTION, CLOSE.clone());
            }
        });
        if close {
            session.set_keepalive(None);
        }
        let no_body = body.is_empty()
            || session.req_header().method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        ctx.answered = Some(status.as_u16());
        session
            .write_response_header(Box::new(resp), no_body)
            .await?;
        if !no_body {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    /// What the upstream sees: the path the policies saw (target base path + rest), `Host`
    /// of the target, `X-Forwarded-*`, `traceparent`, `X-Request-Id`; client-sent values of
    /// these headers are overwritten; hop-by-hop headers are dropped. Shared by the streaming
    /// and the buffered paths.
    pub(crate) fn prepare_upstream(
        &self,
        upstream: &mut RequestHeader,
        ctx: &Ctx,
        pool: &Pool,
        t: usize,
        https: bool,
    ) -> Result<()> {
        let target = pool.target(t);
        let query = ctx.req.upstream_query.as_deref();
        let keep_rest = ctx.req.upstream_path != "/" || target.base_path.is_empty();
        let mut uri = String::with_capacity(
            target.base_path.len() + ctx.req.upstream_path.len() + query.map_or(0, |q| q.len() + 1),
        );
        uri.push_str(&target.base_path);
        if keep_rest {
            uri.push_str(&ctx.req.upstream_path);
        }
        if let Some(q) = query {
            uri.push('?');
            uri.push_str(q);
        }
        // The head's own URI when it already names the target (a clone shares its bytes),
        // else the string built above, parsed once.
        let target_uri = |current: &http::Uri, uri: String| {
            if current.path_and_query().map(|pq| pq.as_str()) == Some(uri.as_str()) {
                Ok(current.clone())
            } else {
                http::Uri::from_maybe_shared(Bytes::from(uri))
            }
        };
        let bad = |e| Error::because(ErrorType::InvalidHTTPHeader, "upstream request target", e);
        if pool.def.preserve_header_case {
            // Through Pingora's head, which keeps the spelling of every name. Setting the
            // URI also makes the upstream get the target in origin form, as on the path
            // below, never the client's raw bytes.
            self.upstream_headers(upstream, ctx, pool.host(t), https);
            let u = target_uri(&upstream.uri, uri).map_err(bad)?;
            upstream.set_uri(u);
            return Ok(());
        }
        // The target is set on the parts too: `set_raw_path` would take the head apart
        // again and build the URI through `http`'s builder.
        edit_request(upstream, |parts| {
            self.upstream_headers(&mut parts.headers, ctx, pool.host(t), https);
            parts.uri = target_uri(&parts.uri, uri).map_err(bad)?;
            Ok(())
        })
    }

    /// The header edits of [`Proxy::prepare_upstream`].
    fn upstream_headers<H: HeaderEdit>(
        &self,
        h: &mut H,
        ctx: &Ctx,
        host: &HeaderValue,
        https: bool,
    ) {
        // Which of the names removed below are there: one pass over a few names, where a
        // removal of an absent name costs a hash and a probe each.
        let mut has = Removable::default();
        for name in h.map().keys() {
            if name == http::header::CONNECTION {
                has.connection = true;
            } else if name == PROXY_CONNECTION || name == KEEP_ALIVE {
                has.proxy_hop = true;
            } else if name == X_FORWARDED_FOR {
                has.forwarded_for = true;
            } else if name == X_FORWARDED_HOST {
                has.forwarded_host = true;
            } else if name == TRACESTATE {
                has.tracestate = true;
            }
        }
        h.reserve(6);
        h.put(&HOST, host.clone());
        // Hop-by-hop headers named by the client's Connection header go no further, but
        // `Upgrade`: on the streaming path Pingora has already sanitized the head, and what
        // `Connection` it left names the `Upgrade` of a WebSocket handshake, which must
        // reach the upstream (the buffered path drops both itself).
        if let Some(conn) = has
            .connection
            .then(|| h.map().get(http::header::CONNECTION).cloned())
            .flatten()
        {
            for name in connection_names(&conn).filter(|n| *n != http::header::UPGRADE) {
                h.del(&name);
            }
        }
        if has.proxy_hop {
            h.del(&PROXY_CONNECTION);
            h.del(&KEEP_ALIVE);
        }
        // From a trusted proxy: the chain from the client on, and what the client asked
        // that proxy for (scheme, host).
        let forwarded = ctx.forwarded.as_deref();
        match (forwarded, ctx.req.client_ip) {
            (Some(f), _) => {
                h.put(&X_FORWARDED_FOR, f.chain.clone());
            }
            (None, Some(ip)) => {
                h.put(&X_FORWARDED_FOR, ip_value(ip));
            }
            (None, None) if has.forwarded_for => {
                h.del(&X_FORWARDED_FOR);
            }
            (None, None) => {}
        }
        let https = forwarded.and_then(|f| f.https).unwrap_or(https);
        let proto = if https { &HTTPS } else { &HTTP };
        h.put(&X_FORWARDED_PROTO, proto.clone());
        match forwarded
            .and_then(|f| f.host.as_ref())
            .or(ctx.orig_host.as_ref())
        {
            Some(v) => {
                h.put(&X_FORWARDED_HOST, v.clone());
            }
            None if has.forwarded_host => {
                h.del(&X_FORWARDED_HOST);
            }
            None => {}
        }
        let incoming = ctx.incoming_traceparent.as_ref().map(|v| v.as_bytes());
        let ids = ctx
            .trace
            .unwrap_or_else(|| TraceIds::from_incoming(incoming));
        // A continued trace keeps the caller's vendor state; a new one drops it.
        if ids.parent_span_id.is_none() && has.tracestate {
            h.del(&TRACESTATE);
        }
        h.put(&TRACEPARENT, ids.traceparent_value());
        h.put(&X_REQUEST_ID, ctx.req.request_id.0.clone());
    }

    /// Answer with a problem and stop the request (`Ok(true)` for `request_filter`).
    ///
    /// Boxed, like every other wait of `request_filter` but the policies' own: an async
    /// hook's future holds the state of everything it awaits, and Pingora moves that future
    /// into a fresh box on every request, so rare paths inlined there (answers, cache hits,
    /// the buffered path) cost every request a multi-kilobyte copy.
    fn reject<'a>(
        &'a self,
        session: &'a mut Session,
        ctx: &'a mut Ctx,
        answer: Answer,
        close: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.write_answer(session, ctx, answer, close).await?;
            Ok(true)
        })
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// No downstream modules. Pingora's default adds its response compression module,
    /// disabled, which still costs every request a context and a call per filter (~0.8k
    /// instructions under callgrind); Tollgate never compresses answers, and the buffered
    /// path decodes upstream bodies itself (`crate::buffered`).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// What Pingora's own error lines name the request by. Its default prints the
    /// whole target with the query, which can hold a subscription key; this prints
    /// the method, the path without the query and the request id, which the access
    /// log and the client's `X-Request-Id` share.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        let path = req.uri.path();
        let path = if path.len() > 256 {
            &path[..path.floor_char_boundary(256)]
        } else {
            path
        };
        format!(
            "{} {path} request-id={}",
            req.method,
            ctx.req.request_id.as_str()
        )
    }

    /// A head Pingora's HTTP/1 parser refused before any hook could run (differing
    /// duplicate `Content-Length`s, `Content-Length: +3`, a duplicate `Host`; 431 for one
    /// past its 1 MiB or 256 lines): a problem answer with a fresh request id, instead of
    /// Pingora's canned empty one. Pingora closes the connection after it, whether the
    /// head was the connection's first or came pipelined behind others.
    fn refused_head_answer(&self, status: u16) -> Option<(ResponseHeader, Bytes)> {
        let code = StatusCode::from_u16(status).ok()?;
        let detail = if status == 431 {
            "the request head is larger than the gateway reads (about 1 MiB, or more than \
             256 header lines)"
        } else {
            "the request head is malformed (for example a duplicate or invalid \
             Content-Length, or a duplicate Host)"
        };
        let (slug, title) = crate::checks::slug_and_title_for(status);
        let body = tollgate_policies::problem_body(code, slug, title, detail, None);
        let mut resp = ResponseHeader::build(code, Some(4)).ok()?;
        resp.insert_header(CONTENT_TYPE, tollgate_policies::PROBLEM_JSON.clone())
            .ok()?;
        resp.insert_header(CONTENT_LENGTH, body.len()).ok()?;
        resp.insert_header(X_REQUEST_ID.clone(), new_request_id())
            .ok()?;
        resp.insert_header(http::header::CONNECTION, CLOSE.clone())
            .ok()?;
        Some((resp, body))
    }

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _inflight: InflightGuard::new(&self.gw),
            snap: None,
            chain: None,
            pool: None,
            req: Box::default(),
            tried: 0,
            attempts: 0,
            target: None,
            body_limit: u64::MAX,
            body_seen: 0,
            answered: None,
            replace_body: None,
            orig_host: None,
            incoming_traceparent: None,
            start: Instant::now(),
            blocked_by: None,
            upstream_start: None,
            upstream_us: None,
            trace: None,
            interim_sent: false,
            forwarded: None,
        }
    }

    /// Runs first for every request: decides whether it goes upstream (see module docs).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = self.gw.snapshot();
        ctx.snap = Some(snap.clone());
        ctx.req.request_id = RequestId(new_request_id());
        ctx.req.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| canonical_ip(a.ip()));
        // The TLS connection's client certificate (`--tls-client-ca`), parsed at its
        // handshake.
        ctx.req.client_cert = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<Arc<tollgate_policies::ClientCert>>())
            .cloned();
        // Behind a trusted proxy (a load balancer) the client is the one it names.
        let trusted = &snap.config.trusted_proxies;
        if !trusted.is_empty() {
            if let Some(peer) = ctx.req.client_ip.filter(|&ip| is_trusted(trusted, ip)) {
                let mut f =
                    from_trusted_peer(trusted, peer, &session.req_header().headers, canonical_ip);
                ctx.req.client_ip = Some(f.client);
                if let Some(id) = f.request_id.take() {
                    ctx.req.request_id = RequestId(id);
                }
                ctx.forwarded = Some(Box::new(f));
            }
        }
        let limits = snap.config.limits;

        // 1. The raw head: smuggling shapes and size.
        if let Some(h1) = session.as_downstream().as_http1() {
            let raw = h1.get_headers_raw_bytes();
            let http11 = session.req_header().version == Version::HTTP_11;
            if let Err(p) = check_h1_head(&raw, http11, limits.max_request_headers) {
                let (slug, title) = p.slug_and_title();
                let a = problem(p.status(), slug, title, p.detail());
                return self.reject(session, ctx, a, true).await;
            }
        }

        // HTTP/1.1 pipelining (RFC 9112 §9.3.2): a request sent before the previous
        // answer is served after it, in order. Pingora's default closes the connection
        // after the first answer and drops the rest; the setting carries over to the
        // connection's later requests.
        //
        // Keep-alive: Pingora waits for the next request on an HTTP/1.1 connection with no
        // limit, or as long as the client's `Keep-Alive: timeout=N` asks. The stream
        // wrapper closes a connection idle for the proxy's keep-alive timeout
        // (`crate::deadline`) without a timer per request; a shorter wait the client asked
        // for stays Pingora's, a longer one is no longer Pingora's to keep.
        if let ServerSession::H1(h1) = session.as_downstream_mut() {
            if !h1.pipelining_enabled() {
                h1.set_pipelining_enabled(true);
            }
            // Not idle while this request is served, though a pipelined one may have come
            // with the bytes of the one before.
            if let Some(d) = h1.stream().as_any().downcast_ref::<HeaderDeadline>() {
                d.serving();
            }
            if h1
                .get_keepalive_timeout()
                .is_some_and(|secs| secs > self.keepalive_secs)
            {
                h1.set_server_keepalive(Some(0));
            }
        }

        // CONNECT (tunnels) is not proxied. Pingora lets it through to here
        // (`allow_connect_method_proxying`, server.rs) only so that its refusal is a
        // problem answer like every other.
        if session.req_header().method == http::Method::CONNECT {
            let a = problem(
                405,
                "method-not-allowed",
                "Method Not Allowed",
                "CONNECT is not supported: the gateway does not open tunnels",
            );
            return self.reject(session, ctx, a, true).await;
        }

        // 2. The path, normalized once.
        let req = session.req_header();
        let target = req.raw_path();
        let target = if target.first() != Some(&b'/')
            && matches!(
                raw_target_authority(target),
                RawTargetAuthority::Absolute { .. }
            ) {
            // absolute-form (`GET http://host/x`): route on its path, which Pingora's
            // classifier (the one it checks the authority with) put in the Uri. Any
            // other target that does not start with '/' (`GET abc`, `GET  /x`) stays
            // as it is and is refused below, never routed as "/".
            req.uri
                .path_and_query()
                .map_or(b"/".as_slice(), |pq| pq.as_str().as_bytes())
        } else {
            target
        };
        let (raw_path, raw_query) = match target.iter().position(|&b| b == b'?') {
            Some(q) => (&target[..q], Some(&target[q + 1..])),
            None => (target, None),
        };
        let path = match normalize_path(raw_path) {
            Ok(p) => p,
            Err(e) => {
                let a = problem(400, "malformed-request", "Bad Request", &e.to_string());
                return self.reject(session, ctx, a, true).await;
            }
        };
        let query = raw_query.map(|q| String::from_utf8_lossy(q).into_owned());

        // 3. Routing (and the declared body size, against the API's limit).
        let Some((api_idx, rest)) = snap.config.route(&path) else {
            let a = problem(404, "not-found", "Not Found", "no API matches this path");
            return self.reject(session, ctx, a, false).await;
        };
        let api = &snap.config.apis[api_idx];
        let runtime = &snap.apis[api_idx];
        // A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`):
        // the method it asks about picks the operation when no `OPTIONS` one matches.
        let preflight = if req.method == Method::OPTIONS && req.headers.contains_key(ORIGIN) {
            req.headers
                .get(ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        } else {
            None
        };
        let op = if api.operations.is_empty() {
            None
        } else {
            let mut matched = api.match_operation(&req.method, rest);
            if let Some(asked) = preflight.as_ref() {
                if !matches!(matched, OpMatch::Found { .. }) {
                    if let found @ OpMatch::Found { .. } = api.match_operation(asked, rest) {
                        matched = found;
                    }
                }
            }
            match matched {
                OpMatch::Found { op, mut params } => {
                    // Values are decoded once here; policies re-encode what they emit.
                    for (_, v) in params.iter_mut() {
                        if v.contains('%') {
                            *v = percent_encoding::percent_decode_str(v)
                                .decode_utf8_lossy()
                                .into_owned();
                        }
                    }
                    ctx.req.path_params = params;
                    Some(op)
                }
                OpMatch::MethodNotAllowed { allow } => {
                    if let Some(a) = cors_before_chain(runtime, api, None, session, ctx) {
                        return self.reject(session, ctx, a, false).await;
                    }
                    let mut a = problem(
                        405,
                        "method-not-allowed",
                        "Method Not Allowed",
                        "the operation does not accept this method",
                    );
                    if let Ok(v) = HeaderValue::from_str(&allow) {
                        a = a.with_header(http::header::ALLOW, v);
                    }
                    return self.reject(session, ctx, a, false).await;
                }
                OpMatch::NotFound => {
                    if let Some(a) = cors_before_chain(runtime, api, None, session, ctx) {
                        return self.reject(session, ctx, a, false).await;
                    }
                    let a = problem(
                        404,
                        "not-found",
                        "Not Found",
                        "no operation matches this path",
                    );
                    return self.reject(session, ctx, a, false).await;
                }
            }
        };
        ctx.req.api_id = Some(api.id.clone());
        ctx.req.operation_id = op.map(|i| api.operations[i].id.clone());
        // The schemes the API is served over (`protocols`): the listener's, or the one a
        // trusted proxy in front says the client used.
        if !(api.allow_http && api.allow_https) {
            let https = ctx
                .forwarded
                .as_ref()
                .and_then(|f| f.https)
                .unwrap_or_else(|| session.digest().is_some_and(|d| d.ssl_digest.is_some()));
            if !https && !api.allow_http {
                // Kong's answer: the client should call again over TLS.
                let a = problem(
                    426,
                    "https-required",
                    "Upgrade Required",
                    "this API is served over HTTPS only",
                )
                .with_header(
                    http::header::UPGRADE,
                    HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
                );
                ctx.blocked_by = Some("protocol");
                return self.reject(session, ctx, a, false).await;
            }
            if https && !api.allow_https {
                // Azure API Management routes nothing there.
                let a = problem(
                    404,
                    "not-found",
                    "Not Found",
                    "this API is not served over HTTPS",
                );
                return self.reject(session, ctx, a, false).await;
            }
        }
        // The declared body size, against the API's `max_request_body`, else the
        // settings'. (The body of a request refused before this point is never read:
        // Pingora closes an HTTP/1 connection answered before its request body was read.)
        let body_limit = api.max_request_body.unwrap_or(limits.max_request_body);
        let declared = session
            .req_header()
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > body_limit) {
            return self
                .reject(session, ctx, Failure::BodyTooLarge.answer(), true)
                .await;
        }
        ctx.body_limit = body_limit;
        // A preflight is answered by the API's `cors` policy (see `cors_before_chain`)
        // before the key is looked at or any other policy runs: a browser sends none of
        // its credentials with it.
        if preflight.is_some() {
            if let Some(a) = cors_before_chain(runtime, api, op, session, ctx) {
                return self.reject(session, ctx, a, false).await;
            }
        }
        let req = session.req_header();
        // The values kept from the head, in one pass over its few headers (a `get` each
        // costs a hash and a probe); the first value of a name, as `get` gives.
        let (mut host, mut traceparent, mut origin, mut accept, mut header_key) =
            (None, None, None, None, None);
        for (name, value) in req.headers.iter() {
            // (The key header may be configured as any name, one of these included.)
            if *name == api.key_header {
                header_key.get_or_insert(value);
            }
            let slot = if name == HOST {
                &mut host
            } else if name == http::header::ACCEPT {
                &mut accept
            } else if name == http::header::ORIGIN {
                &mut origin
            } else if name == TRACEPARENT {
                &mut traceparent
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        ctx.orig_host = host.cloned().or_else(|| {
            req.uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        ctx.incoming_traceparent = traceparent.cloned();
        ctx.trace = Some(TraceIds::from_incoming(
            ctx.incoming_traceparent.as_ref().map(|v| v.as_bytes()),
        ));
        ctx.req.origin = origin.cloned();
        ctx.req.accept = accept.cloned();

        // 4. The subscription key: read, then removed before anything goes upstream.
        let key_header_sent = header_key.is_some();
        let header_key = header_key.and_then(|v| v.to_str().ok());
        let mut query_key = None;
        let mut upstream_query = query;
        if let Some(q) = upstream_query.as_deref() {
            if q.split('&').any(|p| {
                let k = p.split_once('=').map_or(p, |(k, _)| k);
                percent_encoding::percent_decode_str(k).decode_utf8_lossy() == api.key_query
            }) {
                query_key = tollgate_policies::query_pairs(q)
                    .find(|(k, _)| *k == api.key_query)
                    .map(|(_, v)| v.into_owned());
                upstream_query = strip_query_param(q, &api.key_query);
            }
        }
        // Looked up while the header is borrowed from the request, then removed.
        let key = header_key.or(query_key.as_deref());
        let key_given = key.is_some();
        let subscription = key.and_then(|k| self.gw.subscriptions.lookup(k));
        if key_header_sent {
            session.req_header_mut().remove_header(&api.key_header);
        }
        let mut product_slot = 0;
        if api.subscription_required {
            let Some(sub) = subscription.as_ref() else {
                let detail = if key_given {
                    "the subscription key is not valid"
                } else {
                    "a subscription key is required"
                };
                let a = problem(401, "unauthorized", "Unauthorized", detail);
                ctx.blocked_by = Some("subscription");
                cors_before_chain(runtime, api, op, session, ctx);
                return self.reject(session, ctx, a, false).await;
            };
            if sub.state != SubscriptionState::Active {
                let a = problem(
                    403,
                    "subscription-inactive",
                    "Forbidden",
                    "the subscription is not active",
                );
                ctx.blocked_by = Some("subscription");
                cors_before_chain(runtime, api, op, session, ctx);
                return self.reject(session, ctx, a, false).await;
            }
        }
        if let Some(sub) = subscription.filter(|s| s.state == SubscriptionState::Active) {
            let allowed = match &sub.scope {
                SubscriptionScope::All => true,
                SubscriptionScope::Api(id) => **id == *api.id,
                SubscriptionScope::Product(pid) => {
                    match snap
                        .config
                        .product_index(pid)
                        .and_then(|p| api.product_slot(p))
                    {
                        Some(slot) => {
                            product_slot = slot;
                            ctx.req.product_id = Some(pid.clone());
                            true
                        }
                        None => false,
                    }
                }
            };
            if !allowed && api.subscription_required {
                let a = problem(
                    403,
                    "subscription-scope",
                    "Forbidden",
                    "the subscription does not give access to this API",
                );
                ctx.blocked_by = Some("subscription");
                cors_before_chain(runtime, api, op, session, ctx);
                return self.reject(session, ctx, a, false).await;
            }
            if allowed {
                ctx.req.subscription_id = Some(sub.id.clone());
            }
        }

        // 5. The effective chain of (product, operation).
        let chain = runtime.chains[api.chain_index(product_slot, op)].clone();
        ctx.pool = Some(runtime.pool.clone());
        let up = &runtime.pool.def;
        // A request waiting for another's cache fill waits as long as that one may take
        // upstream (the fill runs this same chain: the key names the API, operation and
        // product).
        let timeout = chain.upstream_timeout.unwrap_or(up.timeout);
        ctx.req
            .cache
            .set_wait_limit(timeout.saturating_add(up.connect_timeout));
        // The rest of the path after the API prefix, in the normalized path's own buffer.
        let rest_at = path.len() - rest.len();
        let mut upstream_path = path;
        upstream_path.replace_range(..rest_at, "");
        if upstream_path.is_empty() {
            upstream_path.push('/');
        }
        ctx.req.upstream_path = upstream_path;
        ctx.req.upstream_query = upstream_query;
        ctx.chain = Some(chain.clone());

        // 6. Inbound, then backend.
        for (s, section) in [&chain.inbound, &chain.backend].into_iter().enumerate() {
            for (i, policy) in section.iter().enumerate() {
                let mut waited = false;
                loop {
                    match policy.inbound(session.req_header_mut(), &mut ctx.req) {
                        Flow::Continue => break,
                        Flow::Respond(a) => {
                            if a.is_error {
                                // Analytics: which kind of policy refused the call.
                                let eff = &api.chains[api.chain_index(product_slot, op)];
                                let list = if s == 0 { &eff.inbound } else { &eff.backend };
                                ctx.blocked_by =
                                    Some(list.get(i).map_or("policy", |p| p.def.kind()));
                            }
                            grant_cors_ahead(&chain, s, i, session, ctx);
                            return self.reject(session, ctx, a, false).await;
                        }
                        Flow::Wait(pending) if !waited => {
                            waited = true;
                            pending.await;
                        }
                        Flow::Wait(_) => {
                            tracing::error!(?policy, "a policy asked to wait twice");
                            let a = problem(
                                500,
                                "internal-error",
                                "Internal Server Error",
                                "the gateway failed to handle the request",
                            );
                            return self.reject(session, ctx, a, true).await;
                        }
                    }
                }
                if ctx.req.cache.has_hit() {
                    grant_cors_ahead(&chain, s, i, session, ctx);
                    return Box::pin(self.serve_hit(session, ctx)).await;
                }
            }
        }
        if chain.buffered {
            let pool = runtime.pool.clone();
            return Box::pin(self.proxy_buffered(session, ctx, &pool)).await;
        }
        Ok(false)
    }

    /// Counts request body bytes; over the limit the request fails with 413.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_seen += b.len() as u64;
            if ctx.body_seen > ctx.body_limit {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
            }
        }
        Ok(())
    }

    /// Picks a target: round robin over healthy ones, never one already tried.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool for this request"))?;
        ctx.upstream_start.get_or_insert_with(Instant::now);
        if ctx.attempts > 0 {
            // A retry: Pingora sends the body read so far again from its retry buffer,
            // through `request_body_filter`, which would count it twice.
            ctx.body_seen = 0;
        }
        match pool.pick(ctx.tried) {
            Ok(p) => {
                let p = p.with_timeout(ctx.req.upstream_timeout);
                if p.index < 64 {
                    ctx.tried |= 1 << p.index;
                }
                ctx.target = Some(p.index);
                ctx.attempts += 1;
                Ok(p.peer)
            }
            Err(_) => Error::e_explain(ErrorType::HTTPStatus(503), "no healthy upstream target"),
        }
    }

    /// A target refused or timed out the connection: eject it, and retry idempotent
    /// requests on another target while retries remain.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(t)) = (ctx.pool.as_ref(), ctx.target) {
            pool.eject(t);
            let more = (ctx.tried.count_ones() as usize) < pool.len();
            let idempotent = session.req_header().method.is_idempotent();
            if idempotent && more && ctx.attempts <= pool.def.retries {
                e.set_retry(true);
            }
        }
        e
    }

    /// An answer whose status is in `upstream.retry_on_status` is dropped (its body
    /// unread, its connection closed) and the request tried again, while retries last.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status < 500 {
            return Ok(());
        }
        let idempotent = session.req_header().method.is_idempotent();
        // Pingora keeps up to 64 KiB of the body read so far to send it again; past that
        // the request cannot be retried, and the answer goes to the client.
        let resendable = !session.as_ref().retry_buffer_truncated();
        if !retry_on_status(ctx, status, idempotent, resendable) {
            return Ok(());
        }
        let mut e = Error::explain(
            ErrorType::HTTPStatus(status),
            "the upstream's answer is retried (upstream.retry_on_status)",
        );
        e.set_retry(true);
        Err(e.into_up())
    }

    /// Sets what the upstream sees: the path the policies saw (target base path + rest),
    /// `Host` of the target, `X-Forwarded-*`, `traceparent`, `X-Request-Id`. Client-sent
    /// values of these headers are overwritten.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(pool), Some(t)) = (ctx.pool.as_ref(), ctx.target) else {
            return Ok(());
        };
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        self.prepare_upstream(upstream, ctx, pool, t, https)
    }

    /// Runs the outbound section on the upstream's answer and adds `X-Request-Id` and the
    /// context's answer headers.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() && resp.status != StatusCode::SWITCHING_PROTOCOLS {
            // An interim answer (`100 Continue`, `103 Early Hints`): passed on as it is, with
            // the answer headers, but no answer of its own for timing, the response cache or
            // the outbound policies, which wait for the final one.
            //
            // Pingora turns keep-alive off for good when any answer, an interim one too, is
            // written before the request body was read whole, which is when a `100 Continue`
            // comes: the connection was closed after the final answer. Only the final
            // answer decides that (see `crate::buffered` for the interim answer the gateway
            // writes itself).
            session
                .as_downstream_mut()
                .set_close_on_response_before_downstream_finish(false);
            ctx.interim_sent = true;
            edit_answer(resp, preserve_case(ctx), |h| {
                add_answer_headers(h, &ctx.req.answer_headers);
                h.put(&X_REQUEST_ID, ctx.req.request_id.0.clone());
            });
            return Ok(());
        }
        if std::mem::take(&mut ctx.interim_sent) {
            session
                .as_downstream_mut()
                .set_close_on_response_before_downstream_finish(true);
        }
        if let Some(t) = ctx.upstream_start {
            ctx.upstream_us
                .get_or_insert(t.elapsed().as_micros() as u64);
        }
        // A 101 to a request that asked for no upgrade is a broken upstream (Pingora
        // would pass it on to a client that cannot use it): 502.
        if resp.status == StatusCode::SWITCHING_PROTOCOLS && !session.is_upgrade_req() {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "101 to a request that asked for no upgrade",
            )
            .into_up());
        }
        note_answer(resp, ctx);
        rewrite_location(resp, ctx);
        // The response cache keeps the upstream's own head (see `crate::cache`).
        ctx.req.cache.capture_head(resp);
        if let Some(chain) = ctx.chain.clone() {
            if let Flow::Respond(a) = run_outbound(&chain.outbound, resp, &mut ctx.req) {
                let mut replaced = ResponseHeader::build(a.status, Some(a.headers.len() + 2))?;
                for (n, v) in a.headers {
                    replaced.append_header(n, v)?;
                }
                replaced.insert_header(CONTENT_LENGTH, a.body.len())?;
                if !replaced.headers.contains_key(CONTENT_TYPE) && a.body.is_empty() {
                    replaced.remove_header(&CONTENT_TYPE);
                }
                *resp = replaced;
                ctx.replace_body = Some(a.body);
            }
        }
        ctx.req
            .cache
            .after_outbound(session.req_header(), ctx.replace_body.is_some());
        // Pingora sets its own `Connection` on every answer but a 1xx (where the upstream's
        // `Connection: upgrade` of a 101 must pass), so the upstream's is dropped first,
        // with the hop-by-hop headers it names. That also spares the map a rehash per
        // answer: Pingora hands over a clone of the upstream's head, whose entries have no
        // room to spare, and its own insert of `Date` rehashes into a map twice the size
        // whenever the map is at its load limit, which `X-Request-Id` alone would bring
        // it to.
        let own_connection = !resp.status.is_informational();
        edit_answer(resp, preserve_case(ctx), |h| {
            if own_connection {
                drop_hop_by_hop(h);
            }
            add_answer_headers(h, &ctx.req.answer_headers);
            h.put(&X_REQUEST_ID, ctx.req.request_id.0.clone());
        });
        Ok(())
    }

    /// Copies the body of an answer being cached; swaps the body when an outbound policy
    /// replaced the answer.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        tollgate_policies::cache::on_body(&mut ctx.req, body.as_ref(), end_of_stream);
        if let Some(replacement) = ctx.replace_body.as_mut() {
            *body = if replacement.is_empty() {
                None
            } else {
                Some(std::mem::take(replacement))
            };
        }
        Ok(None)
    }

    /// The request failed: answer with the status that says why (502 refused or reset,
    /// 503 no healthy target, 504 timeout, 413 body over the limit), as problem+json.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let answer = match e.etype() {
            ErrorType::HTTPStatus(413) => Some(Failure::BodyTooLarge.answer()),
            ErrorType::HTTPStatus(503) => Some(Failure::NoHealthyUpstream.answer()),
            ErrorType::HTTPStatus(c) if *c >= 400 => {
                Some(problem(*c, "error", "Error", "the request failed"))
            }
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if *e.esource() == ErrorSource::Upstream
                    || matches!(e.etype(), ErrorType::ConnectTimedout) =>
            {
                Some(Failure::UpstreamTimeout.answer())
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Some(Failure::BadGateway(bad_gateway_detail(e)).answer()),
                ErrorSource::Downstream => match e.etype() {
                    // The client is gone: nobody to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    ErrorType::ReadTimedout => Some(problem(
                        408,
                        "request-timeout",
                        "Request Timeout",
                        "the request was not received in time",
                    )),
                    _ => Some(problem(
                        400,
                        "malformed-request",
                        "Bad Request",
                        "the request could not be read",
                    )),
                },
                ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
                    ErrorType::ConnectRefused
                    | ErrorType::ConnectError
                    | ErrorType::ConnectNoRoute
                    | ErrorType::TLSHandshakeFailure
                    | ErrorType::ConnectionClosed => {
                        Some(Failure::BadGateway(bad_gateway_detail(e)).answer())
                    }
                    _ => Some(problem(
                        500,
                        "internal-error",
                        "Internal Server Error",
                        "the gateway failed to handle the request",
                    )),
                },
            },
        };
        let code = answer.as_ref().map_or(0, |a| a.status.as_u16());
        if let Some(a) = answer.filter(|_| session.response_written().is_none()) {
            if let Err(err) = self.write_answer(session, ctx, a, true).await {
                tracing::debug!("could not send the error answer: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The access log line (never the query, which may hold a key).
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map_or(ctx.answered.unwrap_or(0), |r| r.status.as_u16());
        if let Some(chain) = ctx.chain.clone() {
            let done = tollgate_policies::Completed {
                status,
                bytes_in: session.body_bytes_read() as u64,
                bytes_out: session.body_bytes_sent() as u64,
                answered_by_gateway: ctx.answered.is_some(),
            };
            for p in chain
                .inbound
                .iter()
                .chain(chain.backend.iter())
                .chain(chain.outbound.iter())
            {
                p.on_complete(&done, &ctx.req);
            }
        }
        let req = session.req_header();
        // The structured access log is the JSON one (`--access-log`); this line is for
        // debugging (`RUST_LOG=tollgate::access=debug`).
        tracing::debug!(
            target: "tollgate::access",
            request_id = ctx.req.request_id.as_str(),
            method = %req.method,
            api = ctx.req.api_id.as_deref().unwrap_or("-"),
            operation = ctx.req.operation_id.as_deref().unwrap_or("-"),
            status,
            upstream_target = ctx.target.map_or(-1, |t| t as i64),
            attempts = ctx.attempts,
            cache = ctx.req.cache.outcome().as_str(),
            duration_ms = ctx.start.elapsed().as_millis() as u64,
            error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
        );
        self.meter_and_trace(session, e, ctx, status);
    }
}

impl Proxy {
    /// The end of every request: one analytics event (without blocking) and, when traces
    /// are exported, one server span. Nothing is built when both are off.
    fn meter_and_trace(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx, status: u16) {
        let telemetry = self.gw.telemetry();
        let meter = telemetry.meter();
        let tracer = telemetry.tracer();
        if !meter.is_on() && tracer.is_none() {
            return;
        }
        let req = session.req_header();
        let latency = ctx.start.elapsed();
        let end = SystemTime::now();
        let upstream_error = e.is_some_and(|e| *e.esource() == ErrorSource::Upstream);
        let outcome = classify(status, ctx.blocked_by.is_some(), upstream_error);
        // Only spans and access-log lines name the upstream: copied only for them, from
        // the target's `Host` value (its `host:port`, made when the pool was built).
        let upstream = |ctx: &Ctx| match (ctx.pool.as_ref(), ctx.target) {
            (Some(pool), Some(t)) => pool.host(t).to_str().ok().map(str::to_owned),
            _ => None,
        };
        let ids = *ctx.trace.get_or_insert_with(|| {
            TraceIds::from_incoming(req.headers.get(&TRACEPARENT).map(|v| v.as_bytes()))
        });
        if let Some(tracer) = tracer {
            export_span(
                tracer,
                &SpanInfo {
                    ids,
                    start: end.checked_sub(latency).unwrap_or(end),
                    end,
                    method: req.method.as_str(),
                    path: req.uri.path(),
                    status,
                    outcome,
                    blocked_by: ctx.blocked_by,
                    api: ctx.req.api_id.as_deref(),
                    operation: ctx.req.operation_id.as_deref(),
                    product: ctx.req.product_id.as_deref(),
                    subscription: ctx.req.subscription_id.as_deref(),
                    request_id: ctx.req.request_id.as_str(),
                    upstream: upstream(ctx),
                    client_ip: ctx.req.client_ip,
                    error: e.map(|e| e.etype().as_str()),
                },
            );
        }
        if !meter.is_on() {
            return;
        }
        let access = meter.access_log().then(|| {
            let upstream = upstream(ctx);
            Box::new(AccessFields {
                request_id: ctx.req.request_id.as_str().to_owned(),
                method: req.method.as_str().to_owned(),
                path: req.uri.path().to_owned(),
                trace_id: Some(ids.trace_id_hex()),
                upstream,
                error: e.map(|e| e.etype().as_str()),
            })
        });
        use tollgate_policies::cache::CacheOutcome;
        meter.record(Event {
            at_ms: unix_ms(end),
            product: ctx.req.product_id.take(),
            api: ctx.req.api_id.take(),
            operation: ctx.req.operation_id.take(),
            subscription: ctx.req.subscription_id.take(),
            status,
            outcome,
            blocked_by: ctx.blocked_by,
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            latency_us: latency.as_micros() as u64,
            upstream_latency_us: ctx.upstream_us,
            upstream_attempts: ctx.attempts,
            cache_hit: match ctx.req.cache.outcome() {
                CacheOutcome::Hit => Some(true),
                CacheOutcome::Miss => Some(false),
                CacheOutcome::None => None,
            },
            client_ip: ctx.req.client_ip,
            access,
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn forwarded_for_values_match_the_display_form() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.199",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let addr: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(super::ip_value(addr).to_str().unwrap(), addr.to_string());
        }
    }
}
