//! The immutable runtime snapshot: a compiled config plus, for every API, its upstream pool
//! and its effective chains turned into runtime policy objects. Built once per config
//! change; each request pins one snapshot for its whole life.

use crate::pool::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_config::{CompiledConfig, EffectiveChain, PolicyDef, PolicyInstance};
use tollgate_policies::{Chain, Policy, Registries};

/// The policies of one (product slot, operation), ready to run.
#[derive(Debug)]
pub struct RuntimeChain {
    /// Inbound section.
    pub inbound: Chain,
    /// Backend section (runs after inbound, just before the upstream is picked).
    pub backend: Chain,
    /// Outbound section.
    pub outbound: Chain,
    /// On-error section.
    pub on_error: Chain,
    /// Some policy transforms whole bodies: requests on this chain take the buffered path.
    pub buffered: bool,
    /// The first `cors` policy of the inbound section (an index into it). On the chain
    /// without a product it speaks for the API before anything else runs: it answers
    /// CORS preflights, and gives refusals made before the chain runs (a missing key, an
    /// unknown operation) their CORS headers.
    pub cors: Option<usize>,
    /// The upstream timeout the chain's last `forward-request` sets (inbound, then
    /// backend), instead of the API's `upstream.timeout`. Every policy of a chain that
    /// reaches the upstream has run, so it is known before the request runs.
    pub upstream_timeout: Option<std::time::Duration>,
}

/// Runtime parts of one API (parallel to `CompiledConfig::apis`).
#[derive(Debug)]
pub struct ApiRuntime {
    /// The upstream pool.
    pub pool: Arc<Pool>,
    /// Parallel to `ApiDef::chains`.
    pub chains: Vec<Arc<RuntimeChain>>,
}

/// A policy that could not be built, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildProblem {
    /// `scope/section/index` of the policy, or `api:ID/upstream`.
    pub origin: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for BuildProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Chains of every API, before pools are attached.
pub type BuiltChains = Vec<Vec<Arc<RuntimeChain>>>;

/// Turn every effective chain into runtime policies with throwaway registries: for checking a
/// config (validate, dry runs). Reports every problem.
pub fn build_chains(config: &CompiledConfig) -> Result<BuiltChains, Vec<BuildProblem>> {
    build_chains_with(config, &Arc::new(Registries::default()))
}

/// Turn every effective chain into runtime policies sharing `registries`. Reports every
/// problem.
pub fn build_chains_with(
    config: &CompiledConfig,
    registries: &Arc<Registries>,
) -> Result<BuiltChains, Vec<BuildProblem>> {
    let mut problems = Vec::new();
    // Chains shared between (product, operation) pairs stay shared.
    let mut seen: HashMap<*const EffectiveChain, Arc<RuntimeChain>> = HashMap::new();
    let mut out = Vec::with_capacity(config.apis.len());
    for api in &config.apis {
        let mut chains = Vec::with_capacity(api.chains.len());
        for chain in &api.chains {
            let key = Arc::as_ptr(chain);
            if let Some(rt) = seen.get(&key) {
                chains.push(rt.clone());
                continue;
            }
            let inbound = section(&chain.inbound, registries, &mut problems);
            let backend = section(&chain.backend, registries, &mut problems);
            let outbound = section(&chain.outbound, registries, &mut problems);
            let buffered = inbound
                .iter()
                .chain(backend.iter())
                .chain(outbound.iter())
                .any(|p| p.transforms_bodies());
            let cors = chain
                .inbound
                .iter()
                .position(|p| matches!(p.def, PolicyDef::Cors(_)));
            let upstream_timeout = chain
                .inbound
                .iter()
                .chain(chain.backend.iter())
                .filter_map(|p| match p.def {
                    PolicyDef::ForwardRequest { timeout } => Some(timeout),
                    _ => None,
                })
                .last();
            let rt = Arc::new(RuntimeChain {
                inbound,
                backend,
                outbound,
                on_error: section(&chain.on_error, registries, &mut problems),
                buffered,
                cors,
                upstream_timeout,
            });
            seen.insert(key, rt.clone());
            chains.push(rt);
        }
        out.push(chains);
    }
    problems.sort_by(|a, b| a.origin.cmp(&b.origin));
    problems.dedup();
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn section(
    instances: &[PolicyInstance],
    registries: &Arc<Registries>,
    problems: &mut Vec<BuildProblem>,
) -> Chain {
    let mut policies: Vec<Arc<dyn Policy>> = Vec::with_capacity(instances.len());
    // One policy per instance, in order (the gateway maps a refusing policy back to its
    // instance by index); consecutive limit policies come linked (one Redis round trip).
    let built = tollgate_policies::build_section(instances, registries);
    for (inst, built) in instances.iter().zip(built) {
        match built {
            Ok(p) => policies.push(p),
            Err(e) => problems.push(BuildProblem {
                origin: inst.origin.to_string(),
                message: e.to_string(),
            }),
        }
    }
    policies.into()
}

/// A live config: what every request runs against.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled config (shared with a snapshot that only swapped pools, after a
    /// target's address changed).
    pub config: Arc<CompiledConfig>,
    /// Revision number (increases with every swap in this process, or the store's revision).
    pub revision: u64,
    /// Parallel to `config.apis`.
    pub apis: Vec<ApiRuntime>,
}

impl Snapshot {
    /// An empty config: every request is answered 404.
    pub fn empty() -> Snapshot {
        let config = tollgate_config::parse_and_compile("version: 1\n")
            .unwrap_or_else(|_| unreachable!("the empty config is valid"));
        Snapshot {
            config: Arc::new(config),
            revision: 0,
            apis: Vec::new(),
        }
    }
}
