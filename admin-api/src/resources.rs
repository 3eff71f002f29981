//! `/products` and `/apis`: one item of the live policy file at a time.
//!
//! Reads come from the live snapshot's (normalized) file. Each write loads the live file,
//! replaces, inserts or removes the item, validates the whole file and stores it as a new
//! revision (see [`crate::apply`]): validation errors carry paths into the whole file
//! (`products[2].apis[0]`) and no line. Writes honour `If-Match` and `?dry_run=true` like
//! `PUT /config`. `PUT` of a new item answers 201 with `Location`, of an existing one 200.

use crate::apply::{write_config_blocking, ApplyFailure, ApplyOutcome, IfMatch, WriteRequest};
use crate::auth::{Reader, Writer};
use crate::config_api::{outcome_response, WriteQuery};
use crate::extract::{ConfigBody, P, Q};
use crate::problem::{etag, FieldError, Problem};
use crate::{page_limit, AdminState, ListQuery};
use axum::extract::State;
use axum::http::header::{ETAG, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_yaml::{Mapping, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tollgate_config::PolicyFile;
use tollgate_store::RevisionSource;
use utoipa::ToSchema;

/// Which list of the policy file.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Product,
    Api,
}

impl Kind {
    /// The key of the list in the file.
    fn key(self) -> &'static str {
        match self {
            Kind::Product => "products",
            Kind::Api => "apis",
        }
    }

    /// The word for one item.
    fn noun(self) -> &'static str {
        match self {
            Kind::Product => "product",
            Kind::Api => "API",
        }
    }

    /// The audit target prefix.
    fn target(self) -> &'static str {
        match self {
            Kind::Product => "product",
            Kind::Api => "api",
        }
    }

    /// The items of `file`, as JSON, with their ids.
    fn items(self, file: &PolicyFile) -> Result<Vec<(String, serde_json::Value)>, Problem> {
        fn all<T: Serialize>(
            items: &[T],
            id: impl Fn(&T) -> &str,
        ) -> Result<Vec<(String, serde_json::Value)>, Problem> {
            items
                .iter()
                .map(|i| {
                    serde_json::to_value(i)
                        .map(|v| (id(i).to_owned(), v))
                        .map_err(|e| Problem::internal("cannot serialize the item", &e))
                })
                .collect()
        }
        match self {
            Kind::Product => all(&file.products, |p| &p.id),
            Kind::Api => all(&file.apis, |a| &a.id),
        }
    }
}

/// A page of products or APIs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ItemPage {
    /// Items in file order, as in the policy file (normalized).
    items: Vec<serde_json::Value>,
    /// Cursor of the next page, or null on the last one.
    next: Option<String>,
}

fn list(state: &AdminState, kind: Kind, query: ListQuery) -> Result<Json<ItemPage>, Problem> {
    let limit = page_limit(query.limit)?;
    let offset = match query.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| Problem::bad_request("invalid cursor"))?,
    };
    let snap = state.gateway.snapshot();
    let all = kind.items(&snap.config.file)?;
    let total = all.len();
    let end = offset.saturating_add(limit).min(total);
    let items = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(_, v)| v)
        .collect();
    let next = (end < total).then(|| end.to_string());
    Ok(Json(ItemPage { items, next }))
}

fn get(state: &AdminState, kind: Kind, id: &str) -> Result<Response, Problem> {
    let snap = state.gateway.snapshot();
    let item = kind
        .items(&snap.config.file)?
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, v)| v)
        .ok_or_else(|| Problem::not_found(format!("{} `{id}` does not exist", kind.noun())))?;
    let mut resp = Json(item).into_response();
    resp.headers_mut().insert(ETAG, etag(snap.revision));
    Ok(resp)
}

/// The live file as a YAML value, with `key` as a sequence.
fn file_value(file: &PolicyFile) -> Result<Value, ApplyFailure> {
    serde_yaml::to_value(file).map_err(|e| ApplyFailure::Store(format!("serialize: {e}")))
}

fn items_mut<'v>(file: &'v mut Value, key: &str) -> Result<&'v mut Vec<Value>, ApplyFailure> {
    let Value::Mapping(map) = file else {
        return Err(ApplyFailure::Store("the file is not a mapping".into()));
    };
    let entry = map
        .entry(Value::String(key.to_owned()))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !entry.is_sequence() {
        *entry = Value::Sequence(Vec::new());
    }
    match entry {
        Value::Sequence(items) => Ok(items),
        _ => unreachable!("just made a sequence"),
    }
}

