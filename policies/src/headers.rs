//! `set-header`: set, append or remove a request header (inbound) or a response header
//! (outbound).

use crate::simple::{wire_name, HeaderTemplate};
use crate::{Answer, Flow, Policy, RequestCtx, TemplateView};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use tollgate_config::{ExistsAction, SetDef};

/// `set-header`. One value serves every section; the section it is placed in decides which
/// method the gateway calls:
///
/// - `inbound` edits the request head; the value is rendered through [`TemplateView`], so
///   `{request.header.NAME}` sees the head as earlier policies left it.
/// - `outbound` edits the response head. The request head is gone by then, so the value is
///   rendered against the context alone: `{request.header.NAME}` renders as empty there
///   (every other variable works as inbound).
/// - `on_error` cannot edit the answer itself; it adds to (or, for `delete`, removes from)
///   the context's answer headers, which the gateway puts on the error answer.
///
/// `exists_action`: `override` replaces every value, `skip` sets only when absent, `append`
/// adds one more value, `delete` removes the header. A value that renders into something that
/// is not a valid header value (e.g. a line break taken from a claim) is dropped: the head is
/// left as it was.
#[derive(Debug)]
pub(crate) struct SetHeader {
    name: HeaderName,
    /// The spelling written on the wire (computed once).
    wire: Bytes,
    value: Option<HeaderTemplate>,
    action: ExistsAction,
}

impl SetHeader {
    /// Prepare the policy.
    pub(crate) fn new(def: &SetDef<HeaderName>) -> SetHeader {
        SetHeader {
            wire: wire_name(&def.name),
            name: def.name.clone(),
            value: def.value.as_ref().map(HeaderTemplate::new),
            action: def.exists_action,
        }
    }

    /// Apply the action to one head; `render` turns the value template into a value, given
    /// the head as it is (edits go through the head's own methods, which keep its
    /// header-name case map in step).
    fn apply<H: HeadEdit>(
        &self,
        head: &mut H,
        render: impl FnOnce(&H, &HeaderTemplate) -> Option<HeaderValue>,
    ) {
        if self.action == ExistsAction::Delete {
            head.remove(&self.name);
            return;
        }
        if self.action == ExistsAction::Skip && head.map().contains_key(&self.name) {
            return;
        }
        let Some(value) = self.value.as_ref().and_then(|v| render(head, v)) else {
            return;
        };
        match self.action {
            ExistsAction::Append => head.append(self.wire.clone(), value),
            _ => head.insert(self.wire.clone(), value),
        }
    }
}

