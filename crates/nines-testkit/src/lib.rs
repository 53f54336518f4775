//! Test helpers: a cluster of real `nines server` processes on loopback,
//! with free ports, data in a temporary directory, and the faults tests
//! need (kill -9, SIGSTOP/SIGCONT, restart). Every process is killed by PID
//! when the cluster is dropped. Tests only; never linked into the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One member process.
pub struct Member {
    /// Its `--name`.
    pub name: String,
    /// Client (gRPC) address, host:port.
    pub client: String,
    /// Peer address, host:port.
    pub peer: String,
    /// HTTP API address, host:port.
    pub http: String,
    child: Option<Child>,
    /// For a member that joins a running cluster: its `--initial-cluster`.
    join: Option<String>,
}

impl Member {
    /// A member not started yet, named `name`, listening on loopback on
    /// `ports` (client, peer, HTTP).
    fn new(name: String, ports: &[u16]) -> Member {
        Member {
            name,
            client: format!("127.0.0.1:{}", ports[0]),
            peer: format!("127.0.0.1:{}", ports[1]),
            http: format!("127.0.0.1:{}", ports[2]),
            child: None,
            join: None,
        }
    }
}

/// A cluster of member processes, stopped and cleaned up on drop.
pub struct Cluster {
    exe: PathBuf,
    dir: tempfile::TempDir,
    /// The members, in `--initial-cluster` order.
    pub members: Vec<Member>,
    initial: String,
    extra: Vec<String>,
}

/// Picks `n` distinct free loopback ports.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let ls = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ls
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect())
}

