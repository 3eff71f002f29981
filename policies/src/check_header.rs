//! `check-header`: reject requests whose header is missing or has a value not allowed.

use crate::{status, Answer, Flow, Policy, RequestCtx};
use http::HeaderName;
use pingora_http::RequestHeader;
use tollgate_config::CheckHeaderDef;

/// `check-header` (inbound only; in other sections it does nothing).
///
/// The header must be present. With a non-empty `values` list, one of its values must equal
/// one of the allowed values, whole (a comma-separated list in one header line is one value,
/// not several), ASCII case-insensitively with `ignore_case`. When the header appears on
/// several lines, any line may match. Otherwise the request is answered with
/// `failed_status` (401 by default) and a problem+json body whose `detail` is
/// `failed_message` (or a generic message when it is empty); the answer is built once.
#[derive(Debug)]
pub(crate) struct CheckHeader {
    name: HeaderName,
    values: Vec<Box<[u8]>>,
    ignore_case: bool,
    failure: Answer,
}

impl CheckHeader {
    /// Prepare the policy.
    pub(crate) fn new(def: &CheckHeaderDef) -> CheckHeader {
        let generic;
        let detail = if def.failed_message.is_empty() {
            generic = format!(
                "The request header `{}` is missing or has a value that is not allowed.",
                def.name
            );
            &generic
        } else {
            &def.failed_message
        };
        let code = status(def.failed_status);
        CheckHeader {
            name: def.name.clone(),
            values: def
                .values
                .iter()
                .map(|v| v.as_bytes().to_vec().into_boxed_slice())
                .collect(),
            ignore_case: def.ignore_case,
            failure: Answer::problem(code, "check-header", "Header check failed", detail),
        }
    }

    fn allowed(&self, value: &[u8]) -> bool {
        self.values.iter().any(|allowed| {
            if self.ignore_case {
                allowed.eq_ignore_ascii_case(value)
            } else {
                **allowed == *value
            }
        })
    }
}

impl Policy for CheckHeader {
    fn inbound(&self, req: &mut RequestHeader, _ctx: &mut RequestCtx) -> Flow {
        let mut present = req.headers.get_all(&self.name).iter().peekable();
        let ok = match present.peek() {
            None => false,
            Some(_) if self.values.is_empty() => true,
            Some(_) => present.any(|v| self.allowed(v.as_bytes())),
        };
        if ok {
            Flow::Continue
        } else {
            Flow::Respond(self.failure.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::*;
    use http::StatusCode;

    fn policy(values: &[&str], ignore_case: bool, status: u16, msg: &str) -> CheckHeader {
        CheckHeader::new(&CheckHeaderDef {
            name: HeaderName::from_static("x-key"),
            values: values.iter().map(|v| v.to_string()).collect(),
            ignore_case,
            failed_status: status,
            failed_message: msg.into(),
        })
    }

    fn check(p: &CheckHeader, headers: &[(&str, &str)]) -> Option<Answer> {
        let mut r = req("GET", "/x", headers);
        match p.inbound(&mut r, &mut ctx()) {
            Flow::Continue => None,
            Flow::Respond(a) => Some(a),
            Flow::Wait(_) => panic!("check-header never waits"),
        }
    }

    #[test]
    fn presence_only() {
        let p = policy(&[], false, 401, "");
        assert!(check(&p, &[("X-Key", "anything")]).is_none());
        assert!(check(&p, &[("X-Key", "")]).is_none());
        let a = check(&p, &[("X-Other", "1")]).unwrap();
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.is_error);
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(body["type"], "urn:tollgate:problem:check-header");
        assert_eq!(body["status"], 401);
        assert!(body["detail"].as_str().unwrap().contains("x-key"));
        assert_eq!(a.headers[0].1, "application/problem+json");
    }

    #[test]
    fn values_case_sensitive() {
        let p = policy(&["alpha", "Beta"], false, 403, "nope");
        assert!(check(&p, &[("X-Key", "alpha")]).is_none());
        assert!(check(&p, &[("X-Key", "Beta")]).is_none());
        let a = check(&p, &[("X-Key", "ALPHA")]).unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(body["detail"], "nope");
        assert!(check(&p, &[("X-Key", "alpha, Beta")]).is_some());
        assert!(check(&p, &[]).is_some());
    }

    #[test]
    fn values_ignore_case_and_multiple_lines() {
        let p = policy(&["alpha"], true, 400, "bad");
        assert!(check(&p, &[("X-Key", "ALPHA")]).is_none());
        assert!(check(&p, &[("X-Key", "nope"), ("X-Key", "Alpha")]).is_none());
        assert_eq!(
            check(&p, &[("X-Key", "alphabet")]).unwrap().status,
            StatusCode::BAD_REQUEST
        );
    }
}
