//! TLS on the admin listener (`--admin-tls-cert`, `--admin-tls-key`): the admin API, the
//! CLI verbs (`--admin-ca`) and data planes (`--control-plane https://…`,
//! `--control-plane-ca`) over TLS, the certificate reloaded on SIGHUP.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tollgate_tests::*;

const TOKEN: &str = "admin-token-for-tls";
const DP_TOKEN: &str = "dataplane-token-for-tls";

/// A self-signed pair for `127.0.0.1` and `localhost`, written to `dir` (each file by a
/// rename); returns the certificate's PEM.
fn write_pair(dir: &Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("pair");
    let cert = ck.cert.pem();
    for (name, text) in [
        ("key.pem", ck.signing_key.serialize_pem()),
        ("cert.pem", cert.clone()),
    ] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
    cert
}

/// A `tollgate` process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTPS client trusting only `pem`.
fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("PEM"))
        .build()
        .expect("client")
}

/// Starts `tollgate ARGS` (a control plane with a TLS admin listener at `admin`, files in
/// `dir`) and waits (bounded) until `https://admin/healthz` answers 200.
async fn start_tls_admin(args: &[&str], dir: &Path, admin: &str, pem: &str) -> Proc {
    let log = std::fs::File::create(dir.join("tollgate.log")).expect("log");
    let child = Command::new(tollgate_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--admin-listen", admin])
        .arg("--admin-tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--admin-tls-key")
        .arg(dir.join("key.pem"))
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("TOLLGATE_DATAPLANE_TOKEN", DP_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tollgate");
    let proc = Proc(child);
    assert!(
        answers(
            &trusting(pem),
            &format!("https://{admin}/healthz"),
            Duration::from_secs(30)
        )
        .await,
        "the TLS admin listener never answered: {}",
        std::fs::read_to_string(dir.join("tollgate.log")).unwrap_or_default()
    );
    proc
}

/// Whether `url` answers 200 through `c` within `limit`.
async fn answers(c: &reqwest::Client, url: &str, limit: Duration) -> bool {
    wait_until_async(limit, Duration::from_millis(50), || async {
        c.get(url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await
}

#[tokio::test]
async fn the_admin_api_and_the_cli_speak_tls() {
    let up = Upstream::start("u");
    let dir = tempfile::tempdir().expect("dir");
    let pem = write_pair(dir.path());
    let policy = write_file(dir.path(), "policy.yaml", &echo_config(&up.url()));
    let admin = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut p = start_tls_admin(
        &["serve", "--listen", &listen, "--config", &policy],
        dir.path(),
        &admin,
        &pem,
    )
    .await;
    let base = format!("https://{admin}");
    let c = trusting(&pem);

    // The admin API over TLS, the token as ever.
    let r = c
        .get(format!("{base}/config"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /config");
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{base}/config")).send().await.expect("GET");
    assert_eq!(r.status(), 401);
    // Plain HTTP on the TLS port gets no answer.
    let plain = raw_get(admin.parse().unwrap(), "/healthz", &[]);
    assert_ne!(plain.status, 200, "{plain:?}");
    // The certificate's expiry is in the metrics.
    let metrics = c
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_tls_certificate_not_after_seconds{listener=\"admin\"} "),
        "{metrics}"
    );

    // The CLI verbs, trusting the certificate with --admin-ca; without it they fail.
    let ca = dir.path().join("cert.pem");
    let ca = ca.to_str().unwrap();
    let run = run_tollgate(
        &["dump", "--admin", &base, "--token", TOKEN, "--admin-ca", ca],
        &[],
    );
    run.assert_code(0, "dump over TLS");
    assert!(run.stdout.contains("id: echo"), "{}", run.stdout);
    let run = run_tollgate(&["dump", "--admin", &base, "--token", TOKEN], &[]);
    run.assert_code(1, "dump without the CA");
    assert!(
        run.stderr.contains("cannot reach the admin API"),
        "{}",
        run.stderr
    );
    let run = run_tollgate(
        &[
            "dump",
            "--admin",
            &base,
            "--token",
            TOKEN,
            "--admin-ca",
            "/nonexistent.pem",
        ],
        &[],
    );
    run.assert_code(1, "a missing CA file");
    assert!(
        run.stderr.contains("cannot read the admin CA"),
        "{}",
        run.stderr
    );

    // A renewed certificate is served after SIGHUP; the proxy keeps serving.
    let renewed = write_pair(dir.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    assert!(
        answers(
            &trusting(&renewed),
            &format!("{base}/healthz"),
            Duration::from_secs(10)
        )
        .await,
        "the renewed certificate is not served"
    );
    let a = get(&format!("http://{listen}/echo/x")).await;
    assert_eq!(a.status, 200);
    assert!(
        p.0.try_wait().expect("wait").is_none(),
        "SIGHUP stopped the process"
    );
}

#[tokio::test]
async fn a_data_plane_follows_a_control_plane_over_tls() {
    let up = Upstream::start("u");
    let dir = tempfile::tempdir().expect("dir");
    let pem = write_pair(dir.path());
    let policy = write_file(dir.path(), "policy.yaml", &echo_config(&up.url()));
    let admin = format!("127.0.0.1:{}", free_port());
    let cp = start_tls_admin(&["admin", "--config", &policy], dir.path(), &admin, &pem).await;
    let ca: PathBuf = dir.path().join("cert.pem");
    let dp = Gateway::builder("")
        .data_plane(&format!("https://{admin}"))
        .env("TOLLGATE_TOKEN", DP_TOKEN)
        .env("TOLLGATE_CONTROL_PLANE_CA", ca.to_str().unwrap())
        .start();
    let a = get(&dp.url("/echo/x")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.from_upstream("u"));

    // SIGHUP makes `tollgate admin` re-read --config (it used to stop it), and the data
    // plane follows.
    let changed = echo_config(&up.url()).replace(
        "    upstream:",
        "    policies:\n      outbound: [ set-header: { name: X-Gen, value: \"2\" } ]\n    upstream:",
    );
    std::fs::write(&policy, changed).expect("write");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cp.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let followed = wait_until_async(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { get(&dp.url("/echo/x")).await.header("x-gen") == Some("2") },
    )
    .await;
    assert!(followed, "the re-read config never reached the data plane");
}

#[test]
fn a_bad_admin_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = write_file(dir.path(), "cert.pem", "garbage");
    let data = dir.path().join("data");
    let run = run_tollgate(
        &[
            "admin",
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-tls-cert",
            &cert,
            "--admin-tls-key",
            &cert,
        ],
        &[],
    );
    run.assert_code(1, "a bad certificate");
    assert!(
        run.stderr
            .contains("holds no `-----BEGIN CERTIFICATE-----` block"),
        "{}",
        run.stderr
    );
}
