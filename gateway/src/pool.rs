//! Upstream pools: one per API, built on `pingora-load-balancing`.
//!
//! - Round robin over healthy members (the targets' addresses): an atomic counter over the
//!   pool's own member list,
//!   with the health state read from `pingora-load-balancing`'s `Backends` only when the
//!   API configures a health check (its selector clones a `Backend`, extensions and all,
//!   and hashes every candidate: too much for the per-request path).
//! - Active HTTP health checks when the API configures `health_check` (run by the
//!   gateway's maintenance task, since load balancers made after start-up are not Pingora
//!   services).
//! - Passive ejection: a target that refuses a connection is skipped for
//!   [`EJECT_FOR`], unless every target is ejected. With `upstream.outlier_detection`, one
//!   that answers 5xx so many times in a row is skipped for its `ejection_time` alike.
//! - Pools live in a [`PoolRegistry`] keyed by API id that outlives config snapshots: a swap
//!   that does not change an API's `upstream` keeps its pool, its health state and its
//!   keep-alive connections.
//! - Host names are resolved when a pool is built, and again by the maintenance task
//!   ([`Pool::re_resolved`]): a target named by a host name has one member per address of
//!   its name (its IPv4 ones, else its IPv6 ones), and the pool is rebuilt when that set
//!   changes. A target whose name does not resolve has no member and is never picked
//!   (alone in its pool: 503) until a later resolution finds one, so that one unresolvable
//!   name never keeps a config from serving its other APIs.

use dashmap::DashMap;
use pingora_core::listeners::ALPN;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use pingora_http::RequestHeader;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_config::{Target, UpstreamDef, UpstreamTlsDef};

/// How long a target that refused a connection is skipped.
pub const EJECT_FOR: Duration = Duration::from_secs(5);

/// The upstream pool of one API.
///
/// Its members are the addresses of its targets: one per IP target, one per address a
/// target's host name resolves to (its IPv4 addresses, else its IPv6 ones), none while a
/// name resolves to nothing. Picks, retries, ejection and health are per member.
pub struct Pool {
    /// The definition this pool was built from.
    pub def: UpstreamDef,
    lb: LoadBalancer<RoundRobin>,
    members: Vec<Member>,
    /// Per target: the `Host` the upstream sees (`host:port`).
    hosts: Vec<http::HeaderValue>,
    /// Per target: its addresses (sorted; empty while its name resolves to nothing).
    addrs: Vec<Vec<std::net::SocketAddr>>,
    /// Why the names of some targets did not resolve when the pool was built, one message
    /// each (see [`Pool::unresolved`]).
    unresolved: Vec<String>,
    /// Round-robin position.
    next: AtomicUsize,
    /// With weights that differ: the member of each round-robin slot, in smooth weighted
    /// round-robin order (a member of weight `w` has `w` slots, spread out). Empty when
    /// every member has the same weight: then slot `i` is member `i`.
    schedule: Vec<usize>,
    /// Members that take requests (weight above 0).
    takers: usize,
    epoch: Instant,
    /// Per member: milliseconds since `epoch` until which it is ejected (0: not ejected).
    ejected_until: Vec<AtomicU64>,
    /// Per member: its 5xx answers in a row (`upstream.outlier_detection`).
    consecutive_5xx: Vec<std::sync::atomic::AtomicU32>,
    /// Milliseconds since `epoch` of the next active health check.
    next_check: AtomicU64,
}

/// The name `target` sends as SNI and verifies: `upstream.tls.server_name`, else its host
/// (none for `http://`).
fn sni(target: &Target, def: &UpstreamDef) -> String {
    if !target.tls {
        return String::new();
    }
    match def.tls.as_deref().and_then(|t| t.server_name.as_deref()) {
        Some(name) => name.to_owned(),
        None => target.host.clone(),
    }
}

