//! Response caching: the `cache-lookup` (inbound) and `cache-store` (outbound) policies,
//! the shared in-memory [`ResponseCache`], and the per-request [`CacheCtx`] the gateway
//! core drives.
//!
//! The flow of one request:
//!
//! 1. `cache-lookup` (inbound) computes the key (the `key` module explains what is in it) and asks
//!    the cache. A fresh entry whose `Vary` values fit is a **hit**: it is left in the
//!    context and the core answers with it at once ([`CacheCtx::take_hit`]): later
//!    inbound policies and the upstream are skipped, the outbound section runs on a copy of
//!    the stored head exactly as on an upstream answer, `Age` is added, and a conditional
//!    request whose validators match is answered 304.
//! 2. Otherwise it is a **miss**. The first `GET` for a key becomes the key's *filler*; a
//!    request for the same key while it fills waits ([`crate::Flow::Wait`], bounded by the
//!    upstream timeout) and then looks up again: usually a hit. So concurrent misses make
//!    one upstream call.
//! 3. On the filler's answer head, the core keeps a copy of the upstream's head
//!    ([`CacheCtx::capture_head`]) before the outbound section runs; `cache-store` decides
//!    whether the answer may be stored and for how long (the `rules` module); after the section the
//!    core drops the fill when nothing will be stored ([`CacheCtx::after_outbound`]), which
//!    wakes the waiters at once.
//! 4. The body is copied as it streams to the client ([`on_body`], bounded by the largest
//!    entry size) and stored at its end; then the waiters wake and hit.
//!
//! The stored head is the upstream's own (hop-by-hop headers, `Content-Length` and `Age`
//! removed): outbound policies run again on every hit, so a hit looks like a miss plus
//! `Age`, also after a config swap changed the outbound section.

mod key;
mod rules;
mod store;

use crate::{Flow, Policy, RequestCtx};
use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT_ENCODING, AGE, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH,
    TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderName, Method};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use key::CacheKey;
pub use store::{
    vary_of, vary_value, wait_for_fill, CacheStats, Entry, FillGuard, Lookup, LookupMode,
    PurgeFilter, ResponseCache, DEFAULT_MAX_BYTES,
};

/// How long a request waits for another request filling the same entry when the core did
/// not say (it sets the API's upstream timeout).
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// How the cache treated a request (for analytics and the access log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No `cache-lookup` ran (or it did not apply: another method, `no-store`).
    #[default]
    None,
    /// Answered from the cache.
    Hit,
    /// Looked up, not answered from the cache: went upstream.
    Miss,
}

