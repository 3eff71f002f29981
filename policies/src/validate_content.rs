//! `validate-content` (Azure API Management's): JSON bodies checked against a JSON Schema.
//!
//! Inbound, the request body: a non-empty body must be JSON (`application/json`,
//! `*/*+json`, not compressed), else 415 `unsupported-media-type`; one that does not parse
//! is 400 `malformed-body`; one that does not match the schema is 400 `invalid-body`, with
//! the first [`MAX_ERRORS`] mismatches in `errors` (`pointer`: where in the body,
//! `message`). An empty body is not checked (a `GET`, a `DELETE`); one over `max_size` is
//! 413 `payload-too-large` (a body is parsed whole, into a tree many times its size).
//!
//! Outbound, the upstream's answer: only a 2xx JSON answer is checked (an error answer
//! has a shape of its own, and a non-JSON one is not what the schema describes); one that
//! does not parse or match is replaced by a 502 `bad-upstream-body`.
//!
//! With `action: detect`, what does not match is logged (with the request id) and let
//! through.
//!
//! Says [`Policy::transforms_bodies`], so the routes that run it are buffered, and the
//! body it checks is the one the transforms before it in the section made (an
//! `xml-to-json` before it: the JSON).

use crate::transform::Format;
use crate::{Answer, Policy, RequestCtx};
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;
use tollgate_config::ValidateContentDef;

/// At most this many mismatches are reported.
pub(crate) const MAX_ERRORS: usize = 10;

/// The runtime `validate-content`.
#[derive(Debug)]
pub(crate) struct ValidateContent {
    validator: Arc<jsonschema::Validator>,
    detect: bool,
    max_size: u64,
}

/// Why a body was refused.
enum Refusal {
    /// Larger than `max_size`.
    TooLarge(String),
    /// Not JSON by its type, or compressed.
    NotJson(String),
    /// Not parseable JSON.
    Malformed(String),
    /// Does not match: `(pointer, message)`, at most [`MAX_ERRORS`].
    Mismatch(Vec<(String, String)>),
}

impl ValidateContent {
    pub(crate) fn new(def: &ValidateContentDef) -> ValidateContent {
        ValidateContent {
            validator: def.validator.clone(),
            detect: def.detect,
            max_size: def.max_size,
        }
    }

    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        if body.len() as u64 > self.max_size {
            return Err(Refusal::TooLarge(format!(
                "the body is {} bytes, more than validate-content checks ({} bytes, its \
                 `max_size`)",
                body.len(),
                self.max_size
            )));
        }
        if let Some(enc) = headers.get(CONTENT_ENCODING) {
            if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
                return Err(Refusal::NotJson(format!(
                    "a body with Content-Encoding `{}` cannot be validated",
                    String::from_utf8_lossy(enc.as_bytes())
                )));
            }
        }
        let content_type = headers.get(CONTENT_TYPE);
        if !Format::Json.matches(content_type) {
            return Err(Refusal::NotJson(match content_type {
                Some(ct) => format!(
                    "the body is `{}`, not JSON (`application/json`)",
                    String::from_utf8_lossy(ct.as_bytes())
                ),
                None => "the body has no Content-Type; JSON (`application/json`) is expected"
                    .to_string(),
            }));
        }
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let errors: Vec<(String, String)> = self
            .validator
            .iter_errors(&value)
            .take(MAX_ERRORS)
            .map(|e| {
                (
                    e.instance_path().as_str().to_owned(),
                    e.masked().to_string(),
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Mismatch(errors))
        }
    }

    /// The answer for `refusal` of a body from the client (400, 415) or, with `upstream`,
    /// from the upstream (502); `None` with `action: detect`, after logging it.
    fn refuse(&self, refusal: Refusal, upstream: bool, ctx: &RequestCtx) -> Option<Answer> {
        let whose = if upstream {
            "the upstream's answer"
        } else {
            "the request body"
        };
        let (status, slug, title, detail, errors) = match refusal {
            Refusal::TooLarge(why) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload Too Large",
                why,
                None,
            ),
            Refusal::NotJson(why) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
                why,
                None,
            ),
            Refusal::Malformed(why) => (
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "Bad Request",
                format!("{whose} is not valid JSON: {why}"),
                None,
            ),
            Refusal::Mismatch(errors) => {
                let (pointer, message) = &errors[0];
                let at = if pointer.is_empty() { "/" } else { pointer };
                (
                    StatusCode::BAD_REQUEST,
                    "invalid-body",
                    "Bad Request",
                    format!("{whose} does not match the schema: {message} (at {at})"),
                    Some(errors),
                )
            }
        };
        if self.detect {
            log_detected("validate-content", ctx, &detail);
            return None;
        }
        let (status, slug, title) = if upstream {
            (StatusCode::BAD_GATEWAY, "bad-upstream-body", "Bad Gateway")
        } else {
            (status, slug, title)
        };
        Some(match errors {
            Some(errors) => {
                let list = errors
                    .into_iter()
                    .map(|(pointer, message)| {
                        serde_json::json!({ "pointer": pointer, "message": message })
                    })
                    .collect();
                Answer::problem_with_errors(status, slug, title, &detail, list)
            }
            None => Answer::problem(status, slug, title, &detail),
        })
    }
}

/// What `action: detect` does with a refusal: a warning with the request id and the API.
pub(crate) fn log_detected(policy: &str, ctx: &RequestCtx, detail: &str) {
    tracing::warn!(
        request_id = ctx.request_id.as_str(),
        api = ctx.api_id.as_deref().unwrap_or(""),
        "{policy} (detect): {detail}"
    );
}

impl Policy for ValidateContent {
    fn transforms_bodies(&self) -> bool {
        true
    }

    fn transform_request_body(
        &self,
        req: &mut RequestHeader,
        body: &[u8],
        ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>, Answer> {
        if body.is_empty() {
            return Ok(None);
        }
        match self.check(&req.headers, body) {
            Ok(()) => Ok(None),
            Err(r) => self.refuse(r, false, ctx).map_or(Ok(None), Err),
        }
    }

    fn transform_response_body(
        &self,
        resp: &mut ResponseHeader,
        body: &[u8],
        ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>, Answer> {
        if !resp.status.is_success() || !Format::Json.matches(resp.headers.get(CONTENT_TYPE)) {
            return Ok(None);
        }
        match self.check(&resp.headers, body) {
            Ok(()) => Ok(None),
            Err(r) => self.refuse(r, true, ctx).map_or(Ok(None), Err),
        }
    }
}
