//! `tollgate gateway --control-plane URL`: the data plane. A proxy with no admin API and no
//! store: its config and subscription keys come from the control plane's
//! `GET /control/snapshot` long poll ([`sync`]); every snapshot it accepts is written to
//! `DATA_DIR/last-known-good.json` ([`lkg`]), from which it starts when the control plane
//! is unreachable; a small status listener ([`status`]) answers `/healthz`, `/readyz` (which
//! revision it serves) and `/metrics`. Its analytics rollups go to the control plane
//! through an on-disk spool ([`analytics`]).
//!
//! Start-up order: data directory (0700) and node id → key ring with a placeholder secret
//! (it holds no key until a snapshot comes) → counters (Redis with `--redis`, else in
//! process) → the last-known-good file, applied when present → the analytics spool, its
//! shipper thread and the telemetry → the proxy, the sync task and the status listener as
//! services of one Pingora server.

pub(crate) mod analytics;
pub(crate) mod lkg;
pub(crate) mod status;
pub(crate) mod sync;

use crate::ServeArgs;
use clap::Args;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tollgate_counters::{Counters, SystemClock};
use tollgate_gateway::keys::KeyRing;
use tollgate_gateway::server::{self, ServeOptions};
use tollgate_gateway::Gateway;
use tollgate_policies::Registries;

/// Flags of `tollgate gateway`.
#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// The control plane's admin URL (e.g. `https://tollgate-cp:8081`).
    #[arg(long, env = "TOLLGATE_CONTROL_PLANE")]
    control_plane: String,
    /// Bearer token for the control plane: its `TOLLGATE_DATAPLANE_TOKEN` (or its admin
    /// token).
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` control plane, besides the public
    /// roots (a private PKI).
    #[arg(long, env = "TOLLGATE_CONTROL_PLANE_CA")]
    control_plane_ca: Option<std::path::PathBuf>,
    /// Status listener (`/healthz`, `/readyz`, `/metrics`, no token), or `off`.
    #[arg(long, env = "TOLLGATE_STATUS_LISTEN", default_value = "127.0.0.1:8082")]
    status_listen: String,
    /// This node's id, as the control plane sees it (default: a random id made on first
    /// start and kept in `DATA_DIR/node-id`).
    #[arg(long, env = "TOLLGATE_NODE_ID")]
    node_id: Option<String>,
    /// The most analytics waiting for the control plane on disk, in MiB
    /// (`DATA_DIR/analytics-spool`); beyond it rollups are held in memory.
    #[arg(long, env = "TOLLGATE_ANALYTICS_SPOOL_MAX_MB", default_value_t = 64)]
    analytics_spool_max_mb: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Runs the data plane until a shutdown signal.
pub(crate) fn run(args: GatewayArgs) -> ExitCode {
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The control plane's base URL, checked: `http://` or `https://`, no trailing slash.
fn base_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#']) => Ok(trimmed.to_owned()),
        _ => Err(format!(
            "--control-plane {url}: expected an http:// or https:// URL of the control plane's admin listener"
        )),
    }
}

