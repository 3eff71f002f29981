//! `xml-to-json` and `json-to-xml`: whole-body transforms of requests (inbound) and answers
//! (outbound), on top of the `tollgate-transform` library (iterative, bounded, no DTDs).
//!
//! Both say [`Policy::transforms_bodies`], so the gateway buffers the routes that run them:
//! the transform sees the whole (decoded) body and may refuse it with an error status.
//!
//! When a transform applies:
//! - `apply: always`: every non-empty body; otherwise (the default) only bodies whose
//!   `Content-Type` is the source format (`xml-to-json`: `application/xml`, `text/xml`,
//!   `*/*+xml`; `json-to-xml`: `application/json`, `*/*+json`).
//! - `consider_accept_header` (default true), on answers only: the answer is transformed only
//!   when the client accepts the target format: no `Accept`, `*/*`, `application/*`, or the
//!   target type itself (`application/json` for `xml-to-json`; `application/xml` or
//!   `text/xml` for `json-to-xml`). A client that asks for the source format only keeps it.
//!   Requests are transformed whatever the `Accept`.
//!
//! Errors: a malformed (or refused: DOCTYPE, too deep, too large) body is answered 400 when
//! it came from the client and 502 when it came from the upstream, as problem+json.

use crate::{Answer, Policy, RequestCtx};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use tollgate_config::model::kinds;
use tollgate_transform::{json_to_xml, xml_to_json, Limits, XmlToJsonKind};

/// The two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Xml,
    Json,
}

impl Format {
    /// Whether `content_type` is this format (`application/json`, `*/*+json`, ...).
    pub(crate) fn matches(self, content_type: Option<&HeaderValue>) -> bool {
        let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match self {
            Format::Xml => {
                essence == "application/xml" || essence == "text/xml" || essence.ends_with("+xml")
            }
            Format::Json => essence == "application/json" || essence.ends_with("+json"),
        }
    }

    /// Whether an `Accept` header admits this format.
    fn accepted_by(self, accept: Option<&HeaderValue>) -> bool {
        let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
            return true;
        };
        accept.split(',').any(|item| {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            // `q=0` means "not acceptable".
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            if refused {
                return false;
            }
            match self {
                Format::Json => {
                    range == "*/*"
                        || range == "application/*"
                        || range == "application/json"
                        || range.ends_with("+json")
                }
                Format::Xml => {
                    range == "*/*"
                        || range == "application/*"
                        || range == "text/*"
                        || range == "application/xml"
                        || range == "text/xml"
                        || range.ends_with("+xml")
                }
            }
        })
    }

    fn content_type(self) -> HeaderValue {
        match self {
            Format::Xml => HeaderValue::from_static("application/xml; charset=utf-8"),
            Format::Json => HeaderValue::from_static("application/json; charset=utf-8"),
        }
    }
}

/// What the transform does with a whole body.
#[derive(Debug)]
enum Direction {
    XmlToJson(XmlToJsonKind),
    JsonToXml { root: String },
}

/// `xml-to-json` or `json-to-xml`.
#[derive(Debug)]
pub(crate) struct Transform {
    direction: Direction,
    always: bool,
    consider_accept: bool,
    limits: Limits,
}

impl Transform {
    pub(crate) fn xml_to_json(def: &kinds::XmlToJson) -> Transform {
        Transform {
            direction: Direction::XmlToJson(match def.kind.as_deref() {
                Some("direct") => XmlToJsonKind::Direct,
                _ => XmlToJsonKind::JavascriptFriendly,
            }),
            always: def.apply.as_deref() == Some("always"),
            consider_accept: def.consider_accept_header.unwrap_or(true),
            limits: Limits::default(),
        }
    }

    pub(crate) fn json_to_xml(def: &kinds::JsonToXml) -> Transform {
        Transform {
            direction: Direction::JsonToXml {
                root: def
                    .root_element
                    .clone()
                    .unwrap_or_else(|| "root".to_owned()),
            },
            always: def.apply.as_deref() == Some("always"),
            consider_accept: def.consider_accept_header.unwrap_or(true),
            limits: Limits::default(),
        }
    }

    fn source(&self) -> Format {
        match self.direction {
            Direction::XmlToJson(_) => Format::Xml,
            Direction::JsonToXml { .. } => Format::Json,
        }
    }

    fn target(&self) -> Format {
        match self.direction {
            Direction::XmlToJson(_) => Format::Json,
            Direction::JsonToXml { .. } => Format::Xml,
        }
    }

    fn applies(&self, body: &[u8], content_type: Option<&HeaderValue>) -> bool {
        !body.is_empty() && (self.always || self.source().matches(content_type))
    }

    fn run(&self, body: &[u8]) -> Result<Vec<u8>, tollgate_transform::TransformError> {
        match &self.direction {
            Direction::XmlToJson(kind) => xml_to_json(body, *kind, &self.limits),
            Direction::JsonToXml { root } => json_to_xml(body, root, &self.limits),
        }
    }

    fn failure(
        &self,
        status: StatusCode,
        from: &str,
        err: &tollgate_transform::TransformError,
    ) -> Answer {
        let what = match self.source() {
            Format::Xml => "XML",
            Format::Json => "JSON",
        };
        let (slug, title) = if status == StatusCode::BAD_REQUEST {
            ("malformed-body", "Bad Request")
        } else {
            ("bad-upstream-body", "Bad Gateway")
        };
        Answer::problem(
            status,
            slug,
            title,
            &format!("the {from} {what} body cannot be converted: {err}"),
        )
    }
}

impl Policy for Transform {
    fn transforms_bodies(&self) -> bool {
        true
    }

