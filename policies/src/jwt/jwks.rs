//! JWKS and OpenID discovery documents: fetched, cached, refreshed, refetched on demand.
//!
//! A [`KeySource`] is one document address (`jwks_uri`, or `openid_config` whose discovery
//! document names the `jwks_uri`). Sources live in the [`JwksRegistry`], keyed by kind and
//! address, outside every config snapshot: a config swap that keeps the address keeps the
//! fetched keys. Building a policy only registers its source (no I/O at build time).
//!
//! Life cycle of a source:
//!
//! - **Scheduled fetches.** The gateway's maintenance loop calls [`JwksRegistry::tick`]
//!   every 500 ms. A new source is due at once; after a successful fetch the next one is due
//!   after the answer's `Cache-Control: max-age`, clamped to
//!   [`JwksConfig::min_refresh`]..=[`JwksConfig::max_refresh`] (10 minutes without one);
//!   after a failure, after a backoff that doubles from [`JwksConfig::retry_min`] up to
//!   [`JwksConfig::retry_max`].
//! - **On demand.** A token whose `kid` no key has (or any token before the first fetch
//!   finished) makes the policy wait on [`KeySource::refetch`]: single flight (concurrent
//!   callers join the one fetch under way) and rate limited (no new fetch within
//!   [`JwksConfig::refetch_interval`] of the previous one's start or end, whatever the
//!   traffic), so random `kid`s cannot make the gateway hammer the identity provider.
//! - **Failures** (network, status, size, JSON, a document without a usable signing key)
//!   keep the last good key set, add to the failure counters ([`KeySource::failure_count`],
//!   [`JwksRegistry::failure_count`]) and are logged at `warn` with the address and the
//!   reason (never a token).
//! - Sources that no live policy uses any more are dropped at the next tick.

use super::keys::{parse_jwks, KeySet};
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Timings and limits of JWKS fetching.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// Refresh interval when the answer has no usable `Cache-Control: max-age` (10 min).
    pub default_refresh: Duration,
    /// Shortest refresh interval, whatever `max-age` says (60 s).
    pub min_refresh: Duration,
    /// Longest refresh interval, whatever `max-age` says (24 h).
    pub max_refresh: Duration,
    /// At most one on-demand refetch per source in this interval (5 s).
    pub refetch_interval: Duration,
    /// First retry delay after a failed scheduled fetch; doubles on each failure (2 s).
    pub retry_min: Duration,
    /// Longest retry delay (5 min).
    pub retry_max: Duration,
    /// Timeout of one HTTP exchange, connection included (10 s).
    pub timeout: Duration,
    /// Largest document accepted (1 MiB).
    pub max_document_bytes: usize,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            default_refresh: Duration::from_secs(600),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(24 * 3600),
            refetch_interval: Duration::from_secs(5),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_document_bytes: 1 << 20,
        }
    }
}

/// What a source's address points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A JWKS document (`jwks_uri`).
    Jwks,
    /// An OpenID discovery document whose `jwks_uri` names the JWKS (`openid_config`).
    OpenIdConfig,
}

