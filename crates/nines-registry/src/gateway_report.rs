//! A gateway reports to the store: its status (clusters, backends and their
//! counters) under `/nines/gateways/NAME` on a short lease it keeps alive,
//! so a dead gateway disappears by itself, and the outcomes of the requests
//! it proxied per service, per minute and per hour
//! ([`crate::request_buckets`]), which the availability report reads. A
//! cluster fed by a registry service is counted under the service's name,
//! any other under its own name. The status value is `{"name",
//! "updated_ms", "clusters"}`, each cluster as the gateway's
//! `backends_json` gives it plus `service`, `accounting` (`listener` or
//! `backend`) and `requests` / `failed` counted since the reporter started,
//! and for a cluster counted by its listeners `p99_ms`, the latency of the
//! last period's 99th percentile request as the upper bound of its
//! histogram bucket (null without requests).
//!
//! What a request outcome is: where every HTTP listener that routes to a
//! cluster routes to that cluster only, the listeners' own counters give
//! exactly what clients saw (requests, and 5xx answered, including the 503
//! of "no backend" and the 502/504 after failed attempts). Otherwise the
//! cluster's backends' counters are used: attempts, and attempts that failed
//! or answered 5xx. Counters are cumulative; the reporter turns them into
//! deltas ([`DeltaTracker`], robust to a counter that starts over) and adds
//! them to the current minute's and hour's buckets ([`Buckets`]). A bucket
//! key holds the bucket's total, so rewriting it is idempotent and a failed
//! write is simply retried; after a restart the stored totals of the buckets
//! the run started in are read back before they are rewritten. Each publish
//! period is one transaction: the status, the changed buckets and the first
//! sighting of a service. Every ten minutes a sweep deletes the buckets past
//! their retention of every service in the index of services with traffic,
//! and drops from that index the services with no bucket left. This module
//! only reads the gateway; it never changes its state.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use etcd_client::{DeleteOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use nines_gateway::config::Protocol;
use nines_gateway::Gateway;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::request_buckets::{
    bucket_prefix, fetch_request_services, key_name, BucketId, Buckets, DeltaTracker, Outcomes,
    Resolution, REQUESTS, REQUEST_SERVICES,
};
use crate::store::{now_ms, prefix_end, Registry};

/// Gateway status: `GATEWAYS NAME` = `{"name", "updated_ms", "clusters", "listeners"}`.
pub const GATEWAYS: &str = "/nines/gateways/";
/// How often a gateway publishes.
pub const PUBLISH_PERIOD: Duration = Duration::from_secs(1);
/// TTL of the status key's lease: a gateway silent this long disappears.
pub const STATUS_LEASE_TTL_SECS: i64 = 5;
/// Publish periods between two sweeps of old buckets.
const SWEEP_PERIODS: u64 = 600;
/// Most services a sweep covers from the index of services with traffic.
const INDEX_SWEEP_MAX: usize = 1000;
/// Services per transaction of a sweep (two deletes each, or one nested
/// transaction each: within etcd's 128 operations per request).
const INDEX_SWEEP_BATCH: usize = 32;
/// Most operations in one publish transaction (the store allows 128).
const TXN_OPS_MAX: usize = 100;
/// Longest one publish may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the last publish (and lease revoke) at stop may take.
const FINAL_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed publishes in a row before a warning.
const FAILURES_WARNED: u32 = 3;
/// Most gateways listed by `GET /v1/gateways`.
const GATEWAYS_LISTED_MAX: i64 = 1000;
const _: () = assert!(STATUS_LEASE_TTL_SECS as u64 > 2 * PUBLISH_PERIOD.as_secs());
/// How the requests of each cluster are counted, from the gateway config:
/// the HTTP listeners dedicated to it, or (empty) its backends.
fn dedicated_listeners(config: &nines_gateway::Config) -> HashMap<String, Vec<String>> {
    let mut routes_to: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut shared: HashSet<String> = HashSet::new();
    for listener in &config.listeners {
        let clusters: BTreeSet<String> = listener
            .route
            .iter()
            .map(|r| r.cluster.get_ref().clone())
            .chain(listener.cluster.iter().map(|c| c.get_ref().clone()))
            .collect();
        let dedicated = listener.protocol == Protocol::Http && clusters.len() == 1;
        for cluster in &clusters {
            if dedicated {
                routes_to
                    .entry(cluster.clone())
                    .or_default()
                    .insert(listener.name.get_ref().clone());
            } else {
                shared.insert(cluster.clone());
            }
        }
    }
    routes_to
        .into_iter()
        .filter(|(cluster, _)| !shared.contains(cluster))
        .map(|(cluster, listeners)| (cluster, listeners.into_iter().collect()))
        .collect()
}

