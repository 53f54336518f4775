//! Counters and latency histograms of the Raft side, kept in plain atomics
//! so the write path never takes a lock for them; the server's `/metrics`
//! reads them at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the log-latency buckets: fsync on these disks
/// takes from about 100 µs to tens of milliseconds.
pub const LOG_LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram of plain atomics over fixed upper bounds plus `+Inf`:
/// observing never takes a lock.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, increasing.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// What a [`Histogram`] held when it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
    /// Number of observations (the buckets' total).
    pub count: u64,
    /// (upper bound in seconds, observations in that bucket alone); the
    /// last bound is `f64::MAX` for `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Default for Histogram {
    /// Over [`LOG_LATENCY_BUCKETS_SECONDS`].
    fn default() -> Self {
        Histogram::new(&LOG_LATENCY_BUCKETS_SECONDS)
    }
}

impl Histogram {
    /// An empty histogram over `bounds` (seconds, increasing).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The current figures. The count is the buckets' total, so a read
    /// racing an observation still gives a consistent histogram.
    pub fn read(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

/// The Raft side's own figures.
#[derive(Debug, Default)]
pub struct RaftStats {
    /// Duration of each log fsync (`fdatasync` of the WAL segment).
    pub log_fsync: Histogram,
    /// Duration of each log append (encoding and writing one group of
    /// entries to the segment, before its fsync).
    pub log_append: Histogram,
    /// Commands proposed through this member (its clients' writes).
    pub proposals: AtomicU64,
    /// Of those, the ones that failed (no leader, timeout, leader change).
    pub proposals_failed: AtomicU64,
    /// Log entries this member proposed as leader (each carries a batch).
    pub entries_proposed: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_the_count_is_their_total() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(3));
        let s = h.read();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[3], (0.001, 1));
        assert_eq!(s.buckets.last(), Some(&(f64::MAX, 1)));
        assert!((s.sum_seconds - 3.00075).abs() < 1e-9);
    }
}