/// What every source shares: timings, the HTTP client, registry-wide counters.
#[derive(Debug, Default)]
struct Shared {
    config: JwksConfig,
    client: OnceLock<Result<reqwest::Client, String>>,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    /// The HTTP client, made on first use (not at build time: building makes no I/O and
    /// may run outside a runtime). No connection pool: fetches are rare and may run on
    /// different runtimes (the maintenance loop's, a request's), so each opens its own
    /// connection rather than reusing one bound to another runtime.
    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(self.config.timeout)
                    .connect_timeout(self.config.timeout)
                    .pool_max_idle_per_host(0)
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION"), " (jwks)"))
                    .build()
                    .map_err(|e| format!("cannot make an HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// When a source fetches next, and what happened last.
#[derive(Debug)]
struct Schedule {
    /// When the next scheduled fetch is due.
    next_due: Instant,
    /// Start or end of the latest fetch, whichever is later (rate limit of refetches).
    last_activity: Option<Instant>,
    /// Failures since the last success (backoff).
    failures_in_row: u32,
    /// The refresh interval chosen after the last success.
    interval: Option<Duration>,
}

/// One JWKS (or discovery) address: its current key set and its fetch state.
#[derive(Debug)]
pub struct KeySource {
    uri: String,
    kind: SourceKind,
    shared: Arc<Shared>,
    keys: ArcSwapOption<KeySet>,
    /// Held for the whole of a fetch: the single flight.
    fetch_lock: tokio::sync::Mutex<()>,
    inflight: AtomicBool,
    schedule: Mutex<Schedule>,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl KeySource {
    fn new(kind: SourceKind, uri: &str, shared: Arc<Shared>) -> KeySource {
        KeySource {
            uri: uri.to_owned(),
            kind,
            shared,
            keys: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(()),
            inflight: AtomicBool::new(false),
            schedule: Mutex::new(Schedule {
                next_due: Instant::now(),
                last_activity: None,
                failures_in_row: 0,
                interval: None,
            }),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The document address.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// What the address points at.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Successful fetches so far.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Failed fetches so far.
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Usable keys in the current set (0 before the first successful fetch).
    pub fn key_count(&self) -> usize {
        self.keys.load().as_ref().map_or(0, |s| s.keys.len())
    }

    /// The refresh interval chosen after the last successful fetch (from `Cache-Control`,
    /// clamped), if any fetch succeeded.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.lock_schedule().interval
    }

    /// The current key set.
    pub(crate) fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether waiting on [`KeySource::refetch`] can bring new keys now: a fetch is under
    /// way (join it), or the rate limit allows a new one.
    pub(crate) fn may_wait(&self, now: Instant) -> bool {
        self.inflight.load(Ordering::Acquire) || self.refetch_allowed(now)
    }

    fn refetch_allowed(&self, now: Instant) -> bool {
        let interval = self.shared.config.refetch_interval;
        self.lock_schedule()
            .last_activity
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
    }

    /// Whether a scheduled fetch is due.
    pub fn is_due(&self, now: Instant) -> bool {
        !self.inflight.load(Ordering::Acquire) && now >= self.lock_schedule().next_due
    }

    /// On-demand refetch (unknown `kid`, no keys yet): joins a fetch under way, otherwise
    /// fetches unless one started or ended within [`JwksConfig::refetch_interval`]. Returns
    /// when the source has settled; the keys are then in the source.
    pub async fn refetch(self: Arc<Self>) {
        let _flight = self.fetch_lock.lock().await;
        if !self.refetch_allowed(Instant::now()) {
            return;
        }
        self.fetch_locked().await;
    }

    /// Scheduled refresh: does nothing if a fetch is under way or none is due.
    pub async fn refresh_if_due(self: Arc<Self>) {
        let Ok(_flight) = self.fetch_lock.try_lock() else {
            return;
        };
        if !self.is_due(Instant::now()) {
            return;
        }
        self.fetch_locked().await;
    }

    /// Fetch now (the caller holds `fetch_lock`) and record the outcome.
    async fn fetch_locked(&self) {
        /// Clears `inflight` and stamps the activity time even if the fetch is cancelled.
        struct Flight<'a>(&'a KeySource);
        impl Drop for Flight<'_> {
            fn drop(&mut self) {
                self.0.lock_schedule().last_activity = Some(Instant::now());
                self.0.inflight.store(false, Ordering::Release);
            }
        }
        self.inflight.store(true, Ordering::Release);
        self.lock_schedule().last_activity = Some(Instant::now());
        let flight = Flight(self);
        let result = self.fetch().await;
        let now = Instant::now();
        let cfg = &self.shared.config;
        match result {
            Ok((set, max_age)) => {
                let interval = max_age.map_or(cfg.default_refresh, |a| {
                    a.clamp(cfg.min_refresh, cfg.max_refresh)
                });
                let first = self.keys.load().is_none();
                let (count, skipped) = (set.keys.len(), set.skipped);
                self.keys.store(Some(Arc::new(set)));
                self.fetches.fetch_add(1, Ordering::Relaxed);
                self.shared.fetches.fetch_add(1, Ordering::Relaxed);
                {
                    let mut s = self.lock_schedule();
                    s.next_due = now + interval;
                    s.failures_in_row = 0;
                    s.interval = Some(interval);
                }
                if first {
                    tracing::info!(uri = %self.uri, keys = count, skipped, refresh_s = interval.as_secs(), "JWKS fetched");
                } else {
                    tracing::debug!(uri = %self.uri, keys = count, skipped, refresh_s = interval.as_secs(), "JWKS refreshed");
                }
            }
            Err(reason) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                let backoff = {
                    let mut s = self.lock_schedule();
                    s.failures_in_row = s.failures_in_row.saturating_add(1);
                    let backoff = cfg
                        .retry_min
                        .saturating_mul(1u32 << (s.failures_in_row - 1).min(16))
                        .min(cfg.retry_max);
                    s.next_due = now + backoff;
                    backoff
                };
                tracing::warn!(
                    uri = %self.uri,
                    error = %reason,
                    retry_in_s = backoff.as_secs(),
                    kept_keys = self.key_count(),
                    "JWKS fetch failed; keeping the last good key set"
                );
            }
        }
        drop(flight);
    }

    /// One fetch: the discovery document first for [`SourceKind::OpenIdConfig`], then the
    /// JWKS. Returns the key set and the JWKS answer's `max-age`.
    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), String> {
        let cfg = &self.shared.config;
        let client = self.shared.client()?;
        let discovered;
        let jwks_uri = match self.kind {
            SourceKind::Jwks => self.uri.as_str(),
            SourceKind::OpenIdConfig => {
                #[derive(serde::Deserialize)]
                struct Discovery {
                    jwks_uri: String,
                }
                let (body, _) = get(client, &self.uri, cfg.max_document_bytes)
                    .await
                    .map_err(|e| format!("discovery document: {e}"))?;
                let doc: Discovery = serde_json::from_slice(&body)
                    .map_err(|e| format!("discovery document: no usable `jwks_uri`: {e}"))?;
                let lower = doc.jwks_uri.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                    return Err(
                        "discovery document: `jwks_uri` is not an http(s) address".to_owned()
                    );
                }
                discovered = doc.jwks_uri;
                discovered.as_str()
            }
        };
        let (body, max_age) = get(client, jwks_uri, cfg.max_document_bytes).await?;
        let set = parse_jwks(&body)?;
        if set.keys.is_empty() {
            return Err(format!(
                "the JWKS holds no usable signing key ({} skipped)",
                set.skipped
            ));
        }
        Ok((set, max_age))
    }
}

