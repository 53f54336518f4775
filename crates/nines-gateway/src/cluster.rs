//! A cluster at run time: its current backend set and balancer (swapped
//! atomically when the source publishes a new list), its policies (retry,
//! passive ejection, timeouts, limits) and its retry budget. Backends that
//! survive a change keep their state: health, counters and pooled connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::backend::{now_ms, Backend};
use crate::balance::Balancer;
use crate::config::{BalanceKind, ClusterConfig, HashKey, RetryOn};
use crate::metrics::ShardedCounter;
use crate::source::BackendSpec;

/// Default time to open a backend connection.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default time for a backend's response head.
pub const RESPONSE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The backends of a cluster with a balancer built for exactly them.
#[derive(Debug)]
pub struct BackendSet {
    /// Backends in source order.
    pub backends: Vec<Arc<Backend>>,
    /// The balancing state for this list.
    pub balancer: Balancer,
}

/// Retry policy, resolved from `[cluster.retry]`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts including the first.
    pub attempts: u32,
    /// Retry on refused or timed-out connects.
    pub on_connect_failure: bool,
    /// Retry when the connection breaks before a response head.
    pub on_reset: bool,
    /// Retry when no response head comes in time.
    pub on_timeout: bool,
    /// Statuses that cause a retry.
    pub on_status: Vec<u16>,
    /// Whether non-idempotent methods are retried after the request was sent.
    pub all_methods: bool,
    /// Percentage of requests that may be retries.
    pub budget_percent: u32,
    /// Retries per second always allowed.
    pub budget_min_per_sec: u32,
}

impl RetryPolicy {
    fn from_config(config: Option<&crate::config::RetryConfig>) -> RetryPolicy {
        let Some(config) = config else {
            // Without a retry table a request still moves to another backend
            // once when the connection failed or broke before any answer
            // (idempotent methods only for the latter): nginx's default too.
            return RetryPolicy {
                attempts: 2,
                on_connect_failure: true,
                on_reset: true,
                on_timeout: false,
                on_status: Vec::new(),
                all_methods: false,
                budget_percent: 20,
                budget_min_per_sec: 10,
            };
        };
        let has = |condition| config.on.contains(&condition);
        let mut on_status = Vec::new();
        if has(RetryOn::Status5xx) {
            on_status.extend(500..600);
        }
        for (condition, status) in [
            (RetryOn::Status502, 502),
            (RetryOn::Status503, 503),
            (RetryOn::Status504, 504),
        ] {
            if has(condition) && !on_status.contains(&status) {
                on_status.push(status);
            }
        }
        RetryPolicy {
            attempts: *config.attempts.get_ref(),
            on_connect_failure: has(RetryOn::ConnectFailure),
            on_reset: has(RetryOn::Reset),
            on_timeout: has(RetryOn::Timeout),
            on_status,
            all_methods: config.all_methods,
            budget_percent: config.budget_percent,
            budget_min_per_sec: config.budget_min_per_sec,
        }
    }
}

/// Limits retries to a share of requests per one-second window, so that an
/// outage cannot multiply the load on the surviving backends.
#[derive(Debug, Default)]
pub struct RetryBudget {
    window_sec: AtomicU64,
    /// Sharded: every request bumps it, retries (rare) read it.
    requests: ShardedCounter,
    retries: AtomicU64,
}