/// `DATA_DIR/node-id`, made on first start.
fn node_id(dir: &Path) -> Result<String, String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let bytes = tollgate_gateway::keys::generate_key();
    let id = format!(
        "dp-{}",
        &bytes[..12].to_ascii_lowercase().replace(['-', '_'], "0")
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(id.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(id)
}

fn start(args: GatewayArgs) -> Result<(), String> {
    let base = base_url(&args.control_plane)?;
    if args.serve.config.is_some() {
        tracing::warn!(
            "--config is ignored by a data plane: its config comes from the control plane"
        );
    }
    let dir = &args.serve.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let ca = match &args.control_plane_ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--control-plane-ca {}: {e}", path.display()))?;
            Some(
                reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| format!("--control-plane-ca {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let node = match &args.node_id {
        Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => node_id(dir)?,
    };
    if base.starts_with("http://") && !is_loopback(&base) {
        tracing::warn!(
            control_plane = %base,
            "the control channel is plain HTTP: the token, the installation secret and the key \
             digests cross the network in clear; use https:// (or a private network)"
        );
    }

    // The placeholder secret matches nothing: the ring is empty until a snapshot comes.
    let keys = Arc::new(KeyRing::new([0; 32]));
    let clock: Arc<dyn tollgate_counters::Clock> = Arc::new(SystemClock);
    let counters = match crate::control::redis_counters(&args.serve, clock.clone())? {
        Some(c) => c,
        None => {
            tracing::warn!(
                "no --redis: rate limits and quotas are counted per data plane, and quota \
                 counters start from zero when it restarts"
            );
            Counters::local(clock)
        }
    };
    let registries = Registries {
        counters: Arc::new(counters),
        ..Registries::default()
    };
    let gw = Gateway::with_registries(keys.clone(), Arc::new(registries));
    let status = Arc::new(status::Status::new(&base, &node));

    let lkg_path = lkg::path_in(dir);
    match lkg::load(&lkg_path) {
        Ok(Some(snap)) => {
            let snap = Arc::new(snap);
            match sync::accept(&gw, &keys, &status, snap.clone(), status::Source::LastKnownGood) {
                Ok(()) => tracing::info!(
                    revision = snap.revision,
                    version = %snap.version,
                    "serving the last-known-good snapshot until the control plane answers"
                ),
                Err(e) => tracing::error!(
                    "the last-known-good snapshot cannot be applied, waiting for the control plane: {e}"
                ),
            }
        }
        Ok(None) => {
            tracing::info!("no last-known-good snapshot yet: waiting for the control plane")
        }
        Err(e) => tracing::error!("{e}; waiting for the control plane"),
    }

    // Analytics: rollups to the spool, the spool to the control plane; at shutdown the
    // aggregator's last flush (a telemetry hook) comes first, then one last shipping round.
    let spool = Arc::new(analytics::Spool::open(
        dir,
        &node,
        args.analytics_spool_max_mb.max(1) << 20,
    )?);
    let mut on_shutdown = crate::telemetry::start_with_sink(
        &gw,
        Some(Box::new(analytics::SpoolSink(spool.clone()))),
        &args.serve.telemetry,
    )?;
    let shipper = analytics::Shipper {
        spool: spool.clone(),
        url: format!("{base}/control/usage"),
        token: args.token.clone().filter(|t| !t.is_empty()),
        ca: ca.clone(),
    };
    let last_round = shipper.clone();
    on_shutdown.push(Box::new(move || {
        last_round.ship_before_exit(Duration::from_secs(5))
    }));
    std::thread::Builder::new()
        .name("tollgate-analytics-shipper".into())
        .spawn(move || shipper.run())
        .map_err(|e| format!("cannot start the analytics shipper: {e}"))?;

    let syncer = sync::Syncer {
        base,
        token: args.token.clone().filter(|t| !t.is_empty()),
        node: node.clone(),
        gw: gw.clone(),
        keys,
        status: status.clone(),
        lkg: lkg_path,
        ca,
    };
    tracing::info!(node = %node, control_plane = %syncer.base, "data plane starting");
    let sync_service = server::task_service(
        "tollgate control sync",
        Box::new(move |shutdown| {
            let syncer = syncer.clone();
            Box::pin(async move { syncer.run(shutdown).await })
        }),
    );
    let mut extra_services = vec![sync_service];
    let head_timeout = Duration::from_secs(args.serve.header_read_timeout.max(1));
    let status_addr = args.status_listen.trim().to_owned();
    if !status_addr.eq_ignore_ascii_case("off") && !status_addr.is_empty() {
        // Fail now, clearly, rather than inside a service.
        std::net::TcpListener::bind(&status_addr)
            .map_err(|e| format!("cannot listen on the status address {status_addr}: {e}"))?;
        let (status, gw, spool) = (status.clone(), gw.clone(), spool.clone());
        extra_services.push(server::task_service(
            "tollgate status",
            Box::new(move |mut shutdown| {
                let addr = status_addr.clone();
                let router = status::router(status.clone(), gw.clone(), spool.clone());
                Box::pin(async move {
                    let listener = match tokio::net::TcpListener::bind(&addr).await {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("cannot listen on the status address {addr}: {e}");
                            std::process::exit(1);
                        }
                    };
                    tracing::info!(%addr, "status listener (/healthz, /readyz, /metrics)");
                    let stop = async move {
                        let _ = shutdown.changed().await;
                    };
                    if let Err(e) =
                        tollgate_admin_api::serve_http(listener, router, head_timeout, None, stop)
                            .await
                    {
                        tracing::error!("status listener stopped: {e}");
                    }
                })
            }),
        ));
    }

    let a = &args.serve;
    let tls = match (&a.tls_listen, &a.tls_cert, &a.tls_key) {
        (Some(addr), Some(cert), Some(key)) => Some((
            addr.clone(),
            cert.display().to_string(),
            key.display().to_string(),
        )),
        _ => None,
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = ServeOptions {
        listen: a.listen.clone(),
        tls,
        tls_client_ca: a.tls_client_ca.as_ref().map(|p| p.display().to_string()),
        tls_client_crl: a.tls_client_crl.as_ref().map(|p| p.display().to_string()),
        threads,
        grace_period: Duration::from_secs(a.grace_period),
        header_read_timeout: Duration::from_secs(a.header_read_timeout.max(1)),
        keepalive_timeout: Duration::from_secs(a.keepalive_timeout),
        max_connections: a.max_connections,
        dns_refresh: Duration::from_secs(a.dns_refresh),
        proxy_protocol: a.proxy_protocol.clone(),
        on_reload: None,
        on_shutdown,
        extra_services,
    };
    server::run(gw, opts)
}

/// Whether the URL's host is a loopback address or `localhost`.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_urls() {
        assert_eq!(base_url("http://cp:8081/").unwrap(), "http://cp:8081");
        assert_eq!(
            base_url("https://cp.example/").unwrap(),
            "https://cp.example"
        );
        assert!(base_url("cp:8081").is_err());
        assert!(base_url("http://").is_err());
        assert!(base_url("ftp://cp").is_err());
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("http://127.0.0.1:8081"));
        assert!(is_loopback("http://localhost:8081"));
        assert!(is_loopback("http://[::1]:8081"));
        assert!(!is_loopback("http://cp:8081"));
        assert!(!is_loopback("http://10.0.0.1"));
    }
}
