//! The gateway as a whole: builds clusters and listeners from a [`Config`],
//! applies reloads (keeping sockets, connections and backend state of what
//! did not change; refusing a bad config and keeping the old one), serves the
//! admin listener (`/admin/backends`, `/admin/reload`, `/metrics`) and shuts
//! down gracefully. It must be started inside a tokio runtime.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Mutex};

use crate::access_log::AccessLog;
use crate::backend::now_ms;
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, Protocol};
use crate::metrics::{Metrics, DEFAULT_ROUTE_LABEL};
use crate::proxy::{ListenerRuntime, Route, BODY_BYTES_MAX_DEFAULT};
use crate::server::{
    bind, run_http_listener, run_tcp_listener, ConnectionTracker, HttpLimits, TcpRuntime,
    HEADER_BYTES_MAX_DEFAULT, HEADER_COUNT_MAX_DEFAULT, HEADER_READ_TIMEOUT_DEFAULT,
};
use crate::source::{BackendSource, ServiceResolver};
use crate::worker::Workers;

/// Default time graceful shutdown waits for connections.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Why the gateway could not start or apply a config.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind its address.
    #[error("listener {listener}: cannot bind {addr}: {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A cluster follows a service but no registry is connected.
    #[error("cluster {cluster}: service {service:?} cannot be resolved (no registry)")]
    UnknownService {
        /// Cluster name.
        cluster: String,
        /// Service name.
        service: String,
    },
    /// The runtime or signal handlers could not be set up.
    #[error("cannot start the runtime: {source}")]
    Runtime {
        /// The underlying error.
        source: std::io::Error,
    },
    /// The gateway was started without a config file to reload from.
    #[error("no config file to reload from")]
    NoConfigFile,
}

enum Slot {
    Http(Arc<ArcSwap<ListenerRuntime>>),
    Tcp(Arc<ArcSwap<TcpRuntime>>),
}

struct RunningListener {
    configured: SocketAddr,
    protocol: Protocol,
    local_addr: SocketAddr,
    slot: Slot,
    stop: watch::Sender<bool>,
}

struct State {
    listeners: HashMap<String, RunningListener>,
    clusters: HashMap<String, Arc<Cluster>>,
    cluster_tasks_stop: watch::Sender<bool>,
    access_log: bool,
}

struct Inner {
    config_path: Option<PathBuf>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    drain: watch::Sender<bool>,
    tracker: Arc<ConnectionTracker>,
    resolver: Option<Arc<dyn ServiceResolver>>,
    admin_addr: Option<SocketAddr>,
    workers: Workers,
    drain_timeout: Duration,
}

/// A running gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("admin_addr", &self.inner.admin_addr)
            .finish()
    }
}

