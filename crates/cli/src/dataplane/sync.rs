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
//! - The poll asks for a delta (`delta=true`) when it holds the snapshot named by `after`:
//!   the control plane then answers with the subscriptions changed since, when it knows
//!   them ([`ControlDelta`]). The delta is applied to the held snapshot and the result
//!   verified like a whole snapshot; one that does not apply is dropped, and the next poll
//!   asks for the whole snapshot.

use super::lkg;
use super::status::{Serving, Source, Status};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tollgate_admin_api::{ControlDelta, ControlSnapshot, DELTA_CONTENT_TYPE};
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

/// Verifies `snap` and applies it to the gateway and the key ring, whole or not at all.
pub(crate) fn accept(
    gw: &Gateway,
    keys: &KeyRing,
    status: &Status,
    snap: Arc<ControlSnapshot>,
    source: Source,
) -> Result<(), String> {
    snap.verify()?;
    accept_verified(gw, keys, status, snap, source)
}

/// [`accept`] for a snapshot already verified ([`ControlDelta::apply`] verifies what it
/// makes: hashing every subscription again would double the cost of each change).
fn accept_verified(
    gw: &Gateway,
    keys: &KeyRing,
    status: &Status,
    snap: Arc<ControlSnapshot>,
    source: Source,
) -> Result<(), String> {
    if snap.revision == 0 {
        return Err("the snapshot has no config".into());
    }
    let (secret, entries) = snap.key_entries()?;
    let same_config = status.serving().is_some_and(|s| {
        s.snapshot.revision == snap.revision
            && s.snapshot
                .config_sha256
                .eq_ignore_ascii_case(&snap.config_sha256)
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
        snapshot: snap,
        source,
        since: 0,
    });
    Ok(())
}

/// What one poll brought.
enum Polled {
    /// A snapshot other than `after`; `verified` when it was made from a delta (which
    /// verifies its result).
    Snapshot {
        snap: Box<ControlSnapshot>,
        verified: bool,
    },
    /// The changes from `after` to another snapshot.
    Delta(Box<ControlDelta>),
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

