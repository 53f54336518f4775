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
/// follow the registry of the cluster at `endpoints`.
pub fn run_gateway(args: GatewayArgs, endpoints: &[String]) -> anyhow::Result<()> {
    init_logging();
    let config = nines_gateway::Config::load(&args.config)
        .with_context(|| format!("gateway {}", args.config.display()))?;
    if config.clusters.iter().all(|c| c.service.is_none()) {
        return nines_gateway::run_blocking(&args.config)
            .with_context(|| format!("gateway {}", args.config.display()));
    }
    run_following_registry(config, &args.config, endpoints)
}

/// The gateway with a registry resolver: one runtime per worker as
/// `nines_gateway::run_blocking`, plus a mirror of the registry on worker 0.
fn run_following_registry(
    config: nines_gateway::Config,
    path: &std::path::Path,
    endpoints: &[String],
) -> anyhow::Result<()> {
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
        let mirror = nines_registry::Mirror::spawn(nines_registry::Registry::new(client));
        if !mirror
            .wait_revision(0, std::time::Duration::from_secs(10))
            .await
        {
            tracing::warn!(
                "registry not reachable yet; services start empty and fill in when it is"
            );
        }
        let resolver =
            std::sync::Arc::new(nines_registry::RegistryResolver::new(mirror.subscribe()));
        let gateway = nines_gateway::Gateway::start_with_workers(
            config,
            Some(path.to_owned()),
            Some(resolver),
            workers,
        )
        .await
        .with_context(|| format!("gateway {}", path.display()))?;
        gateway.run_until_signal().await.context("gateway")
    })
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
