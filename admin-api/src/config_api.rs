//! `/config` calls: the live policy file, its revisions, rollback and effective chains.

use crate::apply::{write_config_blocking, ApplyFailure, ApplyOutcome, IfMatch, WriteRequest};
use crate::auth::{Planner, Reader, Writer};
use crate::extract::{ConfigBody, JsonBody, P, Q};
use crate::problem::{etag, store_problem, FieldError, Problem};
use crate::{page_limit, AdminState, ListQuery};
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tollgate_config::PolicyFile;
use tollgate_store::{RevisionMeta, RevisionSource};
use utoipa::{IntoParams, ToSchema};

/// Whether the caller asked for YAML (`Accept` naming a YAML media type).
fn wants_yaml(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .any(|m| {
            matches!(
                m.as_str(),
                "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
            )
        })
}

/// `GET /config`: the live policy file.
#[utoipa::path(
    get,
    path = "/config",
    tag = "config",
    description = "The live policy file, normalized (defaults filled in, comments dropped): \
        YAML with `Accept: application/yaml` (or `application/x-yaml`, `text/yaml`), else \
        JSON. `ETag` is the live revision, for `If-Match` on writes.",
    responses(
        (status = 200, description = "The live policy file.",
            headers(("ETag" = String, description = "`\"<revision>\"`")),
            content(
                (serde_json::Value = "application/json"),
                (String = "application/yaml")
            ))
    )
)]
pub(crate) async fn get_config(
    _: Reader,
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let snap = state.gateway.snapshot();
    let mut resp = if wants_yaml(&headers) {
        let text = serde_yaml::to_string(&snap.config.file)
            .map_err(|e| Problem::internal("cannot serialize the config", &e))?;
        let mut resp = text.into_response();
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
        resp
    } else {
        Json(&snap.config.file).into_response()
    };
    resp.headers_mut().insert(ETAG, etag(snap.revision));
    Ok(resp)
}

/// Query of the config writes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WriteQuery {
    /// `true`: validate and answer the plan only; nothing is stored or applied.
    #[serde(default)]
    pub(crate) dry_run: bool,
}

/// A successful write: the outcome with the new `ETag`.
pub(crate) fn outcome_response(outcome: ApplyOutcome) -> Response {
    let tag = etag(outcome.revision);
    let mut resp = Json(outcome).into_response();
    resp.headers_mut().insert(ETAG, tag);
    resp
}