/// The running reporter. [`GatewayReporter::stop`] (or dropping it) ends the
/// task after a last publish and revokes the status lease.
pub struct GatewayReporter {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GatewayReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayReporter").finish_non_exhaustive()
    }
}

impl GatewayReporter {
    /// Ends the task and waits (bounded) for its last publish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(3 * FINAL_PUBLISH_TIMEOUT, task).await;
        }
    }
}

impl Drop for GatewayReporter {
    fn drop(&mut self) {
        // The task sees the closed channel, publishes once more and ends.
        drop(self.stop.take());
    }
}

/// Starts reporting `gateway` under `name` every [`PUBLISH_PERIOD`].
/// `config` is the gateway's config: it says which listeners serve which
/// cluster (clusters added by a later reload are counted by their backends).
/// Must be called inside a tokio runtime.
pub fn spawn(
    registry: Registry,
    gateway: Gateway,
    name: &str,
    config: &nines_gateway::Config,
) -> GatewayReporter {
    let (stop, stopped) = oneshot::channel();
    let reporter = Reporter {
        registry,
        gateway,
        name: key_name(name),
        listeners: dedicated_listeners(config),
        deltas: DeltaTracker::default(),
        buckets: Buckets::default(),
        cluster_totals: HashMap::new(),
        latency_seen: HashMap::new(),
        lease: None,
        services_indexed: HashSet::new(),
        started_ms: now_ms(),
        seeded: HashSet::new(),
        periods: 0,
        failures: 0,
    };
    GatewayReporter {
        stop: Some(stop),
        task: Some(tokio::spawn(reporter.run(stopped))),
    }
}

/// A lease kept alive with one stream.
struct Lease {
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

struct Reporter {
    registry: Registry,
    gateway: Gateway,
    name: String,
    listeners: HashMap<String, Vec<String>>,
    deltas: DeltaTracker,
    buckets: Buckets,
    /// Requests counted per cluster since the reporter started (status).
    cluster_totals: HashMap<String, Outcomes>,
    /// Each dedicated listener's latency bucket counts at the last sample,
    /// so a cluster's p99 is that of the requests of the last period.
    latency_seen: HashMap<String, Vec<u64>>,
    lease: Option<Lease>,
    services_indexed: HashSet<String>,
    /// When this run started: buckets holding it may have a stored share.
    started_ms: u64,
    seeded: HashSet<BucketId>,
    periods: u64,
    /// Publishes failed in a row (to warn once per outage).
    failures: u32,
}

/// The latency of a cluster's requests over one publish period: the bucket
/// counts of its dedicated listeners' histograms, less those of the last
/// sample.
#[derive(Debug, Default)]
struct LatencyPeriod {
    /// (upper bound in seconds, requests in the bucket this period).
    buckets: Vec<(f64, u64)>,
}

impl LatencyPeriod {
    /// Adds one listener's histogram `now` (as `ListenerMetrics::latency`
    /// gives it) against its counts at the last sample, `seen`, which it
    /// then replaces. A histogram that went down (a restarted listener)
    /// counts from zero.
    fn add(&mut self, now: &[(f64, u64)], seen: &mut Vec<u64>) {
        let reset = seen.len() != now.len() || now.iter().zip(seen.iter()).any(|((_, n), s)| n < s);
        if self.buckets.is_empty() {
            self.buckets = now.iter().map(|(bound, _)| (*bound, 0)).collect();
        }
        for (i, (_, count)) in now.iter().enumerate() {
            let before = if reset { 0 } else { seen[i] };
            if let Some(bucket) = self.buckets.get_mut(i) {
                bucket.1 += count - before;
            }
        }
        *seen = now.iter().map(|(_, n)| *n).collect();
    }

    /// The 99th percentile in milliseconds, as the upper bound of the
    /// bucket it falls in (a request slower than the last finite bound
    /// counts as that bound); `None` without requests this period.
    fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = total - total / 100;
        let mut cumulative = 0;
        let last_finite = self
            .buckets
            .iter()
            .map(|(bound, _)| *bound)
            .filter(|b| *b < f64::MAX)
            .fold(0.0, f64::max);
        for (bound, count) in &self.buckets {
            cumulative += count;
            if cumulative >= rank {
                let bound = if *bound < f64::MAX {
                    *bound
                } else {
                    last_finite
                };
                return Some(bound * 1000.0);
            }
        }
        Some(last_finite * 1000.0)
    }
}

