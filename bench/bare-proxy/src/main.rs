//! The bare Pingora proxy of `bench/run.sh`: the engine's limit. A `ProxyHttp` with no
//! policies, no routing and no per-request context: every request goes to one upstream
//! address over Pingora's keep-alive pool. Set up like Tollgate's proxy service (the same
//! `ServerConf` threads, `h2c` on, an idle timeout of 60 s on the upstream peer, mimalloc as
//! the global allocator), so the difference to Tollgate passthrough is Tollgate's own work.
//!
//! With `--contract-headers` (the `bare-hdr` case) it also makes the header edits the
//! contract asks of every proxied request, through the same Pingora calls Tollgate uses:
//! `Host` of the upstream, `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, a new
//! `traceparent` and an `X-Request-Id` upstream, and the `X-Request-Id` on the answer. That
//! is the engine's limit for a gateway bound by that contract: the difference to Tollgate
//! passthrough is routing, checks and the rest of Tollgate's own work.
//!
//! ```text
//! bare-proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS] [--contract-headers]
//!     e.g. bare-proxy 127.0.0.1:9100 127.0.0.1:9000 1
//! ```

/// The allocator of the `tollgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;
use std::time::Duration;

struct Bare {
    upstream: SocketAddr,
    /// `--contract-headers`: the upstream's `Host` value when set.
    contract_headers: Option<HeaderValue>,
}

/// The request id both headers share (`--contract-headers`).
#[derive(Default)]
struct Ids {
    request_id: Option<HeaderValue>,
}

static HTTP: HeaderValue = HeaderValue::from_static("http");

/// 32 hex digits of random bits, as the header value.
fn random_hex(buf: &mut [u8]) -> HeaderValue {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[..buf.len() / 2]);
    let _ = hex::encode_to_slice(&bytes[..buf.len() / 2], buf);
    HeaderValue::from_bytes(buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = Ids;

    fn new_ctx(&self) -> Self::CTX {
        Ids::default()
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ids) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ids,
    ) -> Result<()> {
        let Some(host) = &self.contract_headers else {
            return Ok(());
        };
        upstream.insert_header(http::header::HOST, host.clone())?;
        if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = HeaderValue::from_str(&ip.ip().to_string()).unwrap_or(HTTP.clone());
            upstream.insert_header(Bytes::from_static(b"x-forwarded-for"), ip)?;
        }
        upstream.insert_header(Bytes::from_static(b"x-forwarded-proto"), HTTP.clone())?;
        if let Some(h) = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
        {
            upstream.insert_header(Bytes::from_static(b"x-forwarded-host"), h)?;
        }
        let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-01";
        random_hex(&mut tp[3..35]);
        random_hex(&mut tp[36..52]);
        let tp = HeaderValue::from_bytes(&tp).unwrap_or(HTTP.clone());
        upstream.insert_header(Bytes::from_static(b"traceparent"), tp)?;
        let id = random_hex(&mut [0u8; 32]);
        upstream.insert_header(Bytes::from_static(b"x-request-id"), id.clone())?;
        ctx.request_id = Some(id);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ids,
    ) -> Result<()> {
        if let Some(id) = ctx.request_id.take() {
            resp.insert_header(Bytes::from_static(b"x-request-id"), id)?;
        }
        Ok(())
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let contract = args.iter().any(|a| a == "--contract-headers");
    args.retain(|a| a != "--contract-headers");
    if args.len() < 3 {
        eprintln!("usage: bare-proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS] [--contract-headers]");
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
    let contract_headers = contract.then(|| {
        HeaderValue::from_str(&upstream.to_string()).unwrap_or(HeaderValue::from_static("up"))
    });
    let bare = Bare {
        upstream,
        contract_headers,
    };
    let mut app = pingora_proxy::http_proxy(&server.configuration, bare);
    app.server_options = Some(options);
    let mut service =
        pingora_core::services::listening::Service::new("bare proxy".to_string(), app);
    service.add_tcp(&args[1]);
    server.add_service(service);
    server.run_forever();
}
