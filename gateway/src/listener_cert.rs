//! A TLS listener's certificate (the proxy's `--tls-cert`/`--tls-key`, the admin
//! listener's `--admin-tls-cert`/`--admin-tls-key`), read by Tollgate and reloaded
//! without a restart.
//!
//! At start the files are read and checked here, so that a bad certificate or key stops the
//! process with a message naming the file (Pingora's own loading panics on a worker thread
//! and the process aborts). The handshake takes the certificate from [`ListenerCert`], a
//! rustls certificate resolver holding the current pair. On SIGHUP, and whenever the files
//! change (checked every few seconds: certbot, cert-manager and Kubernetes secret mounts
//! replace them without telling anyone), they are read again: a pair that reads and fits
//! together replaces the old one for new handshakes, and connections already open keep
//! theirs. A pair that does not (a half-written renewal, a key that is not the
//! certificate's) is logged and the old pair keeps serving; it is tried again when the
//! files change again or at the next SIGHUP.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What identifies one version of a file: its modification time, length and inode (a
/// renewal that keeps the time still changes one of the others).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A certificate chain and its key, checked.
struct Pair {
    key: Arc<CertifiedKey>,
    /// The first certificate's `notAfter` (Unix seconds).
    not_after: i64,
}

/// Read and check the pair.
fn read_pair(cert_path: &Path, key_path: &Path) -> Result<Pair, String> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| {
        format!(
            "cannot read the TLS certificate {}: {e}",
            cert_path.display()
        )
    })?;
    let mut chain = Vec::new();
    for (i, item) in CertificateDer::pem_slice_iter(&cert_pem).enumerate() {
        let der = item.map_err(|e| {
            format!(
                "the TLS certificate {}: certificate {} is bad PEM: {e}",
                cert_path.display(),
                i + 1
            )
        })?;
        chain.push(der);
    }
    let first = chain.first().ok_or_else(|| {
        format!(
            "the TLS certificate {} holds no `-----BEGIN CERTIFICATE-----` block",
            cert_path.display()
        )
    })?;
    let not_after = {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(first.as_ref())
            .map_err(|e| {
                format!(
                    "the TLS certificate {} is no X.509 certificate: {e}",
                    cert_path.display()
                )
            })?;
        cert.validity().not_after.timestamp()
    };
    let key_pem = std::fs::read(key_path)
        .map_err(|e| format!("cannot read the TLS key {}: {e}", key_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "the TLS key {} holds no PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or \
             `EC PRIVATE KEY`): {e}",
            key_path.display()
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the TLS key {} is not the key of the certificate {}",
                key_path.display(),
                cert_path.display()
            ),
            e => format!("the TLS key {} cannot be used: {e}", key_path.display()),
        })?;
    Ok(Pair {
        key: Arc::new(key),
        not_after,
    })
}

/// The files' stamps: when last read (whether that read worked or not), and a change seen
/// by the last check, read once the next check finds the files as they were (a renewal
/// that writes two files is then read when both are written).
#[derive(Default)]
struct Seen {
    read: (Stamp, Stamp),
    settling: Option<(Stamp, Stamp)>,
}

/// The certificates of the PEM file `path` as trust anchors (`what` names the file in
/// errors: "the client CA"); at least one.
pub fn read_roots(path: &Path, what: &str) -> Result<rustls::RootCertStore, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{what} {}: bad PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{what} {} holds no `-----BEGIN CERTIFICATE-----` block",
            path.display()
        ));
    }
    Ok(roots)
}

/// How often [`ListenerCert::watch`] looks at the files.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The listener's certificate and key, replaced as the files change.
pub struct ListenerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Seen>,
    not_after: AtomicI64,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for ListenerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl ListenerCert {
    /// Read the pair; the error names the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ListenerCert, String> {
        let seen = (stamp(cert_path), stamp(key_path));
        let pair = read_pair(cert_path, key_path)?;
        Ok(ListenerCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::new(pair.key),
            seen: Mutex::new(Seen {
                read: seen,
                settling: None,
            }),
            not_after: AtomicI64::new(pair.not_after),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Read the files again: with `force` (SIGHUP) now; else (the periodic check) when
    /// they changed since last read and are as the previous check found them. Logs the
    /// outcome; true when a new pair is now served.
    pub fn reload(&self, force: bool) -> bool {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force {
                if seen.read == now {
                    seen.settling = None;
                    return false;
                }
                if seen.settling != Some(now) {
                    seen.settling = Some(now);
                    return false;
                }
            }
            seen.read = now;
            seen.settling = None;
        }
        match read_pair(&self.cert_path, &self.key_path) {
            Ok(pair) => {
                self.current.store(pair.key);
                self.not_after.store(pair.not_after, Ordering::Relaxed);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    cert = %self.cert_path.display(),
                    not_after = pair.not_after,
                    "TLS certificate reloaded: new handshakes use it"
                );
                true
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "TLS certificate not reloaded, the previous one keeps serving: {e}"
                );
                false
            }
        }
    }

    /// Reload on SIGHUP, and when the files changed (looked at every [`CHECK_EVERY`]);
    /// runs until the process ends.
    pub async fn watch(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            // Two small files, rarely read: not worth a blocking thread.
            self.reload(force);
        }
    }

    /// The served certificate's `notAfter` (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Reloads that replaced the pair, and reloads that failed.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::ListenerCert;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_checks_and_reloads_only_what_changed_and_works() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (c1, k1) = pair("one.test");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let lc = ListenerCert::load(&cert, &key).unwrap();
        let first = lc.current.load_full();
        assert!(lc.not_after() > 0);
        assert!(!lc.reload(false), "nothing changed");
        // A new pair: read by the check after the one that saw it change, unless the
        // files changed again in between.
        let (c2, k2) = pair("two.test");
        std::fs::write(&cert, &c2).unwrap();
        assert!(!lc.reload(false), "a change is read once it settled");
        std::fs::write(&key, &k2).unwrap();
        assert!(!lc.reload(false), "still changing");
        assert_eq!(lc.current.load_full().cert, first.cert);
        assert!(lc.reload(false));
        assert_ne!(lc.current.load_full().cert, first.cert);
        // A key that is not the certificate's, garbage: refused, the pair stays.
        let served = lc.current.load_full();
        std::fs::write(&key, &k1).unwrap();
        assert!(!lc.reload(true));
        std::fs::write(&cert, "garbage").unwrap();
        assert!(!lc.reload(true));
        assert_eq!(lc.current.load_full().cert, served.cert);
        assert_eq!(lc.reload_counts(), (1, 2));
        // Errors at start name the file.
        let e = ListenerCert::load(&cert, &key).unwrap_err();
        assert!(
            e.contains("cert.pem") && e.contains("no `-----BEGIN CERTIFICATE-----`"),
            "{e}"
        );
        std::fs::write(&cert, &c2).unwrap();
        let e = ListenerCert::load(&cert, &key).unwrap_err();
        assert!(e.contains("is not the key of the certificate"), "{e}");
        let e = ListenerCert::load(&dir.path().join("none.pem"), &key).unwrap_err();
        assert!(e.contains("cannot read the TLS certificate"), "{e}");
    }
}