/// Why one publish failed.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("store: {0}")]
    Store(#[from] etcd_client::Error),
    #[error("the status lease was not renewed")]
    LeaseLost,
    #[error("publish timed out")]
    Timeout,
}

impl Reporter {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(PUBLISH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => break,
            }
            self.publish_logged().await;
        }
        // The last counts; at a process's shutdown the store may be gone
        // already, which is no news worth a warning.
        match tokio::time::timeout(FINAL_PUBLISH_TIMEOUT, self.publish()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "last gateway report not published"),
            Err(_) => tracing::debug!("last gateway report timed out"),
        }
        if let Some(lease) = self.lease.take() {
            let _ = tokio::time::timeout(
                FINAL_PUBLISH_TIMEOUT,
                self.registry.client().lease_revoke(lease.id),
            )
            .await;
        }
    }

    async fn publish_logged(&mut self) {
        let result = match tokio::time::timeout(PUBLISH_TIMEOUT, self.publish()).await {
            Ok(result) => result,
            Err(_) => Err(PublishError::Timeout),
        };
        match result {
            Ok(()) => {
                if self.failures >= FAILURES_WARNED {
                    tracing::info!(gateway = self.name, "gateway report published again");
                }
                self.failures = 0;
            }
            Err(error) => {
                // Warn once per outage, and not for the first periods: a
                // member's own store may not serve yet when its gateway
                // starts, and a store that is down for long would otherwise
                // fill the log every period.
                self.failures += 1;
                if self.failures == FAILURES_WARNED {
                    tracing::warn!(%error, gateway = self.name, "gateway report not published");
                } else {
                    tracing::debug!(%error, gateway = self.name, "gateway report not published");
                }
                // A new lease is taken next time; the old one expires on its own.
                self.lease = None;
            }
        }
    }

    /// Samples the counters, then writes status and buckets in one txn.
    async fn publish(&mut self) -> Result<(), PublishError> {
        let now = now_ms();
        let status = self.sample(now).await;
        let lease = self.renew_lease().await?;
        self.seed_restart_buckets().await?;
        let mut ops = vec![TxnOp::put(
            format!("{GATEWAYS}{}", self.name),
            serde_json::to_vec(&status).expect("status always serializes"),
            Some(PutOptions::new().with_lease(lease)),
        )];
        let mut services: BTreeSet<String> = BTreeSet::new();
        let changed = self.buckets.changed(TXN_OPS_MAX / 2);
        for (id, total) in &changed {
            services.insert(id.service.clone());
            ops.push(TxnOp::put(
                id.key(&self.name),
                serde_json::to_vec(total).expect("outcomes always serialize"),
                None,
            ));
        }
        let new_services: Vec<String> = services
            .into_iter()
            .filter(|s| !self.services_indexed.contains(s))
            .collect();
        for service in &new_services {
            ops.push(TxnOp::put(format!("{REQUEST_SERVICES}{service}"), "", None));
        }
        let sweep = self.periods.is_multiple_of(SWEEP_PERIODS);
        self.registry.client().txn(Txn::new().and_then(ops)).await?;
        self.periods += 1;
        self.services_indexed.extend(new_services);
        if sweep {
            self.sweep(now).await?;
        }
        let written: Vec<BucketId> = changed.into_iter().map(|(id, _)| id).collect();
        self.buckets.written(&written, now);
        Ok(())
    }

    /// The sweep, every [`SWEEP_PERIODS`]: deletes the buckets past their
    /// retention of every service in the index of services with gateway
    /// traffic (any gateway's, so a service whose gateways are gone ages out
    /// too), then keeps that index true: a service with no bucket left
    /// leaves it, and one of this gateway's services that another gateway's
    /// sweep took out while this one wrote a bucket goes back. Each service's
    /// index entry is decided by one nested transaction on the store's state
    /// at that moment (`If` no bucket `Then` delete `Else` put), so
    /// concurrent sweeps and bucket writes of other gateways cannot leave a
    /// service with buckets out of the index past the next sweep.
    async fn sweep(&mut self, now: u64) -> Result<(), PublishError> {
        let mut services: BTreeSet<String> = fetch_request_services(&self.registry)
            .await?
            .into_iter()
            .collect();
        services.extend(self.services_indexed.iter().cloned());
        let services: Vec<String> = services.into_iter().take(INDEX_SWEEP_MAX).collect();
        for batch in services.chunks(INDEX_SWEEP_BATCH) {
            let expired = batch.iter().flat_map(|service| {
                Resolution::ALL.map(|resolution| {
                    let from = bucket_prefix(service, resolution);
                    let cutoff = resolution.start(now.saturating_sub(resolution.retention_ms()));
                    let to = format!("{from}{cutoff:020}");
                    TxnOp::delete(from, Some(DeleteOptions::new().with_range(to)))
                })
            });
            let expired: Vec<TxnOp> = expired.collect();
            self.registry
                .client()
                .txn(Txn::new().and_then(expired))
                .await?;
        }
        // Then one nested transaction per service, a batch of them per request
        // (a nested compare does not see writes of its own request).
        for batch in services.chunks(INDEX_SWEEP_BATCH) {
            let checks = batch.iter().map(|service| {
                let buckets = format!("{REQUESTS}{service}/");
                let index = format!("{REQUEST_SERVICES}{service}");
                let none_left = Compare::version(buckets.clone(), CompareOp::Equal, 0)
                    .with_range(prefix_end(&buckets));
                TxnOp::txn(
                    Txn::new()
                        .when([none_left])
                        .and_then([TxnOp::delete(index.clone(), None)])
                        .or_else([TxnOp::put(index, "", None)]),
                )
            });
            let answer = self
                .registry
                .client()
                .txn(Txn::new().and_then(checks.collect::<Vec<_>>()))
                .await?;
            for (service, nested) in batch.iter().zip(answer.op_responses()) {
                if matches!(nested, TxnOpResponse::Txn(t) if t.succeeded()) {
                    self.services_indexed.remove(service);
                }
            }
        }
        Ok(())
    }

    /// Reads the gateway's counters into buckets; returns the status value.
    async fn sample(&mut self, now: u64) -> Value {
        let mut snapshot = self.gateway.backends_json().await;
        let mut clusters = match snapshot.get_mut("clusters").map(Value::take) {
            Some(Value::Array(clusters)) => clusters,
            _ => Vec::new(),
        };
        let listeners = snapshot
            .get_mut("listeners")
            .map(Value::take)
            .unwrap_or_else(|| json!([]));
        let mut seen = HashSet::new();
        for entry in &mut clusters {
            let Some(name) = entry.get("name").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let Some(cluster) = self.gateway.cluster(&name).await else {
                continue;
            };
            let service = key_name(cluster.config.service.as_deref().unwrap_or(&name));
            let mut delta = Outcomes::default();
            let mut latency = LatencyPeriod::default();
            let accounting = match self.listeners.get(&name) {
                Some(listeners) => {
                    for listener in listeners {
                        let metrics = self.gateway.metrics().listener(listener);
                        let (_, _, buckets) = metrics.latency();
                        let prior = self.latency_seen.entry(listener.clone()).or_default();
                        latency.add(&buckets, prior);
                        // Failures first: a request is counted before its
                        // answer, so this order never sees more failed
                        // than requests.
                        let failed = metrics.responses()[4];
                        let unrouted = metrics.unrouted.load(std::sync::atomic::Ordering::Relaxed);
                        let requests = metrics.requests().saturating_sub(unrouted);
                        let source = format!("listener/{listener}");
                        delta.add(self.deltas.delta(&source, Outcomes { requests, failed }));
                        seen.insert(source);
                    }
                    "listener"
                }
                None => {
                    for backend in cluster.set.load().backends.iter() {
                        let load = |v: &std::sync::atomic::AtomicU64| {
                            v.load(std::sync::atomic::Ordering::Relaxed)
                        };
                        let failed = load(&backend.counters.failures)
                            + load(&backend.counters.responses_5xx);
                        let requests = backend.counters.requests.get();
                        let source = format!("backend/{name}/{}", backend.addr);
                        delta.add(self.deltas.delta(&source, Outcomes { requests, failed }));
                        seen.insert(source);
                    }
                    "backend"
                }
            };
            self.buckets.add(&service, now, delta);
            let total = self.cluster_totals.entry(name.clone()).or_default();
            total.add(delta);
            if let Value::Object(fields) = entry {
                fields.insert("service".into(), json!(service));
                fields.insert("accounting".into(), json!(accounting));
                fields.insert("requests".into(), json!(total.requests));
                fields.insert("failed".into(), json!(total.failed));
                fields.insert("p99_ms".into(), json!(latency.p99_ms()));
            }
        }
        self.deltas.bound(&seen);
        json!({"name": self.name, "updated_ms": now, "clusters": clusters, "listeners": listeners})
    }

    /// The status lease, renewed (or granted anew).
    async fn renew_lease(&mut self) -> Result<i64, PublishError> {
        if let Some(lease) = self.lease.as_mut() {
            lease.keeper.keep_alive().await?;
            match lease.stream.message().await? {
                Some(answer) if answer.ttl() > 0 => return Ok(lease.id),
                _ => {
                    self.lease = None;
                    return Err(PublishError::LeaseLost);
                }
            }
        }
        let mut client = self.registry.client();
        let granted = client.lease_grant(STATUS_LEASE_TTL_SECS, None).await?;
        let (keeper, stream) = client.lease_keep_alive(granted.id()).await?;
        self.lease = Some(Lease {
            id: granted.id(),
            keeper,
            stream,
        });
        Ok(granted.id())
    }

    /// Adds what a previous run of this gateway stored for the buckets this
    /// run started in, before they are rewritten.
    async fn seed_restart_buckets(&mut self) -> Result<(), PublishError> {
        let pending: Vec<BucketId> = self
            .buckets
            .changed(TXN_OPS_MAX / 2)
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| {
                id.start_ms <= id.resolution.start(self.started_ms) && !self.seeded.contains(id)
            })
            .collect();
        for id in pending {
            let response = self.registry.client().get(id.key(&self.name), None).await?;
            if let Some(stored) = response
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice::<Outcomes>(kv.value()).ok())
            {
                self.buckets.seed(&id, stored);
            }
            self.seeded.insert(id);
        }
        Ok(())
    }
}