fn id_of(item: &Value) -> Option<&str> {
    item.get("id").and_then(Value::as_str)
}

fn to_text(file: &Value) -> Result<String, ApplyFailure> {
    serde_yaml::to_string(file).map_err(|e| ApplyFailure::Store(format!("serialize: {e}")))
}

/// The body as an item with `id` set: a mapping whose `id`, when present, is the path's.
fn item_from_body(body: &ConfigBody, id: &str) -> Result<Value, Problem> {
    let value = body.to_value()?;
    let Value::Mapping(fields) = value else {
        return Err(Problem::invalid(
            "the body must be an object",
            vec![FieldError::at("", "expected an object")],
        ));
    };
    match fields.get("id") {
        None => {}
        Some(Value::String(s)) if s == id => {}
        Some(_) => {
            return Err(Problem::invalid(
                "the body's id differs from the path's",
                vec![FieldError::at(
                    "id",
                    format!("must be `{id}` (the path's id)"),
                )],
            ))
        }
    }
    let mut item = Mapping::new();
    item.insert("id".into(), Value::String(id.to_owned()));
    for (k, v) in fields {
        if k.as_str() != Some("id") {
            item.insert(k, v);
        }
    }
    Ok(Value::Mapping(item))
}

async fn put(
    state: &AdminState,
    kind: Kind,
    writer: Writer,
    headers: &HeaderMap,
    query: WriteQuery,
    id: String,
    body: ConfigBody,
) -> Result<Response, Problem> {
    let item = item_from_body(&body, &id)?;
    let created = Arc::new(AtomicBool::new(false));
    let created_by_write = Arc::clone(&created);
    let req = WriteRequest {
        source: RevisionSource::Api,
        actor: writer.actor(),
        action: match kind {
            Kind::Product => "product.put",
            Kind::Api => "api.put",
        },
        target: format!("{}:{id}", kind.target()),
        if_match: IfMatch::from_headers(headers),
        dry_run: query.dry_run,
        assembled: true,
    };
    let item_id = id.clone();
    let outcome = write_config_blocking(state, req, move |snap| {
        let mut file = file_value(&snap.config.file)?;
        let items = items_mut(&mut file, kind.key())?;
        match items.iter_mut().find(|i| id_of(i) == Some(&item_id)) {
            Some(existing) => *existing = item,
            None => {
                items.push(item);
                created_by_write.store(true, Ordering::Relaxed);
            }
        }
        to_text(&file)
    })
    .await?;
    let dry_run = outcome.dry_run;
    let mut resp = outcome_response(outcome);
    if created.load(Ordering::Relaxed) && !dry_run {
        *resp.status_mut() = StatusCode::CREATED;
        let location = format!("/{}/{id}", kind.key());
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(LOCATION, v);
        }
    }
    Ok(resp)
}

async fn delete(
    state: &AdminState,
    kind: Kind,
    writer: Writer,
    headers: &HeaderMap,
    query: WriteQuery,
    id: String,
) -> Result<Response, Problem> {
    let req = WriteRequest {
        source: RevisionSource::Api,
        actor: writer.actor(),
        action: match kind {
            Kind::Product => "product.delete",
            Kind::Api => "api.delete",
        },
        target: format!("{}:{id}", kind.target()),
        if_match: IfMatch::from_headers(headers),
        dry_run: query.dry_run,
        assembled: true,
    };
    let outcome = write_config_blocking(state, req, move |snap| {
        let mut file = file_value(&snap.config.file)?;
        let items = items_mut(&mut file, kind.key())?;
        let before = items.len();
        items.retain(|i| id_of(i) != Some(&id));
        if items.len() == before {
            return Err(ApplyFailure::NotFound(format!("{} `{id}`", kind.noun())));
        }
        to_text(&file)
    })
    .await?;
    Ok(outcome_response(outcome))
}

/// `GET /products`.
#[utoipa::path(
    get,
    path = "/products",
    tag = "products",
    description = "The live config's products, in file order.",
    params(ListQuery),
    responses((status = 200, description = "A page of products.", body = ItemPage))
)]
pub(crate) async fn list_products(
    _: Reader,
    State(state): State<AdminState>,
    Q(query): Q<ListQuery>,
) -> Result<Json<ItemPage>, Problem> {
    list(&state, Kind::Product, query)
}

