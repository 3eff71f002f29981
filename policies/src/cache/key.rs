//! Cache keys: what makes two requests share an entry.
//!
//! A key is the SHA-256 (first 128 bits) of a length-prefixed list of fields, so no two
//! different field lists can be spelled the same way and nobody can aim two URLs at one
//! entry:
//!
//! 1. the method class (`GET`: a `HEAD` is served from the `GET` entry);
//! 2. the client's `Host` (lower-cased; the request's authority when there is no `Host`), so
//!    a different host never hits another host's entry;
//! 3. the API, operation and product ids (a product's chain may change what goes upstream);
//! 4. the path the upstream gets, relative to the API (normalized by the core, after the
//!    inbound policies before `cache-lookup`);
//! 5. the query, decoded: every parameter in a canonical order (by name, stable, so the
//!    order of one name's repeated values is kept), or only the `vary_by_query_parameter`
//!    names (each with every value it has, a missing name told apart from an empty value);
//! 6. the `vary_by_header` headers (each with all its values, trimmed);
//! 7. the subscription id when `vary_by_subscription` (no subscription is its own value).
//!
//! The subscription key is not part of the query any more when the key is computed (the
//! core removed it), and the subscription key header has been removed too.

use crate::RequestCtx;
use http::header::HOST;
use http::HeaderName;
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};

/// A 128-bit cache key (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub u128);

/// What varies the key besides the fixed fields (the `cache-lookup` definition, canonical).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeySpec {
    /// Headers, lower-cased, sorted, without duplicates.
    pub(crate) headers: Vec<HeaderName>,
    /// Query parameter names, sorted, without duplicates; `None`: all parameters.
    pub(crate) query: Option<Vec<String>>,
    /// Each subscription has its own entries.
    pub(crate) by_subscription: bool,
}

impl KeySpec {
    /// The canonical spec of a `cache-lookup` definition (header names were validated).
    pub(crate) fn new(def: &tollgate_config::model::kinds::CacheLookup) -> KeySpec {
        let mut headers: Vec<HeaderName> = def
            .vary_by_header
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        let query = def.vary_by_query_parameter.as_ref().map(|names| {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            names
        });
        KeySpec {
            headers,
            query,
            by_subscription: def.vary_by_subscription,
        }
    }
}

/// Length-prefixed fields into one hash.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn count(&mut self, tag: u8, n: usize) {
        self.0.update([tag]);
        self.0.update((n as u64).to_le_bytes());
    }

    fn finish(self) -> CacheKey {
        let digest = self.0.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        CacheKey(u128::from_be_bytes(first))
    }
}

/// The host a request names: its `Host` header, else the authority of an absolute-form
/// target (HTTP/2's `:authority`), lower-cased.
pub(crate) fn request_host(req: &RequestHeader) -> Vec<u8> {
    let raw = match req.headers.get(HOST) {
        Some(h) => h.as_bytes(),
        None => req
            .uri
            .authority()
            .map_or(&b""[..], |a| a.as_str().as_bytes()),
    };
    raw.to_ascii_lowercase()
}

