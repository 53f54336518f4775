//! nines-gateway: an HTTP and TCP load balancer. It spreads requests over
//! healthy backends, hides a backend's death from clients with health checks,
//! passive ejection and retries, and reloads its config without dropping
//! connections. It knows nothing of Raft: backends come from its config or,
//! later, from the registry through [`source::BackendSource`].

pub mod access_log;
pub mod backend;
pub mod balance;
pub mod body;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod framing;
pub mod gateway;
pub mod hash;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod source;
pub mod worker;

pub use config::{Config, ConfigError};
pub use gateway::{Gateway, GatewayError};

/// Loads `path`, builds a runtime with the configured worker threads and
/// serves until SIGINT/SIGTERM (SIGHUP reloads). For the binaries.
pub fn run_blocking(path: &std::path::Path) -> Result<(), GatewayError> {
    let config = Config::load(path)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.gateway.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|source| GatewayError::Runtime { source })?;
    runtime.block_on(async {
        let gateway = Gateway::start(config, Some(path.to_owned()), None).await?;
        gateway
            .run_until_signal()
            .await
            .map_err(|source| GatewayError::Runtime { source })
    })
}
