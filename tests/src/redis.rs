//! A real Redis server for the tests that share counters: Debian's `redis-server` on a free
//! port of 127.0.0.1, without persistence (`--save '' --appendonly no`), killed (SIGKILL)
//! when dropped. [`RedisServer::kill`] and [`RedisServer::restart`] simulate an outage and
//! a recovery on the same port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `redis-server` binary: `$REDIS_SERVER`, else `/usr/bin/redis-server`, else the one on
/// the `PATH`.
pub fn redis_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        return PathBuf::from(p);
    }
    let debian = PathBuf::from("/usr/bin/redis-server");
    if debian.exists() {
        return debian;
    }
    PathBuf::from("redis-server")
}

/// A running `redis-server`; see the module docs.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The TLS port (besides the plain one the helpers use), with [`RedisServer::start_tls`].
    tls_port: Option<u16>,
    /// Extra arguments of `redis-server`.
    args: Vec<String>,
    /// `requirepass`: the helpers authenticate with it.
    password: Option<String>,
}

/// What [`RedisServer::start_tls`] sets up: the server's certificate and key, the CA its
/// clients' certificates must come from (required of them with `require_client_cert`),
/// and a password.
#[derive(Debug, Clone)]
pub struct RedisTlsOptions {
    /// The server's certificate (PEM).
    pub cert_pem: String,
    /// Its key (PEM).
    pub key_pem: String,
    /// The CA of client certificates (PEM).
    pub client_ca_pem: String,
    /// Whether a client must present a certificate from `client_ca_pem`.
    pub require_client_cert: bool,
    /// `requirepass`, when set.
    pub password: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits (bounded: 10 s) until it answers `PING`.
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-redis-")
            .tempdir()
            .expect("temp dir");
        let mut server = RedisServer {
            port: crate::free_port(),
            child: None,
            dir,
            tls_port: None,
            args: Vec::new(),
            password: None,
        };
        server.spawn();
        server
    }

    /// Starts a server that also listens with TLS on a port of its own
    /// ([`RedisServer::tls_url`]); the plain port stays for the test's helpers.
    pub fn start_tls(options: &RedisTlsOptions) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-redis-")
            .tempdir()
            .expect("temp dir");
        let write = |name: &str, text: &str| crate::write_file(dir.path(), name, text);
        let tls_port = crate::free_port();
        let mut args = vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            write("server.pem", &options.cert_pem),
            "--tls-key-file".to_owned(),
            write("server.key", &options.key_pem),
            "--tls-ca-cert-file".to_owned(),
            write("clients-ca.pem", &options.client_ca_pem),
            "--tls-auth-clients".to_owned(),
            if options.require_client_cert {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
        ];
        if let Some(p) = &options.password {
            args.extend(["--requirepass".to_owned(), p.clone()]);
        }
        let mut server = RedisServer {
            port: crate::free_port(),
            child: None,
            dir,
            tls_port: Some(tls_port),
            args,
            password: options.password.clone(),
        };
        server.spawn();
        server
    }

    /// `rediss://[:PASSWORD@]127.0.0.1:TLSPORT/` (with [`RedisServer::start_tls`]).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        match &self.password {
            Some(p) => format!("rediss://:{p}@127.0.0.1:{port}/"),
            None => format!("rediss://127.0.0.1:{port}/"),
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new(redis_server_bin())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install Debian's redis-server package",
                    redis_server_bin().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether the server answers `PING` right now.
    pub fn ping(&self) -> bool {
        self.command("PING").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one inline command and returns the first reply bytes as text (bounded: 1 s).
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = self.connect()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// A plain connection to the server, authenticated when it has a password (bounded).
    fn connect(&self) -> Option<TcpStream> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        if let Some(p) = &self.password {
            s.write_all(format!("AUTH {p}\r\n").as_bytes()).ok()?;
            let mut ok = [0u8; 5];
            s.read_exact(&mut ok).ok()?;
            if &ok != b"+OK\r\n" {
                return None;
            }
        }
        Some(s)
    }

    /// The `calls` count of each command in `INFO commandstats` (`evalsha`, `eval`, ...;
    /// lower case, as Redis names them). Reads the whole reply (bounded: 1 s).
    pub fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        let mut s = self.connect().expect("connect to redis");
        s.write_all(b"INFO commandstats\r\n").expect("send INFO");
        // A bulk string: `$LEN\r\n` then LEN bytes and `\r\n`.
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("read INFO");
            assert!(n > 0, "redis closed the connection");
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some((head, body)) = text.split_once("\r\n") {
                let len: usize = head.trim_start_matches('$').parse().expect("bulk length");
                if body.len() >= len {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.strip_prefix("calls=")?.split(',').next()?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    /// Lua scripts run so far (`EVALSHA` and `EVAL` calls): with Tollgate's counters, the
    /// round trips of counter operations.
    pub fn script_runs(&self) -> u64 {
        let calls = self.command_calls();
        calls.get("evalsha").copied().unwrap_or(0) + calls.get("eval").copied().unwrap_or(0)
    }

    /// Kills the server (SIGKILL): an outage. Its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
