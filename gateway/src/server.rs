//! Running the gateway: the Pingora server with the proxy service (plain HTTP/1.1 + h2c,
//! and TLS with rustls when configured), a maintenance task (active health checks, config
//! reload on SIGHUP, graceful drain), and any extra background services (the admin API).
//!
//! Shutdown: SIGTERM and SIGINT both start a graceful shutdown. Listeners stop accepting,
//! idle keep-alive connections close, in-flight requests finish; as soon as none is left
//! (or the grace period is over) the shutdown hooks run (flushing state) and the process
//! exits 0.

use crate::deadline::WithHeaderDeadline;
use crate::listener_cert::{ClientCa, ListenerCert, Material, Watched};
use crate::proxy_protocol::ProxyProtocol;
use crate::{Gateway, Proxy};
use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::ServiceWithDependents;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A hook run once: on reload (SIGHUP) or at shutdown.
pub type Hook = Box<dyn Fn() + Send + Sync>;

/// How to run the gateway.
pub struct ServeOptions {
    /// Plain listener (`127.0.0.1:8080`).
    pub listen: String,
    /// TLS listener: (address, certificate PEM path, key PEM path).
    pub tls: Option<(String, String, String)>,
    /// CA certificates (PEM path) the TLS listener verifies client certificates against;
    /// `None`: it asks for none.
    pub tls_client_ca: Option<String>,
    /// Revocation lists (PEM path) of those CAs; `None`: revocation is not checked.
    pub tls_client_crl: Option<String>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Longest wait for in-flight requests at shutdown.
    pub grace_period: Duration,
    /// Longest time a client may take to send a request head (slow-loris defence).
    pub header_read_timeout: Duration,
    /// Longest time an idle keep-alive connection stays open (HTTP/1.x between requests,
    /// HTTP/2 with no stream open); whole seconds, less than one counts as one.
    pub keepalive_timeout: Duration,
    /// Most client connections open at once on the proxy listeners; `None`: derived from
    /// the descriptor limit ([`crate::connections::default_max`]).
    pub max_connections: Option<u64>,
    /// How often upstream host names are resolved again ([`DNS_RETRY`], or this when
    /// shorter, while a name has no address).
    pub dns_refresh: Duration,
    /// The balancers whose connections to the proxy listeners start with a PROXY protocol
    /// header ([`crate::proxy_protocol`]); empty: none.
    pub proxy_protocol: Vec<ipnet::IpNet>,
    /// Called on SIGHUP (re-read the config file).
    pub on_reload: Option<Hook>,
    /// Called once at shutdown, after in-flight requests finished.
    pub on_shutdown: Vec<Hook>,
    /// More services to run in the same process (e.g. the admin API).
    pub extra_services: Vec<Box<dyn ServiceWithDependents>>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("tls", &self.tls.as_ref().map(|t| &t.0))
            .field("threads", &self.threads)
            .field("grace_period", &self.grace_period)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("max_connections", &self.max_connections)
            .field("dns_refresh", &self.dns_refresh)
            .field("proxy_protocol", &self.proxy_protocol)
            .finish_non_exhaustive()
    }
}

/// SIGTERM and SIGINT: graceful; SIGQUIT: Pingora's graceful upgrade.
struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

struct Maintenance {
    gw: Arc<Gateway>,
    grace: Duration,
    dns_refresh: Duration,
    on_reload: Option<Hook>,
    on_shutdown: Vec<Hook>,
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // Upstream host names are resolved again now and then, on a blocking thread, one
        // round at a time.
        let resolving = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let retry = DNS_RETRY.min(self.dns_refresh);
        let mut next_resolve = Instant::now() + retry;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; }, None => std::future::pending().await } } => {
                    if let Some(reload) = &self.on_reload {
                        reload();
                    }
                }
                _ = tick.tick() => {
                    // Starts due JWKS fetches as their own tasks (returns at once).
                    self.gw.registries().tick().await;
                    for pool in self.gw.pools().all() {
                        pool.health_check_if_due().await;
                    }
                    if Instant::now() >= next_resolve
                        && !resolving.swap(true, std::sync::atomic::Ordering::AcqRel)
                    {
                        let snap = self.gw.snapshot();
                        let waiting = snap.apis.iter().any(|a| a.pool.has_unresolved());
                        next_resolve = Instant::now()
                            + if waiting { retry } else { self.dns_refresh };
                        let (gw, flag) = (self.gw.clone(), resolving.clone());
                        tokio::task::spawn_blocking(move || {
                            let _done = RoundDone(flag);
                            gw.refresh_upstream_addresses();
                        });
                    }
                }
            }
        }
        // Drain: wait for in-flight requests, bounded by the grace period.
        let started = Instant::now();
        while self.gw.inflight() > 0 && started.elapsed() < self.grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.gw.inflight();
        if left > 0 {
            tracing::warn!(left, "grace period over with requests in flight");
        }
        for hook in &self.on_shutdown {
            hook();
        }
        tracing::info!("shut down cleanly");
        std::process::exit(0);
    }
}