/// Every live gateway's status, by name.
pub async fn fetch_gateways(registry: &Registry) -> Result<Vec<Value>, etcd_client::Error> {
    let response = registry
        .client()
        .get(
            GATEWAYS,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_limit(GATEWAYS_LISTED_MAX),
            ),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect())
}

/// The HTTP route `GET /v1/gateways`: `{"gateways": [{"name",
/// "updated_ms", "clusters"}]}`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v1/gateways", get(list_gateways))
        .with_state(registry)
}

async fn list_gateways(State(registry): State<Registry>) -> Response {
    match fetch_gateways(&registry).await {
        Ok(gateways) => Json(json!({ "gateways": gateways })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "unavailable", "message": e.to_string()}})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_bucket_of_the_periods_99th_percentile_request() {
        let bounds = [0.001, 0.01, 0.1, f64::MAX];
        let hist =
            |counts: [u64; 4]| -> Vec<(f64, u64)> { bounds.iter().copied().zip(counts).collect() };
        let mut seen = Vec::new();
        let mut first = LatencyPeriod::default();
        first.add(&hist([990, 5, 5, 0]), &mut seen);
        assert_eq!(first.p99_ms(), Some(1.0), "990 of 1000 under 1 ms");
        // The next period: 100 new requests, 2 of them slow.
        let mut next = LatencyPeriod::default();
        next.add(&hist([1088, 5, 5, 2]), &mut seen);
        assert_eq!(
            next.p99_ms(),
            Some(100.0),
            "the +Inf bucket reads as the last bound"
        );
        // Nothing new: no p99.
        let mut idle = LatencyPeriod::default();
        idle.add(&hist([1088, 5, 5, 2]), &mut seen);
        assert_eq!(idle.p99_ms(), None);
        // A restarted listener counts from zero; two listeners add up.
        let mut restarted = LatencyPeriod::default();
        restarted.add(&hist([0, 10, 0, 0]), &mut seen);
        let mut other = Vec::new();
        restarted.add(&hist([90, 0, 0, 0]), &mut other);
        assert_eq!(restarted.p99_ms(), Some(10.0));
    }

    #[test]
    fn only_listeners_that_serve_one_cluster_alone_count_it() {
        let text = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
cluster = "web"

[[listener]]
name = "mixed"
bind = "127.0.0.1:0"
protocol = "http"
cluster = "api"
[[listener.route]]
path_prefix = "/x"
cluster = "other"

[[listener]]
name = "api"
bind = "127.0.0.1:0"
protocol = "http"
cluster = "api"

[[cluster]]
name = "web"
backends = [{ addr = "127.0.0.1:1" }]

[[cluster]]
name = "api"
backends = [{ addr = "127.0.0.1:2" }]

[[cluster]]
name = "other"
backends = [{ addr = "127.0.0.1:3" }]
"#;
        let config = nines_gateway::Config::parse(std::path::Path::new("t.toml"), text)
            .expect("valid config");
        let dedicated = dedicated_listeners(&config);
        assert_eq!(dedicated.get("web"), Some(&vec!["web".to_owned()]));
        assert_eq!(dedicated.get("api"), None, "also behind a shared listener");
        assert_eq!(dedicated.get("other"), None);
    }
}