impl RetryBudget {
    /// Counts a new request.
    pub fn record_request(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.add(1);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self, policy: &RetryPolicy, now_ms: u64) -> bool {
        self.roll(now_ms);
        let requests = self.requests.get();
        let allowed = u64::from(policy.budget_min_per_sec)
            + requests * u64::from(policy.budget_percent) / 100;
        if self.retries.fetch_add(1, Ordering::Relaxed) < allowed {
            true
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    fn roll(&self, now_ms: u64) {
        let second = now_ms / 1000;
        let window = self.window_sec.load(Ordering::Relaxed);
        if window != second
            && self
                .window_sec
                .compare_exchange(window, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.requests.reset();
            self.retries.store(0, Ordering::Relaxed);
        }
    }
}

/// One cluster at run time.
#[derive(Debug)]
pub struct Cluster {
    /// Name from the config.
    pub name: String,
    /// The config it was built from.
    pub config: ClusterConfig,
    /// Where hashing balancers and sticky sessions find their key.
    pub hash_key: Option<HashKey>,
    /// Current backends and balancer.
    pub set: ArcSwap<BackendSet>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Retry budget.
    pub budget: RetryBudget,
    /// Passive ejection: failures in a row (0: off).
    pub passive_failures: u32,
    /// Passive ejection: whether 5xx counts as a failure.
    pub passive_5xx: bool,
    /// Passive ejection: base ejection time.
    pub ejection_time: Duration,
    /// Time to open a backend connection.
    pub connect_timeout: Duration,
    /// Time for a backend's response head.
    pub response_timeout: Duration,
    /// Woken when a request ends, for requests queued at connection limits.
    pub released: Notify,
}

impl Cluster {
    /// Builds a cluster from config and an initial backend list, reusing
    /// backends of `previous` (same address and weight) with their state.
    pub fn new(
        config: &ClusterConfig,
        specs: &[BackendSpec],
        previous: Option<&Cluster>,
    ) -> Cluster {
        let passive = config.passive.as_ref();
        let cluster = Cluster {
            name: config.name.get_ref().clone(),
            config: config.clone(),
            hash_key: config
                .hash_key
                .as_ref()
                .and_then(|key| HashKey::parse(key.get_ref())),
            set: ArcSwap::from_pointee(BackendSet {
                backends: Vec::new(),
                balancer: Balancer::new(config.balance, &[]),
            }),
            retry: RetryPolicy::from_config(config.retry.as_ref()),
            budget: RetryBudget::default(),
            passive_failures: passive.map_or(0, |p| p.consecutive_failures),
            passive_5xx: passive.is_some_and(|p| p.count_5xx),
            ejection_time: passive.map_or(Duration::from_secs(10), |p| p.ejection_time),
            connect_timeout: config.connect_timeout.unwrap_or(CONNECT_TIMEOUT_DEFAULT),
            response_timeout: config.response_timeout.unwrap_or(RESPONSE_TIMEOUT_DEFAULT),
            released: Notify::new(),
        };
        let reuse = previous.map(|p| p.set.load_full());
        cluster.apply(specs, reuse.as_deref());
        cluster
    }

    /// The balancing algorithm.
    pub fn balance(&self) -> BalanceKind {
        self.config.balance
    }

    /// Replaces the backend list, keeping the state of backends that stay.
    pub fn update(&self, specs: &[BackendSpec]) {
        let current = self.set.load_full();
        self.apply(specs, Some(&current));
    }

    fn apply(&self, specs: &[BackendSpec], previous: Option<&BackendSet>) {
        let known: HashMap<SocketAddr, &Arc<Backend>> = previous
            .map(|set| set.backends.iter().map(|b| (b.addr, b)).collect())
            .unwrap_or_default();
        let backends: Vec<Arc<Backend>> = specs
            .iter()
            .map(|spec| match known.get(&spec.addr) {
                Some(backend) if backend.weight == spec.weight.max(1) => Arc::clone(backend),
                _ => Arc::new(Backend::new(spec.addr, spec.weight)),
            })
            .collect();
        for backend in &backends {
            backend.set_limits(self.config.backend_connections_max, self.config.slow_start);
        }
        let balancer = Balancer::new(self.config.balance, &backends);
        self.set.store(Arc::new(BackendSet { backends, balancer }));
    }

    /// The static backend list of the config.
    pub fn static_specs(config: &ClusterConfig) -> Vec<BackendSpec> {
        config
            .backends
            .iter()
            .map(|b| BackendSpec {
                addr: *b.addr.get_ref(),
                weight: *b.weight.get_ref(),
            })
            .collect()
    }

    /// Whether any backend is up (healthy and not ejected), limits aside.
    pub fn any_up(&self) -> bool {
        let now = now_ms();
        self.set.load().backends.iter().any(|b| b.is_up(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_minimum_plus_share() {
        let policy = RetryPolicy::from_config(None);
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.record_request(5_000);
        }
        let granted = (0..100)
            .filter(|_| budget.try_retry(&policy, 5_000))
            .count();
        assert_eq!(granted, 10 + 20, "10 per second plus 20% of 100 requests");
        assert!(
            budget.try_retry(&policy, 6_000),
            "a new window refills the budget"
        );
    }
}