/// Parses the client certificate of a TLS connection, once, into the connection's TLS
/// digest, where every request on it finds it.
struct ClientCertCapture;

#[async_trait]
impl pingora_core::listeners::TlsAccept for ClientCertCapture {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora_core::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let cert = tollgate_policies::ClientCert::from_der(tls.peer_certificate_der()?)?;
        Some(Arc::new(Arc::new(cert)))
    }
}

/// Reloads the proxy's TLS certificate, or its client CA, as it changes
/// ([`Watched::watch`]).
struct CertWatch<T>(Arc<Watched<T>>);

#[async_trait]
impl<T: Material> BackgroundService for CertWatch<T> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = self.0.clone().watch() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Marks a round of upstream name resolution over, however it ends (a panic included), so
/// that the next one can start.
struct RoundDone(Arc<std::sync::atomic::AtomicBool>);

impl Drop for RoundDone {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// How often upstream host names are resolved again while some target's name has no
/// address (or `--dns-refresh`, when shorter).
pub const DNS_RETRY: Duration = Duration::from_secs(5);

/// Raise the soft descriptor limit to the hard one (the soft one is often 1024 in shells
/// and containers, the hard one far higher) and answer the limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Run the gateway until a shutdown signal; never returns.
pub fn run(gw: Arc<Gateway>, opts: ServeOptions) -> Result<(), String> {
    // Pingora retries a busy address forever; an operator wants a clear failure instead.
    let mut addrs = vec![opts.listen.as_str()];
    if let Some((addr, _, _)) = &opts.tls {
        addrs.push(addr);
    }
    // Each is held until all are bound, so that the plain and TLS listeners given the same
    // address are refused here too (Pingora aborts the process on it).
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        bound.push(
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        );
        tracing::info!(%addr, "proxy listening");
    }
    drop(bound);
    // The TLS certificate is read here, so that a bad one stops the start with a clear
    // message (Pingora's own loading panics on a worker thread).
    let listener_cert = match &opts.tls {
        Some((_, cert, key)) => {
            let c = Arc::new(ListenerCert::load(Path::new(cert), Path::new(key))?);
            gw.add_listener_cert("proxy", c.clone());
            Some(c)
        }
        None => None,
    };
    // Likewise the client CA and its revocation lists.
    let client_ca = match (&opts.tls, &opts.tls_client_ca) {
        (Some(_), Some(ca)) => {
            let crl = opts.tls_client_crl.as_deref().map(Path::new);
            let c = Arc::new(ClientCa::load(Path::new(ca), crl)?);
            gw.add_listener_cert("proxy-client-ca", c.clone());
            Some(c)
        }
        _ => None,
    };
    // Raise the descriptor limit as far as allowed, then cap the client connections below it.
    let nofile = raise_descriptor_limit();
    let max_connections = opts.max_connections.map_or_else(
        || crate::connections::default_max(nofile),
        |n| usize::try_from(n).unwrap_or(usize::MAX),
    );
    gw.connections().set_max(max_connections);
    tracing::info!(nofile, max_connections, "client connection cap");
    let mut conf = ServerConf {
        threads: opts.threads.max(1),
        grace_period_seconds: Some(opts.grace_period.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    // Which of Pingora's timeouts (upstream reads and writes, the client's keep-alive) run
    // on tokio's timer instead of Pingora's own: `Some(0)`, every one of a second or more.
    //
    // Pingora's timer keeps a map of deadlines per thread, rounded to 10 ms, and a timeout
    // that is cancelled (an upstream answering in time, nearly always) stays in it until
    // its deadline; registering one costs a lookup in that map (~1.4k instructions per
    // request under callgrind). tokio's wheel inserts and removes in constant time (~2%
    // less CPU per proxied request with one thread, docs/benchmarks.md), but one lock
    // guards it for all the runtime's workers, which is what Pingora's per-thread maps
    // avoid. So: tokio's timer with one proxy thread, where that lock is never contended;
    // Pingora's default otherwise.
    if conf.threads == 1 {
        conf.fast_timeout_to_tokio_threshold_seconds = Some(0);
    }
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut server_options = HttpServerOptions::default();
    server_options.h2c = true;
    // Pingora's own CONNECT refusal is a bare 405; the proxy's request_filter refuses it
    // with a problem answer instead (nothing is ever tunnelled).
    server_options.allow_connect_method_proxying = true;
    // Idle connections are closed: an HTTP/2 one with no stream open after this (without
    // it, one that sent only the preface stayed open for good), an HTTP/1.x one between
    // requests by the proxy's request_filter (Pingora's own default there is no limit).
    let keepalive = opts.keepalive_timeout.max(Duration::from_secs(1));
    server_options.h2_idle_timeout = Some(keepalive);
    let mut app = pingora_proxy::http_proxy(
        &server.configuration,
        Proxy::new(gw.clone(), keepalive.as_secs()),
    );
    app.server_options = Some(server_options);
    let mut app = WithHeaderDeadline::new(
        app,
        opts.header_read_timeout,
        keepalive,
        gw.connections().clone(),
    );
    let proxy_protocol = (!opts.proxy_protocol.is_empty()).then(|| {
        Arc::new(ProxyProtocol::new(
            opts.proxy_protocol.clone(),
            opts.header_read_timeout,
            gw.connections().clone(),
        ))
    });
    if let Some(pp) = &proxy_protocol {
        app = app.with_proxy_protocol(pp.clone());
        tracing::info!(from = ?opts.proxy_protocol, "PROXY protocol expected from these peers");
    }
    let mut proxy = ListeningService::new("tollgate proxy".to_string(), app);
    // The connection cap is looked at as connections are accepted too: past it, a TLS
    // connection is closed before its handshake.
    proxy.set_connection_filter(gw.connections().clone());
    proxy.add_tcp(&opts.listen);
    if let (Some((addr, _, _)), Some(resolver)) = (&opts.tls, &listener_cert) {
        // The client certificate of each connection is parsed once, after its handshake.
        let mut tls = TlsSettings::with_callbacks(Box::new(ClientCertCapture))
            .map_err(|e| format!("TLS settings: {e}"))?;
        // Handshakes take the certificate from the reloadable pair.
        tls.set_cert_resolver(resolver.clone());
        if let Some(ca) = &client_ca {
            tls.set_client_cert_verifier(ca.clone());
        }
        tls.enable_h2();
        proxy.add_tls_with_settings(addr, None, tls);
        if let Some(pp) = proxy_protocol {
            // Read before the handshake.
            proxy.endpoints().set_pre_tls_callback(pp);
        }
    }
    server.add_service(proxy);
    if let Some(cert) = listener_cert {
        server.add_service(background_service(
            "tollgate TLS certificate",
            CertWatch(cert),
        ));
    }
    if let Some(ca) = client_ca {
        server.add_service(background_service("tollgate client CA", CertWatch(ca)));
    }
    for s in opts.extra_services {
        server.add_boxed_service(s);
    }
    // The maintenance task runs the upstream health checks from the start.
    gw.mark_health_checked();
    server.add_service(background_service(
        "tollgate maintenance",
        Maintenance {
            gw,
            grace: opts.grace_period,
            dns_refresh: opts.dns_refresh.max(Duration::from_secs(1)),
            on_reload: opts.on_reload,
            on_shutdown: opts.on_shutdown,
        },
    ));
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    Ok(())
}

/// A background task run as a Pingora service: `f` gets the shutdown watch.
pub type TaskFn = Box<
    dyn Fn(ShutdownWatch) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

struct Task(TaskFn);

#[async_trait]
impl BackgroundService for Task {
    async fn start(&self, shutdown: ShutdownWatch) {
        (self.0)(shutdown).await
    }
}

/// Wrap `f` as a service for [`ServeOptions::extra_services`].
pub fn task_service(name: &str, f: TaskFn) -> Box<dyn ServiceWithDependents> {
    Box::new(background_service(name, Task(f)))
}
