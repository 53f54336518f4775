//! `nines chaos`: a bounded fault-injection run with a verdict. It starts a
//! fresh local cluster of `nines server` processes (this same executable),
//! or of etcd members with `--target etcd` for comparison, drives clients,
//! injects faults on a seeded schedule, heals, checks, and prints the report;
//! `--report FILE` also writes it as JSON. Exit status: 0 pass, 1 violation,
//! 2 inconclusive (the checker's bound was hit), 130 interrupted. All the
//! work is in `nines_chaos::runner`; this module parses flags and prints.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nines_chaos::cluster::Target;
use nines_chaos::faults::FaultKind;
use nines_chaos::linearizability::CheckLimits;
use nines_chaos::report::{Report, RunVerdict};
use nines_chaos::runner::{self, ChaosConfig, Progress};

/// Arguments of `nines chaos`.
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// Members in the cluster (3 or 5 make sense).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// How long the workload and the fault schedule run (e.g. 60s, 10m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Keys the clients work on.
    #[arg(long, default_value_t = 16)]
    pub keys: usize,
    /// Fault kinds to draw from: kill, restart, leader-kill, pause,
    /// partition, kill-all, disk-fail (comma-separated; `none` for none).
    /// Default: kill, pause, leader-kill, and partition unless the target is etcd.
    #[arg(long, value_delimiter = ',')]
    pub faults: Option<Vec<String>>,
    /// Seed of the schedule; printed at the start so a run can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// What to run: `nines` members, or `etcd` members for comparison.
    #[arg(long, default_value = "nines", value_parser = ["nines", "etcd"])]
    pub target: String,
    /// The etcd executable for `--target etcd`.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_binary: PathBuf,
    /// Instead of the schedule: this many `kill -9` + restart of random
    /// members under a write-heavy load.
    #[arg(long)]
    pub crash_loop: Option<u32>,
    /// A write gap longer than this after any single-member fault is a violation.
    #[arg(long, value_parser = parse_duration)]
    pub max_write_gap: Option<Duration>,
    /// Client request timeout; unanswered requests count as unknown.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub op_timeout: Duration,
    /// How long each fault is held, as LOW-HIGH (e.g. 2s-4s).
    #[arg(long, default_value = "2s-4s")]
    pub hold: String,
    /// Quiet time between faults, as LOW-HIGH.
    #[arg(long, default_value = "1s-3s")]
    pub quiet: String,
    /// Time allowed to the linearizability checker; past it the verdict is
    /// inconclusive.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub check_timeout: Duration,
    /// Directory in which the run's temporary directory is made.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print the text of a report saved with --report, and exit with its
    /// verdict's status; nothing is run.
    #[arg(long, value_name = "FILE")]
    pub show_report: Option<PathBuf>,
    /// Planted bug (test only): members serve reads without ReadIndex.
    #[arg(long)]
    pub unsafe_stale_reads: bool,
    /// Planted bug (test only): members acknowledge before fsync.
    #[arg(long)]
    pub unsafe_lazy_fsync: bool,
    /// Log entries between the members' snapshots (their `--snapshot-count`;
    /// etcd has the same flag). A small value makes snapshots, log purges and
    /// snapshot installs to restarted members part of the run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_count: Option<u64>,
}

/// Runs `nines chaos`; exits the process with the verdict's status.
pub fn run(mut args: ChaosArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.show_report {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        print!("{}", report.to_text());
        return exit_with(report.verdict);
    }
    let report_path = args.report.take();
    let config = config_from(args)?;
    println!("seed: {} (replay with --seed {})", config.seed, config.seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = runner::run(config, &print_progress) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // The run (and with it every member process and its directory) is gone
    // by now, whichever way it ended.
    drop(runtime);
    let Some(result) = outcome else {
        println!("interrupted: every member was killed and the run's directory removed");
        std::process::exit(130);
    };
    let report = result.context("chaos run failed")?;
    print!("{}", report.to_text());
    if let Some(path) = report_path {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    exit_with(report.verdict)
}

/// Status 0 for a pass; exits with 1 (violation) or 2 (inconclusive).
fn exit_with(verdict: RunVerdict) -> anyhow::Result<()> {
    match verdict {
        RunVerdict::Pass => Ok(()),
        RunVerdict::Violation => std::process::exit(1),
        RunVerdict::Inconclusive => std::process::exit(2),
    }
}

fn config_from(args: ChaosArgs) -> anyhow::Result<ChaosConfig> {
    let target = if args.target == "etcd" {
        Target::Etcd {
            binary: args.etcd_binary,
        }
    } else {
        Target::Nines {
            binary: std::env::current_exe().context("locating the nines executable")?,
        }
    };
    let mut config = ChaosConfig::new(target);
    config.nodes = args.nodes;
    config.duration = args.duration;
    config.clients = args.clients;
    config.keys = args.keys;
    if let Some(names) = &args.faults {
        config.faults = names
            .iter()
            .filter(|name| !name.is_empty() && name.as_str() != "none")
            .map(|name| name.parse::<FaultKind>())
            .collect::<Result<_, _>>()?;
    }
    config.seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    config.base_dir = args.work_dir;
    if args.unsafe_stale_reads {
        config.member_flags.push("--unsafe-stale-reads".into());
    }
    if args.unsafe_lazy_fsync {
        config.member_flags.push("--unsafe-lazy-fsync".into());
    }
    if let Some(count) = args.snapshot_count {
        config.member_flags.push("--snapshot-count".into());
        config.member_flags.push(count.to_string());
    }
    config.op_timeout = args.op_timeout;
    config.hold_ms = parse_range_ms(&args.hold).context("--hold")?;
    config.quiet_ms = parse_range_ms(&args.quiet).context("--quiet")?;
    config.crash_loop = args.crash_loop;
    config.write_gap_max = args.max_write_gap;
    config.check_limits = CheckLimits {
        time_max: args.check_timeout,
        ..CheckLimits::default()
    };
    Ok(config)
}

fn print_progress(progress: Progress) {
    match progress {
        Progress::ClusterStarted { dir, members } => {
            println!("cluster: {}", dir.display());
            for (name, pid, endpoint) in members {
                println!("member {name} pid {pid} endpoint {endpoint}");
            }
        }
        Progress::WorkloadStarted => println!("workload started"),
        Progress::Fault(fault) => println!(
            "fault {} {} at {} ms, healed at {} ms, recovered at {} ms{}",
            fault.kind,
            fault.target,
            fault.start_ms,
            fault.end_ms,
            fault.recovered_ms,
            if fault.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", fault.note)
            }
        ),
        Progress::Healing => println!("healing"),
        Progress::FinalReads => println!("final reads"),
        Progress::Checking { operations } => println!("checking {operations} operations"),
    }
}

/// Parses `500ms`, `2s`, `10m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("unknown unit in {text:?} (use ms, s or m)")),
    }
}

/// Parses `LOW-HIGH` durations into milliseconds.
fn parse_range_ms(text: &str) -> anyhow::Result<(u64, u64)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low = parse_duration(low).map_err(anyhow::Error::msg)?.as_millis() as u64;
    let high = parse_duration(high)
        .map_err(anyhow::Error::msg)?
        .as_millis() as u64;
    anyhow::ensure!(low <= high, "{text}: the low end is above the high end");
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_range_ms};
    use std::time::Duration;

    #[test]
    fn durations_and_ranges_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("7h").is_err());
        assert_eq!(parse_range_ms("2s-4s").expect("range"), (2000, 4000));
        assert!(parse_range_ms("4s-2s").is_err());
    }
}
