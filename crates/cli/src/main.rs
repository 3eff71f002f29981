//! The `tollgate` binary: one binary, several roles (contract §1).

/// mimalloc: glibc malloc/free showed up at ~9% of a bare Pingora proxy's profile and
/// ~30% of config compilation; mimalloc is the faster general-purpose allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod control;
mod dataplane;
mod demo;
mod openapi;
mod telemetry;

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tollgate_gateway::server::{self, ServeOptions};

/// Tollgate: an API management gateway.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Proxy and admin service in one process, state in --data-dir.
    Serve(ServeArgs),
    /// Control plane only: admin REST API and store.
    Admin(ServeArgs),
    /// Data plane only: takes config snapshots from a control plane (docs/scaling.md).
    Gateway(dataplane::GatewayArgs),
    /// Check a policy file offline: exit 0 valid, 1 invalid (every error, with path and line).
    Validate {
        /// The policy file (YAML or JSON).
        file: PathBuf,
    },
    /// What `apply` would change: exit 0 no change, 2 changes, 1 error.
    Diff {
        /// The policy file.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Push a policy file.
    Apply {
        /// The policy file.
        file: PathBuf,
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the live policy config as YAML.
    Dump {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make an earlier revision live again.
    Rollback {
        /// The revision to restore.
        revision: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn an OpenAPI description (3.x or Swagger 2.0, YAML or JSON) into an API with
    /// its operations, printed as a policy file (docs/configuration.md, "Importing OpenAPI").
    ImportOpenapi {
        /// The OpenAPI file.
        spec: PathBuf,
        /// The API's id (default: from `info.title`).
        #[arg(long)]
        id: Option<String>,
        /// The API's public path prefix (default: `/ID`).
        #[arg(long)]
        path: Option<String>,
        /// The upstream target (default: the spec's first server).
        #[arg(long)]
        upstream: Option<String>,
        /// Print only the API object (for `PUT /apis/{id}`, or under `apis:`).
        #[arg(long)]
        api_only: bool,
        /// Give each operation whose request body is JSON a `validate-content` policy
        /// with the body's schema from the spec.
        #[arg(long)]
        validate_requests: bool,
    },
    /// A small HTTP echo server, the upstream of the quickstart example.
    DemoUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Policy file applied at start.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Proxy listener (plain HTTP/1.1 and h2c).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// TLS proxy listener (needs --tls-cert and --tls-key).
    #[arg(long, env = "TOLLGATE_TLS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "TOLLGATE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "TOLLGATE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) the TLS listener verifies client certificates against
    /// (mutual TLS; APIs require one with `validate-client-certificate`); reloaded on
    /// SIGHUP and when the file changes.
    #[arg(long, env = "TOLLGATE_TLS_CLIENT_CA", requires = "tls_listen")]
    tls_client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) of the --tls-client-ca CAs: a client certificate
    /// they revoke fails the handshake. Reloaded with the CA on SIGHUP and when either
    /// file changes.
    #[arg(long, env = "TOLLGATE_TLS_CLIENT_CRL", requires = "tls_client_ca")]
    tls_client_crl: Option<PathBuf>,
    /// Admin listener.
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    admin_listen: String,
    /// Serve the admin listener over TLS with this certificate chain (PEM; needs
    /// --admin-tls-key); reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "TOLLGATE_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --admin-tls-cert.
    #[arg(long, env = "TOLLGATE_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,
    /// State directory.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
    data_dir: PathBuf,
    /// Redis URL for counters shared between nodes (`redis://`, or `rediss://` for TLS;
    /// a password as `redis://:PASSWORD@host:port/db`).
    #[arg(long, env = "TOLLGATE_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Certificates (PEM) trusted for a `rediss://` Redis instead of the system's store.
    #[arg(long, env = "TOLLGATE_REDIS_CA", requires = "redis")]
    redis_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) shown to a `rediss://` Redis (needs --redis-key).
    #[arg(long, env = "TOLLGATE_REDIS_CERT", requires_all = ["redis", "redis_key"])]
    redis_cert: Option<PathBuf>,
    /// Private key (PEM) of --redis-cert.
    #[arg(long, env = "TOLLGATE_REDIS_KEY", requires = "redis_cert")]
    redis_key: Option<PathBuf>,
    /// Proxy worker threads (default: the number of CPUs).
    #[arg(long, env = "TOLLGATE_THREADS")]
    threads: Option<usize>,
    /// Longest wait for in-flight requests at shutdown, in seconds.
    #[arg(long, env = "TOLLGATE_GRACE_PERIOD", default_value_t = 30)]
    grace_period: u64,
    /// Longest time a client may take to send a request's headers, in seconds (slow-loris
    /// defence); the connection is closed after it.
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT", default_value_t = 10)]
    header_read_timeout: u64,
    /// Longest time an idle keep-alive connection (HTTP/1.1 between requests, HTTP/2 with
    /// no stream open) stays open on the proxy listeners, in seconds.
    #[arg(long, env = "TOLLGATE_KEEPALIVE_TIMEOUT", default_value_t = 60)]
    keepalive_timeout: u64,
    /// Most client connections open at once on the proxy listeners; one accepted past it
    /// is closed at once (default: half the descriptor limit, less a reserve).
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// How often the host names of upstream targets are resolved again, in seconds (every
    /// 5 s, or this when shorter, while a name has no address).
    #[arg(long, env = "TOLLGATE_DNS_REFRESH", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    dns_refresh: u64,
    /// Load balancers (addresses or CIDR networks, comma-separated) whose connections to
    /// the proxy listeners start with a PROXY protocol header (v1 or v2) naming the client;
    /// other peers are served as clients themselves.
    #[arg(long, env = "TOLLGATE_PROXY_PROTOCOL", value_delimiter = ',', value_parser = tollgate_config::validate::parse_network)]
    proxy_protocol: Vec<ipnet::IpNet>,
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The admin service's URL.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    admin: String,
    /// Bearer token.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Certificates (PEM) trusted for an `https://` admin URL besides the public roots
    /// (a private CA, or the admin listener's self-signed certificate).
    #[arg(long, env = "TOLLGATE_ADMIN_CA")]
    admin_ca: Option<PathBuf>,
}

impl ClientArgs {
    fn connect(&self) -> Result<client::Client, String> {
        client::Client::new(&self.admin, self.token.clone(), self.admin_ca.as_deref())
    }
}

/// The admin listener's TLS certificate (`--admin-tls-cert`, `--admin-tls-key`), read and
/// checked, and reported in `gw`'s metrics.
fn admin_tls(
    args: &ServeArgs,
    gw: &tollgate_gateway::Gateway,
) -> Result<Option<std::sync::Arc<tollgate_gateway::listener_cert::ListenerCert>>, String> {
    let (Some(cert), Some(key)) = (&args.admin_tls_cert, &args.admin_tls_key) else {
        return Ok(None);
    };
    let cert = std::sync::Arc::new(tollgate_gateway::listener_cert::ListenerCert::load(
        cert, key,
    )?);
    gw.add_listener_cert("admin", cert.clone());
    Ok(Some(cert))
}

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: `diff` exits 2 for "there are changes".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` print to standard output and exit 0; every other
            // error prints clap's message (with the usage) to standard error.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = init_logging() {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Validate { file } => validate(&file),
        Command::DemoUpstream { listen } => demo::run(&listen),
        Command::ImportOpenapi {
            spec,
            id,
            path,
            upstream,
            api_only,
            validate_requests,
        } => openapi::run(&openapi::Import {
            spec: &spec,
            id: id.as_deref(),
            path: path.as_deref(),
            upstream: upstream.as_deref(),
            api_only,
            validate_requests,
        }),
        Command::Admin(args) => admin_only(args),
        Command::Gateway(args) => dataplane::run(args),
        Command::Diff { file, client } => with_client(&client, |c| client::diff(c, &file)),
        Command::Apply {
            file,
            dry_run,
            client,
        } => with_client(&client, |c| client::apply(c, &file, dry_run)),
        Command::Dump { client } => with_client(&client, client::dump),
        Command::Rollback { revision, client } => {
            with_client(&client, |c| client::rollback(c, revision))
        }
    }
}

/// Run a CI verb with the admin client `args` describe (exit 1 when it cannot be made).
fn with_client(args: &ClientArgs, verb: impl FnOnce(&client::Client) -> ExitCode) -> ExitCode {
    match args.connect() {
        Ok(c) => verb(&c),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The process log on standard error: `RUST_LOG` filters it (default `info`),
/// `TOLLGATE_LOG_FORMAT` shapes it: `text` (the default) or `json` (one JSON object per
/// line, for log pipelines).
fn init_logging() -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = std::env::var("TOLLGATE_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.trim().to_ascii_lowercase().as_str() {
        "" | "text" => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        _ => {
            return Err(format!(
                "TOLLGATE_LOG_FORMAT: `{format}` is not a log format: `text` or `json`"
            ))
        }
    }
    Ok(())
}

/// Read, validate and compile a policy file; every problem is returned as one line each.
fn load(file: &Path) -> Result<tollgate_config::CompiledConfig, Vec<String>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![format!("{}: cannot read: {e}", file.display())])?;
    let text = tollgate_config::substitute_env(&text)
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let compiled = tollgate_config::parse_and_compile(&text)
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    // Policies this build cannot run are refused here too, so `validate` says what `serve`
    // would refuse.
    tollgate_gateway::snapshot::build_chains(&compiled)
        .map_err(|ps| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    Ok(compiled)
}

fn validate(file: &Path) -> ExitCode {
    match load(file) {
        Ok(c) => {
            println!(
                "{}: valid ({} APIs, {} products)",
                file.display(),
                c.apis.len(),
                c.products.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} problem(s)", file.display(), errors.len());
            for e in errors {
                eprintln!("  {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let state = match control::open(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let gw = state.gateway.clone();
    let on_reload: Option<server::Hook> = args.config.clone().map(|file| {
        let state = state.clone();
        Box::new(move || {
            if let Err(e) = control::apply_file(&state, &file) {
                tracing::error!("reload refused, the live config keeps serving:\n{e}");
            }
        }) as server::Hook
    });
    // Quota counters go to the store at most every second, and once more at shutdown (after
    // the in-flight requests finished).
    let flush_state = state.clone();
    let counters = server::task_service(
        "tollgate counters",
        Box::new(move |mut shutdown| {
            let state = flush_state.clone();
            Box::pin(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tick.tick() => {
                            let state = state.clone();
                            let _ = tokio::task::spawn_blocking(move || control::flush_counters(&state)).await;
                        }
                    }
                }
            })
        }),
    );
    let shutdown_state = state.clone();
    let mut on_shutdown: Vec<server::Hook> =
        vec![Box::new(move || control::flush_counters(&shutdown_state))];
    // Analytics (rollups, metrics, access log) and traces; flushed at shutdown.
    match telemetry::start(&gw, &state.store, &args.telemetry) {
        Ok(hooks) => on_shutdown.extend(hooks),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    }
    let admin_addr = args.admin_listen.clone();
    let head_timeout = Duration::from_secs(args.header_read_timeout.max(1));
    let admin_tls = match admin_tls(&args, &gw) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let admin = server::task_service(
        "tollgate admin",
        Box::new(move |mut shutdown| {
            let addr = admin_addr.clone();
            let router = tollgate_admin_api::router(state.clone());
            let tls = admin_tls.clone();
            Box::pin(async move {
                let listener = match tokio::net::TcpListener::bind(&addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("cannot listen on the admin address {addr}: {e}");
                        std::process::exit(1);
                    }
                };
                tracing::info!(%addr, tls = tls.is_some(), "admin API listening");
                let stop = async move {
                    let _ = shutdown.changed().await;
                };
                if let Err(e) =
                    tollgate_admin_api::serve(listener, router, head_timeout, tls, stop).await
                {
                    tracing::error!("admin API stopped: {e}");
                }
            })
        }),
    );
    let tls = match (&args.tls_listen, &args.tls_cert, &args.tls_key) {
        (Some(addr), Some(cert), Some(key)) => Some((
            addr.clone(),
            cert.display().to_string(),
            key.display().to_string(),
        )),
        _ => None,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = ServeOptions {
        listen: args.listen,
        tls,
        tls_client_ca: args.tls_client_ca.map(|p| p.display().to_string()),
        tls_client_crl: args.tls_client_crl.map(|p| p.display().to_string()),
        threads,
        grace_period: Duration::from_secs(args.grace_period),
        header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
        keepalive_timeout: Duration::from_secs(args.keepalive_timeout),
        max_connections: args.max_connections,
        dns_refresh: Duration::from_secs(args.dns_refresh),
        proxy_protocol: args.proxy_protocol,
        on_reload,
        on_shutdown,
        extra_services: vec![admin, counters],
    };
    match server::run(gw, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `tollgate admin`: the admin API and the store, no proxy.
fn admin_only(args: ServeArgs) -> ExitCode {
    // Up to 1024 admin connections, the store and the data planes' channels.
    let nofile = server::raise_descriptor_limit();
    tracing::info!(nofile, "descriptor limit");
    let state = match control::open(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let tls = match admin_tls(&args, &state.gateway) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.admin_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "cannot listen on the admin address {}: {e}",
                    args.admin_listen
                );
                return ExitCode::from(1);
            }
        };
        tracing::info!(addr = %args.admin_listen, "admin API listening (control plane only)");
        // SIGHUP re-reads --config, as `serve` does (and the TLS certificate, which its
        // own watch handles); it no longer stops the process.
        let reload_state = state.clone();
        let config = args.config.clone();
        let stop = async move {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(mut term), Ok(mut int), Ok(mut hup)) => loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                        _ = hup.recv() => {
                            if let Some(file) = &config {
                                let (state, file) = (reload_state.clone(), file.clone());
                                let applied = tokio::task::spawn_blocking(move || {
                                    control::apply_file(&state, &file)
                                })
                                .await;
                                if let Ok(Err(e)) = applied {
                                    tracing::error!(
                                        "reload refused, the live config keeps serving:\n{e}"
                                    );
                                }
                            }
                        }
                    }
                },
                _ => std::future::pending::<()>().await,
            }
        };
        let head_timeout = Duration::from_secs(args.header_read_timeout.max(1));
        let router = tollgate_admin_api::router(state);
        match tollgate_admin_api::serve(listener, router, head_timeout, tls, stop).await {
            Ok(()) => {
                tracing::info!("shut down cleanly");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("admin API stopped: {e}");
                ExitCode::from(1)
            }
        }
    })
}
