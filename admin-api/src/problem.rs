//! Errors as RFC 9457 `application/problem+json` answers: [`Problem`] is the one error type
//! of every handler and extractor, and [`problem_safety_net`] rewrites any other error answer
//! (axum's own 404/405/413, or a rejection that slipped through) into one.

use axum::body::Body;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_config::ConfigError;
use tollgate_store::StoreError;
use utoipa::ToSchema;

/// `application/problem+json`.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// One validation error: where and what. `line` and `column` are 1-based positions in the
/// submitted text, when known (they are null for errors in a body the service assembled,
/// such as the whole file behind `PUT /products/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the offending piece: a YAML path such as `apis[0].upstream` for configs, a
    /// JSON field name for other bodies; empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line in the submitted text.
    pub line: Option<usize>,
    /// 1-based column in the submitted text.
    pub column: Option<usize>,
}

impl FieldError {
    /// An error at `path` without a position.
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

impl From<ConfigError> for FieldError {
    fn from(e: ConfigError) -> FieldError {
        FieldError {
            path: e.path,
            message: e.message,
            line: e.line,
            column: e.column,
        }
    }
}

/// The body of every error answer (the OpenAPI schema of [`Problem`]).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemDoc {
    /// `urn:tollgate:problem:<slug>`.
    #[serde(rename = "type")]
    kind: String,
    /// Short, fixed summary of the problem type.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What happened, for a human.
    detail: String,
    /// Validation errors (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<FieldError>>,
}

/// An error answer.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    errors: Option<Vec<FieldError>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with a status, a slug for its `type`, a title and a detail.
    pub(crate) fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            errors: None,
            headers: Vec::new(),
        }
    }

    /// 400: the request cannot be read.
    pub(crate) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 401, with `WWW-Authenticate: Bearer` (and `error="invalid_token"` when a token was
    /// given but is unknown).
    pub(crate) fn unauthorized(detail: impl Into<String>, token_given: bool) -> Problem {
        let challenge = if token_given {
            "Bearer error=\"invalid_token\""
        } else {
            "Bearer"
        };
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }

    /// 403: the role may not do this.
    pub(crate) fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404.
    pub(crate) fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 409: the request conflicts with the current state.
    pub(crate) fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 412: `If-Match` does not name the live revision.
    pub(crate) fn precondition_failed(live: u64) -> Problem {
        Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            format!("If-Match does not match the live revision \"{live}\""),
        )
        .with_header(header::ETAG, etag(live))
    }

    /// 415: the body's media type is not accepted.
    pub(crate) fn unsupported_media_type(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    /// 422 with every validation error.
    pub(crate) fn invalid(detail: impl Into<String>, errors: Vec<FieldError>) -> Problem {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Validation failed",
            detail,
        );
        p.errors = Some(errors);
        p
    }

    /// 500. The detail never carries internal text: that goes to the log.
    pub(crate) fn internal(context: &str, cause: &dyn std::fmt::Display) -> Problem {
        tracing::error!(%cause, "{context}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            format!("{context}; the service log has the cause"),
        )
    }

    /// The same problem with one more header.
    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Problem {
        self.headers.push((name, value));
        self
    }

    /// `STATUS: detail`, for the audit log.
    pub(crate) fn summary(&self) -> String {
        format!("{}: {}", self.status.as_u16(), self.detail)
    }

    /// The status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

/// `"N"`: the entity tag of config revision N.
pub(crate) fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\""))
        .unwrap_or_else(|_| unreachable!("digits and quotes are valid header text"))
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let doc = ProblemDoc {
            kind: format!("urn:tollgate:problem:{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        resp
    }
}

/// Store errors: `NotFound` → 404 about `what`, `Conflict` → 409, a backend failure → 500.
pub(crate) fn store_problem(err: StoreError, what: &str) -> Problem {
    match err {
        StoreError::NotFound => Problem::not_found(format!("{what} does not exist")),
        StoreError::Conflict => Problem::conflict(format!("{what} exists already")),
        StoreError::Backend(cause) => Problem::internal("the store failed", &cause),
    }
}

/// The largest non-problem error body read back to become a problem's detail.
const DETAIL_LIMIT: usize = 4096;

/// Rewrites every error answer (4xx/5xx) that is not problem+json yet into problem+json,
/// keeping its status and headers (`Allow` on 405, for example). The plain text of the
/// original answer (axum's rejection messages) becomes the detail.
pub(crate) async fn problem_safety_net(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, DETAIL_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let (slug, title, default_detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "Not found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "Method not allowed",
            "the resource does not support this method (see Allow)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload-too-large",
            "Payload too large",
            "the request body is over the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported-media-type",
            "Unsupported media type",
            "the body's media type is not accepted",
        ),
        s if s.is_server_error() => ("internal", "Internal error", "the request failed"),
        _ => (
            "bad-request",
            "Bad request",
            "the request cannot be processed",
        ),
    };
    // Server-side texts are never shown: they may carry internal details.
    let detail = if text.is_empty() || status.is_server_error() {
        default_detail.to_owned()
    } else {
        text
    };
    let fresh = Problem::new(status, slug, title, detail).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let (_, body) = fresh.into_parts();
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_errors_become_problems_and_keep_headers() {
        let plain = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET,HEAD")
            .body(Body::empty())
            .unwrap();
        let resp = problem_safety_net(plain).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET,HEAD");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let bytes = axum::body::to_bytes(resp.into_body(), 10_000)
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["status"], 405);
        assert_eq!(doc["type"], "urn:tollgate:problem:method-not-allowed");
    }

    #[tokio::test]
    async fn successes_and_problems_pass_unchanged() {
        let ok = Response::new(Body::from("fine"));
        assert_eq!(problem_safety_net(ok).await.status(), StatusCode::OK);
        let p = Problem::conflict("x");
        assert_eq!(p.status(), StatusCode::CONFLICT);
        let resp = problem_safety_net(p.into_response()).await;
        assert_eq!(resp.status(), StatusCode::CONFLICT);
    }
}