/// `GET /products/{id}`.
#[utoipa::path(
    get,
    path = "/products/{id}",
    tag = "products",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product, as in the policy file.", body = serde_json::Value,
            headers(("ETag" = String, description = "The live revision"))),
        (status = 404, description = "No such product.")
    )
)]
pub(crate) async fn get_product(
    _: Reader,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Response, Problem> {
    get(&state, Kind::Product, &id)
}

/// `PUT /products/{id}`.
#[utoipa::path(
    put,
    path = "/products/{id}",
    tag = "products",
    description = "Create or replace one product (the policy file's product object; `id` may \
        be left out, else it must be the path's). A new revision of the whole file.",
    params(("id" = String, Path, description = "Product id"), WriteQuery,
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`")),
    request_body(description = "The product.", content(
        (serde_json::Value = "application/json"),
        (String = "application/yaml")
    )),
    responses(
        (status = 200, description = "Replaced.", body = ApplyOutcome),
        (status = 201, description = "Created.", body = ApplyOutcome,
            headers(("Location" = String, description = "`/products/{id}`"))),
        (status = 412, description = "`If-Match` does not name the live revision."),
        (status = 422, description = "The resulting file is invalid: every error.")
    )
)]
pub(crate) async fn put_product(
    writer: Writer,
    State(state): State<AdminState>,
    headers: HeaderMap,
    P(id): P<String>,
    Q(query): Q<WriteQuery>,
    body: ConfigBody,
) -> Result<Response, Problem> {
    put(&state, Kind::Product, writer, &headers, query, id, body).await
}

/// `DELETE /products/{id}`.
#[utoipa::path(
    delete,
    path = "/products/{id}",
    tag = "products",
    description = "Remove one product: a new revision of the whole file. Subscriptions \
        scoped to it stay, and are refused by the proxy (403) until it exists again.",
    params(("id" = String, Path, description = "Product id"), WriteQuery,
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`")),
    responses(
        (status = 200, description = "Removed.", body = ApplyOutcome),
        (status = 404, description = "No such product."),
        (status = 412, description = "`If-Match` does not name the live revision.")
    )
)]
pub(crate) async fn delete_product(
    writer: Writer,
    State(state): State<AdminState>,
    headers: HeaderMap,
    P(id): P<String>,
    Q(query): Q<WriteQuery>,
) -> Result<Response, Problem> {
    delete(&state, Kind::Product, writer, &headers, query, id).await
}

/// `GET /apis`.
#[utoipa::path(
    get,
    path = "/apis",
    tag = "apis",
    description = "The live config's APIs with their operations, in file order.",
    params(ListQuery),
    responses((status = 200, description = "A page of APIs.", body = ItemPage))
)]
pub(crate) async fn list_apis(
    _: Reader,
    State(state): State<AdminState>,
    Q(query): Q<ListQuery>,
) -> Result<Json<ItemPage>, Problem> {
    list(&state, Kind::Api, query)
}

/// `GET /apis/{id}`.
#[utoipa::path(
    get,
    path = "/apis/{id}",
    tag = "apis",
    params(("id" = String, Path, description = "API id")),
    responses(
        (status = 200, description = "The API with its operations, as in the policy file.",
            body = serde_json::Value, headers(("ETag" = String, description = "The live revision"))),
        (status = 404, description = "No such API.")
    )
)]
pub(crate) async fn get_api(
    _: Reader,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Response, Problem> {
    get(&state, Kind::Api, &id)
}

/// What `GET /apis/{id}/upstream` answers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UpstreamDoc {
    /// The API.
    api: String,
    /// Its targets, as configured, with the addresses they stand for now.
    targets: Vec<TargetDoc>,
}

/// One configured target.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TargetDoc {
    /// `scheme://host:port` and the base path, as configured.
    target: String,
    /// Its share of the requests relative to the other targets' (0: drained).
    weight: u32,
    /// The addresses its host stands for now (one for an IP address; every IPv4 address
    /// of a host name, else every IPv6 one; none while the name does not resolve).
    addresses: Vec<AddressDoc>,
}

