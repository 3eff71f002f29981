//! The bare Pingora proxy of `bench/run.sh`: the engine's limit. A `ProxyHttp` with no
//! policies, no routing and no per-request context: every request goes to one upstream
//! address over Pingora's keep-alive pool. Set up like Tollgate's proxy service (the same
//! `ServerConf` threads, `h2c` on, an idle timeout of 60 s on the upstream peer, mimalloc as
//! the global allocator), so the difference to Tollgate passthrough is Tollgate's own work.
//!
//! ```text
//! bare-proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS]     e.g. bare-proxy 127.0.0.1:9100 127.0.0.1:9000 1
//! ```

/// The allocator of the `tollgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;
use std::time::Duration;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bare-proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS]");
        std::process::exit(2);
    }
    let upstream: SocketAddr = args[2].parse().unwrap_or_else(|e| {
        eprintln!("bad upstream address {}: {e}", args[2]);
        std::process::exit(2)
    });
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1usize);
    let conf = ServerConf {
        threads: threads.max(1),
        // SIGTERM ends it at once (a benchmark has nothing in flight worth waiting for).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    let mut app = pingora_proxy::http_proxy(&server.configuration, Bare { upstream });
    app.server_options = Some(options);
    let mut service =
        pingora_core::services::listening::Service::new("bare proxy".to_string(), app);
    service.add_tcp(&args[1]);
    server.add_service(service);
    server.run_forever();
}
