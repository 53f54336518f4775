//! `nines playground`: a local cluster in one command. Starts N member
//! processes on loopback with their data under one directory, waits for a
//! leader, prints the endpoints, follows leader changes, and on Ctrl-C stops
//! every member it started (SIGTERM, then SIGKILL after a grace period). The
//! dashboard URL it prints is an in-process gateway in front of every
//! member's HTTP API, so the page keeps working (and shows the failover)
//! when the member that served it is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Flags of `nines playground`.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Number of members (1, 3, 5 or 7).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Directory for the members' data (default: a new temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the data directory on exit (always kept when --data-dir is given).
    #[arg(long)]
    pub keep_data: bool,
    /// Seconds to wait for the first leader.
    #[arg(long, default_value_t = 30)]
    pub startup_timeout: u64,
}

/// One member process and its addresses.
pub struct Member {
    /// Its name.
    pub name: String,
    /// Client (gRPC) address.
    pub client: String,
    /// Peer address.
    pub peer: String,
    /// HTTP API address.
    pub http: String,
    child: Option<Child>,
}

/// A set of member processes that are stopped when dropped.
pub struct LocalCluster {
    /// The members.
    pub members: Vec<Member>,
}

impl LocalCluster {
    /// Starts `n` members of a new cluster under `dir`.
    pub fn start(exe: &Path, n: usize, dir: &Path) -> anyhow::Result<LocalCluster> {
        let ports = free_ports(n * 3)?;
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("n{}", i + 1),
                client: format!("127.0.0.1:{}", ports[i * 3]),
                peer: format!("127.0.0.1:{}", ports[i * 3 + 1]),
                http: format!("127.0.0.1:{}", ports[i * 3 + 2]),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let log = std::fs::File::create(dir.join(format!("{}.log", m.name)))
                .with_context(|| format!("cannot create the log of {}", m.name))?;
            let child = Command::new(exe)
                .arg("server")
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(dir.join(&m.name))
                .args(["--listen-client-urls", &format!("http://{}", m.client)])
                .args(["--advertise-client-urls", &format!("http://{}", m.client)])
                .args(["--listen-peer-urls", &format!("http://{}", m.peer)])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://{}", m.peer),
                ])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--http-addr", &m.http])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start member {}", m.name))?;
            m.child = Some(child);
        }
        Ok(LocalCluster { members })
    }

    /// The comma-separated client endpoints.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops every member: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for m in &mut self.members {
            if let Some(c) = &m.child {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() >= deadline => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }
    }

    /// Names of members whose process has exited, with the status.
    fn exited(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if let Some(c) = &mut m.child {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((m.name.clone(), status.to_string()));
                    m.child = None;
                }
            }
        }
        out
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Picks `n` distinct free loopback ports.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free ports on 127.0.0.1")?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect())
}

/// A plain HTTP/1.0 GET on loopback: (status, body), or None when unreachable.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// Starts the gateway in front of the members' HTTP APIs on `port`: one
/// member serves the page (consistent hashing on the client address keeps
/// it the same while it lives); a dead one is skipped by a connect-failure
/// retry at once and by the health check from then on.
async fn start_dashboard_gateway(
    cluster: &LocalCluster,
    port: u16,
) -> anyhow::Result<nines_gateway::Gateway> {
    let backends = cluster
        .members
        .iter()
        .map(|m| format!("{{ addr = \"{}\" }}", m.http))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[[listener]]\nname = \"dashboard\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\n\
         [[listener.route]]\npath_prefix = \"/\"\ncluster = \"members\"\n\n\
         [[cluster]]\nname = \"members\"\nbalance = \"consistent_hash\"\nhash_key = \"source_ip\"\n\
         backends = [{backends}]\n\n\
         [cluster.health]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\n\
         [cluster.retry]\nattempts = {attempts}\non = [\"connect-failure\", \"reset\", \"timeout\"]\n",
        attempts = cluster.members.len().max(2),
    );
    let config = nines_gateway::Config::parse(Path::new("playground-dashboard.toml"), &text)
        .context("dashboard gateway config")?;
    nines_gateway::Gateway::start(config, None, None)
        .await
        .context("cannot start the dashboard gateway")
}

/// The leader's name and term as some member reports it.
async fn leader_view(cluster: &LocalCluster) -> Option<(String, u64)> {
    for m in &cluster.members {
        if let Some((200, body)) = http_get(&m.http, "/v1/cluster").await {
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            if let Some(leader) = v["leader"].as_str() {
                return Some((leader.to_string(), v["term"].as_u64().unwrap_or(0)));
            }
        }
    }
    None
}

/// Runs the playground until Ctrl-C.
pub fn run(args: PlaygroundArgs) -> anyhow::Result<()> {
    if ![1, 3, 5, 7].contains(&args.members) {
        bail!(
            "--members must be 1, 3, 5 or 7 (a cluster of {} has no better quorum)",
            args.members
        );
    }
    let exe = std::env::current_exe().context("cannot find the nines binary")?;
    let (dir, remove) = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (d.clone(), false)
        }
        None => {
            let base =
                std::env::temp_dir().join(format!("nines-playground-{}", std::process::id()));
            std::fs::create_dir_all(&base)
                .with_context(|| format!("cannot create {}", base.display()))?;
            (base, !args.keep_data)
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut cluster = LocalCluster::start(&exe, args.members, &dir)?;
    let result = rt.block_on(async {
        println!(
            "nines playground: {} members, data and logs in {}",
            args.members,
            dir.display()
        );
        for m in &cluster.members {
            println!(
                "  {}  client {}  peer {}  http {}",
                m.name, m.client, m.peer, m.http
            );
        }
        let deadline = Instant::now() + Duration::from_secs(args.startup_timeout);
        let (mut leader, mut term) = loop {
            if let Some(v) = leader_view(&cluster).await {
                break v;
            }
            let gone = cluster.exited();
            if !gone.is_empty() {
                bail!(
                    "member {} exited during startup ({}); see {}/{}.log",
                    gone[0].0,
                    gone[0].1,
                    dir.display(),
                    gone[0].0
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no leader after {} s; see the member logs in {}",
                    args.startup_timeout,
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let dashboard_port = free_ports(1)?[0];
        let gateway = start_dashboard_gateway(&cluster, dashboard_port).await?;
        println!("endpoints: {}", cluster.endpoints());
        println!("dashboard: http://127.0.0.1:{dashboard_port}/");
        println!(
            "try: etcdctl --endpoints={} put hello world",
            cluster.endpoints()
        );
        println!("leader: {leader} (term {term})");
        println!("Ctrl-C stops every member.");
        let stop = crate::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            for (name, status) in cluster.exited() {
                println!("member {name} exited ({status})");
            }
            match leader_view(&cluster).await {
                Some((l, t)) if l != leader || t != term => {
                    println!("leader: {l} (term {t})");
                    leader = l;
                    term = t;
                }
                Some(_) => {}
                None if !leader.is_empty() => {
                    println!("leader: none (election under way or quorum lost)");
                    leader.clear();
                }
                None => {}
            }
        }
        gateway.shutdown().await;
        Ok(())
    });
    println!("stopping {} members", cluster.members.len());
    cluster.stop(Duration::from_secs(5));
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("data kept in {}", dir.display());
    }
    result
}
