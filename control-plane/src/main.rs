//! Tollgate control plane: xDS (ADS + ECDS) for Envoy, the admin API and the built-in demo
//! model, and, on an internal listener, the data plane's credential endpoint.

mod admin;
mod alerts;
mod authority;
mod authz;
mod aws;
mod cli;
mod clock;
mod config_file;
mod demo;
mod destination;
mod egress;
mod grpc_admin;
mod internal;
mod kek;
mod keytable;
mod metering;
mod model;
mod publisher;
mod service;
mod store;
mod upstream;
mod xds;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config_file::ConfigFile;
use crate::publisher::Publisher;
use crate::service::Service;
use crate::store::Store;
use crate::upstream::UpstreamUrl;
use crate::xds::snapshot::XdsEnv;

#[derive(Parser)]
#[command(name = "tollgate", about = "Tollgate AI gateway control plane")]
struct Cli {
    #[command(flatten)]
    conn: cli::Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(ServeArgs),
    /// Call the admin API (key in TOLLGATE_ADMIN_KEY): keys, teams, users, access-groups,
    /// credentials, models, audit, spend, api.
    #[command(flatten)]
    Admin(cli::Command),
}


#[derive(clap::Args)]
struct ServeArgs {
    /// Models, deployments and credential references (YAML).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Folder for the SQLite database (when --database-url is not given).
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = ".tollgate")]
    data_dir: PathBuf,
    /// sqlite://... or postgres://...
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    database_url: Option<String>,
    #[arg(long, env = "TOLLGATE_XDS_ADDR", default_value = "127.0.0.1:18000")]
    xds_addr: SocketAddr,
    /// The admin API and the demo model.
    #[arg(long, env = "TOLLGATE_HTTP_ADDR", default_value = "127.0.0.1:8081")]
    http_addr: SocketAddr,
    /// The admin API over gRPC (`tollgate.admin.v1.AdminService`, with server reflection).
    #[arg(long, env = "TOLLGATE_GRPC_ADDR", default_value = "127.0.0.1:8083")]
    grpc_addr: SocketAddr,
    /// The data plane's credential endpoint (`GET /internal/v1/credentials`, data-plane token).
    #[arg(long, env = "TOLLGATE_INTERNAL_ADDR", default_value = "127.0.0.1:8082")]
    internal_addr: SocketAddr,
    /// Address Envoy's client listener binds to.
    #[arg(long, env = "TOLLGATE_GATEWAY_ADDR", default_value = "0.0.0.0")]
    gateway_addr: String,
    #[arg(long, env = "TOLLGATE_GATEWAY_PORT", default_value_t = 8080)]
    gateway_port: u16,
    /// Envoy's admin port (the bootstrap's `admin:` address): refused as a provider destination,
    /// like the gateway's and the control plane's own ports.
    #[arg(long, env = "TOLLGATE_ENVOY_ADMIN_PORT", default_value_t = 9901)]
    envoy_admin_port: u16,
    /// Folder with tollgate_gateway_filter.wasm and tollgate_provider_filter.wasm, as Envoy sees it.
    #[arg(long, env = "TOLLGATE_WASM_DIR", default_value = "target/wasm32-wasip1/release")]
    wasm_dir: PathBuf,
    /// CA bundle Envoy uses to verify providers.
    #[arg(long, env = "TOLLGATE_UPSTREAM_CA_FILE", default_value = "/etc/ssl/certs/ca-certificates.crt")]
    upstream_ca_file: String,
    /// Base URL at which Envoy reaches the demo model (default: this control plane's HTTP address).
    #[arg(long, env = "TOLLGATE_DEMO_BASE_URL")]
    demo_base_url: Option<String>,
    /// Certificate chain (PEM) for TLS on the client listener, as a path Envoy can read. With
    /// --tls-key-file, the listener accepts TLS and plain HTTP on the same port.
    #[arg(long, env = "TOLLGATE_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert-file. Only its path travels to Envoy.
    #[arg(long, env = "TOLLGATE_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Raw usage records older than this many days are deleted (in batches, every 10 minutes);
    /// the daily spend aggregates are kept. 0 keeps them for ever.
    #[arg(long, env = "TOLLGATE_USAGE_RETENTION_DAYS", default_value_t = 90)]
    usage_retention_days: u32,
    /// For tests of VM failure handling only: a request with `x-tollgate-fault: trap-gateway`
    /// (or `trap-provider`) makes that filter's VM trap. Never set in production.
    #[arg(long, env = "TOLLGATE_TEST_FAULT_INJECTION", hide = true)]
    test_fault_injection: bool,
}

