//! `nines server`: one cluster member. Flags mirror etcd's where they
//! overlap; `--config FILE` (TOML, the same names with `_` or `-`) fills
//! whatever the command line leaves out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use nines_raft::{ClusterState, NodeConfig, Timing};
use nines_server::{Limits, ServerConfig};
use serde::Deserialize;

/// Flags of `nines server`.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerArgs {
    /// Human-readable name of this member.
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for the Raft log, snapshots and identity (default: NAME.nines).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client (gRPC) traffic.
    #[arg(long)]
    pub listen_client_urls: Option<String>,
    /// Client URLs to advertise to the cluster (default: the listen URLs).
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
    /// URLs to listen on for peer (Raft) traffic.
    #[arg(long)]
    pub listen_peer_urls: Option<String>,
    /// This member's peer URLs to advertise (default: the listen URLs).
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// Founding members: name=peer-url,... (default: this member alone).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` to found a cluster, `existing` to join one.
    #[arg(long)]
    pub initial_cluster_state: Option<String>,
    /// Address of the HTTP API (health, cluster view, metrics, dashboard).
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Address of the DNS interface (used by the service registry).
    #[arg(long)]
    pub dns_addr: Option<SocketAddr>,
    /// TTL of registry DNS answers in seconds (default 5).
    #[arg(long)]
    pub dns_ttl: Option<u32>,
    /// Run a gateway in this member from this config (TOML, as `nines
    /// gateway`); `service = "NAME"` clusters follow this member's registry.
    #[arg(long)]
    pub gateway_config: Option<PathBuf>,
    /// Leader heartbeat interval in milliseconds (default 100).
    #[arg(long)]
    pub heartbeat_interval: Option<u64>,
    /// Base election timeout in milliseconds (default 200, randomized up to
    /// twice that). A follower that hears no leader for the randomized timeout
    /// plus the leader lease (twice the base) starts an election.
    #[arg(long)]
    pub election_timeout: Option<u64>,
    /// Log entries between snapshots (default 100000, as etcd). A snapshot
    /// encodes the whole store and pauses applying meanwhile, so a lower
    /// count costs writes more often; a higher one keeps more log in memory
    /// and replays more of it on restart.
    #[arg(long)]
    pub snapshot_count: Option<u64>,
    /// Space quota of the store in bytes; past it the NOSPACE alarm is
    /// raised and writes that add data are refused (default 2 GiB, as etcd;
    /// 0 means the default).
    #[arg(long)]
    pub quota_backend_bytes: Option<u64>,
    /// Largest client request in bytes (default 1.5 MiB, as etcd).
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// Most operations per transaction branch (default 128, as etcd).
    #[arg(long)]
    pub max_txn_ops: Option<usize>,
    /// Longest a client request waits for Raft, in milliseconds (default 5000).
    #[arg(long)]
    pub request_timeout: Option<u64>,
    /// Take scheduled backups into this repository directory (the leader
    /// takes them; give every member the same flags).
    #[arg(long)]
    pub backup_repo: Option<PathBuf>,
    /// Interval per backup kind, e.g. `full=7d,diff=1d,incr=1h` (units s, m,
    /// h, d, w; the default); a kind left out is not scheduled.
    #[arg(long)]
    pub backup_schedule: Option<String>,
    /// Retention of scheduled backups: keep the newest N full chains.
    #[arg(long)]
    pub backup_keep_full: Option<usize>,
    /// Runtime worker threads of this member (default: half the cores, at
    /// least 1; see `worker_threads_default`).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// TOML file with any of these settings.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// UNSAFE, for chaos testing: serve PUT /v1/debug/faults (cut peer links, fail fsync).
    #[arg(long)]
    #[serde(default)]
    pub unsafe_fault_injection: bool,
    /// UNSAFE planted bug: serve linearizable reads without ReadIndex.
    #[arg(long)]
    #[serde(default)]
    pub unsafe_stale_reads: bool,
    /// UNSAFE planted bug: acknowledge log writes before they are on disk.
    #[arg(long)]
    #[serde(default)]
    pub unsafe_lazy_fsync: bool,
}

/// etcd's default space quota: 2 GiB.
const QUOTA_BYTES_DEFAULT: u64 = 2 << 30;
/// Log entries between snapshots unless `--snapshot-count` says otherwise:
/// etcd's default.
const SNAPSHOT_COUNT_DEFAULT: u64 = 100_000;

macro_rules! fill {
    ($dst:ident, $src:ident, $($f:ident),*) => { $( if $dst.$f.is_none() { $dst.$f = $src.$f; } )* };
}

