//! `nines bench kv`: a load generator over etcd's v3 KV API. It drives puts,
//! linearizable or serializable gets, txns or a mix from many concurrent
//! clients spread over several gRPC connections, and prints throughput,
//! latency percentiles and errors by kind. The same binary measures etcd and
//! nines, so a comparison differs only in the server. In `--gaps` mode it
//! records every pause between acknowledged writes (failover measurement),
//! and `--check-acked FILE` keeps each acknowledged write so that `--verify
//! FILE` can later prove none was lost. It talks only to `--endpoints` and
//! touches nothing but the keys under `--prefix`.

mod load;
mod report;
#[cfg(test)]
mod tests;
mod verify;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use clap::{Args, Subcommand, ValueEnum};
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient};
use serde::Serialize;

/// Most concurrent clients one run may start; each is a tokio task.
const CLIENTS_MAX: usize = 100_000;
/// Most gRPC connections one run may open.
const CONNS_MAX: usize = 1_024;
/// Most client runtime threads.
const THREADS_MAX: usize = 256;
/// Largest value accepted: etcd's default request size limit (1.5 MiB).
const VALUE_BYTES_MAX: usize = 1_536 * 1_024;
/// Largest key accepted, far above any sensible benchmark key.
const KEY_BYTES_MAX: usize = 4_096;

/// Arguments of `nines bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to load.
    #[command(subcommand)]
    pub target: BenchTarget,
}

/// The systems `nines bench` can load.
#[derive(Subcommand, Debug)]
pub enum BenchTarget {
    /// Load etcd's v3 KV API (nines or etcd) and report throughput and latency.
    Kv(Box<KvBenchArgs>),
    /// Write throughput while many watchers follow one prefix (fan-out).
    Watch(watch::WatchBenchArgs),
}

/// Arguments of `nines bench kv`.
#[derive(Args, Debug)]
pub struct KvBenchArgs {
    /// Operation to run.
    #[arg(long, value_enum, default_value_t = KvOp::Put)]
    pub op: KvOp,
    /// Concurrent requests in flight (one task each).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections; clients are spread over them round robin.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// How long to run (e.g. 10s, 500ms, 2m); the default is 10s unless --total is given.
    #[arg(long, value_parser = parse_duration, conflicts_with = "total")]
    pub duration: Option<Duration>,
    /// Run exactly this many operations instead of for a duration.
    #[arg(long)]
    pub total: Option<u64>,
    /// Key length in bytes (prefix plus zero-padded key number).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Number of distinct keys; each operation picks one at random.
    #[arg(long, default_value_t = 10_000)]
    pub keyspace: u64,
    /// Target rate in operations per second over all clients (open loop); unlimited if absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Percentage of linearizable gets in `--op mixed`; the rest are puts.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Skip writing every key of the keyspace before a read load.
    #[arg(long)]
    pub no_prepopulate: bool,
    /// Prefix of every key the run touches.
    #[arg(long, default_value = "/bench/")]
    pub prefix: String,
    /// Client runtime worker threads (default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Deadline of each request.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Deadline of each connection attempt.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub connect_timeout: Duration,
    /// Pause of a client after a failed request, so a dead endpoint is not hammered.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub error_backoff: Duration,
    /// Pin connection i to endpoint i mod n instead of balancing each connection over all.
    #[arg(long)]
    pub pin_endpoints: bool,
    /// Failover mode: each write gets a fresh key and every pause between acknowledged writes
    /// longer than --gap-threshold is reported with its wall-clock start and end.
    #[arg(long)]
    pub gaps: bool,
    /// Shortest pause between acknowledged writes reported by --gaps.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub gap_threshold: Duration,
    /// Append every acknowledged write (key and value) to FILE, for --verify (fresh keys per write).
    #[arg(long, value_name = "FILE")]
    pub check_acked: Option<PathBuf>,
    /// Check that every write recorded in FILE by --check-acked is present with its value;
    /// no load is generated and the exit status is non-zero if any is missing.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["check_acked", "gaps", "total", "duration"])]
    pub verify: Option<PathBuf>,
    /// Seed of the key and value choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = OutputFormat::Text)]
    pub write_out: OutputFormat,
}