impl CacheOutcome {
    /// `-`, `hit` or `miss`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::None => "-",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

/// The cache's per-request state, in [`RequestCtx::cache`].
#[derive(Default)]
pub struct CacheCtx {
    key: Option<CacheKey>,
    outcome: CacheOutcome,
    hit: Option<Arc<Entry>>,
    /// Set while this request fills its key; dropped when nothing will be stored.
    fill: Option<FillGuard>,
    cache: Option<Arc<ResponseCache>>,
    /// `cache-lookup` asked to wait; its next call looks up again without waiting.
    waiting: bool,
    authorized: bool,
    wait_limit: Option<Duration>,
    /// Set by `cache-store`: the answer may be stored for this long.
    ttl: Option<Duration>,
    /// Boxed: most requests fill nothing, and this context lives in every request's state.
    head: Option<Box<ResponseHeader>>,
    vary: Vec<(HeaderName, Option<Vec<u8>>)>,
    body: BytesMut,
}

impl std::fmt::Debug for CacheCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the head or the body being copied.
        f.debug_struct("CacheCtx")
            .field("key", &self.key)
            .field("outcome", &self.outcome)
            .field("hit", &self.hit.is_some())
            .field("fill", &self.fill)
            .field("ttl", &self.ttl)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl CacheCtx {
    /// How the cache treated this request.
    pub fn outcome(&self) -> CacheOutcome {
        self.outcome
    }

    /// The longest wait for another request filling the same entry (the core sets the
    /// API's upstream timeout; default 30 s).
    pub fn set_wait_limit(&mut self, limit: Duration) {
        self.wait_limit = Some(limit);
    }

    /// Whether `cache-lookup` found an entry the core should answer with now.
    pub fn has_hit(&self) -> bool {
        self.hit.is_some()
    }

    /// The entry to answer with (once).
    pub fn take_hit(&mut self) -> Option<Arc<Entry>> {
        self.hit.take()
    }

    /// Whether this request fills an entry and still may store it (the core copies the
    /// answer only then).
    pub fn filling(&self) -> bool {
        self.fill.is_some()
    }

    /// Give up filling: nothing will be stored; waiters wake now.
    fn abandon(&mut self) {
        self.fill = None;
        self.head = None;
        self.ttl = None;
        self.body = BytesMut::new();
    }

    /// Answer head phase, before the outbound section: keep the upstream's head when this
    /// request fills an entry (an answer announcing a body over the entry limit is not
    /// kept, and the fill ends).
    pub fn capture_head(&mut self, resp: &ResponseHeader) {
        if self.fill.is_none() || self.head.is_some() {
            return;
        }
        let max = self.cache.as_ref().map_or(0, |c| c.max_entry_bytes());
        let declared = resp
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) || resp.status != http::StatusCode::OK {
            self.abandon();
            return;
        }
        if let Some(n) = declared {
            // At most the entry limit (checked above).
            self.body.reserve(n as usize);
        }
        self.head = Some(Box::new(resp.clone()));
    }

    /// After the outbound section: the fill goes on only when `cache-store` said the answer
    /// may be stored and no policy replaced it. `req` is the request head (for the `Vary`
    /// values the entry keeps).
    pub fn after_outbound(&mut self, req: &RequestHeader, replaced: bool) {
        if self.fill.is_none() {
            return;
        }
        let Some(head) = self.head.as_ref() else {
            self.abandon();
            return;
        };
        if replaced || self.ttl.is_none() {
            self.abandon();
            return;
        }
        let Ok(mut names) = rules::vary_names(&head.headers) else {
            self.abandon();
            return;
        };
        // An encoded body only suits clients that accept that encoding.
        if head.headers.contains_key(CONTENT_ENCODING) && !names.contains(&ACCEPT_ENCODING) {
            names.push(ACCEPT_ENCODING);
        }
        self.vary = vary_of(&req.headers, &names);
    }
}

/// Answer body phase: copy the body of an answer being stored, and store it at its end
/// (then the waiters wake). Over the entry limit, the copy is dropped and nothing stored.
pub fn on_body(ctx: &mut RequestCtx, chunk: Option<&Bytes>, end_of_stream: bool) {
    let c = &mut ctx.cache;
    if c.fill.is_none() || c.head.is_none() {
        return;
    }
    let Some(cache) = c.cache.clone() else {
        return;
    };
    if let Some(chunk) = chunk {
        if (c.body.len() + chunk.len()) as u64 > cache.max_entry_bytes() {
            c.abandon();
            return;
        }
        c.body.extend_from_slice(chunk);
    }
    if !end_of_stream {
        return;
    }
    let (Some(head), Some(ttl), Some(fill)) = (c.head.take(), c.ttl.take(), c.fill.take()) else {
        return;
    };
    let body = std::mem::take(&mut c.body).freeze();
    let initial_age = rules::upstream_age(&head.headers);
    let entry = Entry::new(
        stored_head(*head),
        body,
        ttl,
        initial_age,
        std::mem::take(&mut c.vary),
        ctx.api_id.clone(),
        ctx.operation_id.clone(),
        ctx.product_id.clone(),
    );
    cache.insert(fill.key(), entry);
    // The fill ends after the entry is in: waiters look up again and hit.
    drop(fill);
}

