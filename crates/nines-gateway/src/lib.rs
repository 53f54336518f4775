//! nines-gateway: an HTTP and TCP load balancer. It spreads requests over
//! healthy backends, hides a backend's death from clients with health checks,
//! passive ejection and retries, and reloads its config without dropping
//! connections. It knows nothing of Raft: backends come from its config or,
//! later, from the registry through [`source::BackendSource`].

pub mod access_log;
pub mod backend;
pub mod balance;
pub mod batch;
pub mod body;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod framing;
pub mod gateway;
pub mod hash;
pub mod head;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod signal;
pub mod source;
pub mod stream;
pub mod timer;
pub mod upstream;
pub mod worker;

pub use config::{Config, ConfigError};
pub use gateway::{Gateway, GatewayError};

/// Loads `path`, starts one single-threaded runtime per configured worker and
/// serves until SIGINT/SIGTERM (SIGHUP reloads). For the binaries.
pub fn run_blocking(path: &std::path::Path) -> Result<(), GatewayError> {
    let config = Config::load(path)?;
    let threads = config
        .gateway
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Worker 0 is this thread's runtime; it also runs accept loops, health
    // checks and the admin listener.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| GatewayError::Runtime { source })?;
    let workers = worker::Workers::start(runtime.handle().clone(), threads)
        .map_err(|source| GatewayError::Runtime { source })?;
    runtime.block_on(async {
        let gateway =
            Gateway::start_with_workers(config, Some(path.to_owned()), None, workers).await?;
        gateway
            .run_until_signal()
            .await
            .map_err(|source| GatewayError::Runtime { source })
    })
}
