//! Prometheus metrics. The data path only bumps plain atomics (per listener
//! here, per backend in `backend`); a `prometheus-client` collector reads
//! them at scrape time, so no lock or map lookup sits on the request path.
//! Counters survive reloads: listeners keep theirs by name, routes by
//! listener and route label (`RouteConfig::label`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::backend::now_ms;
use crate::cluster::Cluster;
use crate::worker::{current, POOL_SLOTS};

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub connections_active: AtomicU64,
    /// Requests no route matched (404).
    pub unrouted: AtomicU64,
    /// Requests answered 503 because no backend was available.
    pub no_backend: AtomicU64,
    /// Requests that failed upstream after every attempt (502/504).
    pub upstream_failed: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Retries refused by the retry budget.
    pub retries_over_budget: AtomicU64,
    /// Requests refused for ambiguous framing (smuggling attempts).
    pub smuggling_rejected: AtomicU64,
    /// Requests refused for a body over the limit.
    pub body_too_large: AtomicU64,
    /// Connections that ended with malformed HTTP or an oversize head.
    pub malformed: AtomicU64,
    /// Connections closed because the head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// TCP connections that found no backend to connect to.
    pub tcp_connect_failed: AtomicU64,
    /// The counters every request bumps, one shard per worker.
    per_request: RequestStats,
}

/// Requests, responses by status class and the latency histogram of one
/// listener or one route, sharded per worker. A route's are created when the
/// config is loaded and held by the compiled route, so counting a request
/// is an index and three atomic adds: no lock, no map lookup.
#[derive(Debug, Default)]
pub struct RequestStats {
    shards: [RequestShard; COUNTER_SHARDS],
}

/// The route label of requests no configured route matched that went to
/// the listener's `cluster`.
pub const DEFAULT_ROUTE_LABEL: &str = "(default)";

/// Shards of the per-request counters; workers beyond this share shards.
pub const COUNTER_SHARDS: usize = POOL_SLOTS;

