//! The real `tollgate` process.
//!
//! [`Gateway::start`] writes the policy file into a fresh temporary directory, picks
//! ephemeral ports, runs `tollgate serve` with its stdout and stderr going to `tollgate.log`
//! in that directory, and waits (bounded) until `GET /healthz` and `GET /readyz` on the
//! admin listener answer 200 and the proxy listener(s) accept connections. A start that
//! failed to bind is retried once with new ports.
//!
//! Dropping a [`Gateway`] kills the process (SIGKILL) if it still runs; when the test is
//! panicking, the log is printed first.
//!
//! Restarts on the same state: [`Gateway::shared_dir`] hands out the temporary directory
//! (policy file, logs, `data/`), and [`GatewayBuilder::in_dir`] starts a new process in it;
//! [`GatewayBuilder::without_config_flag`] leaves `--config` out, so only the stored
//! revisions count. [`GatewayBuilder::admin_only`] runs `tollgate admin` (no proxy).
//!
//! Scale-out: [`GatewayBuilder::data_plane`] runs `tollgate gateway --control-plane URL`
//! (proxy, no admin API, no store). Its "admin" address is then its status listener
//! (`--status-listen`: `/healthz`, `/readyz`, `/metrics`), and it is ready when `/readyz`
//! answers 200: it serves a snapshot, from the control plane or its last-known-good file.

use crate::raw::RawConn;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How many 50 ms tries the readiness wait makes (10 s in all: a debug build on a busy
/// two-core machine can be slow to start).
const READY_TRIES: u32 = 200;

/// The `tollgate` binary: `$TOLLGATE_BIN`, or `tollgate` next to the test executable's
/// `deps/` directory (`<target>/debug/tollgate`). Panics, saying what to do, when missing.
pub fn tollgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "TOLLGATE_BIN={} does not exist; run `cargo build -p tollgate` first",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target profile dir")
    } else {
        dir
    };
    let bin = dir.join("tollgate");
    assert!(
        bin.exists(),
        "the tollgate binary is missing at {}: run `cargo build -p tollgate` first \
         (or point TOLLGATE_BIN at it)",
        bin.display()
    );
    bin
}

/// Which `tollgate` command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `tollgate serve`: proxy and admin API.
    Serve,
    /// `tollgate admin`: admin API and store only.
    Admin,
    /// `tollgate gateway --control-plane URL`: proxy and status listener only.
    DataPlane,
}

/// Options of a gateway start; build with [`Gateway::builder`].
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    config: String,
    grace_period: Option<u64>,
    threads: usize,
    tls: bool,
    env: Vec<(String, String)>,
    config_flag: bool,
    dir: Option<Arc<TempDir>>,
    role: Role,
    control_plane: Option<String>,
    admin_addr: Option<SocketAddr>,
}

impl GatewayBuilder {
    /// `TOLLGATE_ADMIN_TOKEN` for the process (else it generates `DATA_DIR/admin-token`).
    pub fn admin_token(self, token: &str) -> Self {
        self.env("TOLLGATE_ADMIN_TOKEN", token)
    }

    /// `TOLLGATE_OPERATOR_TOKEN` for the process.
    pub fn operator_token(self, token: &str) -> Self {
        self.env("TOLLGATE_OPERATOR_TOKEN", token)
    }

    /// Starts without `--config` (the policy file is still written, but not named): the
    /// process runs on what its data directory holds. It must hold a revision already, or
    /// `/readyz` never answers 200 and the start fails.
    pub fn without_config_flag(mut self) -> Self {
        self.config_flag = false;
        self
    }

    /// Runs in `dir` (from [`Gateway::shared_dir`] of an earlier process) instead of a fresh
    /// temporary directory: same `data/`, same `policy.yaml` path (rewritten with this
    /// builder's config), logs numbered on.
    pub fn in_dir(mut self, dir: Arc<TempDir>) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Runs `tollgate admin` (admin API and store, no proxy) instead of `tollgate serve`.
    pub fn admin_only(mut self) -> Self {
        self.role = Role::Admin;
        self
    }

    /// Runs `tollgate gateway --control-plane URL` (a data plane) instead of `tollgate
    /// serve`; `--config` is left out. Give it a token with
    /// `.env("TOLLGATE_TOKEN", ...)`.
    pub fn data_plane(mut self, control_plane_url: &str) -> Self {
        self.role = Role::DataPlane;
        self.control_plane = Some(control_plane_url.to_string());
        self.config_flag = false;
        self
    }

    /// Listens for admin calls (a data plane: status calls) on `addr` instead of a fresh
    /// ephemeral port: a control plane restarted where its data planes look for it.
    pub fn admin_listen(mut self, addr: SocketAddr) -> Self {
        self.admin_addr = Some(addr);
        self
    }

    /// `--grace-period SECS`.
    pub fn grace_period(mut self, secs: u64) -> Self {
        self.grace_period = Some(secs);
        self
    }

