//! The load itself: client tasks that send requests back to back or on a
//! schedule, measure each one, and in --gaps mode record the pauses between
//! acknowledged writes and (with --check-acked) every acknowledged write. It
//! owns no output format: the report module prints what it measured.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};
use hdrhistogram::Histogram;

use super::report::{build_report, unix_ms, Report};
use super::{connect, validate, KvBenchArgs, KvOp};

/// Gaps kept in the report; later ones are only counted.
const GAPS_KEPT_MAX: usize = 10_000;
/// Distinct error kinds kept; the rest are counted under `other`.
const ERROR_KINDS_MAX: usize = 32;
/// Error messages are cut to this many characters when used as a kind.
const ERROR_KIND_CHARS_MAX: usize = 96;
/// Largest latency the histograms hold (one hour, in microseconds).
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Load length when neither --duration nor --total is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// A small, fast pseudo-random generator (SplitMix64); benchmark choices need no more.
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`; `bound` must not be 0.
    pub(super) fn below(&mut self, bound: u64) -> u64 {
        // The modulo bias is below 2^-40 for any keyspace a benchmark uses.
        self.next_u64() % bound
    }
}

/// Printable filler so values survive a round trip through etcdctl and text files.
pub(super) fn filler(rng: &mut SplitMix64, length: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..length)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

/// Everything the client tasks share during a load.
pub(super) struct Load {
    /// Operation the clients send.
    pub(super) op: KvOp,
    /// Share of gets in `--op mixed`, in percent.
    pub(super) read_percent: u8,
    /// Number of distinct keys random operations choose from.
    pub(super) keyspace: u64,
    /// Length of every keyspace key.
    pub(super) key_size: usize,
    /// Prefix of every keyspace key.
    pub(super) prefix: String,
    /// Set in --gaps / --check-acked mode: each write goes to a fresh key under this prefix.
    pub(super) fresh_prefix: Option<String>,
    /// The value written by puts and txns (fresh writes prepend their sequence number).
    pub(super) value: Vec<u8>,
    /// Time between two sends of one client under --rate.
    pub(super) rate_interval: Option<Duration>,
    /// Operations to send in all, under --total.
    pub(super) total: Option<u64>,
    /// Pause of a client after a failed request.
    pub(super) error_backoff: Duration,
    /// Shortest pause between acknowledged writes worth recording, under --gaps.
    pub(super) gap_threshold_us: Option<u64>,
    /// When the measured load began.
    pub(super) started: Instant,
    /// Set when the clients must finish their current request and stop.
    pub(super) stop: AtomicBool,
    /// Operations handed out; also the sequence number of fresh keys.
    pub(super) issued: AtomicU64,
    /// Requests that succeeded.
    pub(super) completed: AtomicU64,
    /// Requests that failed.
    pub(super) failed: AtomicU64,
    /// Microseconds since `started` of the latest acknowledged write.
    pub(super) last_ack_us: AtomicU64,
    /// Pauses between acknowledged writes longer than the threshold.
    pub(super) gaps: Mutex<GapLog>,
    /// The --check-acked file, one `KEY VALUE` line per acknowledged write.
    pub(super) acked: Option<Mutex<BufWriter<File>>>,
    /// The first failure to write the --check-acked file; it ends the load.
    pub(super) acked_error: Mutex<Option<std::io::Error>>,
}

/// Pauses between acknowledged writes, in microseconds since the start.
#[derive(Default)]
pub(super) struct GapLog {
    /// (last acknowledgement before, first acknowledgement after), in order of ending.
    pub(super) kept: Vec<(u64, u64)>,
    /// Pauses not kept because `kept` was full.
    pub(super) dropped: u64,
}

/// What one client task measured; merged into one for the report.
pub(super) struct ClientStats {
    /// Latency of each successful request, in microseconds.
    pub(super) latency_us: Histogram<u64>,
    /// Failed requests by kind (see `error_kind`).
    pub(super) errors: BTreeMap<String, u64>,
}

impl ClientStats {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(ClientStats {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .context("creating a latency histogram")?,
            errors: BTreeMap::new(),
        })
    }

    pub(super) fn count_error(&mut self, kind: String) {
        self.add_errors(kind, 1);
    }

    /// Counts `count` errors of `kind`; past ERROR_KINDS_MAX kinds new ones count as `other`.
    fn add_errors(&mut self, kind: String, count: u64) {
        let kind = if self.errors.len() >= ERROR_KINDS_MAX && !self.errors.contains_key(&kind) {
            "other".to_string()
        } else {
            kind
        };
        *self.errors.entry(kind).or_default() += count;
    }

    pub(super) fn merge(&mut self, other: ClientStats) -> anyhow::Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")?;
        for (kind, count) in other.errors {
            self.add_errors(kind, count);
        }
        Ok(())
    }
}

/// Names an error by its gRPC code and message, so reports group like failures.
pub(super) fn error_kind(error: &etcd_client::Error) -> String {
    let kind = match error {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        etcd_client::Error::TransportError(_) => "transport error".to_string(),
        other => other.to_string(),
    };
    kind.chars().take(ERROR_KIND_CHARS_MAX).collect()
}

/// Key number `number`: the prefix, then the number zero-padded to `key_size` bytes in all.
pub(super) fn key_for(prefix: &str, key_size: usize, number: u64) -> Vec<u8> {
    let width = key_size.saturating_sub(prefix.len());
    format!("{prefix}{number:0width$}").into_bytes()
}

/// The request one client sends next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// Put `value` at `key`.
    Put {
        /// Key written.
        key: Vec<u8>,
        /// Value written.
        value: Vec<u8>,
    },
    /// Get `key`.
    Get {
        /// Key read.
        key: Vec<u8>,
        /// Served by the member asked instead of through the leader.
        serializable: bool,
    },
    /// A txn that puts `value` at `key` when the compare holds (it always does).
    Txn {
        /// Key written.
        key: Vec<u8>,
        /// Value written.
        value: Vec<u8>,
    },
}

impl Load {
    /// Keyspace key number `number`.
    pub(super) fn key(&self, number: u64) -> Vec<u8> {
        key_for(&self.prefix, self.key_size, number)
    }

    /// A fresh key and a value naming it, for writes that --verify checks later.
    pub(super) fn fresh_write(&self, prefix: &str, sequence: u64) -> (Vec<u8>, Vec<u8>) {
        let key = format!("{prefix}{sequence:012}").into_bytes();
        let mut value = format!("w{sequence:012}-").into_bytes();
        let padding = self.value.len().saturating_sub(value.len());
        value.extend_from_slice(&self.value[..padding]);
        (key, value)
    }

    /// The request for operation number `sequence`.
    pub(super) fn plan(&self, sequence: u64, rng: &mut SplitMix64) -> Request {
        if let Some(prefix) = &self.fresh_prefix {
            let (key, value) = self.fresh_write(prefix, sequence);
            return match self.op {
                KvOp::Txn => Request::Txn { key, value },
                _ => Request::Put { key, value },
            };
        }
        let key = self.key(rng.below(self.keyspace));
        let value = self.value.clone();
        match self.op {
            KvOp::Put => Request::Put { key, value },
            KvOp::Get => Request::Get {
                key,
                serializable: false,
            },
            KvOp::GetSerializable => Request::Get {
                key,
                serializable: true,
            },
            KvOp::Txn => Request::Txn { key, value },
            KvOp::Mixed if rng.below(100) < u64::from(self.read_percent) => Request::Get {
                key,
                serializable: false,
            },
            KvOp::Mixed => Request::Put { key, value },
        }
    }

    /// Records an acknowledged write: the pause before it and, if asked, the write itself.
    pub(super) fn acknowledge(&self, key: &[u8], value: &[u8]) {
        self.acknowledge_at(self.started.elapsed().as_micros() as u64, key, value);
    }

    /// `acknowledge` with the time of the acknowledgement given, in microseconds since `started`.
    pub(super) fn acknowledge_at(&self, now_us: u64, key: &[u8], value: &[u8]) {
        // Clients finish out of order: only an acknowledgement later than every earlier
        // one can close a pause.
        let previous_us = self.last_ack_us.fetch_max(now_us, Ordering::AcqRel);
        if let Some(threshold_us) = self.gap_threshold_us {
            if now_us > previous_us && now_us - previous_us > threshold_us {
                let mut gaps = self.gaps.lock().expect("gap log lock poisoned");
                if gaps.kept.len() < GAPS_KEPT_MAX {
                    gaps.kept.push((previous_us, now_us));
                } else {
                    gaps.dropped += 1;
                }
            }
        }
        if let Some(acked) = &self.acked {
            let mut out = acked.lock().expect("acked file lock poisoned");
            let written = out
                .write_all(key)
                .and_then(|()| out.write_all(b" "))
                .and_then(|()| out.write_all(value))
                .and_then(|()| out.write_all(b"\n"));
            if let Err(error) = written {
                // A lost record would make --verify blind: stop the load and report it.
                self.acked_error
                    .lock()
                    .expect("acked error lock poisoned")
                    .get_or_insert(error);
                self.stop.store(true, Ordering::Release);
            }
        }
    }
}

/// Sends one request; a write returns the key and value it made durable.
async fn execute(
    kv: &mut KvClient,
    request: Request,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, etcd_client::Error> {
    match request {
        Request::Put { key, value } => {
            kv.put(key.clone(), value.clone(), None).await?;
            Ok(Some((key, value)))
        }
        Request::Get { key, serializable } => {
            let options = serializable.then(|| GetOptions::new().with_serializable());
            kv.get(key, options).await?;
            Ok(None)
        }
        Request::Txn { key, value } => {
            // mod_revision of a missing key compares as 0, so the put branch always runs;
            // the txn costs what a guarded write costs.
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Less,
                    i64::MAX,
                )])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                .or_else([TxnOp::get(key.clone(), None)]);
            let response = kv.txn(txn).await?;
            Ok(response.succeeded().then_some((key, value)))
        }
    }
}

/// One client: sends requests back to back (or on the --rate schedule) until the load stops.
async fn client_loop(load: Arc<Load>, mut kv: KvClient, seed: u64) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats::new()?;
    let mut rng = SplitMix64(seed);
    let mut next_send = tokio::time::Instant::now();
    while !load.stop.load(Ordering::Acquire) {
        let sequence = load.issued.fetch_add(1, Ordering::AcqRel);
        if load.total.is_some_and(|total| sequence >= total) {
            break;
        }
        // With --rate, latency counts from the scheduled send time so a slow server
        // cannot hide its queueing delay (no coordinated omission).
        let sent = match load.rate_interval {
            Some(interval) => {
                tokio::time::sleep_until(next_send).await;
                let scheduled = next_send.into_std();
                next_send += interval;
                if load.stop.load(Ordering::Acquire) {
                    break;
                }
                scheduled
            }
            None => Instant::now(),
        };
        let result = execute(&mut kv, load.plan(sequence, &mut rng)).await;
        let latency_us = sent.elapsed().as_micros() as u64;
        match result {
            Ok(written) => {
                stats.latency_us.saturating_record(latency_us.max(1));
                if let Some((key, value)) = written {
                    load.acknowledge(&key, &value);
                }
                load.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                stats.count_error(error_kind(&error));
                load.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(load.error_backoff).await;
            }
        }
    }
    Ok(stats)
}

/// Writes every key of the keyspace once so that reads find values.
async fn prepopulate(args: &KvBenchArgs, value: &[u8], conns: &[KvClient]) -> anyhow::Result<()> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let shape = Arc::new((
        args.prefix.clone(),
        args.key_size,
        args.keyspace,
        value.to_vec(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.clients.min(args.keyspace as usize).max(1) {
        let (shape, next, mut kv) = (
            shape.clone(),
            next.clone(),
            conns[index % conns.len()].clone(),
        );
        tasks.spawn(async move {
            let (prefix, key_size, keyspace, value) = &*shape;
            loop {
                let number = next.fetch_add(1, Ordering::AcqRel);
                if number >= *keyspace {
                    return anyhow::Ok(());
                }
                kv.put(key_for(prefix, *key_size, number), value.clone(), None)
                    .await
                    .with_context(|| format!("prepopulating key number {number}"))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("prepopulation task failed")??;
    }
    eprintln!(
        "prepopulated {} keys in {:.1} s",
        args.keyspace,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints a progress line to stderr once per second while the load runs.
async fn report_progress(load: Arc<Load>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut previous = 0;
    loop {
        ticker.tick().await;
        let completed = load.completed.load(Ordering::Relaxed);
        eprintln!(
            "{:>5.0} s  {:>9} ops/s  {:>10} ok  {:>7} errors",
            load.started.elapsed().as_secs_f64(),
            completed - previous,
            completed,
            load.failed.load(Ordering::Relaxed)
        );
        previous = completed;
    }
}

/// Ends the load early, with a full report, on SIGINT or SIGTERM.
async fn stop_on_signal(load: Arc<Load>) {
    use tokio::signal::unix::{signal, SignalKind};
    // Without signal handlers the load still ends by --duration or --total.
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    load.stop.store(true, Ordering::Release);
}

/// Opens the --check-acked file and writes its header (the fresh-key prefix).
fn create_acked_file(path: &Path, fresh_prefix: &str) -> anyhow::Result<BufWriter<File>> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    writeln!(
        out,
        "# nines bench kv acknowledged writes: prefix {fresh_prefix}"
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(out)
}

/// Sets up the shared state of a load from `args`; `started` is reset when the load begins.
pub(super) fn new_load(
    args: &KvBenchArgs,
    rng: &mut SplitMix64,
    started_wall: SystemTime,
) -> anyhow::Result<Load> {
    let fresh = args.gaps || args.check_acked.is_some();
    let fresh_prefix = fresh.then(|| format!("{}acked/{:.0}/", args.prefix, unix_ms(started_wall)));
    let acked = match (&args.check_acked, &fresh_prefix) {
        (Some(path), Some(prefix)) => Some(Mutex::new(create_acked_file(path, prefix)?)),
        _ => None,
    };
    Ok(Load {
        op: args.op,
        read_percent: args.read_percent,
        keyspace: args.keyspace,
        key_size: args.key_size,
        prefix: args.prefix.clone(),
        fresh_prefix,
        value: filler(rng, args.val_size),
        rate_interval: args
            .rate
            .map(|rate| Duration::from_secs_f64(args.clients as f64 / rate)),
        total: args.total,
        error_backoff: args.error_backoff,
        gap_threshold_us: args.gaps.then_some(args.gap_threshold.as_micros() as u64),
        started: Instant::now(),
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_ack_us: AtomicU64::new(0),
        gaps: Mutex::new(GapLog::default()),
        acked,
        acked_error: Mutex::new(None),
    })
}

/// Runs the load described by `args` and returns what it measured.
pub(super) async fn run_load(
    args: &KvBenchArgs,
    endpoints: &[String],
    threads: usize,
) -> anyhow::Result<Report> {
    validate(args)?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    });
    let mut rng = SplitMix64(seed);
    let conns = connect(args, endpoints).await?;
    let load = new_load(args, &mut rng, SystemTime::now())?;
    let reads = matches!(args.op, KvOp::Get | KvOp::GetSerializable | KvOp::Mixed);
    if reads && !args.no_prepopulate {
        prepopulate(args, &load.value, &conns).await?;
    }
    let load = Arc::new(Load {
        started: Instant::now(),
        ..load
    });
    let started_wall = SystemTime::now();
    let (stats, elapsed) = drive(args, &load, &conns, &mut rng).await?;
    finish_acked(&load, args)?;
    Ok(build_report(
        args,
        endpoints,
        threads,
        &load,
        &stats,
        elapsed,
        started_wall,
    ))
}

/// Runs the clients until --duration, --total or a signal ends the load.
async fn drive(
    args: &KvBenchArgs,
    load: &Arc<Load>,
    conns: &[KvClient],
    rng: &mut SplitMix64,
) -> anyhow::Result<(ClientStats, Duration)> {
    let mut helpers = tokio::task::JoinSet::new();
    if std::io::stderr().is_terminal() {
        helpers.spawn(report_progress(load.clone()));
    }
    helpers.spawn(stop_on_signal(load.clone()));
    let deadline = match (args.duration, args.total) {
        (Some(duration), _) => Some(duration),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_DURATION),
    };
    if let Some(duration) = deadline {
        let load = load.clone();
        helpers.spawn(async move {
            tokio::time::sleep(duration).await;
            load.stop.store(true, Ordering::Release);
        });
    }
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        let kv = conns[index % conns.len()].clone();
        clients.spawn(client_loop(load.clone(), kv, rng.next_u64()));
    }
    let mut stats = ClientStats::new()?;
    while let Some(joined) = clients.join_next().await {
        stats.merge(joined.context("client task failed")??)?;
    }
    let elapsed = load.started.elapsed();
    helpers.abort_all();
    Ok((stats, elapsed))
}

/// Flushes the --check-acked file and fails if any record could not be written.
pub(super) fn finish_acked(load: &Load, args: &KvBenchArgs) -> anyhow::Result<()> {
    let path = args.check_acked.as_deref().unwrap_or(Path::new(""));
    if let Some(error) = load
        .acked_error
        .lock()
        .expect("acked error lock poisoned")
        .take()
    {
        return Err(error)
            .with_context(|| format!("recording acknowledged writes in {}", path.display()));
    }
    if let Some(acked) = &load.acked {
        let mut out = acked.lock().expect("acked file lock poisoned");
        out.flush()
            .and_then(|()| out.get_ref().sync_all())
            .with_context(|| format!("flushing {}", path.display()))?;
    }
    Ok(())
}