/// The key of `req` (its head as `cache-lookup` sees it) in context `ctx`.
pub(crate) fn compute(spec: &KeySpec, req: &RequestHeader, ctx: &RequestCtx) -> CacheKey {
    let mut h = KeyHasher(Sha256::new());
    h.field(0, b"tollgate-cache-v1 GET");
    h.field(1, &request_host(req));
    h.field(2, ctx.api_id.as_deref().unwrap_or("").as_bytes());
    match ctx.operation_id.as_deref() {
        Some(op) => h.field(3, op.as_bytes()),
        None => h.count(4, 0),
    }
    match ctx.product_id.as_deref() {
        Some(p) => h.field(5, p.as_bytes()),
        None => h.count(6, 0),
    }
    h.field(7, ctx.upstream_path.as_bytes());
    let query = ctx.upstream_query.as_deref().unwrap_or("");
    let mut pairs: Vec<(String, String)> = crate::query_pairs(query)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    match &spec.query {
        None => {
            // Stable: the values of one name keep their order.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            h.count(8, pairs.len());
            for (k, v) in &pairs {
                h.field(9, k.as_bytes());
                h.field(10, v.as_bytes());
            }
        }
        Some(names) => {
            h.count(11, names.len());
            for name in names {
                h.field(12, name.as_bytes());
                let values: Vec<&str> = pairs
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .collect();
                h.count(13, values.len());
                for v in values {
                    h.field(14, v.as_bytes());
                }
            }
        }
    }
    h.count(15, spec.headers.len());
    for name in &spec.headers {
        h.field(16, name.as_str().as_bytes());
        let values = req.headers.get_all(name);
        h.count(17, values.iter().count());
        for v in values {
            h.field(18, v.as_bytes().trim_ascii());
        }
    }
    if spec.by_subscription {
        match ctx.subscription_id.as_deref() {
            Some(s) => h.field(19, s.as_bytes()),
            None => h.count(20, 0),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::req;
    use tollgate_config::model::kinds::CacheLookup;

    fn ctx(query: Option<&str>) -> RequestCtx {
        RequestCtx {
            api_id: Some("pets".into()),
            operation_id: Some("get-pet".into()),
            upstream_path: "/pets/1".into(),
            upstream_query: query.map(str::to_owned),
            ..RequestCtx::default()
        }
    }

    fn spec(headers: &[&str], query: Option<&[&str]>, by_sub: bool) -> KeySpec {
        KeySpec::new(&CacheLookup {
            vary_by_header: headers.iter().map(|s| s.to_string()).collect(),
            vary_by_query_parameter: query.map(|q| q.iter().map(|s| s.to_string()).collect()),
            vary_by_subscription: by_sub,
        })
    }

    fn key(spec: &KeySpec, headers: &[(&str, &str)], c: &RequestCtx) -> CacheKey {
        compute(spec, &req("GET", "/x", headers), c)
    }

    const HOST_A: (&str, &str) = ("host", "a.example");

    #[test]
    fn all_parameters_in_canonical_order() {
        let s = spec(&[], None, false);
        let k = |q| key(&s, &[HOST_A], &ctx(Some(q)));
        assert_eq!(k("a=1&b=2"), k("b=2&a=1"));
        // Decoded before comparing.
        assert_eq!(k("a=%31&b=2"), k("b=2&a=1"));
        assert_eq!(k("q=a+b"), k("q=a%20b"));
        // Values of one name keep their order; values matter.
        assert_ne!(k("a=1&a=2"), k("a=2&a=1"));
        assert_ne!(k("a=1"), k("a=2"));
        // No fusion of fields: `a=1&b=` is not `a=1b=`.
        assert_ne!(k("a=1&b="), k("a=1b="));
        // Form decoding: `a` and `a=` are the same parameter.
        assert_eq!(k("a="), k("a"));
        assert_eq!(k("a=1&&b=2"), k("a=1&b=2"));
        assert_ne!(k(""), k("x=1"));
        assert_eq!(k(""), key(&s, &[HOST_A], &ctx(None)));
    }

    #[test]
    fn only_the_named_parameters() {
        let s = spec(&[], Some(&["lang", "v"]), false);
        let k = |q| key(&s, &[HOST_A], &ctx(Some(q)));
        assert_eq!(k("lang=de&x=1"), k("x=2&lang=de"));
        assert_ne!(k("lang=de"), k("lang=fr"));
        assert_ne!(k("lang="), k("other=1"));
        assert_eq!(k("v=1&lang=de"), k("lang=de&v=1"));
        // Listed order does not matter.
        let s2 = spec(&[], Some(&["v", "lang", "v"]), false);
        assert_eq!(s, s2);
    }

    #[test]
    fn host_headers_subscription_and_ids_vary_the_key() {
        let s = spec(&["Accept-Language"], None, true);
        let base = ctx(Some("a=1"));
        let k0 = key(&s, &[HOST_A], &base);
        assert_eq!(k0, key(&s, &[("host", "A.Example")], &base));
        assert_ne!(k0, key(&s, &[("host", "b.example")], &base));
        assert_ne!(k0, key(&s, &[HOST_A, ("accept-language", "de")], &base));
        assert_eq!(
            key(&s, &[HOST_A, ("accept-language", "de")], &base),
            key(&s, &[HOST_A, ("Accept-Language", " de ")], &base)
        );
        let mut sub = ctx(Some("a=1"));
        sub.subscription_id = Some("s1".into());
        let k1 = key(&s, &[HOST_A], &sub);
        assert_ne!(k0, k1);
        sub.subscription_id = Some("s2".into());
        assert_ne!(k1, key(&s, &[HOST_A], &sub));
        // Without vary_by_subscription, subscriptions share entries.
        let plain = spec(&["accept-language"], None, false);
        assert_eq!(key(&plain, &[HOST_A], &sub), key(&plain, &[HOST_A], &base));
        let mut other = ctx(Some("a=1"));
        other.operation_id = None;
        assert_ne!(
            key(&plain, &[HOST_A], &other),
            key(&plain, &[HOST_A], &base)
        );
        other.product_id = Some("gold".into());
        let mut other2 = ctx(Some("a=1"));
        other2.operation_id = None;
        assert_ne!(
            key(&plain, &[HOST_A], &other),
            key(&plain, &[HOST_A], &other2)
        );
        let mut path = ctx(Some("a=1"));
        path.upstream_path = "/pets/2".into();
        assert_ne!(key(&plain, &[HOST_A], &path), key(&plain, &[HOST_A], &base));
    }

    #[test]
    fn absolute_form_uses_the_authority() {
        let s = spec(&[], None, false);
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        r.set_uri("http://A.example/x".parse().unwrap());
        assert_eq!(request_host(&r), b"a.example");
        assert_eq!(compute(&s, &r, &ctx(None)), key(&s, &[HOST_A], &ctx(None)));
    }
}
