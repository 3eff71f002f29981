//! HTTP caching rules (RFC 9111, the parts a shared cache in front of an API needs): which
//! answers may be stored and for how long, what a client's own `Cache-Control` asks for,
//! and when a conditional request is answered 304.

use http::header::{
    AGE, CACHE_CONTROL, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
    PRAGMA, SET_COOKIE, VARY,
};
use http::{HeaderMap, StatusCode};
use std::time::{Duration, SystemTime};

/// The directives of `Cache-Control` that matter here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// `no-store`.
    pub(crate) no_store: bool,
    /// `no-cache` (with or without field names).
    pub(crate) no_cache: bool,
    /// `private` (with or without field names).
    pub(crate) private: bool,
    /// `max-age=N`.
    pub(crate) max_age: Option<u64>,
    /// `s-maxage=N`.
    pub(crate) s_maxage: Option<u64>,
}

/// Parses every `Cache-Control` line of `headers` (directive names are case-insensitive;
/// values may be quoted). A malformed delta-seconds counts as 0 (RFC 9111 §4.2.1: treat an
/// invalid freshness as stale).
pub(crate) fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for line in headers.get_all(CACHE_CONTROL) {
        let Ok(line) = line.to_str() else {
            // Not visible ASCII: be careful.
            d.no_store = true;
            continue;
        };
        for item in split_list(line) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (item, None),
            };
            let seconds = || value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("private") {
                d.private = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                d.max_age = Some(d.max_age.map_or(seconds(), |m| m.min(seconds())));
            } else if name.eq_ignore_ascii_case("s-maxage") {
                d.s_maxage = Some(d.s_maxage.map_or(seconds(), |m| m.min(seconds())));
            }
        }
    }
    d
}

/// The items of a comma-separated header value, trimmed, empty ones skipped. Commas inside
/// quoted strings do not split.
fn split_list(line: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&line[start..]);
    items.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

