//! Prometheus metrics of a member, served at `GET /metrics` in the
//! OpenMetrics text format. Raft, store and lease figures are read from
//! [`RaftNode`] when a scrape arrives (collector style), so the write path
//! pays nothing for them. gRPC calls are counted by a tower layer
//! ([`GrpcMetricsLayer`]) that only bumps atomics in a fixed table indexed by
//! method: no lock and no map lookup per request. This module owns the
//! metric names; it never changes Raft or store state.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http_body::{Body, Frame, SizeHint};
use nines_raft::stats::Histogram;
use nines_raft::{RaftNode, ServerState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of the exposition `prometheus-client` writes.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often the leader tracker looks at the Raft term. Elections take at
/// least the election timeout (200 ms and more), so a leader that lasted
/// longer than this is never missed.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Upper bounds (seconds) of the gRPC latency histogram's buckets.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// gRPC status codes 0..=16, in order, by the names grpc-go prints.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CODE_CANCELED: usize = 1;
const CODE_UNKNOWN: usize = 2;

/// The gRPC methods a member serves: (service, method, streaming). A call
/// to any other path is counted under `unknown` so that clients cannot grow
/// the label set.
const METHODS: [(&str, &str, bool); 30] = [
    ("etcdserverpb.KV", "Range", false),
    ("etcdserverpb.KV", "Put", false),
    ("etcdserverpb.KV", "DeleteRange", false),
    ("etcdserverpb.KV", "Txn", false),
    ("etcdserverpb.KV", "Compact", false),
    ("etcdserverpb.Watch", "Watch", true),
    ("etcdserverpb.Lease", "LeaseGrant", false),
    ("etcdserverpb.Lease", "LeaseRevoke", false),
    ("etcdserverpb.Lease", "LeaseKeepAlive", true),
    ("etcdserverpb.Lease", "LeaseTimeToLive", false),
    ("etcdserverpb.Lease", "LeaseLeases", false),
    ("etcdserverpb.Cluster", "MemberAdd", false),
    ("etcdserverpb.Cluster", "MemberRemove", false),
    ("etcdserverpb.Cluster", "MemberUpdate", false),
    ("etcdserverpb.Cluster", "MemberList", false),
    ("etcdserverpb.Cluster", "MemberPromote", false),
    ("etcdserverpb.Maintenance", "Alarm", false),
    ("etcdserverpb.Maintenance", "Status", false),
    ("etcdserverpb.Maintenance", "Defragment", false),
    ("etcdserverpb.Maintenance", "Hash", false),
    ("etcdserverpb.Maintenance", "HashKV", false),
    ("etcdserverpb.Maintenance", "Snapshot", true),
    ("etcdserverpb.Maintenance", "MoveLeader", false),
    ("v3lockpb.Lock", "Lock", false),
    ("v3lockpb.Lock", "Unlock", false),
    ("v3electionpb.Election", "Campaign", false),
    ("v3electionpb.Election", "Proclaim", false),
    ("v3electionpb.Election", "Leader", false),
    ("v3electionpb.Election", "Observe", true),
    ("v3electionpb.Election", "Resign", false),
];
/// The index under which calls to unknown paths are counted.
const METHOD_UNKNOWN: usize = METHODS.len();
/// The index of `Watch` in [`METHODS`].
const METHOD_WATCH: usize = 5;
const _: () = assert!(METHOD_WATCH < METHODS.len());

/// The metrics of one member: what the gRPC layer counts plus what is read
/// from the Raft node at scrape time. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    node: RaftNode,
    grpc: Arc<GrpcStats>,
    leader_changes: Arc<AtomicU64>,
    /// Other parts of the process (the registry) that add their figures.
    extra: Arc<Vec<Arc<dyn Collector>>>,
}

