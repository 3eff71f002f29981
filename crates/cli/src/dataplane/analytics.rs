//! Analytics from a data plane: its aggregator's deltas go to the control plane, exactly
//! once, through an on-disk spool.
//!
//! - The aggregator thread hands its per-minute deltas to [`SpoolSink`] every second. Each
//!   hand-off becomes one numbered batch ([`UsageBatch`]: node id, run id, sequence number)
//!   written atomically to `DATA_DIR/analytics-spool/` (temporary file, fsync, rename).
//! - The shipper thread sends the spooled batches in order to `POST /control/usage`, and
//!   deletes each one the control plane acknowledged. A failure stops the round (later
//!   batches never overtake an earlier one) and is retried with backoff (200 ms doubling to
//!   5 s). The control plane stores a batch together with its number, so a batch sent twice
//!   (acknowledgement lost, control plane crashed) is counted once.
//! - The spool is bounded (`--analytics-spool-max-mb`, default 64 MiB). When it is full the
//!   sink refuses the hand-off, and the aggregator keeps the deltas in memory, merged, and
//!   offers them again each second: nothing is lost while the process lives.
//! - At shutdown, after the aggregator's last flush, one more round is shipped (at most
//!   5 s); what is left stays in the spool and is shipped by the next start, whatever run
//!   it came from.
//! - A batch the control plane refuses as malformed (422) can never be accepted: it is moved
//!   to `analytics-spool/rejected/` and logged, so it does not block the ones after it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tollgate_admin_api::{UsageBatch, UsageBatchRow};
use tollgate_analytics::{UsageRow, UsageSink};

/// The spool's directory name in the data directory.
pub(crate) const SPOOL_DIR: &str = "analytics-spool";

/// The spool and the state its writer and its shipper share.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    node: String,
    boot: String,
    /// File name prefix of this run: its start time, so runs ship in the order they ran.
    prefix: String,
    next_seq: AtomicU64,
    bytes: AtomicU64,
    max_bytes: u64,
    /// Set when a batch is written (wakes the shipper) and at shutdown.
    wake: (Mutex<bool>, Condvar),
    stopping: AtomicBool,
    /// One shipping round at a time (the shipper thread or the shutdown hook): batches of a
    /// run must reach the control plane in order.
    shipping: Mutex<()>,
    /// Batches acknowledged, refused, and shipping errors (for the status listener).
    pub(crate) shipped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) errors: AtomicU64,
}

fn is_batch_file(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.')
}

