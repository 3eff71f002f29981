//! Extractors whose rejections are problem+json: JSON bodies ([`JsonBody`]), policy file
//! bodies in YAML or JSON ([`ConfigBody`]), query strings ([`Q`]) and path parameters
//! ([`P`]). axum's own extractors answer in plain text; these never do.

use crate::problem::{FieldError, Problem};
use crate::AdminState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

/// The media type of a body, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/json` or `*/*+json`.
    Json,
    /// `application/yaml`, `application/x-yaml`, `text/yaml`, `text/x-yaml` or `*/*+yaml`.
    Yaml,
}

/// The `Content-Type` essence (lowercase, without parameters), if any.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or("").trim();
    (!essence.is_empty()).then(|| essence.to_ascii_lowercase())
}

fn format_of(media: &str) -> Option<Format> {
    match media {
        "application/json" => Some(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Some(Format::Yaml)
        }
        m if m.ends_with("+json") => Some(Format::Json),
        m if m.ends_with("+yaml") => Some(Format::Yaml),
        _ => None,
    }
}

async fn body_bytes(req: Request, state: &AdminState) -> Result<Bytes, Problem> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        Problem::new(
            rejection.status(),
            "bad-body",
            "The request body cannot be read",
            rejection.body_text(),
        )
    })
}

/// A JSON request body deserialized into `T` (which should deny unknown fields).
///
/// Not `application/json` → 415; not JSON → 400; JSON of the wrong shape (unknown or
/// missing field, wrong type) → 422 with the field's path.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AdminState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()).as_deref().and_then(format_of) {
            Some(Format::Json) => {}
            _ => {
                return Err(Problem::unsupported_media_type(
                    "the body must be JSON (`Content-Type: application/json`)",
                ))
            }
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Deserializes a JSON body: syntax errors → 400, shape errors → 422 with the path.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Syntax first (400), shape second (422): a body that is not JSON at all is a bad
    // request whatever fields it starts with.
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = strip_position(&err.into_inner().to_string());
        Problem::invalid(
            "the body does not have the expected shape",
            vec![FieldError::at(path, message)],
        )
    })
}

/// `"... at line 1 column 5"` → `"..."` (positions of a JSON body are not interesting
/// for shape errors; the path says where).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A policy file body (or a piece of one) as text, YAML or JSON by its `Content-Type`.
/// Anything else → 415; not UTF-8 → 400. The text is parsed by the handler.
#[derive(Debug)]
pub(crate) struct ConfigBody {
    /// The body.
    pub(crate) text: String,
    /// Its media type.
    pub(crate) format: Format,
}

impl FromRequest<AdminState> for ConfigBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, Self::Rejection> {
        let Some(format) = media_type(req.headers()).as_deref().and_then(format_of) else {
            return Err(Problem::unsupported_media_type(
                "the body must be YAML (`Content-Type: application/yaml`) or JSON \
                 (`Content-Type: application/json`)",
            ));
        };
        let bytes = body_bytes(req, state).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| Problem::bad_request("the body is not UTF-8 text"))?;
        Ok(ConfigBody { text, format })
    }
}

impl ConfigBody {
    /// A JSON body must be strict JSON (YAML would accept more): its syntax error, with its
    /// position, when it is not.
    pub(crate) fn json_syntax_error(&self) -> Option<FieldError> {
        if self.format != Format::Json {
            return None;
        }
        let err = serde_json::from_str::<serde_json::Value>(&self.text).err()?;
        Some(FieldError {
            path: String::new(),
            message: strip_position(&err.to_string()),
            line: Some(err.line()),
            column: Some(err.column()),
        })
    }

    /// The body as a YAML value (JSON is read as JSON first, so that its syntax is strict).
    pub(crate) fn to_value(&self) -> Result<serde_yaml::Value, Problem> {
        let invalid = |e: FieldError| Problem::invalid("the body cannot be parsed", vec![e]);
        if let Some(e) = self.json_syntax_error() {
            return Err(invalid(e));
        }
        // Deep nesting makes libyaml slow (quadratic): refuse it before parsing.
        tollgate_config::check_depth(&self.text).map_err(|e| invalid(FieldError::from(e)))?;
        serde_yaml::from_str(&self.text).map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
            invalid(FieldError {
                path: String::new(),
                message: e.to_string(),
                line,
                column,
            })
        })
    }
}

/// A query string deserialized into `T`; 400 when it does not fit.
#[derive(Debug)]
pub(crate) struct Q<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> FromRequestParts<AdminState> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|r| Problem::bad_request(r.body_text()))
    }
}

/// Path parameters deserialized into `T`; 400 when they do not fit.
#[derive(Debug)]
pub(crate) struct P<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> FromRequestParts<AdminState> for P<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|r| Problem::bad_request(r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn json_errors_are_classified() {
        assert!(parse_json::<Body>(br#"{"name": "x"}"#).is_ok());
        let syntax = parse_json::<Body>(br#"{"name": "#).unwrap_err();
        assert_eq!(syntax.status(), StatusCode::BAD_REQUEST);
        let trailing = parse_json::<Body>(br#"{"name": "x"} x"#).unwrap_err();
        assert_eq!(trailing.status(), StatusCode::BAD_REQUEST);
        let unknown = parse_json::<Body>(br#"{"name": "x", "nope": 1}"#).unwrap_err();
        assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let typed = parse_json::<Body>(br#"{"name": "x", "inner": {"n": "a"}}"#).unwrap_err();
        assert_eq!(typed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn media_types() {
        assert_eq!(format_of("application/json"), Some(Format::Json));
        assert_eq!(
            format_of("application/merge-patch+json"),
            Some(Format::Json)
        );
        assert_eq!(format_of("text/yaml"), Some(Format::Yaml));
        assert_eq!(format_of("application/x-yaml"), Some(Format::Yaml));
        assert_eq!(format_of("text/plain"), None);
    }
}
