//! A TLS listener's files, read by Tollgate and reloaded without a restart: its
//! certificate (the proxy's `--tls-cert`/`--tls-key`, the admin listener's
//! `--admin-tls-cert`/`--admin-tls-key`) and the CA certificates and revocation lists it
//! verifies client certificates with (`--tls-client-ca`, `--tls-client-crl`).
//!
//! At start the files are read and checked here, so that a bad file stops the process
//! with a message naming it (Pingora's own loading of a certificate panics on a worker
//! thread and the process aborts). Handshakes take what they need from a [`Watched`]
//! holding the current version: [`ListenerCert`] is a rustls certificate resolver,
//! [`ClientCa`] a client certificate verifier. On SIGHUP, and whenever the files change
//! (checked every few seconds: certbot, cert-manager and Kubernetes secret mounts replace
//! them without telling anyone), they are read again: a version that reads and fits
//! together replaces the old one for new handshakes, and connections already open keep
//! theirs. One that does not (a half-written renewal, a key that is not the certificate's,
//! a broken revocation list) is logged and the old one keeps serving; it is tried again
//! when the files change again or at the next SIGHUP.

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The certificates of the PEM file `path`, at least one (`what` names the file in
/// errors: "the TLS certificate", "the client CA").
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for (i, item) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        certs.push(item.map_err(|e| {
            format!(
                "{what} {}: certificate {} is bad PEM: {e}",
                path.display(),
                i + 1
            )
        })?);
    }
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no `-----BEGIN CERTIFICATE-----` block",
            path.display()
        ));
    }
    Ok(certs)
}

