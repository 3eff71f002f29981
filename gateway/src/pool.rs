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
//! - Host names are resolved when a pool is built, and again by the maintenance task
//!   ([`Pool::re_resolved`]): a target keeps its address while its name still resolves to
//!   it, and moves when the address is gone from the answers. A target whose name does not
//!   resolve is kept without an address and never picked (alone in its pool: 503) until a
//!   later resolution finds one, so that one unresolvable name never keeps a config from
//!   serving its other APIs.

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
    /// from; `None` while its host name does not resolve.
    backends: Vec<Option<Backend>>,
    peers: Vec<Option<HttpPeer>>,
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
    /// Build a pool, resolving its host names now (blocking DNS: done at config apply, off
    /// the request path). A name that does not resolve leaves its target without an
    /// address (logged); other problems refuse the pool.
    pub fn build(def: &UpstreamDef) -> Result<Pool, String> {
        let addrs = def
            .targets
            .iter()
            .map(|t| match resolve_all(t) {
                Ok(all) => choose(&all, None),
                Err(message) => {
                    tracing::warn!(%message, "an upstream target has no address for now");
                    None
                }
            })
            .collect();
        Pool::build_at(def, addrs)
    }

    /// Build a pool whose targets have the addresses `addrs` (parallel to `def.targets`).
    fn build_at(
        def: &UpstreamDef,
        addrs: Vec<Option<std::net::SocketAddr>>,
    ) -> Result<Pool, String> {
        let mut set = BTreeSet::new();
        let mut targets = Vec::with_capacity(def.targets.len());
        let mut peers = Vec::with_capacity(def.targets.len());
        let mut hosts = Vec::with_capacity(def.targets.len());
        for (t, addr) in def.targets.iter().zip(addrs) {
            let Some(addr) = addr else {
                targets.push(None);
                peers.push(None);
                hosts
                    .push(http::HeaderValue::try_from(t.authority()).map_err(|_| {
                        format!("upstream host {} is no valid Host header", t.host)
                    })?);
                continue;
            };
            let b = Backend {
                addr: SocketAddr::Inet(addr),
                weight: 1,
                ext: Default::default(),
            };
            set.insert(b.clone());
            targets.push(Some(b));
            let sni = if t.tls { t.host.clone() } else { String::new() };
            let mut peer = HttpPeer::new(addr, t.tls, sni);
            peer.options.connection_timeout = Some(def.connect_timeout);
            peer.options.read_timeout = Some(def.timeout);
            peer.options.write_timeout = Some(def.timeout);
            peer.options.idle_timeout = Some(Duration::from_secs(60));
            peers.push(Some(peer));
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
        let candidate = |i: usize| match &self.backends[i] {
            Some(b) => {
                (i >= 64 || tried & (1 << i) == 0) && (!checked || self.lb.backends().ready(b))
            }
            // No address (its name does not resolve): never.
            None => false,
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
        let peer = self.peers[index]
            .clone()
            .ok_or(PickError::NoHealthyTarget)?;
        Ok(Picked {
            index,
            peer: Box::new(peer),
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
            .and_then(Option::as_ref)
            .is_some_and(|b| self.lb.backends().ready(b))
    }

    /// Each target's address (`None`: its name did not resolve).
    pub fn addresses(&self) -> Vec<Option<std::net::SocketAddr>> {
        self.peers
            .iter()
            .map(|p| {
                p.as_ref().and_then(|p| match p._address {
                    SocketAddr::Inet(a) => Some(a),
                    _ => None,
                })
            })
            .collect()
    }

    /// Whether some target is named by a host name (not an IP address), which a later
    /// resolution may move.
    pub fn has_names(&self) -> bool {
        self.def
            .targets
            .iter()
            .any(|t| t.host.parse::<std::net::IpAddr>().is_err())
    }

    /// Whether some target has no address yet.
    pub fn has_unresolved(&self) -> bool {
        self.peers.iter().any(Option::is_none)
    }

    /// Resolve the pool's host names again with `resolve`: a new pool (fresh health and
    /// connections) when some target's address changes: its name no longer resolves to
    /// it, or a name without an address now resolves. `None` when nothing changes; a name
    /// that fails to resolve now keeps the address it had (a failing resolver is no reason
    /// to stop sending to an upstream that answers).
    pub fn re_resolved(
        &self,
        resolve: impl Fn(&Target) -> Result<Vec<std::net::SocketAddr>, String>,
    ) -> Result<Option<Pool>, String> {
        let current = self.addresses();
        let mut moved = false;
        let addrs: Vec<Option<std::net::SocketAddr>> = self
            .def
            .targets
            .iter()
            .zip(current)
            .map(|(t, now)| {
                if t.host.parse::<std::net::IpAddr>().is_ok() {
                    return now;
                }
                let next = match resolve(t) {
                    Ok(all) => choose(&all, now).or(now),
                    Err(_) => now,
                };
                moved |= next != now;
                next
            })
            .collect();
        if !moved {
            return Ok(None);
        }
        Pool::build_at(&self.def, addrs).map(Some)
    }
}

/// Every address `t`'s host resolves to (blocking DNS; an IP address is its own answer).
pub fn resolve_all(t: &Target) -> Result<Vec<std::net::SocketAddr>, String> {
    let addrs: Vec<std::net::SocketAddr> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve upstream {}: {e}", t.authority()))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("upstream {} resolves to no address", t.authority()));
    }
    Ok(addrs)
}

/// The address to use among a name's `addrs`: `current` while it is still among them (DNS
/// answers come in any order: no move without a reason), else the first IPv4 one, else the
/// first.
fn choose(
    addrs: &[std::net::SocketAddr],
    current: Option<std::net::SocketAddr>,
) -> Option<std::net::SocketAddr> {
    current
        .filter(|c| addrs.contains(c))
        .or_else(|| addrs.iter().find(|a| a.is_ipv4()).copied())
        .or_else(|| addrs.first().copied())
}

/// The targets of `def` whose host names do not resolve now, one message each: a config
/// write is refused for them (a typo is caught when it is made), while a config already
/// accepted keeps serving its other targets and APIs when a name stops resolving.
pub fn unresolvable(def: &UpstreamDef) -> Vec<String> {
    def.targets
        .iter()
        .filter_map(|t| resolve_all(t).err())
        .collect()
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

    /// Make `pool` the one of `api_id` (its targets moved to other addresses).
    pub fn replace(&self, api_id: &Arc<str>, pool: Arc<Pool>) {
        self.pools.insert(api_id.clone(), pool);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr as Addr;

    fn def(hosts: &[&str]) -> UpstreamDef {
        let yaml = format!(
            "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: {{ targets: [{}] }}\n",
            hosts
                .iter()
                .map(|h| format!("\"http://{h}:8000\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        tollgate_config::parse_and_compile(&yaml).unwrap().apis[0]
            .upstream
            .clone()
    }

    fn addr(s: &str) -> Addr {
        s.parse().unwrap()
    }

    #[test]
    fn names_move_only_when_their_address_is_gone() {
        let def = def(&["svc.internal", "127.0.0.1"]);
        let pool = Pool::build_at(
            &def,
            vec![Some(addr("10.0.0.1:8000")), Some(addr("127.0.0.1:8000"))],
        )
        .unwrap();
        assert!(pool.has_names() && !pool.has_unresolved());
        // Still among the answers (in any order): nothing moves.
        let same = |_: &Target| Ok(vec![addr("10.0.0.2:8000"), addr("10.0.0.1:8000")]);
        assert!(pool.re_resolved(same).unwrap().is_none());
        // A failing resolver keeps the address.
        assert!(pool
            .re_resolved(|_| Err("down".to_string()))
            .unwrap()
            .is_none());
        // Gone: the target moves to the first IPv4 answer; the IP target never asks.
        let moved = pool
            .re_resolved(|t| {
                assert_eq!(t.host, "svc.internal", "an IP target was resolved");
                Ok(vec![addr("[fd00::9]:8000"), addr("10.0.0.9:8000")])
            })
            .unwrap()
            .expect("a new pool");
        assert_eq!(
            moved.addresses(),
            [Some(addr("10.0.0.9:8000")), Some(addr("127.0.0.1:8000"))]
        );
        assert_eq!(
            moved.pick(0).unwrap().peer._address,
            SocketAddr::Inet(addr("10.0.0.9:8000"))
        );
    }

    #[test]
    fn a_target_without_an_address_gets_one_when_its_name_resolves() {
        let def = def(&["svc.internal"]);
        let pool = Pool::build_at(&def, vec![None]).unwrap();
        assert!(pool.has_unresolved());
        assert_eq!(pool.pick(0).unwrap_err(), PickError::NoHealthyTarget);
        assert!(!pool.is_healthy(0));
        assert!(pool
            .re_resolved(|_| Err("NXDOMAIN".to_string()))
            .unwrap()
            .is_none());
        let resolved = pool
            .re_resolved(|_| Ok(vec![addr("10.0.0.5:8000")]))
            .unwrap()
            .expect("a new pool");
        assert!(!resolved.has_unresolved());
        assert_eq!(resolved.pick(0).unwrap().index, 0);
    }
}