impl Metrics {
    /// Metrics for the member `node`.
    pub fn new(node: RaftNode) -> Metrics {
        Metrics {
            node,
            grpc: Arc::new(GrpcStats::new()),
            leader_changes: Arc::new(AtomicU64::new(0)),
            extra: Arc::new(Vec::new()),
        }
    }

    /// These metrics plus what `collectors` report at each scrape.
    pub fn with_collectors(mut self, collectors: Vec<Arc<dyn Collector>>) -> Metrics {
        self.extra = Arc::new(collectors);
        self
    }

    /// The gauge of active watchers, which the Watch service keeps.
    pub fn watchers_gauge(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.grpc.watchers)
    }

    /// The tower layer that counts gRPC calls into these metrics.
    pub fn grpc_layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            stats: Arc::clone(&self.grpc),
        }
    }

    /// Follows the Raft term and counts leader changes until `stop` turns
    /// true. It reads only openraft's metrics snapshot, never the log.
    pub async fn track_leader_changes(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut seen: Option<(u64, u64)> = None;
        let mut ticker = tokio::time::interval(LEADER_POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // The full status is cloned only when the term moved or no
            // leader was known yet: a leader changes only with the term.
            if seen.is_some_and(|(term, _)| term == self.node.term()) {
                continue;
            }
            let st = self.node.status();
            if let Some(leader) = st.leader {
                if seen != Some((st.term, leader)) {
                    seen = Some((st.term, leader));
                    self.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Renders the OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("nines");
        registry.register_collector(Box::new(Scrape(self.clone())));
        for collector in self.extra.iter() {
            registry.register_collector(Box::new(Shared(Arc::clone(collector))));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// `GET /metrics`.
    pub fn routes(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text).into_response() }
            }),
        )
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Counters of one gRPC method.
#[derive(Debug)]
struct MethodStats {
    /// Finished calls by gRPC status code.
    codes: [AtomicU64; GRPC_CODES.len()],
    /// Latency of finished unary calls.
    latency: Histogram,
    /// Streams open now (streaming methods only).
    streams_active: AtomicI64,
}

/// Every method's counters, indexed like [`METHODS`] plus one for unknown
/// paths.
#[derive(Debug)]
struct GrpcStats {
    methods: Vec<MethodStats>,
    /// Watchers open on this member's Watch streams.
    watchers: Arc<AtomicI64>,
}

impl GrpcStats {
    fn new() -> GrpcStats {
        GrpcStats {
            methods: (0..=METHODS.len())
                .map(|_| MethodStats {
                    codes: std::array::from_fn(|_| AtomicU64::new(0)),
                    latency: Histogram::new(&LATENCY_BUCKETS_SECONDS),
                    streams_active: AtomicI64::new(0),
                })
                .collect(),
            watchers: Arc::new(AtomicI64::new(0)),
        }
    }
}

/// The index in [`METHODS`] of a request path `/service/method`.
fn method_index(path: &str) -> usize {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return METHOD_UNKNOWN;
    };
    METHODS
        .iter()
        .position(|(s, m, _)| *m == method && *s == service)
        .unwrap_or(METHOD_UNKNOWN)
}

fn is_streaming(index: usize) -> bool {
    METHODS
        .get(index)
        .is_some_and(|(_, _, streaming)| *streaming)
}

/// The `grpc-status` of a header map, as an index into [`GRPC_CODES`].
fn grpc_code(headers: &http::HeaderMap) -> Option<usize> {
    let code: usize = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    // A code from outside the spec is not a label value we want to grow.
    Some(if code < GRPC_CODES.len() {
        code
    } else {
        CODE_UNKNOWN
    })
}

/// One call in flight. Dropping it records the call exactly once: with the
/// status code seen, `Unknown` if the stream ended without one, or
/// `Canceled` if it was dropped before it ended (the client went away).
struct CallRecord {
    stats: Arc<GrpcStats>,
    method: usize,
    started: Instant,
    code: Option<usize>,
    finished: Option<Instant>,
    ended: bool,
}