/// Times a new cluster is started on fresh ports when a member finds one
/// of its ports taken.
const START_ATTEMPTS: usize = 3;
/// How long a new member may take to listen on its ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `--initial-cluster` value naming every member's peer URL.
fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}=http://{}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// Starts `n` members of a new cluster with `extra` flags on each.
    pub fn start(exe: &Path, n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(n * 3)?;
        let members: Vec<Member> = ports
            .chunks(3)
            .enumerate()
            .map(|(i, ports)| Member::new(format!("n{}", i + 1), ports))
            .collect();
        let initial = initial_cluster(&members);
        let mut c = Cluster {
            exe: exe.to_path_buf(),
            dir,
            members,
            initial,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for attempt in 1..=START_ATTEMPTS {
            for i in 0..n {
                c.spawn(i)?;
            }
            let lost = c.wait_listening(START_TIMEOUT);
            if lost.is_empty() || attempt == START_ATTEMPTS {
                break;
            }
            // A port picked as free was taken before the member bound it (an
            // outgoing connection of a concurrent test may get it as its
            // local port). The members' flags name each other's ports, so
            // the whole cluster starts again on new ones.
            for i in 0..n {
                c.kill(i);
            }
            let ports = free_ports(n * 3)?;
            for (m, ports) in c.members.iter_mut().zip(ports.chunks(3)) {
                *m = Member::new(std::mem::take(&mut m.name), ports);
            }
            c.initial = initial_cluster(&c.members);
            for i in 0..n {
                let _ = std::fs::remove_dir_all(c.data_dir(i));
            }
        }
        Ok(c)
    }

    /// Waits until every started member listens on its peer port (bound
    /// last, after its client and HTTP ports), or has exited. Returns the
    /// members that exited because one of their ports was in use.
    fn wait_listening(&self, timeout: Duration) -> Vec<usize> {
        let deadline = Instant::now() + timeout;
        let mut lost = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let peer: std::net::SocketAddr = match self.members[i].peer.parse() {
                Ok(addr) => addr,
                Err(_) => continue,
            };
            loop {
                if !self.is_running(i) {
                    let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                    if log.contains("in use") {
                        lost.push(i);
                    }
                    break;
                }
                if std::net::TcpStream::connect_timeout(&peer, Duration::from_millis(200)).is_ok()
                    || Instant::now() > deadline
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        lost
    }

    /// The data directory of member `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    /// The log file of member `i` (appended across restarts).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// The last lines of every member's log, for an error that gives up
    /// waiting on the cluster: what the members said is what explains it.
    pub fn log_tails(&self) -> String {
        const LINES: usize = 12;
        let mut out = String::new();
        for i in 0..self.members.len() {
            let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let running = if self.is_running(i) {
                "running"
            } else {
                "not running"
            };
            out.push_str(&format!(
                "\n--- {} ({running}), last lines of its log:",
                self.members[i].name
            ));
            for line in &lines[lines.len().saturating_sub(LINES)..] {
                out.push_str("\n  ");
                out.push_str(line);
            }
        }
        out
    }

    /// The command line member `i` starts with.
    pub fn command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let mut cmd = Command::new(&self.exe);
        cmd.arg("server")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &format!("http://{}", m.client)])
            .args(["--advertise-client-urls", &format!("http://{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://{}", m.peer)])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}", m.peer),
            ])
            .args([
                "--initial-cluster",
                m.join.as_ref().unwrap_or(&self.initial),
            ])
            .args([
                "--initial-cluster-state",
                if m.join.is_some() { "existing" } else { "new" },
            ])
            .args(["--http-addr", &m.http])
            .args(&self.extra);
        cmd
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let child = self
            .command(i)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.members[i].name))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Reserves free ports for a member named `name` that will join the
    /// running cluster, and returns its index. Add it to the membership
    /// (`member add`), then start it with [`Cluster::start_joining`].
    pub fn reserve_member(&mut self, name: &str) -> anyhow::Result<usize> {
        let ports = free_ports(3)?;
        self.members.push(Member::new(name.to_string(), &ports));
        Ok(self.members.len() - 1)
    }

    /// Starts member `i` with `--initial-cluster-state existing` and
    /// `initial_cluster` (`name=peer-url,...`, itself included).
    pub fn start_joining(&mut self, i: usize, initial_cluster: &str) -> anyhow::Result<()> {
        self.members[i].join = Some(initial_cluster.to_string());
        self.spawn(i)
    }

    /// The peer URL of member `i`.
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://{}", self.members[i].peer)
    }

    /// All client endpoints, host:port.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// Client endpoints of the members that are running.
    pub fn live_endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .map(|i| self.members[i].client.clone())
            .collect()
    }

    /// Whether member `i` runs: started, not killed, and not exited on its
    /// own (an exited child stays a zombie until reaped, which its
    /// `/proc/PID/stat` shows as state `Z`).
    pub fn is_running(&self, i: usize) -> bool {
        let Some(child) = &self.members[i].child else {
            return false;
        };
        match std::fs::read_to_string(format!("/proc/{}/stat", child.id())) {
            // The state follows the command name, which is in parentheses.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }

    /// `kill -9` member `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts member `i` from its data dir.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// Sends SIGSTOP (`pause = true`) or SIGCONT to member `i`.
    pub fn pause(&self, i: usize, pause: bool) {
        if let Some(c) = &self.members[i].child {
            let sig = if pause {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Sends SIGTERM to member `i` (a clean stop); reap it with [`Cluster::wait_exit`].
    pub fn terminate(&self, i: usize) {
        if let Some(c) = &self.members[i].child {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
    }

    /// Waits until member `i`'s process exits, returning its exit code.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = self.members[i].child.as_mut() else {
                bail!("member {i} is not running");
            };
            if let Some(st) = c.try_wait()? {
                self.members[i].child = None;
                return Ok(st.code());
            }
            if Instant::now() > deadline {
                bail!(
                    "member {} did not exit within {timeout:?}",
                    self.members[i].name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The cluster view of member `i` (`GET /v1/cluster`), if it answers.
    pub async fn cluster_view(&self, i: usize) -> Option<serde_json::Value> {
        let (status, body) = http_get(&self.members[i].http, "/v1/cluster").await?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// Waits until a running member reports a leader that is running too,
    /// and returns the leader's index.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.members.len() {
                if !self.is_running(i) {
                    continue;
                }
                if let Some(v) = self.cluster_view(i).await {
                    if let Some(name) = v["leader"].as_str() {
                        if let Some(l) = self.members.iter().position(|m| m.name == name) {
                            if self.is_running(l) {
                                return Ok(l);
                            }
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running member answers `GET /ready` with 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            if !self.is_running(i) {
                continue;
            }
            while http_get(&self.members[i].http, "/ready").await.map(|r| r.0) != Some(200) {
                if Instant::now() > deadline {
                    bail!(
                        "member {} not ready within {timeout:?}{}",
                        self.members[i].name,
                        self.log_tails()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Waits until every running member reports the same leader.
    pub async fn wait_agreed_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut names = Vec::new();
            for i in 0..self.members.len() {
                if self.is_running(i) {
                    names.push(
                        self.cluster_view(i)
                            .await
                            .and_then(|v| v["leader"].as_str().map(String::from)),
                    );
                }
            }
            if let Some(Some(first)) = names.first() {
                if names.iter().all(|n| n.as_deref() == Some(first.as_str())) {
                    if let Some(l) = self.members.iter().position(|m| &m.name == first) {
                        return Ok(l);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "members did not agree on a leader within {timeout:?}: {names:?}{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.pause(i, false);
            self.kill(i);
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body), or None when unreachable.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, None).await
}

/// A plain HTTP/1.0 request with an optional JSON body.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(8 << 20).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .ok()
        .flatten()
}

/// A single-member real etcd (Debian's `etcd`) on free loopback ports, for
/// side-by-side checks; killed on drop.
pub struct Etcd {
    child: Child,
    /// Client address, host:port.
    pub endpoint: String,
    /// Peer URL.
    pub peer_url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts member `name` and waits until `etcdctl endpoint health` passes.
    pub fn start(name: &str) -> anyhow::Result<Etcd> {
        Etcd::start_with(name, &[])
    }

    /// As [`Etcd::start`], with extra flags for etcd.
    pub fn start_with(name: &str, extra: &[&str]) -> anyhow::Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(2)?;
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let child = Command::new("etcd")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(dir.path().join(name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("etcd runs (install it with scripts/install-test-deps.sh)")?;
        let mut etcd = Etcd {
            child,
            endpoint: format!("127.0.0.1:{}", ports[0]),
            peer_url: peer,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", etcd.endpoint))
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if healthy {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                let _ = etcd.child.kill();
                bail!("etcd did not become healthy within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
