//! A local cluster of real member processes on loopback, owned by the chaos
//! run: it starts `nines server` (or `etcd`, for a side-by-side run) members
//! in a fresh temporary directory, and kills, pauses, resumes, restarts and
//! partitions them. Every process is tracked by PID; dropping the
//! [`Cluster`] kills each one that is still running and removes the
//! directory, so a panic or an interrupted run leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::http;

/// Which store the members run.
#[derive(Clone, Debug)]
pub enum Target {
    /// `nines server` members, from this binary.
    Nines {
        /// Path of the `nines` executable.
        binary: PathBuf,
    },
    /// etcd members (no partitions or disk faults: etcd has no fault layer).
    Etcd {
        /// Path of the `etcd` executable.
        binary: PathBuf,
    },
}

impl Target {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Nines { .. } => "nines",
            Target::Etcd { .. } => "etcd",
        }
    }
}

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// What to run.
    pub target: Target,
    /// Number of members (3 or 5 in practice).
    pub nodes: usize,
    /// Parent of the run's temporary directory (the system default if none).
    pub base_dir: Option<PathBuf>,
    /// Start nines members with `--unsafe-fault-injection` (partitions and
    /// disk faults need it).
    pub fault_injection: bool,
    /// Extra flags for every member (the planted bugs, e.g.
    /// `--unsafe-stale-reads`).
    pub member_flags: Vec<String>,
}

/// Errors of cluster control.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The temporary directory or a log file could not be made.
    #[error("cannot prepare {path}: {source}")]
    Files {
        /// The path.
        path: PathBuf,
        /// The filesystem error.
        #[source]
        source: std::io::Error,
    },
    /// No free loopback port could be reserved.
    #[error("cannot reserve a loopback port: {0}")]
    Port(#[source] std::io::Error),
    /// A member process could not be started.
    #[error("cannot start member {name}: {source}")]
    Spawn {
        /// The member.
        name: String,
        /// The exec error.
        #[source]
        source: std::io::Error,
    },
    /// A signal could not be delivered.
    #[error("cannot signal member {name}: {source}")]
    Signal {
        /// The member.
        name: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The member's fault-injection endpoint refused or did not answer.
    #[error("cannot set faults on member {name}: {detail}")]
    Faults {
        /// The member.
        name: String,
        /// What went wrong.
        #[source]
        detail: FaultsError,
    },
}

/// Why setting a member's fault set failed.
#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    /// The request got no answer.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// The member answered with a non-success status.
    #[error("status {0}")]
    Status(u16),
}

/// One member: its addresses, data directory and (while running) process.
#[derive(Debug)]
pub struct Member {
    /// The member's `--name` (n1, n2, ...).
    pub name: String,
    /// gRPC client port (etcd API).
    pub client_port: u16,
    /// Raft peer port.
    pub peer_port: u16,
    /// HTTP API port (nines only; health and fault injection).
    pub http_port: u16,
    /// The member's data directory.
    pub data_dir: PathBuf,
    /// The member's combined stdout/stderr log (appended across restarts).
    pub log_path: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
    /// True while stopped with SIGSTOP.
    paused: bool,
}

impl Member {
    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True when a process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

/// The running cluster; owns every process and the directory.
pub struct Cluster {
    config: ClusterConfig,
    members: Vec<Member>,
    /// Removed when the cluster is dropped, after the processes are killed.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Reserves ports, prepares directories and spawns every member. Does not
    /// wait for readiness (see [`Cluster::wait_ready`]).
    pub fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("nines-chaos-");
        let dir = match &config.base_dir {
            Some(base) => builder.tempdir_in(base),
            None => builder.tempdir(),
        }
        .map_err(|source| ClusterError::Files {
            path: config.base_dir.clone().unwrap_or_else(std::env::temp_dir),
            source,
        })?;
        let ports = reserve_ports(config.nodes * 3)?;
        let members = (0..config.nodes)
            .map(|index| {
                let name = format!("n{}", index + 1);
                Member {
                    data_dir: dir.path().join(&name),
                    log_path: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: ports[index * 3],
                    peer_port: ports[index * 3 + 1],
                    http_port: ports[index * 3 + 2],
                    child: None,
                    paused: false,
                }
            })
            .collect();
        let mut cluster = Cluster {
            config,
            members,
            dir,
        };
        for index in 0..cluster.members.len() {
            cluster.spawn(index)?;
        }
        Ok(cluster)
    }

