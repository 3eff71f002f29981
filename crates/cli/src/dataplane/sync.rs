//! The data plane's side of the control channel: a long poll on
//! `GET /control/snapshot?after=VERSION&wait=30`, applying every new snapshot (config and
//! keys together) and writing it to the last-known-good file.
//!
//! - Errors (connection refused, timeouts, 5xx, 401/403) are retried with exponential
//!   backoff and jitter: 200 ms doubling to 5 s. A successful answer resets it. The poll
//!   resumes from the version served, so a reconnect after any outage only transfers a
//!   snapshot when something changed.
//! - A snapshot is applied whole or not at all: verified ([`ControlSnapshot::verify`]),
//!   compiled, swapped into the gateway, then the key ring (installation secret and
//!   digests) in one store. A refused snapshot (a config this build cannot compile during a
//!   rolling upgrade) leaves the previous one serving; it is retried every 30 s and
//!   whenever a newer one comes. An upstream host this node cannot resolve refuses
//!   nothing: that target has no address (and its API answers 503 when it is the only
//!   one) until the gateway's own periodic resolution finds one.
//! - A snapshot with the config already served (only subscriptions changed) swaps the key
//!   ring only.

use super::lkg;
use super::status::{Serving, Source, Status};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tollgate_admin_api::ControlSnapshot;
use tollgate_gateway::keys::KeyRing;
use tollgate_gateway::Gateway;

/// How long the control plane may hold a poll.
const WAIT_SECS: u64 = 30;
/// The first retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a refused snapshot is tried again.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// What the sync task works on.
#[derive(Debug, Clone)]
pub(crate) struct Syncer {
    /// The control plane's base URL.
    pub(crate) base: String,
    /// Bearer token.
    pub(crate) token: Option<String>,
    /// This node's id.
    pub(crate) node: String,
    /// The gateway.
    pub(crate) gw: Arc<Gateway>,
    /// Its key ring.
    pub(crate) keys: Arc<KeyRing>,
    /// Shared status.
    pub(crate) status: Arc<Status>,
    /// The last-known-good file.
    pub(crate) lkg: PathBuf,
    /// A CA certificate to trust besides the public roots (`--control-plane-ca`).
    pub(crate) ca: Option<reqwest::Certificate>,
}

/// Applies `snap` to the gateway and the key ring, whole or not at all.
pub(crate) fn accept(
    gw: &Gateway,
    keys: &KeyRing,
    status: &Status,
    snap: &ControlSnapshot,
    source: Source,
) -> Result<(), String> {
    snap.verify()?;
    if snap.revision == 0 {
        return Err("the snapshot has no config".into());
    }
    let (secret, entries) = snap.key_entries()?;
    let same_config = status.serving().is_some_and(|s| {
        s.revision == snap.revision && s.config_sha256.eq_ignore_ascii_case(&snap.config_sha256)
    });
    if !same_config {
        let compiled = tollgate_config::parse_and_compile(&snap.config_text).map_err(|errs| {
            let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
            format!(
                "revision {} is invalid here: {}",
                snap.revision,
                list.join("; ")
            )
        })?;
        gw.apply(compiled, Some(snap.revision))
            .map_err(|e| format!("revision {} was refused: {e}", snap.revision))?;
    }
    keys.replace_with_secret(secret, entries);
    status.set_serving(Serving {
        revision: snap.revision,
        version: snap.version.clone(),
        config_sha256: snap.config_sha256.clone(),
        subscriptions: snap.subscriptions.len(),
        source,
        since: 0,
    });
    Ok(())
}

/// What one poll brought.
enum Polled {
    /// A snapshot other than `after`.
    Snapshot(Box<ControlSnapshot>),
    /// Nothing changed during the wait.
    Unchanged,
}

/// `e` and its sources, `: `-separated (reqwest's own message hides the cause, such as
/// "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A delay in `[d/2, d]`, spread by the clock's nanoseconds (enough to keep a fleet of data
/// planes from reconnecting in lockstep).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let half = d / 2;
    half + half.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

