//! `/subscriptions`: create, list, read, change state, rotate keys, delete.
//!
//! Keys are 43-character random strings ([`generate_key`]); only their HMAC digests under
//! the installation secret are stored ([`KeyRing::digest`]). A key is therefore shown once:
//! in the answer that made it.
//!
//! The proxy's key ring is built from every stored subscription at start ([`refresh_keys`]).
//! After that, a change touches only its own subscription in the ring, so its cost does not
//! grow with the number of subscriptions. Under one write lock, a change reads that
//! subscription's row (the digests the ring holds for it), writes to the store, reads the
//! row again, and then maps the new digests and unmaps the old ones
//! ([`KeyRing::upsert`], [`KeyRing::remove`]). So the ring follows the store: it changes only
//! after the store write, from what the store holds, never from what the handler meant to
//! write. Two changes to one subscription (two regenerations at once) cannot interleave. A
//! regenerated key stops working before the answer leaves.
//!
//! Scope rule: `product:ID` and `api:ID` must name a product or an API of the live config
//! when the subscription is created (else 422). A product or API removed later leaves its
//! subscriptions in place; the proxy refuses them (403) until it exists again.

use crate::auth::{Reader, Writer};
use crate::extract::{JsonBody, P, Q};
use crate::problem::{store_problem, FieldError, Problem};
use crate::{page_limit, AdminState, ListQuery};
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tollgate_gateway::keys::{generate_key, Digest, KeyEntry, KeyRing};
use tollgate_gateway::{Subscription, SubscriptionScope};
use tollgate_store::{AuditEntry, KeySlot, Store, StoreError, SubscriptionRecord};
use utoipa::ToSchema;

/// Subscription writes and their key ring changes, one at a time: a check-then-write
/// (cancelled is final) cannot interleave, the rows read around a write are the ones before
/// and after it, and an older ring never replaces a newer one.
static SUBSCRIPTION_WRITES: Mutex<()> = Mutex::new(());

/// Parses a stored scope: `all`, `product:ID` or `api:ID`.
pub(crate) fn parse_scope(scope: &str) -> Option<SubscriptionScope> {
    if scope == "all" {
        return Some(SubscriptionScope::All);
    }
    let (kind, id) = scope.split_once(':')?;
    if id.is_empty() {
        return None;
    }
    match kind {
        "product" => Some(SubscriptionScope::Product(Arc::from(id))),
        "api" => Some(SubscriptionScope::Api(Arc::from(id))),
        _ => None,
    }
}

fn gateway_state(s: tollgate_store::SubscriptionState) -> tollgate_gateway::SubscriptionState {
    match s {
        tollgate_store::SubscriptionState::Active => tollgate_gateway::SubscriptionState::Active,
        tollgate_store::SubscriptionState::Suspended => {
            tollgate_gateway::SubscriptionState::Suspended
        }
        tollgate_store::SubscriptionState::Cancelled => {
            tollgate_gateway::SubscriptionState::Cancelled
        }
    }
}

/// The ring entry of a stored subscription; `None` when its scope cannot be read (never
/// grant access on a scope that cannot be read: its keys are left out).
fn key_entry(sub: SubscriptionRecord) -> Option<KeyEntry> {
    let Some(scope) = parse_scope(&sub.scope) else {
        tracing::warn!(subscription = %sub.id, scope = %sub.scope, "unreadable scope: its keys are left out");
        return None;
    };
    Some(KeyEntry {
        primary: sub.primary_digest,
        secondary: sub.secondary_digest,
        subscription: Subscription {
            id: Arc::from(sub.id.as_str()),
            state: gateway_state(sub.state),
            scope,
        },
    })
}

fn rebuild(store: &dyn Store, keys: &KeyRing) -> Result<usize, StoreError> {
    let subs = store.all_subscriptions()?;
    let entries: Vec<KeyEntry> = subs.into_iter().filter_map(key_entry).collect();
    let n = entries.len();
    keys.replace_all(entries);
    // Data planes waiting on `/control/snapshot` learn of the change now.
    crate::control::ring();
    Ok(n)
}

/// Rebuilds the proxy's key ring from every subscription in the store (call it at start;
/// the handlers change only the subscription they write, see [`sync_one`]). Returns how
/// many subscriptions it holds. Subscriptions whose stored scope cannot be read are left
/// out (their keys are unknown).
pub fn refresh_keys(store: &dyn Store, keys: &KeyRing) -> Result<usize, StoreError> {
    let _guard = SUBSCRIPTION_WRITES
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    rebuild(store, keys)
}

