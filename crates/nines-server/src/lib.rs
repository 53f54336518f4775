//! A nines member as clients see it: etcd's v3 gRPC services over the Raft
//! node, the HTTP API, and [`run`], which wires them to their listeners. The
//! protobuf definitions live in `proto/` and are compiled at build time.

pub mod cluster;
pub mod convert;
pub mod dashboard;
pub mod errors;
pub mod http;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod metrics;
pub mod quota;
pub mod watch;
mod watch_grpc;
mod watch_hub;

use std::future::Future;
use std::net::SocketAddr;

use nines_raft::{NodeConfig, RaftNode, StartError};

/// Generated etcd API types and services.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// etcd's key-value and event messages.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's v3 services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// etcd's lock service.
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    /// etcd's election service.
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

/// etcd's default request size limit (`--max-request-bytes`): 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1536 * 1024;
/// etcd's default operations per transaction (`--max-txn-ops`).
pub const TXN_OPS_MAX_DEFAULT: usize = 128;
/// Room for the gRPC envelope above the request limit, so an oversize
/// request is decoded and refused with etcd's error rather than cut off.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Request limits, as etcd's flags set them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request accepted, in bytes.
    pub request_bytes_max: usize,
    /// Most operations in one transaction branch.
    pub txn_ops_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            txn_ops_max: TXN_OPS_MAX_DEFAULT,
        }
    }
}

/// Everything a member process needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The Raft side.
    pub node: NodeConfig,
    /// Where the gRPC API listens.
    pub listen_client: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Request limits.
    pub limits: Limits,
    /// Whether `/v1/debug/faults` is served.
    pub fault_injection: bool,
    /// How often watchers that asked for progress notifications get one.
    pub watch_progress_interval: std::time::Duration,
}

/// Why a member stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// It could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Raft stopped on a fatal error (for example a failed fsync); the member
    /// must not go on serving.
    #[error("raft stopped on a fatal error: {0}")]
    Fatal(String),
}

/// A response header for `node` at `revision`.
pub fn header(node: &RaftNode, revision: i64) -> pb::etcdserverpb::ResponseHeader {
    pb::etcdserverpb::ResponseHeader {
        cluster_id: node.cluster_id(),
        member_id: node.id(),
        revision,
        raft_term: node.term(),
    }
}

/// Runs a member until `shutdown` resolves or Raft fails.
pub async fn run(cfg: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    run_with_routes(cfg, axum::Router::new(), shutdown).await
}

/// [`run`], with `routes` (e.g. the registry's) merged into the HTTP API.
pub async fn run_with_routes(
    cfg: ServerConfig,
    routes: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let extensions = Extensions {
        routes,
        collectors: Vec::new(),
    };
    run_with(cfg, extensions, shutdown).await
}

/// What a caller adds to a member: HTTP routes and metric collectors (the
/// registry's, say).
#[derive(Default)]
pub struct Extensions {
    /// Routes merged into the HTTP API.
    pub routes: axum::Router,
    /// Collectors whose figures `GET /metrics` serves next to the member's.
    pub collectors: Vec<std::sync::Arc<dyn prometheus_client::collector::Collector>>,
}

/// [`run`], with `extensions` added to the HTTP API and `/metrics`.
pub async fn run_with(
    cfg: ServerConfig,
    extensions: Extensions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let Extensions { routes, collectors } = extensions;
    use pb::etcdserverpb::cluster_server::ClusterServer;
    use pb::etcdserverpb::kv_server::KvServer;
    use pb::etcdserverpb::lease_server::LeaseServer;
    use pb::etcdserverpb::maintenance_server::MaintenanceServer;
    use pb::v3electionpb::election_server::ElectionServer;
    use pb::v3lockpb::lock_server::LockServer;

    let client_listener = tokio::net::TcpListener::bind(cfg.listen_client)
        .await
        .map_err(|source| ServerError::Listen {
            what: "client",
            addr: cfg.listen_client,
            source,
        })?;
    let http_listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|source| ServerError::Listen {
            what: "http",
            addr: cfg.http_addr,
            source,
        })?;
    let node = RaftNode::start(cfg.node.clone()).await?;
    let decode_max = cfg.limits.request_bytes_max + GRPC_OVERHEAD_BYTES;
    let kv = KvServer::new(kv::KvService::new(node.clone(), cfg.limits))
        .max_decoding_message_size(decode_max)
        .max_encoding_message_size(usize::MAX);
    let maint = maintenance::MaintenanceService::new(node.clone());
    let lease = lease::LeaseService::new(node.clone());
    let recipes = lock::RecipeService::new(node.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = metrics::Metrics::new(node.clone()).with_collectors(collectors);
    let watch = watch::WatchService::new(node.clone(), cfg.watch_progress_interval)
        .with_watchers_gauge(metrics.watchers_gauge());
    let leader_task = tokio::spawn(metrics.clone().track_leader_changes(stop_rx.clone()));
    let mut grpc_stop = stop_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(metrics.grpc_layer())
        .add_service(kv)
        .add_service(watch_grpc::WatchServer::new(watch))
        .add_service(LeaseServer::new(lease))
        .add_service(LockServer::new(recipes.clone()))
        .add_service(ElectionServer::new(recipes))
        .add_service(MaintenanceServer::new(maint.clone()))
        .add_service(ClusterServer::new(maint))
        // Accepted sockets get nodelay there, and answers finished together
        // leave in one write (see nines_raft::coalesce).
        .serve_with_incoming_shutdown(
            nines_raft::coalesce::incoming(client_listener),
            async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            },
        );
    let grpc_task = tokio::spawn(grpc);
    let mut http_stop = stop_rx;
    let http_app = http::router(node.clone(), cfg.fault_injection)
        .merge(routes)
        .merge(metrics.routes())
        .merge(dashboard::routes(node.clone()));
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http_app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(name = %cfg.node.name, id = %format!("{:x}", node.id()), client = %cfg.listen_client, http = %cfg.http_addr, "member serving");

    let result = tokio::select! {
        () = shutdown => Ok(()),
        reason = node.fatal() => Err(ServerError::Fatal(reason)),
    };
    let _ = stop_tx.send(true);
    node.shutdown().await;
    // Unary calls in flight get a moment to finish; long-lived streams
    // (watches, lease keep-alives, a registry's own watch) would hold a
    // graceful shutdown forever, so after the grace period the listeners'
    // tasks are dropped with their connections.
    let (grpc_abort, http_abort) = (grpc_task.abort_handle(), http_task.abort_handle());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = grpc_task.await;
        let _ = http_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::info!("closing connections still open after the shutdown grace period");
        grpc_abort.abort();
        http_abort.abort();
    }
    let _ = leader_task.await;
    result
}

/// How long a stopping member waits for requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
