//! Templates: text with `{variable}` placeholders, parsed once at compile time.
//!
//! Variables (contract §2): `{subscription.id}`, `{product.id}`, `{api.id}`,
//! `{operation.id}`, `{client.ip}`, `{request.header.NAME}`, `{request.query.NAME}`,
//! `{jwt.claim.NAME}`, `{client.certificate.FIELD}`; where the field allows it (`rewrite-uri`), `{name}` is an operation
//! path parameter. `{{` and `}}` stand for literal braces.
//!
//! Rendering a template without variables borrows its text; otherwise it builds one
//! `String`.

use http::HeaderName;
use std::borrow::Cow;
use std::fmt;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Literal text and variables, in order. Adjacent literals are merged; an empty
    /// template has no parts.
    pub parts: Vec<Part>,
    /// The text it was parsed from.
    source: String,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Copied as is.
    Literal(String),
    /// Replaced by the variable's value (empty when it has none).
    Var(Var),
}

/// A template variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `{subscription.id}`.
    SubscriptionId,
    /// `{product.id}`.
    ProductId,
    /// `{api.id}`.
    ApiId,
    /// `{operation.id}`.
    OperationId,
    /// `{client.ip}`.
    ClientIp,
    /// `{request.header.NAME}` (first value).
    RequestHeader(HeaderName),
    /// `{request.query.NAME}` (first value, decoded).
    RequestQuery(String),
    /// `{jwt.claim.NAME}`.
    JwtClaim(String),
    /// `{client.certificate.FIELD}`: the TLS client certificate's.
    ClientCertificate(CertField),
    /// `{name}`: an operation path parameter.
    PathParam(String),
}

/// A field of the TLS client certificate (`{client.certificate.FIELD}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    /// `thumbprint`: SHA-256, lower-case hex.
    Thumbprint,
    /// `serial_number`: lower-case hex.
    SerialNumber,
    /// `subject`.
    Subject,
    /// `common_name`.
    CommonName,
    /// `issuer_subject`.
    IssuerSubject,
}

/// Where template variables get their values from (implemented by the request context).
pub trait TemplateSource {
    /// Append the value of `var` to `out` (nothing when it has no value).
    fn write_var(&self, var: &Var, out: &mut String);
}

/// The variables every template accepts, for error messages.
const KNOWN_VARIABLES: &str = "{subscription.id}, {product.id}, {api.id}, {operation.id}, \
     {client.ip}, {request.header.NAME}, {request.query.NAME}, {jwt.claim.NAME}, \
     {client.certificate.FIELD} (thumbprint, serial_number, subject, common_name, \
     issuer_subject)";

