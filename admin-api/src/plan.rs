//! The plan of a config change: what is added, changed or removed between two policy files.
//!
//! Granularity: settings; products; APIs; operations (of APIs present on both sides); and
//! policy sections (`global/inbound`, `product:ID/outbound`, `api:ID/operation:OP/inbound`:
//! the same prefixes as a policy's `origin`) of scopes present on both sides. An added or
//! removed product or API carries its operations and policies with it: they are not listed
//! again. A product or API is "changed" when anything but its policies (and, for an API, its
//! operations) differs; an operation likewise.

use serde::Serialize;
use tollgate_config::model::{Api, Operation, PolicySections, Product};
use tollgate_config::PolicyFile;
use utoipa::ToSchema;

/// What happens to a thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    /// It is new.
    Added,
    /// It exists on both sides and differs.
    Changed,
    /// It is gone.
    Removed,
}

/// What kind of thing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The gateway-wide `settings`.
    Settings,
    /// A product (`id` is the product id).
    Product,
    /// An API (`id` is the API id).
    Api,
    /// An operation (`id` is `API/OPERATION`).
    Operation,
    /// A policy section of a scope (`id` is `global/inbound`, `product:ID/inbound`,
    /// `api:ID/inbound` or `api:ID/operation:OP/inbound`).
    Policies,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Change {
    /// Added, changed or removed.
    pub action: ChangeAction,
    /// What kind of thing.
    pub kind: ChangeKind,
    /// Which one.
    pub id: String,
}

fn push(out: &mut Vec<Change>, action: ChangeAction, kind: ChangeKind, id: impl Into<String>) {
    out.push(Change {
        action,
        kind,
        id: id.into(),
    });
}

/// The plan from `old` to `new`, in a stable order: settings, global policies, products,
/// APIs (each with its operations and policies), in file order (old items first, then new).
pub fn plan(old: &PolicyFile, new: &PolicyFile) -> Vec<Change> {
    let mut out = Vec::new();
    if old.settings != new.settings {
        push(
            &mut out,
            ChangeAction::Changed,
            ChangeKind::Settings,
            "settings",
        );
    }
    sections(&mut out, "global", &old.policies, &new.policies);
    keyed(
        &mut out,
        &old.products,
        &new.products,
        |p| &p.id,
        ChangeKind::Product,
        |out, a, b| {
            let strip = |p: &Product| Product {
                policies: PolicySections::default(),
                ..p.clone()
            };
            if strip(a) != strip(b) {
                push(out, ChangeAction::Changed, ChangeKind::Product, &a.id);
            }
            sections(out, &format!("product:{}", a.id), &a.policies, &b.policies);
        },
    );
    keyed(
        &mut out,
        &old.apis,
        &new.apis,
        |a| &a.id,
        ChangeKind::Api,
        |out, a, b| {
            let strip = |api: &Api| Api {
                policies: PolicySections::default(),
                operations: None,
                ..api.clone()
            };
            if strip(a) != strip(b) {
                push(out, ChangeAction::Changed, ChangeKind::Api, &a.id);
            }
            sections(out, &format!("api:{}", a.id), &a.policies, &b.policies);
            let empty = Vec::new();
            let old_ops = a.operations.as_ref().unwrap_or(&empty);
            let new_ops = b.operations.as_ref().unwrap_or(&empty);
            let api_id = &a.id;
            let mut ops = Vec::new();
            keyed(
                &mut ops,
                old_ops,
                new_ops,
                |o| &o.id,
                ChangeKind::Operation,
                |out, x, y| {
                    let strip = |o: &Operation| Operation {
                        policies: PolicySections::default(),
                        ..o.clone()
                    };
                    if strip(x) != strip(y) {
                        push(out, ChangeAction::Changed, ChangeKind::Operation, &x.id);
                    }
                    sections(
                        out,
                        &format!("api:{api_id}/operation:{}", x.id),
                        &x.policies,
                        &y.policies,
                    );
                },
            );
            // Operation ids are relative to their API in the plan: `API/OP`.
            for mut c in ops {
                if c.kind == ChangeKind::Operation {
                    c.id = format!("{api_id}/{}", c.id);
                }
                out.push(c);
            }
        },
    );
    out
}