impl ServerArgs {
    /// Fills what the command line left out from the `--config` file.
    fn merge_config_file(mut self) -> anyhow::Result<ServerArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        // Keys may be spelled with `_` or `-`; values (paths) are left as written.
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
        let table: toml::Table = table
            .into_iter()
            .map(|(key, value)| (key.replace('_', "-"), value))
            .collect();
        let file: ServerArgs = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
        fill!(
            self,
            file,
            name,
            data_dir,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state,
            http_addr,
            dns_addr,
            dns_ttl,
            gateway_config,
            heartbeat_interval,
            election_timeout,
            snapshot_count,
            quota_backend_bytes,
            max_request_bytes,
            max_txn_ops,
            request_timeout,
            backup_repo,
            backup_schedule,
            worker_threads,
            backup_keep_full
        );
        self.unsafe_fault_injection |= file.unsafe_fault_injection;
        self.unsafe_stale_reads |= file.unsafe_stale_reads;
        self.unsafe_lazy_fsync |= file.unsafe_lazy_fsync;
        Ok(self)
    }

    /// Turns the flags into a member configuration, with etcd's defaults.
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let a = self.merge_config_file()?;
        let name = a.name.unwrap_or_else(|| "default".into());
        let listen_client_urls = split(
            a.listen_client_urls
                .as_deref()
                .unwrap_or("http://127.0.0.1:2379"),
        );
        let listen_peer_urls = split(
            a.listen_peer_urls
                .as_deref()
                .unwrap_or("http://127.0.0.1:2380"),
        );
        let advertise_client_urls = a
            .advertise_client_urls
            .map(|s| split(&s))
            .unwrap_or_else(|| listen_client_urls.clone());
        let advertise_peer_urls = a
            .initial_advertise_peer_urls
            .map(|s| split(&s))
            .unwrap_or_else(|| listen_peer_urls.clone());
        let initial_cluster = match a.initial_cluster {
            Some(s) => parse_initial_cluster(&s)?,
            None => vec![(name.clone(), advertise_peer_urls[0].clone())],
        };
        let cluster_state = match a.initial_cluster_state.as_deref().unwrap_or("new") {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => bail!("--initial-cluster-state must be `new` or `existing`, not {other:?}"),
        };
        let heartbeat_ms = a.heartbeat_interval.unwrap_or(100);
        let election_min_ms = a.election_timeout.unwrap_or(200);
        if heartbeat_ms == 0 || election_min_ms < heartbeat_ms * 2 {
            bail!("--election-timeout ({election_min_ms} ms) must be at least twice --heartbeat-interval ({heartbeat_ms} ms)");
        }
        let max_request_bytes = a
            .max_request_bytes
            .unwrap_or(nines_server::REQUEST_BYTES_MAX_DEFAULT);
        if max_request_bytes == 0 || max_request_bytes > 64 * 1024 * 1024 {
            bail!("--max-request-bytes must be between 1 and 67108864");
        }
        let txn_ops_max = a.max_txn_ops.unwrap_or(nines_server::TXN_OPS_MAX_DEFAULT);
        if txn_ops_max == 0 {
            bail!("--max-txn-ops must be at least 1");
        }
        Ok(ServerConfig {
            listen_client: url_addr(&listen_client_urls[0]).context("--listen-client-urls")?,
            http_addr: a
                .http_addr
                .unwrap_or_else(|| "127.0.0.1:2381".parse().expect("literal")),
            limits: Limits {
                request_bytes_max: max_request_bytes,
                txn_ops_max,
            },
            fault_injection: a.unsafe_fault_injection,
            watch_progress_interval: Duration::from_secs(600),
            node: NodeConfig {
                data_dir: a
                    .data_dir
                    .unwrap_or_else(|| PathBuf::from(format!("{name}.nines"))),
                listen_peer: url_addr(&listen_peer_urls[0]).context("--listen-peer-urls")?,
                advertise_peer_urls,
                client_urls: advertise_client_urls,
                initial_cluster,
                cluster_state,
                timing: Timing {
                    heartbeat_ms,
                    election_min_ms,
                    election_max_ms: election_min_ms * 2,
                },
                snapshot_entries: a.snapshot_count.unwrap_or(SNAPSHOT_COUNT_DEFAULT).max(1),
                request_timeout: Duration::from_millis(a.request_timeout.unwrap_or(5000).max(100)),
                unsafe_stale_reads: a.unsafe_stale_reads,
                unsafe_lazy_fsync: a.unsafe_lazy_fsync,
                quota_bytes: match a.quota_backend_bytes {
                    None | Some(0) => QUOTA_BYTES_DEFAULT,
                    Some(q) => q,
                },
                name,
            },
        })
    }
}

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `name=url,name=url` into pairs, refusing malformed entries.
fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in split(s) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--initial-cluster entry {part:?} is not NAME=URL"))?;
        url_addr(url).with_context(|| format!("--initial-cluster entry {part:?}"))?;
        out.push((name.to_string(), url.to_string()));
    }
    if out.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(out)
}