    /// `--threads N` (default 2).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Also listen with TLS, on a self-signed certificate for `localhost` and `127.0.0.1`
    /// generated now.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the process and waits until it is ready; panics with its log otherwise.
    pub fn start(self) -> Gateway {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => Arc::new(
                tempfile::Builder::new()
                    .prefix("tollgate-e2e-")
                    .tempdir()
                    .expect("temp dir"),
            ),
        };
        let config_path = dir.path().join("policy.yaml");
        std::fs::write(&config_path, &self.config).expect("write the policy file");
        let tls_files = if self.tls {
            let ck = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .expect("self-signed certificate");
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, ck.cert.pem()).expect("write cert");
            std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
            Some((cert, key))
        } else {
            None
        };
        // Every start in a directory gets its own logs: `tollgate-<start>-<attempt>.log`.
        let seq = (0..10_000u32)
            .find(|i| !dir.path().join(format!("tollgate-{i}-0.log")).exists())
            .expect("fewer than 10000 starts in one directory");
        let mut last_log = String::new();
        for attempt in 0..2 {
            match self.try_start(&dir, &config_path, tls_files.as_ref(), seq, attempt) {
                Ok(mut gw) => {
                    gw._dir = Some(dir);
                    return gw;
                }
                Err(Retry(log)) => last_log = log,
            }
        }
        panic!("tollgate could not bind its ports twice in a row; last log:\n{last_log}");
    }

    fn try_start(
        &self,
        dir: &Arc<TempDir>,
        config_path: &Path,
        tls_files: Option<&(PathBuf, PathBuf)>,
        seq: u32,
        attempt: u32,
    ) -> Result<Gateway, Retry> {
        let listen: SocketAddr = format!("127.0.0.1:{}", crate::free_port())
            .parse()
            .expect("addr");
        let admin: SocketAddr = self.admin_addr.unwrap_or_else(|| {
            format!("127.0.0.1:{}", crate::free_port())
                .parse()
                .expect("addr")
        });
        let tls: Option<SocketAddr> = tls_files.map(|_| {
            format!("127.0.0.1:{}", crate::free_port())
                .parse()
                .expect("addr")
        });
        let log_path = dir.path().join(format!("tollgate-{seq}-{attempt}.log"));
        let log = File::create(&log_path).expect("log file");
        let data_dir = dir.path().join("data");
        let mut cmd = Command::new(tollgate_bin());
        cmd.arg(match self.role {
            Role::Serve => "serve",
            Role::Admin => "admin",
            Role::DataPlane => "gateway",
        });
        if self.config_flag {
            cmd.arg("--config").arg(config_path);
        }
        if let Some(cp) = &self.control_plane {
            cmd.arg("--control-plane").arg(cp);
        }
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg(if self.role == Role::DataPlane {
                "--status-listen"
            } else {
                "--admin-listen"
            });
        cmd.arg(admin.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--threads")
            .arg(self.threads.to_string());
        if let Some(g) = self.grace_period {
            cmd.arg("--grace-period").arg(g.to_string());
        }
        if let (Some(addr), Some((cert, key))) = (tls, tls_files) {
            cmd.arg("--tls-listen")
                .arg(addr.to_string())
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        // Nothing from the test environment steers the process but what is set here.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TOLLGATE_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn tollgate: {e}"));
        let mut gw = Gateway {
            dir_path: dir.path().to_path_buf(),
            config_path: config_path.to_path_buf(),
            log_path,
            child,
            listen,
            admin,
            tls,
            exit: None,
            proxy: self.role != Role::Admin,
            admin_token_env: self
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "TOLLGATE_ADMIN_TOKEN")
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty()),
            _dir: None,
        };
        for _ in 0..READY_TRIES {
            if let Some(status) = gw.child.try_wait().expect("try_wait") {
                gw.exit = Some(status);
                let log = gw.log();
                let lower = log.to_ascii_lowercase();
                if lower.contains("in use") || lower.contains("cannot listen") {
                    return Err(Retry(log));
                }
                panic!("tollgate exited during start-up with {status}; log:\n{log}");
            }
            let ready = gw.is_ready();
            // Pingora retries a busy listener address instead of exiting (and another
            // process's listener may answer in its place): give up on these ports at once.
            let log = gw.log();
            if log.contains("is in use") || log.contains("Address already in use") {
                let _ = gw.child.kill();
                let _ = gw.child.wait();
                return Err(Retry(log));
            }
            if ready {
                return Ok(gw);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tollgate was not ready after {} ms; log:\n{}",
            READY_TRIES * 50,
            gw.log()
        );
    }
}

struct Retry(String);