/// `PUT /config`: replace the policy file.
#[utoipa::path(
    put,
    path = "/config",
    tag = "config",
    description = "Replace the policy file (YAML or JSON by `Content-Type`). Every validation \
        error is reported at once (422), with its path, line and column; the live config is \
        then untouched. `If-Match: \"<revision>\"` (or `*`) makes the write conditional (412 \
        when another revision is live). `?dry_run=true` answers the plan only; the operator \
        token may make that call (and only that: 403 without it), so `tollgate diff` needs \
        no admin token. A body whose text equals the live revision's is not stored again \
        (`unchanged: true`).",
    params(WriteQuery, ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`")),
    request_body(description = "The whole policy file.", content(
        (serde_json::Value = "application/json"),
        (String = "application/yaml")
    )),
    responses(
        (status = 200, description = "Applied (or planned): the revision and the changes.",
            body = ApplyOutcome, headers(("ETag" = String, description = "The live revision"))),
        (status = 412, description = "`If-Match` does not name the live revision."),
        (status = 415, description = "Neither YAML nor JSON."),
        (status = 422, description = "Invalid: every error.")
    )
)]
pub(crate) async fn put_config(
    planner: Planner,
    State(state): State<AdminState>,
    headers: HeaderMap,
    Q(query): Q<WriteQuery>,
    body: ConfigBody,
) -> Result<Response, Problem> {
    let actor = planner.may_write(query.dry_run)?;
    let syntax = body.json_syntax_error();
    let req = WriteRequest {
        source: RevisionSource::Api,
        actor,
        action: "config.put",
        target: "config".to_owned(),
        if_match: IfMatch::from_headers(&headers),
        dry_run: query.dry_run,
        assembled: false,
    };
    let text = body.text;
    let outcome = write_config_blocking(&state, req, move |_| match syntax {
        Some(err) => Err(ApplyFailure::Invalid(vec![err])),
        None => Ok(text),
    })
    .await?;
    Ok(outcome_response(outcome))
}

/// A stored revision's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevisionView {
    /// 1, 2, 3... in order of creation.
    revision: u64,
    /// RFC 3339 UTC.
    created_at: String,
    /// Hex SHA-256 of the text.
    sha256: String,
    /// `file` (`--config` at start), `api` (admin API writes) or `rollback`.
    source: String,
    /// Who made it: the role name (`admin`) or `file`.
    author: String,
}

impl From<RevisionMeta> for RevisionView {
    fn from(m: RevisionMeta) -> RevisionView {
        let source = match m.source {
            RevisionSource::File => "file",
            RevisionSource::Api => "api",
            RevisionSource::Rollback => "rollback",
        };
        RevisionView {
            revision: m.revision,
            created_at: m.created_at,
            sha256: m.sha256,
            source: source.to_owned(),
            author: m.author,
        }
    }
}

/// A page of revisions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevisionPage {
    /// Newest first.
    items: Vec<RevisionView>,
    /// Cursor of the next page, or null on the last one.
    next: Option<String>,
}

/// `GET /config/revisions`.
#[utoipa::path(
    get,
    path = "/config/revisions",
    tag = "config",
    description = "The stored revisions, newest first, without their text.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of revisions.", body = RevisionPage),
        (status = 400, description = "Bad `limit` or `cursor`.")
    )
)]
pub(crate) async fn list_revisions(
    _: Reader,
    State(state): State<AdminState>,
    Q(query): Q<ListQuery>,
) -> Result<Json<RevisionPage>, Problem> {
    let limit = page_limit(query.limit)?;
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| Problem::bad_request("invalid cursor"))?,
        ),
    };
    let mut metas = state
        .store
        .list_revisions(before, limit + 1)
        .map_err(|e| store_problem(e, "revision"))?;
    let next = if metas.len() > limit {
        metas.truncate(limit);
        metas.last().map(|m| m.revision.to_string())
    } else {
        None
    };
    Ok(Json(RevisionPage {
        items: metas.into_iter().map(RevisionView::from).collect(),
        next,
    }))
}

/// One revision with its text.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevisionDetail {
    /// Metadata.
    #[serde(flatten)]
    meta: RevisionView,
    /// The policy file text as submitted (YAML or JSON).
    text: String,
}

/// `GET /config/revisions/{n}`.
#[utoipa::path(
    get,
    path = "/config/revisions/{n}",
    tag = "config",
    params(("n" = u64, Path, description = "Revision number")),
    responses(
        (status = 200, description = "The revision and its text.", body = RevisionDetail),
        (status = 404, description = "No such revision.")
    )
)]
pub(crate) async fn get_revision(
    _: Reader,
    State(state): State<AdminState>,
    P(n): P<u64>,
) -> Result<Json<RevisionDetail>, Problem> {
    let rev = state
        .store
        .revision(n)
        .map_err(|e| store_problem(e, &format!("revision {n}")))?;
    Ok(Json(RevisionDetail {
        meta: rev.meta.into(),
        text: rev.text,
    }))
}

/// `POST /config/rollback` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    /// The revision to make live again.
    revision: u64,
}

/// `POST /config/rollback`.
#[utoipa::path(
    post,
    path = "/config/rollback",
    tag = "config",
    description = "Make revision n live again, as a new revision (source `rollback`) with n's \
        text. Honours `If-Match`. Rolling back to a text equal to the live revision's stores \
        nothing (`unchanged: true`). `?dry_run=true` answers the plan only (`dry_run: true`, \
        `revision` the live one): nothing is stored or applied.",
    params(WriteQuery, ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`")),
    request_body = RollbackBody,
    responses(
        (status = 200, description = "The new revision and the changes.", body = ApplyOutcome,
            headers(("ETag" = String, description = "The live revision"))),
        (status = 404, description = "No such revision."),
        (status = 412, description = "`If-Match` does not name the live revision."),
        (status = 422, description = "The old revision is no longer valid or runnable.")
    )
)]
pub(crate) async fn rollback(
    writer: Writer,
    State(state): State<AdminState>,
    headers: HeaderMap,
    Q(query): Q<WriteQuery>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> Result<Response, Problem> {
    let n = body.revision;
    let rev = state
        .store
        .revision(n)
        .map_err(|e| store_problem(e, &format!("revision {n}")))?;
    let req = WriteRequest {
        source: RevisionSource::Rollback,
        actor: writer.actor(),
        action: "config.rollback",
        target: format!("revision:{n}"),
        if_match: IfMatch::from_headers(&headers),
        dry_run: query.dry_run,
        assembled: false,
    };
    let text = rev.text;
    let outcome = write_config_blocking(&state, req, move |_| Ok(text)).await?;
    Ok(outcome_response(outcome))
}

/// `GET /config/effective` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EffectiveQuery {
    /// API id.
    api: String,
    /// Operation id; absent: the API-wide chain (what runs when no operation matches, or
    /// for an API without operations).
    operation: Option<String>,
    /// Product id (the caller's subscription scope); absent: no product scope (subscriptions
    /// scoped `api:ID` or `all`, or no subscription).
    product: Option<String>,
}

/// The merged policy chain of one (API, operation, product).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EffectiveView {
    /// The live revision it was computed from.
    revision: u64,
    /// API id.
    api: String,
    /// Operation id, if one was asked for.
    operation: Option<String>,
    /// Product id, if one was asked for.
    product: Option<String>,
    /// Inbound policies, in run order.
    inbound: Vec<serde_json::Value>,
    /// Backend policies.
    backend: Vec<serde_json::Value>,
    /// Outbound policies.
    outbound: Vec<serde_json::Value>,
    /// On-error policies.
    on_error: Vec<serde_json::Value>,
}