/// GET `uri`: a 2xx answer's body (at most `max` bytes) and its `Cache-Control: max-age`.
async fn get(
    client: &reqwest::Client,
    uri: &str,
    max: usize,
) -> Result<(Vec<u8>, Option<Duration>), String> {
    let mut resp = client
        .get(uri)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {uri} failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {uri} answered {}", resp.status()));
    }
    let max_age = cache_max_age(resp.headers());
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("GET {uri}: document over {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {uri}: reading the body failed: {e}"))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("GET {uri}: document over {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// `max-age` of a `Cache-Control` header (`no-cache`/`no-store` count as 0, which the
/// caller clamps up to the minimum interval).
pub(crate) fn cache_max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let directive = directive.trim();
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            let name = name.trim();
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                if let Ok(secs) = arg.trim().trim_matches('"').parse::<u64>() {
                    found = Some(Duration::from_secs(secs));
                }
            }
        }
    }
    found
}

/// Every JWKS source of the process, keyed by kind and address.
#[derive(Debug, Default)]
pub struct JwksRegistry {
    shared: Arc<Shared>,
    sources: Mutex<HashMap<(SourceKind, String), Arc<KeySource>>>,
}

impl JwksRegistry {
    /// A registry with these timings (tests shorten them).
    pub fn with_config(config: JwksConfig) -> JwksRegistry {
        JwksRegistry {
            shared: Arc::new(Shared {
                config,
                ..Shared::default()
            }),
            sources: Mutex::default(),
        }
    }

    /// The source for `uri`, made (not fetched) if it is new. No I/O.
    pub fn register(&self, kind: SourceKind, uri: &str) -> Arc<KeySource> {
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((kind, uri.to_owned()))
            .or_insert_with(|| Arc::new(KeySource::new(kind, uri, self.shared.clone())))
            .clone()
    }

    /// The registered source for `uri`, if any.
    pub fn source(&self, kind: SourceKind, uri: &str) -> Option<Arc<KeySource>> {
        let map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(kind, uri.to_owned())).cloned()
    }

    /// Every registered source.
    pub fn sources(&self) -> Vec<Arc<KeySource>> {
        let map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Successful fetches of every source, ever.
    pub fn fetch_count(&self) -> u64 {
        self.shared.fetches.load(Ordering::Relaxed)
    }

    /// Failed fetches of every source, ever.
    pub fn failure_count(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Maintenance: drop sources no policy uses any more, and start the scheduled fetches
    /// that are due, each as its own task (this returns without waiting for them). Must
    /// run inside a tokio runtime.
    pub async fn tick(&self) {
        let now = Instant::now();
        let due: Vec<Arc<KeySource>> = {
            let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, s| Arc::strong_count(s) > 1);
            map.values().filter(|s| s.is_due(now)).cloned().collect()
        };
        for source in due {
            tokio::spawn(source.refresh_if_due());
        }
    }
}