impl Gateway {
    /// Starts listeners, health checks and the admin listener for `config`.
    /// `config_path` is what reloads read again.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        resolver: Option<Arc<dyn ServiceResolver>>,
    ) -> Result<Gateway, GatewayError> {
        Gateway::start_with_workers(config, config_path, resolver, Workers::inline()).await
    }

    /// Like [`Gateway::start`], spreading client connections over `workers`.
    pub async fn start_with_workers(
        config: Config,
        config_path: Option<PathBuf>,
        resolver: Option<Arc<dyn ServiceResolver>>,
        workers: Workers,
    ) -> Result<Gateway, GatewayError> {
        let (stop, _) = watch::channel(false);
        let admin_listener = match config.gateway.admin {
            Some(addr) => Some(bind(addr).map_err(|source| GatewayError::Bind {
                listener: "admin".into(),
                addr,
                source,
            })?),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let inner = Arc::new(Inner {
            config_path,
            state: Mutex::new(State {
                listeners: HashMap::new(),
                clusters: HashMap::new(),
                cluster_tasks_stop: stop,
                access_log: false,
            }),
            metrics: Arc::new(Metrics::default()),
            drain: watch::channel(false).0,
            tracker: Arc::new(ConnectionTracker::default()),
            resolver,
            admin_addr,
            workers,
            drain_timeout: config
                .gateway
                .drain_timeout
                .unwrap_or(DRAIN_TIMEOUT_DEFAULT),
        });
        let gateway = Gateway { inner };
        gateway.apply(config).await?;
        if let Some(listener) = admin_listener {
            tokio::spawn(run_admin(listener, gateway.clone()));
        }
        Ok(gateway)
    }

    /// Reads a config file and starts a gateway from it.
    pub async fn start_from_file(path: &Path) -> Result<Gateway, GatewayError> {
        let config = Config::load(path)?;
        Gateway::start(config, Some(path.to_owned()), None).await
    }

    /// The metrics of this gateway.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The admin listener's address, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// The bound address of listener `name` (useful with port 0).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.inner
            .state
            .lock()
            .await
            .listeners
            .get(name)
            .map(|l| l.local_addr)
    }

    /// The cluster `name` as now configured.
    pub async fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.inner.state.lock().await.clusters.get(name).cloned()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.tracker.open()
    }

    /// Reads the config file again and applies it; on error the running config stays.
    pub async fn reload(&self) -> Result<(), GatewayError> {
        let result = match &self.inner.config_path {
            None => Err(GatewayError::NoConfigFile),
            Some(path) => match Config::load(path) {
                Ok(config) => self.apply(config).await,
                Err(error) => Err(error.into()),
            },
        };
        match &result {
            Ok(()) => {
                self.inner.metrics.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("config reloaded");
            }
            Err(error) => {
                self.inner
                    .metrics
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "reload refused; the running config is kept");
            }
        }
        result
    }

    /// Applies a validated config: all or nothing.
    pub async fn apply(&self, config: Config) -> Result<(), GatewayError> {
        let mut state = self.inner.state.lock().await;
        // Build everything first; nothing running changes until all of it worked.
        let mut clusters = HashMap::new();
        let mut sources: Vec<(Arc<Cluster>, Box<dyn BackendSource>)> = Vec::new();
        for cluster_config in &config.clusters {
            let name = cluster_config.name.get_ref().clone();
            let previous = state.clusters.get(&name).map(Arc::as_ref);
            let cluster = match &cluster_config.service {
                None => Arc::new(Cluster::new(
                    cluster_config,
                    &Cluster::static_specs(cluster_config),
                    previous,
                )),
                Some(service) => {
                    let source = self
                        .inner
                        .resolver
                        .as_ref()
                        .and_then(|r| r.resolve(service))
                        .ok_or_else(|| GatewayError::UnknownService {
                            cluster: name.clone(),
                            service: service.clone(),
                        })?;
                    let specs = source.subscribe().borrow().clone();
                    let cluster = Arc::new(Cluster::new(cluster_config, &specs, previous));
                    sources.push((Arc::clone(&cluster), source));
                    cluster
                }
            };
            clusters.insert(name, cluster);
        }
        let mut fresh = Vec::new();
        let mut runtimes = Vec::new();
        for listener in &config.listeners {
            let name = listener.name.get_ref().clone();
            let metrics = self.inner.metrics.listener(&name);
            let default = listener
                .cluster
                .as_ref()
                .map(|c| Arc::clone(&clusters[c.get_ref()]));
            let slot = match listener.protocol {
                Protocol::Http => {
                    let routes = listener.route.iter().map(|r| {
                        let stats = self.inner.metrics.route(&name, &r.label());
                        Route::new(r, Arc::clone(&clusters[r.cluster.get_ref()]), stats)
                    });
                    Slot::Http(Arc::new(ArcSwap::from_pointee(ListenerRuntime {
                        name: name.clone(),
                        routes: routes.collect(),
                        default: default
                            .map(|c| (c, self.inner.metrics.route(&name, DEFAULT_ROUTE_LABEL))),
                        body_bytes_max: listener.body_bytes_max.unwrap_or(BODY_BYTES_MAX_DEFAULT),
                        request_timeout: listener.request_timeout,
                        limits: http_limits(listener),
                        metrics,
                        access_log: config
                            .gateway
                            .access_log
                            .then(|| AccessLog::start(&name, Arc::clone(&self.inner.metrics))),
                    })))
                }
                Protocol::Tcp => Slot::Tcp(Arc::new(ArcSwap::from_pointee(TcpRuntime {
                    name: name.clone(),
                    cluster: default.expect("validated: a tcp listener has a cluster"),
                    metrics,
                }))),
            };
            let bind_addr = *listener.bind.get_ref();
            let keep = state
                .listeners
                .get(&name)
                .is_some_and(|l| l.configured == bind_addr && l.protocol == listener.protocol);
            if !keep {
                let socket = bind(bind_addr).map_err(|source| GatewayError::Bind {
                    listener: name.clone(),
                    addr: bind_addr,
                    source,
                })?;
                fresh.push((name.clone(), listener, socket));
            }
            runtimes.push((name, slot));
        }
        // Commit: stop old cluster tasks, start new ones, swap runtimes, start and stop listeners.
        let (cluster_stop, cluster_stop_rx) = watch::channel(false);
        state.cluster_tasks_stop.send_replace(true);
        state.cluster_tasks_stop = cluster_stop;
        for cluster in clusters.values() {
            if let Some(health) = cluster.config.health.clone() {
                tokio::spawn(crate::health::run(
                    Arc::downgrade(cluster),
                    health,
                    cluster_stop_rx.clone(),
                ));
            }
        }
        for (cluster, source) in sources {
            tokio::spawn(follow_source(
                Arc::downgrade(&cluster),
                source,
                cluster_stop_rx.clone(),
            ));
        }
        let mut fresh: HashMap<String, _> =
            fresh.into_iter().map(|(n, l, s)| (n, (l, s))).collect();
        let mut listeners = HashMap::new();
        for (name, slot) in runtimes {
            match fresh.remove(&name) {
                Some((listener, socket)) => {
                    if let Some(old) = state.listeners.remove(&name) {
                        old.stop.send_replace(true);
                    }
                    let running = self.start_listener(listener, socket, slot);
                    listeners.insert(name, running);
                }
                None => {
                    let running = state.listeners.remove(&name).expect("kept listeners exist");
                    match (&running.slot, slot) {
                        (Slot::Http(current), Slot::Http(new)) => current.store(new.load_full()),
                        (Slot::Tcp(current), Slot::Tcp(new)) => current.store(new.load_full()),
                        _ => unreachable!("a protocol change rebinds the listener"),
                    }
                    listeners.insert(name, running);
                }
            }
        }
        for (name, removed) in state.listeners.drain() {
            tracing::info!(listener = %name, "listener removed; open connections finish");
            removed.stop.send_replace(true);
        }
        state.listeners = listeners;
        self.inner
            .metrics
            .set_clusters(clusters.values().cloned().collect());
        state.clusters = clusters;
        state.access_log = config.gateway.access_log;
        Ok(())
    }

    fn start_listener(
        &self,
        listener: &crate::config::ListenerConfig,
        socket: tokio::net::TcpListener,
        slot: Slot,
    ) -> RunningListener {
        let (stop, stop_rx) = watch::channel(false);
        let local_addr = socket.local_addr().unwrap_or(*listener.bind.get_ref());
        let drain = self.inner.drain.subscribe();
        let tracker = Arc::clone(&self.inner.tracker);
        let slot = match slot {
            Slot::Http(runtime) => {
                tokio::spawn(run_http_listener(
                    socket,
                    Arc::clone(&runtime),
                    stop_rx,
                    drain,
                    tracker,
                    self.inner.workers.clone(),
                ));
                Slot::Http(runtime)
            }
            Slot::Tcp(runtime) => {
                tokio::spawn(run_tcp_listener(
                    socket,
                    Arc::clone(&runtime),
                    stop_rx,
                    drain,
                    tracker,
                    self.inner.workers.clone(),
                ));
                Slot::Tcp(runtime)
            }
        };
        tracing::info!(listener = %listener.name.get_ref(), addr = %local_addr, "listening");
        RunningListener {
            configured: *listener.bind.get_ref(),
            protocol: listener.protocol,
            local_addr,
            slot,
            stop,
        }
    }

    /// Stops accepting, lets open connections finish their requests (up to the
    /// drain timeout), then stops health checks.
    pub async fn shutdown(&self) {
        self.inner.drain.send_replace(true);
        let drained =
            tokio::time::timeout(self.inner.drain_timeout, self.inner.tracker.wait_idle()).await;
        if drained.is_err() {
            tracing::warn!(
                open = self.inner.tracker.open(),
                "drain timeout: closing remaining connections"
            );
        }
        let state = self.inner.state.lock().await;
        state.cluster_tasks_stop.send_replace(true);
        for listener in state.listeners.values() {
            listener.stop.send_replace(true);
        }
    }

    /// The admin view of every backend.
    pub async fn backends_json(&self) -> serde_json::Value {
        let state = self.inner.state.lock().await;
        let now = now_ms();
        let mut clusters: Vec<_> = state.clusters.values().cloned().collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let clusters: Vec<_> = clusters
            .iter()
            .map(|cluster| {
                let set = cluster.set.load();
                let backends: Vec<_> = set
                    .backends
                    .iter()
                    .map(|b| {
                        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
                        serde_json::json!({
                            "addr": b.addr.to_string(),
                            "weight": b.weight,
                            "state": b.state(now),
                            "active": b.active(),
                            "idle_connections": b.idle_count(),
                            "ewma_latency_us": b.ewma_ns() / 1000,
                            "requests": b.counters.requests.get(),
                            "failures": load(&b.counters.failures),
                            "responses_5xx": load(&b.counters.responses_5xx),
                            "ejections": load(&b.counters.ejections),
                            "marked_down": load(&b.counters.marked_down),
                            "connections_opened": load(&b.counters.connections_opened),
                        })
                    })
                    .collect();
                serde_json::json!({ "name": cluster.name, "balance": cluster.balance(), "backends": backends })
            })
            .collect();
        let mut listeners: Vec<_> = state.listeners.iter().collect();
        listeners.sort_by(|a, b| a.0.cmp(b.0));
        let listeners: Vec<_> = listeners
            .into_iter()
            .map(|(name, running)| listener_json(name, running))
            .collect();
        serde_json::json!({ "clusters": clusters, "listeners": listeners })
    }

    /// Serves until SIGINT or SIGTERM (graceful shutdown); SIGHUP reloads.
    pub async fn run_until_signal(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    // The outcome is logged and counted by reload().
                    let _ = self.reload().await;
                }
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
            }
        }
        tracing::info!("shutting down: draining connections");
        self.shutdown().await;
        Ok(())
    }
}