/// One kind of benchmark operation.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvOp {
    /// Put a random key.
    Put,
    /// Linearizable get of a random key.
    Get,
    /// Serializable get of a random key (served by the member asked).
    GetSerializable,
    /// Txn comparing the key's mod_revision, then putting it (else getting it).
    Txn,
    /// Linearizable gets and puts, --read-percent of them gets.
    Mixed,
}

/// How the report is printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object.
    Json,
}

/// Runs `nines bench` on its own tokio runtime.
pub fn run(args: BenchArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let args = match args.target {
        BenchTarget::Kv(args) => args,
        BenchTarget::Watch(args) => {
            ensure!(!endpoints.is_empty(), "no --endpoints given");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("building the client runtime")?;
            let result = runtime
                .block_on(watch::run(&args, endpoints))
                .and_then(|r| watch::print(&r, args.write_out == "json"));
            runtime.shutdown_timeout(Duration::from_secs(1));
            return result;
        }
    };
    ensure!(!endpoints.is_empty(), "no --endpoints given");
    let threads = match args.threads {
        Some(threads) => threads,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    ensure!(
        (1..=THREADS_MAX).contains(&threads),
        "--threads must be 1..={THREADS_MAX}"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("building the client runtime")?;
    let endpoints = endpoints.to_vec();
    let result = match args.verify.clone() {
        Some(path) => runtime
            .block_on(verify::verify_acked(&args, &endpoints, &path))
            .and_then(|report| verify::print_verify_report(&report, args.write_out)),
        None => runtime
            .block_on(load::run_load(&args, &endpoints, threads))
            .and_then(|report| report::print_report(&report, args.write_out)),
    };
    // Connections' background tasks must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Parses `10s`, `250ms`, `2m`, `500us` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 10s or 200ms"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1e3,
        "us" => number / 1e6,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Checks the flags that clap cannot relate to each other.
fn validate(args: &KvBenchArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=CLIENTS_MAX).contains(&args.clients),
        "--clients must be 1..={CLIENTS_MAX}"
    );
    ensure!(
        (1..=CONNS_MAX).contains(&args.conns),
        "--conns must be 1..={CONNS_MAX}"
    );
    ensure!(
        args.val_size <= VALUE_BYTES_MAX,
        "--val-size is at most {VALUE_BYTES_MAX}"
    );
    ensure!(args.keyspace >= 1, "--keyspace must be at least 1");
    let digits = (args.keyspace - 1).to_string().len();
    ensure!(
        args.key_size <= KEY_BYTES_MAX && args.key_size >= args.prefix.len() + digits,
        "--key-size must hold the prefix {:?} and {digits} digits and be at most {KEY_BYTES_MAX}",
        args.prefix
    );
    if let Some(rate) = args.rate {
        ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
    }
    if let Some(total) = args.total {
        ensure!(total >= 1, "--total must be at least 1");
    }
    if args.gaps || args.check_acked.is_some() {
        ensure!(
            matches!(args.op, KvOp::Put | KvOp::Txn),
            "--gaps and --check-acked need a write load (--op put or txn)"
        );
    }
    Ok(())
}

/// Connects `conns` clients; each balances over every endpoint unless pinned.
async fn connect(args: &KvBenchArgs, endpoints: &[String]) -> anyhow::Result<Vec<KvClient>> {
    let options = ConnectOptions::new()
        .with_timeout(args.timeout)
        .with_connect_timeout(args.connect_timeout);
    let mut clients = Vec::with_capacity(args.conns);
    for index in 0..args.conns {
        let chosen: Vec<String> = if args.pin_endpoints {
            vec![endpoints[index % endpoints.len()].clone()]
        } else {
            endpoints.to_vec()
        };
        let client = Client::connect(&chosen, Some(options.clone()))
            .await
            .with_context(|| format!("connecting to {}", chosen.join(",")))?;
        clients.push(client.kv_client());
    }
    // One request per connection so an unreachable cluster fails before the load starts.
    for kv in &mut clients {
        let probe = GetOptions::new().with_serializable().with_count_only();
        kv.get(args.prefix.as_bytes(), Some(probe))
            .await
            .with_context(|| format!("no answer from {}", endpoints.join(",")))?;
    }
    Ok(clients)
}
