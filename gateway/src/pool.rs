//! Upstream pools: one per API, built on `pingora-load-balancing`.
//!
//! - Round robin over healthy targets: an atomic counter over the pool's own target list,
//!   with the health state read from `pingora-load-balancing`'s `Backends` only when the
//!   API configures a health check (its selector clones a `Backend`, extensions and all,
//!   and hashes every candidate: too much for the per-request path).
//! - Active HTTP health checks when the API configures `health_check` (run by the
//!   gateway's maintenance task, since load balancers made after start-up are not Pingora
//!   services).
//! - Passive ejection: a target that refuses a connection is skipped for
//!   [`EJECT_FOR`], unless every target is ejected.
//! - Pools live in a [`PoolRegistry`] keyed by API id that outlives config snapshots: a swap
//!   that does not change an API's `upstream` keeps its pool, its health state and its
//!   keep-alive connections.

use dashmap::DashMap;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_config::{Target, UpstreamDef};

/// How long a target that refused a connection is skipped.
pub const EJECT_FOR: Duration = Duration::from_secs(5);

/// The upstream pool of one API.
pub struct Pool {
    /// The definition this pool was built from.
    pub def: UpstreamDef,
    lb: LoadBalancer<RoundRobin>,
    /// Per target: its `Backend` (for the health state) and the peer every attempt starts
    /// from.
    backends: Vec<Backend>,
    peers: Vec<HttpPeer>,
    /// Per target: the `Host` the upstream sees (`host:port`).
    hosts: Vec<http::HeaderValue>,
    /// Round-robin position.
    next: AtomicUsize,
    epoch: Instant,
    /// Per target: milliseconds since `epoch` until which it is ejected (0: not ejected).
    ejected_until: Vec<AtomicU64>,
    /// Milliseconds since `epoch` of the next active health check.
    next_check: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("def", &self.def).finish()
    }
}

/// A target picked for one attempt.
#[derive(Debug, Clone)]
pub struct Picked {
    /// Index into the pool's targets.
    pub index: usize,
    /// The peer to connect to.
    pub peer: Box<HttpPeer>,
}

/// Why no target could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// Every target is unhealthy or already tried.
    NoHealthyTarget,
}

