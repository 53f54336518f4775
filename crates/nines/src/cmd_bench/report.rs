//! The report of a load: latency percentiles, throughput, errors by kind and
//! the pauses between acknowledged writes, printed as text or as one JSON
//! object. It only formats what the load module measured.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use super::load::{ClientStats, Load};
use super::{KvBenchArgs, KvOp, OutputFormat};

/// Milliseconds since the Unix epoch.
pub(super) fn unix_ms(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1e3)
}

/// Latency percentiles of successful requests, in milliseconds.
#[derive(Serialize)]
pub(super) struct LatencyReport {
    /// Median.
    pub(super) p50: f64,
    /// 90th percentile.
    pub(super) p90: f64,
    /// 99th percentile.
    pub(super) p99: f64,
    /// 99.9th percentile.
    pub(super) p999: f64,
    /// Slowest request.
    pub(super) max: f64,
    /// Arithmetic mean.
    pub(super) mean: f64,
}

/// One pause between acknowledged writes.
#[derive(Serialize)]
pub(super) struct GapReport {
    /// Wall-clock time of the last acknowledged write before the pause.
    pub(super) start_unix_ms: f64,
    /// Wall-clock time of the first acknowledged write after it.
    pub(super) end_unix_ms: f64,
    /// Length of the pause.
    pub(super) gap_ms: f64,
    /// True for the pause that was still open when the run ended.
    pub(super) open: bool,
}

/// Everything a run measured; printed as text or as one JSON object.
#[derive(Serialize)]
pub(super) struct Report {
    /// Operation run.
    pub(super) op: KvOp,
    /// Endpoints the clients were given.
    pub(super) endpoints: Vec<String>,
    /// Concurrent clients.
    pub(super) clients: usize,
    /// gRPC connections.
    pub(super) conns: usize,
    /// Client runtime threads.
    pub(super) threads: usize,
    /// Key length in bytes.
    pub(super) key_size: usize,
    /// Value length in bytes.
    pub(super) val_size: usize,
    /// Distinct keys.
    pub(super) keyspace: u64,
    /// Target rate, if the load was paced.
    pub(super) rate: Option<f64>,
    /// Length of the measured load.
    pub(super) elapsed_s: f64,
    /// Successful requests.
    pub(super) ops: u64,
    /// Failed requests.
    pub(super) errors: u64,
    /// Failed requests by kind.
    pub(super) errors_by_kind: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub(super) throughput_ops_s: f64,
    /// Latency of successful requests.
    pub(super) latency_ms: LatencyReport,
    /// Shortest pause reported (--gaps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gap_threshold_ms: Option<f64>,
    /// Pauses between acknowledged writes (--gaps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gaps: Option<Vec<GapReport>>,
    /// Pauses left out of `gaps` because it was full (--gaps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gaps_dropped: Option<u64>,
    /// Longest pause (--gaps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) longest_gap_ms: Option<f64>,
}

/// Puts together what a load measured.
pub(super) fn build_report(
    args: &KvBenchArgs,
    endpoints: &[String],
    threads: usize,
    load: &Load,
    stats: &ClientStats,
    elapsed: Duration,
    started_wall: SystemTime,
) -> Report {
    let histogram = &stats.latency_us;
    let ms = |us: u64| us as f64 / 1e3;
    let ops = load.completed.load(Ordering::Relaxed);
    let (gaps, gaps_dropped, longest_gap_ms) = if args.gaps {
        let start_ms = unix_ms(started_wall);
        let to_report = |(from_us, to_us): (u64, u64), open: bool| GapReport {
            start_unix_ms: start_ms + ms(from_us),
            end_unix_ms: start_ms + ms(to_us),
            gap_ms: ms(to_us - from_us),
            open,
        };
        let log = load.gaps.lock().expect("gap log lock poisoned");
        let mut list: Vec<GapReport> = log.kept.iter().map(|&gap| to_report(gap, false)).collect();
        let end_us = elapsed.as_micros() as u64;
        let last_us = load.last_ack_us.load(Ordering::Acquire);
        if end_us.saturating_sub(last_us) > args.gap_threshold.as_micros() as u64 {
            list.push(to_report((last_us, end_us), true));
        }
        let longest = list.iter().map(|gap| gap.gap_ms).fold(0.0, f64::max);
        (Some(list), Some(log.dropped), Some(longest))
    } else {
        (None, None, None)
    };
    Report {
        op: args.op,
        endpoints: endpoints.to_vec(),
        clients: args.clients,
        conns: args.conns,
        threads,
        key_size: args.key_size,
        val_size: args.val_size,
        keyspace: args.keyspace,
        rate: args.rate,
        elapsed_s: elapsed.as_secs_f64(),
        ops,
        errors: load.failed.load(Ordering::Relaxed),
        errors_by_kind: stats.errors.clone(),
        throughput_ops_s: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: LatencyReport {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1e3,
        },
        gap_threshold_ms: args.gaps.then_some(args.gap_threshold.as_secs_f64() * 1e3),
        gaps,
        gaps_dropped,
        longest_gap_ms,
    }
}

/// Prints `report` to stdout as text lines or as one JSON object.
pub(super) fn print_report(report: &Report, format: OutputFormat) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if format == OutputFormat::Json {
        serde_json::to_writer(&mut out, report).context("writing the report")?;
        writeln!(out).context("writing the report")?;
        return Ok(());
    }
    let op = serde_json::to_value(report.op).context("naming the operation")?;
    let l = &report.latency_ms;
    let mut text = format!(
        "kv {}: {} clients, {} conns, {} threads, key {} B, value {} B, keyspace {}, endpoints {}\n\
         ops         {} in {:.2} s\n\
         throughput  {:.1} ops/s\n\
         latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}\n\
         errors      {}\n",
        op.as_str().unwrap_or("?"),
        report.clients,
        report.conns,
        report.threads,
        report.key_size,
        report.val_size,
        report.keyspace,
        report.endpoints.join(","),
        report.ops,
        report.elapsed_s,
        report.throughput_ops_s,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        l.mean,
        report.errors
    );
    for (kind, count) in &report.errors_by_kind {
        text.push_str(&format!("  {count:>9}  {kind}\n"));
    }
    if let (Some(gaps), Some(threshold)) = (&report.gaps, report.gap_threshold_ms) {
        text.push_str(&format!(
            "gaps > {threshold:.0} ms between acknowledged writes: {} (longest {:.1} ms)\n",
            gaps.len(),
            report.longest_gap_ms.unwrap_or(0.0)
        ));
        for gap in gaps {
            text.push_str(&format!(
                "  from {:.3} to {:.3} (unix s): {:.1} ms{}\n",
                gap.start_unix_ms / 1e3,
                gap.end_unix_ms / 1e3,
                gap.gap_ms,
                if gap.open { " (open at the end)" } else { "" }
            ));
        }
    }
    out.write_all(text.as_bytes()).context("writing the report")
}
