//! End-to-end harness for Tollgate.
//!
//! Everything here is real: [`Gateway`] starts the `tollgate` binary built by
//! `cargo build -p tollgate` on ephemeral ports, with its policy file and data directory in a
//! temporary directory; [`Upstream`] is a real HTTP/1.1 server (hyper) on an ephemeral port
//! that records every request it receives; [`raw`] speaks HTTP/1.1 over a plain TCP socket
//! for requests no well-behaved client would send; [`client()`] wraps `reqwest` for the rest;
//! [`admin`] talks to the admin REST API and runs the CLI verbs.
//!
//! Every test starts its own gateway and upstreams, so tests run in parallel. Every loop is
//! bounded in count and time; child processes are killed when their [`Gateway`] is dropped,
//! and the gateway's log is printed when a test panics.

pub mod admin;
pub mod client;
pub mod gateway;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod upstream;

pub use admin::{
    assert_admin_problem, assert_inbound_refused, etag_revision, run_serve_tls, run_tollgate,
    Admin, CliRun, Sub,
};
pub use client::{
    assert_problem, client, fetch, get, h2c_client, tls_client, Answer, TRACEPARENT_SAMPLE,
};
pub use gateway::{tollgate_bin, Gateway, GatewayBuilder};
pub use nix::sys::signal::Signal;
pub use raw::{raw_get, read_head, send_raw, RawConn, RawResponse};
pub use redis::{RedisServer, RedisTlsOptions};
pub use upstream::{Blackhole, Recorded, Upstream};

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
/// The tiny race with other processes is accepted; [`Gateway`] retries a start once when a
/// bind fails.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Writes `text` to the file `name` in `dir`; its path, for a command line.
pub fn write_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// `"a", "b"`: the items of a YAML flow list of strings (upstream targets).
pub fn yaml_strings<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|t| format!("\"{}\"", t.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A port nothing listens on: connecting to it is refused. The port stays bound (not
/// listening) by this test process until it exits, so that no other test's server can take
/// it meanwhile: a port that was merely free a moment ago once became another test's
/// gateway, and the "dead" target answered 404.
pub fn closed_port() -> u16 {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("an IP address")
        .port();
    // Held for the rest of the process: bound, never listening.
    std::mem::forget(socket);
    port
}

/// Polls `check` every `every` until it returns true or `timeout` has passed; returns
/// whether it became true. Bounded in time (and so in count).
pub fn wait_until(timeout: Duration, every: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Polls the async `check` every `every` until it holds; false when `timeout` passed first.
pub async fn wait_until_async<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// The most common policy file: one API `echo` at `/echo`, no subscription required,
/// forwarding to `target`.
pub fn echo_config(target: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#
    )
}