/// The admin view of a listener: where it listens and where its requests
/// go (an HTTP listener's routes in order, each with its requests and 5xx
/// answers, then its default cluster; a TCP listener's cluster).
fn listener_json(name: &str, running: &RunningListener) -> serde_json::Value {
    let counts = |stats: &crate::metrics::RequestStats| serde_json::json!({ "requests": stats.requests(), "responses_5xx": stats.responses()[4] });
    match &running.slot {
        Slot::Http(slot) => {
            let runtime = slot.load();
            let mut routes: Vec<_> = runtime
                .routes
                .iter()
                .map(|r| {
                    let mut route = counts(&r.stats);
                    route["route"] = r.label.clone().into();
                    route["cluster"] = r.cluster.name.clone().into();
                    route
                })
                .collect();
            if let Some((cluster, stats)) = &runtime.default {
                let mut route = counts(stats);
                route["route"] = DEFAULT_ROUTE_LABEL.into();
                route["cluster"] = cluster.name.clone().into();
                routes.push(route);
            }
            serde_json::json!({
                "name": name,
                "protocol": "http",
                "addr": running.local_addr.to_string(),
                "routes": routes,
            })
        }
        Slot::Tcp(slot) => serde_json::json!({
            "name": name,
            "protocol": "tcp",
            "addr": running.local_addr.to_string(),
            "cluster": slot.load().cluster.name,
        }),
    }
}