impl Template {
    /// Parses `text`. With `allow_path_params`, a bare `{name}` (`[A-Za-z_][A-Za-z0-9_]*`)
    /// is an operation path parameter ([`Var::PathParam`]); without it, it is an unknown
    /// variable. `{{` and `}}` are literal braces. Unknown variables, an empty `{}`, an
    /// unclosed `{` and a stray `}` are errors.
    pub fn parse(text: &str, allow_path_params: bool) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '{' if matches!(chars.peek(), Some((_, '{'))) => {
                    chars.next();
                    literal.push('{');
                }
                '}' if matches!(chars.peek(), Some((_, '}'))) => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(format!(
                        "stray `}}` at offset {pos} (write `}}}}` for a literal brace)"
                    ))
                }
                '{' => {
                    let start = pos + 1;
                    let mut end = None;
                    for (p, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                end = Some(p);
                                break;
                            }
                            '{' => {
                                return Err(format!(
                                "unclosed `{{` at offset {pos} (write `{{{{` for a literal brace)"
                            ))
                            }
                            _ => {}
                        }
                    }
                    let Some(end) = end else {
                        return Err(format!(
                            "unclosed `{{` at offset {pos} (write `{{{{` for a literal brace)"
                        ));
                    };
                    let var = parse_var(&text[start..end], allow_path_params)?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            parts,
            source: text.to_string(),
        })
    }

    /// A template that is exactly `text` (braces are not interpreted).
    pub fn literal(text: &str) -> Template {
        let parts = if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Literal(text.to_string())]
        };
        Template {
            parts,
            source: text.replace('{', "{{").replace('}', "}}"),
        }
    }

    /// The text when the template has no variables.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Whether the template has at least one variable.
    pub fn has_vars(&self) -> bool {
        self.as_literal().is_none()
    }

    /// The variables, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|part| match part {
            Part::Var(var) => Some(var),
            Part::Literal(_) => None,
        })
    }

    /// The literal pieces, in order (without the braces' escaping).
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Literal(text) => Some(text.as_str()),
            Part::Var(_) => None,
        })
    }

    /// Renders the template: borrowed when it has no variables, one `String` otherwise.
    pub fn render<'a>(&'a self, src: &dyn TemplateSource) -> Cow<'a, str> {
        if let Some(text) = self.as_literal() {
            return Cow::Borrowed(text);
        }
        let literal_len: usize = self.literals().map(str::len).sum();
        let mut out = String::with_capacity(literal_len + 32);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(var) => src.write_var(var, &mut out),
            }
        }
        Cow::Owned(out)
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Parses the inside of `{...}`.
fn parse_var(name: &str, allow_path_params: bool) -> Result<Var, String> {
    if name.is_empty() {
        return Err(format!(
            "empty variable `{{}}`; known variables: {KNOWN_VARIABLES}"
        ));
    }
    let var = match name {
        "subscription.id" => Var::SubscriptionId,
        "product.id" => Var::ProductId,
        "api.id" => Var::ApiId,
        "operation.id" => Var::OperationId,
        "client.ip" => Var::ClientIp,
        "client.certificate.thumbprint" => Var::ClientCertificate(CertField::Thumbprint),
        "client.certificate.serial_number" => Var::ClientCertificate(CertField::SerialNumber),
        "client.certificate.subject" => Var::ClientCertificate(CertField::Subject),
        "client.certificate.common_name" => Var::ClientCertificate(CertField::CommonName),
        "client.certificate.issuer_subject" => Var::ClientCertificate(CertField::IssuerSubject),
        _ => {
            if let Some(header) = name.strip_prefix("request.header.") {
                let header = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("`{{{name}}}`: `{header}` is not a valid header name"))?;
                Var::RequestHeader(header)
            } else if let Some(param) = name.strip_prefix("request.query.") {
                if param.is_empty() {
                    return Err(format!("`{{{name}}}`: the query parameter name is empty"));
                }
                Var::RequestQuery(param.to_string())
            } else if let Some(claim) = name.strip_prefix("jwt.claim.") {
                if claim.is_empty() {
                    return Err(format!("`{{{name}}}`: the claim name is empty"));
                }
                Var::JwtClaim(claim.to_string())
            } else if allow_path_params && is_param_name(name) {
                Var::PathParam(name.to_string())
            } else if allow_path_params {
                return Err(format!(
                    "unknown variable `{{{name}}}`; known variables: {KNOWN_VARIABLES}, \
                     and `{{name}}` for an operation path parameter"
                ));
            } else {
                return Err(format!(
                    "unknown variable `{{{name}}}`; known variables: {KNOWN_VARIABLES}"
                ));
            }
        }
    };
    Ok(var)
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a path parameter name.
pub(crate) fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Src;

    impl TemplateSource for Src {
        fn write_var(&self, var: &Var, out: &mut String) {
            match var {
                Var::SubscriptionId => out.push_str("sub-1"),
                Var::ProductId => out.push_str("starter"),
                Var::ApiId => out.push_str("petstore"),
                Var::OperationId => out.push_str("get-pet"),
                Var::ClientIp => out.push_str("10.0.0.1"),
                Var::RequestHeader(name) => {
                    out.push_str("h:");
                    out.push_str(name.as_str());
                }
                Var::RequestQuery(name) => {
                    out.push_str("q:");
                    out.push_str(name);
                }
                Var::JwtClaim(name) => {
                    out.push_str("c:");
                    out.push_str(name);
                }
                Var::PathParam(name) => {
                    out.push_str("p:");
                    out.push_str(name);
                }
                Var::ClientCertificate(field) => {
                    out.push_str(&format!("cert:{field:?}"));
                }
            }
        }
    }

    #[test]
    fn literal_templates_borrow() {
        let t = Template::parse("plain text", false).unwrap();
        assert_eq!(t.as_literal(), Some("plain text"));
        assert!(matches!(t.render(&Src), Cow::Borrowed("plain text")));
        let empty = Template::parse("", false).unwrap();
        assert_eq!(empty.as_literal(), Some(""));
        assert!(empty.parts.is_empty());
        assert!(matches!(empty.render(&Src), Cow::Borrowed("")));
    }

    #[test]
    fn escaped_braces_are_literal() {
        let t = Template::parse("a{{b}}c", false).unwrap();
        assert_eq!(t.as_literal(), Some("a{b}c"));
        assert_eq!(t.source(), "a{{b}}c");
        assert_eq!(t.to_string(), "a{{b}}c");
        let t = Template::parse("{{{client.ip}}}", false).unwrap();
        assert_eq!(t.render(&Src), "{10.0.0.1}");
    }

    #[test]
    fn every_variable_parses_and_renders() {
        let text = "{subscription.id}|{product.id}|{api.id}|{operation.id}|{client.ip}|\
                    {request.header.X-Tenant}|{request.query.lang}|{jwt.claim.sub}|\
                    {client.certificate.thumbprint}|{client.certificate.serial_number}|\
                    {client.certificate.subject}|{client.certificate.common_name}|\
                    {client.certificate.issuer_subject}";
        let t = Template::parse(text, false).unwrap();
        assert_eq!(t.as_literal(), None);
        assert!(t.has_vars());
        assert_eq!(
            t.render(&Src),
            "sub-1|starter|petstore|get-pet|10.0.0.1|h:x-tenant|q:lang|c:sub|\
             cert:Thumbprint|cert:SerialNumber|cert:Subject|cert:CommonName|cert:IssuerSubject"
        );
        assert_eq!(
            t.vars().nth(5),
            Some(&Var::RequestHeader(HeaderName::from_static("x-tenant")))
        );
        assert_eq!(t.to_string(), text);
    }

    #[test]
    fn adjacent_literals_merge() {
        let t = Template::parse("a{{b{api.id}c}}", false).unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Literal("a{b".into()),
                Part::Var(Var::ApiId),
                Part::Literal("c}".into())
            ]
        );
    }

    #[test]
    fn path_params_only_when_allowed() {
        let t = Template::parse("/v2/pets/{id}/{_x9}", true).unwrap();
        assert_eq!(t.render(&Src), "/v2/pets/p:id/p:_x9");
        let err = Template::parse("/v2/pets/{id}", false).unwrap_err();
        assert!(err.contains("unknown variable `{id}`"), "{err}");
        let err = Template::parse("/{9x}", true).unwrap_err();
        assert!(err.contains("unknown variable `{9x}`"), "{err}");
    }

    #[test]
    fn errors_are_clear() {
        let err = Template::parse("a{}b", false).unwrap_err();
        assert!(err.contains("empty variable"), "{err}");
        let err = Template::parse("a{client.ip", false).unwrap_err();
        assert!(err.contains("unclosed `{` at offset 1"), "{err}");
        let err = Template::parse("a{b{c}", false).unwrap_err();
        assert!(err.contains("unclosed"), "{err}");
        let err = Template::parse("a}b", false).unwrap_err();
        assert!(err.contains("stray `}` at offset 1"), "{err}");
        let err = Template::parse("{request.header.bad name}", false).unwrap_err();
        assert!(err.contains("not a valid header name"), "{err}");
        let err = Template::parse("{request.query.}", false).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = Template::parse("{jwt.claim.}", false).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = Template::parse("{subscription.key}", false).unwrap_err();
        assert!(
            err.contains("unknown variable `{subscription.key}`"),
            "{err}"
        );
        assert!(err.contains("{client.ip}"), "{err}");
    }

    #[test]
    fn literal_constructor_round_trips() {
        let t = Template::literal("a{b}");
        assert_eq!(t.as_literal(), Some("a{b}"));
        assert_eq!(Template::parse(t.source(), false).unwrap(), t);
    }
}