    fn transform_request_body(
        &self,
        req: &mut RequestHeader,
        body: &[u8],
        _ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>, Answer> {
        if !self.applies(body, req.headers.get(CONTENT_TYPE)) {
            return Ok(None);
        }
        let out = self
            .run(body)
            .map_err(|e| self.failure(StatusCode::BAD_REQUEST, "request", &e))?;
        let _ = req.insert_header(CONTENT_TYPE, self.target().content_type());
        Ok(Some(out))
    }

    fn transform_response_body(
        &self,
        resp: &mut ResponseHeader,
        body: &[u8],
        ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>, Answer> {
        if !self.applies(body, resp.headers.get(CONTENT_TYPE)) {
            return Ok(None);
        }
        if self.consider_accept && !self.target().accepted_by(ctx.accept.as_ref()) {
            return Ok(None);
        }
        let out = self
            .run(body)
            .map_err(|e| self.failure(StatusCode::BAD_GATEWAY, "upstream's", &e))?;
        let _ = resp.insert_header(CONTENT_TYPE, self.target().content_type());
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn content_types_are_recognized() {
        assert!(Format::Xml.matches(Some(&hv("application/xml; charset=utf-8"))));
        assert!(Format::Xml.matches(Some(&hv("text/xml"))));
        assert!(Format::Xml.matches(Some(&hv("application/soap+xml"))));
        assert!(!Format::Xml.matches(Some(&hv("application/json"))));
        assert!(!Format::Xml.matches(None));
        assert!(Format::Json.matches(Some(&hv("application/problem+json"))));
        assert!(!Format::Json.matches(Some(&hv("text/plain"))));
    }

    #[test]
    fn accept_negotiation() {
        assert!(Format::Json.accepted_by(None));
        assert!(Format::Json.accepted_by(Some(&hv("*/*"))));
        assert!(Format::Json.accepted_by(Some(&hv("application/xml, application/json;q=0.5"))));
        assert!(!Format::Json.accepted_by(Some(&hv("application/xml"))));
        assert!(!Format::Json.accepted_by(Some(&hv("application/json;q=0"))));
        assert!(Format::Xml.accepted_by(Some(&hv("text/xml"))));
        assert!(!Format::Xml.accepted_by(Some(&hv("application/json"))));
    }

    fn x2j(apply: Option<&str>, accept: Option<bool>) -> Transform {
        Transform::xml_to_json(&kinds::XmlToJson {
            kind: None,
            apply: apply.map(str::to_owned),
            consider_accept_header: accept,
        })
    }

    #[test]
    fn request_bodies_are_converted_or_refused_with_400() {
        let p = x2j(None, None);
        let mut req = RequestHeader::build("POST", b"/x", None).unwrap();
        req.insert_header("Content-Type", "application/xml")
            .unwrap();
        let mut ctx = RequestCtx::default();
        let out = p
            .transform_request_body(&mut req, b"<a><b>1</b></a>", &mut ctx)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"a": {"b": "1"}}));
        assert_eq!(
            req.headers["content-type"],
            "application/json; charset=utf-8"
        );
        let mut req = RequestHeader::build("POST", b"/x", None).unwrap();
        req.insert_header("Content-Type", "application/xml")
            .unwrap();
        let err = p
            .transform_request_body(&mut req, b"<a><b></a>", &mut ctx)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        // Not XML by its type: left alone (unless apply: always).
        let mut req = RequestHeader::build("POST", b"/x", None).unwrap();
        req.insert_header("Content-Type", "text/plain").unwrap();
        assert!(p
            .transform_request_body(&mut req, b"<a/>", &mut ctx)
            .unwrap()
            .is_none());
        let always = x2j(Some("always"), None);
        assert!(always
            .transform_request_body(&mut req, b"<a/>", &mut ctx)
            .unwrap()
            .is_some());
    }

    #[test]
    fn answers_are_converted_by_accept_or_refused_with_502() {
        let p = x2j(None, None);
        let mut ctx = RequestCtx {
            accept: Some(hv("application/xml")),
            ..Default::default()
        };
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Content-Type", "text/xml").unwrap();
        assert!(p
            .transform_response_body(&mut resp, b"<a/>", &mut ctx)
            .unwrap()
            .is_none());
        ctx.accept = Some(hv("application/json"));
        assert!(p
            .transform_response_body(&mut resp, b"<a/>", &mut ctx)
            .unwrap()
            .is_some());
        let ignoring = x2j(None, Some(false));
        let mut ctx = RequestCtx {
            accept: Some(hv("application/xml")),
            ..Default::default()
        };
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Content-Type", "text/xml").unwrap();
        assert!(ignoring
            .transform_response_body(&mut resp, b"<a/>", &mut ctx)
            .unwrap()
            .is_some());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Content-Type", "text/xml").unwrap();
        let err = ignoring
            .transform_response_body(
                &mut resp,
                b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>",
                &mut ctx,
            )
            .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn json_to_xml_wraps_in_the_root_element() {
        let p = Transform::json_to_xml(&kinds::JsonToXml {
            apply: None,
            consider_accept_header: Some(false),
            root_element: Some("doc".into()),
        });
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Content-Type", "application/json")
            .unwrap();
        let out = p
            .transform_response_body(
                &mut resp,
                br#"{"a":1,"b":[true,false]}"#,
                &mut RequestCtx::default(),
            )
            .unwrap()
            .unwrap();
        let xml = String::from_utf8(out).unwrap();
        assert!(
            xml.contains("<doc>")
                && xml.contains("<a>1</a>")
                && xml.contains("<b>true</b><b>false</b>"),
            "{xml}"
        );
        assert_eq!(
            resp.headers["content-type"],
            "application/xml; charset=utf-8"
        );
    }
}
