//! `nines gateway` and `nines demo-backend`: thin wiring over nines-gateway.
//! Each builds its own tokio runtime (worker threads from the gateway config)
//! and runs until SIGINT/SIGTERM; the gateway reloads on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `nines gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Gateway config file (TOML; see DESIGN.md "Gateway config").
    #[arg(long)]
    pub config: PathBuf,
    /// Name this gateway reports under (`/nines/gateways/NAME`, request
    /// outcomes per service); default: the host name and the port of the
    /// admin listener (or of the first listener).
    #[arg(long)]
    pub name: Option<String>,
    /// Do not report status and request outcomes to the cluster at
    /// `--endpoints`.
    #[arg(long)]
    pub no_report: bool,
}

/// Arguments of `nines demo-backend`.
#[derive(clap::Args, Debug)]
pub struct DemoBackendArgs {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long)]
    pub port: u16,
    /// Name the backend answers with.
    #[arg(long, default_value = "demo")]
    pub name: String,
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Another command may already have installed a subscriber; that one is kept.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the gateway until SIGINT/SIGTERM. Clusters with `service = "NAME"`
/// follow the registry of the cluster at `endpoints`, to which the gateway
/// also reports its status and request outcomes (unless `--no-report`).
pub fn run_gateway(args: GatewayArgs, endpoints: &[String]) -> anyhow::Result<()> {
    init_logging();
    let config = nines_gateway::Config::load(&args.config)
        .with_context(|| format!("gateway {}", args.config.display()))?;
    let follows_registry = config.clusters.iter().any(|c| c.service.is_some());
    if !follows_registry && args.no_report {
        return nines_gateway::run_blocking(&args.config)
            .with_context(|| format!("gateway {}", args.config.display()));
    }
    run_with_store(config, &args, endpoints, follows_registry)
}

/// The gateway with the cluster at `endpoints`: one runtime per worker as
/// `nines_gateway::run_blocking`, plus on worker 0 a mirror of the registry
/// (when a cluster follows a service) and the reporter.
fn run_with_store(
    config: nines_gateway::Config,
    args: &GatewayArgs,
    endpoints: &[String],
    follows_registry: bool,
) -> anyhow::Result<()> {
    let path = args.config.as_path();
    let threads = config
        .gateway
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build runtime")?;
    let workers = nines_gateway::worker::Workers::start(runtime.handle().clone(), threads)
        .context("start gateway workers")?;
    runtime.block_on(async {
        let client = crate::connect(endpoints).await?;
        let registry = nines_registry::Registry::new(client);
        // The mirror lives as long as the gateway: dropping it ends its watch,
        // and the resolver would keep the last view forever.
        let mirror = follows_registry.then(|| nines_registry::Mirror::spawn(registry.clone()));
        let mut resolver: Option<std::sync::Arc<dyn nines_gateway::source::ServiceResolver>> = None;
        if let Some(mirror) = &mirror {
            if !mirror
                .wait_revision(0, std::time::Duration::from_secs(10))
                .await
            {
                tracing::warn!(
                    "registry not reachable yet; services start empty and fill in when it is"
                );
            }
            resolver = Some(std::sync::Arc::new(nines_registry::RegistryResolver::new(
                mirror.subscribe(),
            )));
        }
        let gateway = nines_gateway::Gateway::start_with_workers(
            config.clone(),
            Some(path.to_owned()),
            resolver,
            workers,
        )
        .await
        .with_context(|| format!("gateway {}", path.display()))?;
        let reporter = if args.no_report {
            None
        } else {
            let name = match &args.name {
                Some(name) => name.clone(),
                None => default_name(&gateway, &config).await,
            };
            tracing::info!(name, "reporting gateway status and request outcomes");
            Some(nines_registry::gateway_report::spawn(
                registry,
                gateway.clone(),
                &name,
                &config,
            ))
        };
        let served = gateway.run_until_signal().await.context("gateway");
        if let Some(reporter) = reporter {
            reporter.stop().await;
        }
        served
    })
}

/// The host name and the port of the admin listener (or of the first
/// listener): unique per machine, readable on the dashboard.
async fn default_name(gateway: &nines_gateway::Gateway, config: &nines_gateway::Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gateway".to_owned());
    let mut port = gateway.admin_addr().map(|a| a.port());
    if port.is_none() {
        if let Some(first) = config.listeners.first() {
            port = gateway
                .listener_addr(first.name.get_ref())
                .await
                .map(|a| a.port());
        }
    }
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// Runs a demo backend until the process is stopped.
pub fn run_demo_backend(args: DemoBackendArgs) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("build runtime")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    runtime.block_on(async {
        let listener = nines_gateway::server::bind(addr).with_context(|| format!("bind {addr}"))?;
        println!("listening {}", listener.local_addr()?);
        nines_gateway::demo::DemoBackend::new(&args.name)
            .serve(listener)
            .await;
        anyhow::Ok(())
    })
}
