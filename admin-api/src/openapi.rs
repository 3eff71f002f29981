//! The OpenAPI 3.1 description of the admin API, generated from the handlers'
//! `#[utoipa::path]` attributes. A test checks that it lists exactly the router's routes.

use crate::auth::Reader;
use crate::problem::{ProblemDoc, PROBLEM_JSON};
use crate::{config_api, resources, subscriptions, usage};
use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

/// The generated document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "The admin REST API of Tollgate (contract §4). Every call but `/healthz` \
            and `/readyz` needs `Authorization: Bearer TOKEN`: the admin token reads and \
            writes, the operator token reads and purges the cache. Every error is \
            `application/problem+json` \
            (RFC 9457); validation errors add `errors: [{path, message, line, column}]`. \
            Lists take `limit` (1 to 1000, default 50) and an opaque `cursor`, and answer \
            `{items, next}`."
    ),
    paths(
        crate::healthz,
        crate::readyz,
        openapi_json,
        crate::dashboard::index,
        crate::dashboard::asset,
        crate::analytics::requests,
        crate::analytics::metrics,
        crate::cache_api::purge,
        crate::cache_api::stats,
        crate::control::snapshot,
        crate::control::usage,
        config_api::get_config,
        config_api::put_config,
        config_api::list_revisions,
        config_api::get_revision,
        config_api::rollback,
        config_api::effective,
        resources::list_products,
        resources::get_product,
        resources::put_product,
        resources::delete_product,
        resources::list_apis,
        resources::get_api,
        resources::get_api_upstream,
        resources::put_api,
        resources::delete_api,
        subscriptions::create_subscription,
        subscriptions::list_subscriptions,
        subscriptions::get_subscription,
        subscriptions::patch_subscription,
        subscriptions::regenerate_primary,
        subscriptions::regenerate_secondary,
        subscriptions::secrets,
        subscriptions::delete_subscription,
        usage::get_usage,
        usage::reset_usage,
    ),
    components(schemas(
        ProblemDoc,
        crate::problem::FieldError,
        crate::control_delta::ControlDelta
    )),
    modifiers(&Conventions),
    security(("bearer" = [])),
    tags(
        (name = "probes", description = "Liveness and readiness (no token)."),
        (name = "config", description = "The policy file, its revisions, rollback, effective chains."),
        (name = "products", description = "Products of the live policy file."),
        (name = "apis", description = "APIs of the live policy file."),
        (name = "subscriptions", description = "Subscriptions and their keys."),
        (name = "cache", description = "The response cache: purge (admin or operator) and counters."),
        (name = "analytics", description = "Usage reports and Prometheus metrics (admin and operator)."),
        (name = "dashboard", description = "The operators' dashboard: a page and its static files (no token)."),
        (name = "control", description = "The data planes' channel to the control plane (dataplane or admin token)."),
        (name = "meta", description = "This description."),
    )
)]
pub(crate) struct ApiDoc;

/// Adds what every operation shares: the bearer scheme, 401 on calls that need a token,
/// 403 on writes, 400 and 415 on calls with a body, and the problem+json body of every
/// error answer.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            // The operator may purge the cache: that write has no 403.
            let operator_writes = path == "/cache/purge";
            let ops: [(&mut Option<Operation>, bool); 5] = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ];
            for (op, write) in ops {
                let Some(op) = op.as_mut() else { continue };
                // An operation with its own (empty) security list needs no token.
                let open = op.security.is_some();
                let has_body = op.request_body.is_some();
                let responses = &mut op.responses.responses;
                if !open {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| RefOr::T(Response::new("No token, or an unknown one.")));
                    if write && !operator_writes {
                        responses.entry("403".into()).or_insert_with(|| {
                            RefOr::T(Response::new("The operator token may not write."))
                        });
                    }
                }
                if has_body {
                    responses.entry("400".into()).or_insert_with(|| {
                        RefOr::T(Response::new(
                            "The body cannot be read (e.g. malformed JSON).",
                        ))
                    });
                    responses.entry("415".into()).or_insert_with(|| {
                        RefOr::T(Response::new("The body's media type is not accepted."))
                    });
                }
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if is_error && response.content.is_empty() {
                        response.content.insert(
                            PROBLEM_JSON.to_owned(),
                            Content::new(Some(Ref::from_schema_name("Problem"))),
                        );
                    }
                }
            }
        }
    }
}

/// The document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = serde_json::Value))
)]
pub(crate) async fn openapi_json(_: Reader) -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
