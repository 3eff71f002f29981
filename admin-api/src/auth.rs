//! Admin authentication: `Authorization: Bearer TOKEN`, as extractors.
//!
//! A handler that reads takes [`Reader`] as its first argument, one that writes takes
//! [`Writer`]: the check runs before any other extractor (so a request without a token gets
//! 401 before its body is looked at). Tokens are compared through their SHA-256 digests in
//! constant time, so neither the content nor the length of a configured token leaks through
//! timing.
//!
//! A third role, `dataplane` (`TOLLGATE_DATAPLANE_TOKEN`), may call only the control
//! channel (`/control/*`, [`DataPlaneCaller`]): it receives key material, so it reads
//! nothing else and writes nothing; every other call answers it 403.

use crate::problem::Problem;
use crate::AdminState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The roles of contract §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Read and write.
    Admin,
    /// Read (and, in later parts, analytics and cache purge).
    Operator,
    /// A data plane: the control channel only.
    DataPlane,
}

impl Role {
    /// The role name, used as the audit log's actor.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::DataPlane => "dataplane",
        }
    }
}

/// Any valid token: the caller may read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader;

/// The admin token: the caller may write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer;

impl Writer {
    /// The audit log's actor.
    pub(crate) fn actor(self) -> &'static str {
        Role::Admin.name()
    }
}

/// The admin or the operator token on `PUT /config`: the admin may write; the operator
/// may only plan (`?dry_run=true`, which stores and applies nothing), so that a CI
/// pipeline's `tollgate diff` needs no admin token. See [`Planner::may_write`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planner(Role);

impl Planner {
    /// The audit log's actor, when the call may go on: always for the admin, only for a
    /// dry run for the operator (403 otherwise).
    pub(crate) fn may_write(self, dry_run: bool) -> Result<&'static str, Problem> {
        match self.0 {
            Role::Admin => Ok(self.0.name()),
            Role::Operator if dry_run => Ok(self.0.name()),
            role => Err(Problem::forbidden(format!(
                "the {} role may only plan this change (?dry_run=true)",
                role.name()
            ))),
        }
    }
}

impl FromRequestParts<AdminState> for Planner {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        reading_role(parts, state).map(Planner)
    }
}

/// The admin or the operator token: the caller may purge the response cache (contract
/// §1: the operator role reads, sees analytics and purges the cache).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Purger(Role);

impl Purger {
    /// The audit log's actor.
    pub(crate) fn actor(self) -> &'static str {
        self.0.name()
    }
}

fn token_matches(given: &[u8; 32], configured: &str) -> bool {
    if configured.is_empty() {
        return false;
    }
    let configured: [u8; 32] = Sha256::digest(configured.as_bytes()).into();
    bool::from(given.ct_eq(&configured))
}

/// The role of the request's bearer token; 401 when there is none or it is unknown.
pub(crate) fn role_of(parts: &Parts, state: &AdminState) -> Result<Role, Problem> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(Problem::unauthorized(
            "this call needs `Authorization: Bearer TOKEN`",
            false,
        ));
    };
    let value = value.to_str().unwrap_or("");
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(Problem::unauthorized(
                "the Authorization header must use the Bearer scheme",
                false,
            ))
        }
    };
    let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Both comparisons always run: the time taken does not tell which token matched.
    let admin = token_matches(&given, &state.tokens.admin);
    let operator = state
        .tokens
        .operator
        .as_deref()
        .is_some_and(|t| token_matches(&given, t));
    let dataplane = state
        .tokens
        .dataplane
        .as_deref()
        .is_some_and(|t| token_matches(&given, t));
    if admin {
        Ok(Role::Admin)
    } else if operator {
        Ok(Role::Operator)
    } else if dataplane {
        Ok(Role::DataPlane)
    } else {
        Err(Problem::unauthorized("unknown token", true))
    }
}

impl FromRequestParts<AdminState> for Reader {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        reading_role(parts, state).map(|_| Reader)
    }
}

impl FromRequestParts<AdminState> for Writer {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        match role_of(parts, state)? {
            Role::Admin => Ok(Writer),
            role => Err(Problem::forbidden(format!(
                "the {} role may not make this change",
                role.name()
            ))),
        }
    }
}

impl FromRequestParts<AdminState> for Purger {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        reading_role(parts, state).map(Purger)
    }
}

/// The admin or the operator role (the ones that read); the dataplane role gets 403.
fn reading_role(parts: &Parts, state: &AdminState) -> Result<Role, Problem> {
    match role_of(parts, state)? {
        role @ (Role::Admin | Role::Operator) => Ok(role),
        Role::DataPlane => Err(only_control()),
    }
}

fn only_control() -> Problem {
    Problem::forbidden("the dataplane role may only call the control channel (/control/*)")
}

/// The admin or the dataplane token: the caller may take config snapshots (with the
/// installation secret and key digests) and hand in analytics. The operator token may not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataPlaneCaller;

impl FromRequestParts<AdminState> for DataPlaneCaller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        match role_of(parts, state)? {
            Role::Admin | Role::DataPlane => Ok(DataPlaneCaller),
            Role::Operator => Err(Problem::forbidden(
                "the operator role may not read key material: use the dataplane token",
            )),
        }
    }
}
