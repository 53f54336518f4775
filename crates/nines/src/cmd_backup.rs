//! `nines backup create/list/verify/restore/prune`: the command line over
//! `nines-backup`. Taking a backup talks to the cluster through the etcd API;
//! restore rebuilds the store from a chain and prepares a new member's data
//! dir from it the way `nines snapshot restore` does (a new cluster, its id
//! derived from `--initial-cluster`). Only wiring and printing live here.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use nines_backup::{BackupKind, LocalRepository};

/// `nines backup ...`
#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(subcommand)]
    op: BackupOp,
}

#[derive(Subcommand, Debug)]
enum BackupOp {
    /// Take a backup of the cluster at --endpoints; prints the new id on the last line.
    Create {
        /// full (every key), diff (changes since the last full) or incr
        /// (changes since the last backup of any kind).
        #[arg(long, default_value = "full")]
        kind: BackupKind,
        /// The repository directory (created if absent).
        #[arg(long)]
        repo: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// List the backups: chain, kind, revisions, size, age.
    List {
        /// The repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Output format: simple or json.
        #[arg(short = 'w', long = "write-out", default_value = "simple")]
        write_out: String,
    },
    /// Check every checksum and chain link; exits non-zero on any fault.
    Verify {
        /// The repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Verify this backup and its chain only.
        id: Option<String>,
    },
    /// Prepare a new member's data dir from a backup and its chain.
    Restore {
        /// The repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// The backup to restore.
        #[arg(long)]
        backup: String,
        /// The new member's data dir (absent or empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// The member's name.
        #[arg(long)]
        name: String,
        /// The new cluster: name=peer-url,...
        #[arg(long)]
        initial_cluster: String,
        /// This member's peer URL (must match its --initial-cluster entry).
        #[arg(long)]
        initial_advertise_peer_urls: Option<String>,
        /// Restore to this revision of the source, inside the backup's chain.
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Remove old backups by retention (whole full chains).
    Prune {
        /// The repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Keep the newest N full chains.
        #[arg(long)]
        keep_full: Option<usize>,
        /// Remove chains whose newest backup is older than this (e.g. 7d, 12h, 30m).
        #[arg(long)]
        older_than: Option<String>,
    },
}

/// Runs `nines backup`.
pub fn run(args: BackupArgs, endpoints: &[String]) -> anyhow::Result<()> {
    match args.op {
        BackupOp::Create {
            kind,
            repo,
            timeout_secs,
        } => create(kind, &repo, Duration::from_secs(timeout_secs), endpoints),
        BackupOp::List { repo, write_out } => list(&repo, &write_out),
        BackupOp::Verify { repo, id } => verify(&repo, id.as_deref()),
        BackupOp::Restore {
            repo,
            backup,
            data_dir,
            name,
            initial_cluster,
            initial_advertise_peer_urls,
            to_revision,
        } => restore(
            &repo,
            &backup,
            &data_dir,
            &name,
            &initial_cluster,
            initial_advertise_peer_urls.as_deref(),
            to_revision,
        ),
        BackupOp::Prune {
            repo,
            keep_full,
            older_than,
        } => prune(&repo, keep_full, older_than.as_deref()),
    }
}

fn create(
    kind: BackupKind,
    repo_dir: &Path,
    timeout: Duration,
    endpoints: &[String],
) -> anyhow::Result<()> {
    let repo = LocalRepository::open(repo_dir, true)?;
    let _lock = repo.lock()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let manifest = rt.block_on(async {
        let mut client = crate::connect(endpoints).await?;
        let tty = std::io::stderr().is_terminal();
        let mut progress = |p: nines_backup::Progress| {
            if tty {
                if p.revisions_total > 0 {
                    eprint!(
                        "\r{} events, revision {}/{}   ",
                        p.records, p.revisions_done, p.revisions_total
                    );
                } else {
                    eprint!("\r{} keys   ", p.records);
                }
            }
        };
        let opts = nines_backup::CreateOptions { kind, timeout };
        let started = std::time::Instant::now();
        let at_ms = unix_now_ms();
        let taken = nines_backup::create_backup(&mut client, &repo, &opts, &mut progress).await;
        if tty {
            eprintln!();
        }
        let last_run = nines_backup::status::LastRun {
            at_ms,
            ok: taken.is_ok(),
            error: taken.as_ref().err().map(ToString::to_string),
            duration_ms: started.elapsed().as_millis() as u64,
            kind: nines_backup::status::kind_name(kind).to_owned(),
        };
        if let Err(e) = publish_status(&mut client, repo_dir, &repo, last_run).await {
            eprintln!("warning: the backup status was not published to the cluster: {e:#}");
        }
        anyhow::Ok(taken?)
    })?;
    eprintln!(
        "{} backup at revision {} ({} {}, {} leases, {} bytes)",
        manifest.kind,
        manifest.end_revision,
        manifest.key_count,
        if manifest.kind == BackupKind::Full {
            "keys"
        } else {
            "events"
        },
        manifest.lease_count,
        manifest.bytes()
    );
    println!("{}", manifest.id);
    Ok(())
}

/// Writes the status of the repository at `repo_dir` (its sets and
/// `last_run`) into the cluster under `/nines/backups/`, for the dashboard
/// and `GET /v1/backups`; bounded to a few seconds. The caller only warns
/// on failure: a backup never fails for its report.
pub(crate) async fn publish_status(
    client: &mut etcd_client::Client,
    repo_dir: &Path,
    repo: &LocalRepository,
    last_run: nines_backup::status::LastRun,
) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(repo_dir).unwrap_or_else(|_| repo_dir.to_owned());
    let listed = repo.clone();
    let sets = tokio::task::spawn_blocking(move || nines_backup::catalog::manifests(&listed))
        .await
        .context("listing the repository")?
        .context("listing the repository")?;
    let status = nines_backup::status::RepositoryStatus::new(&path, &sets, last_run);
    tokio::time::timeout(Duration::from_secs(5), status.publish(client))
        .await
        .context("the cluster did not answer in time")??;
    Ok(())
}

fn list(repo_dir: &Path, write_out: &str) -> anyhow::Result<()> {
    let repo = LocalRepository::open(repo_dir, false)?;
    let mut sets = nines_backup::list(&repo)?;
    // Chain order: by revision, unreadable sets last.
    sets.sort_by_key(|(id, m)| {
        (
            m.as_ref().map(|m| m.end_revision).unwrap_or(i64::MAX),
            id.clone(),
        )
    });
    let now = unix_now();
    match write_out {
        "json" => {
            let rows: Vec<serde_json::Value> = sets
                .iter()
                .map(|(id, m)| match m {
                    Ok(m) => serde_json::to_value(m).unwrap_or_default(),
                    Err(e) => serde_json::json!({ "id": id, "error": e.to_string() }),
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        "simple" => {
            println!(
                "{:<36} {:<5} {:<36} {:>21} {:>9} {:>7} {:>12} {:>8}",
                "ID", "KIND", "PARENT", "REVISIONS", "KEYS", "LEASES", "BYTES", "AGE"
            );
            for (id, m) in &sets {
                match m {
                    Ok(m) => println!(
                        "{:<36} {:<5} {:<36} {:>21} {:>9} {:>7} {:>12} {:>8}",
                        m.id,
                        m.kind.to_string(),
                        m.parent.as_deref().unwrap_or("-"),
                        format!("{}..={}", m.start_revision, m.end_revision),
                        m.key_count,
                        m.lease_count,
                        m.bytes(),
                        age(now.saturating_sub(m.finished_unix_secs)),
                    ),
                    Err(e) => println!("{id:<36} unreadable: {e}"),
                }
            }
        }
        other => bail!("unknown --write-out {other:?}: use simple or json"),
    }
    Ok(())
}

fn verify(repo_dir: &Path, id: Option<&str>) -> anyhow::Result<()> {
    let repo = LocalRepository::open(repo_dir, false)?;
    let report = nines_backup::verify(&repo, id)?;
    for good in &report.good {
        println!("ok {good}");
    }
    for fault in &report.faults {
        eprintln!("FAULT: {fault}");
    }
    if !report.faults.is_empty() {
        bail!(
            "{} of {} backups failed verification",
            report.faults.len(),
            report.faults.len() + report.good.len()
        );
    }
    println!("{} backups verified", report.good.len());
    Ok(())
}

fn restore(
    repo_dir: &Path,
    backup: &str,
    data_dir: &Path,
    name: &str,
    initial_cluster: &str,
    advertise: Option<&str>,
    to_revision: Option<i64>,
) -> anyhow::Result<()> {
    let mut members = Vec::new();
    for part in initial_cluster.split(',').filter(|p| !p.is_empty()) {
        let (n, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {part:?} is not NAME=URL"))?;
        members.push((n.to_string(), url.to_string()));
    }
    let Some((_, own_url)) = members.iter().find(|(n, _)| n == name) else {
        bail!("--initial-cluster has no member named {name:?}");
    };
    if let Some(adv) = advertise {
        if adv != own_url {
            bail!("--initial-advertise-peer-urls {adv} differs from {name}'s --initial-cluster URL {own_url}");
        }
    }
    if std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "data dir {} is not empty; restore into a new directory",
            data_dir.display()
        );
    }
    if data_dir.exists() && !data_dir.is_dir() {
        bail!("data dir {} is not a directory", data_dir.display());
    }
    let repo = LocalRepository::open(repo_dir, false)?;
    let started = std::time::Instant::now();
    let (store, summary) = nines_backup::restore_store(&repo, backup, to_revision)?;
    let rebuilt = started.elapsed();
    let snapshot = export(store)?;
    let created = !data_dir.exists();
    let result = nines_raft::membership::restore_data_dir(&snapshot, name, &members, data_dir);
    let id = match result {
        Ok(id) => id,
        Err(e) => {
            // Nothing half restored: take back what this command created.
            if created {
                let _ = std::fs::remove_dir_all(data_dir);
            }
            return Err(e).with_context(|| format!("writing {}", data_dir.display()));
        }
    };
    eprintln!(
        "restored {} keys and {} leases of cluster {:x} at revision {} (backups {}); \
         store rebuilt in {:.2} s, data dir written in {:.2} s",
        summary.keys,
        summary.leases,
        summary.source_cluster_id,
        summary.revision,
        summary.sets.join(" <- "),
        rebuilt.as_secs_f64(),
        (started.elapsed() - rebuilt).as_secs_f64()
    );
    if summary.leases_ttl_unknown > 0 {
        eprintln!(
            "warning: {} leases had no recorded TTL and were given {} s",
            summary.leases_ttl_unknown,
            nines_backup::LEASE_TTL_UNKNOWN_SECS
        );
    }
    println!(
        "restored backup {backup} into {} as member {name} ({id:x})",
        data_dir.display()
    );
    Ok(())
}

/// The store as an exported snapshot file (what `nines snapshot save`
/// writes), the input of `restore_data_dir`. The export is built by an
/// empty state machine in a scratch dir that is removed afterwards, so the
/// file format stays nines-raft's alone.
fn export(store: nines_store::Store) -> anyhow::Result<Vec<u8>> {
    let scratch = std::env::temp_dir().join(format!(
        "nines-backup-restore-{}-{}",
        std::process::id(),
        unix_now()
    ));
    let result = (|| {
        let sm = nines_raft::state_machine::StateMachine::open(&scratch)?;
        *sm.shared.store.write().expect("store lock poisoned") = store;
        anyhow::Ok(sm.shared.export_snapshot()?)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result.context("encoding the restored store")
}

fn prune(
    repo_dir: &Path,
    keep_full: Option<usize>,
    older_than: Option<&str>,
) -> anyhow::Result<()> {
    if keep_full.is_none() && older_than.is_none() {
        bail!("give --keep-full N and/or --older-than AGE");
    }
    if keep_full == Some(0) {
        bail!("--keep-full must be at least 1");
    }
    let older_than_secs = older_than.map(parse_age).transpose()?;
    let repo = LocalRepository::open(repo_dir, false)?;
    let _lock = repo.lock()?;
    let report = nines_backup::prune(
        &repo,
        &nines_backup::PruneOptions {
            keep_full,
            older_than_secs,
            now_unix_secs: unix_now(),
        },
    )?;
    for id in &report.removed {
        println!("removed {id}");
    }
    println!(
        "{} backups removed, {} kept",
        report.removed.len(),
        report.kept.len()
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

/// `30s`, `15m`, `12h` or `7d` in seconds.
fn parse_age(s: &str) -> anyhow::Result<u64> {
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .with_context(|| format!("age {s:?} is not a number followed by s, m, h or d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("age {s:?} must end in s, m, h or d"),
    };
    Ok(n * mult)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
