//! Tollgate's proxy: the Pingora `ProxyHttp` implementation, routing, upstream pools, and
//! the one place that writes the answers Tollgate makes itself.
//!
//! The live config is an `ArcSwap<Snapshot>` inside [`Gateway`]. A config change compiles a
//! whole new [`Snapshot`] (routing, policy objects, pools) off the request path and swaps it
//! in one store; each request pins the snapshot it started with until it ends. On any error
//! the old snapshot keeps serving.

mod buffered;
mod cache;
pub mod checks;
pub mod connections;
pub mod deadline;
mod forwarded;
pub mod keys;
pub mod listener_cert;
mod location;
pub mod normalize;
pub mod pool;
mod proxy;
pub mod proxy_protocol;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod trace;

use arc_swap::ArcSwap;
use pool::PoolRegistry;
use snapshot::{ApiRuntime, BuildProblem, Snapshot};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tollgate_config::CompiledConfig;

pub use proxy::Proxy;

/// A subscription, as the proxy needs it.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Subscription id.
    pub id: Arc<str>,
    /// Whether calls are allowed.
    pub state: SubscriptionState,
    /// What it gives access to.
    pub scope: SubscriptionScope,
}

/// Subscription states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Calls pass.
    Active,
    /// Calls are refused (403) until reactivated.
    Suspended,
    /// Calls are refused (403) for good.
    Cancelled,
}

/// Subscription scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionScope {
    /// Every API.
    All,
    /// The APIs of one product; that product's policies apply.
    Product(Arc<str>),
    /// One API.
    Api(Arc<str>),
}

/// Where the proxy looks subscription keys up (the store, in the full product).
pub trait SubscriptionLookup: Send + Sync + std::fmt::Debug {
    /// The subscription owning `key`, if any. Implementations compare in constant time and
    /// never log the key.
    fn lookup(&self, key: &str) -> Option<Subscription>;
}

/// No subscriptions at all: every key is unknown.
#[derive(Debug, Default)]
pub struct NoSubscriptions;

impl SubscriptionLookup for NoSubscriptions {
    fn lookup(&self, _key: &str) -> Option<Subscription> {
        None
    }
}

/// Why a config could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// Every problem found.
    pub problems: Vec<BuildProblem>,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The TLS material the metrics report, by listener.
type ListenerCerts = Mutex<Vec<(&'static str, Arc<dyn listener_cert::WatchedStatus>)>>;

/// The gateway's shared state: the live snapshot, the long-lived registries, and counters
/// the server needs (in-flight requests).
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pools: PoolRegistry,
    subscriptions: Arc<dyn SubscriptionLookup>,
    inflight: AtomicUsize,
    /// This process runs the upstream health checks (it proxies: `serve`, `gateway`).
    health_checked: std::sync::atomic::AtomicBool,
    connections: Arc<connections::ConnectionLimit>,
    revisions: AtomicU64,
    apply_lock: Mutex<()>,
    registries: Arc<tollgate_policies::Registries>,
    telemetry: Arc<telemetry::Telemetry>,
    /// The TLS listeners' certificates and client CAs, by listener (`proxy`, `admin`,
    /// `proxy-client-ca`), for metrics.
    listener_certs: ListenerCerts,
}

impl Gateway {
    /// A gateway with an empty config.
    pub fn new(subscriptions: Arc<dyn SubscriptionLookup>) -> Arc<Gateway> {
        Gateway::with_registries(
            subscriptions,
            Arc::new(tollgate_policies::Registries::default()),
        )
    }

