//! Answers that Tollgate makes itself, and their RFC 9457 problem+json bodies.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

/// An answer made by Tollgate (by a policy or by the core). The gateway writes it once,
/// with `Content-Length`, `X-Request-Id` and the context's answer headers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers, `Content-Type` included.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body (may be empty).
    pub body: Bytes,
    /// True when the answer is a rejection by a policy or the core (401, 403, 429...), as
    /// opposed to a canned success such as `return-response`.
    pub is_error: bool,
}

/// `application/problem+json`.
pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

impl Answer {
    /// A problem+json answer: `type` is `urn:tollgate:problem:<slug>`.
    pub fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Answer {
        Answer {
            status,
            headers: vec![(http::header::CONTENT_TYPE, PROBLEM_JSON)],
            body: problem_body(status, slug, title, detail, None),
            is_error: true,
        }
    }

    /// A problem+json answer with an `errors` member (what was wrong, one object each).
    pub fn problem_with_errors(
        status: StatusCode,
        slug: &str,
        title: &str,
        detail: &str,
        errors: Vec<serde_json::Value>,
    ) -> Answer {
        let extra =
            serde_json::Map::from_iter([("errors".to_string(), serde_json::Value::Array(errors))]);
        Answer {
            body: problem_body(status, slug, title, detail, Some(extra)),
            ..Answer::problem(status, slug, title, "")
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// Serialize a problem document; `extra` members are merged in (e.g. `errors`).
pub fn problem_body(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: &str,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
) -> Bytes {
    let mut doc = serde_json::Map::with_capacity(5);
    doc.insert(
        "type".into(),
        serde_json::Value::String(format!("urn:tollgate:problem:{slug}")),
    );
    doc.insert("title".into(), title.into());
    doc.insert("status".into(), status.as_u16().into());
    doc.insert("detail".into(), detail.into());
    if let Some(extra) = extra {
        doc.extend(extra);
    }
    Bytes::from(serde_json::to_vec(&serde_json::Value::Object(doc)).unwrap_or_default())
}
