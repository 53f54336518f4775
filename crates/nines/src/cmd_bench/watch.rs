//! `nines bench watch`: write throughput while many watchers follow one
//! prefix. Opens `--watchers` watch streams on the prefix (spread over
//! `--conns` connections), then `--clients` writers put keys under it for
//! `--duration`; reports the write rate and whether every watcher received
//! every acknowledged write. With `--watchers 0` it gives the baseline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Args;
use etcd_client::{Client, ConnectOptions, WatchOptions};
use serde::Serialize;

/// Most watchers one run may open.
const WATCHERS_MAX: usize = 100_000;

/// Arguments of `nines bench watch`.
#[derive(Args, Debug)]
pub struct WatchBenchArgs {
    /// Watch streams on the prefix.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// gRPC connections for the watchers (the writers get their own 8).
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    /// How long the writers run.
    #[arg(long, value_parser = super::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// The watched prefix (writes go under it).
    #[arg(long, default_value = "/bench-watch/")]
    pub prefix: String,
    /// Output format: text or json.
    #[arg(short = 'w', long = "write-out", default_value = "text")]
    pub write_out: String,
}

/// What a run measured.
#[derive(Serialize, Debug)]
pub struct WatchReport {
    watchers: usize,
    clients: usize,
    writes_acknowledged: u64,
    write_errors: u64,
    elapsed_s: f64,
    write_throughput_ops_s: f64,
    events_expected_per_watcher: u64,
    events_min_per_watcher: u64,
    watchers_complete: usize,
}

async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|e| {
            if e.contains("://") {
                e.clone()
            } else {
                format!("http://{e}")
            }
        })
        .collect();
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    Client::connect(eps, Some(opts)).await.context("connecting")
}

/// Runs the benchmark.
pub async fn run(args: &WatchBenchArgs, endpoints: &[String]) -> anyhow::Result<WatchReport> {
    ensure!(
        args.watchers <= WATCHERS_MAX,
        "--watchers must be at most {WATCHERS_MAX}"
    );
    ensure!(
        (1..=10_000).contains(&args.clients),
        "--clients must be 1..=10000"
    );
    ensure!((1..=1024).contains(&args.conns), "--conns must be 1..=1024");
    let mut conns = Vec::new();
    for _ in 0..args.conns {
        conns.push(connect(endpoints).await?);
    }
    let start_rev = conns[0]
        .get("/", None)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0)
        + 1;
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.watchers).map(|_| AtomicU64::new(0)).collect());
    let mut watch_tasks = Vec::new();
    for i in 0..args.watchers {
        let mut c = conns[i % conns.len()].clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_rev);
        let mut stream = c
            .watch(args.prefix.clone(), Some(opts))
            .await
            .context("opening a watcher")?;
        let counts = counts.clone();
        watch_tasks.push(tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                if resp.canceled() {
                    return;
                }
                counts[i].fetch_add(resp.events().len() as u64, Ordering::Relaxed);
            }
        }));
    }
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut wconns = Vec::new();
    for _ in 0..8 {
        wconns.push(connect(endpoints).await?);
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    for w in 0..args.clients {
        let mut kv = wconns[w % wconns.len()].kv_client();
        let (acked, errors) = (acked.clone(), errors.clone());
        let prefix = args.prefix.clone();
        let value = vec![b'v'; args.val_size];
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline && n < u64::MAX {
                match kv
                    .put(format!("{prefix}{w}/{n}"), value.clone(), None)
                    .await
                {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    for t in writers {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = acked.load(Ordering::Relaxed);
    // Give the watchers time to drain, bounded.
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < drain_deadline
        && counts.iter().any(|c| c.load(Ordering::Relaxed) < expected)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in &watch_tasks {
        t.abort();
    }
    let min = counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .min()
        .unwrap_or(expected);
    let complete = counts
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) >= expected)
        .count();
    Ok(WatchReport {
        watchers: args.watchers,
        clients: args.clients,
        writes_acknowledged: expected,
        write_errors: errors.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        write_throughput_ops_s: expected as f64 / elapsed,
        events_expected_per_watcher: expected,
        events_min_per_watcher: if args.watchers == 0 { expected } else { min },
        watchers_complete: complete,
    })
}

/// Prints the report.
pub fn print(r: &WatchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!(
            "watch fan-out: {} watchers, {} writers, {:.1} s\nwrites      {} acknowledged, {} errors, {:.1} ops/s\nwatchers    {} of {} received all {} events (fewest: {})",
            r.watchers, r.clients, r.elapsed_s, r.writes_acknowledged, r.write_errors, r.write_throughput_ops_s,
            r.watchers_complete, r.watchers, r.events_expected_per_watcher, r.events_min_per_watcher
        );
    }
    Ok(())
}