/// The head to keep: the upstream's, without hop-by-hop headers, framing and `Age` (kept
/// apart as the entry's initial age).
fn stored_head(mut head: ResponseHeader) -> ResponseHeader {
    let named: Vec<HeaderName> = head
        .headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(crate::connection_names)
        .collect();
    for n in &named {
        head.remove_header(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        head.remove_header(n);
    }
    head.remove_header(&TRANSFER_ENCODING);
    head.remove_header(&CONTENT_LENGTH);
    head.remove_header(&AGE);
    head
}

/// The head of a hit: the stored head with `Age`.
pub fn hit_head(entry: &Entry, now: Instant) -> ResponseHeader {
    let mut head = entry.head.clone();
    // A number is always a valid header value.
    let _ = head.insert_header(AGE, entry.age(now));
    head
}

/// Whether the conditional request with `request` headers is answered 304 by an answer
/// with `answer` headers (`If-None-Match`, weak comparison, `*`; else `If-Modified-Since`
/// against `Last-Modified`).
pub fn not_modified(request: &HeaderMap, answer: &HeaderMap) -> bool {
    rules::not_modified(request, answer)
}

/// The 304 standing for the 200 `full`: status 304 with the headers RFC 9110 §15.4.5 keeps
/// (`Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires`, `Vary`,
/// `Last-Modified`, `Age`).
pub fn not_modified_head(full: &ResponseHeader) -> ResponseHeader {
    let mut out = full.clone();
    let drop: Vec<HeaderName> = out
        .headers
        .keys()
        .filter(|n| !rules::kept_on_304(n))
        .cloned()
        .collect();
    for n in drop {
        out.remove_header(&n);
    }
    // 304 is a valid status.
    let _ = out.set_status(http::StatusCode::NOT_MODIFIED);
    out
}

/// The runtime policy of a `cache-lookup` or `cache-store` definition sharing `cache`;
/// `None` for other kinds.
pub(crate) fn build(
    def: &tollgate_config::PolicyDef,
    cache: &Arc<ResponseCache>,
) -> Option<Arc<dyn Policy>> {
    use tollgate_config::PolicyDef;
    match def {
        PolicyDef::CacheLookup(d) => Some(Arc::new(CacheLookup::new(d, cache.clone()))),
        PolicyDef::CacheStore {
            duration,
            allow_private,
        } => Some(Arc::new(CacheStore::new(*duration, *allow_private))),
        _ => None,
    }
}

/// `cache-lookup`: see the module docs.
#[derive(Debug)]
pub(crate) struct CacheLookup {
    cache: Arc<ResponseCache>,
    spec: key::KeySpec,
}

impl CacheLookup {
    pub(crate) fn new(
        def: &tollgate_config::model::kinds::CacheLookup,
        cache: Arc<ResponseCache>,
    ) -> CacheLookup {
        CacheLookup {
            cache,
            spec: key::KeySpec::new(def),
        }
    }
}

impl Policy for CacheLookup {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let get = req.method == Method::GET;
        if !get && req.method != Method::HEAD {
            return Flow::Continue;
        }
        let waited = std::mem::take(&mut ctx.cache.waiting);
        if ctx.cache.key.is_some() && !waited {
            // A second `cache-lookup` in the chain: the first one decided.
            return Flow::Continue;
        }
        let rules = rules::request_rules(&req.headers);
        if rules.bypass {
            return Flow::Continue;
        }
        let key = match ctx.cache.key {
            Some(k) => k,
            None => {
                let k = key::compute(&self.spec, req, ctx);
                ctx.cache.key = Some(k);
                k
            }
        };
        let c = &mut ctx.cache;
        c.authorized = req.headers.contains_key(AUTHORIZATION);
        let mode = LookupMode {
            use_entry: !rules.revalidate,
            may_wait: !waited,
            may_fill: get,
        };
        match self.cache.lookup(key, &req.headers, mode) {
            Lookup::Hit(e) => {
                c.outcome = CacheOutcome::Hit;
                c.hit = Some(e);
            }
            Lookup::Fill(guard) => {
                c.outcome = CacheOutcome::Miss;
                c.fill = Some(guard);
                c.cache = Some(self.cache.clone());
            }
            Lookup::Miss => c.outcome = CacheOutcome::Miss,
            Lookup::Wait(rx) => {
                c.waiting = true;
                let limit = c.wait_limit.unwrap_or(DEFAULT_WAIT);
                return Flow::Wait(Box::pin(wait_for_fill(rx, limit)));
            }
        }
        Flow::Continue
    }
}

