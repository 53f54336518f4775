//! `nines gateway` and `nines demo-backend`: placeholder until the gateway lands.

/// Arguments of `nines gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {}

/// Arguments of `nines demo-backend`.
#[derive(clap::Args, Debug)]
pub struct DemoBackendArgs {}

/// Refuses: the gateway is not built yet.
pub fn run_gateway(_args: GatewayArgs) -> anyhow::Result<()> {
    anyhow::bail!("nines gateway is not available in this build")
}

/// Refuses: the demo backend is not built yet.
pub fn run_demo_backend(_args: DemoBackendArgs) -> anyhow::Result<()> {
    anyhow::bail!("nines demo-backend is not available in this build")
}
