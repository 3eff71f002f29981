//! `rewrite-uri`: replace the upstream path (and query) with a rendered template.

use crate::query::{form_encode_into, push_segment, segment_name, segments};
use crate::{decode_component, Flow, Policy, RequestCtx, TemplateView};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pingora_http::RequestHeader;
use tollgate_config::{Part, RewriteUriDef, TemplateSource, Var};

/// Bytes that may not appear raw in a URI: encoded in the template's literal text (which
/// may already hold `%XX` escapes, kept as written).
const LITERAL: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// Bytes encoded in a variable's value substituted into the path, so that it stays within
/// one path segment: everything but RFC 3986 `pchar` (and `;`, which some servers read as
/// a path parameter).
const SEGMENT: &AsciiSet = &LITERAL
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b';');

/// A piece of the path or of a query name or value.
#[derive(Debug, Clone)]
enum Piece {
    /// Literal text, URI-safe already.
    Lit(String),
    /// A variable, encoded when substituted.
    Var(Var),
}

/// One `name=value` item of the template's query.
#[derive(Debug, Default)]
struct QueryItem {
    name: Vec<Piece>,
    /// `None` for a bare `name`.
    value: Option<Vec<Piece>>,
    /// The decoded name when it has no variable (compared with the original parameters).
    decoded_name: Option<String>,
}

/// `rewrite-uri` (inbound only; in other sections it does nothing).
///
/// The template stands for the upstream path *after the API prefix*: the gateway still
/// prepends the chosen target's base path (see [`RequestCtx::upstream_path`]). The policy
/// sets [`RequestCtx::upstream_path`] to the rendered path, which always starts with `/`.
/// A variable's value (`{id}` path parameters, decoded, and every other template variable)
/// is percent-encoded as one path segment when substituted (`a/b` becomes `a%2Fb`; a value
/// that is exactly `.` or `..` has its dots written `%2E` so it cannot climb a level);
/// literal text is kept as written, only bytes that may not appear in a URI are encoded.
///
/// The template may carry a query (`/v2/pets/{id}?format=json&lang={request.query.lang}`):
/// its values are form-encoded when substituted. With `copy_unmatched_params` (the default)
/// the upstream query is the template's parameters first, then the original ones whose names
/// the template does not set, in their order and raw encoding; without it, only the
/// template's. A template without `?` keeps the original query with `copy_unmatched_params`
/// and drops it without.
#[derive(Debug)]
pub(crate) struct RewriteUri {
    /// A `/` must be written before the first piece.
    leading_slash: bool,
    path: Vec<Piece>,
    /// `None`: the template has no `?`.
    query: Option<Vec<QueryItem>>,
    copy_unmatched: bool,
    /// Size of the path's literal text, to size the output once.
    path_hint: usize,
}

/// Append text to a piece list, merging adjacent literals.
fn push_lit(pieces: &mut Vec<Piece>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Piece::Lit(last)) = pieces.last_mut() {
        last.push_str(text);
    } else {
        pieces.push(Piece::Lit(text.to_owned()));
    }
}

/// Encode what may not appear in a URI in each literal.
fn sanitize(pieces: &mut [Piece]) {
    for p in pieces {
        if let Piece::Lit(s) = p {
            *s = utf8_percent_encode(s, LITERAL).to_string();
        }
    }
}

impl QueryItem {
    /// The piece list that text and variables currently go to.
    fn target(&mut self) -> &mut Vec<Piece> {
        self.value.as_mut().unwrap_or(&mut self.name)
    }

    /// Add literal query text that holds no `&`.
    fn push_text(&mut self, text: &str) {
        match (self.value.is_none(), text.split_once('=')) {
            (true, Some((name, value))) => {
                push_lit(&mut self.name, name);
                self.value = Some(Vec::new());
                push_lit(self.target(), value);
            }
            _ => push_lit(self.target(), text),
        }
    }

    /// Close the item and add it to `items` unless it is empty.
    fn finish(mut self, items: &mut Vec<QueryItem>) {
        if self.name.is_empty() && self.value.as_ref().is_none_or(Vec::is_empty) {
            return;
        }
        self.decoded_name = match self.name.as_slice() {
            [] => Some(String::new()),
            [Piece::Lit(raw)] => Some(decode_component(raw).into_owned()),
            _ => None,
        };
        sanitize(&mut self.name);
        if let Some(v) = &mut self.value {
            sanitize(v);
        }
        items.push(self);
    }
}

