//! `nines snapshot save FILE` (download a member's snapshot, as `etcdctl
//! snapshot save`) and `nines snapshot restore FILE` (prepare the data dir of
//! a member of a new cluster from it, as `etcdctl snapshot restore`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

/// `nines snapshot ...`
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    op: SnapshotOp,
}

#[derive(Subcommand, Debug)]
enum SnapshotOp {
    /// Download the snapshot of the first endpoint's member into FILE.
    Save {
        /// Where to write it (written to FILE.part, then renamed).
        file: PathBuf,
    },
    /// Prepare a new member's data dir from a snapshot file.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The member's name.
        #[arg(long)]
        name: String,
        /// The new member's data dir (must not exist yet).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new cluster: name=peer-url,...
        #[arg(long)]
        initial_cluster: String,
    },
}

/// Runs `nines snapshot`.
pub fn run(args: SnapshotArgs, endpoints: &[String]) -> anyhow::Result<()> {
    match args.op {
        SnapshotOp::Save { file } => save(&file, endpoints),
        SnapshotOp::Restore {
            file,
            name,
            data_dir,
            initial_cluster,
        } => {
            let mut members = Vec::new();
            for part in initial_cluster.split(',').filter(|p| !p.is_empty()) {
                let (n, url) = part
                    .split_once('=')
                    .with_context(|| format!("--initial-cluster entry {part:?} is not NAME=URL"))?;
                members.push((n.to_string(), url.to_string()));
            }
            if !members.iter().any(|(n, _)| n == &name) {
                bail!("--initial-cluster has no member named {name:?}");
            }
            if data_dir.exists() {
                bail!(
                    "data dir {} already exists; restore into a new directory",
                    data_dir.display()
                );
            }
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let id = nines_raft::membership::restore_data_dir(&bytes, &name, &members, &data_dir)
                .with_context(|| format!("restoring {}", file.display()))?;
            println!(
                "restored {} into {} as member {name} ({id:x})",
                file.display(),
                data_dir.display()
            );
            Ok(())
        }
    }
}

fn save(file: &PathBuf, endpoints: &[String]) -> anyhow::Result<()> {
    let first = endpoints.first().context("no --endpoints given")?.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut c = crate::connect(&[first]).await?;
        let mut stream = c.snapshot().await?;
        let part = file.with_extension("part");
        let mut out = std::fs::File::create(&part)
            .with_context(|| format!("cannot create {}", part.display()))?;
        let mut total = 0u64;
        while let Some(msg) = stream.message().await? {
            out.write_all(msg.blob())?;
            total += msg.blob().len() as u64;
            if msg.remaining_bytes() == 0 {
                break;
            }
        }
        out.sync_all()?;
        drop(out);
        // Verify before publishing: a damaged download never takes FILE's name.
        let bytes = std::fs::read(&part)?;
        if let Err(e) = nines_raft::state_machine::read_exported_snapshot(&bytes) {
            let _ = std::fs::remove_file(&part);
            bail!("the downloaded snapshot does not verify: {e}");
        }
        std::fs::rename(&part, file)?;
        println!("Snapshot saved at {} ({total} bytes)", file.display());
        Ok(())
    })
}
