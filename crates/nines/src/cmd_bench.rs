//! `nines bench`: placeholder until its module lands; it refuses to run.

/// Arguments of `nines bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Refuses: the command is not built yet.
pub fn run(_args: BenchArgs, _endpoints: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("nines bench is not available in this build")
}