/// Items keyed by id: removed and common ones in old order, then added ones in new order.
fn keyed<T>(
    out: &mut Vec<Change>,
    old: &[T],
    new: &[T],
    id: impl Fn(&T) -> &String,
    kind: ChangeKind,
    mut both: impl FnMut(&mut Vec<Change>, &T, &T),
) {
    for a in old {
        match new.iter().find(|b| id(b) == id(a)) {
            Some(b) => both(out, a, b),
            None => push(out, ChangeAction::Removed, kind, id(a).clone()),
        }
    }
    for b in new {
        if !old.iter().any(|a| id(a) == id(b)) {
            push(out, ChangeAction::Added, kind, id(b).clone());
        }
    }
}

fn sections(out: &mut Vec<Change>, scope: &str, old: &PolicySections, new: &PolicySections) {
    let pairs = [
        ("inbound", &old.inbound, &new.inbound),
        ("backend", &old.backend, &new.backend),
        ("outbound", &old.outbound, &new.outbound),
        ("on_error", &old.on_error, &new.on_error),
    ];
    for (name, a, b) in pairs {
        let action = match (a, b) {
            (None, Some(_)) => ChangeAction::Added,
            (Some(_), None) => ChangeAction::Removed,
            (Some(x), Some(y)) if x != y => ChangeAction::Changed,
            _ => continue,
        };
        push(out, action, ChangeKind::Policies, format!("{scope}/{name}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> PolicyFile {
        tollgate_config::parse_and_compile(yaml).unwrap().file
    }

    const BASE: &str = r#"version: 1
products:
  - { id: starter, apis: [pets] }
  - { id: gold, apis: [pets] }
apis:
  - id: pets
    path: /pets
    upstream: { targets: ["http://127.0.0.1:9"] }
    operations:
      - { id: list, method: GET, path: /pets }
      - { id: get, method: GET, path: "/pets/{id}" }
  - id: old
    path: /old
    upstream: { targets: ["http://127.0.0.1:9"] }
"#;

    const NEXT: &str = r#"version: 1
policies:
  inbound: [ { set-header: { name: x, value: y } } ]
products:
  - { id: starter, title: Starter, apis: [pets] }
  - id: gold
    apis: [pets]
    policies: { inbound: [ base, { rate-limit: { calls: 5, renewal_period: 10s } } ] }
apis:
  - id: pets
    path: /pets
    upstream: { targets: ["http://127.0.0.1:9"] }
    operations:
      - { id: list, method: GET, path: /pets, policies: { outbound: [ base ] } }
      - { id: create, method: POST, path: /pets }
  - id: new
    path: /new
    upstream: { targets: ["http://127.0.0.1:9"] }
"#;

    fn line(action: ChangeAction, kind: ChangeKind, id: &str) -> Change {
        Change {
            action,
            kind,
            id: id.into(),
        }
    }

    #[test]
    fn lists_every_kind_of_change() {
        use ChangeAction::*;
        use ChangeKind::*;
        let changes = plan(&file(BASE), &file(NEXT));
        assert_eq!(
            changes,
            vec![
                line(Added, Policies, "global/inbound"),
                line(Changed, Product, "starter"),
                line(Added, Policies, "product:gold/inbound"),
                line(Added, Policies, "api:pets/operation:list/outbound"),
                line(Removed, Operation, "pets/get"),
                line(Added, Operation, "pets/create"),
                line(Removed, Api, "old"),
                line(Added, Api, "new"),
            ]
        );
        assert!(plan(&file(BASE), &file(BASE)).is_empty());
    }
}