/// The round-robin slots of members with `weights`, in smooth weighted round-robin order
/// (nginx's: each step, every member gains its weight, the richest is picked and pays the
/// total), so that a member of weight 3 among weights 3 and 1 is not picked three times in
/// a row. Members of weight 0 have no slot. Empty when every member has the same weight
/// (plain round robin over the members).
fn schedule(weights: &[u32]) -> Vec<usize> {
    if weights.windows(2).all(|w| w[0] == w[1]) {
        return Vec::new();
    }
    // 90 and 10 make the same order as 9 and 1, in a tenth of the slots.
    let gcd = weights.iter().fold(0, |a, &w| gcd(a, w)).max(1);
    let weights: Vec<u32> = weights.iter().map(|w| w / gcd).collect();
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `upstream.http2`: HTTP/2 only (ALPN `h2` over TLS; prior knowledge, h2c, in plain
/// text), with up to [`H2_STREAMS`] requests at once on one connection.
fn speak_http2(peer: &mut HttpPeer) {
    peer.options.alpn = ALPN::H2;
    peer.options.max_h2_streams = H2_STREAMS;
}

/// Concurrent requests on one HTTP/2 upstream connection before another is opened
/// (servers usually allow 100 or more; Pingora's default is 1).
const H2_STREAMS: usize = 100;

/// `upstream.tls` in the form Pingora's peers take, built once per pool: every connection
/// of every member shares the parsed certificates.
struct PeerTls {
    ca: Option<Arc<CaType>>,
    client: Option<Arc<CertKey>>,
    verify: bool,
    /// Keeps connections made under these settings apart from others to the same address
    /// in Pingora's connection pool, which does not tell trust stores apart.
    group: u64,
}

impl PeerTls {
    fn new(def: &UpstreamTlsDef) -> PeerTls {
        // The config validation parsed every certificate with the parser used here, so
        // `parse_x509` (which panics on a bad one) finds none.
        let ca = def.ca.as_ref().map(|ders| {
            ders.iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect::<Arc<CaType>>()
        });
        let client = def
            .client
            .as_ref()
            .map(|(chain, key)| Arc::new(CertKey::new(chain.clone(), key.clone())));
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        def.hash(&mut hasher);
        PeerTls {
            ca,
            client,
            verify: def.verify,
            // 0 is every other peer's group.
            group: hasher.finish().max(1),
        }
    }

    fn apply(&self, peer: &mut HttpPeer) {
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.group_key = self.group;
    }
}

/// One address of one target.
struct Member {
    /// Index into `def.targets`.
    target: usize,
    /// For the health state.
    backend: Backend,
    /// The peer every attempt starts from.
    peer: HttpPeer,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("def", &self.def)
            .field("addrs", &self.addrs)
            .finish()
    }
}

/// A member picked for one attempt.
#[derive(Debug, Clone)]
pub struct Picked {
    /// Index of the member (see [`Pool::target`], [`Pool::host`], [`Pool::eject`]).
    pub index: usize,
    /// The peer to connect to.
    pub peer: Box<HttpPeer>,
}

impl Picked {
    /// The read/write timeout of this attempt: `timeout` (a `forward-request` policy's)
    /// instead of the upstream's, when set.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Picked {
        if let Some(t) = timeout {
            self.peer.options.read_timeout = Some(t);
            self.peer.options.write_timeout = Some(t);
        }
        self
    }
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
        let mut unresolved = Vec::new();
        let addrs = def
            .targets
            .iter()
            .map(|t| match resolve_all(t) {
                Ok(all) => usable(all),
                Err(message) => {
                    tracing::warn!(error = %message, "an upstream target has no address for now");
                    unresolved.push(message);
                    Vec::new()
                }
            })
            .collect();
        let mut pool = Pool::build_at(def, addrs)?;
        pool.unresolved = unresolved;
        Ok(pool)
    }

    /// Build a pool whose targets have the addresses `addrs` (parallel to `def.targets`).
    fn build_at(def: &UpstreamDef, addrs: Vec<Vec<std::net::SocketAddr>>) -> Result<Pool, String> {
        let tls = def.tls.as_deref().map(PeerTls::new);
        let mut set = BTreeSet::new();
        let mut members = Vec::new();
        let mut hosts = Vec::with_capacity(def.targets.len());
        for (i, (t, addrs)) in def.targets.iter().zip(&addrs).enumerate() {
            hosts.push(
                http::HeaderValue::try_from(t.authority())
                    .map_err(|_| format!("upstream host {} is no valid Host header", t.host))?,
            );
            for &addr in addrs {
                let backend = Backend {
                    addr: SocketAddr::Inet(addr),
                    weight: 1,
                    ext: Default::default(),
                };
                set.insert(backend.clone());
                let mut peer = HttpPeer::new(addr, t.tls, sni(t, def));
                if let (true, Some(tls)) = (t.tls, &tls) {
                    tls.apply(&mut peer);
                }
                if def.http2 {
                    speak_http2(&mut peer);
                }
                peer.options.connection_timeout = Some(def.connect_timeout);
                peer.options.read_timeout = Some(def.timeout);
                peer.options.write_timeout = Some(def.timeout);
                peer.options.idle_timeout = Some(Duration::from_secs(60));
                members.push(Member {
                    target: i,
                    backend,
                    peer,
                });
            }
        }
        let backends = Backends::new(Static::new(set));
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
        if let Some(hc) = &def.health_check {
            let first = &def.targets[0];
            let mut check = HttpHealthCheck::new(&sni(first, def), first.tls);
            if let (true, Some(tls)) = (first.tls, &tls) {
                tls.apply(&mut check.peer_template);
            }
            if def.http2 {
                speak_http2(&mut check.peer_template);
            }
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
        let weights: Vec<u32> = members
            .iter()
            .map(|m| def.targets[m.target].weight)
            .collect();
        Ok(Pool {
            def: def.clone(),
            lb,
            schedule: schedule(&weights),
            takers: weights.iter().filter(|&&w| w > 0).count(),
            ejected_until: members.iter().map(|_| AtomicU64::new(0)).collect(),
            consecutive_5xx: members
                .iter()
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            members,
            hosts,
            addrs,
            unresolved: Vec::new(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            next_check: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How many members (addresses) take requests: at most that many attempts differ.
    pub fn len(&self) -> usize {
        self.takers
    }

    /// Whether the pool has no member at all (no target has an address).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Skip member `index` for [`EJECT_FOR`] (passive health).
    pub fn eject(&self, index: usize) {
        self.eject_for(index, EJECT_FOR);
    }

    fn eject_for(&self, index: usize, time: Duration) {
        if let Some(t) = self.ejected_until.get(index) {
            t.store(self.now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Member `index` answered with `status` (`upstream.outlier_detection`; nothing
    /// without it): a 5xx counts towards its ejection, and the one that makes
    /// `consecutive_5xx` in a row ejects it for `ejection_time` (the count starts again);
    /// any other status resets the count.
    pub fn answered(&self, index: usize, status: u16) {
        let (Some((limit, time)), Some(count)) =
            (self.def.outlier_detection, self.consecutive_5xx.get(index))
        else {
            return;
        };
        if (500..600).contains(&status) {
            if count.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
                count.store(0, Ordering::Relaxed);
                self.eject_for(index, time);
                tracing::warn!(
                    target = %self.target(index).authority(),
                    member = index,
                    answers = limit,
                    ejection_secs = time.as_secs_f64(),
                    "upstream target ejected after consecutive 5xx answers"
                );
            }
        } else if count.load(Ordering::Relaxed) != 0 {
            count.store(0, Ordering::Relaxed);
        }
    }

    /// Pick the next member by round robin among healthy ones, skipping the members in
    /// `tried` (a bit set of indexes) and, while others remain, ejected ones. A retry (some
    /// member tried) does not move the round robin on: otherwise, in a pool of two, every
    /// request that is retried once would start on the same member as the one before.
    pub fn pick(&self, tried: u64) -> Result<Picked, PickError> {
        let weighted = !self.schedule.is_empty();
        // Unweighted, every member has the same weight: all take requests, or (all 0,
        // every other target without an address) none does.
        let n = if weighted {
            self.schedule.len()
        } else {
            self.takers
        };
        let start = if tried == 0 {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        };
        let slot = |k: usize| {
            let i = (start + k) % n;
            if weighted {
                self.schedule[i]
            } else {
                i
            }
        };
        let checked = self.def.health_check.is_some();
        let candidate = |i: usize| {
            (i >= 64 || tried & (1 << i) == 0)
                && (!checked || self.lb.backends().ready(&self.members[i].backend))
        };
        // The clock is read only when some member has been ejected.
        let mut now = None;
        let index = (0..n)
            .map(slot)
            .find(|&i| {
                candidate(i) && {
                    let until = self.ejected_until[i].load(Ordering::Relaxed);
                    until == 0 || until <= *now.get_or_insert_with(|| self.now_ms())
                }
            })
            // Every candidate is ejected: try one anyway rather than fail.
            .or_else(|| (0..n).map(slot).find(|&i| candidate(i)))
            .ok_or(PickError::NoHealthyTarget)?;
        Ok(Picked {
            index,
            peer: Box::new(self.members[index].peer.clone()),
        })
    }

    /// The `Host` header value for member `index` (its target's `host:port`).
    pub fn host(&self, index: usize) -> &http::HeaderValue {
        &self.hosts[self.members[index].target]
    }

    /// The target of member `index`.
    pub fn target(&self, index: usize) -> &Target {
        &self.def.targets[self.members[index].target]
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

    /// Whether member `index` currently passes the active health check.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.members
            .get(index)
            .is_some_and(|m| self.lb.backends().ready(&m.backend))
    }

    /// Per target (parallel to `def.targets`): whether some address of it passes the
    /// active health check (false while its name resolves to nothing).
    pub fn targets_healthy(&self) -> Vec<bool> {
        let mut healthy = vec![false; self.def.targets.len()];
        for (i, m) in self.members.iter().enumerate() {
            if self.is_healthy(i) {
                healthy[m.target] = true;
            }
        }
        healthy
    }

    /// Per target (parallel to `def.targets`): each of its addresses, with whether it
    /// passes the active health check (always, without one) and how long it is still
    /// skipped by a passive ejection (`None`: it is not).
    pub fn member_health(&self) -> Vec<Vec<(std::net::SocketAddr, bool, Option<Duration>)>> {
        let now = self.now_ms();
        let mut out = vec![Vec::new(); self.def.targets.len()];
        for (i, m) in self.members.iter().enumerate() {
            if let SocketAddr::Inet(a) = &m.backend.addr {
                let until = self.ejected_until[i].load(Ordering::Relaxed);
                let ejected = (until > now).then(|| Duration::from_millis(until - now));
                out[m.target].push((*a, self.is_healthy(i), ejected));
            }
        }
        out
    }

    /// Per target, its addresses (sorted; empty while its name resolves to nothing).
    pub fn addresses(&self) -> &[Vec<std::net::SocketAddr>] {
        &self.addrs
    }

    /// Whether some target is named by a host name (not an IP address), which a later
    /// resolution may move.
    pub fn has_names(&self) -> bool {
        self.def
            .targets
            .iter()
            .any(|t| t.host.parse::<std::net::IpAddr>().is_err())
    }

    /// Why the names of some targets did not resolve when [`Pool::build`] made the pool,
    /// one message each: a config write that brings such a pool is refused (a typo is
    /// caught when it is made; see [`crate::Gateway::apply_checked`]).
    pub fn unresolved(&self) -> &[String] {
        &self.unresolved
    }

    /// Whether some target has no address yet.
    pub fn has_unresolved(&self) -> bool {
        self.addrs.iter().any(Vec::is_empty)
    }

    /// Resolve the pool's host names again with `resolve`: a new pool (fresh health and
    /// connections) when the addresses of some target change (an address more or less in
    /// its name's answers, whatever their order). `None` when nothing changes; a name that
    /// fails to resolve now keeps the addresses it had (a failing resolver is no reason to
    /// stop sending to an upstream that answers).
    pub fn re_resolved(
        &self,
        resolve: impl Fn(&Target) -> Result<Vec<std::net::SocketAddr>, String>,
    ) -> Result<Option<Pool>, String> {
        let mut moved = false;
        let addrs: Vec<Vec<std::net::SocketAddr>> = self
            .def
            .targets
            .iter()
            .zip(&self.addrs)
            .map(|(t, now)| {
                if t.host.parse::<std::net::IpAddr>().is_ok() {
                    return now.clone();
                }
                match resolve(t) {
                    Ok(all) => {
                        let next = usable(all);
                        moved |= next != *now;
                        next
                    }
                    Err(_) => now.clone(),
                }
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

/// The addresses of a name's answer that the pool uses: its IPv4 ones when it has any
/// (a name such as `localhost` answers `::1` too, where many services do not listen),
/// else its IPv6 ones; sorted and without repeats, so that answers in another order are
/// the same members.
fn usable(mut addrs: Vec<std::net::SocketAddr>) -> Vec<std::net::SocketAddr> {
    if addrs.iter().any(std::net::SocketAddr::is_ipv4) {
        addrs.retain(std::net::SocketAddr::is_ipv4);
    }
    addrs.sort();
    addrs.dedup();
    addrs
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

/// Pools by API id, in a config's API order.
pub type ApiPools = Vec<(Arc<str>, Arc<Pool>)>;

/// Pools by API id; outlives snapshots.
#[derive(Debug, Default)]
pub struct PoolRegistry {
    pools: DashMap<Arc<str>, Arc<Pool>>,
}

impl PoolRegistry {
    /// The pool for `api_id` built from `def`: the existing one when its definition is
    /// unchanged, else a new one (not yet installed; see [`PoolRegistry::install`]);
    /// whether it is new.
    pub fn prepare(
        &self,
        api_id: &Arc<str>,
        def: &UpstreamDef,
    ) -> Result<(Arc<Pool>, bool), String> {
        if let Some(p) = self.pools.get(api_id) {
            if p.def == *def {
                return Ok((p.clone(), false));
            }
        }
        Pool::build(def).map(|p| (Arc::new(p), true))
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
    fn consecutive_5xx_answers_eject_a_target_and_others_reset_the_count() {
        let mut d = def(&["127.0.0.1", "127.0.0.2"]);
        d.outlier_detection = Some((3, Duration::from_secs(60)));
        let pool = Pool::build(&d).unwrap();
        let picks =
            |pool: &Pool| -> Vec<usize> { (0..4).map(|_| pool.pick(0).unwrap().index).collect() };
        assert_eq!(picks(&pool), [0, 1, 0, 1]);
        // Two 5xx, a 200, two more: no three in a row.
        for status in [500, 503, 200, 502, 504] {
            pool.answered(0, status);
        }
        assert_eq!(picks(&pool), [0, 1, 0, 1]);
        pool.answered(0, 500);
        assert_eq!(picks(&pool), [1, 1, 1, 1], "ejected on the third in a row");
        // 4xx answers are the client's: they count for nothing.
        for _ in 0..5 {
            pool.answered(1, 404);
        }
        assert_eq!(picks(&pool), [1, 1, 1, 1]);
        // Without the setting, nothing is counted.
        let plain = Pool::build(&def(&["127.0.0.1", "127.0.0.2"])).unwrap();
        for _ in 0..10 {
            plain.answered(0, 500);
        }
        assert_eq!(picks(&plain), [0, 1, 0, 1]);
    }

    #[test]
    fn schedule_is_smooth_weighted_round_robin() {
        assert!(schedule(&[1, 1, 1]).is_empty());
        assert!(schedule(&[5]).is_empty());
        assert_eq!(schedule(&[3, 1]), [0, 0, 1, 0]);
        // Reduced by the common divisor; spread out, never three of one in a row here.
        let s = schedule(&[60, 20, 20]);
        assert_eq!(s.len(), 5);
        assert_eq!(s.iter().filter(|&&m| m == 0).count(), 3);
        assert!(s.windows(3).all(|w| w.iter().any(|&m| m != 0)), "{s:?}");
        // Weight 0: no slot.
        assert_eq!(schedule(&[0, 2, 1]), [1, 2, 1]);
    }

    #[test]
    fn picks_follow_the_weights_and_skip_what_cannot_take_requests() {
        let yaml = "version: 1\napis:\n  - id: a\n    path: /a\n    upstream:\n      targets: [{ url: \"http://10.0.0.1:80\", weight: 3 }, \"http://10.0.0.2:80\", { url: \"http://10.0.0.3:80\", weight: 0 }]\n";
        let def = tollgate_config::parse_and_compile(yaml).unwrap().apis[0]
            .upstream
            .clone();
        let pool = Pool::build(&def).unwrap();
        assert_eq!(pool.len(), 2, "the drained target takes no requests");
        let mut seen = [0usize; 3];
        for _ in 0..40 {
            seen[pool.pick(0).unwrap().index] += 1;
        }
        assert_eq!(seen, [30, 10, 0]);
        // Member 0 already tried: the next slot that is not.
        for _ in 0..8 {
            assert_eq!(pool.pick(1).unwrap().index, 1);
        }
        // Both takers tried: nothing left, the drained one is not a fallback.
        assert_eq!(pool.pick(0b11).unwrap_err(), PickError::NoHealthyTarget);
    }

    fn addrs(list: &[&str]) -> Vec<Addr> {
        list.iter().map(|s| addr(s)).collect()
    }

    #[test]
    fn names_move_only_when_their_addresses_change() {
        let def = def(&["svc.internal", "127.0.0.1"]);
        let pool = Pool::build_at(
            &def,
            vec![
                addrs(&["10.0.0.1:8000", "10.0.0.2:8000"]),
                addrs(&["127.0.0.1:8000"]),
            ],
        )
        .unwrap();
        assert!(pool.has_names() && !pool.has_unresolved());
        assert_eq!(pool.len(), 3);
        // The same answers in another order: nothing moves.
        let same = |_: &Target| Ok(addrs(&["10.0.0.2:8000", "10.0.0.1:8000", "10.0.0.2:8000"]));
        assert!(pool.re_resolved(same).unwrap().is_none());
        // A failing resolver keeps the addresses.
        assert!(pool
            .re_resolved(|_| Err("down".to_string()))
            .unwrap()
            .is_none());
        // Another set: the pool is rebuilt with it (IPv4 preferred); the IP target is never
        // looked up.
        let moved = pool
            .re_resolved(|t| {
                assert_eq!(t.host, "svc.internal", "an IP target was resolved");
                Ok(addrs(&["[fd00::9]:8000", "10.0.0.9:8000"]))
            })
            .unwrap()
            .expect("a new pool");
        assert_eq!(
            moved.addresses(),
            [addrs(&["10.0.0.9:8000"]), addrs(&["127.0.0.1:8000"])]
        );
        assert_eq!(moved.len(), 2);
        // Only IPv6 answers: those.
        let v6 = pool
            .re_resolved(|_| Ok(addrs(&["[fd00::9]:8000"])))
            .unwrap()
            .expect("a new pool");
        assert_eq!(v6.addresses()[0], addrs(&["[fd00::9]:8000"]));
    }

    #[test]
    fn a_name_with_several_addresses_spreads_over_them() {
        let def = def(&["svc.internal"]);
        let pool = Pool::build_at(&def, vec![addrs(&["10.0.0.1:8000", "10.0.0.2:8000"])]).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let p = pool.pick(0).unwrap();
            assert_eq!(pool.target(p.index).host, "svc.internal");
            assert_eq!(pool.host(p.index), "svc.internal:8000");
            seen.insert(format!("{:?}", p.peer._address));
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        // A member that was tried is not picked again for the same request.
        let first = pool.pick(0).unwrap().index;
        let second = pool.pick(1 << first).unwrap().index;
        assert_ne!(first, second);
        assert!(pool.pick((1 << first) | (1 << second)).is_err());
        assert_eq!(pool.targets_healthy(), [true]);
    }

    #[test]
    fn a_target_without_an_address_gets_one_when_its_name_resolves() {
        let def = def(&["svc.internal"]);
        let pool = Pool::build_at(&def, vec![Vec::new()]).unwrap();
        assert!(pool.has_unresolved() && pool.is_empty());
        assert_eq!(pool.pick(0).unwrap_err(), PickError::NoHealthyTarget);
        assert_eq!(pool.targets_healthy(), [false]);
        assert!(pool
            .re_resolved(|_| Err("NXDOMAIN".to_string()))
            .unwrap()
            .is_none());
        let resolved = pool
            .re_resolved(|_| Ok(addrs(&["10.0.0.5:8000"])))
            .unwrap()
            .expect("a new pool");
        assert!(!resolved.has_unresolved());
        assert_eq!(resolved.pick(0).unwrap().index, 0);
    }
}