impl CallRecord {
    fn start(stats: Arc<GrpcStats>, method: usize) -> CallRecord {
        if is_streaming(method) {
            stats.methods[method]
                .streams_active
                .fetch_add(1, Ordering::Relaxed);
        }
        CallRecord {
            stats,
            method,
            started: Instant::now(),
            code: None,
            finished: None,
            ended: false,
        }
    }

    fn set_code(&mut self, code: usize) {
        if self.code.is_none() {
            self.code = Some(code);
            self.finished = Some(Instant::now());
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let m = &self.stats.methods[self.method];
        let code = match (self.code, self.ended) {
            (Some(code), _) => code,
            (None, true) => CODE_UNKNOWN,
            (None, false) => CODE_CANCELED,
        };
        m.codes[code].fetch_add(1, Ordering::Relaxed);
        if is_streaming(self.method) {
            m.streams_active.fetch_sub(1, Ordering::Relaxed);
        } else {
            let finished = self.finished.unwrap_or_else(Instant::now);
            m.latency.observe(finished.duration_since(self.started));
        }
    }
}

/// A tower layer counting gRPC calls by method and status code, with the
/// latency of unary calls and the number of open streams.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    stats: Arc<GrpcStats>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            stats: Arc::clone(&self.stats),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the gRPC routes.
#[derive(Clone, Debug)]
pub struct GrpcMetricsService<S> {
    inner: S,
    stats: Arc<GrpcStats>,
}

/// The future of one metered call.
type MeteredFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = method_index(req.uri().path());
        let mut call = CallRecord::start(Arc::clone(&self.stats), method);
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(response) => {
                    // A trailers-only answer (every error tonic sends) has
                    // its status in the headers.
                    if let Some(code) = grpc_code(response.headers()) {
                        call.set_code(code);
                    }
                    Ok(response.map(|inner| MeteredBody {
                        inner,
                        call: Some(call),
                    }))
                }
                Err(e) => {
                    call.set_code(CODE_UNKNOWN);
                    Err(e)
                }
            }
        })
    }
}

/// A response body that records its call when the trailers pass or the
/// body is dropped.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<CallRecord>,
}

impl<B> std::fmt::Debug for MeteredBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody").finish_non_exhaustive()
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
    B::Data: AsRef<[u8]>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(call) = this.call.as_mut() {
            match &poll {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                        call.set_code(code);
                    }
                }
                Poll::Ready(Some(Err(_))) => call.set_code(CODE_UNKNOWN),
                Poll::Ready(None) => call.ended = true,
                Poll::Pending => {}
            }
        }
        if matches!(poll, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Record now rather than when hyper gets round to dropping us.
            this.call = None;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The collector run at each scrape.
#[derive(Debug)]
struct Scrape(Metrics);

/// A collector shared between scrapes (each scrape builds a new registry).
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    // A family without samples is left out, as Prometheus clients do.
    if rows.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    gauges(encoder, name, help, &[(Vec::new(), value)])
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_raft(&mut encoder)?;
        self.encode_store(&mut encoder)?;
        self.encode_grpc(&mut encoder)
    }
}