/// The socket address of an `http://host:port` URL (hosts must be IP literals or localhost).
pub fn url_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| anyhow!("URL {url:?} must start with http://"))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse()
        .map_err(|_| anyhow!("URL {url:?} must be http://IP:PORT"))
}

/// Half the cores, at least one. A member's write path runs through one
/// Raft core task, one log writer thread and one apply task, so more workers
/// add hand-offs between threads (futex wake-ups, context switches) rather
/// than speed; the other half is left to the log writer, the kernel's network
/// and disk work, and other members or clients on the machine. On 2 cores, 1
/// worker used less CPU per put and per serializable get than 2.
fn worker_threads_default() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Runs the member until Ctrl-C or SIGTERM.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    crate::init_logging();
    let args = args.merge_config_file()?;
    let (dns_addr, dns_required) = match args.dns_addr {
        Some(addr) => (addr, true),
        // The default address is best effort: several members on one
        // machine cannot all have it.
        None => ("127.0.0.1:8600".parse().expect("literal"), false),
    };
    let dns_ttl_secs = args.dns_ttl.unwrap_or(5);
    let gateway_config = args.gateway_config.clone();
    let backup = crate::backup_schedule::BackupConfig::from_flags(
        args.backup_repo.clone(),
        args.backup_schedule.as_deref(),
        args.backup_keep_full,
    )?;
    let worker_threads = args.worker_threads.unwrap_or_else(worker_threads_default);
    anyhow::ensure!(worker_threads > 0, "--worker-threads must be at least 1");
    let cfg = args.into_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .thread_name("nines-server")
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let registry =
            nines_registry::MemberRegistry::start(nines_registry::MemberRegistryConfig {
                name: cfg.node.name.clone(),
                client_addr: cfg.listen_client,
                dns_addr: Some(dns_addr),
                dns_required,
                dns_ttl_secs,
            })
            .await
            .context("registry")?;
        let gateway = match gateway_config {
            Some(path) => Some(start_gateway(path, &registry, &cfg.node.name).await?),
            None => None,
        };
        let mut extensions = nines_server::Extensions {
            routes: registry.router(),
            collectors: vec![std::sync::Arc::new(registry.metrics_collector())],
        };
        let scheduler = backup
            .map(crate::backup_schedule::Scheduler::new)
            .transpose()?;
        extensions.routes = extensions.routes.merge(crate::backup_schedule::router(
            registry.registry().client(),
            scheduler.as_ref(),
        ));
        let backup_task = match scheduler {
            Some(scheduler) => {
                extensions
                    .collectors
                    .push(std::sync::Arc::new(scheduler.collector()));
                Some(scheduler.spawn(own_client_url(cfg.listen_client))?)
            }
            None => None,
        };
        let result = nines_server::run_with(cfg, extensions, crate::shutdown_signal())
            .await
            .map_err(|e| anyhow!("{e}"));
        if let Some(task) = backup_task {
            if let Err(e) = tokio::task::spawn_blocking(move || task.stop()).await {
                tracing::warn!(error = %e, "the backup scheduler did not stop cleanly");
            }
        }
        if let Some((gateway, reporter)) = gateway {
            reporter.stop().await;
            gateway.shutdown().await;
        }
        result
    })
}

/// The URL this member's own client listener answers on (an unspecified
/// listen address is reached through loopback).
fn own_client_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// The gateway embedded in a member, following the member's registry and
/// reporting its status and request outcomes under the member's name.
async fn start_gateway(
    path: PathBuf,
    registry: &nines_registry::MemberRegistry,
    member_name: &str,
) -> anyhow::Result<(nines_gateway::Gateway, nines_registry::GatewayReporter)> {
    let config = nines_gateway::Config::load(&path)
        .with_context(|| format!("--gateway-config {}", path.display()))?;
    let resolver = std::sync::Arc::new(nines_registry::RegistryResolver::new(
        registry.mirror().subscribe(),
    ));
    let gateway = nines_gateway::Gateway::start(config.clone(), Some(path.clone()), Some(resolver))
        .await
        .with_context(|| format!("--gateway-config {}", path.display()))?;
    let reporter = nines_registry::gateway_report::spawn(
        registry.registry(),
        gateway.clone(),
        member_name,
        &config,
    );
    Ok((gateway, reporter))
}