/// aws-config and the AWS SDK log, at info and below, which credentials they loaded (the access
/// key id among them): only their warnings are shown unless `TOLLGATE_LOG` asks for more.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,aws_config=warn,aws_sdk_sts=warn,aws_smithy_runtime=warn,aws_smithy_http_client=warn,aws_runtime=warn";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Admin(cmd) => std::process::exit(runtime.block_on(cli::run(cli.conn, cmd))),
    }
}

fn absolute(p: &std::path::Path) -> anyhow::Result<String> {
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) };
    Ok(abs.to_string_lossy().into_owned())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let token = std::env::var(tollgate_contract::contract::DATA_PLANE_TOKEN_ENV)
        .ok()
        .filter(|t| t.len() >= 16)
        .with_context(|| {
            format!(
                "{} must be set (16+ characters): Envoy presents it to fetch provider credentials",
                tollgate_contract::contract::DATA_PLANE_TOKEN_ENV
            )
        })?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let database_url = match &args.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}?mode=rwc", absolute(&args.data_dir.join("tollgate.db"))?),
    };
    let keyring = kek::init().map_err(|e| anyhow::anyhow!(e))?;
    match &keyring.current {
        Some(k) => tracing::info!(kek_id = k.id(), previous = keyring.previous.as_ref().map(|p| p.id()), "key-encryption key loaded"),
        None => tracing::info!("no {} set: provider secrets can be referenced by environment variable, not stored through the admin API", kek::KEK_ENV),
    }
    let store = Store::connect(&database_url).await?;
    let own_ports: Vec<u16> = [args.xds_addr.port(), args.http_addr.port(), args.internal_addr.port(), args.grpc_addr.port(), args.gateway_port, args.envoy_admin_port]
        .into_iter()
        .filter(|p| *p != 0)
        .collect();
    if let Some(path) = &args.config {
        let cfg = ConfigFile::load(path, &own_ports)?;
        store.replace_config(&cfg.settings, &cfg.credentials, &cfg.models, clock::unix_now()).await?;
        tracing::info!(path = %path.display(), models = cfg.models.len(), "configuration file loaded");
    }

    let xds_listener = TcpListener::bind(args.xds_addr).await.with_context(|| format!("binding xDS on {}", args.xds_addr))?;
    let http_listener = TcpListener::bind(args.http_addr).await.with_context(|| format!("binding HTTP on {}", args.http_addr))?;
    let internal_listener = TcpListener::bind(args.internal_addr)
        .await
        .with_context(|| format!("binding the internal listener on {}", args.internal_addr))?;
    let grpc_listener = TcpListener::bind(args.grpc_addr).await.with_context(|| format!("binding the gRPC admin API on {}", args.grpc_addr))?;
    let xds_local = xds_listener.local_addr()?;
    let http_local = http_listener.local_addr()?;
    let internal_local = internal_listener.local_addr()?;
    let grpc_local = grpc_listener.local_addr()?;
    let demo_host = if http_local.ip().is_unspecified() { "127.0.0.1".to_owned() } else { http_local.ip().to_string() };
    let demo_base_url = args.demo_base_url.clone().unwrap_or_else(|| format!("http://{demo_host}:{}/demo/v1", http_local.port()));
    let env = XdsEnv {
        gateway_addr: args.gateway_addr.clone(),
        gateway_port: args.gateway_port,
        gateway_filter_wasm: absolute(&args.wasm_dir.join("tollgate_gateway_filter.wasm"))?,
        provider_filter_wasm: absolute(&args.wasm_dir.join("tollgate_provider_filter.wasm"))?,
        demo_url: UpstreamUrl::parse(&demo_base_url).with_context(|| "--demo-base-url".to_owned())?,
        upstream_ca_file: args.upstream_ca_file.clone(),
        tls: match (&args.tls_cert_file, &args.tls_key_file) {
            (Some(c), Some(k)) => Some(xds::snapshot::ListenerTls { cert_file: absolute(c)?, key_file: absolute(k)? }),
            _ => None,
        },
        fault_injection: args.test_fault_injection,
        own_ports: [own_ports.as_slice(), &[xds_local.port(), http_local.port(), internal_local.port(), grpc_local.port()]].concat(),
    };
    if args.test_fault_injection {
        tracing::warn!("fault injection is on: requests can make the filters trap (tests only)");
    }
    let aws_credentials = Arc::new(aws::AwsCredentials::default());
    let (publisher, snapshots) = Publisher::new(store.clone(), env, aws_credentials.clone());
    let aws_changes = aws_credentials.changes();
    let service = Service::new(store.clone(), publisher.clone());
    if let Some(secret) = service.ensure_admin_key(std::env::var("TOLLGATE_ADMIN_KEY").ok().filter(|s| !s.is_empty())).await? {
        // Shown once, on first start; only its digest is stored.
        println!("ADMIN_KEY {secret}");
    }
    service.reencrypt_credentials(keyring).await?;
    publisher.refresh().await?;
    // Deployments on an AWS chain credential are served once their first keys are obtained.
    aws::spawn_refresher(store.clone(), aws_credentials);
    publisher.clone().spawn_refresher(Duration::from_secs(2), aws_changes);
    alerts::spawn(service.clone());
    if args.usage_retention_days > 0 {
        crate::metering::spawn_retention(store.clone(), args.usage_retention_days);
    }
    if database_url.starts_with("postgres") {
        crate::store::notify::spawn_listener(database_url.clone(), publisher.clone());
    }

    let ads = AggregatedDiscoveryServiceServer::new(xds::server::AdsServer::new(snapshots, publisher.envoys()));
    let xds_task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads)
            .serve_with_incoming_shutdown(TcpListenerStream::new(xds_listener), shutdown_signal()),
    );
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        closing_tx.send_replace(true);
    });
    let internal_state =
        internal::InternalState { publisher: publisher.clone(), service: service.clone(), data_plane_token: Arc::new(token), closing, authority: authority::Authority::default() };
    let grpc_task = tokio::spawn(grpc_admin::serve(grpc_listener, service.clone(), shutdown_signal()));
    let app = admin::router(admin::AppState { service });
    let http_task = tokio::spawn(async move { axum::serve(http_listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown_signal()).await });
    let internal_app = internal::router(internal_state);
    let internal_task =
        tokio::spawn(async move { axum::serve(internal_listener, internal_app).with_graceful_shutdown(shutdown_signal()).await });
    println!("READY xds={xds_local} http={http_local} internal={internal_local}");
    tracing::info!(xds = %xds_local, http = %http_local, internal = %internal_local, grpc = %grpc_local, "control plane ready");
    let servers = async { tokio::join!(xds_task, http_task, internal_task, grpc_task) };
    // Envoy keeps its ADS stream open for ever, which would hold the xDS server's graceful
    // shutdown: once asked to stop, the servers get a moment to finish what they are answering,
    // then the process ends (Envoy keeps serving on its last configuration and reconnects).
    let deadline = async {
        shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        (x, h, i, g) = servers => {
            x??;
            h??;
            i??;
            g??;
        }
        () = deadline => tracing::info!(grace_seconds = SHUTDOWN_GRACE.as_secs(), "stopping with xDS streams still open"),
    }
    store.close().await;
    Ok(())
}

/// How long the servers may take to finish once the process is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