impl Scrape {
    fn encode_raft(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let node = &self.0.node;
        let st = node.status();
        gauges(
            e,
            "member_info",
            "This member's name and id (always 1).",
            &[(
                vec![
                    ("name", node.name().to_owned()),
                    ("member_id", format!("{:x}", st.id)),
                ],
                1,
            )],
        )?;
        gauge(e, "raft_term", "Current Raft term.", to_i64(st.term))?;
        gauge(
            e,
            "raft_is_leader",
            "1 when this member is the leader.",
            i64::from(st.state == ServerState::Leader),
        )?;
        gauge(
            e,
            "raft_has_leader",
            "1 when this member knows a leader.",
            i64::from(st.leader.is_some()),
        )?;
        counters(
            e,
            "raft_leader_changes_seen",
            "Leaders this member has seen elected (a new term with a known leader).",
            &[(Vec::new(), self.0.leader_changes.load(Ordering::Relaxed))],
        )?;
        gauge(
            e,
            "raft_last_log_index",
            "Index of the last entry in this member's Raft log.",
            to_i64(st.last_log_index),
        )?;
        gauge(
            e,
            "raft_applied_index",
            "Index of the last Raft entry applied to the store.",
            to_i64(st.applied_index),
        )?;
        let states = [
            ServerState::Leader,
            ServerState::Follower,
            ServerState::Candidate,
            ServerState::Learner,
            ServerState::Shutdown,
        ];
        let rows: Vec<(Labels, i64)> = states
            .iter()
            .map(|s| {
                (
                    vec![("state", state_name(*s).to_owned())],
                    i64::from(*s == st.state),
                )
            })
            .collect();
        gauges(
            e,
            "raft_state",
            "1 for this member's current Raft role.",
            &rows,
        )?;
        let stats = node.stats();
        counters(
            e,
            "raft_proposals",
            "Client writes proposed through this member.",
            &[(Vec::new(), stats.proposals.load(Ordering::Relaxed))],
        )?;
        counters(
            e,
            "raft_proposals_failed",
            "Proposed writes that failed (no leader, timeout, leader change).",
            &[(Vec::new(), stats.proposals_failed.load(Ordering::Relaxed))],
        )?;
        counters(
            e,
            "raft_entries_proposed",
            "Log entries this member proposed as leader (each carries a batch of writes).",
            &[(Vec::new(), stats.entries_proposed.load(Ordering::Relaxed))],
        )?;
        for (name, help, h) in [
            (
                "raft_log_fsync_duration_seconds",
                "Duration of each Raft log fsync.",
                &stats.log_fsync,
            ),
            (
                "raft_log_append_duration_seconds",
                "Duration of each Raft log append (before its fsync).",
                &stats.log_append,
            ),
        ] {
            let snap = h.read();
            let mut family = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
            family.encode_histogram::<Labels>(snap.sum_seconds, snap.count, &snap.buckets, None)?;
        }
        let learners = st.members.iter().filter(|(_, _, l)| *l).count();
        let voters = st.members.len() - learners;
        gauges(
            e,
            "raft_members",
            "Members in the configuration this member knows, by kind.",
            &[
                (vec![("kind", "voter".to_owned())], voters as i64),
                (vec![("kind", "learner".to_owned())], learners as i64),
            ],
        )
    }

    fn encode_store(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Read everything under one short guard, then encode without it.
        let (revision, compact_revision, keys, size_bytes, leases) = {
            let store = self.0.node.store();
            (
                store.revision(),
                store.compact_revision(),
                store.key_count(),
                store.approx_size_bytes(),
                store.leases().len(),
            )
        };
        gauge(e, "store_revision", "Current store revision.", revision)?;
        gauge(
            e,
            "store_compact_revision",
            "Revision of the last compaction (0 if none).",
            compact_revision,
        )?;
        gauge(
            e,
            "store_keys",
            "Live keys at the current revision.",
            keys as i64,
        )?;
        gauge(
            e,
            "store_db_size_bytes",
            "Bytes of keys and values held, every kept revision.",
            to_i64(size_bytes),
        )?;
        gauge(
            e,
            "leases_active",
            "Leases granted and not yet revoked or expired.",
            leases as i64,
        )?;
        gauge(
            e,
            "watchers_active",
            "Watchers open on this member's Watch streams.",
            self.0.grpc.watchers.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "watch_streams_active",
            "Watch streams open on this member.",
            self.0.grpc.methods[METHOD_WATCH]
                .streams_active
                .load(Ordering::Relaxed),
        )
    }