impl RewriteUri {
    /// Prepare the policy: split the template into its path and query pieces.
    pub(crate) fn new(def: &RewriteUriDef) -> RewriteUri {
        let mut path = Vec::new();
        let mut query: Option<Vec<QueryItem>> = None;
        let mut item = QueryItem::default();
        for part in &def.template.parts {
            match (part, query.as_mut()) {
                (Part::Var(v), None) => path.push(Piece::Var(v.clone())),
                (Part::Var(v), Some(_)) => item.target().push(Piece::Var(v.clone())),
                (Part::Literal(text), q) => {
                    let (items, rest) = match q {
                        Some(items) => (items, text.as_str()),
                        None => match text.split_once('?') {
                            None => {
                                push_lit(&mut path, text);
                                continue;
                            }
                            Some((p, rest)) => {
                                push_lit(&mut path, p);
                                (query.insert(Vec::new()), rest)
                            }
                        },
                    };
                    let mut chunks = rest.split('&');
                    if let Some(first) = chunks.next() {
                        item.push_text(first);
                    }
                    for chunk in chunks {
                        std::mem::take(&mut item).finish(items);
                        item.push_text(chunk);
                    }
                }
            }
        }
        if let Some(items) = query.as_mut() {
            item.finish(items);
        }
        sanitize(&mut path);
        let leading_slash = !matches!(path.first(), Some(Piece::Lit(s)) if s.starts_with('/'));
        let path_hint = path
            .iter()
            .map(|p| match p {
                Piece::Lit(s) => s.len(),
                Piece::Var(_) => 16,
            })
            .sum::<usize>()
            + 1;
        RewriteUri {
            leading_slash,
            path,
            query,
            copy_unmatched: def.copy_unmatched_params,
            path_hint,
        }
    }

    fn render_path(&self, src: &dyn TemplateSource, scratch: &mut String) -> String {
        let mut path = String::with_capacity(self.path_hint);
        if self.leading_slash {
            path.push('/');
        }
        for piece in &self.path {
            match piece {
                Piece::Lit(s) => path.push_str(s),
                Piece::Var(v) => {
                    scratch.clear();
                    src.write_var(v, scratch);
                    if scratch == "." || scratch == ".." {
                        for _ in 0..scratch.len() {
                            path.push_str("%2E");
                        }
                    } else {
                        path.extend(utf8_percent_encode(scratch, SEGMENT));
                    }
                }
            }
        }
        path
    }

    fn render_query(
        &self,
        items: &[QueryItem],
        src: &dyn TemplateSource,
        original: Option<&str>,
        scratch: &mut String,
    ) -> Option<String> {
        let mut q = String::with_capacity(64 + original.map_or(0, str::len));
        let mut var_names: Vec<String> = Vec::new();
        let render = |pieces: &[Piece], q: &mut String, scratch: &mut String| {
            for piece in pieces {
                match piece {
                    Piece::Lit(s) => q.push_str(s),
                    Piece::Var(v) => {
                        scratch.clear();
                        src.write_var(v, scratch);
                        form_encode_into(scratch, q);
                    }
                }
            }
        };
        for item in items {
            if !q.is_empty() {
                q.push('&');
            }
            let name_start = q.len();
            render(&item.name, &mut q, scratch);
            if item.decoded_name.is_none() && self.copy_unmatched {
                var_names.push(decode_component(&q[name_start..]).into_owned());
            }
            if let Some(value) = &item.value {
                q.push('=');
                render(value, &mut q, scratch);
            }
        }
        if let (true, Some(original)) = (self.copy_unmatched, original) {
            for s in segments(original) {
                let name = segment_name(s);
                let set_by_template = items
                    .iter()
                    .any(|i| i.decoded_name.as_deref() == Some(name.as_ref()))
                    || var_names.iter().any(|n| *n == name);
                if !set_by_template {
                    push_segment(&mut q, s);
                }
            }
        }
        (!q.is_empty()).then_some(q)
    }
}

