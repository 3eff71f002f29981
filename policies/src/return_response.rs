//! `return-response` / `mock-response`: answer with a canned response.

use crate::simple::HeaderTemplate;
use crate::{body_from, status, Answer, Flow, Policy, RequestCtx, TemplateView};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use tollgate_config::{ReturnResponseDef, TemplateSource};

/// `return-response` and `mock-response`: stop the chain and answer with `status`,
/// `headers` and `body` (a success answer, `is_error: false`).
///
/// Works in every section: `inbound` (the upstream is never called), `outbound` and
/// `on_error` (the answer replaces the one about to be sent). Header values are templates:
/// inbound they see the request head ([`TemplateView`]); in the later sections they are
/// rendered against the context alone, where `{request.header.NAME}` is empty. A header whose
/// rendered value is not a valid header value is left out. When `headers` sets no
/// `Content-Type`, the definition's default content type is added. The body is converted
/// into [`Bytes`] once, when the policy is built; each answer shares it.
#[derive(Debug)]
pub(crate) struct ReturnResponse {
    status: StatusCode,
    /// The headers when none of them is a template (the common case): cloned per answer.
    fixed: Option<Vec<(HeaderName, HeaderValue)>>,
    /// Every header, for rendering (content type included).
    headers: Vec<(HeaderName, HeaderTemplate)>,
    body: Bytes,
}

impl ReturnResponse {
    /// Prepare the policy.
    pub(crate) fn new(def: &ReturnResponseDef) -> ReturnResponse {
        let mut headers: Vec<(HeaderName, HeaderTemplate)> = def
            .headers
            .iter()
            .map(|(n, t)| (n.clone(), HeaderTemplate::new(t)))
            .collect();
        if let Some(ct) = def.default_content_type {
            if !headers.iter().any(|(n, _)| n == CONTENT_TYPE) {
                if let Ok(v) = HeaderValue::from_str(ct) {
                    headers.push((CONTENT_TYPE, HeaderTemplate::Literal(v)));
                }
            }
        }
        let fixed = headers
            .iter()
            .map(|(n, t)| match t {
                HeaderTemplate::Literal(v) => Some(Some((n.clone(), v.clone()))),
                HeaderTemplate::Invalid => Some(None),
                HeaderTemplate::Template(_) => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|hs| hs.into_iter().flatten().collect());
        ReturnResponse {
            status: status(def.status),
            fixed,
            headers,
            body: body_from(&def.body),
        }
    }

    fn answer(&self, src: &dyn TemplateSource) -> Answer {
        let headers = match &self.fixed {
            Some(fixed) => fixed.clone(),
            None => self
                .headers
                .iter()
                .filter_map(|(n, t)| Some((n.clone(), t.value(src)?)))
                .collect(),
        };
        Answer {
            status: self.status,
            headers,
            body: self.body.clone(),
            is_error: false,
        }
    }
}

impl Policy for ReturnResponse {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        Flow::Respond(self.answer(&TemplateView {
            req: &*req,
            ctx: &*ctx,
        }))
    }

    fn outbound(&self, _resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Flow {
        Flow::Respond(self.answer(&*ctx))
    }

    fn on_error(&self, _answer: &Answer, ctx: &mut RequestCtx) -> Flow {
        Flow::Respond(self.answer(&*ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::*;
    use std::sync::Arc;
    use tollgate_config::Template;

    fn def(
        status: u16,
        headers: Vec<(&'static str, Template)>,
        body: &[u8],
        ct: Option<&'static str>,
    ) -> ReturnResponseDef {
        ReturnResponseDef {
            status,
            headers: headers
                .into_iter()
                .map(|(n, t)| (HeaderName::from_static(n), t))
                .collect(),
            body: Arc::from(body),
            default_content_type: ct,
        }
    }

    fn answer(p: &ReturnResponse) -> Answer {
        let mut r = req("GET", "/x", &[("X-In", "from-request")]);
        match p.inbound(&mut r, &mut ctx()) {
            Flow::Respond(a) => a,
            Flow::Continue | Flow::Wait(_) => panic!("no answer"),
        }
    }

    fn get<'a>(a: &'a Answer, name: &str) -> Vec<&'a str> {
        a.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn status_body_and_default_content_type() {
        let p = ReturnResponse::new(&def(
            201,
            vec![("x-mock", lit("yes"))],
            b"{\"a\":1}",
            Some("application/json"),
        ));
        let a = answer(&p);
        assert_eq!(a.status, StatusCode::CREATED);
        assert!(!a.is_error);
        assert_eq!(&a.body[..], b"{\"a\":1}");
        assert_eq!(get(&a, "content-type"), ["application/json"]);
        assert_eq!(get(&a, "x-mock"), ["yes"]);
        // The body is shared, not copied, between answers.
        let b = answer(&p);
        assert_eq!(a.body.as_ptr(), b.body.as_ptr());
    }

    #[test]
    fn configured_content_type_wins() {
        let p = ReturnResponse::new(&def(
            200,
            vec![("content-type", lit("text/html"))],
            b"<p>hi</p>",
            Some("text/plain; charset=utf-8"),
        ));
        assert_eq!(get(&answer(&p), "content-type"), ["text/html"]);
        let p = ReturnResponse::new(&def(204, vec![], b"", None));
        let a = answer(&p);
        assert!(a.headers.is_empty());
        assert!(a.body.is_empty());
        assert_eq!(a.status, StatusCode::NO_CONTENT);
    }

    #[test]
    fn header_templates_are_rendered() {
        let t = tpl("{request.header.x-in}/{subscription.id}");
        let bad = tpl("{jwt.claim.nl}");
        let p = ReturnResponse::new(&def(
            200,
            vec![("x-echo", t), ("x-bad", bad), ("x-fixed", lit("1"))],
            b"ok",
            Some("text/plain; charset=utf-8"),
        ));
        let a = answer(&p);
        assert_eq!(get(&a, "x-echo"), ["from-request/sub-1"]);
        assert_eq!(get(&a, "x-bad"), [""]);
        assert_eq!(get(&a, "x-fixed"), ["1"]);
        assert_eq!(get(&a, "content-type"), ["text/plain; charset=utf-8"]);

        // A value that is not a valid header value is left out.
        let mut c = ctx();
        let mut claims = serde_json::Map::new();
        claims.insert("nl".into(), "a\nb".into());
        c.claims = Some(claims);
        let Flow::Respond(a) = p.outbound(&mut ResponseHeader::build(502, None).unwrap(), &mut c)
        else {
            panic!("no answer");
        };
        assert!(get(&a, "x-bad").is_empty());
        // Outbound: request headers render as empty.
        assert_eq!(get(&a, "x-echo"), ["/sub-1"]);
    }

    #[test]
    fn on_error_replaces_the_answer() {
        let p = ReturnResponse::new(&def(
            503,
            vec![],
            b"down",
            Some("text/plain; charset=utf-8"),
        ));
        let err = Answer::problem(StatusCode::BAD_GATEWAY, "x", "t", "d");
        let Flow::Respond(a) = p.on_error(&err, &mut ctx()) else {
            panic!("no answer");
        };
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&a.body[..], b"down");
    }
}