    fn encode_grpc(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0.grpc;
        let name_of = |i: usize| -> (&'static str, &'static str) {
            METHODS
                .get(i)
                .map_or(("unknown", "unknown"), |(s, m, _)| (*s, *m))
        };
        let labels = |i: usize| -> Labels {
            let (service, method) = name_of(i);
            vec![
                ("service", service.to_owned()),
                ("method", method.to_owned()),
            ]
        };
        let mut requests = Vec::new();
        for (i, m) in stats.methods.iter().enumerate() {
            for (code, count) in m.codes.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                if n > 0 {
                    let mut l = labels(i);
                    l.push(("code", GRPC_CODES[code].to_owned()));
                    requests.push((l, n));
                }
            }
        }
        counters(
            e,
            "grpc_requests",
            "Finished gRPC calls by method and status code (Canceled: the client went away).",
            &requests,
        )?;
        let histograms: Vec<_> = stats
            .methods
            .iter()
            .enumerate()
            .filter(|(i, _)| !is_streaming(*i))
            .map(|(i, m)| (labels(i), m.latency.read()))
            .filter(|(_, snap)| snap.count > 0)
            .collect();
        if !histograms.is_empty() {
            let mut family = e.encode_descriptor(
                "grpc_request_duration_seconds",
                "Latency of finished unary gRPC calls, until the status was sent.",
                None,
                MetricType::Histogram,
            )?;
            for (l, snap) in &histograms {
                family.encode_family(l)?.encode_histogram::<Labels>(
                    snap.sum_seconds,
                    snap.count,
                    &snap.buckets,
                    None,
                )?;
            }
        }
        let streams: Vec<(Labels, i64)> = (0..METHODS.len())
            .filter(|&i| is_streaming(i))
            .map(|i| {
                (
                    labels(i),
                    stats.methods[i].streams_active.load(Ordering::Relaxed),
                )
            })
            .collect();
        gauges(
            e,
            "grpc_streams_active",
            "gRPC streams open now, by streaming method.",
            &streams,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_map_to_their_index_and_strangers_to_unknown() {
        assert_eq!(method_index("/etcdserverpb.KV/Range"), 0);
        assert_eq!(method_index("/etcdserverpb.Watch/Watch"), METHOD_WATCH);
        assert_eq!(method_index("/etcdserverpb.KV/Nope"), METHOD_UNKNOWN);
        assert_eq!(method_index("/x"), METHOD_UNKNOWN);
        assert_eq!(method_index(""), METHOD_UNKNOWN);
        assert!(is_streaming(METHOD_WATCH));
        assert!(!is_streaming(METHOD_UNKNOWN));
    }

    #[test]
    fn every_method_is_declared_in_the_protos() {
        let protos = [
            include_str!("../proto/rpc.proto"),
            include_str!("../proto/v3lock.proto"),
            include_str!("../proto/v3election.proto"),
        ]
        .concat();
        for (service, method, streaming) in METHODS {
            let short = service.rsplit('.').next().expect("service has a name");
            assert!(
                protos.contains(&format!("service {short} ")),
                "{service} not in the protos"
            );
            assert!(
                protos.contains(&format!("rpc {method}(")),
                "{service}/{method} not in the protos"
            );
            let declared_stream = protos
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("rpc {method}(")))
                .is_some_and(|l| l.contains("stream"));
            assert_eq!(declared_stream, streaming, "{method} streaming flag");
        }
    }

    #[test]
    fn histogram_count_is_the_sum_of_its_buckets() {
        let h = Histogram::new(&LATENCY_BUCKETS_SECONDS);
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let snap = h.read();
        let (sum, count, buckets) = (snap.sum_seconds, snap.count, snap.buckets);
        assert_eq!(count, 3);
        assert_eq!(buckets.first().map(|b| b.1), Some(1));
        assert_eq!(buckets.last().map(|b| b.1), Some(1));
        assert!((sum - 60.0031).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn grpc_status_header_is_read_and_bounded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_code(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_code(&h), Some(5));
        h.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_code(&h), Some(CODE_UNKNOWN));
    }
}