/// Brings subscription `id`'s keys in the ring in line with its stored row, after a write
/// (called under [`SUBSCRIPTION_WRITES`]). `before` is the row read before the write, under
/// the same lock: its digests are the ones the ring holds for `id` (none when it did not
/// exist or its scope cannot be read), and they are unmapped unless the row still has them.
/// Reads one row; the ring changes in O(1).
///
/// When the store cannot be read, the ring cannot know what `id` holds now: it falls back
/// to a full rebuild, and if that fails too, refuses `id`'s old keys (fail closed) until the
/// next change or start.
fn sync_one(
    store: &dyn Store,
    keys: &KeyRing,
    id: &str,
    before: Result<SubscriptionRecord, StoreError>,
) {
    let old: Vec<Digest> = match &before {
        Ok(row) => vec![row.primary_digest, row.secondary_digest],
        Err(StoreError::NotFound) => Vec::new(),
        Err(e) => {
            tracing::error!(subscription = %id, error = %e, "cannot read the subscription before its change: rebuilding the whole key ring");
            if let Err(e) = rebuild(store, keys) {
                tracing::error!(error = %e, "cannot rebuild the subscription key ring");
            }
            return;
        }
    };
    match store.subscription(id) {
        Ok(row) => match key_entry(row) {
            Some(entry) => keys.upsert(entry, &old),
            None => keys.remove(id, &old),
        },
        Err(StoreError::NotFound) => keys.remove(id, &old),
        Err(e) => {
            tracing::error!(subscription = %id, error = %e, "cannot read the subscription after its change: rebuilding the whole key ring");
            if let Err(e) = rebuild(store, keys) {
                tracing::error!(error = %e, "cannot rebuild the subscription key ring: the subscription's old keys are refused");
                keys.remove(id, &old);
                crate::control::ring();
            }
            return;
        }
    }
    // Data planes waiting on `/control/snapshot` learn of the change now.
    crate::control::ring();
}

/// Who does what to which subscription (the audit entry's fields).
#[derive(Debug, Clone, Copy)]
struct Act<'a> {
    writer: Writer,
    action: &'a str,
    target: &'a str,
}

impl Act<'_> {
    /// The audit entry of a successful change (the store writes it with the change).
    fn ok(self) -> AuditEntry {
        AuditEntry::new(self.writer.actor(), self.action, self.target, "ok")
    }

    /// Writes the audit entry of a refused change.
    fn refused(self, state: &AdminState, problem: &Problem) {
        let entry = AuditEntry::new(
            self.writer.actor(),
            self.action,
            self.target,
            &format!("refused: {}", problem.summary()),
        );
        if let Err(e) = state.store.append_audit(entry) {
            tracing::error!(error = %e, "cannot write the audit entry of a refused change");
        }
    }
}

/// Runs one write to subscription `id` (under the write lock), then brings that
/// subscription's keys in the ring in line with the store ([`sync_one`]). A refused write is
/// audited.
fn write<T>(
    state: &AdminState,
    act: Act<'_>,
    id: &str,
    f: impl FnOnce(&dyn Store) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let _guard = SUBSCRIPTION_WRITES
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let store = state.store.as_ref();
    let before = store.subscription(id);
    let result = f(store);
    // Even after a failure: part of a change may have been stored.
    sync_one(store, &state.keys, id, before);
    if let Err(p) = &result {
        act.refused(state, p);
    }
    result
}

/// Subscription states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StateView {
    /// Calls pass.
    Active,
    /// Calls are refused (403) until reactivated.
    Suspended,
    /// Calls are refused (403) for good: a cancelled subscription cannot be reactivated.
    Cancelled,
}

impl From<tollgate_store::SubscriptionState> for StateView {
    fn from(s: tollgate_store::SubscriptionState) -> StateView {
        match s {
            tollgate_store::SubscriptionState::Active => StateView::Active,
            tollgate_store::SubscriptionState::Suspended => StateView::Suspended,
            tollgate_store::SubscriptionState::Cancelled => StateView::Cancelled,
        }
    }
}

impl From<StateView> for tollgate_store::SubscriptionState {
    fn from(s: StateView) -> tollgate_store::SubscriptionState {
        match s {
            StateView::Active => tollgate_store::SubscriptionState::Active,
            StateView::Suspended => tollgate_store::SubscriptionState::Suspended,
            StateView::Cancelled => tollgate_store::SubscriptionState::Cancelled,
        }
    }
}

