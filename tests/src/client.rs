//! Small client helpers over `reqwest`: clients that never use a proxy from the
//! environment, [`Answer`] (a fully read response), and problem+json checks.

use bytes::Bytes;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// A valid W3C `traceparent` to send in tests.
pub const TRACEPARENT_SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A plain HTTP/1.1 client: no proxy from the environment, 10 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .http1_only()
        .build()
        .expect("client")
}

/// A cleartext HTTP/2 client (prior knowledge, h2c).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .http2_prior_knowledge()
        .build()
        .expect("h2c client")
}

/// An HTTPS client (rustls) that accepts the test's self-signed certificate.
pub fn tls_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("tls client")
}

/// A response read to its end.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The HTTP version it came with.
    pub version: http::Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// Reads `resp` to its end.
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("read the response body");
        Answer {
            status,
            version,
            headers,
            body,
        }
    }

    /// The first value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name` as text.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Whether the answer came from the upstream named `name` (its `X-Upstream` header).
    pub fn from_upstream(&self, name: &str) -> bool {
        self.header("x-upstream") == Some(name)
    }

    /// Asserts a problem+json answer with `status`; returns the problem document.
    pub fn assert_problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; headers {:?}, body {}",
            self.headers,
            self.text()
        );
        check_problem(
            status,
            self.header("content-type"),
            self.header("x-request-id"),
            &self.body,
        )
    }
}

/// Sends `req` and reads the answer; panics (with the error chain) on a transport error.
pub async fn fetch(req: reqwest::RequestBuilder) -> Answer {
    match req.send().await {
        Ok(resp) => Answer::read(resp).await,
        Err(e) => {
            let mut msg = format!("request failed: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            panic!("{msg}")
        }
    }
}

/// `GET url` with a fresh plain client.
pub async fn get(url: &str) -> Answer {
    fetch(client().get(url)).await
}

/// Asserts that a response is an RFC 9457 problem document for `status`, with an
/// `X-Request-Id`; returns the document.
pub fn assert_problem(answer: &Answer, status: u16) -> serde_json::Value {
    answer.assert_problem(status)
}

pub(crate) fn check_problem(
    status: u16,
    content_type: Option<&str>,
    request_id: Option<&str>,
    body: &[u8],
) -> serde_json::Value {
    let text = String::from_utf8_lossy(body);
    assert!(
        content_type.is_some_and(|ct| ct.starts_with("application/problem+json")),
        "expected Content-Type application/problem+json, got {content_type:?}; body: {text}"
    );
    assert!(
        request_id.is_some_and(|id| !id.is_empty()),
        "answer without X-Request-Id; body: {text}"
    );
    let doc: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("problem body is not JSON ({e}): {text}"));
    for field in ["type", "title", "detail"] {
        assert!(
            doc.get(field).is_some_and(|v| v.is_string()),
            "problem without string field {field:?}: {text}"
        );
    }
    assert_eq!(
        doc.get("status").and_then(|s| s.as_u64()),
        Some(u64::from(status)),
        "problem status field: {text}"
    );
    doc
}