/// The entry of the policy file that `origin` (`scope/section/index`) names.
fn raw_entry<'f>(file: &'f PolicyFile, origin: &str) -> Option<&'f serde_yaml::Value> {
    let mut parts = origin.rsplitn(3, '/');
    let index: usize = parts.next()?.parse().ok()?;
    let section = parts.next()?;
    let scope = parts.next()?;
    let sections = if scope == "global" {
        &file.policies
    } else if let Some(id) = scope.strip_prefix("product:") {
        &file.products.iter().find(|p| p.id == id)?.policies
    } else {
        let rest = scope.strip_prefix("api:")?;
        match rest.split_once("/operation:") {
            None => &file.apis.iter().find(|a| a.id == rest)?.policies,
            Some((api, op)) => {
                let api = file.apis.iter().find(|a| a.id == api)?;
                &api.operations
                    .as_ref()?
                    .iter()
                    .find(|o| o.id == op)?
                    .policies
            }
        }
    };
    let list = match section {
        "inbound" => &sections.inbound,
        "backend" => &sections.backend,
        "outbound" => &sections.outbound,
        "on_error" => &sections.on_error,
        _ => return None,
    };
    list.as_ref()?.get(index)
}

/// `{kind, origin, ...fields}` of one policy, fields as written in the file. A field named
/// `kind` or `origin` (`xml-to-json` has a `kind`) is shown as `field_kind` / `field_origin`.
fn policy_view(file: &PolicyFile, p: &tollgate_config::PolicyInstance) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut kind = p.def.kind().to_owned();
    let mut fields = serde_json::Map::new();
    if let Some(serde_yaml::Value::Mapping(m)) = raw_entry(file, &p.origin) {
        if let Some((k, v)) = m.iter().next() {
            if let Some(k) = k.as_str() {
                kind = k.to_owned();
            }
            if let Ok(serde_json::Value::Object(f)) = serde_json::to_value(v) {
                fields = f;
            }
        }
    }
    out.insert("kind".into(), kind.into());
    out.insert("origin".into(), p.origin.to_string().into());
    for (k, v) in fields {
        let k = if k == "kind" || k == "origin" {
            format!("field_{k}")
        } else {
            k
        };
        out.insert(k, v);
    }
    serde_json::Value::Object(out)
}

/// `GET /config/effective`.
#[utoipa::path(
    get,
    path = "/config/effective",
    tag = "config",
    description = "The merged policy chain (global → product → API → operation, with `base` \
        resolved) that runs for one operation of one API, for callers of one product. Each \
        section is a list of `{kind, origin, ...fields}`: `origin` is `scope/section/index` of \
        the entry in the policy file, the fields are as written there (a field named `kind` \
        is shown as `field_kind`).",
    params(EffectiveQuery),
    responses(
        (status = 200, description = "The chain.", body = EffectiveView),
        (status = 400, description = "`api` is missing."),
        (status = 404, description = "Unknown API, operation or product."),
        (status = 422, description = "The product does not contain the API.")
    )
)]
pub(crate) async fn effective(
    _: Reader,
    State(state): State<AdminState>,
    Q(q): Q<EffectiveQuery>,
) -> Result<Json<EffectiveView>, Problem> {
    let snap = state.gateway.snapshot();
    let config = &snap.config;
    let api_index = config
        .api_index(&q.api)
        .ok_or_else(|| Problem::not_found(format!("API `{}` does not exist", q.api)))?;
    let api = &config.apis[api_index];
    let op = match &q.operation {
        None => None,
        Some(op_id) => Some(
            api.operations
                .iter()
                .position(|o| &*o.id == op_id)
                .ok_or_else(|| {
                    Problem::not_found(format!("API `{}` has no operation `{op_id}`", q.api))
                })?,
        ),
    };
    let slot = match &q.product {
        None => 0,
        Some(pid) => {
            let pi = config
                .product_index(pid)
                .ok_or_else(|| Problem::not_found(format!("product `{pid}` does not exist")))?;
            api.product_slot(pi).ok_or_else(|| {
                Problem::invalid(
                    format!("product `{pid}` does not contain API `{}`", q.api),
                    vec![FieldError::at(
                        "product",
                        "the product does not contain the API",
                    )],
                )
            })?
        }
    };
    let chain = api.chain(slot, op);
    let view = |list: &[tollgate_config::PolicyInstance]| {
        list.iter()
            .map(|p| policy_view(&config.file, p))
            .collect::<Vec<_>>()
    };
    Ok(Json(EffectiveView {
        revision: snap.revision,
        api: q.api.clone(),
        operation: q.operation.clone(),
        product: q.product.clone(),
        inbound: view(&chain.inbound),
        backend: view(&chain.backend),
        outbound: view(&chain.outbound),
        on_error: view(&chain.on_error),
    }))
}
