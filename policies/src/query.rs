//! `set-query-parameter`, and the query-string helpers it shares with `rewrite-uri`.
//!
//! The upstream query ([`RequestCtx::upstream_query`]) is edited as raw text: parameters the
//! policy does not touch keep their position and their original encoding. Names are compared
//! after form decoding (`a%5B%5D` and `a[]` are the same name). New values are written
//! `application/x-www-form-urlencoded`-style: ASCII letters, digits and `*-._` as is, a space
//! as `+`, every other byte as `%XX`.

use crate::{decode_component, Flow, Policy, RequestCtx, TemplateView};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use tollgate_config::{ExistsAction, SetDef, Template};

/// Append `s` to `out`, form-encoded.
pub(crate) fn form_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// The name of one raw `name=value` query segment, decoded.
pub(crate) fn segment_name(segment: &str) -> Cow<'_, str> {
    decode_component(segment.split_once('=').map_or(segment, |(n, _)| n))
}

/// The non-empty `&`-separated segments of a raw query.
pub(crate) fn segments(q: &str) -> impl Iterator<Item = &str> {
    q.split('&').filter(|s| !s.is_empty())
}

/// Append `segment` to a query being built, with a `&` when needed.
pub(crate) fn push_segment(out: &mut String, segment: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(segment);
}

/// How the value of the parameter is produced.
#[derive(Debug)]
enum Value {
    /// No value (`delete`, or a definition without one: the policy then does nothing).
    None,
    /// Fixed: the whole encoded `name=value` segment, ready.
    Literal(String),
    /// Rendered per request, then encoded.
    Template(Template),
}

/// `set-query-parameter` (inbound only; in other sections it does nothing). Edits
/// [`RequestCtx::upstream_query`]: `override` replaces the first occurrence in place and
/// drops the others (or appends when absent), `skip` appends only when absent, `append` adds
/// one more occurrence at the end, `delete` removes every occurrence. The value template is
/// rendered through [`TemplateView`].
#[derive(Debug)]
pub(crate) struct SetQueryParameter {
    /// The name, decoded (for comparisons).
    name: String,
    /// The name, encoded, followed by `=`.
    prefix: String,
    value: Value,
    action: ExistsAction,
}

impl SetQueryParameter {
    /// Prepare the policy.
    pub(crate) fn new(def: &SetDef<String>) -> SetQueryParameter {
        let mut prefix = String::with_capacity(def.name.len() + 1);
        form_encode_into(&def.name, &mut prefix);
        prefix.push('=');
        let value = match (&def.value, def.exists_action) {
            (_, ExistsAction::Delete) | (None, _) => Value::None,
            (Some(t), _) => match t.as_literal() {
                Some(text) => {
                    let mut seg = prefix.clone();
                    form_encode_into(text, &mut seg);
                    Value::Literal(seg)
                }
                None => Value::Template(t.clone()),
            },
        };
        SetQueryParameter {
            name: def.name.clone(),
            prefix,
            value,
            action: def.exists_action,
        }
    }

    fn matches(&self, segment: &str) -> bool {
        segment_name(segment) == self.name.as_str()
    }

    fn present(&self, ctx: &RequestCtx) -> bool {
        ctx.upstream_query
            .as_deref()
            .is_some_and(|q| segments(q).any(|s| self.matches(s)))
    }
}

