//! One upstream backend: its address, weight, health, live counters and
//! pool of idle keep-alive connections.
//!
//! Everything here is lock-free on the request path except the idle pool's
//! short mutex. Health checkers, passive outlier detection and the balancers
//! read and write the atomics; nothing here opens sockets (see `upstream`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::hash::hash_bytes;
use crate::metrics::ShardedCounter;
use crate::upstream::Connection;
use crate::worker::{current, POOL_SLOTS};

/// Most idle connections kept per backend.
pub const IDLE_CONNECTIONS_MAX: usize = 512;
/// Longest ejection, whatever the number of ejections in a row.
pub const EJECTION_MULTIPLIER_MAX: u32 = 10;

/// Milliseconds since the process started, a monotonic clock shared by all modules.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// The [`now_ms`] clock's reading at `instant`, for a caller that has just
/// read the time anyway (one clock read instead of two).
pub fn ms_at(instant: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    instant
        .saturating_duration_since(*START.get_or_init(Instant::now))
        .as_millis() as u64
}

/// The health state of a backend as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Taking traffic.
    Up,
    /// Failed its active checks.
    Down,
    /// Ejected by passive outlier detection until a time.
    Ejected,
}

/// Counters of one backend, monotonic over the backend's life.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Requests sent to the backend (attempts, including retries); sharded
    /// per worker because every request bumps it.
    pub requests: ShardedCounter,
    /// Attempts that failed: connect failure, reset or timeout.
    pub failures: AtomicU64,
    /// Responses with a 5xx status.
    pub responses_5xx: AtomicU64,
    /// Times the backend was taken out by active checks.
    pub marked_down: AtomicU64,
    /// Times the backend was ejected by passive detection.
    pub ejections: AtomicU64,
    /// Upstream connections opened.
    pub connections_opened: AtomicU64,
}

/// One backend of a cluster, shared by listeners, balancers and health checkers.
#[derive(Debug)]
pub struct Backend {
    /// Where the backend listens.
    pub addr: SocketAddr,
    /// Relative weight (>= 1).
    pub weight: u32,
    /// Stable identity derived from the address (sticky cookies, hashing).
    pub id: u64,
    healthy: AtomicBool,
    active: AtomicU64,
    ewma_ns: AtomicU64,
    ewma_at_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    ejections_in_row: AtomicU32,
    healthy_since_ms: AtomicU64,
    active_max: AtomicU64,
    slow_start_ms: AtomicU64,
    /// Live counters.
    pub counters: BackendCounters,
    idle: [Mutex<Vec<Connection>>; POOL_SLOTS],
}

