//! The small policies: headers, query parameters, URI rewrite, header checks, IP filter,
//! CORS, canned answers. This module picks the implementation for a [`PolicyDef`] and holds
//! the pieces they share (header value templates, header name casing).

use crate::Policy;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::IntoCaseHeaderName;
use std::borrow::Cow;
use std::sync::Arc;
use tollgate_config::{PolicyDef, Template, TemplateSource};

/// Build the runtime policy for the kinds this module implements; `None` for other kinds.
pub(crate) fn build(def: &PolicyDef) -> Option<Arc<dyn Policy>> {
    Some(match def {
        PolicyDef::SetHeader(d) => Arc::new(crate::headers::SetHeader::new(d)),
        PolicyDef::SetQueryParameter(d) => Arc::new(crate::query::SetQueryParameter::new(d)),
        PolicyDef::RewriteUri(d) => Arc::new(crate::rewrite::RewriteUri::new(d)),
        PolicyDef::CheckHeader(d) => Arc::new(crate::check_header::CheckHeader::new(d)),
        PolicyDef::ValidateClientCertificate(d) => {
            Arc::new(crate::client_cert::ValidateClientCertificate::new(d))
        }
        PolicyDef::IpFilter(d) => Arc::new(crate::ip_filter::IpFilter::new(d)),
        PolicyDef::Cors(d) => Arc::new(crate::cors::Cors::new(d)),
        PolicyDef::ReturnResponse(d) => Arc::new(crate::return_response::ReturnResponse::new(d)),
        PolicyDef::XmlToJson(d) => Arc::new(crate::transform::Transform::xml_to_json(d)),
        PolicyDef::JsonToXml(d) => Arc::new(crate::transform::Transform::json_to_xml(d)),
        PolicyDef::ValidateContent(d) => Arc::new(crate::validate_content::ValidateContent::new(d)),
        PolicyDef::ValidateParameters(d) => {
            Arc::new(crate::validate_parameters::ValidateParameters::new(d))
        }
        PolicyDef::ForwardRequest { timeout } => Arc::new(ForwardRequest { timeout: *timeout }),
        PolicyDef::ValidateJwt(_)
        | PolicyDef::RateLimit(_)
        | PolicyDef::RateLimitByKey(_)
        | PolicyDef::Quota(_)
        | PolicyDef::QuotaByKey(_)
        | PolicyDef::CacheLookup(_)
        | PolicyDef::CacheStore { .. }
        | PolicyDef::LimitConcurrency(_) => return None,
    })
}

/// `forward-request`: the upstream timeout of this request (inbound or backend; a later
/// one wins).
#[derive(Debug)]
struct ForwardRequest {
    timeout: std::time::Duration,
}

impl Policy for ForwardRequest {
    fn inbound(
        &self,
        _req: &mut pingora_http::RequestHeader,
        ctx: &mut crate::RequestCtx,
    ) -> crate::Flow {
        ctx.upstream_timeout = Some(self.timeout);
        crate::Flow::Continue
    }
}

/// A header value template, resolved as far as possible at build time: a template without
/// variables becomes a ready [`HeaderValue`] that is only cloned per request.
#[derive(Debug, Clone)]
pub(crate) enum HeaderTemplate {
    /// Fixed value.
    Literal(HeaderValue),
    /// Rendered per request.
    Template(Template),
    /// A fixed value that is not a valid header value: never set.
    Invalid,
}

impl HeaderTemplate {
    /// Prepare `t`.
    pub(crate) fn new(t: &Template) -> HeaderTemplate {
        match t.as_literal() {
            Some(text) => match HeaderValue::from_str(text) {
                Ok(v) => HeaderTemplate::Literal(v),
                Err(_) => HeaderTemplate::Invalid,
            },
            None => HeaderTemplate::Template(t.clone()),
        }
    }

    /// The value for this request, or `None` when the rendered text is not a valid header
    /// value (control characters, line breaks): the caller then leaves the header alone.
    pub(crate) fn value(&self, src: &dyn TemplateSource) -> Option<HeaderValue> {
        match self {
            HeaderTemplate::Literal(v) => Some(v.clone()),
            HeaderTemplate::Template(t) => match t.render(src) {
                Cow::Borrowed(s) => HeaderValue::from_str(s).ok(),
                Cow::Owned(s) => HeaderValue::try_from(s).ok(),
            },
            HeaderTemplate::Invalid => None,
        }
    }
}

/// The on-the-wire spelling of `name` used when a policy adds it to a head: the standard
/// title case of well-known headers (`Content-Type`), otherwise each `-`-separated word
/// capitalized (`X-Api-Version`). Computed once at build time; cloning it is cheap.
pub(crate) fn wire_name(name: &HeaderName) -> Bytes {
    let standard = name.into_case_header_name();
    let bytes = standard.as_slice();
    if bytes != name.as_str().as_bytes() {
        return Bytes::copy_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut start = true;
    for &b in bytes {
        out.push(if start { b.to_ascii_uppercase() } else { b });
        start = b == b'-';
    }
    Bytes::from(out)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers shared by the policies' unit tests.

    use crate::RequestCtx;
    use pingora_http::RequestHeader;
    use tollgate_config::Template;

    /// A template of literal text only (braces not interpreted).
    pub(crate) fn lit(text: &str) -> Template {
        Template::literal(text)
    }

    /// A template parsed from `text`, `{name}` path parameters allowed.
    pub(crate) fn tpl(text: &str) -> Template {
        Template::parse(text, true).unwrap()
    }

    /// A request head with these headers.
    pub(crate) fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    /// All values of header `name`, as strings.
    pub(crate) fn values(map: &http::HeaderMap, name: &str) -> Vec<String> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// A context with a subscription and a client address.
    pub(crate) fn ctx() -> RequestCtx {
        RequestCtx {
            subscription_id: Some("sub-1".into()),
            client_ip: Some("10.1.2.3".parse().unwrap()),
            upstream_path: "/x".into(),
            ..RequestCtx::default()
        }
    }
}
