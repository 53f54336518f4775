//! `nines chaos`: placeholder until its module lands; it refuses to run.

/// Arguments of `nines chaos`.
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {}

/// Refuses: the command is not built yet.
pub fn run(_args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::bail!("nines chaos is not available in this build")
}