/// The connection limits an HTTP listener's config asks for.
fn http_limits(listener: &crate::config::ListenerConfig) -> HttpLimits {
    // hyper's head timer also runs while a keep-alive connection waits for its
    // next request, so the shorter of the two bounds both.
    let header_read_timeout = match (listener.header_read_timeout, listener.idle_timeout) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(HEADER_READ_TIMEOUT_DEFAULT),
    };
    HttpLimits {
        header_read_timeout,
        header_bytes_max: listener
            .header_bytes_max
            .unwrap_or(HEADER_BYTES_MAX_DEFAULT),
        header_count_max: listener
            .header_count_max
            .unwrap_or(HEADER_COUNT_MAX_DEFAULT),
    }
}

async fn follow_source(
    cluster: std::sync::Weak<Cluster>,
    source: Box<dyn BackendSource>,
    mut stop: watch::Receiver<bool>,
) {
    let mut receiver = source.subscribe();
    loop {
        tokio::select! {
            changed = receiver.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let specs = receiver.borrow_and_update().clone();
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.update(&specs);
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn admin(gateway: Gateway, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/admin/backends") => {
            json_response(StatusCode::OK, gateway.backends_json().await)
        }
        (&Method::POST, "/admin/reload") => match gateway.reload().await {
            Ok(()) => json_response(StatusCode::OK, serde_json::json!({ "reloaded": true })),
            Err(error) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({ "error": { "code": "reload_refused", "message": error.to_string() } }),
            ),
        },
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(gateway.metrics().render())));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (&Method::GET, "/health") => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
        _ => json_response(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": { "code": "not_found", "message": "unknown admin path" } }),
        ),
    }
}

async fn run_admin(listener: tokio::net::TcpListener, gateway: Gateway) {
    let mut drain = gateway.inner.drain.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.wait_for(|d| *d) => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(admin(gateway, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