/// One address of a target.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AddressDoc {
    /// `ip:port`.
    address: String,
    /// Whether it passes the API's active health check (true without one); `null` in a
    /// process that proxies nothing (`tollgate admin`), which runs no check.
    healthy: Option<bool>,
    /// Seconds it is still skipped after refusing a connection or answering 5xx too many
    /// times in a row (`upstream.outlier_detection`); absent when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    ejected_for_seconds: Option<f64>,
}

/// `GET /apis/{id}/upstream`.
#[utoipa::path(
    get,
    path = "/apis/{id}/upstream",
    tag = "apis",
    description = "The API's upstream targets as this process sees them now: the addresses \
        each target's host stands for (host names are resolved again every \
        `--dns-refresh` seconds) and their health.",
    params(("id" = String, Path, description = "API id")),
    responses(
        (status = 200, description = "The targets.", body = UpstreamDoc),
        (status = 404, description = "No such API.")
    )
)]
pub(crate) async fn get_api_upstream(
    _: Reader,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Json<UpstreamDoc>, Problem> {
    let snap = state.gateway.snapshot();
    let (api, runtime) = snap
        .config
        .apis
        .iter()
        .zip(&snap.apis)
        .find(|(api, _)| *api.id == *id)
        .ok_or_else(|| Problem::not_found(format!("API `{id}` does not exist")))?;
    let pool = &runtime.pool;
    let checked = state.gateway.health_checked();
    let targets = pool
        .def
        .targets
        .iter()
        .zip(pool.member_health())
        .map(|(t, members)| TargetDoc {
            target: format!(
                "{}://{}{}",
                if t.tls { "https" } else { "http" },
                t.authority(),
                t.base_path
            ),
            weight: t.weight,
            addresses: members
                .into_iter()
                .map(|(address, healthy, ejected)| AddressDoc {
                    address: address.to_string(),
                    healthy: checked.then_some(healthy),
                    ejected_for_seconds: ejected
                        .filter(|_| checked)
                        .map(|d| (d.as_secs_f64() * 10.0).ceil() / 10.0),
                })
                .collect(),
        })
        .collect();
    Ok(Json(UpstreamDoc {
        api: api.id.to_string(),
        targets,
    }))
}

/// `PUT /apis/{id}`.
#[utoipa::path(
    put,
    path = "/apis/{id}",
    tag = "apis",
    description = "Create or replace one API with its operations (the policy file's API \
        object; `id` may be left out, else it must be the path's). A new revision of the \
        whole file.",
    params(("id" = String, Path, description = "API id"), WriteQuery,
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`")),
    request_body(description = "The API.", content(
        (serde_json::Value = "application/json"),
        (String = "application/yaml")
    )),
    responses(
        (status = 200, description = "Replaced.", body = ApplyOutcome),
        (status = 201, description = "Created.", body = ApplyOutcome,
            headers(("Location" = String, description = "`/apis/{id}`"))),
        (status = 412, description = "`If-Match` does not name the live revision."),
        (status = 422, description = "The resulting file is invalid: every error.")
    )
)]
pub(crate) async fn put_api(
    writer: Writer,
    State(state): State<AdminState>,
    headers: HeaderMap,
    P(id): P<String>,
    Q(query): Q<WriteQuery>,
    body: ConfigBody,
) -> Result<Response, Problem> {
    put(&state, Kind::Api, writer, &headers, query, id, body).await
}

/// `DELETE /apis/{id}`.
#[utoipa::path(
    delete,
    path = "/apis/{id}",
    tag = "apis",
    description = "Remove one API: a new revision of the whole file. Refused (422) while a \
        product still lists it: remove it from the product first.",
    params(("id" = String, Path, description = "API id"), WriteQuery,
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`")),
    responses(
        (status = 200, description = "Removed.", body = ApplyOutcome),
        (status = 404, description = "No such API."),
        (status = 412, description = "`If-Match` does not name the live revision."),
        (status = 422, description = "The resulting file is invalid.")
    )
)]
pub(crate) async fn delete_api(
    writer: Writer,
    State(state): State<AdminState>,
    headers: HeaderMap,
    P(id): P<String>,
    Q(query): Q<WriteQuery>,
) -> Result<Response, Problem> {
    delete(&state, Kind::Api, writer, &headers, query, id).await
}