/// The header edits a request head and a response head have in common.
trait HeadEdit {
    fn map(&self) -> &HeaderMap;
    fn insert(&mut self, name: Bytes, value: HeaderValue);
    fn append(&mut self, name: Bytes, value: HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

impl HeadEdit for RequestHeader {
    fn map(&self) -> &HeaderMap {
        &self.headers
    }
    fn insert(&mut self, name: Bytes, value: HeaderValue) {
        let _ = self.insert_header(name, value);
    }
    fn append(&mut self, name: Bytes, value: HeaderValue) {
        let _ = self.append_header(name, value);
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
}

impl HeadEdit for ResponseHeader {
    fn map(&self) -> &HeaderMap {
        &self.headers
    }
    fn insert(&mut self, name: Bytes, value: HeaderValue) {
        let _ = self.insert_header(name, value);
    }
    fn append(&mut self, name: Bytes, value: HeaderValue) {
        let _ = self.append_header(name, value);
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
}

impl Policy for SetHeader {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let ctx = &*ctx;
        self.apply(req, |req, v| v.value(&TemplateView { req, ctx }));
        Flow::Continue
    }

    fn outbound(&self, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Flow {
        self.apply(resp, |_, v| v.value(&*ctx));
        Flow::Continue
    }

    fn on_error(&self, answer: &Answer, ctx: &mut RequestCtx) -> Flow {
        let name = &self.name;
        match self.action {
            ExistsAction::Delete => ctx.answer_headers.retain(|(n, _)| n != name),
            ExistsAction::Skip
                if answer.headers.iter().any(|(n, _)| n == name)
                    || ctx.answer_headers.iter().any(|(n, _)| n == name) => {}
            action => {
                if let Some(value) = self.value.as_ref().and_then(|v| v.value(&*ctx)) {
                    if action == ExistsAction::Override {
                        ctx.answer_headers.retain(|(n, _)| n != name);
                    }
                    ctx.answer_headers.push((name.clone(), value));
                }
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::*;
    use http::StatusCode;

    fn policy(
        name: &'static str,
        value: Option<tollgate_config::Template>,
        a: ExistsAction,
    ) -> SetHeader {
        SetHeader::new(&SetDef {
            name: HeaderName::from_static(name),
            value,
            exists_action: a,
        })
    }

    fn run_in(p: &SetHeader, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = req("GET", "/x", headers);
        let mut c = ctx();
        assert!(matches!(p.inbound(&mut r, &mut c), Flow::Continue));
        r
    }

    #[test]
    fn inbound_exists_action_matrix() {
        use ExistsAction::*;
        // (action, existing values, expected values)
        let cases: &[(ExistsAction, &[&str], &[&str])] = &[
            (Override, &[], &["new"]),
            (Override, &["a", "b"], &["new"]),
            (Skip, &[], &["new"]),
            (Skip, &["a", "b"], &["a", "b"]),
            (Append, &[], &["new"]),
            (Append, &["a"], &["a", "new"]),
            (Delete, &[], &[]),
            (Delete, &["a", "b"], &[]),
        ];
        for (action, existing, expected) in cases {
            let value = (*action != Delete).then(|| lit("new"));
            let p = policy("x-test", value, *action);
            let hs: Vec<(&str, &str)> = existing.iter().map(|v| ("X-Test", *v)).collect();
            let r = run_in(&p, &hs);
            assert_eq!(
                values(&r.headers, "x-test"),
                *expected,
                "{action:?} {existing:?}"
            );
        }
    }

    #[test]
    fn outbound_exists_action_matrix() {
        use ExistsAction::*;
        let cases: &[(ExistsAction, &[&str], &[&str])] = &[
            (Override, &["a", "b"], &["new"]),
            (Skip, &[], &["new"]),
            (Skip, &["a"], &["a"]),
            (Append, &["a"], &["a", "new"]),
            (Delete, &["a", "b"], &[]),
        ];
        for (action, existing, expected) in cases {
            let value = (*action != Delete).then(|| lit("new"));
            let p = policy("x-test", value, *action);
            let mut resp = ResponseHeader::build(200, None).unwrap();
            for v in *existing {
                resp.append_header("X-Test", *v).unwrap();
            }
            let mut c = ctx();
            assert!(matches!(p.outbound(&mut resp, &mut c), Flow::Continue));
            assert_eq!(values(&resp.headers, "x-test"), *expected, "{action:?}");
        }
    }

    #[test]
    fn inbound_renders_templates_against_the_request() {
        let t = tpl("sub={subscription.id};h={request.header.X-In}");
        let p = policy("x-out", Some(t), ExistsAction::Override);
        let r = run_in(&p, &[("X-In", "hello")]);
        assert_eq!(values(&r.headers, "x-out"), ["sub=sub-1;h=hello"]);
    }

    #[test]
    fn outbound_renders_request_headers_as_empty() {
        let t = tpl("[{request.header.x-in}]{client.ip}");
        let p = policy("x-out", Some(t), ExistsAction::Override);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        let mut c = ctx();
        p.outbound(&mut resp, &mut c);
        assert_eq!(values(&resp.headers, "x-out"), ["[]10.1.2.3"]);
    }

    #[test]
    fn invalid_rendered_value_is_skipped() {
        let t = tpl("a{jwt.claim.evil}");
        let p = policy("x-out", Some(t), ExistsAction::Override);
        let mut r = req("GET", "/x", &[("X-Out", "keep")]);
        let mut c = ctx();
        let mut claims = serde_json::Map::new();
        claims.insert("evil".into(), "x\r\nSet-Cookie: a=b".into());
        c.claims = Some(claims);
        p.inbound(&mut r, &mut c);
        assert_eq!(values(&r.headers, "x-out"), ["keep"]);

        // An invalid literal is never set either.
        let p = policy("x-out", Some(lit("a\nb")), ExistsAction::Override);
        let r = run_in(&p, &[]);
        assert!(r.headers.get("x-out").is_none());
    }

    #[test]
    fn wire_case_is_title_case() {
        let p = policy("x-api-version", Some(lit("2")), ExistsAction::Override);
        let r = run_in(&p, &[]);
        let names: Vec<_> = r
            .case_header_iter()
            .map(|(n, _)| String::from_utf8(n.as_slice().to_vec()).unwrap())
            .collect();
        assert_eq!(names, ["X-Api-Version"]);
        let p = policy(
            "content-type",
            Some(lit("text/plain")),
            ExistsAction::Override,
        );
        let r = run_in(&p, &[]);
        let names: Vec<_> = r
            .case_header_iter()
            .map(|(n, _)| String::from_utf8(n.as_slice().to_vec()).unwrap())
            .collect();
        assert_eq!(names, ["Content-Type"]);
    }

    #[test]
    fn on_error_edits_answer_headers() {
        let answer = Answer::problem(StatusCode::FORBIDDEN, "x", "t", "d");
        let mut c = ctx();
        policy("x-a", Some(lit("1")), ExistsAction::Append).on_error(&answer, &mut c);
        policy("x-a", Some(lit("2")), ExistsAction::Append).on_error(&answer, &mut c);
        assert_eq!(c.answer_headers.len(), 2);
        policy("x-a", Some(lit("3")), ExistsAction::Override).on_error(&answer, &mut c);
        assert_eq!(
            c.answer_headers,
            [(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("3")
            )]
        );
        policy("x-a", Some(lit("4")), ExistsAction::Skip).on_error(&answer, &mut c);
        policy("content-type", Some(lit("x")), ExistsAction::Skip).on_error(&answer, &mut c);
        assert_eq!(c.answer_headers.len(), 1);
        policy("x-a", None, ExistsAction::Delete).on_error(&answer, &mut c);
        assert!(c.answer_headers.is_empty());
    }
}