/// Why an answer is not stored (for debug logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    /// Not a 200.
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: no-cache` (this cache does not revalidate with the upstream).
    NoCache,
    /// `Cache-Control: private`, without `allow_private`.
    Private,
    /// The request carried `Authorization`, without `allow_private`.
    Authorized,
    /// The answer sets a cookie.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// Already stale (freshness lifetime 0, or `Age` beyond it).
    Stale,
}

/// Whether an answer with this status and head may be stored, and for how long: the
/// policy's `duration`, capped by the upstream's freshness (`s-maxage`, else `max-age`,
/// else `Expires` − `Date`) minus the `Age` it already had. `authorized`: the request
/// carried `Authorization`.
pub(crate) fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    authorized: bool,
    allow_private: bool,
    duration: Duration,
    now: SystemTime,
) -> Result<Duration, NotStored> {
    if status != StatusCode::OK {
        return Err(NotStored::Status);
    }
    let d = directives(headers);
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.no_cache {
        return Err(NotStored::NoCache);
    }
    if d.private && !allow_private {
        return Err(NotStored::Private);
    }
    if authorized && !allow_private {
        return Err(NotStored::Authorized);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(headers).is_err() {
        return Err(NotStored::VaryStar);
    }
    let freshness = match d.s_maxage.or(d.max_age) {
        Some(secs) => Some(Duration::from_secs(secs)),
        None => headers.get(EXPIRES).map(|e| {
            let expires = e
                .to_str()
                .ok()
                .and_then(|e| httpdate::parse_http_date(e).ok());
            let date = headers
                .get(DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .unwrap_or(now);
            // An invalid Expires (such as `0`) means already expired.
            expires
                .and_then(|e| e.duration_since(date).ok())
                .unwrap_or(Duration::ZERO)
        }),
    };
    let ttl = freshness.map_or(duration, |f| f.min(duration));
    let ttl = ttl.saturating_sub(Duration::from_secs(upstream_age(headers)));
    if ttl.is_zero() {
        return Err(NotStored::Stale);
    }
    Ok(ttl)
}

/// The upstream's `Age` in seconds (0 when absent or malformed).
pub(crate) fn upstream_age(headers: &HeaderMap) -> u64 {
    headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The header names of the answer's `Vary`, lower-cased; `Err(())` for `Vary: *`.
pub(crate) fn vary_names(headers: &HeaderMap) -> Result<Vec<http::HeaderName>, ()> {
    let mut names = Vec::new();
    for line in headers.get_all(VARY) {
        let Ok(line) = line.to_str() else {
            return Err(());
        };
        for item in split_list(line) {
            if item == "*" {
                return Err(());
            }
            match http::HeaderName::from_bytes(item.as_bytes()) {
                Ok(n) => {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                Err(_) => return Err(()),
            }
        }
    }
    Ok(names)
}

/// What the client's request asks of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestRules {
    /// Do not answer from the cache (`no-cache`, `max-age=0`, or `Pragma: no-cache` without
    /// `Cache-Control`): go upstream, and store the fresh answer.
    pub(crate) revalidate: bool,
    /// Neither answer from the cache nor store (`no-store`).
    pub(crate) bypass: bool,
}

/// Reads the request's `Cache-Control` (and `Pragma`).
pub(crate) fn request_rules(headers: &HeaderMap) -> RequestRules {
    if !headers.contains_key(CACHE_CONTROL) {
        let pragma = headers
            .get_all(PRAGMA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(split_list)
            .any(|i| i.eq_ignore_ascii_case("no-cache"));
        return RequestRules {
            revalidate: pragma,
            bypass: false,
        };
    }
    let d = directives(headers);
    RequestRules {
        revalidate: d.no_cache || d.max_age == Some(0),
        bypass: d.no_store,
    }
}

/// Whether a conditional request is answered 304 by an answer with `answer` headers
/// (RFC 9110 §13.2.2): `If-None-Match` (weak comparison, `*` matches) wins; without it,
/// `If-Modified-Since` against `Last-Modified`.
pub(crate) fn not_modified(request: &HeaderMap, answer: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let Some(etag) = answer.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let ours = opaque_tag(etag.trim());
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(split_list)
            .any(|t| t == "*" || opaque_tag(t) == ours);
    }
    let since = request
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    let modified = answer
        .get(LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    match (since, modified) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// An entity tag without its weakness indicator (weak comparison).
fn opaque_tag(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Headers a 304 keeps from the 200 it stands for (RFC 9110 §15.4.5), besides the
/// gateway's own (`X-Request-Id`, answer headers).
pub(crate) fn kept_on_304(name: &http::HeaderName) -> bool {
    use http::header::{CONTENT_LOCATION, EXPIRES as EXP};
    *name == CACHE_CONTROL
        || *name == CONTENT_LOCATION
        || *name == DATE
        || *name == ETAG
        || *name == EXP
        || *name == VARY
        || *name == LAST_MODIFIED
        || *name == AGE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const MIN: Duration = Duration::from_secs(60);

    fn check(list: &[(&str, &str)]) -> Result<Duration, NotStored> {
        storable(
            StatusCode::OK,
            &headers(list),
            false,
            false,
            MIN,
            SystemTime::now(),
        )
    }

    #[test]
    fn storability() {
        assert_eq!(check(&[]), Ok(MIN));
        assert_eq!(check(&[("cache-control", "public")]), Ok(MIN));
        assert_eq!(
            check(&[("cache-control", "public, no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(&[("cache-control", "No-Store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(&[("cache-control", "private")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(&[("cache-control", "private=\"x-a, x-b\"")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(&[("cache-control", "no-cache")]),
            Err(NotStored::NoCache)
        );
        assert_eq!(check(&[("set-cookie", "a=b")]), Err(NotStored::SetCookie));
        assert_eq!(check(&[("vary", "accept, *")]), Err(NotStored::VaryStar));
        assert_eq!(check(&[("vary", "Accept-Encoding")]), Ok(MIN));
        for status in [201, 203, 204, 206, 301, 304, 404, 500] {
            assert_eq!(
                storable(
                    StatusCode::from_u16(status).unwrap(),
                    &HeaderMap::new(),
                    false,
                    false,
                    MIN,
                    SystemTime::now()
                ),
                Err(NotStored::Status),
                "{status}"
            );
        }
        // Authorization and private answers need allow_private; cookies never pass.
        let now = SystemTime::now();
        let private = headers(&[("cache-control", "private")]);
        assert_eq!(
            storable(StatusCode::OK, &HeaderMap::new(), true, false, MIN, now),
            Err(NotStored::Authorized)
        );
        assert_eq!(
            storable(StatusCode::OK, &HeaderMap::new(), true, true, MIN, now),
            Ok(MIN)
        );
        assert_eq!(
            storable(StatusCode::OK, &private, false, true, MIN, now),
            Ok(MIN)
        );
        assert_eq!(
            storable(
                StatusCode::OK,
                &headers(&[("set-cookie", "a=b")]),
                true,
                true,
                MIN,
                now
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            storable(
                StatusCode::OK,
                &headers(&[("cache-control", "no-store")]),
                false,
                true,
                MIN,
                now
            ),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn ttl_is_capped_by_the_upstream() {
        assert_eq!(
            check(&[("cache-control", "max-age=10")]),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(check(&[("cache-control", "max-age=600")]), Ok(MIN));
        // s-maxage wins over max-age for a shared cache.
        assert_eq!(
            check(&[("cache-control", "max-age=5, s-maxage=20")]),
            Ok(Duration::from_secs(20))
        );
        assert_eq!(
            check(&[("cache-control", "max-age=0")]),
            Err(NotStored::Stale)
        );
        assert_eq!(
            check(&[("cache-control", "max-age=oops")]),
            Err(NotStored::Stale)
        );
        // Age already spent.
        assert_eq!(
            check(&[("cache-control", "max-age=30"), ("age", "25")]),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            check(&[("cache-control", "max-age=30"), ("age", "30")]),
            Err(NotStored::Stale)
        );
        // Expires − Date.
        assert_eq!(
            check(&[
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("expires", "Sun, 06 Nov 1994 08:49:57 GMT")
            ]),
            Ok(Duration::from_secs(20))
        );
        assert_eq!(check(&[("expires", "0")]), Err(NotStored::Stale));
        // max-age beats Expires.
        assert_eq!(
            check(&[("expires", "0"), ("cache-control", "max-age=7")]),
            Ok(Duration::from_secs(7))
        );
    }

    #[test]
    fn client_directives() {
        assert_eq!(request_rules(&HeaderMap::new()), RequestRules::default());
        assert!(request_rules(&headers(&[("cache-control", "no-cache")])).revalidate);
        assert!(request_rules(&headers(&[("cache-control", "max-age=0")])).revalidate);
        assert!(!request_rules(&headers(&[("cache-control", "max-age=5")])).revalidate);
        assert!(request_rules(&headers(&[("pragma", "no-cache")])).revalidate);
        assert!(
            !request_rules(&headers(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-age=5")
            ]))
            .revalidate
        );
        assert!(request_rules(&headers(&[("cache-control", "no-store")])).bypass);
    }

    #[test]
    fn conditionals() {
        let answer = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let nm = |v: &str| not_modified(&headers(&[("if-none-match", v)]), &answer);
        assert!(nm("\"v1\""));
        assert!(nm("W/\"v1\""));
        assert!(nm("\"v0\", \"v1\""));
        assert!(nm("*"));
        assert!(!nm("\"v2\""));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v1\"")]),
            &HeaderMap::new()
        ));
        let ims = |v: &str| not_modified(&headers(&[("if-modified-since", v)]), &answer);
        assert!(ims("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(ims("Mon, 07 Nov 1994 08:49:37 GMT"));
        assert!(!ims("Sat, 05 Nov 1994 08:49:37 GMT"));
        assert!(!ims("garbage"));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")
            ]),
            &answer
        ));
        assert!(!not_modified(&HeaderMap::new(), &answer));
    }

    #[test]
    fn vary_lists() {
        assert_eq!(
            vary_names(&headers(&[
                ("vary", "Accept-Encoding, accept"),
                ("vary", "Accept")
            ]))
            .unwrap(),
            vec![http::header::ACCEPT_ENCODING, http::header::ACCEPT]
        );
        assert!(vary_names(&headers(&[("vary", "*")])).is_err());
    }
}
