//! `validate-parameters` (Azure API Management's): query parameters, request headers and
//! path parameters checked against JSON Schemas, inbound.
//!
//! A parameter's text is read as the JSON value its schema checks by the schema's
//! top-level `type` ([`ValueShape`]): `integer`/`number` and `boolean` when the text is
//! one, else a string; `array`: every occurrence, each split at commas. A parameter that
//! is not an array and is given more than once is refused. What does not pass is 400
//! `invalid-parameters`, with `errors` (`in`, `name`, `message`; at most [`MAX_ERRORS`]);
//! with `action: detect` it is logged and the request goes on. Parameters are read as the
//! policies before this one left them (the subscription key's query parameter is gone).

use crate::validate_content::log_detected;
use crate::{query_pairs, Answer, Flow, Policy, RequestCtx};
use http::StatusCode;
use pingora_http::RequestHeader;
use serde_json::Value;
use std::borrow::Cow;
use tollgate_config::{ParamPlace, ParameterDef, ValidateParametersDef, ValueShape};

/// At most this many problems are reported.
const MAX_ERRORS: usize = 10;

/// The runtime `validate-parameters`.
#[derive(Debug)]
pub(crate) struct ValidateParameters {
    def: ValidateParametersDef,
}

/// `text` as a number or a boolean when `number`/`boolean` allow it and it is one; else a
/// string.
fn scalar(text: &str, number: bool, boolean: bool) -> Value {
    if number {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    if boolean {
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(text.to_owned())
}

/// The JSON value of a parameter given as `values` (one per occurrence).
fn read(shape: ValueShape, values: &[Cow<'_, str>]) -> Result<Value, String> {
    match shape {
        ValueShape::Scalar { number, boolean } => match values {
            [one] => Ok(scalar(one, number, boolean)),
            many => Err(format!("is given {} times", many.len())),
        },
        ValueShape::Array { number, boolean } => Ok(Value::Array(
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|item| scalar(item, number, boolean))
                .collect(),
        )),
    }
}

impl ValidateParameters {
    pub(crate) fn new(def: &ValidateParametersDef) -> ValidateParameters {
        ValidateParameters { def: def.clone() }
    }

    /// The values of `p` in this request, one per occurrence.
    fn values<'a>(
        p: &ParameterDef,
        req: &'a RequestHeader,
        ctx: &'a RequestCtx,
    ) -> Vec<Cow<'a, str>> {
        match p.place {
            ParamPlace::Query => ctx
                .upstream_query
                .as_deref()
                .map(|q| {
                    query_pairs(q)
                        .filter(|(k, _)| *k == p.name)
                        .map(|(_, v)| v)
                        .collect()
                })
                .unwrap_or_default(),
            ParamPlace::Header => req
                .headers
                .get_all(p.name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect(),
            ParamPlace::Path => ctx
                .path_params
                .iter()
                .filter(|(n, _)| **n == *p.name)
                .map(|(_, v)| Cow::Borrowed(v.as_str()))
                .collect(),
        }
    }

    /// What does not pass: `(in, name, message)`.
    fn problems(&self, req: &RequestHeader, ctx: &RequestCtx) -> Vec<(ParamPlace, String, String)> {
        let mut problems = Vec::new();
        for p in &self.def.params {
            if problems.len() >= MAX_ERRORS {
                break;
            }
            let values = Self::values(p, req, ctx);
            if values.is_empty() {
                if p.required {
                    problems.push((p.place, p.name.clone(), "is required".to_string()));
                }
                continue;
            }
            let value = match read(p.shape, &values) {
                Ok(v) => v,
                Err(why) => {
                    problems.push((p.place, p.name.clone(), why));
                    continue;
                }
            };
            if let Some(validator) = &p.validator {
                for e in validator
                    .iter_errors(&value)
                    .take(MAX_ERRORS - problems.len())
                {
                    problems.push((p.place, p.name.clone(), e.masked().to_string()));
                }
            }
        }
        if self.def.only_listed_query {
            for (name, _) in ctx
                .upstream_query
                .as_deref()
                .map(query_pairs)
                .into_iter()
                .flatten()
            {
                let listed = self
                    .def
                    .params
                    .iter()
                    .any(|p| p.place == ParamPlace::Query && p.name == name);
                let named = problems
                    .iter()
                    .any(|(place, n, _)| *place == ParamPlace::Query && *n == name);
                if !listed && !named && problems.len() < MAX_ERRORS {
                    problems.push((
                        ParamPlace::Query,
                        name.into_owned(),
                        "is not a parameter of this operation".to_string(),
                    ));
                }
            }
        }
        problems
    }
}

impl Policy for ValidateParameters {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let problems = self.problems(req, ctx);
        let Some((place, name, message)) = problems.first() else {
            return Flow::Continue;
        };
        let detail = format!("{} parameter `{name}` {message}", place.as_str());
        if self.def.detect {
            log_detected("validate-parameters", ctx, &detail);
            return Flow::Continue;
        }
        let errors = problems
            .iter()
            .map(|(place, name, message)| {
                serde_json::json!({ "in": place.as_str(), "name": name, "message": message })
            })
            .collect();
        Flow::Respond(Answer::problem_with_errors(
            StatusCode::BAD_REQUEST,
            "invalid-parameters",
            "Bad Request",
            &detail,
            errors,
        ))
    }
}
