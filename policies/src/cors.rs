//! `cors`: answer CORS preflights and add CORS headers to answers.

use crate::{Answer, Flow, Policy, RequestCtx};
use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use tollgate_config::CorsDef;

const ANY: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// `cors` (inbound and outbound).
///
/// Inbound:
/// - A request without `Origin` is not a CORS request: it continues untouched.
/// - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
///   by the policy itself, never forwarded. When the origin, the method and every requested
///   header are allowed, the answer is `204` with `Access-Control-Allow-Origin` (the origin;
///   `*` when any origin is allowed and credentials are not), `Access-Control-Allow-Methods`,
///   `Access-Control-Allow-Headers` (the configured list; with `*` configured, the requested
///   list echoed), `Access-Control-Max-Age` (when set), `Access-Control-Allow-Credentials:
///   true` (when allowed) and `Vary: Origin`. Otherwise it is a `403` problem answer
///   without CORS headers (`urn:tollgate:problem:cors`, the detail says whether the origin,
///   the method or a header was refused): the browser fails the request either way, and a
///   403 makes the refusal visible in logs and analytics instead of a silent 204. The method
///   must be in `allowed_methods` (which defaults to GET, POST, HEAD); header names compare
///   case-insensitively.
/// - Any other request with an allowed `Origin` continues, and the policy pushes
///   `Access-Control-Allow-Origin`, `Access-Control-Allow-Credentials` (when allowed),
///   `Access-Control-Expose-Headers` (when configured) and `Vary: Origin` into
///   [`RequestCtx::answer_headers`], so they reach the client on the upstream's answer and on
///   error answers alike. A request from an origin not allowed, or without `Origin`,
///   continues without CORS headers, but with `Vary: Origin` whenever the grant names the
///   origin (not a literal `*`): a shared cache in front of the gateway must not hand an
///   answer made for one origin (or for none) to another.
///
/// Outbound (the policy placed in the `outbound` section): the same headers as for an
/// actual request are set on the response head directly, replacing CORS headers the
/// upstream sent (`Vary: Origin` is added unless the response already varies by `Origin`;
/// for another origin or none, only that `Vary`, as inbound). The origin is taken from
/// [`RequestCtx::origin`], since the request head is gone by then.
#[derive(Debug)]
pub(crate) struct Cors {
    origins: Vec<Box<[u8]>>,
    any_origin: bool,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    headers: Vec<HeaderName>,
    any_header: bool,
    /// `Access-Control-Allow-Headers` for the configured list (not `*`), when not empty.
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    /// The grant names the origin (it is not a literal `*`): every answer varies by it.
    varies: bool,
    max_age_value: Option<HeaderValue>,
    deny_origin: Answer,
    deny_method: Answer,
    deny_headers: Answer,
}

fn refusal(detail: &str) -> Answer {
    Answer::problem(
        StatusCode::FORBIDDEN,
        "cors",
        "CORS preflight refused",
        detail,
    )
}

impl Cors {
    /// Prepare the policy.
    pub(crate) fn new(def: &CorsDef) -> Cors {
        let headers_value = (!def.any_header && !def.allowed_headers.is_empty())
            .then(|| {
                let list: Vec<&str> = def.allowed_headers.iter().map(HeaderName::as_str).collect();
                HeaderValue::from_str(&list.join(", ")).ok()
            })
            .flatten();
        Cors {
            origins: def
                .allowed_origins
                .iter()
                .map(|o| o.as_bytes().to_vec().into_boxed_slice())
                .collect(),
            any_origin: def.any_origin,
            methods: def.allowed_methods.clone(),
            methods_value: def.allowed_methods_value.clone(),
            headers: def.allowed_headers.clone(),
            any_header: def.any_header,
            headers_value,
            expose_value: def.expose_headers_value.clone(),
            credentials: def.allow_credentials,
            varies: !def.any_origin || def.allow_credentials,
            max_age_value: def.max_age.map(|d| HeaderValue::from(d.as_secs())),
            deny_origin: refusal("The origin is not allowed to call this API."),
            deny_method: refusal("The requested method is not allowed for cross-origin calls."),
            deny_headers: refusal("A requested header is not allowed for cross-origin calls."),
        }
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.as_bytes()))
    }

    /// `Access-Control-Allow-Origin` for an allowed origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            ANY
        } else {
            origin.clone()
        }
    }

    /// The headers of an actual (non-preflight) answer to an allowed origin.
    fn actual_headers(&self, origin: &HeaderValue, mut emit: impl FnMut(HeaderName, HeaderValue)) {
        emit(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if self.credentials {
            emit(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(v) = &self.expose_value {
            emit(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if self.varies {
            emit(VARY, VARY_ORIGIN);
        }
    }

    fn preflight(&self, req: &RequestHeader, origin: &HeaderValue) -> Answer {
        if !self.origin_allowed(origin) {
            return self.deny_origin.clone();
        }
        let method_ok = req
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| {
                self.methods
                    .iter()
                    .any(|a| a.as_str().as_bytes() == m.as_bytes())
            });
        if !method_ok {
            return self.deny_method.clone();
        }
        let requested = req.headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS);
        let names = requested
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|n| !n.is_empty());
        let mut any_requested = false;
        for name in names {
            any_requested = true;
            if !self.any_header
                && !self
                    .headers
                    .iter()
                    .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
            {
                return self.deny_headers.clone();
            }
        }

        let mut headers = Vec::with_capacity(6);
        headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin)));
        if self.credentials {
            headers.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
        }
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone()));
        if self.any_header {
            if any_requested {
                let mut lines = requested.iter();
                let echoed = match (lines.next(), lines.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => {
                        let joined: Vec<&[u8]> =
                            requested.iter().map(HeaderValue::as_bytes).collect();
                        HeaderValue::from_maybe_shared(Bytes::from(joined.join(&b", "[..]))).ok()
                    }
                };
                if let Some(v) = echoed {
                    headers.push((ACCESS_CONTROL_ALLOW_HEADERS, v));
                }
            }
        } else if let Some(v) = &self.headers_value {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, v.clone()));
        }
        if let Some(v) = &self.max_age_value {
            headers.push((ACCESS_CONTROL_MAX_AGE, v.clone()));
        }
        headers.push((VARY, VARY_ORIGIN));
        Answer {
            status: StatusCode::NO_CONTENT,
            headers,
            body: Bytes::new(),
            is_error: false,
        }
    }
}

