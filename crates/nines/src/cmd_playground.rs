//! `nines playground`: a local cluster and a small real service in one
//! command. It starts N member processes on loopback with their data under
//! one directory and waits for a leader; then it starts demo backends (`nines
//! demo-backend` processes of the same executable, so a user can kill one),
//! registers them as the service `demo` with an HTTP health check, and runs
//! one in-process gateway with two listeners. The dashboard listener stands
//! in front of every member's HTTP API, so the page keeps working (and shows
//! the failover) when the member that served it is killed; the demo listener
//! routes to the `demo` service through the registry (`RegistryResolver`), so
//! a killed backend leaves the rotation. The gateway publishes its status to
//! the cluster (`nines_registry::gateway_report`) as `playground`, so the
//! dashboard's gateway panel shows it. The playground prints leader changes
//! and the demo's health as they happen, and on Ctrl-C stops every process it
//! started, by PID (SIGTERM, then SIGKILL after a grace period).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use nines_registry::gateway_report::GatewayReporter;
use nines_registry::{Mirror, Registration, Registry, RegistryResolver};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The registry service the demo backends register as.
pub const DEMO_SERVICE: &str = "demo";
/// The name the playground's gateway reports its status under, so every
/// member's dashboard shows it (`GET /v1/gateways`).
pub const GATEWAY_NAME: &str = "playground";
/// Most demo backends one playground starts.
pub const DEMO_BACKENDS_MAX: usize = 16;
/// How long a demo backend may take to say which port it listens on.
const BACKEND_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the playground waits for every demo backend to pass its check
/// and for the demo to answer through the gateway; after that it prints the
/// demo URL anyway, saying it is not ready.
const DEMO_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the registry mirror may take to load before the gateway starts
/// with an empty view (it fills in when the registry answers).
const MIRROR_LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long deregistering the demo instances may take on the way out.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the gateway's last status report may take on the way out.
const REPORT_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Grace between SIGTERM and SIGKILL on the way out.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Flags of `nines playground`.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Number of members (1, 3, 5 or 7).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Number of demo backends behind the gateway (0 for none).
    #[arg(long, default_value_t = 3)]
    pub demo_backends: usize,
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
        let members: Vec<Member> = (0..n)
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
        // Owned by the cluster from the start: should a later member fail
        // to start, dropping it stops the ones already running.
        let mut cluster = LocalCluster { members };
        for m in &mut cluster.members {
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
        Ok(cluster)
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
        stop_children(self.members.iter_mut().map(|m| &mut m.child), grace);
    }

    /// Names of members whose process has exited, with the status.
    fn exited(&mut self) -> Vec<(String, String)> {
        reap(self.members.iter_mut().map(|m| (&m.name, &mut m.child)))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// One demo backend process.
pub struct DemoBackend {
    /// Its instance id in the registry (`demo-1`, `demo-2`, ...).
    pub id: String,
    /// The address it serves on, as it printed it.
    pub addr: SocketAddr,
    /// Its process id, for a user who wants to kill it.
    pub pid: u32,
    child: Option<Child>,
}

/// Demo backend processes that are stopped when dropped.
#[derive(Default)]
pub struct DemoBackends {
    /// The backends, in id order.
    pub backends: Vec<DemoBackend>,
}

impl DemoBackends {
    /// Starts `n` demo backends (`EXE demo-backend --port 0`), each on a port
    /// the system picks, which it reads from the backend's first line; each
    /// logs to `dir/demo-I.log`. Started one after another, so a failure
    /// leaves nothing running (the ones started are stopped on drop).
    pub async fn start(exe: &Path, n: usize, dir: &Path) -> anyhow::Result<DemoBackends> {
        let mut started = DemoBackends::default();
        for i in 1..=n {
            let id = format!("{DEMO_SERVICE}-{i}");
            let log = std::fs::File::create(dir.join(format!("{id}.log")))
                .with_context(|| format!("cannot create the log of {id}"))?;
            let mut child = Command::new(exe)
                .args(["demo-backend", "--port", "0", "--name", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start demo backend {id}"))?;
            let pid = child.id();
            let stdout = child.stdout.take();
            let mut slot = Some(child);
            match listening_addr(stdout).await {
                Ok(addr) => started.backends.push(DemoBackend {
                    id,
                    addr,
                    pid,
                    child: slot,
                }),
                Err(e) => {
                    stop_children(std::iter::once(&mut slot), Duration::ZERO);
                    return Err(e.context(format!(
                        "demo backend {id} did not start; see {}/{id}.log",
                        dir.display()
                    )));
                }
            }
        }
        Ok(started)
    }

    /// Stops every backend: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        stop_children(self.backends.iter_mut().map(|b| &mut b.child), grace);
    }

    /// Ids of backends whose process has exited, with the status.
    fn exited(&mut self) -> Vec<(String, String)> {
        reap(self.backends.iter_mut().map(|b| (&b.id, &mut b.child)))
    }
}

impl Drop for DemoBackends {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// The address a demo backend prints on its first line (`listening ADDR`).
/// A thread reads it, then keeps draining the pipe until the process exits,
/// so the backend never writes into a closed pipe.
async fn listening_addr(stdout: Option<ChildStdout>) -> anyhow::Result<SocketAddr> {
    let stdout = stdout.context("no stdout pipe")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        if let Some(first) = lines.next() {
            let _ = tx.send(first);
        }
        lines.for_each(drop);
    });
    let line = tokio::time::timeout(BACKEND_START_TIMEOUT, rx)
        .await
        .context("no address printed in time")?
        .context("exited before printing its address")?;
    line.strip_prefix("listening ")
        .and_then(|a| a.trim().parse().ok())
        .with_context(|| format!("unexpected first line {line:?}"))
}

/// Stops `children`: SIGTERM to every running one, then SIGKILL to any
/// still running after `grace`. Each slot is emptied.
fn stop_children<'a>(children: impl Iterator<Item = &'a mut Option<Child>>, grace: Duration) {
    let mut running: Vec<Child> = children.filter_map(Option::take).collect();
    for c in &running {
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for c in &mut running {
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

/// Takes the children that have exited out of their slots: (name, status).
fn reap<'a>(
    children: impl Iterator<Item = (&'a String, &'a mut Option<Child>)>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, slot) in children {
        if let Some(c) = slot {
            if let Ok(Some(status)) = c.try_wait() {
                out.push((name.clone(), status.to_string()));
                *slot = None;
            }
        }
    }
    out
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

/// The gateway's config: the `dashboard` listener in front of the members'
/// HTTP APIs (one member serves the page; consistent hashing on the client
/// address keeps it the same while it lives; a dead one is skipped by a
/// connect-failure retry at once and by the health check from then on), and
/// with `demo`, the `demo` listener balancing over the registry's healthy
/// instances of the `demo` service, retrying a request that found a dead
/// backend on another. Both bind port 0; the addresses are read back.
fn gateway_config(cluster: &LocalCluster, demo: bool) -> anyhow::Result<nines_gateway::Config> {
    let backends = cluster
        .members
        .iter()
        .map(|m| format!("{{ addr = \"{}\" }}", m.http))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "[gateway]\ndrain_timeout = \"1s\"\n\n\
         [[listener]]\nname = \"dashboard\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n\
         [[listener.route]]\npath_prefix = \"/\"\ncluster = \"dashboard\"\n\n\
         [[cluster]]\nname = \"dashboard\"\nbalance = \"consistent_hash\"\nhash_key = \"source_ip\"\n\
         backends = [{backends}]\n\n\
         [cluster.health]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\n\
         [cluster.retry]\nattempts = {attempts}\non = [\"connect-failure\", \"reset\", \"timeout\"]\n",
        attempts = cluster.members.len().max(2),
    );
    if demo {
        text.push_str(&format!(
            "\n[[listener]]\nname = \"{DEMO_SERVICE}\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n\
             [[listener.route]]\npath_prefix = \"/\"\ncluster = \"{DEMO_SERVICE}\"\n\n\
             [[cluster]]\nname = \"{DEMO_SERVICE}\"\nbalance = \"round_robin\"\nservice = \"{DEMO_SERVICE}\"\n\n\
             [cluster.health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 1\n\n\
             [cluster.retry]\nattempts = 3\non = [\"connect-failure\", \"reset\", \"timeout\"]\n"
        ));
    }
    nines_gateway::Config::parse(Path::new("playground-gateway.toml"), &text)
        .context("playground gateway config")
}

/// A demo backend's registration: an HTTP check on `/health` every second,
/// one probe to pass or fail, so a killed backend is out within about a
/// second; its PID rides along in `meta`.
fn demo_instance(backend: &DemoBackend) -> anyhow::Result<nines_registry::Instance> {
    let mut meta = BTreeMap::new();
    meta.insert("pid".to_owned(), backend.pid.to_string());
    let registration = Registration {
        address: Some(backend.addr.ip().to_string()),
        port: Some(i64::from(backend.addr.port())),
        meta,
        check: Some("http".into()),
        check_url: Some(format!("http://{}/health", backend.addr)),
        interval: Some(serde_json::json!("1s")),
        timeout: Some(serde_json::json!("500ms")),
        rise: Some(1),
        fall: Some(1),
        ..Registration::default()
    };
    registration
        .validate(DEMO_SERVICE, &backend.id)
        .with_context(|| format!("registration of {}", backend.id))
}

/// (passing, registered) instances of the demo service in the mirror.
fn demo_health(mirror: &Mirror) -> Option<(usize, usize)> {
    let catalog = mirror.current();
    let service = catalog.service(DEMO_SERVICE)?;
    Some((service.healthy(None).count(), service.registered().count()))
}

/// Waits until all `n` demo instances pass and the demo answers 200 through
/// the gateway at `addr`; false if that has not happened by the deadline.
async fn wait_demo_ready(mirror: &Mirror, n: usize, addr: &str) -> bool {
    let deadline = Instant::now() + DEMO_READY_TIMEOUT;
    loop {
        if demo_health(mirror).is_some_and(|(passing, _)| passing >= n)
            && matches!(http_get(addr, "/").await, Some((200, _)))
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// Waits for the first leader; fails when a member exits or on the deadline.
async fn wait_first_leader(
    cluster: &mut LocalCluster,
    timeout_secs: u64,
    dir: &Path,
) -> anyhow::Result<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        if let Some(v) = leader_view(cluster).await {
            return Ok(v);
        }
        if let Some((name, status)) = cluster.exited().into_iter().next() {
            bail!(
                "member {name} exited during startup ({status}); see {}/{name}.log",
                dir.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "no leader after {timeout_secs} s; see the member logs in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deregisters the demo instances, within a bound: the members may already
/// be going away (a terminal's Ctrl-C reaches them too).
async fn deregister_demo(registry: &Registry, backends: &DemoBackends) {
    let all = async {
        for b in &backends.backends {
            let _ = registry.deregister(DEMO_SERVICE, &b.id).await;
        }
    };
    if tokio::time::timeout(DEREGISTER_TIMEOUT, all).await.is_err() {
        println!("could not deregister the demo instances (cluster going away)");
    }
}

/// Runs the playground until Ctrl-C.
pub fn run(args: PlaygroundArgs) -> anyhow::Result<()> {
    if ![1, 3, 5, 7].contains(&args.members) {
        bail!(
            "--members must be 1, 3, 5 or 7 (a cluster of {} has no better quorum)",
            args.members
        );
    }
    if args.demo_backends > DEMO_BACKENDS_MAX {
        bail!("--demo-backends must be at most {DEMO_BACKENDS_MAX}");
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
    // Before any process starts, so that no signal finds a child running
    // and the playground gone without cleaning up.
    let mut stop = {
        let _runtime = rt.enter();
        StopSignals::install()?
    };
    let mut cluster = LocalCluster::start(&exe, args.members, &dir)?;
    let mut backends = DemoBackends::default();
    let result = rt.block_on(serve(
        &args,
        (&exe, &dir, remove),
        &mut cluster,
        &mut backends,
        &mut stop,
    ));
    if !backends.backends.is_empty() {
        println!("stopping {} demo backends", backends.backends.len());
        backends.stop(STOP_GRACE);
    }
    println!("stopping {} members", cluster.members.len());
    cluster.stop(STOP_GRACE);
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("data kept in {}", dir.display());
    }
    result
}

/// Starts `n` demo backends and registers each as an instance of the demo
/// service. On an error the backends started are stopped (on drop).
async fn start_demo(
    exe: &Path,
    n: usize,
    dir: &Path,
    registry: &Registry,
) -> anyhow::Result<DemoBackends> {
    let backends = DemoBackends::start(exe, n, dir).await?;
    for b in &backends.backends {
        registry
            .register(demo_instance(b)?)
            .await
            .with_context(|| format!("cannot register {}", b.id))?;
    }
    Ok(backends)
}

/// Starts the playground's gateway (see [`gateway_config`]), its demo
/// cluster following the registry through `mirror`, and the task that
/// reports its status to the cluster under [`GATEWAY_NAME`].
async fn start_gateway(
    cluster: &LocalCluster,
    demo: bool,
    registry: &Registry,
    mirror: &Mirror,
) -> anyhow::Result<(nines_gateway::Gateway, GatewayReporter)> {
    let resolver = Arc::new(RegistryResolver::new(mirror.subscribe()));
    let config = gateway_config(cluster, demo)?;
    let gateway = nines_gateway::Gateway::start(config.clone(), None, Some(resolver))
        .await
        .context("cannot start the playground's gateway")?;
    let reporter = nines_registry::gateway_report::spawn(
        registry.clone(),
        gateway.clone(),
        GATEWAY_NAME,
        &config,
    );
    Ok((gateway, reporter))
}

/// SIGINT (Ctrl-C) and SIGTERM, registered when installed rather than when
/// first awaited, so a signal that arrives while the playground starts is
/// kept until it is awaited instead of killing the process (or, where the
/// shell ignores SIGINT, being lost) before any cleanup.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM (or one already received).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// What runs once the playground has started.
struct Started {
    leader: (String, u64),
    registry: Registry,
    mirror: Mirror,
    gateway: nines_gateway::Gateway,
    reporter: GatewayReporter,
}

/// The first leader, the registry mirror, the demo service and the gateway.
async fn start_all(
    args: &PlaygroundArgs,
    exe: &Path,
    dir: &Path,
    cluster: &mut LocalCluster,
    backends: &mut DemoBackends,
) -> anyhow::Result<Started> {
    let leader = wait_first_leader(cluster, args.startup_timeout, dir).await?;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client.clone()).collect();
    let registry = Registry::new(
        crate::connect(&endpoints)
            .await
            .context("cannot reach the new cluster")?,
    );
    let mirror = Mirror::spawn(registry.clone());
    if !mirror.wait_revision(0, MIRROR_LOAD_TIMEOUT).await {
        println!("registry not loaded yet; the demo fills in when it is");
    }
    *backends = start_demo(exe, args.demo_backends, dir, &registry).await?;
    let demo = !backends.backends.is_empty();
    let (gateway, reporter) = start_gateway(cluster, demo, &registry, &mirror).await?;
    Ok(Started {
        leader,
        registry,
        mirror,
        gateway,
        reporter,
    })
}

/// Everything between the members' start and Ctrl-C: the startup (which a
/// signal cuts short), the printed lines, then following changes, and on
/// the way out the gateway's last report and its drain.
async fn serve(
    args: &PlaygroundArgs,
    (exe, dir, remove): (&Path, &Path, bool),
    cluster: &mut LocalCluster,
    backends: &mut DemoBackends,
    stop: &mut StopSignals,
) -> anyhow::Result<()> {
    println!(
        "nines playground: {} members, data and logs in {}",
        args.members,
        dir.display()
    );
    for m in &cluster.members {
        let pid = m.child.as_ref().map_or(0, Child::id);
        println!(
            "  {}  client {}  peer {}  http {}  pid {pid}",
            m.name, m.client, m.peer, m.http
        );
    }
    let started = tokio::select! {
        started = start_all(args, exe, dir, cluster, backends) => started?,
        () = stop.recv() => {
            println!("interrupted while starting");
            return Ok(());
        }
    };
    let interrupted = tokio::select! {
        printed = print_urls(&started, cluster, backends) => {
            printed?;
            false
        }
        () = stop.recv() => true,
    };
    if !interrupted {
        follow(cluster, backends, &started.mirror, stop, started.leader).await;
    }
    // The last report and the lease's revocation need the cluster, which a
    // terminal's Ctrl-C may be stopping too: bounded, the lease expires anyway.
    let _ = tokio::time::timeout(REPORT_STOP_TIMEOUT, started.reporter.stop()).await;
    started.gateway.shutdown().await;
    if !remove {
        deregister_demo(&started.registry, backends).await;
    }
    Ok(())
}

/// Prints the endpoints and the dashboard URL, then, once the demo answers
/// (or after [`DEMO_READY_TIMEOUT`]), the demo URL and its backends.
async fn print_urls(
    started: &Started,
    cluster: &LocalCluster,
    backends: &DemoBackends,
) -> anyhow::Result<()> {
    let gateway = &started.gateway;
    let dashboard = gateway
        .listener_addr("dashboard")
        .await
        .context("the dashboard listener is missing")?;
    println!("endpoints: {}", cluster.endpoints());
    println!("dashboard: http://{dashboard}/");
    let demo = !backends.backends.is_empty();
    if demo {
        let addr = gateway
            .listener_addr(DEMO_SERVICE)
            .await
            .context("the demo listener is missing")?;
        let n = backends.backends.len();
        let ready = wait_demo_ready(&started.mirror, n, &addr.to_string()).await;
        println!(
            "demo: http://{addr}/  (service {DEMO_SERVICE}, {n} backends{})",
            if ready { "" } else { ", not all healthy yet" }
        );
        for b in &backends.backends {
            println!("  {}  {}  pid {}", b.id, b.addr, b.pid);
        }
    }
    println!(
        "try: etcdctl --endpoints={} put hello world",
        cluster.endpoints()
    );
    if demo {
        println!("try: kill -9 a member's or a backend's pid, and watch the dashboard");
    }
    let (leader, term) = &started.leader;
    println!("leader: {leader} (term {term})");
    println!("Ctrl-C stops every process the playground started.");
    Ok(())
}

/// Prints exits, leader changes and the demo's health until Ctrl-C.
async fn follow(
    cluster: &mut LocalCluster,
    backends: &mut DemoBackends,
    mirror: &Mirror,
    stop: &mut StopSignals,
    (mut leader, mut term): (String, u64),
) {
    let mut health = demo_health(mirror);
    loop {
        tokio::select! {
            () = stop.recv() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        for (name, status) in cluster.exited() {
            println!("member {name} exited ({status})");
        }
        for (id, status) in backends.exited() {
            println!("backend {id} exited ({status})");
        }
        match leader_view(cluster).await {
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
        let now = demo_health(mirror);
        if now != health {
            if let Some((passing, registered)) = now {
                println!("{DEMO_SERVICE}: {passing}/{registered} backends passing");
            }
            health = now;
        }
    }
}