/// Upper bounds (seconds) of the request latency histogram's buckets.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What one worker counts for every request of a listener: requests,
/// responses by class and the latency histogram. Each worker writes only its
/// own shard, aligned to its own cache lines, so two workers never hand a
/// counter's line back and forth; a scrape sums the shards.
#[derive(Debug)]
#[repr(align(128))]
struct RequestShard {
    requests: AtomicU64,
    responses: [AtomicU64; 5],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    /// Sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Default for RequestShard {
    fn default() -> Self {
        RequestShard {
            requests: AtomicU64::new(0),
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A counter that every worker bumps on the request path: each worker adds
/// to its own cache-line-aligned shard and a reader sums them, so counting
/// never moves a cache line between cores.
#[derive(Debug, Default)]
pub struct ShardedCounter {
    shards: [PaddedCounter; COUNTER_SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

impl ShardedCounter {
    /// Adds `n` on the calling worker's shard.
    pub fn add(&self, n: u64) {
        self.shards[current() % COUNTER_SHARDS]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The total over all shards.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Sets every shard to zero.
    pub fn reset(&self) {
        for shard in &self.shards {
            shard.0.store(0, Ordering::Relaxed);
        }
    }
}

impl RequestStats {
    fn shard(&self) -> &RequestShard {
        &self.shards[current() % COUNTER_SHARDS]
    }

    /// Counts a request.
    pub fn count_request(&self) {
        self.shard().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.requests.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Responses sent by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub fn responses(&self) -> [u64; 5] {
        let mut total = [0u64; 5];
        for shard in &self.shards {
            for (sum, count) in total.iter_mut().zip(&shard.responses) {
                *sum = sum.wrapping_add(count.load(Ordering::Relaxed));
            }
        }
        total
    }

    /// Counts a response status.
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.shard().responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response status and the time it took to answer.
    pub fn observe(&self, status: u16, elapsed: std::time::Duration) {
        let shard = self.shard();
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        shard.responses[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        shard.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The latency histogram: (sum in seconds, count, per-bucket counts).
    /// The count is the buckets' total, so a scrape racing an observation
    /// stays consistent.
    pub fn latency(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut counts = [0u64; LATENCY_BUCKETS_SECONDS.len() + 1];
        let mut sum_nanos = 0u64;
        for shard in &self.shards {
            for (total, bucket) in counts.iter_mut().zip(&shard.buckets) {
                *total = total.wrapping_add(bucket.load(Ordering::Relaxed));
            }
            sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
        }
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(counts)
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        (sum_nanos as f64 / 1e9, count, buckets)
    }
}

impl ListenerMetrics {
    /// Counts a request that reached the router.
    pub fn count_request(&self) {
        self.per_request.count_request();
    }

    /// Requests that reached the router.
    pub fn requests(&self) -> u64 {
        self.per_request.requests()
    }

    /// Responses sent by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub fn responses(&self) -> [u64; 5] {
        self.per_request.responses()
    }

    /// Counts a response status.
    pub fn count_status(&self, status: u16) {
        self.per_request.count_status(status);
    }

    /// Counts a response status and the time it took to answer.
    pub fn observe(&self, status: u16, elapsed: std::time::Duration) {
        self.per_request.observe(status, elapsed);
    }

    /// The latency histogram: (sum in seconds, count, per-bucket counts
    /// with their upper bounds in seconds, the last one `f64::MAX`).
    pub fn latency(&self) -> (f64, u64, Vec<(f64, u64)>) {
        self.per_request.latency()
    }
}

/// Every metric source of a gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    listeners: Mutex<BTreeMap<String, Arc<ListenerMetrics>>>,
    /// Per route, keyed by (listener, route label).
    routes: Mutex<BTreeMap<(String, String), Arc<RequestStats>>>,
    clusters: ArcSwap<Vec<Arc<Cluster>>>,
    /// Reloads applied.
    pub reloads: AtomicU64,
    /// Reloads refused (bad config).
    pub reloads_failed: AtomicU64,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
}

impl Metrics {
    /// The counters of listener `name`, created on first use.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let mut listeners = self
            .listeners
            .lock()
            .expect("metrics lock is never poisoned");
        Arc::clone(listeners.entry(name.to_owned()).or_default())
    }

    /// The counters of route `route` of listener `listener`, created on
    /// first use and kept across reloads by these two names.
    pub fn route(&self, listener: &str, route: &str) -> Arc<RequestStats> {
        let mut routes = self.routes.lock().expect("metrics lock is never poisoned");
        Arc::clone(
            routes
                .entry((listener.to_owned(), route.to_owned()))
                .or_default(),
        )
    }

    /// Publishes the current clusters for scraping.
    pub fn set_clusters(&self, clusters: Vec<Arc<Cluster>>) {
        self.clusters.store(Arc::new(clusters));
    }

    /// Renders the Prometheus text exposition.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("nines_gateway");
        registry.register_collector(Box::new(Scrape(Arc::clone(self))));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

#[derive(Debug)]
struct Scrape(Arc<Metrics>);

type Labels = Vec<(&'static str, String)>;
/// A named counter read from a listener's metrics.
type ListenerCounter<'a> = (&'a str, &'a str, &'a dyn Fn(&ListenerMetrics) -> u64);
/// A named counter read from a backend.
type BackendCounter<'a> = (
    &'a str,
    &'a str,
    &'a dyn Fn(&crate::backend::Backend) -> u64,
);

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let listeners: Vec<(String, Arc<ListenerMetrics>)> = self
            .0
            .listeners
            .lock()
            .expect("metrics lock is never poisoned")
            .iter()
            .map(|(name, m)| (name.clone(), Arc::clone(m)))
            .collect();
        let per_listener = |pick: &dyn Fn(&ListenerMetrics) -> u64| -> Vec<(Labels, u64)> {
            listeners
                .iter()
                .map(|(name, m)| (vec![("listener", name.clone())], pick(m)))
                .collect()
        };
        let simple: [ListenerCounter<'_>; 12] = [
            ("connections", "Client connections accepted.", &|m| {
                load(&m.connections)
            }),
            ("requests", "Requests received.", &|m| m.requests()),
            ("unrouted", "Requests no route matched.", &|m| {
                load(&m.unrouted)
            }),
            (
                "no_backend",
                "Requests answered 503 for lack of an available backend.",
                &|m| load(&m.no_backend),
            ),
            (
                "upstream_failed",
                "Requests that failed upstream after every attempt.",
                &|m| load(&m.upstream_failed),
            ),
            ("retries", "Retries to another backend.", &|m| {
                load(&m.retries)
            }),
            (
                "retries_over_budget",
                "Retries refused by the retry budget.",
                &|m| load(&m.retries_over_budget),
            ),
            (
                "smuggling_rejected",
                "Requests refused for ambiguous framing.",
                &|m| load(&m.smuggling_rejected),
            ),
            (
                "body_too_large",
                "Requests refused for a body over the limit.",
                &|m| load(&m.body_too_large),
            ),
            (
                "malformed",
                "Connections ended by malformed or oversize HTTP.",
                &|m| load(&m.malformed),
            ),
            (
                "header_timeouts",
                "Connections closed for a slow request head.",
                &|m| load(&m.header_timeouts),
            ),
            (
                "tcp_connect_failed",
                "TCP connections with no reachable backend.",
                &|m| load(&m.tcp_connect_failed),
            ),
        ];
        for (name, help, pick) in simple {
            counter_family(&mut encoder, name, help, &per_listener(pick))?;
        }
        let mut responses = Vec::new();
        for (name, m) in &listeners {
            for (class, count) in m.responses().into_iter().enumerate() {
                responses.push((
                    vec![
                        ("listener", name.clone()),
                        ("class", format!("{}xx", class + 1)),
                    ],
                    count,
                ));
            }
        }
        counter_family(
            &mut encoder,
            "responses",
            "Responses sent, by status class.",
            &responses,
        )?;
        let active: Vec<(Labels, i64)> = listeners
            .iter()
            .map(|(name, m)| {
                (
                    vec![("listener", name.clone())],
                    load(&m.connections_active) as i64,
                )
            })
            .collect();
        gauge_family(
            &mut encoder,
            "connections_active",
            "Client connections open now.",
            &active,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "request_duration_seconds",
                "Time from a request's arrival to its response head, by listener.",
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            for (name, m) in &listeners {
                let (sum, count, buckets) = m.latency();
                let labels: Labels = vec![("listener", name.clone())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<Labels>(sum, count, &buckets, None)?;
            }
        }
        self.encode_routes(&mut encoder)?;
        self.encode_backends(&mut encoder)?;
        counter_family(
            &mut encoder,
            "reloads",
            "Config reloads applied.",
            &[(vec![], load(&self.0.reloads))],
        )?;
        counter_family(
            &mut encoder,
            "reloads_failed",
            "Config reloads refused.",
            &[(vec![], load(&self.0.reloads_failed))],
        )?;
        Ok(())
    }
}

impl Scrape {
    fn encode_routes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let routes: Vec<(Labels, Arc<RequestStats>)> = self
            .0
            .routes
            .lock()
            .expect("metrics lock is never poisoned")
            .iter()
            .map(|((listener, route), stats)| {
                (
                    vec![("listener", listener.clone()), ("route", route.clone())],
                    Arc::clone(stats),
                )
            })
            .collect();
        let requests: Vec<(Labels, u64)> = routes
            .iter()
            .map(|(labels, stats)| (labels.clone(), stats.requests()))
            .collect();
        counter_family(
            encoder,
            "route_requests",
            "Requests routed, by route.",
            &requests,
        )?;
        let mut responses = Vec::new();
        for (labels, stats) in &routes {
            for (class, count) in stats.responses().into_iter().enumerate() {
                let mut labels = labels.clone();
                labels.push(("class", format!("{}xx", class + 1)));
                responses.push((labels, count));
            }
        }
        counter_family(
            encoder,
            "route_responses",
            "Responses sent, by route and status class.",
            &responses,
        )?;
        let mut family = encoder.encode_descriptor(
            "route_request_duration_seconds",
            "Time from a request's arrival to its response head, by route.",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for (labels, stats) in &routes {
            let (sum, count, buckets) = stats.latency();
            family
                .encode_family(labels)?
                .encode_histogram::<Labels>(sum, count, &buckets, None)?;
        }
        Ok(())
    }

    fn encode_backends(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = now_ms();
        let clusters = self.0.clusters.load();
        let mut rows: Vec<(Labels, &crate::backend::Backend)> = Vec::new();
        let sets: Vec<_> = clusters
            .iter()
            .map(|c| (c.name.clone(), c.set.load_full()))
            .collect();
        for (cluster, set) in &sets {
            for backend in &set.backends {
                rows.push((
                    vec![
                        ("cluster", cluster.clone()),
                        ("backend", backend.addr.to_string()),
                    ],
                    backend,
                ));
            }
        }
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let counters: [BackendCounter<'_>; 5] = [
            ("backend_requests", "Attempts sent to a backend.", &|b| {
                b.counters.requests.get()
            }),
            (
                "backend_failures",
                "Attempts that failed (connect, reset, timeout).",
                &|b| load(&b.counters.failures),
            ),
            (
                "backend_responses_5xx",
                "5xx responses from a backend.",
                &|b| load(&b.counters.responses_5xx),
            ),
            (
                "backend_ejections",
                "Passive ejections of a backend.",
                &|b| load(&b.counters.ejections),
            ),
            (
                "backend_marked_down",
                "Times active checks took a backend out.",
                &|b| load(&b.counters.marked_down),
            ),
        ];
        for (name, help, pick) in counters {
            let values: Vec<_> = rows
                .iter()
                .map(|(labels, b)| (labels.clone(), pick(b)))
                .collect();
            counter_family(encoder, name, help, &values)?;
        }
        let up: Vec<_> = rows
            .iter()
            .map(|(l, b)| (l.clone(), i64::from(b.is_up(now))))
            .collect();
        gauge_family(
            encoder,
            "backend_up",
            "1 when the backend takes traffic.",
            &up,
        )?;
        let active: Vec<_> = rows
            .iter()
            .map(|(l, b)| (l.clone(), b.active() as i64))
            .collect();
        gauge_family(
            encoder,
            "backend_active",
            "Requests in flight on a backend.",
            &active,
        )?;
        let ewma: Vec<_> = rows
            .iter()
            .map(|(l, b)| (l.clone(), (b.ewma_ns() / 1000) as i64))
            .collect();
        gauge_family(
            encoder,
            "backend_latency_ewma_us",
            "Peak-EWMA response time.",
            &ewma,
        )?;
        Ok(())
    }
}