/// A subscription, without its keys.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionView {
    /// `[a-z0-9-]{1,64}`.
    id: String,
    /// Display name.
    display_name: String,
    /// `product:ID`, `api:ID` or `all`.
    scope: String,
    /// Owner (free text), if any.
    owner: Option<String>,
    /// State.
    state: StateView,
    /// RFC 3339 UTC.
    created_at: String,
    /// RFC 3339 UTC.
    updated_at: String,
}

impl From<SubscriptionRecord> for SubscriptionView {
    fn from(r: SubscriptionRecord) -> SubscriptionView {
        SubscriptionView {
            id: r.id,
            display_name: r.display_name,
            scope: r.scope,
            owner: r.owner,
            state: r.state.into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A subscription with both its keys (creation and `/secrets` only).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionWithKeys {
    /// The subscription.
    #[serde(flatten)]
    subscription: SubscriptionView,
    /// The primary key (43 characters). Not retrievable later.
    primary_key: String,
    /// The secondary key (43 characters). Not retrievable later.
    secondary_key: String,
}

/// `POST /subscriptions` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSubscription {
    /// `[a-z0-9-]{1,64}`; generated (`sub-` and 16 hex digits) when absent.
    id: Option<String>,
    /// Display name (1 to 256 characters).
    display_name: String,
    /// `product:ID` or `api:ID` (which must exist in the live config), or `all`.
    scope: String,
    /// Owner (free text, e.g. an e-mail address; at most 256 characters).
    owner: Option<String>,
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn not_found(id: &str) -> impl FnOnce(StoreError) -> Problem + '_ {
    move |e| store_problem(e, &format!("subscription `{id}`"))
}

fn location(id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/subscriptions/{id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/subscriptions"))
}

/// `POST /subscriptions`.
#[utoipa::path(
    post,
    path = "/subscriptions",
    tag = "subscriptions",
    description = "Create a subscription. The answer is the only place (with `/secrets`) \
        where its keys are shown: only their digests are stored. The scope's product or API \
        must exist in the live config.",
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created, with both keys.", body = SubscriptionWithKeys,
            headers(("Location" = String, description = "`/subscriptions/{id}`"))),
        (status = 409, description = "A subscription with this id exists."),
        (status = 422, description = "Invalid id, display name, owner or scope.")
    )
)]
pub(crate) async fn create_subscription(
    writer: Writer,
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<CreateSubscription>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let id = body
        .id
        .clone()
        .unwrap_or_else(|| format!("sub-{:016x}", rand::random::<u64>()));
    if !valid_id(&id) {
        errors.push(FieldError::at("id", "must match [a-z0-9-]{1,64}"));
    }
    let name_len = body.display_name.chars().count();
    if body.display_name.trim().is_empty() || name_len > 256 {
        errors.push(FieldError::at(
            "display_name",
            "must be 1 to 256 characters, not only spaces",
        ));
    }
    if body.owner.as_ref().is_some_and(|o| o.chars().count() > 256) {
        errors.push(FieldError::at("owner", "must be at most 256 characters"));
    }
    let snap = state.gateway.snapshot();
    match parse_scope(&body.scope) {
        None => errors.push(FieldError::at(
            "scope",
            "must be `product:ID`, `api:ID` or `all`",
        )),
        Some(SubscriptionScope::Product(p)) if snap.config.product_index(&p).is_none() => errors
            .push(FieldError::at(
                "scope",
                format!("product `{p}` does not exist in the live config"),
            )),
        Some(SubscriptionScope::Api(a)) if snap.config.api_index(&a).is_none() => {
            errors.push(FieldError::at(
                "scope",
                format!("API `{a}` does not exist in the live config"),
            ))
        }
        Some(_) => {}
    }
    let target = format!("subscription:{id}");
    let act = Act {
        writer,
        action: "subscription.create",
        target: &target,
    };
    if !errors.is_empty() {
        let problem = Problem::invalid("the subscription is invalid", errors);
        act.refused(&state, &problem);
        return Err(problem);
    }
    let (primary, secondary) = (generate_key(), generate_key());
    let record = SubscriptionRecord {
        id: id.clone(),
        display_name: body.display_name,
        scope: body.scope,
        owner: body.owner,
        state: tollgate_store::SubscriptionState::Active,
        // Filled in by the store.
        created_at: String::new(),
        updated_at: String::new(),
        primary_digest: state.keys.digest(&primary),
        secondary_digest: state.keys.digest(&secondary),
    };
    let stored = write(&state, act, &id, |store| {
        store
            .create_subscription(&record, act.ok())
            .map_err(not_found(&id))?;
        store.subscription(&id).map_err(not_found(&id))
    })?;
    let body = SubscriptionWithKeys {
        subscription: stored.into(),
        primary_key: primary,
        secondary_key: secondary,
    };
    Ok((StatusCode::CREATED, [(LOCATION, location(&id))], Json(body)).into_response())
}