/// Whether a response's `Vary` already covers `Origin`.
fn varies_by_origin(resp: &ResponseHeader) -> bool {
    resp.headers.get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"origin"))
    })
}

impl Policy for Cors {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let origin = req.headers.get(ORIGIN);
        if let Some(origin) = origin {
            if req.method == Method::OPTIONS
                && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
            {
                return Flow::Respond(self.preflight(req, origin));
            }
        }
        match origin {
            Some(origin) if self.origin_allowed(origin) => {
                self.actual_headers(origin, |n, v| ctx.answer_headers.push((n, v)));
            }
            _ if self.varies => ctx.answer_headers.push((VARY, VARY_ORIGIN)),
            _ => {}
        }
        Flow::Continue
    }

    fn outbound(&self, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Flow {
        let skip_vary = varies_by_origin(resp);
        let Some(origin) = ctx.origin.as_ref().filter(|o| self.origin_allowed(o)) else {
            if self.varies && !skip_vary {
                let _ = resp.append_header(VARY, VARY_ORIGIN);
            }
            return Flow::Continue;
        };
        self.actual_headers(origin, |n, v| {
            if n == VARY {
                if !skip_vary {
                    let _ = resp.append_header(n, v);
                }
            } else {
                let _ = resp.insert_header(n, v);
            }
        });
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::*;
    use std::time::Duration;

    fn def() -> CorsDef {
        CorsDef {
            allowed_origins: vec!["https://app.example".into()],
            any_origin: false,
            allowed_methods: vec![Method::GET, Method::POST, Method::PUT],
            allowed_methods_value: HeaderValue::from_static("GET, POST, PUT"),
            allowed_headers: vec![
                HeaderName::from_static("content-type"),
                HeaderName::from_static("x-trace"),
            ],
            any_header: false,
            expose_headers_value: Some(HeaderValue::from_static("X-Rate-Left")),
            allow_credentials: false,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    fn inbound(p: &Cors, method: &str, headers: &[(&str, &str)]) -> (Flow, RequestCtx) {
        let mut r = req(method, "/x", headers);
        let mut c = ctx();
        let flow = p.inbound(&mut r, &mut c);
        (flow, c)
    }

    fn preflight(p: &Cors, origin: &str, method: &str, req_headers: Option<&str>) -> Answer {
        let mut hs = vec![
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
        ];
        if let Some(h) = req_headers {
            hs.push(("Access-Control-Request-Headers", h));
        }
        match inbound(p, "OPTIONS", &hs) {
            (Flow::Respond(a), c) => {
                assert!(c.answer_headers.is_empty());
                a
            }
            (Flow::Continue | Flow::Wait(_), _) => panic!("preflight not answered"),
        }
    }

    #[test]
    fn preflight_allowed() {
        let p = Cors::new(&def());
        let a = preflight(
            &p,
            "https://app.example",
            "PUT",
            Some("Content-Type, X-Trace"),
        );
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        assert!(!a.is_error);
        assert!(a.body.is_empty());
        let h = &a.headers;
        assert_eq!(
            header(h, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example")
        );
        assert_eq!(
            header(h, &ACCESS_CONTROL_ALLOW_METHODS),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            header(h, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("content-type, x-trace")
        );
        assert_eq!(header(h, &ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(header(h, &VARY), Some("Origin"));
        assert_eq!(header(h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        // Origins compare case-insensitively.
        let a = preflight(&p, "https://APP.example", "GET", None);
        assert_eq!(a.status, StatusCode::NO_CONTENT);
    }

    #[test]
    fn preflight_denied() {
        let p = Cors::new(&def());
        for (origin, method, hs, detail) in [
            ("https://evil.example", "GET", None, "origin"),
            ("https://app.example", "DELETE", None, "method"),
            (
                "https://app.example",
                "GET",
                Some("x-trace, x-secret"),
                "header",
            ),
        ] {
            let a = preflight(&p, origin, method, hs);
            assert_eq!(a.status, StatusCode::FORBIDDEN);
            assert!(a.is_error);
            assert!(header(&a.headers, &ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(body["type"], "urn:tollgate:problem:cors");
            assert!(body["detail"].as_str().unwrap().contains(detail), "{body}");
        }
    }

    #[test]
    fn preflight_any_origin_and_any_header() {
        let mut d = def();
        d.any_origin = true;
        d.allowed_origins.clear();
        d.any_header = true;
        d.allowed_headers.clear();
        let p = Cors::new(&d);
        let a = preflight(&p, "https://whoever.example", "POST", Some("X-One, x-two"));
        assert_eq!(header(&a.headers, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(
            header(&a.headers, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("X-One, x-two")
        );
        let a = preflight(&p, "https://whoever.example", "POST", None);
        assert_eq!(header(&a.headers, &ACCESS_CONTROL_ALLOW_HEADERS), None);
    }

    #[test]
    fn credentials_echo_the_origin() {
        let mut d = def();
        d.any_origin = true;
        d.allow_credentials = true;
        let p = Cors::new(&d);
        let a = preflight(&p, "https://whoever.example", "GET", None);
        assert_eq!(
            header(&a.headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://whoever.example")
        );
        assert_eq!(
            header(&a.headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        let (flow, c) = inbound(&p, "GET", &[("Origin", "https://whoever.example")]);
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(
            header(&c.answer_headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://whoever.example")
        );
        assert_eq!(
            header(&c.answer_headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
    }

    #[test]
    fn actual_request_headers() {
        let p = Cors::new(&def());
        let (flow, c) = inbound(&p, "GET", &[("Origin", "https://app.example")]);
        assert!(matches!(flow, Flow::Continue));
        let h = &c.answer_headers;
        assert_eq!(
            header(h, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example")
        );
        assert_eq!(
            header(h, &ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("X-Rate-Left")
        );
        assert_eq!(header(h, &VARY), Some("Origin"));
        assert_eq!(header(h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(h.len(), 3);

        // Not allowed, or not CORS at all: continue, no grant, but the answer varies by
        // the origin all the same.
        let (flow, c) = inbound(&p, "GET", &[("Origin", "https://evil.example")]);
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(c.answer_headers, [(VARY, VARY_ORIGIN)]);
        let (flow, c) = inbound(&p, "OPTIONS", &[]);
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(c.answer_headers, [(VARY, VARY_ORIGIN)]);
        // With `*` and no credentials the grant is the same for everyone: no Vary.
        let any = Cors::new(&CorsDef {
            any_origin: true,
            allowed_origins: vec![],
            ..def()
        });
        for headers in [&[][..], &[("Origin", "https://whoever.example")][..]] {
            let (_, c) = inbound(&any, "GET", headers);
            assert!(
                !c.answer_headers.iter().any(|(n, _)| n == VARY),
                "{headers:?}"
            );
        }
        // OPTIONS with Origin but no Access-Control-Request-Method is an actual request.
        let (flow, c) = inbound(&p, "OPTIONS", &[("Origin", "https://app.example")]);
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(c.answer_headers.len(), 3);
    }

    #[test]
    fn outbound_sets_headers_on_the_response() {
        let p = Cors::new(&def());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Access-Control-Allow-Origin", "*")
            .unwrap();
        resp.append_header("Vary", "Accept-Encoding").unwrap();
        let mut c = ctx();
        c.origin = Some(HeaderValue::from_static("https://app.example"));
        assert!(matches!(p.outbound(&mut resp, &mut c), Flow::Continue));
        assert_eq!(
            values(&resp.headers, "access-control-allow-origin"),
            ["https://app.example"]
        );
        assert_eq!(values(&resp.headers, "vary"), ["Accept-Encoding", "Origin"]);
        assert_eq!(
            values(&resp.headers, "access-control-expose-headers"),
            ["X-Rate-Left"]
        );

        // Already varying by origin: no second Vary.
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Vary", "origin").unwrap();
        p.outbound(&mut resp, &mut c);
        assert_eq!(values(&resp.headers, "vary"), ["origin"]);

        // Disallowed or missing origin: no grant, only `Vary: Origin` (once).
        for origin in [None, Some(HeaderValue::from_static("https://evil.example"))] {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            c.origin = origin;
            p.outbound(&mut resp, &mut c);
            assert_eq!(values(&resp.headers, "vary"), ["Origin"]);
            assert_eq!(resp.headers.len(), 1);
            p.outbound(&mut resp, &mut c);
            assert_eq!(values(&resp.headers, "vary"), ["Origin"]);
        }
    }
}
