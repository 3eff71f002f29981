//! Test support: a real `redis-server` (Debian's, or `$REDIS_SERVER`) on a free port of
//! 127.0.0.1, without persistence, in its own temporary directory, killed when dropped.
//! Used by this crate's tests and, through the `testing` feature, by the policies' tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// Start one and wait (at most 10 s) until it listens; panics when it cannot start.
    pub fn start() -> RedisServer {
        let bin = std::env::var_os("REDIS_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/redis-server".into());
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tollgate-counters-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install Debian's redis-server package",
                    bin.display()
                )
            });
        let server = RedisServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// A port on 127.0.0.1 that was free a moment ago (nothing listens on it: connections are
/// refused).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