    /// One long poll; `delta`: this node holds the snapshot named by `after`.
    async fn poll(
        &self,
        http: &reqwest::Client,
        after: Option<&str>,
        delta: bool,
    ) -> Result<Polled, String> {
        let url = format!("{}/control/snapshot", self.base);
        let mut query: Vec<(&str, String)> = vec![("wait", WAIT_SECS.to_string())];
        if let Some(v) = after {
            query.push(("after", v.to_owned()));
            if delta {
                query.push(("delta", "true".to_owned()));
            }
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
                let is_delta = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(DELTA_CONTENT_TYPE.as_bytes()));
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
                self.status.received(is_delta, body.len());
                let unreadable =
                    |e: serde_json::Error| format!("GET {url}: unreadable snapshot: {e}");
                if is_delta {
                    let delta = serde_json::from_slice(&body).map_err(unreadable)?;
                    Ok(Polled::Delta(Box::new(delta)))
                } else {
                    let snap = serde_json::from_slice(&body).map_err(unreadable)?;
                    Ok(Polled::Snapshot {
                        snap: Box::new(snap),
                        verified: false,
                    })
                }
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

    /// Applies `snap` (off the runtime's threads; verified first unless `verified`) and
    /// writes the last-known-good file.
    async fn take(&self, snap: ControlSnapshot, verified: bool) -> Result<(), String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let snap = Arc::new(snap);
            let apply = if verified { accept_verified } else { accept };
            apply(
                &this.gw,
                &this.keys,
                &this.status,
                snap.clone(),
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
        // A delta did not apply: ask for the whole snapshot once.
        let mut whole_next = false;
        loop {
            let held = self.status.serving().map(|s| s.snapshot);
            let (after, delta) = match &refused {
                Some((v, until)) if tokio::time::Instant::now() < *until => {
                    (Some(v.clone()), false)
                }
                _ if whole_next => (None, false),
                _ => (held.as_ref().map(|s| s.version.clone()), true),
            };
            let polled = tokio::select! {
                _ = shutdown.changed() => return,
                p = self.poll(&http, after.as_deref(), delta) => p,
            };
            // A delta is applied to the held snapshot (off the runtime's threads: the
            // result is verified like a whole snapshot, which hashes every subscription).
            let polled = match (polled, held) {
                (Ok(Polled::Delta(d)), Some(base)) => {
                    let version = d.version.clone();
                    let applied = tokio::task::spawn_blocking(move || d.apply(&base))
                        .await
                        .map_err(|e| format!("the delta task failed: {e}"))
                        .and_then(|r| r);
                    match applied {
                        Ok(snap) => Ok(Polled::Snapshot {
                            snap: Box::new(snap),
                            verified: true,
                        }),
                        Err(e) => {
                            tracing::warn!(
                                %version,
                                "a delta from the control plane did not apply, asking for the whole snapshot: {e}"
                            );
                            whole_next = true;
                            Ok(Polled::Unchanged)
                        }
                    }
                }
                (Ok(Polled::Delta(d)), None) => {
                    tracing::warn!(version = %d.version, "a delta came with no snapshot held, asking for the whole snapshot");
                    whole_next = true;
                    Ok(Polled::Unchanged)
                }
                (other, _) => other,
            };
            let delay = match polled {
                // (A delta was made a snapshot above, or dropped.)
                Ok(Polled::Unchanged | Polled::Delta(_)) => {
                    self.status.contact();
                    backoff = BACKOFF_MIN;
                    None
                }
                Ok(Polled::Snapshot { snap, verified }) => {
                    self.status.contact();
                    backoff = BACKOFF_MIN;
                    whole_next = false;
                    let version = snap.version.clone();
                    match self.take(*snap, verified).await {
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
        accept(
            &gw,
            &ring,
            &status,
            Arc::new(s1.clone()),
            Source::ControlPlane,
        )
        .unwrap();
        assert_eq!(gw.snapshot().revision, 1);
        assert_eq!(&*ring.lookup("key-1").unwrap().id, "one");
        assert_eq!(status.serving().unwrap().snapshot.version, s1.version);

        // Only subscriptions changed: same config, the key ring follows.
        let s2 = ControlSnapshot::new(
            1,
            CONFIG.into(),
            &secret,
            vec![keys("two", "active", "key-2", &secret)],
        );
        let before = gw.snapshot();
        accept(
            &gw,
            &ring,
            &status,
            Arc::new(s2.clone()),
            Source::ControlPlane,
        )
        .unwrap();
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
        assert!(accept(
            &gw,
            &ring,
            &status,
            Arc::new(s3.clone()),
            Source::ControlPlane
        )
        .is_err());
        assert_eq!(gw.snapshot().revision, 1);
        assert!(ring.lookup("key-3").is_none());
        assert!(ring.lookup("key-2").is_some());
        assert_eq!(status.serving().unwrap().snapshot.version, s2.version);

        // A tampered one is refused before anything is looked at.
        let mut s4 = ControlSnapshot::new(3, CONFIG.into(), &secret, Vec::new());
        s4.config_text.push('#');
        assert!(accept(
            &gw,
            &ring,
            &status,
            Arc::new(s4.clone()),
            Source::ControlPlane
        )
        .is_err());

        // An upstream host this node cannot resolve refuses nothing: the target waits
        // without an address.
        let unresolvable = CONFIG.replace("127.0.0.1:9", "no-such-host.invalid:80");
        let s5 = ControlSnapshot::new(4, unresolvable, &secret, Vec::new());
        accept(
            &gw,
            &ring,
            &status,
            Arc::new(s5.clone()),
            Source::ControlPlane,
        )
        .unwrap();
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