    /// The members, in name order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The run's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The target this cluster runs.
    pub fn target(&self) -> &Target {
        &self.config.target
    }

    /// Every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Starts member `index` (which must not be running).
    pub fn spawn(&mut self, index: usize) -> Result<(), ClusterError> {
        let initial_cluster = self
            .members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[index];
        let log = open_log(&member.log_path)?;
        let log_err = log.try_clone().map_err(|source| ClusterError::Files {
            path: member.log_path.clone(),
            source,
        })?;
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let (binary, mut args) = match &self.config.target {
            Target::Nines { binary } => (binary.clone(), vec!["server".to_string()]),
            Target::Etcd { binary } => (binary.clone(), Vec::new()),
        };
        args.extend(
            [
                "--name",
                &member.name,
                "--data-dir",
                &member.data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
            ]
            .map(String::from),
        );
        match &self.config.target {
            Target::Nines { .. } => {
                args.push("--http-addr".into());
                args.push(format!("127.0.0.1:{}", member.http_port));
                if self.config.fault_injection {
                    args.push("--unsafe-fault-injection".into());
                }
            }
            Target::Etcd { .. } => {
                args.push("--initial-cluster-token".into());
                args.push("nines-chaos".into());
                args.push("--listen-metrics-urls".into());
                args.push(format!("http://127.0.0.1:{}", member.http_port));
            }
        }
        args.extend(self.config.member_flags.iter().cloned());
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                name: member.name.clone(),
                source,
            })?;
        let member = &mut self.members[index];
        member.child = Some(child);
        member.paused = false;
        Ok(())
    }

    /// `kill -9` member `index` and reaps it. Nothing happens if it is not running.
    pub fn kill(&mut self, index: usize) {
        let member = &mut self.members[index];
        if let Some(mut child) = member.child.take() {
            // SIGKILL works on stopped processes too; reaping avoids zombies.
            let _ = child.kill();
            let _ = child.wait();
        }
        member.paused = false;
    }

    /// Stops member `index` gracefully (SIGTERM), falling back to SIGKILL
    /// after `grace`. Waits without blocking the runtime.
    pub async fn terminate(&mut self, index: usize, grace: Duration) -> Result<(), ClusterError> {
        if self.members[index].paused {
            self.resume(index)?;
        }
        let Some(pid) = self.members[index].pid() else {
            return Ok(());
        };
        if kill(Pid::from_raw(pid as i32), Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if self.reap_exited(index).is_some() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kill(index);
        Ok(())
    }

    /// SIGSTOP member `index`.
    pub fn pause(&mut self, index: usize) -> Result<(), ClusterError> {
        self.signal(index, Signal::SIGSTOP)?;
        self.members[index].paused = true;
        Ok(())
    }

    /// SIGCONT member `index`.
    pub fn resume(&mut self, index: usize) -> Result<(), ClusterError> {
        self.signal(index, Signal::SIGCONT)?;
        self.members[index].paused = false;
        Ok(())
    }

    fn signal(&mut self, index: usize, signal: Signal) -> Result<(), ClusterError> {
        let member = &self.members[index];
        let Some(child) = &member.child else {
            return Ok(());
        };
        kill(Pid::from_raw(child.id() as i32), signal).map_err(|source| ClusterError::Signal {
            name: member.name.clone(),
            source,
        })
    }

    /// If member `index` has exited on its own, reaps it and returns its status.
    pub fn reap_exited(&mut self, index: usize) -> Option<ExitStatus> {
        let member = &mut self.members[index];
        let status = member.child.as_mut()?.try_wait().ok()??;
        member.child = None;
        member.paused = false;
        Some(status)
    }

    /// Replaces member `index`'s fault set (nines with fault injection only).
    pub async fn set_faults(
        &self,
        index: usize,
        blocked_peers: &[String],
        fail_fsync: bool,
    ) -> Result<(), ClusterError> {
        let member = &self.members[index];
        let body = serde_json::json!({ "blocked_peers": blocked_peers, "fail_fsync": fail_fsync });
        let result = http::request(
            self.http_addr(index),
            "PUT",
            "/v1/debug/faults",
            Some(&body.to_string()),
            Duration::from_secs(2),
        )
        .await;
        let detail = match result {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) => FaultsError::Status(status),
            Err(error) => FaultsError::Http(error),
        };
        Err(ClusterError::Faults {
            name: member.name.clone(),
            detail,
        })
    }

    fn http_addr(&self, index: usize) -> SocketAddr {
        let port = match self.config.target {
            Target::Nines { .. } => self.members[index].http_port,
            // etcd serves /health on its client port.
            Target::Etcd { .. } => self.members[index].client_port,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// True when member `index` runs, is not paused and answers `/health`
    /// with 200 (it knows a leader).
    pub async fn is_healthy(&self, index: usize) -> bool {
        let member = &self.members[index];
        if !member.is_running() || member.paused {
            return false;
        }
        matches!(
            http::request(
                self.http_addr(index),
                "GET",
                "/health",
                None,
                Duration::from_millis(500)
            )
            .await,
            Ok(200)
        )
    }

    /// Waits until every running, unpaused member is healthy, or `timeout`
    /// passes. Returns the names of the members still unhealthy.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut unhealthy = Vec::new();
            for index in 0..self.members.len() {
                if self.members[index].child.is_some() && self.reap_exited(index).is_none() {
                    if !self.is_healthy(index).await {
                        unhealthy.push(self.members[index].name.clone());
                    }
                } else {
                    unhealthy.push(self.members[index].name.clone());
                }
            }
            if unhealthy.is_empty() || Instant::now() >= deadline {
                return unhealthy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the current leader, asked of every running, unpaused
    /// member over the etcd Maintenance Status call; `None` when no member
    /// names a leader that is one of ours.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = vec![None; self.members.len()];
        let mut leader_id = None;
        for (index, member) in self.members.iter().enumerate() {
            if !member.is_running() || member.paused {
                continue;
            }
            if let Some((member_id, leader)) = member_status(&member.endpoint()).await {
                ids[index] = Some(member_id);
                if leader != 0 {
                    leader_id = Some(leader);
                }
            }
        }
        let leader_id = leader_id?;
        ids.iter().position(|id| *id == Some(leader_id))
    }

    /// The tail of member `index`'s log, for reports about a member that
    /// failed.
    pub fn log_tail(&self, index: usize, bytes_max: usize) -> String {
        let text = std::fs::read(&self.members[index].log_path).unwrap_or_default();
        let start = text.len().saturating_sub(bytes_max);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
        // The TempDir field is dropped after this, removing the directory.
    }
}

/// Asks one member for `(its member id, the leader id it knows)`.
pub async fn member_status(endpoint: &str) -> Option<(u64, u64)> {
    let timeout = Duration::from_millis(500);
    let options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await.ok()?;
        let status = client.status().await.ok()?;
        let member_id = status.header()?.member_id();
        Some((member_id, status.leader()))
    };
    tokio::time::timeout(timeout * 2, attempt)
        .await
        .ok()
        .flatten()
}

/// Asks one member for `(raft term, leader id)` for the election monitor.
pub async fn member_term(client: &mut Client) -> Option<(u64, u64)> {
    let status = client.status().await.ok()?;
    Some((status.raft_term(), status.leader()))
}

fn open_log(path: &Path) -> Result<File, ClusterError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ClusterError::Files {
            path: path.to_path_buf(),
            source,
        })
}

/// Reserves `count` distinct free loopback ports by binding port 0 and
/// releasing the listeners together (a small race remains; the caller
/// retries a failed start once).
fn reserve_ports(count: usize) -> Result<Vec<u16>, ClusterError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ClusterError::Port)?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ClusterError::Port)
}