impl Backend {
    /// A healthy backend with no history.
    pub fn new(addr: SocketAddr, weight: u32) -> Backend {
        Backend {
            addr,
            weight: weight.max(1),
            id: hash_bytes(addr.to_string().as_bytes()),
            healthy: AtomicBool::new(true),
            active: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0),
            ewma_at_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections_in_row: AtomicU32::new(0),
            healthy_since_ms: AtomicU64::new(0),
            active_max: AtomicU64::new(0),
            slow_start_ms: AtomicU64::new(0),
            counters: BackendCounters::default(),
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
        }
    }

    /// Sets the per-backend concurrency limit (0: none) and slow-start time.
    pub fn set_limits(&self, active_max: u32, slow_start: Option<Duration>) {
        self.active_max
            .store(u64::from(active_max), Ordering::Relaxed);
        let slow_start_ms = slow_start.map_or(0, |d| d.as_millis() as u64);
        self.slow_start_ms.store(slow_start_ms, Ordering::Relaxed);
    }

    /// Whether the backend may take a new request now.
    pub fn is_available(&self, now_ms: u64) -> bool {
        if !self.healthy.load(Ordering::Relaxed)
            || self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
        {
            return false;
        }
        let max = self.active_max.load(Ordering::Relaxed);
        max == 0 || self.active.load(Ordering::Relaxed) < max
    }

    /// Whether the backend is healthy and not ejected (ignoring its connection limit).
    pub fn is_up(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// The state shown by the admin API.
    pub fn state(&self, now_ms: u64) -> BackendState {
        if !self.healthy.load(Ordering::Relaxed) {
            BackendState::Down
        } else if self.ejected_until_ms.load(Ordering::Relaxed) > now_ms {
            BackendState::Ejected
        } else {
            BackendState::Up
        }
    }

    /// The weight balancers use now: ramps up during slow start.
    pub fn effective_weight(&self, now_ms: u64) -> u64 {
        let weight = u64::from(self.weight) * 100;
        let slow_start_ms = self.slow_start_ms.load(Ordering::Relaxed);
        if slow_start_ms == 0 {
            return weight;
        }
        let since = self.healthy_since_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(since);
        if since == 0 || elapsed >= slow_start_ms {
            return weight;
        }
        (weight * elapsed / slow_start_ms).max(weight / 10).max(1)
    }

    /// Requests in flight on this backend.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight.
    pub fn begin_request(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.counters.requests.add(1);
    }

    /// Counts one request fewer in flight.
    pub fn end_request(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Peak-EWMA latency in nanoseconds (0 before the first sample).
    pub fn ewma_ns(&self) -> u64 {
        self.ewma_ns.load(Ordering::Relaxed)
    }

    /// Folds a response-time sample into the peak EWMA: a slower sample is
    /// taken at once, a faster one decays in with a 1 s time constant.
    pub fn observe_latency(&self, sample: Duration, now_ms: u64) {
        let sample_ns = sample.as_nanos().min(u128::from(u64::MAX)) as u64;
        let previous = self.ewma_ns.load(Ordering::Relaxed);
        let at = self.ewma_at_ms.swap(now_ms, Ordering::Relaxed);
        let next = if previous == 0 || sample_ns > previous {
            sample_ns
        } else {
            let elapsed_ms = now_ms.saturating_sub(at) as f64;
            let decay = (-elapsed_ms / 1000.0).exp();
            (previous as f64 * decay + sample_ns as f64 * (1.0 - decay)) as u64
        };
        self.ewma_ns.store(next.max(1), Ordering::Relaxed);
    }

    /// Records a successful exchange: clears passive failure counts.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejections_in_row.load(Ordering::Relaxed) != 0 {
            self.ejections_in_row.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failed exchange; ejects the backend once `threshold` failures
    /// in a row are seen (threshold 0: passive detection off). Returns true when
    /// this call ejected it.
    pub fn record_failure(&self, threshold: u32, ejection: Duration, now_ms: u64) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0
            || failures < threshold
            || self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
        {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let in_row = (self.ejections_in_row.fetch_add(1, Ordering::Relaxed) + 1)
            .min(EJECTION_MULTIPLIER_MAX);
        let until = now_ms + ejection.as_millis() as u64 * u64::from(in_row);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.healthy_since_ms.store(until, Ordering::Relaxed);
        self.counters.ejections.fetch_add(1, Ordering::Relaxed);
        self.drop_idle();
        true
    }

    /// Sets the active-check verdict; returns true when it changed.
    pub fn set_healthy(&self, healthy: bool, now_ms: u64) -> bool {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was == healthy {
            return false;
        }
        if healthy {
            self.healthy_since_ms
                .store(now_ms.max(1), Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
        } else {
            self.counters.marked_down.fetch_add(1, Ordering::Relaxed);
            self.drop_idle();
        }
        true
    }

    /// Whether active checks consider the backend healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Takes the most recently pooled idle connection of the calling
    /// worker's pool, if any (the caller checks that it is still usable).
    pub fn take_idle(&self) -> Option<Connection> {
        self.idle[current() % POOL_SLOTS]
            .lock()
            .expect("idle pool lock is never poisoned")
            .pop()
    }

    /// Returns a connection to the calling worker's idle pool (the worker
    /// whose event loop its socket is registered with, since a lease ends on
    /// the worker that opened or took its connection).
    pub fn put_idle(&self, connection: Connection) {
        let mut idle = self.idle[current() % POOL_SLOTS]
            .lock()
            .expect("idle pool lock is never poisoned");
        if idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push(connection);
        }
    }

    /// Closes every idle connection (the backend went away).
    pub fn drop_idle(&self) {
        for slot in &self.idle {
            let drained: Vec<_> =
                std::mem::take(&mut *slot.lock().expect("idle pool lock is never poisoned"));
            drop(drained);
        }
    }

    /// Number of idle pooled connections.
    pub fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|slot| slot.lock().expect("idle pool lock is never poisoned").len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        Backend::new("127.0.0.1:1".parse().expect("addr"), 1)
    }

    #[test]
    fn consecutive_failures_eject_and_backoff_grows() {
        let b = backend();
        let ejection = Duration::from_secs(1);
        assert!(!b.record_failure(3, ejection, 1000));
        assert!(!b.record_failure(3, ejection, 1000));
        assert!(b.record_failure(3, ejection, 1000));
        assert!(!b.is_available(1500));
        assert!(b.is_available(2000));
        for _ in 0..3 {
            b.record_failure(3, ejection, 2000);
        }
        assert!(!b.is_available(3500), "second ejection lasts twice as long");
        assert!(b.is_available(4000));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = backend();
        b.record_failure(2, Duration::from_secs(1), 10);
        b.record_success();
        assert!(!b.record_failure(2, Duration::from_secs(1), 10));
        assert!(b.is_available(10));
    }

    #[test]
    fn connection_limit_makes_unavailable() {
        let b = backend();
        b.set_limits(1, None);
        b.begin_request();
        assert!(!b.is_available(0));
        b.end_request();
        assert!(b.is_available(0));
    }

    #[test]
    fn slow_start_ramps_weight() {
        let b = backend();
        b.set_limits(0, Some(Duration::from_secs(10)));
        b.set_healthy(false, 100);
        b.set_healthy(true, 1000);
        assert_eq!(b.effective_weight(1000), 10);
        assert_eq!(b.effective_weight(6000), 50);
        assert_eq!(b.effective_weight(11_000), 100);
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_decays() {
        let b = backend();
        b.observe_latency(Duration::from_millis(1), 0);
        b.observe_latency(Duration::from_millis(100), 10);
        assert_eq!(b.ewma_ns(), 100_000_000);
        b.observe_latency(Duration::from_millis(1), 5010);
        assert!(b.ewma_ns() < 5_000_000, "{}", b.ewma_ns());
    }
}