/// A page of subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionPage {
    /// Ordered by id.
    items: Vec<SubscriptionView>,
    /// Cursor of the next page, or null on the last one.
    next: Option<String>,
}

/// `GET /subscriptions`.
#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "subscriptions",
    description = "Subscriptions ordered by id, without keys.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of subscriptions.", body = SubscriptionPage),
        (status = 400, description = "Bad `limit`.")
    )
)]
pub(crate) async fn list_subscriptions(
    _: Reader,
    State(state): State<AdminState>,
    Q(query): Q<ListQuery>,
) -> Result<Json<SubscriptionPage>, Problem> {
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().filter(|c| !c.is_empty());
    let mut subs = state
        .store
        .list_subscriptions(after, limit + 1)
        .map_err(|e| store_problem(e, "subscription"))?;
    let next = if subs.len() > limit {
        subs.truncate(limit);
        subs.last().map(|s| s.id.clone())
    } else {
        None
    };
    Ok(Json(SubscriptionPage {
        items: subs.into_iter().map(SubscriptionView::from).collect(),
        next,
    }))
}

/// `GET /subscriptions/{id}`.
#[utoipa::path(
    get,
    path = "/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription, without keys.", body = SubscriptionView),
        (status = 404, description = "No such subscription.")
    )
)]
pub(crate) async fn get_subscription(
    _: Reader,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Json<SubscriptionView>, Problem> {
    let sub = state.store.subscription(&id).map_err(not_found(&id))?;
    Ok(Json(sub.into()))
}

/// `PATCH /subscriptions/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchSubscription {
    /// The new state.
    state: StateView,
}

/// `PATCH /subscriptions/{id}`.
#[utoipa::path(
    patch,
    path = "/subscriptions/{id}",
    tag = "subscriptions",
    description = "Suspend, reactivate or cancel. Cancelling is final: any other state for a \
        cancelled subscription is a conflict (409).",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = PatchSubscription,
    responses(
        (status = 200, description = "The updated subscription.", body = SubscriptionView),
        (status = 404, description = "No such subscription."),
        (status = 409, description = "The subscription is cancelled.")
    )
)]
pub(crate) async fn patch_subscription(
    writer: Writer,
    State(state): State<AdminState>,
    P(id): P<String>,
    JsonBody(body): JsonBody<PatchSubscription>,
) -> Result<Json<SubscriptionView>, Problem> {
    let target = format!("subscription:{id}");
    let act = Act {
        writer,
        action: match body.state {
            StateView::Active => "subscription.activate",
            StateView::Suspended => "subscription.suspend",
            StateView::Cancelled => "subscription.cancel",
        },
        target: &target,
    };
    let updated = write(&state, act, &id, |store| {
        let current = store.subscription(&id).map_err(not_found(&id))?;
        if current.state == tollgate_store::SubscriptionState::Cancelled
            && body.state != StateView::Cancelled
        {
            return Err(Problem::conflict(format!(
                "subscription `{id}` is cancelled: cancelling is final"
            )));
        }
        store
            .set_subscription_state(&id, body.state.into(), act.ok())
            .map_err(not_found(&id))
    })?;
    Ok(Json(updated.into()))
}

/// A new key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NewKey {
    /// Subscription id.
    id: String,
    /// The new primary key (`regenerate-primary-key` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_key: Option<String>,
    /// The new secondary key (`regenerate-secondary-key` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    secondary_key: Option<String>,
}

/// Replaces the keys in `slots` with new ones (under the write lock); 409 for a cancelled
/// subscription.
fn rotate(
    state: &AdminState,
    writer: Writer,
    id: &str,
    slots: &[KeySlot],
    action: &str,
) -> Result<(SubscriptionRecord, Vec<String>), Problem> {
    let target = format!("subscription:{id}");
    let act = Act {
        writer,
        action,
        target: &target,
    };
    write(state, act, id, |store| {
        let current = store.subscription(id).map_err(not_found(id))?;
        if current.state == tollgate_store::SubscriptionState::Cancelled {
            return Err(Problem::conflict(format!(
                "subscription `{id}` is cancelled: its keys are not renewed"
            )));
        }
        let mut keys = Vec::with_capacity(slots.len());
        let mut record = current;
        for &slot in slots {
            let key = generate_key();
            record = store
                .set_subscription_key(id, slot, state.keys.digest(&key), act.ok())
                .map_err(not_found(id))?;
            keys.push(key);
        }
        Ok((record, keys))
    })
}

