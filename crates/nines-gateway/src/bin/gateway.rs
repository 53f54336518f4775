//! `nines-gateway --config FILE`: the gateway alone, for tests and benchmarks
//! that must not depend on the rest of the workspace building. It allocates
//! with mimalloc, as the `nines` binary does, so it measures what
//! `nines gateway` runs.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(path)) => std::path::PathBuf::from(path),
        _ => return Err("usage: nines-gateway --config FILE".into()),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    Ok(nines_gateway::run_blocking(&path)?)
}