    /// A gateway with an empty config whose policies share `registries` (e.g. counters in
    /// Redis, made before the first config is applied).
    pub fn with_registries(
        subscriptions: Arc<dyn SubscriptionLookup>,
        registries: Arc<tollgate_policies::Registries>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            pools: PoolRegistry::default(),
            subscriptions,
            inflight: AtomicUsize::new(0),
            health_checked: std::sync::atomic::AtomicBool::new(false),
            connections: Arc::default(),
            revisions: AtomicU64::new(0),
            apply_lock: Mutex::new(()),
            registries,
            telemetry: Arc::new(telemetry::Telemetry::default()),
            listener_certs: Mutex::new(Vec::new()),
        })
    }

    /// Report `cert` as the certificate of `listener` (`proxy`, `admin`; the client CA of
    /// the proxy's: `proxy-client-ca`) in the metrics.
    pub fn add_listener_cert(
        &self,
        listener: &'static str,
        cert: Arc<dyn listener_cert::WatchedStatus>,
    ) {
        self.listener_certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((listener, cert));
    }

    /// The TLS listeners' certificates and client CAs, by listener.
    pub fn listener_certs(&self) -> Vec<(&'static str, Arc<dyn listener_cert::WatchedStatus>)> {
        self.listener_certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this process runs the upstream health checks (set when the proxy's
    /// maintenance task starts; `tollgate admin` never does, so its pools' health is no
    /// verdict).
    pub fn health_checked(&self) -> bool {
        self.health_checked.load(Ordering::Relaxed)
    }

    /// Mark that this process runs the upstream health checks.
    pub fn mark_health_checked(&self) {
        self.health_checked.store(true, Ordering::Relaxed);
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Resolve the upstream host names of the live config again and swap in the pools
    /// whose targets' addresses changed (see [`pool::Pool::re_resolved`]), with the same
    /// config and revision. Blocking DNS: call it off the async runtime. Answers how many
    /// pools moved; none when a config was applied meanwhile (its pools are newer).
    pub fn refresh_upstream_addresses(&self) -> usize {
        let snap = self.snapshot();
        let mut moved = Vec::new();
        for (i, rt) in snap.apis.iter().enumerate() {
            if !rt.pool.has_names() {
                continue;
            }
            match rt.pool.re_resolved(pool::resolve_all) {
                Ok(Some(p)) => moved.push((i, Arc::new(p))),
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    api = %snap.config.apis[i].id,
                    %error,
                    "cannot rebuild an upstream pool with new addresses"
                ),
            }
        }
        if moved.is_empty() {
            return 0;
        }
        let _guard = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.snapshot();
        if !Arc::ptr_eq(&live, &snap) {
            return 0;
        }
        let mut apis: Vec<ApiRuntime> = live
            .apis
            .iter()
            .map(|rt| ApiRuntime {
                pool: rt.pool.clone(),
                chains: rt.chains.clone(),
            })
            .collect();
        for (i, p) in &moved {
            let id = &live.config.apis[*i].id;
            let addresses: Vec<String> = p
                .addresses()
                .iter()
                .map(|a| {
                    if a.is_empty() {
                        "unresolved".to_string()
                    } else {
                        a.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                })
                .collect();
            tracing::info!(api = %id, ?addresses, "upstream addresses changed");
            self.pools.replace(id, p.clone());
            apis[*i].pool = p.clone();
        }
        self.snapshot.store(Arc::new(Snapshot {
            config: live.config.clone(),
            revision: live.revision,
            apis,
        }));
        moved.len()
    }

    /// Build a snapshot from `config` and make it live. On error nothing changes.
    /// Returns the new snapshot's revision (`revision`, or the next local number). A
    /// target whose host name does not resolve is kept without an address (see
    /// [`pool::Pool`]).
    pub fn apply(&self, config: CompiledConfig, revision: Option<u64>) -> Result<u64, ApplyError> {
        self.apply_with(config, revision, false)
    }

    /// [`Gateway::apply`] for a config write: also refused when an upstream that the write
    /// brings (new, or changed from the live one) has a target whose host name does not
    /// resolve, so that a typo is caught when it is made. An upstream left as it is never
    /// refuses a write: its pool keeps the addresses it has.
    pub fn apply_checked(
        &self,
        config: CompiledConfig,
        revision: Option<u64>,
    ) -> Result<u64, ApplyError> {
        self.apply_with(config, revision, true)
    }

    /// The pool of every API of `config`: the live one when its upstream is unchanged,
    /// else a new one (not installed). With `checked`, a new pool with a target whose host
    /// name does not resolve is a problem too (see [`Gateway::apply_checked`]). Every
    /// problem is reported. Blocking DNS for the new pools.
    pub fn prepare_pools(
        &self,
        config: &CompiledConfig,
        checked: bool,
    ) -> Result<pool::ApiPools, ApplyError> {
        let mut problems = Vec::new();
        let mut pools = Vec::with_capacity(config.apis.len());
        for api in &config.apis {
            let origin = || format!("api:{}/upstream", api.id);
            match self.pools.prepare(&api.id, &api.upstream) {
                Ok((p, fresh)) => {
                    if checked && fresh {
                        problems.extend(p.unresolved().iter().map(|message| BuildProblem {
                            origin: origin(),
                            message: message.clone(),
                        }));
                    }
                    pools.push((api.id.clone(), p));
                }
                Err(message) => problems.push(BuildProblem {
                    origin: origin(),
                    message,
                }),
            }
        }
        if problems.is_empty() {
            Ok(pools)
        } else {
            Err(ApplyError { problems })
        }
    }

    fn apply_with(
        &self,
        config: CompiledConfig,
        revision: Option<u64>,
        checked: bool,
    ) -> Result<u64, ApplyError> {
        // One apply at a time, so pools and snapshot stay consistent. Never held across an
        // await: apply is synchronous.
        let _guard = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let chains = snapshot::build_chains_with(&config, &self.registries)
            .map_err(|problems| ApplyError { problems })?;
        let pools = self.prepare_pools(&config, checked)?;
        let apis = pools
            .iter()
            .zip(chains)
            .map(|((_, pool), chains)| ApiRuntime {
                pool: pool.clone(),
                chains,
            })
            .collect();
        let revision = match revision {
            Some(r) => {
                self.revisions.fetch_max(r, Ordering::Relaxed);
                r
            }
            None => self.revisions.fetch_add(1, Ordering::Relaxed) + 1,
        };
        self.pools.install(&pools);
        self.registries
            .cache
            .set_max_bytes(config.limits.cache_max_bytes);
        self.snapshot.store(Arc::new(Snapshot {
            config: Arc::new(config),
            revision,
            apis,
        }));
        self.telemetry.mark_swap();
        tracing::info!(revision, "config snapshot is live");
        Ok(revision)
    }

    /// Requests being processed right now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// The proxy listeners' open client connections and their cap.
    pub fn connections(&self) -> &Arc<connections::ConnectionLimit> {
        &self.connections
    }

    /// The policies' long-lived registries.
    pub fn registries(&self) -> &Arc<tollgate_policies::Registries> {
        &self.registries
    }

    /// The pool registry (health checks run over it).
    pub fn pools(&self) -> &PoolRegistry {
        &self.pools
    }

    /// Analytics, metrics and traces of the proxy's requests.
    pub fn telemetry(&self) -> &Arc<telemetry::Telemetry> {
        &self.telemetry
    }
}

/// Counts a request as in flight for as long as it lives.
#[derive(Debug)]
pub(crate) struct InflightGuard(Arc<Gateway>);

impl InflightGuard {
    pub(crate) fn new(gw: &Arc<Gateway>) -> InflightGuard {
        gw.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(gw.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> CompiledConfig {
        tollgate_config::parse_and_compile(yaml).expect("valid test config")
    }

    const ONE: &str = "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: { targets: [\"http://127.0.0.1:1\"] }\n";

    #[test]
    fn apply_swaps_and_counts_revisions() {
        let gw = Gateway::new(Arc::new(NoSubscriptions));
        assert_eq!(gw.snapshot().revision, 0);
        assert_eq!(gw.apply(compile(ONE), None).unwrap(), 1);
        assert_eq!(gw.snapshot().config.apis.len(), 1);
        assert_eq!(gw.apply(compile("version: 1\n"), Some(7)).unwrap(), 7);
        assert_eq!(gw.snapshot().config.apis.len(), 0);
        assert_eq!(gw.apply(compile(ONE), None).unwrap(), 8);
    }

    #[test]
    fn pools_survive_swaps_that_keep_the_upstream() {
        let gw = Gateway::new(Arc::new(NoSubscriptions));
        gw.apply(compile(ONE), None).unwrap();
        let before = gw.snapshot().apis[0].pool.clone();
        // Same upstream, different policies: same pool.
        let with_policy = format!(
            "{ONE}    policies: {{ inbound: [ {{ set-header: {{ name: x, value: y }} }} ] }}\n"
        );
        gw.apply(compile(&with_policy), None).unwrap();
        assert!(Arc::ptr_eq(&before, &gw.snapshot().apis[0].pool));
        // Another target: a new pool.
        gw.apply(compile(&ONE.replace("127.0.0.1:1", "127.0.0.1:2")), None)
            .unwrap();
        assert!(!Arc::ptr_eq(&before, &gw.snapshot().apis[0].pool));
    }

    #[test]
    fn a_name_that_does_not_resolve_keeps_no_config_from_serving() {
        let gw = Gateway::new(Arc::new(NoSubscriptions));
        // Of two targets, the one whose name does not resolve has no address and is never
        // picked; the config is live all the same (its other APIs and targets serve).
        let two = ONE.replace(
            "[\"http://127.0.0.1:1\"]",
            "[\"http://no-such-host.invalid:80\", \"http://127.0.0.1:1\"]",
        );
        gw.apply(compile(&two), None).unwrap();
        let snap = gw.snapshot();
        let pool = &snap.apis[0].pool;
        assert!(pool.has_unresolved() && pool.has_names());
        assert!(pool.addresses()[0].is_empty());
        for _ in 0..4 {
            let picked = pool.pick(0).unwrap().index;
            assert_eq!(pool.target(picked).host, "127.0.0.1");
        }
        // Alone in its pool: no target to pick (503).
        let one = ONE.replace("127.0.0.1:1", "no-such-host.invalid:80");
        gw.apply(compile(&one), None).unwrap();
        assert!(gw.snapshot().apis[0].pool.pick(0).is_err());
        // Resolving again finds nothing new: no swap.
        let live = gw.snapshot();
        assert_eq!(gw.refresh_upstream_addresses(), 0);
        assert!(Arc::ptr_eq(&live, &gw.snapshot()));
    }

    #[test]
    fn the_response_cache_outlives_swaps_and_follows_its_setting() {
        let gw = Gateway::new(Arc::new(NoSubscriptions));
        let cache = gw.registries().cache.clone();
        gw.apply(compile(ONE), None).unwrap();
        assert_eq!(cache.max_bytes(), 256 << 20);
        let sized = ONE.replace(
            "version: 1\n",
            "version: 1\nsettings: { cache_max_bytes: 1MiB }\n",
        );
        gw.apply(compile(&sized), None).unwrap();
        assert!(Arc::ptr_eq(&cache, &gw.registries().cache));
        assert_eq!(cache.max_bytes(), 1 << 20);
    }

    #[test]
    fn inflight_guard_counts() {
        let gw = Gateway::new(Arc::new(NoSubscriptions));
        let a = InflightGuard::new(&gw);
        let b = InflightGuard::new(&gw);
        assert_eq!(gw.inflight(), 2);
        drop(a);
        drop(b);
        assert_eq!(gw.inflight(), 0);
    }
}