/// `POST /subscriptions/{id}/regenerate-primary-key`.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/regenerate-primary-key",
    tag = "subscriptions",
    description = "Replace the primary key: the old one stops working at once, the secondary \
        keeps working. The new key is in the answer, and nowhere else.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The new primary key.", body = NewKey),
        (status = 404, description = "No such subscription."),
        (status = 409, description = "The subscription is cancelled.")
    )
)]
pub(crate) async fn regenerate_primary(
    writer: Writer,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Json<NewKey>, Problem> {
    let (_, mut keys) = rotate(
        &state,
        writer,
        &id,
        &[KeySlot::Primary],
        "subscription.regenerate-primary-key",
    )?;
    Ok(Json(NewKey {
        id,
        primary_key: keys.pop(),
        secondary_key: None,
    }))
}

/// `POST /subscriptions/{id}/regenerate-secondary-key`.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/regenerate-secondary-key",
    tag = "subscriptions",
    description = "Replace the secondary key: the old one stops working at once, the primary \
        keeps working. The new key is in the answer, and nowhere else.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The new secondary key.", body = NewKey),
        (status = 404, description = "No such subscription."),
        (status = 409, description = "The subscription is cancelled.")
    )
)]
pub(crate) async fn regenerate_secondary(
    writer: Writer,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Json<NewKey>, Problem> {
    let (_, mut keys) = rotate(
        &state,
        writer,
        &id,
        &[KeySlot::Secondary],
        "subscription.regenerate-secondary-key",
    )?;
    Ok(Json(NewKey {
        id,
        primary_key: None,
        secondary_key: keys.pop(),
    }))
}

/// `POST /subscriptions/{id}/secrets`: rotates BOTH keys and answers them.
///
/// The contract shows keys "only at creation and by `/secrets`", but only digests are
/// stored, so the existing keys cannot be shown again. This call therefore issues two new
/// keys (both old ones stop working at once) and answers them: a way to recover access
/// when the keys are lost. To rotate without downtime, use the `regenerate-*` calls one at a
/// time instead.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/secrets",
    tag = "subscriptions",
    description = "Rotates BOTH keys and answers the new ones. Keys are stored only as \
        digests, so existing keys can never be shown again: this call issues a new primary \
        and a new secondary key (both old keys stop working at once). For a rotation without \
        downtime, regenerate one key at a time instead.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription with its two new keys.", body = SubscriptionWithKeys),
        (status = 404, description = "No such subscription."),
        (status = 409, description = "The subscription is cancelled.")
    )
)]
pub(crate) async fn secrets(
    writer: Writer,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<Json<SubscriptionWithKeys>, Problem> {
    let (record, keys) = rotate(
        &state,
        writer,
        &id,
        &[KeySlot::Primary, KeySlot::Secondary],
        "subscription.secrets",
    )?;
    let [primary_key, secondary_key]: [String; 2] = keys
        .try_into()
        .map_err(|_| Problem::internal("key rotation", &"two keys expected"))?;
    Ok(Json(SubscriptionWithKeys {
        subscription: record.into(),
        primary_key,
        secondary_key,
    }))
}

/// `DELETE /subscriptions/{id}`.
#[utoipa::path(
    delete,
    path = "/subscriptions/{id}",
    tag = "subscriptions",
    description = "Delete a subscription: its keys stop working at once.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such subscription.")
    )
)]
pub(crate) async fn delete_subscription(
    writer: Writer,
    State(state): State<AdminState>,
    P(id): P<String>,
) -> Result<StatusCode, Problem> {
    let target = format!("subscription:{id}");
    let act = Act {
        writer,
        action: "subscription.delete",
        target: &target,
    };
    write(&state, act, &id, |store| {
        store
            .delete_subscription(&id, act.ok())
            .map_err(not_found(&id))
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(parse_scope("all"), Some(SubscriptionScope::All));
        assert_eq!(
            parse_scope("product:starter"),
            Some(SubscriptionScope::Product(Arc::from("starter")))
        );
        assert_eq!(
            parse_scope("api:pets"),
            Some(SubscriptionScope::Api(Arc::from("pets")))
        );
        for bad in ["", "product:", "thing:x", "All", "api"] {
            assert_eq!(parse_scope(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(valid_id("sub-0123456789abcdef"));
        assert!(!valid_id("Sub"));
        assert!(!valid_id(""));
        assert!(!valid_id(&"a".repeat(65)));
    }
}