/// A certificate's `notAfter` (Unix seconds).
fn not_after(der: &CertificateDer<'_>, path: &Path, what: &str) -> Result<i64, String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("{what} {} is no X.509 certificate: {e}", path.display()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The certificates of the PEM file `path` as trust anchors (`what` names the file in
/// errors: "the admin CA"); at least one.
pub fn read_roots(path: &Path, what: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// What a set of watched files holds once read and checked.
pub trait Material: Send + Sync + Sized + 'static {
    /// What log lines call it ("TLS certificate").
    const WHAT: &'static str;
    /// Read the files (in the order [`Watched::open`] was given them); the error names the
    /// file and what is wrong with it.
    fn read(paths: &[PathBuf]) -> Result<Self, String>;
    /// Until when it is good (Unix seconds).
    fn not_after(&self) -> i64;
}

/// A certificate chain and its key, checked: what [`ListenerCert`] serves.
pub struct Pair {
    key: Arc<CertifiedKey>,
    /// The first certificate's `notAfter`.
    not_after: i64,
}

impl Material for Pair {
    const WHAT: &'static str = "TLS certificate";

    fn read(paths: &[PathBuf]) -> Result<Pair, String> {
        let (cert_path, key_path) = (&paths[0], &paths[1]);
        let chain = read_certs(cert_path, "the TLS certificate")?;
        let not_after = not_after(&chain[0], cert_path, "the TLS certificate")?;
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

    fn not_after(&self) -> i64 {
        self.not_after
    }
}

/// The client certificate verifier of a TLS listener: its CA certificates and revocation
/// lists, checked: what [`ClientCa`] verifies with.
pub struct ClientTrust {
    verifier: Arc<dyn ClientCertVerifier>,
    /// The CAs' subjects, hinted to clients; `'static`, see [`interned`].
    hints: &'static [DistinguishedName],
    /// The earliest of the CA certificates' `notAfter` and the lists' `nextUpdate`.
    not_after: i64,
}

/// `hints` for the life of the process. A handshake borrows the hints from the verifier,
/// which is swapped as the files change, so each distinct list of subjects is kept once
/// (a few hundred bytes per CA file ever served; reloads of the same CAs share it).
fn interned(hints: &[DistinguishedName]) -> &'static [DistinguishedName] {
    static SEEN: Mutex<Vec<&'static [DistinguishedName]>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let same = |kept: &&&'static [DistinguishedName]| {
        kept.len() == hints.len()
            && kept
                .iter()
                .zip(hints)
                .all(|(a, b)| a.as_ref() == b.as_ref())
    };
    if let Some(kept) = seen.iter().find(same) {
        return kept;
    }
    let kept: &'static [DistinguishedName] = Box::leak(hints.to_vec().into_boxed_slice());
    seen.push(kept);
    kept
}

/// The revocation lists of the PEM file `path` (at least one), and the earliest
/// `nextUpdate` among them (`i64::MAX` when none has one).
fn read_crls(path: &Path) -> Result<(Vec<CertificateRevocationListDer<'static>>, i64), String> {
    use x509_parser::prelude::FromDer;
    let what = "the client CRL";
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let mut crls = Vec::new();
    let mut next_update = i64::MAX;
    for (i, item) in CertificateRevocationListDer::pem_slice_iter(&pem).enumerate() {
        let der =
            item.map_err(|e| format!("{what} {}: list {} is bad PEM: {e}", path.display(), i + 1))?;
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                .map_err(|e| {
                    format!(
                        "{what} {}: list {} is no X.509 revocation list: {e}",
                        path.display(),
                        i + 1
                    )
                })?;
        if let Some(t) = crl.next_update() {
            next_update = next_update.min(t.timestamp());
        }
        crls.push(der);
    }
    if crls.is_empty() {
        return Err(format!(
            "{what} {} holds no `-----BEGIN X509 CRL-----` block",
            path.display()
        ));
    }
    Ok((crls, next_update))
}

impl Material for ClientTrust {
    const WHAT: &'static str = "client CA";

    /// The CA file, and the revocation list file when there is one.
    fn read(paths: &[PathBuf]) -> Result<ClientTrust, String> {
        let ca = &paths[0];
        let certs = read_certs(ca, "the client CA")?;
        let mut until = i64::MAX;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            until = until.min(not_after(&cert, ca, "the client CA")?);
            roots
                .add(cert)
                .map_err(|e| format!("the client CA {}: {e}", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // A client without a certificate is let through the handshake: the APIs that need
        // one say so with `validate-client-certificate`.
        let mut builder =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated();
        if let Some(crl) = paths.get(1) {
            let (crls, next_update) = read_crls(crl)?;
            until = until.min(next_update);
            // Every certificate of the chain is checked against the lists of its issuer;
            // one whose issuer has no list here is not (a CA without a list given is
            // trusted as before), and a list past its `nextUpdate` still counts (the
            // metric of `not_after` shows it).
            builder = builder.with_crls(crls).allow_unknown_revocation_status();
        }
        let verifier = builder.build().map_err(|e| match paths.get(1) {
            Some(crl) => format!(
                "the client CA {} with the client CRL {}: {e}",
                ca.display(),
                crl.display()
            ),
            None => format!("the client CA {}: {e}", ca.display()),
        })?;
        Ok(ClientTrust {
            hints: interned(verifier.root_hint_subjects()),
            verifier,
            not_after: until,
        })
    }

    fn not_after(&self) -> i64 {
        self.not_after
    }
}

/// The files' stamps: when last read (whether that read worked or not), and a change seen
/// by the last check, read once the next check finds the files as they were (a renewal
/// that writes two files is then read when both are written).
#[derive(Default)]
struct Seen {
    read: Vec<Stamp>,
    settling: Option<Vec<Stamp>>,
}

/// How often [`Watched::watch`] looks at the files.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Something read from files and replaced as they change.
pub struct Watched<T> {
    paths: Vec<PathBuf>,
    current: ArcSwap<T>,
    seen: Mutex<Seen>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

/// A TLS listener's certificate and key.
pub type ListenerCert = Watched<Pair>;

/// The CA certificates (and revocation lists) a TLS listener verifies client certificates
/// with.
pub type ClientCa = Watched<ClientTrust>;

impl<T: Material> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &T::WHAT)
            .field("paths", &self.paths)
            .field("not_after", &self.current.load().not_after())
            .finish_non_exhaustive()
    }
}

impl<T: Material> Watched<T> {
    /// Read the files; the error names the file and what is wrong with it.
    pub fn open(paths: Vec<PathBuf>) -> Result<Watched<T>, String> {
        let read = paths.iter().map(|p| stamp(p)).collect();
        let current = T::read(&paths)?;
        Ok(Watched {
            paths,
            current: ArcSwap::from_pointee(current),
            seen: Mutex::new(Seen {
                read,
                settling: None,
            }),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Read the files again: with `force` (SIGHUP) now; else (the periodic check) when
    /// they changed since last read and are as the previous check found them. Logs the
    /// outcome; true when a new version is now served.
    pub fn reload(&self, force: bool) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force {
                if seen.read == now {
                    seen.settling = None;
                    return false;
                }
                if seen.settling.as_ref() != Some(&now) {
                    seen.settling = Some(now);
                    return false;
                }
            }
            seen.read = now;
            seen.settling = None;
        }
        match T::read(&self.paths) {
            Ok(new) => {
                let not_after = new.not_after();
                self.current.store(Arc::new(new));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    file = %self.paths[0].display(),
                    not_after,
                    "{} reloaded: new handshakes use it",
                    T::WHAT
                );
                true
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "{} not reloaded, the previous one keeps serving: {e}",
                    T::WHAT
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
            // A few small files, rarely read: not worth a blocking thread.
            self.reload(force);
        }
    }
}

/// What the metrics show of a [`Watched`]: until when the served version is good, and the
/// reloads that replaced it and that failed.
pub trait WatchedStatus: Send + Sync + std::fmt::Debug {
    /// Until when the served version is good (Unix seconds).
    fn not_after(&self) -> i64;
    /// Reloads that replaced the version served, and reloads that failed.
    fn reload_counts(&self) -> (u64, u64);
}

impl<T: Material> WatchedStatus for Watched<T> {
    fn not_after(&self) -> i64 {
        self.current.load().not_after()
    }

    fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

impl ListenerCert {
    /// Read the pair; the error names the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ListenerCert, String> {
        Watched::open(vec![cert_path.to_owned(), key_path.to_owned()])
    }
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

impl ClientCa {
    /// Read the CA certificates of `ca` and the revocation lists of `crl`; the error names
    /// the file and what is wrong with it.
    pub fn load(ca: &Path, crl: Option<&Path>) -> Result<ClientCa, String> {
        Watched::open(std::iter::once(ca).chain(crl).map(Path::to_owned).collect())
    }
}

/// Every handshake asks the version served when it starts.
impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.current.load().hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().verifier.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::{ClientCa, ListenerCert, WatchedStatus};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::danger::ClientCertVerifier;

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
        assert_eq!(lc.current.load_full().key.cert, first.key.cert);
        assert!(lc.reload(false));
        assert_ne!(lc.current.load_full().key.cert, first.key.cert);
        // A key that is not the certificate's, garbage: refused, the pair stays.
        let served = lc.current.load_full();
        std::fs::write(&key, &k1).unwrap();
        assert!(!lc.reload(true));
        std::fs::write(&cert, "garbage").unwrap();
        assert!(!lc.reload(true));
        assert_eq!(lc.current.load_full().key.cert, served.key.cert);
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

    /// A CA, and certificates it issued to `names` (serials 1, 2, ...).
    fn authority(names: &[&str]) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String, Vec<String>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Clients CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let issuer = rcgen::Issuer::new(params, key);
        let leaves = names
            .iter()
            .zip(1u64..)
            .map(|(name, serial)| {
                let mut p = rcgen::CertificateParams::new(vec![(*name).to_owned()]).unwrap();
                p.serial_number = Some(serial.into());
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
                let k = rcgen::KeyPair::generate().unwrap();
                p.signed_by(&k, &issuer).unwrap().pem()
            })
            .collect();
        (issuer, ca_pem, leaves)
    }

    /// A revocation list of `issuer` naming `serials`.
    fn crl(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, serials: &[u64]) -> String {
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2040, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: (*s).into(),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    fn accepts(ca: &ClientCa, leaf: &str) -> bool {
        let der = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
        ca.verify_client_cert(&der, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn client_cas_and_revocation_lists_load_check_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_file, crl_file) = (dir.path().join("ca.pem"), dir.path().join("crl.pem"));
        let (issuer, ca_pem, leaves) = authority(&["alice", "bob"]);
        std::fs::write(&ca_file, &ca_pem).unwrap();
        std::fs::write(&crl_file, crl(&issuer, &[2])).unwrap();
        let ca = ClientCa::load(&ca_file, Some(&crl_file)).unwrap();
        assert!(accepts(&ca, &leaves[0]));
        assert!(!accepts(&ca, &leaves[1]), "bob is revoked");
        assert!(!ca.client_auth_mandatory());
        assert_eq!(ca.root_hint_subjects().len(), 1);
        // The list's nextUpdate (2040) comes before the CA's notAfter (4096).
        assert_eq!(ca.not_after(), 2_208_988_800);
        // Without the list, bob is trusted.
        assert!(accepts(
            &ClientCa::load(&ca_file, None).unwrap(),
            &leaves[1]
        ));

        // A new list: alice revoked, bob no longer.
        std::fs::write(&crl_file, crl(&issuer, &[1])).unwrap();
        assert!(ca.reload(true));
        assert!(!accepts(&ca, &leaves[0]));
        assert!(accepts(&ca, &leaves[1]));
        // A broken list, a list that is a certificate: refused, the served one stays.
        std::fs::write(
            &crl_file,
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        assert!(!ca.reload(true));
        std::fs::write(&crl_file, &ca_pem).unwrap();
        assert!(!ca.reload(true));
        assert!(accepts(&ca, &leaves[1]) && !accepts(&ca, &leaves[0]));
        assert_eq!(ca.reload_counts(), (1, 2));
        // Another CA: its clients trusted, the first one's not; the hints follow.
        let (other, other_pem, other_leaves) = authority(&["carol"]);
        std::fs::write(&ca_file, &other_pem).unwrap();
        std::fs::write(&crl_file, crl(&other, &[])).unwrap();
        assert!(ca.reload(true));
        assert!(accepts(&ca, &other_leaves[0]) && !accepts(&ca, &leaves[1]));

        // Errors at start name the file.
        std::fs::write(&crl_file, &ca_pem).unwrap();
        let e = ClientCa::load(&ca_file, Some(&crl_file)).unwrap_err();
        assert!(
            e.contains("crl.pem") && e.contains("no `-----BEGIN X509 CRL-----`"),
            "{e}"
        );
        std::fs::write(
            &crl_file,
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let e = ClientCa::load(&ca_file, Some(&crl_file)).unwrap_err();
        assert!(e.contains("crl.pem") && e.contains("list 1"), "{e}");
        let e = ClientCa::load(&dir.path().join("none.pem"), None).unwrap_err();
        assert!(e.contains("cannot read the client CA"), "{e}");
    }
}