impl Policy for SetQueryParameter {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        if self.action == ExistsAction::Delete {
            if self.present(ctx) {
                let q = ctx.upstream_query.take().unwrap_or_default();
                let mut out = String::with_capacity(q.len());
                for s in segments(&q).filter(|s| !self.matches(s)) {
                    push_segment(&mut out, s);
                }
                ctx.upstream_query = (!out.is_empty()).then_some(out);
            }
            return Flow::Continue;
        }
        if self.action == ExistsAction::Skip && self.present(ctx) {
            return Flow::Continue;
        }
        let segment: Cow<'_, str> = match &self.value {
            Value::None => return Flow::Continue,
            Value::Literal(seg) => Cow::Borrowed(seg),
            Value::Template(t) => {
                let rendered = t.render(&TemplateView {
                    req: &*req,
                    ctx: &*ctx,
                });
                let mut seg = String::with_capacity(self.prefix.len() + rendered.len() + 8);
                seg.push_str(&self.prefix);
                form_encode_into(&rendered, &mut seg);
                Cow::Owned(seg)
            }
        };
        match (self.action, ctx.upstream_query.as_mut()) {
            (_, None) => ctx.upstream_query = Some(segment.into_owned()),
            (ExistsAction::Override, Some(q)) if segments(q).any(|s| self.matches(s)) => {
                let mut out = String::with_capacity(q.len() + segment.len());
                let mut placed = false;
                for s in segments(q) {
                    if !self.matches(s) {
                        push_segment(&mut out, s);
                    } else if !placed {
                        push_segment(&mut out, &segment);
                        placed = true;
                    }
                }
                *q = out;
            }
            (_, Some(q)) => {
                if q.is_empty() {
                    q.push_str(&segment);
                } else {
                    if !q.ends_with('&') {
                        q.push('&');
                    }
                    q.push_str(&segment);
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

    fn run(
        name: &str,
        value: Option<Template>,
        a: ExistsAction,
        q: Option<&str>,
    ) -> Option<String> {
        let p = SetQueryParameter::new(&SetDef {
            name: name.to_owned(),
            value,
            exists_action: a,
        });
        let mut r = req("GET", "/x", &[("X-In", "a b&c=d")]);
        let mut c = ctx();
        c.upstream_query = q.map(str::to_owned);
        assert!(matches!(p.inbound(&mut r, &mut c), Flow::Continue));
        c.upstream_query
    }

    #[test]
    fn exists_action_matrix() {
        use ExistsAction::*;
        let v = || Some(lit("new"));
        let q = Some("a=1&k=old&b=%20x&k=old2");
        // override: first occurrence replaced in place, the others dropped
        assert_eq!(
            run("k", v(), Override, q).as_deref(),
            Some("a=1&k=new&b=%20x")
        );
        assert_eq!(
            run("k", v(), Override, Some("a=1")).as_deref(),
            Some("a=1&k=new")
        );
        assert_eq!(run("k", v(), Override, None).as_deref(), Some("k=new"));
        // skip
        assert_eq!(run("k", v(), Skip, q).as_deref(), q);
        assert_eq!(
            run("k", v(), Skip, Some("a=1")).as_deref(),
            Some("a=1&k=new")
        );
        assert_eq!(run("k", v(), Skip, None).as_deref(), Some("k=new"));
        // append
        assert_eq!(
            run("k", v(), Append, q).as_deref(),
            Some("a=1&k=old&b=%20x&k=old2&k=new")
        );
        assert_eq!(run("k", v(), Append, None).as_deref(), Some("k=new"));
        // delete
        assert_eq!(run("k", None, Delete, q).as_deref(), Some("a=1&b=%20x"));
        assert_eq!(run("k", None, Delete, Some("k=1&k")), None);
        assert_eq!(
            run("k", None, Delete, Some("a=%41")).as_deref(),
            Some("a=%41")
        );
        assert_eq!(run("k", None, Delete, None), None);
    }

    #[test]
    fn names_compare_decoded() {
        use ExistsAction::*;
        assert_eq!(
            run("a[]", Some(lit("2")), Override, Some("a%5B%5D=1&z=0")).as_deref(),
            Some("a%5B%5D=2&z=0")
        );
        assert_eq!(
            run("a b", None, Delete, Some("a+b=1&a%20b=2&c=3")).as_deref(),
            Some("c=3")
        );
    }

    #[test]
    fn values_are_form_encoded() {
        use ExistsAction::*;
        assert_eq!(
            run("q", Some(lit("a b&c=d/é~")), Override, None).as_deref(),
            Some("q=a+b%26c%3Dd%2F%C3%A9%7E")
        );
        let t = tpl("h:{request.header.x-in}:{subscription.id}");
        assert_eq!(
            run("q", Some(t), Append, Some("x=1")).as_deref(),
            Some("x=1&q=h%3Aa+b%26c%3Dd%3Asub-1")
        );
        // The encoded value decodes back to the original.
        let q = run("q", Some(lit("a+b %25")), Override, None).unwrap();
        let c = RequestCtx {
            upstream_query: Some(q),
            ..RequestCtx::default()
        };
        assert_eq!(c.query_param("q").as_deref(), Some("a+b %25"));
    }

    #[test]
    fn request_query_template_sees_current_query() {
        let t = tpl("{request.query.a}");
        assert_eq!(
            run("b", Some(t), ExistsAction::Override, Some("a=x%20y")).as_deref(),
            Some("a=x%20y&b=x+y")
        );
    }
}