impl Policy for RewriteUri {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let mut scratch = String::new();
        let src = TemplateView {
            req: &*req,
            ctx: &*ctx,
        };
        let path = self.render_path(&src, &mut scratch);
        let query = match &self.query {
            None if self.copy_unmatched => ctx.upstream_query.take(),
            None => None,
            Some(items) => {
                self.render_query(items, &src, ctx.upstream_query.as_deref(), &mut scratch)
            }
        };
        ctx.upstream_path = path;
        ctx.upstream_query = query;
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::*;
    use tollgate_config::Template;

    fn run(
        t: Template,
        copy: bool,
        params: &[(&str, &str)],
        q: Option<&str>,
    ) -> (String, Option<String>) {
        let p = RewriteUri::new(&RewriteUriDef {
            template: t,
            copy_unmatched_params: copy,
        });
        let mut r = req("GET", "/x", &[("X-In", "h v")]);
        let mut c = ctx();
        c.upstream_path = "/base/pets/42".into();
        c.path_params = params
            .iter()
            .map(|(k, v)| (Arc::from(*k), v.to_string()))
            .collect();
        c.upstream_query = q.map(str::to_owned);
        assert!(matches!(p.inbound(&mut r, &mut c), Flow::Continue));
        (c.upstream_path, c.upstream_query)
    }

    use std::sync::Arc;

    #[test]
    fn path_params_are_substituted_and_encoded() {
        let t = tpl("/v2/animals/{id}/info");
        assert_eq!(
            run(t.clone(), true, &[("id", "42")], None),
            ("/v2/animals/42/info".into(), None)
        );
        assert_eq!(
            run(t.clone(), true, &[("id", "a/b c?d%é")], None).0,
            "/v2/animals/a%2Fb%20c%3Fd%25%C3%A9/info"
        );
        assert_eq!(
            run(t.clone(), true, &[("id", "..")], None).0,
            "/v2/animals/%2E%2E/info"
        );
        // A missing parameter renders as empty.
        assert_eq!(run(t, true, &[], None).0, "/v2/animals//info");
    }

    #[test]
    fn leading_slash_is_ensured() {
        let t = tpl("{id}");
        assert_eq!(run(t, true, &[("id", "7")], None).0, "/7");
        assert_eq!(run(lit("items"), true, &[], None).0, "/items");
        assert_eq!(run(lit(""), true, &[], None).0, "/");
    }

    #[test]
    fn template_without_query() {
        assert_eq!(
            run(lit("/new"), true, &[], Some("a=1&b=%20")),
            ("/new".into(), Some("a=1&b=%20".into()))
        );
        assert_eq!(
            run(lit("/new"), false, &[], Some("a=1")),
            ("/new".into(), None)
        );
    }

    #[test]
    fn template_query_with_copy_unmatched_params() {
        let t = tpl("/pets/{id}?format=json&lang={request.header.x-in}&flag");
        let q = Some("lang=de&x=%41&format=xml&y=2");
        assert_eq!(
            run(t.clone(), true, &[("id", "5")], q),
            (
                "/pets/5".into(),
                Some("format=json&lang=h+v&flag&x=%41&y=2".into())
            )
        );
        assert_eq!(
            run(t.clone(), false, &[("id", "5")], q),
            ("/pets/5".into(), Some("format=json&lang=h+v&flag".into()))
        );
        assert_eq!(
            run(t, true, &[("id", "5")], None).1.as_deref(),
            Some("format=json&lang=h+v&flag")
        );
    }

    #[test]
    fn query_names_from_variables_and_encoded_literals() {
        // `?{name}=1`: the name comes from a path parameter.
        let t = tpl("/s?{k}=1&a%5B%5D=2");
        assert_eq!(
            run(t, true, &[("k", "x y")], Some("x+y=old&a[]=old&z=3")),
            ("/s".into(), Some("x+y=1&a%5B%5D=2&z=3".into()))
        );
    }

    #[test]
    fn empty_template_query() {
        assert_eq!(
            run(lit("/s?"), false, &[], Some("a=1")),
            ("/s".into(), None)
        );
        assert_eq!(
            run(lit("/s?"), true, &[], Some("a=1")),
            ("/s".into(), Some("a=1".into()))
        );
    }

    #[test]
    fn literal_text_is_made_uri_safe() {
        assert_eq!(
            run(lit("/a b/%20/é?q=x y#"), false, &[], None),
            ("/a%20b/%20/%C3%A9".into(), Some("q=x%20y%23".into()))
        );
    }
}