impl Pool {
    /// Build a pool; resolves host names once (blocking DNS, done at config apply).
    pub fn build(def: &UpstreamDef) -> Result<Pool, String> {
        let mut set = BTreeSet::new();
        let mut targets = Vec::with_capacity(def.targets.len());
        let mut peers = Vec::with_capacity(def.targets.len());
        let mut hosts = Vec::with_capacity(def.targets.len());
        for t in &def.targets {
            let addr = resolve(t)?;
            let b = Backend {
                addr: SocketAddr::Inet(addr),
                weight: 1,
                ext: Default::default(),
            };
            set.insert(b.clone());
            targets.push(b);
            let sni = if t.tls { t.host.clone() } else { String::new() };
            let mut peer = HttpPeer::new(addr, t.tls, sni);
            peer.options.connection_timeout = Some(def.connect_timeout);
            peer.options.read_timeout = Some(def.timeout);
            peer.options.write_timeout = Some(def.timeout);
            peer.options.idle_timeout = Some(Duration::from_secs(60));
            peers.push(peer);
            hosts.push(
                http::HeaderValue::try_from(t.authority())
                    .map_err(|_| format!("upstream host {} is no valid Host header", t.host))?,
            );
        }
        let backends = Backends::new(Static::new(set));
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
        if let Some(hc) = &def.health_check {
            let first = &def.targets[0];
            let mut check = HttpHealthCheck::new(&first.host, first.tls);
            let path = format!("{}{}", first.base_path, hc.path);
            let mut req = RequestHeader::build("GET", path.as_bytes(), None)
                .map_err(|e| format!("health check request: {e}"))?;
            req.insert_header("Host", first.authority())
                .map_err(|e| format!("health check request: {e}"))?;
            req.insert_header("User-Agent", "tollgate-health-check")
                .map_err(|e| format!("health check request: {e}"))?;
            check.req = req;
            check.peer_template.options.connection_timeout =
                Some(def.connect_timeout.min(hc.interval));
            check.peer_template.options.read_timeout = Some(def.timeout.min(hc.interval));
            check.validator = Some(Box::new(|resp: &pingora_http::ResponseHeader| {
                if resp.status.is_success() {
                    Ok(())
                } else {
                    pingora_error::Error::e_explain(
                        pingora_error::ErrorType::Custom("unhealthy"),
                        "health check answered non-2xx",
                    )
                }
            }));
            lb.set_health_check(Box::new(check));
            lb.health_check_frequency = Some(hc.interval);
        }
        // Static discovery never blocks: build the selector now.
        futures_now(lb.update()).map_err(|e| format!("upstream pool: {e}"))?;
        Ok(Pool {
            def: def.clone(),
            lb,
            backends: targets,
            peers,
            hosts,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            ejected_until: def.targets.iter().map(|_| AtomicU64::new(0)).collect(),
            next_check: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Skip target `index` for [`EJECT_FOR`] (passive health).
    pub fn eject(&self, index: usize) {
        if let Some(t) = self.ejected_until.get(index) {
            t.store(
                self.now_ms() + EJECT_FOR.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }

    /// Pick the next target by round robin among healthy ones, skipping the targets in
    /// `tried` (a bit set of indexes) and, while others remain, ejected ones.
    pub fn pick(&self, tried: u64) -> Result<Picked, PickError> {
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let checked = self.def.health_check.is_some();
        let candidate = |i: usize| {
            (i >= 64 || tried & (1 << i) == 0)
                && (!checked || self.lb.backends().ready(&self.backends[i]))
        };
        // The clock is read only when some target has been ejected.
        let mut now = None;
        let index = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| {
                candidate(i) && {
                    let until = self.ejected_until[i].load(Ordering::Relaxed);
                    until == 0 || until <= *now.get_or_insert_with(|| self.now_ms())
                }
            })
            // Every candidate is ejected: try one anyway rather than fail.
            .or_else(|| (0..n).map(|k| (start + k) % n).find(|&i| candidate(i)))
            .ok_or(PickError::NoHealthyTarget)?;
        Ok(Picked {
            index,
            peer: Box::new(self.peers[index].clone()),
        })
    }

    /// The `Host` header value for the target at `index`.
    pub fn host(&self, index: usize) -> &http::HeaderValue {
        &self.hosts[index]
    }

    /// The target at `index`.
    pub fn target(&self, index: usize) -> &Target {
        &self.def.targets[index]
    }

    /// Run the active health check when it is due (no-op without `health_check`).
    pub async fn health_check_if_due(&self) {
        let Some(hc) = &self.def.health_check else {
            return;
        };
        let now = self.now_ms();
        if self.next_check.load(Ordering::Relaxed) > now {
            return;
        }
        self.next_check
            .store(now + hc.interval.as_millis() as u64, Ordering::Relaxed);
        self.lb.backends().run_health_check(true).await;
    }

    /// Whether the target at `index` currently passes the active health check.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.backends
            .get(index)
            .is_some_and(|b| self.lb.backends().ready(b))
    }
}

fn resolve(t: &Target) -> Result<std::net::SocketAddr, String> {
    let addrs: Vec<std::net::SocketAddr> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve upstream {}: {e}", t.authority()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("upstream {} resolves to no address", t.authority()))
}

/// Poll once a future that is known never to wait (static discovery).
fn futures_now<T>(
    f: impl std::future::Future<Output = pingora_error::Result<T>>,
) -> Result<T, String> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => v.map_err(|e| e.to_string()),
        std::task::Poll::Pending => Err("static discovery did not complete".to_string()),
    }
}

/// Pools by API id; outlives snapshots.
#[derive(Debug, Default)]
pub struct PoolRegistry {
    pools: DashMap<Arc<str>, Arc<Pool>>,
}

impl PoolRegistry {
    /// The pool for `api_id` built from `def`: the existing one when its definition is
    /// unchanged, else a new one (not yet installed; see [`PoolRegistry::install`]).
    pub fn prepare(&self, api_id: &Arc<str>, def: &UpstreamDef) -> Result<Arc<Pool>, String> {
        if let Some(p) = self.pools.get(api_id) {
            if p.def == *def {
                return Ok(p.clone());
            }
        }
        Pool::build(def).map(Arc::new)
    }

    /// Make `pools` the live set: APIs not in it are dropped.
    pub fn install(&self, pools: &[(Arc<str>, Arc<Pool>)]) {
        self.pools
            .retain(|k, _| pools.iter().any(|(id, _)| id == k));
        for (id, p) in pools {
            self.pools.insert(id.clone(), p.clone());
        }
    }

    /// Every live pool.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools.iter().map(|e| e.value().clone()).collect()
    }
}