/// `cache-store`: decides, on the answer head, whether the request's fill may be stored
/// and for how long (see [`rules`]).
#[derive(Debug)]
pub(crate) struct CacheStore {
    duration: Duration,
    allow_private: bool,
}

impl CacheStore {
    pub(crate) fn new(duration: Duration, allow_private: bool) -> CacheStore {
        CacheStore {
            duration,
            allow_private,
        }
    }
}

impl Policy for CacheStore {
    fn outbound(&self, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Flow {
        let c = &mut ctx.cache;
        if c.fill.is_none() || c.ttl.is_some() {
            return Flow::Continue;
        }
        match rules::storable(
            resp.status,
            &resp.headers,
            c.authorized,
            self.allow_private,
            self.duration,
            SystemTime::now(),
        ) {
            Ok(ttl) => c.ttl = Some(ttl),
            Err(why) => {
                tracing::debug!(?why, "answer not stored");
                c.abandon();
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::req;
    use tollgate_config::model::kinds;

    fn lookup(cache: &Arc<ResponseCache>) -> CacheLookup {
        CacheLookup::new(&kinds::CacheLookup::default(), cache.clone())
    }

    fn ctx() -> RequestCtx {
        RequestCtx {
            api_id: Some("a".into()),
            operation_id: Some("o".into()),
            upstream_path: "/x".into(),
            ..RequestCtx::default()
        }
    }

    fn answer(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    /// One request through lookup, store and the core's hooks.
    fn miss_then_store(
        cache: &Arc<ResponseCache>,
        request: &mut RequestHeader,
        resp: &mut ResponseHeader,
        body: &[u8],
        store: &CacheStore,
    ) -> RequestCtx {
        let mut c = ctx();
        assert!(matches!(
            lookup(cache).inbound(request, &mut c),
            Flow::Continue
        ));
        c.cache.capture_head(resp);
        store.outbound(resp, &mut c);
        c.cache.after_outbound(request, false);
        on_body(&mut c, Some(&Bytes::copy_from_slice(body)), false);
        on_body(&mut c, None, true);
        c
    }

    #[test]
    fn a_stored_answer_is_a_hit_with_age_and_without_framing() {
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let store = CacheStore::new(Duration::from_secs(60), false);
        let mut r = req("GET", "/x", &[("host", "h")]);
        let mut resp = answer(&[
            ("content-length", "5"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("etag", "\"v1\""),
            ("age", "3"),
        ]);
        let c = miss_then_store(&cache, &mut r, &mut resp, b"hello", &store);
        assert_eq!(c.cache.outcome(), CacheOutcome::Miss);
        assert!(!c.cache.filling());
        let mut c2 = ctx();
        assert!(matches!(
            lookup(&cache).inbound(&mut r, &mut c2),
            Flow::Continue
        ));
        assert_eq!(c2.cache.outcome(), CacheOutcome::Hit);
        let e = c2.cache.take_hit().unwrap();
        assert_eq!(&e.body[..], b"hello");
        let head = hit_head(&e, Instant::now());
        assert!(head.headers.get("content-length").is_none());
        assert!(head.headers.get("x-hop").is_none());
        assert!(head.headers.get("connection").is_none());
        assert_eq!(head.headers["age"], "3");
        assert_eq!(head.headers["etag"], "\"v1\"");
        let nm = not_modified_head(&head);
        assert_eq!(nm.status, 304);
        assert_eq!(nm.headers["etag"], "\"v1\"");
        // HEAD is served from the GET entry.
        let mut h = req("HEAD", "/x", &[("host", "h")]);
        let mut c3 = ctx();
        lookup(&cache).inbound(&mut h, &mut c3);
        assert!(c3.cache.has_hit());
    }

    #[test]
    fn unstorable_answers_release_the_fill() {
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let store = CacheStore::new(Duration::from_secs(60), false);
        let mut r = req("GET", "/x", &[("host", "h")]);
        let mut resp = answer(&[("set-cookie", "a=b")]);
        let mut c = ctx();
        lookup(&cache).inbound(&mut r, &mut c);
        assert!(c.cache.filling());
        c.cache.capture_head(&resp);
        store.outbound(&mut resp, &mut c);
        assert!(!c.cache.filling());
        // A request with Authorization is not stored without allow_private.
        let mut r = req("GET", "/x", &[("host", "h"), ("authorization", "Bearer x")]);
        let c = miss_then_store(&cache, &mut r, &mut answer(&[]), b"x", &store);
        assert!(!c.cache.filling());
        assert_eq!(cache.stats().stores, 0);
        let private = CacheStore::new(Duration::from_secs(60), true);
        miss_then_store(&cache, &mut r, &mut answer(&[]), b"x", &private);
        assert_eq!(cache.stats().stores, 1);
        // POST is not looked up.
        let mut p = req("POST", "/x", &[("host", "h")]);
        let mut c = ctx();
        lookup(&cache).inbound(&mut p, &mut c);
        assert_eq!(c.cache.outcome(), CacheOutcome::None);
        // No cache-store in the chain: the fill ends after the outbound section.
        let mut r = req("GET", "/y", &[("host", "h")]);
        let mut c = ctx();
        c.upstream_path = "/y".into();
        lookup(&cache).inbound(&mut r, &mut c);
        c.cache.capture_head(&answer(&[]));
        c.cache.after_outbound(&r, false);
        assert!(!c.cache.filling());
    }

    #[test]
    fn bodies_over_the_limit_are_not_stored() {
        let cache = Arc::new(ResponseCache::new(64 * 1024));
        let store = CacheStore::new(Duration::from_secs(60), false);
        let mut r = req("GET", "/x", &[("host", "h")]);
        let big = vec![b'x'; 9 * 1024];
        let c = miss_then_store(&cache, &mut r, &mut answer(&[]), &big, &store);
        assert!(!c.cache.filling());
        assert_eq!(cache.stats().stores, 0);
    }

    #[test]
    fn encoded_bodies_vary_on_accept_encoding() {
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let store = CacheStore::new(Duration::from_secs(60), false);
        let mut r = req("GET", "/x", &[("host", "h"), ("accept-encoding", "gzip")]);
        miss_then_store(
            &cache,
            &mut r,
            &mut answer(&[("content-encoding", "gzip")]),
            b"zz",
            &store,
        );
        let mut c = ctx();
        lookup(&cache).inbound(&mut r, &mut c);
        assert!(c.cache.has_hit());
        let mut plain = req("GET", "/x", &[("host", "h")]);
        let mut c = ctx();
        lookup(&cache).inbound(&mut plain, &mut c);
        assert!(!c.cache.has_hit());
    }

    #[test]
    fn concurrent_miss_waits_then_hits() {
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let mut r = req("GET", "/x", &[("host", "h")]);
        let mut leader = ctx();
        lookup(&cache).inbound(&mut r, &mut leader);
        assert!(leader.cache.filling());
        let mut follower = ctx();
        let policy = lookup(&cache);
        let Flow::Wait(pending) = policy.inbound(&mut r, &mut follower) else {
            panic!("the second request waits");
        };
        let store = CacheStore::new(Duration::from_secs(60), false);
        let mut resp = answer(&[]);
        leader.cache.capture_head(&resp);
        store.outbound(&mut resp, &mut leader);
        leader.cache.after_outbound(&r, false);
        on_body(&mut leader, Some(&Bytes::from_static(b"x")), true);
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(pending);
        assert!(matches!(
            policy.inbound(&mut r, &mut follower),
            Flow::Continue
        ));
        assert_eq!(follower.cache.outcome(), CacheOutcome::Hit);
    }
}