impl Spool {
    /// Opens (creates, 0700) `data_dir/analytics-spool` for a new run of `node`.
    pub(crate) fn open(data_dir: &Path, node: &str, max_bytes: u64) -> Result<Spool, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = data_dir.join(SPOOL_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("rejected"))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut bytes = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write that did not finish before a crash: never acknowledged, never
                // counted by the aggregator as written.
                let _ = std::fs::remove_file(entry.path());
            } else if is_batch_file(&name) {
                bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let boot: String = tollgate_gateway::keys::generate_key()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        Ok(Spool {
            prefix: format!("{started_ms:015}-{boot}"),
            dir,
            node: node.to_owned(),
            boot,
            next_seq: AtomicU64::new(1),
            bytes: AtomicU64::new(bytes),
            max_bytes,
            wake: (Mutex::new(false), Condvar::new()),
            stopping: AtomicBool::new(false),
            shipping: Mutex::new(()),
            shipped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Bytes of batches waiting in the spool.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Batches waiting, oldest first.
    fn pending(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| is_batch_file(&e.file_name().to_string_lossy()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Writes `rows` as the next batch of this run.
    fn write(&self, rows: &[UsageRow]) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let seq = self.next_seq.load(Ordering::Relaxed);
        let batch = UsageBatch {
            node: self.node.clone(),
            boot: self.boot.clone(),
            seq,
            rows: rows.iter().map(UsageBatchRow::from_row).collect(),
        };
        let bytes = serde_json::to_vec(&batch).map_err(|e| format!("encoding a batch: {e}"))?;
        let len = bytes.len() as u64;
        if self.pending_bytes() + len > self.max_bytes {
            return Err(format!(
                "the analytics spool is full ({} bytes waiting for the control plane): \
                 the rollups are held in memory",
                self.pending_bytes()
            ));
        }
        let name = format!("{}-{seq:012}.json", self.prefix);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        self.next_seq.store(seq + 1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.notify();
        Ok(())
    }

    fn notify(&self) {
        let (lock, cvar) = &self.wake;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
    }

    /// Waits until a batch is written, `timeout` passes, or shutdown.
    fn wait(&self, timeout: Duration) {
        let (lock, cvar) = &self.wake;
        let mut woken = lock.lock().unwrap_or_else(|e| e.into_inner());
        if !*woken && !self.stopping.load(Ordering::Relaxed) {
            woken = cvar
                .wait_timeout(woken, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *woken = false;
    }
}

/// The aggregator's sink on a data plane: each hand-off becomes a spooled batch.
#[derive(Debug)]
pub(crate) struct SpoolSink(pub(crate) Arc<Spool>);

impl UsageSink for SpoolSink {
    fn add(&mut self, rows: &[UsageRow]) -> Result<(), String> {
        self.0.write(rows)
    }

    fn prune(&mut self, _minutes_before: i64, _hours_before: i64) -> Result<(), String> {
        // Retention is the control plane's business.
        Ok(())
    }
}

/// Sends spooled batches to the control plane.
#[derive(Debug, Clone)]
pub(crate) struct Shipper {
    /// The spool.
    pub(crate) spool: Arc<Spool>,
    /// `BASE/control/usage`.
    pub(crate) url: String,
    /// Bearer token.
    pub(crate) token: Option<String>,
    /// A CA certificate to trust besides the public roots (`--control-plane-ca`).
    pub(crate) ca: Option<reqwest::Certificate>,
}

/// How one round ended.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Every batch was acknowledged.
    Done,
    /// The control plane did not take a batch: try again later.
    Failed,
}

impl Shipper {
    /// The blocking HTTP client (this runs on its own thread, never on a runtime's).
    fn client(&self) -> Result<reqwest::blocking::Client, String> {
        let mut b = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("tollgate-dataplane/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &self.ca {
            b = b.add_root_certificate(ca.clone());
        }
        b.build()
            .map_err(|e| format!("cannot build the analytics HTTP client: {e}"))
    }

    /// Sends every waiting batch in order, until one fails or `deadline`.
    fn round(&self, http: &reqwest::blocking::Client, deadline: Option<Instant>) -> Round {
        let _one_at_a_time = self
            .spool
            .shipping
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for path in self.spool.pending() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Round::Failed;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // Gone meanwhile.
            };
            let len = bytes.len() as u64;
            let mut req = http
                .post(&self.url)
                .header("content-type", "application/json")
                .body(bytes);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => {
                    self.spool.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("analytics batch not delivered, retried later: {e}");
                    return Round::Failed;
                }
            };
            match resp.status().as_u16() {
                200..=299 => {
                    if std::fs::remove_file(&path).is_ok() {
                        self.spool.bytes.fetch_sub(len, Ordering::Relaxed);
                    }
                    self.spool.shipped.fetch_add(1, Ordering::Relaxed);
                }
                code @ (400 | 413 | 415 | 422) => {
                    let body: String = resp.text().unwrap_or_default().chars().take(300).collect();
                    let aside = self
                        .spool
                        .dir
                        .join("rejected")
                        .join(path.file_name().unwrap_or_default());
                    tracing::error!(
                        batch = %path.display(),
                        "the control plane refused an analytics batch ({code}: {body}); moved to {}",
                        aside.display()
                    );
                    if std::fs::rename(&path, &aside).is_ok() {
                        self.spool.bytes.fetch_sub(len, Ordering::Relaxed);
                    }
                    self.spool.rejected.fetch_add(1, Ordering::Relaxed);
                }
                code => {
                    self.spool.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("analytics batch not delivered ({code}), retried later");
                    return Round::Failed;
                }
            }
        }
        Round::Done
    }

    /// Ships until shutdown (run on its own thread).
    pub(crate) fn run(self) {
        let http = match self.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}: analytics stay in the spool");
                return;
            }
        };
        let mut backoff = Duration::from_millis(200);
        let mut failing_since: Option<Instant> = None;
        while !self.spool.stopping.load(Ordering::Relaxed) {
            match self.round(&http, None) {
                Round::Done => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            after = ?since.elapsed(),
                            "analytics batches reach the control plane again"
                        );
                    }
                    backoff = Duration::from_millis(200);
                    self.spool.wait(Duration::from_secs(1));
                }
                Round::Failed => {
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(
                            pending_bytes = self.spool.pending_bytes(),
                            "analytics batches are spooled until the control plane takes them"
                        );
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One last round at shutdown (after the aggregator's final flush), at most about
    /// `limit`. Runs on a thread of its own: the shutdown hooks run on a runtime's thread,
    /// where a blocking client may not be used.
    pub(crate) fn ship_before_exit(&self, limit: Duration) {
        self.spool.stopping.store(true, Ordering::Relaxed);
        self.spool.notify();
        let this = self.clone();
        let done = std::thread::Builder::new()
            .name("tollgate-analytics-last-round".into())
            .spawn(move || {
                let round = this
                    .client()
                    .map(|http| this.round(&http, Some(Instant::now() + limit)));
                if round != Ok(Round::Done) {
                    tracing::warn!(
                        pending_bytes = this.spool.pending_bytes(),
                        "analytics batches left in the spool: the next start sends them"
                    );
                }
            })
            .map(|h| h.join());
        if !matches!(done, Ok(Ok(()))) {
            tracing::error!("the last analytics round could not run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_analytics::{Usage, UsageKey};

    fn row(calls: u64) -> UsageRow {
        let mut usage = Usage::default();
        for _ in 0..calls {
            usage.calls += 1;
            usage.success += 1;
            usage.latency.add(1000);
        }
        UsageRow {
            key: UsageKey {
                bucket: 1_800_000_000,
                product: None,
                api: Some(Arc::from("a")),
                operation: None,
                subscription: None,
                status: 200,
            },
            usage,
        }
    }

    fn tmpdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-spool-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn batches_are_numbered_in_order_and_bounded() {
        let dir = tmpdir();
        let spool = Arc::new(Spool::open(&dir, "n1", 1 << 20).unwrap());
        let mut sink = SpoolSink(spool.clone());
        sink.add(&[row(2)]).unwrap();
        sink.add(&[row(3)]).unwrap();
        let files = spool.pending();
        assert_eq!(files.len(), 2);
        let b1: UsageBatch = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        let b2: UsageBatch = serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
        assert_eq!((b1.seq, b2.seq), (1, 2));
        assert_eq!(b1.boot, b2.boot);
        assert_eq!(b1.rows[0].to_row().unwrap(), row(2));
        assert!(spool.pending_bytes() > 0);

        // A later run of the same node: numbered from 1 again under another run id, and
        // its files sort after the earlier run's.
        std::thread::sleep(Duration::from_millis(2));
        let again = Arc::new(Spool::open(&dir, "n1", 1 << 20).unwrap());
        assert_eq!(again.pending_bytes(), spool.pending_bytes());
        SpoolSink(again.clone()).add(&[row(1)]).unwrap();
        let files = again.pending();
        assert_eq!(files.len(), 3);
        let b3: UsageBatch = serde_json::from_slice(&std::fs::read(&files[2]).unwrap()).unwrap();
        assert_eq!(b3.seq, 1);
        assert_ne!(b3.boot, b1.boot);

        // Full: the hand-off is refused (the aggregator keeps the rows).
        let tiny = Arc::new(Spool::open(&dir, "n1", 10).unwrap());
        assert!(SpoolSink(tiny).add(&[row(1)]).unwrap_err().contains("full"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreachable_control_plane_keeps_the_batches() {
        let dir = tmpdir();
        let spool = Arc::new(Spool::open(&dir, "n1", 1 << 20).unwrap());
        SpoolSink(spool.clone()).add(&[row(1)]).unwrap();
        // Nothing listens on port 9 of loopback (discard is never enabled here).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let shipper = Shipper {
            spool: spool.clone(),
            url: format!("http://127.0.0.1:{port}/control/usage"),
            token: None,
            ca: None,
        };
        let http = shipper.client().unwrap();
        assert_eq!(shipper.round(&http, None), Round::Failed);
        assert_eq!(spool.pending().len(), 1);
        assert_eq!(spool.errors.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