impl Syncer {
    fn client(&self) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A poll is held up to WAIT_SECS: beyond that plus a margin, the connection is
            // dead (a partition without a reset).
            .timeout(Duration::from_secs(WAIT_SECS + 15))
            .tcp_keepalive(Duration::from_secs(15))
            .user_agent(concat!("tollgate-dataplane/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &self.ca {
            b = b.add_root_certificate(ca.clone());
        }
        b.build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    async fn poll(&self, http: &reqwest::Client, after: Option<&str>) -> Result<Polled, String> {
        let url = format!("{}/control/snapshot", self.base);
        let mut query: Vec<(&str, String)> = vec![("wait", WAIT_SECS.to_string())];
        if let Some(v) = after {
            query.push(("after", v.to_owned()));
        }
        let mut req = http
            .get(&url)
            .query(&query)
            .header("x-tollgate-node", &self.node);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
        match resp.status().as_u16() {
            200 => {
                let snap: ControlSnapshot = resp
                    .json()
                    .await
                    .map_err(|e| format!("GET {url}: unreadable snapshot: {}", chain(&e)))?;
                Ok(Polled::Snapshot(Box::new(snap)))
            }
            204 => Ok(Polled::Unchanged),
            status @ (401 | 403) => Err(format!(
                "GET {url}: {status}: the control plane refuses this data plane's token \
                 (--token / TOLLGATE_TOKEN must be its TOLLGATE_DATAPLANE_TOKEN or admin token)"
            )),
            status => {
                let body = resp.text().await.unwrap_or_default();
                let body: String = body.chars().take(300).collect();
                Err(format!("GET {url}: {status}: {body}"))
            }
        }
    }

    /// Applies `snap` (off the runtime's threads) and writes the last-known-good file.
    async fn take(&self, snap: ControlSnapshot) -> Result<(), String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            accept(
                &this.gw,
                &this.keys,
                &this.status,
                &snap,
                Source::ControlPlane,
            )?;
            tracing::info!(
                revision = snap.revision,
                version = %snap.version,
                subscriptions = snap.subscriptions.len(),
                "snapshot from the control plane is live"
            );
            match lkg::store(&this.lkg, &snap) {
                Ok(()) => this.status.lkg_result(None),
                Err(e) => {
                    tracing::error!("the last-known-good file was not updated: {e}");
                    this.status.lkg_result(Some(e));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("the apply task failed: {e}"))?
    }

    /// Polls until `shutdown` changes.
    pub(crate) async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let http = match self.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let mut backoff = BACKOFF_MIN;
        // The version refused last, and when to try it again.
        let mut refused: Option<(String, tokio::time::Instant)> = None;
        loop {
            let serving = self.status.serving().map(|s| s.version);
            let after = match &refused {
                Some((v, until)) if tokio::time::Instant::now() < *until => Some(v.clone()),
                _ => serving,
            };
            let polled = tokio::select! {
                _ = shutdown.changed() => return,
                p = self.poll(&http, after.as_deref()) => p,
            };
            let delay = match polled {
                Ok(Polled::Unchanged) => {
                    self.status.contact();
                    backoff = BACKOFF_MIN;
                    None
                }
                Ok(Polled::Snapshot(snap)) => {
                    self.status.contact();
                    backoff = BACKOFF_MIN;
                    let version = snap.version.clone();
                    match self.take(*snap).await {
                        Ok(()) => refused = None,
                        Err(e) => {
                            tracing::error!(
                                %version,
                                "snapshot refused, the previous one keeps serving: {e}"
                            );
                            self.status.refused(&version, &e);
                            refused = Some((version, tokio::time::Instant::now() + REFUSED_RETRY));
                        }
                    }
                    None
                }
                Err(e) => {
                    let first = self.status.contact_failed(e.clone());
                    if first {
                        tracing::warn!("control plane unreachable, serving on: {e}");
                    } else {
                        tracing::debug!("control plane still unreachable: {e}");
                    }
                    let d = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    Some(d)
                }
            };
            if let Some(d) = delay {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_gateway::SubscriptionLookup;

    const CONFIG: &str =
        "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: { targets: [\"http://127.0.0.1:9\"] }\n";

    fn keys(
        id: &str,
        state: &str,
        key: &str,
        secret: &[u8; 32],
    ) -> tollgate_admin_api::SubscriptionKeys {
        let d = tollgate_gateway::keys::digest(secret, key);
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        tollgate_admin_api::SubscriptionKeys {
            id: id.into(),
            state: state.into(),
            scope: "all".into(),
            primary: hex.clone(),
            secondary: hex,
        }
    }

    #[test]
    fn a_snapshot_is_applied_whole_or_not_at_all() {
        let ring = Arc::new(KeyRing::new([0; 32]));
        let gw = Gateway::new(ring.clone());
        let status = Status::new("http://cp", "n");
        let secret = [9; 32];
        let s1 = ControlSnapshot::new(
            1,
            CONFIG.into(),
            &secret,
            vec![keys("one", "active", "key-1", &secret)],
        );
        accept(&gw, &ring, &status, &s1, Source::ControlPlane).unwrap();
        assert_eq!(gw.snapshot().revision, 1);
        assert_eq!(&*ring.lookup("key-1").unwrap().id, "one");
        assert_eq!(status.serving().unwrap().version, s1.version);

        // Only subscriptions changed: same config, the key ring follows.
        let s2 = ControlSnapshot::new(
            1,
            CONFIG.into(),
            &secret,
            vec![keys("two", "active", "key-2", &secret)],
        );
        let before = gw.snapshot();
        accept(&gw, &ring, &status, &s2, Source::ControlPlane).unwrap();
        assert!(Arc::ptr_eq(&before, &gw.snapshot()), "no rebuild");
        assert!(ring.lookup("key-1").is_none());
        assert!(ring.lookup("key-2").is_some());

        // A config this node refuses: nothing changes, keys included.
        let bad = CONFIG.replace("version: 1", "version: 9");
        let s3 = ControlSnapshot::new(
            2,
            bad,
            &secret,
            vec![keys("three", "active", "key-3", &secret)],
        );
        assert!(accept(&gw, &ring, &status, &s3, Source::ControlPlane).is_err());
        assert_eq!(gw.snapshot().revision, 1);
        assert!(ring.lookup("key-3").is_none());
        assert!(ring.lookup("key-2").is_some());
        assert_eq!(status.serving().unwrap().version, s2.version);

        // A tampered one is refused before anything is looked at.
        let mut s4 = ControlSnapshot::new(3, CONFIG.into(), &secret, Vec::new());
        s4.config_text.push('#');
        assert!(accept(&gw, &ring, &status, &s4, Source::ControlPlane).is_err());

        // An upstream host this node cannot resolve refuses nothing: the target waits
        // without an address.
        let unresolvable = CONFIG.replace("127.0.0.1:9", "no-such-host.invalid:80");
        let s5 = ControlSnapshot::new(4, unresolvable, &secret, Vec::new());
        accept(&gw, &ring, &status, &s5, Source::ControlPlane).unwrap();
        assert_eq!(gw.snapshot().revision, 4);
        assert!(gw.snapshot().apis[0].pool.has_unresolved());
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(4));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4));
        }
    }
}
