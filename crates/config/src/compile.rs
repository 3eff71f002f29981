//! Assembly of a validated policy file into a [`CompiledConfig`]: routing tables and the
//! effective policy chain of every (product slot, operation).
//!
//! Inheritance follows Azure API Management's `<base/>` rule. Scopes nest global → product
//! → API → operation. For each section (inbound, backend, outbound, on_error), a scope that
//! does not name the section inherits its parent's resolved section whole; a scope that
//! names it replaces it, with the entry `base` standing for the parent's resolved section
//! at that position (a named section without `base` drops the parent's policies). Product
//! slot 0 ("no product") skips the product scope.

use crate::compiled::{
    ApiDef, CompiledConfig, EffectiveChain, OperationDef, PathSegment, PolicyInstance, ProductDef,
};
use crate::model::PolicyFile;
use crate::validate::{Checked, Entry, Scope, SECTIONS};
use std::collections::HashMap;
use std::sync::Arc;

/// The four resolved sections of a scope.
type Resolved = [Vec<PolicyInstance>; 4];

/// A scope's own entries, with origins assigned.
enum Own {
    Base,
    Policy(Box<PolicyInstance>),
}

type OwnSections = [Option<Vec<Own>>; 4];

/// Gives each policy of a scope its origin `"{scope}/{section}/{index}"`.
fn own_sections(scope: Scope, name: &str) -> OwnSections {
    let mut slot = 0;
    scope.sections.map(|section| {
        let section_name = SECTIONS[slot];
        slot += 1;
        section.map(|entries| {
            entries
                .into_iter()
                .enumerate()
                .map(|(index, entry)| match entry {
                    Entry::Base => Own::Base,
                    Entry::Policy(def) => Own::Policy(Box::new(PolicyInstance {
                        origin: Arc::from(format!("{name}/{section_name}/{index}")),
                        def: *def,
                    })),
                })
                .collect()
        })
    })
}

/// Applies a scope's own sections on top of its parent's resolved ones.
fn resolve(parent: &Resolved, own: &OwnSections) -> Resolved {
    let mut slot = 0;
    own.each_ref().map(|section| {
        let inherited = &parent[slot];
        slot += 1;
        match section {
            None => inherited.clone(),
            Some(entries) => {
                let mut out = Vec::with_capacity(entries.len() + inherited.len());
                for entry in entries {
                    match entry {
                        Own::Base => out.extend(inherited.iter().cloned()),
                        Own::Policy(instance) => out.push(PolicyInstance::clone(instance)),
                    }
                }
                out
            }
        }
    })
}

fn chain(resolved: Resolved) -> Arc<EffectiveChain> {
    let [inbound, backend, outbound, on_error] = resolved;
    Arc::new(EffectiveChain {
        inbound,
        backend,
        outbound,
        on_error,
    })
}

fn is_unnamed(own: &OwnSections) -> bool {
    own.iter().all(Option::is_none)
}

/// Builds the compiled config. `checked` must come from a walk that reported no error.
pub(crate) fn compile(file: PolicyFile, checked: Checked) -> CompiledConfig {
    const VALID: &str = "compile runs only on a config without validation errors";
    let Checked {
        limits,
        trusted_proxies,
        global,
        products,
        apis,
    } = checked;

    let empty: Resolved = Default::default();
    let global_resolved = resolve(&empty, &own_sections(global, "global"));

    let mut product_defs = Vec::with_capacity(products.len());
    // Per product: its resolved sections, or None when it names no section (its slots
    // then share the chains of slot 0).
    let mut product_resolved: Vec<Option<Resolved>> = Vec::with_capacity(products.len());
    for product in products {
        let id = product.id.expect(VALID);
        let own = own_sections(product.scope, &format!("product:{id}"));
        product_resolved.push(if is_unnamed(&own) {
            None
        } else {
            Some(resolve(&global_resolved, &own))
        });
        product_defs.push(ProductDef {
            id: Arc::from(id),
            apis: product.apis,
        });
    }

    let mut api_defs = Vec::with_capacity(apis.len());
    for (api_index, api) in apis.into_iter().enumerate() {
        let id = api.id.expect(VALID);
        let api_own = own_sections(api.scope, &format!("api:{id}"));
        let mut operations = Vec::with_capacity(api.operations.len());
        let mut op_owns = Vec::with_capacity(api.operations.len());
        for op in api.operations {
            let op_id = op.id.expect(VALID);
            op_owns.push(own_sections(
                op.scope,
                &format!("api:{id}/operation:{op_id}"),
            ));
            let segments = op.segments.expect(VALID);
            let param_names = segments
                .iter()
                .filter_map(|s| match s {
                    PathSegment::Param(name) => Some(Arc::from(name.as_str())),
                    PathSegment::Literal(_) => None,
                })
                .collect();
            operations.push(OperationDef {
                id: Arc::from(op_id),
                method: op.method.expect(VALID),
                path: op.path,
                segments,
                param_names,
            });
        }
        let api_products: Vec<usize> = product_defs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.apis.contains(&api_index))
            .map(|(i, _)| i)
            .collect();

        // The chains of one product slot: API-wide first, then one per operation.
        let slot_chains = |parent: &Resolved| -> Vec<Arc<EffectiveChain>> {
            let api_resolved = resolve(parent, &api_own);
            let mut out = Vec::with_capacity(op_owns.len() + 1);
            let api_chain = chain(api_resolved.clone());
            out.push(api_chain.clone());
            for op_own in &op_owns {
                if is_unnamed(op_own) {
                    out.push(api_chain.clone());
                } else {
                    out.push(chain(resolve(&api_resolved, op_own)));
                }
            }
            out
        };
        let slot0 = slot_chains(&global_resolved);
        let mut chains = Vec::with_capacity(slot0.len() * (api_products.len() + 1));
        chains.extend(slot0.iter().cloned());
        for &product in &api_products {
            match &product_resolved[product] {
                None => chains.extend(slot0.iter().cloned()),
                Some(resolved) => chains.extend(slot_chains(resolved)),
            }
        }

        api_defs.push(ApiDef {
            id: Arc::from(id),
            prefix: api.prefix.expect(VALID),
            subscription_required: api.subscription_required,
            allow_http: api.protocols.0,
            allow_https: api.protocols.1,
            max_request_body: api.max_request_body,
            key_header: api.key_header.expect(VALID),
            key_query: api.key_query,
            upstream: api.upstream.expect(VALID),
            operations,
            products: api_products,
            chains,
        });
    }

    let mut prefixes: Vec<(String, usize)> = api_defs
        .iter()
        .enumerate()
        .map(|(i, api)| (api.prefix.clone(), i))
        .collect();
    prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    let prefix_map: HashMap<String, usize, foldhash::fast::RandomState> =
        prefixes.iter().cloned().collect();
    let max_prefix_len = prefixes.iter().map(|(p, _)| p.len()).max().unwrap_or(0);

    CompiledConfig {
        file,
        limits,
        trusted_proxies,
        apis: api_defs,
        products: product_defs,
        prefixes,
        prefix_map,
        max_prefix_len,
    }
}