/// A running `tollgate serve` process; see the module docs.
pub struct Gateway {
    dir_path: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    tls: Option<SocketAddr>,
    exit: Option<ExitStatus>,
    /// Whether a proxy listener runs (`serve`), or only the admin API (`admin`).
    proxy: bool,
    /// `TOLLGATE_ADMIN_TOKEN` as given to the process, if any.
    admin_token_env: Option<String>,
    /// Owns (a share of) the temporary directory (set once the start succeeded).
    _dir: Option<Arc<TempDir>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("pid", &self.child.id())
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("tls", &self.tls)
            .field("dir", &self.dir_path)
            .finish_non_exhaustive()
    }
}

/// The status of `GET path` at `addr`; `None` when nothing answers (yet).
fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    // Not ready is no failure: a refused connection is one more try of the caller's loop.
    let mut conn = RawConn::try_connect(addr, Duration::from_millis(500)).ok()?;
    conn.set_read_timeout(Duration::from_secs(2));
    let resp = conn.request(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    (resp.status != 0).then_some(resp.status)
}

impl Gateway {
    /// Starts `tollgate serve` with the policy file `config` and default options.
    pub fn start(config: &str) -> Gateway {
        Gateway::builder(config).start()
    }

    /// Options for a start with the policy file `config`.
    pub fn builder(config: &str) -> GatewayBuilder {
        GatewayBuilder {
            config: config.to_string(),
            grace_period: None,
            threads: 2,
            tls: false,
            env: Vec::new(),
            config_flag: true,
            dir: None,
            role: Role::Serve,
            control_plane: None,
            admin_addr: None,
        }
    }

    fn is_ready(&self) -> bool {
        if status_of(self.admin, "/healthz") != Some(200) {
            return false;
        }
        if status_of(self.admin, "/readyz") != Some(200) {
            return false;
        }
        if self.proxy
            && TcpStream::connect_timeout(&self.listen, Duration::from_millis(500)).is_err()
        {
            return false;
        }
        if let Some(tls) = self.tls {
            if TcpStream::connect_timeout(&tls, Duration::from_millis(500)).is_err() {
                return false;
            }
        }
        true
    }

    /// The proxy listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin listener's address (a data plane's status listener).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://STATUS{path}` of a data plane (its `--status-listen`).
    pub fn status_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The TLS listener's address; panics when started without TLS.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.expect("this gateway was started without TLS")
    }

    /// `http://PROXY{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The self-signed certificate of the TLS listener (PEM, for `localhost` and
    /// `127.0.0.1`); panics when started without TLS.
    pub fn tls_cert_path(&self) -> PathBuf {
        self.tls_addr();
        self.dir_path.join("cert.pem")
    }

    /// `https://127.0.0.1:TLSPORT{path}`.
    pub fn tls_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.tls_addr())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The policy file the process was started with (and re-reads on SIGHUP).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory holding the policy file, the log and the data directory.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// `DIR/data`, the process's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir_path.join("data")
    }

    /// A share of the temporary directory, to start another process in it
    /// ([`GatewayBuilder::in_dir`]) or keep it after this one is dropped.
    pub fn shared_dir(&self) -> Arc<TempDir> {
        self._dir
            .clone()
            .expect("a started gateway owns its directory")
    }

    /// The admin token: `TOLLGATE_ADMIN_TOKEN` as given to the process, else the content of
    /// `DATA_DIR/admin-token` (trimmed); panics when neither exists.
    pub fn admin_token(&self) -> String {
        if let Some(t) = &self.admin_token_env {
            return t.clone();
        }
        let path = self.data_dir().join("admin-token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// An admin API client with [`Gateway::admin_token`].
    pub fn admin(&self) -> crate::admin::Admin {
        crate::admin::Admin::new(&self.admin_url(""), Some(&self.admin_token()))
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit; panics when it does not come.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit_blocking(timeout)
            .unwrap_or_else(|| panic!("tollgate still runs {timeout:?} after SIGTERM"))
    }

    /// SIGKILL, then waits for the exit (bounded: 10 s).
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        self.wait_exit_blocking(Duration::from_secs(10))
            .expect("tollgate still runs 10 s after SIGKILL")
    }

    /// Replaces the policy file (written beside it, then renamed over it).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.config_path.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write the policy file");
        std::fs::rename(&tmp, &self.config_path).expect("rename the policy file");
    }

    /// Replaces the policy file and sends SIGHUP.
    pub fn reload(&self, yaml: &str) {
        self.write_config(yaml);
        self.signal(Signal::SIGHUP);
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig)
            .unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.child.id()));
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits (polling every 20 ms, at most `timeout`) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.poll_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`Gateway::wait_exit`], blocking the thread.
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.poll_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Prints the log to the test's stderr.
    pub fn print_log(&self) {
        eprintln!(
            "----- tollgate log ({}) -----\n{}\n----- end of tollgate log -----",
            self.log_path.display(),
            self.log()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.poll_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            self.print_log();
        }
    }
}
