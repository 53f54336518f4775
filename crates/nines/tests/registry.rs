//! The service registry with real processes: `nines server` members,
//! `nines demo-backend` backends, `nines gateway` following the registry,
//! `nines service` from the shell, and Debian's `dig` as the DNS client.
//! Tests take one lock so their clusters do not share the two cores.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nines_testkit::{http_request, Cluster};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nines"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Kills and reaps a child process on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A demo backend on `port` (0: any); returns it and its address.
fn backend(name: &str, port: u16) -> anyhow::Result<(Guard, SocketAddr)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(exe())
        .args(["demo-backend", "--port", &port.to_string(), "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .with_context(|| format!("backend {name} did not start: {line:?}"))?;
    Ok((guard, addr.parse()?))
}

/// A restarted backend on the port it had: retried while the port is busy.
fn backend_again(name: &str, addr: SocketAddr) -> anyhow::Result<Guard> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match backend(name, addr.port()) {
            Ok((guard, _)) => return Ok(guard),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

async fn cluster(n: usize) -> anyhow::Result<Cluster> {
    let c = Cluster::start(exe(), n, &["--dns-addr", "127.0.0.1:0", "--dns-ttl", "0"])?;
    c.wait_agreed_leader(Duration::from_secs(30)).await?;
    c.wait_ready(Duration::from_secs(30)).await?;
    Ok(c)
}

async fn call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let (status, text) = http_request(addr, method, path, body)
        .await
        .with_context(|| format!("{method} {path} on {addr}: no answer"))?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, json))
}

/// The member's registry DNS address, once the registry is loaded.
async fn dns_addr(http: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, info)) = call(http, "GET", "/v1/registry", None).await {
            if info["loaded"] == true {
                if let Some(addr) = info["dns_addr"].as_str() {
                    return Ok(addr.to_string());
                }
            }
        }
        ensure!(Instant::now() < deadline, "registry of {http} never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn register_body(addr: SocketAddr, interval_ms: u64) -> String {
    serde_json::json!({
        "address": addr.ip().to_string(),
        "port": addr.port(),
        "check": "http",
        "check_url": format!("http://{addr}/health"),
        "interval": format!("{interval_ms}ms"),
        "timeout": "300ms",
        "rise": 2,
        "fall": 2,
    })
    .to_string()
}

/// Ports of the healthy instances of `service` from the HTTP API.
async fn healthy_ports(http: &str, service: &str) -> anyhow::Result<Vec<u16>> {
    let (status, body) = call(
        http,
        "GET",
        &format!("/v1/services/{service}/instances?healthy=true"),
        None,
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    let mut ports: Vec<u16> = body["instances"]
        .as_array()
        .context("instances")?
        .iter()
        .filter_map(|i| i["port"].as_u64().map(|p| p as u16))
        .collect();
    ports.sort_unstable();
    Ok(ports)
}

/// `dig` output lines for a query (`+short`).
fn dig(dns: &str, args: &[&str]) -> anyhow::Result<String> {
    let (host, port) = dns.rsplit_once(':').context("dns addr")?;
    let out = Command::new("dig")
        .arg(format!("@{host}"))
        .args(["-p", port, "+time=2", "+tries=1"])
        .args(args)
        .output()
        .context("dig runs (install dnsutils with scripts/install-test-deps.sh)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Ports in the SRV answer for `name`.
fn srv_ports(dns: &str, name: &str) -> anyhow::Result<Vec<u16>> {
    let out = dig(dns, &[name, "SRV", "+short"])?;
    let mut ports: Vec<u16> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).and_then(|p| p.parse().ok()))
        .collect();
    ports.sort_unstable();
    Ok(ports)
}

/// Ports of the backends the gateway's cluster `web` holds (admin view).
async fn gateway_ports(admin: &str) -> anyhow::Result<Vec<u16>> {
    // A gateway still starting has no admin listener yet: no backends.
    let Ok((status, body)) = call(admin, "GET", "/admin/backends", None).await else {
        return Ok(Vec::new());
    };
    ensure!(status == 200, "{status} {body}");
    let mut ports: Vec<u16> = body["clusters"][0]["backends"]
        .as_array()
        .context("backends")?
        .iter()
        .filter_map(|b| {
            b["addr"]
                .as_str()?
                .parse::<SocketAddr>()
                .ok()
                .map(|a| a.port())
        })
        .collect();
    ports.sort_unstable();
    Ok(ports)
}

/// Polls `probe` until it returns `want`, up to `limit`; the time it took.
async fn until<F, Fut>(limit: Duration, want: &[u16], mut probe: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<u16>>>,
{
    let start = Instant::now();
    loop {
        let got = probe().await?;
        if got == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("after {:?}: {got:?}, wanted {want:?}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway config following service `web` and its admin listener. Until
/// the registry marks a killed backend critical, requests to it fail over:
/// retries on connect failures (not limited by the retry budget) and
/// passive ejection after one failure.
fn gateway_config(dir: &Path) -> anyhow::Result<(std::path::PathBuf, SocketAddr, SocketAddr)> {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nworker_threads = 1\nadmin = \"{admin}\"\n\n[[listener]]\nname = \"web\"\nbind = \"{listen}\"\n\
             protocol = \"http\"\ncluster = \"web\"\n\n[[cluster]]\nname = \"web\"\nbalance = \"round_robin\"\n\
             service = \"web\"\n\n[cluster.retry]\nattempts = 3\non = [\"connect-failure\", \"reset\", \"timeout\"]\n\
             budget_percent = 100\n\n[cluster.passive]\nconsecutive_failures = 1\nejection_time = \"2s\"\n"
        ),
    )?;
    Ok((path, listen, admin))
}

fn gateway(config: &Path, endpoints: &str) -> anyhow::Result<Guard> {
    Ok(Guard(
        Command::new(exe())
            .args(["gateway", "--endpoints", endpoints, "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

#[test]
fn http_checks_drop_a_dead_backend_from_dns_api_and_gateway_and_bring_it_back() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let c = cluster(1).await?;
        let http = c.members[0].http.clone();
        let dns = dns_addr(&http).await?;
        let mut backends = Vec::new();
        for i in 1..=3 {
            backends.push(backend(&format!("web-{i}"), 0)?);
        }
        let interval_ms = 500;
        for (i, (_, addr)) in backends.iter().enumerate() {
            let (status, body) = call(
                &http,
                "PUT",
                &format!("/v1/services/web/instances/web-{}", i + 1),
                Some(&register_body(*addr, interval_ms)),
            )
            .await?;
            ensure!(status == 200, "register: {status} {body}");
        }
        let mut all: Vec<u16> = backends.iter().map(|(_, a)| a.port()).collect();
        all.sort_unstable();
        let dir = tempfile::tempdir()?;
        let (config, listen, admin) = gateway_config(dir.path())?;
        let _gateway = gateway(&config, &c.members[0].client)?;
        let admin = admin.to_string();

        until(Duration::from_secs(10), &all, || {
            healthy_ports(&http, "web")
        })
        .await?;
        until(Duration::from_secs(5), &all, || async {
            srv_ports(&dns, "web.service.nines")
        })
        .await?;
        until(Duration::from_secs(10), &all, || gateway_ports(&admin)).await?;
        let a = dig(&dns, &["web.service.nines", "A", "+short"])?;
        assert_eq!(a.lines().filter(|l| *l == "127.0.0.1").count(), 3, "{a}");
        let answer = http_request(&listen.to_string(), "GET", "/", None)
            .await
            .context("gateway answers")?;
        assert_eq!(answer.0, 200);

        // Kill web-2: every view drops it within interval * fall + 1 s.
        let (guard, dead) = backends.remove(1);
        drop(guard);
        let limit = Duration::from_millis(interval_ms * 2 + 1000);
        let rest: Vec<u16> = all.iter().copied().filter(|p| *p != dead.port()).collect();
        let start = Instant::now();
        until(limit, &rest, || healthy_ports(&http, "web")).await?;
        until(limit.saturating_sub(start.elapsed()), &rest, || async {
            srv_ports(&dns, "web.service.nines")
        })
        .await?;
        until(limit.saturating_sub(start.elapsed()), &rest, || {
            gateway_ports(&admin)
        })
        .await?;
        let dropped_after = start.elapsed();
        ensure!(dropped_after <= limit, "dropped after {dropped_after:?}");
        let (_, body) = call(&http, "GET", "/v1/services/web/instances/web-2", None).await?;
        assert_eq!(body["status"], "critical", "{body}");
        assert!(
            body["output"].as_str().unwrap_or("").contains("GET"),
            "{body}"
        );

        // Restart it: back in every view once `rise` probes passed.
        let _again = backend_again("web-2", dead)?;
        let start = Instant::now();
        let limit = Duration::from_millis(interval_ms * 2 + 1000);
        until(limit, &all, || healthy_ports(&http, "web")).await?;
        until(limit, &all, || async {
            srv_ports(&dns, "web.service.nines")
        })
        .await?;
        until(limit, &all, || gateway_ports(&admin)).await?;
        let back_after = start.elapsed();
        eprintln!("dropped after {dropped_after:?}, back after {back_after:?}");
        Ok(())
    })
}

#[test]
fn ttl_instance_goes_critical_without_heartbeats_and_is_deregistered() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let c = cluster(1).await?;
        let http = c.members[0].http.clone();
        let endpoints = c.members[0].client.clone();
        dns_addr(&http).await?;
        let out = Command::new(exe())
            .args(["service", "register", "--endpoints", &endpoints])
            .args([
                "--name",
                "api",
                "--id",
                "api-1",
                "--address",
                "127.0.0.1",
                "--port",
                "9000",
            ])
            .args([
                "--check",
                "ttl",
                "--ttl",
                "2s",
                "--deregister-after",
                "2s",
                "--tag",
                "blue",
            ])
            .output()?;
        ensure!(
            out.status.success(),
            "register: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A second TTL instance, never heartbeated and never deregistered.
        let body = r#"{"address":"127.0.0.1","port":9001,"check":"ttl","ttl":"2s"}"#;
        let (status, answer) =
            call(&http, "PUT", "/v1/services/lone/instances/l1", Some(body)).await?;
        ensure!(status == 200, "{status} {answer}");
        let heartbeat = Guard(
            Command::new(exe())
                .args(["service", "heartbeat", "--endpoints", &endpoints])
                .args(["--name", "api", "--id", "api-1", "--every", "500ms"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        // Heartbeats keep it passing past its TTL.
        let passing_until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < passing_until {
            assert_eq!(healthy_ports(&http, "api").await?, [9000]);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = Command::new(exe())
            .args([
                "service",
                "health",
                "api",
                "-w",
                "json",
                "--endpoints",
                &endpoints,
            ])
            .output()?;
        let health: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(health["instances"][0]["status"], "passing", "{health}");
        assert_eq!(health["instances"][0]["tags"][0], "blue", "{health}");

        drop(heartbeat);
        let stopped = Instant::now();
        until(Duration::from_secs(3), &[], || healthy_ports(&http, "api")).await?;
        let critical_after = stopped.elapsed();
        ensure!(
            critical_after <= Duration::from_secs(3),
            "critical after {critical_after:?}"
        );
        let (_, body) = call(&http, "GET", "/v1/services/api/instances/api-1", None).await?;
        assert_eq!(body["status"], "critical", "{body}");

        // Deregistered once critical for `deregister_after`.
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let (status, _) = call(&http, "GET", "/v1/services/api/instances/api-1", None).await?;
            if status == 404 {
                break;
            }
            ensure!(Instant::now() < deadline, "never deregistered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deregistered_after = stopped.elapsed();
        ensure!(
            deregistered_after >= critical_after + Duration::from_millis(1500),
            "deregistered too early: {deregistered_after:?} (critical after {critical_after:?})"
        );
        // The lone instance expired too, but stays registered; one heartbeat
        // over HTTP brings it back at once.
        assert_eq!(healthy_ports(&http, "lone").await?, Vec::<u16>::new());
        let (_, lone) = call(&http, "GET", "/v1/services/lone/instances/l1", None).await?;
        assert_eq!(lone["status"], "critical", "{lone}");
        let (status, answer) = call(
            &http,
            "PUT",
            "/v1/services/lone/instances/l1/heartbeat",
            None,
        )
        .await?;
        assert_eq!(status, 200, "{answer}");
        until(Duration::from_secs(1), &[9001], || {
            healthy_ports(&http, "lone")
        })
        .await?;
        eprintln!("critical after {critical_after:?}, deregistered after {deregistered_after:?}");
        Ok(())
    })
}

/// A DNS query packet for `name` of `qtype`, with `questions` copies of the
/// question in the header count.
fn dns_query(id: u16, name: &str, qtype: u16, questions: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00]);
    p.extend_from_slice(&questions.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for _ in 0..questions {
        for label in name.trim_end_matches('.').split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
    }
    p
}

/// The response code of a UDP answer to `packet`, or `None` without answer.
fn udp_rcode(dns: &str, packet: &[u8]) -> anyhow::Result<Option<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    socket.send_to(packet, dns)?;
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) if n >= 4 => Ok(Some(buf[3] & 0x0f)),
        Ok(_) => bail!("short DNS answer"),
        Err(_) => Ok(None),
    }
}

#[test]
fn bad_registrations_are_refused_with_400_and_store_nothing_and_dns_survives_garbage(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let c = cluster(1).await?;
        let http = c.members[0].http.clone();
        let dns = dns_addr(&http).await?;
        let good = |extra: &str| format!(r#"{{"address":"127.0.0.1","port":8080{extra}}}"#);
        let huge_meta = format!(r#","meta":{{"blob":"{}"}}"#, "x".repeat(10_000));
        let cases: Vec<(String, String, &str)> = vec![
            ("/v1/services//instances/a".into(), good(""), "name"),
            (
                "/v1/services/web/instances/a".into(),
                r#"{"address":"999.1.1.1","port":8080}"#.into(),
                "address",
            ),
            (
                "/v1/services/web/instances/a".into(),
                r#"{"address":"localhost","port":8080}"#.into(),
                "address",
            ),
            (
                "/v1/services/web/instances/a".into(),
                good(r#","check":"smoke""#),
                "unknown check type",
            ),
            (
                "/v1/services/web/instances/a".into(),
                good(r#","check":"tcp","interval":"-1s""#),
                "interval",
            ),
            (
                "/v1/services/web/instances/a".into(),
                good(&huge_meta),
                "meta",
            ),
            (
                "/v1/services/web/instances/a".into(),
                format!(
                    r#"{{"address":"127.0.0.1","port":1,"meta":{{"b":"{}"}}}}"#,
                    "y".repeat(60_000)
                ),
                "limit",
            ),
            ("/v1/services/Bad_Name/instances/a".into(), good(""), "name"),
            (
                "/v1/services/web/instances/a".into(),
                "{not json".into(),
                "body",
            ),
            (
                "/v1/services/web/instances/a".into(),
                good(r#","colour":"red""#),
                "unknown field",
            ),
        ];
        for (path, body, needle) in &cases {
            let (status, answer) = call(&http, "PUT", path, Some(body)).await?;
            assert_eq!(status, 400, "{path} {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(answer["error"]["code"], "invalid_argument", "{answer}");
            assert!(
                message.contains(needle),
                "{path}: {message:?} lacks {needle:?}"
            );
        }
        let (status, answer) = call(
            &http,
            "PUT",
            "/v1/services/web/instances/nope/heartbeat",
            None,
        )
        .await?;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (404, &Value::from("not_found")),
            "{answer}"
        );
        let out = Command::new(exe())
            .args(["service", "register", "--endpoints", &c.members[0].client])
            .args([
                "--name",
                "web",
                "--id",
                "a",
                "--address",
                "127.0.0.1",
                "--port",
                "1",
                "--check",
                "smoke",
            ])
            .output()?;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown check type"));
        // Nothing under the registry prefix.
        let mut client =
            etcd_client::Client::connect([format!("http://{}", c.members[0].client)], None).await?;
        let stored = client
            .get(
                "/nines/registry/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await?;
        assert_eq!(stored.count(), 0, "bad input stored something");

        // DNS: garbage, oversized and odd queries get an error answer or
        // none, and the server keeps answering.
        let (status, _) = call(
            &http,
            "PUT",
            "/v1/services/web/instances/a",
            Some(&good("")),
        )
        .await?;
        assert_eq!(status, 200);
        let (status, answer) =
            call(&http, "PUT", "/v1/services/web/instances/a/heartbeat", None).await?;
        assert_eq!(
            status, 400,
            "a heartbeat for an instance without a ttl check: {answer}"
        );
        assert_eq!(
            udp_rcode(&dns, &dns_query(1, "web.service.nines", 1, 1))?,
            Some(0)
        );
        assert_eq!(
            udp_rcode(&dns, &dns_query(2, "nope.service.nines", 1, 1))?,
            Some(3),
            "NXDOMAIN"
        );
        assert_eq!(
            udp_rcode(&dns, &dns_query(3, "web.service.nines", 65_000, 1))?,
            Some(0),
            "unknown type: no data"
        );
        assert_eq!(
            udp_rcode(&dns, &dns_query(4, "web.service.nines", 1, 2))?,
            Some(1),
            "two questions: FORMERR"
        );
        assert_eq!(
            udp_rcode(&dns, &dns_query(5, "example.com", 1, 1))?,
            Some(5),
            "outside the zone: REFUSED"
        );
        let mut truncated_question = dns_query(6, "web.service.nines", 1, 1);
        truncated_question.truncate(20);
        let garbage: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for packet in [truncated_question, garbage.clone(), vec![0xff; 3], vec![]] {
            if let Some(code) = udp_rcode(&dns, &packet)? {
                assert_ne!(code, 0, "garbage answered NOERROR");
            }
        }
        {
            use std::io::Write;
            let mut tcp = std::net::TcpStream::connect(&dns)?;
            let _ = tcp.write_all(&[0xff, 0xff]);
            let _ = tcp.write_all(&garbage);
        }
        let a = dig(&dns, &["web.service.nines", "A", "+short"])?;
        assert_eq!(a.trim(), "127.0.0.1", "DNS still answers");
        let tcp = dig(&dns, &["+tcp", "web.service.nines", "SRV", "+short"])?;
        assert!(tcp.contains("8080"), "{tcp}");
        Ok(())
    })
}

#[test]
fn blocking_query_answers_on_change_or_at_wait_with_the_same_index() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let c = cluster(1).await?;
        let http = c.members[0].http.clone();
        dns_addr(&http).await?;
        let body = r#"{"address":"127.0.0.1","port":7001}"#;
        let (status, _) = call(&http, "PUT", "/v1/services/db/instances/db-1", Some(body)).await?;
        assert_eq!(status, 200);
        let (_, first) = call(&http, "GET", "/v1/services/db/instances", None).await?;
        let index = first["index"].as_i64().context("index")?;

        // Nothing changes: answered at `wait` with the same index. A change
        // to another service does not wake it.
        let start = Instant::now();
        let other = http.clone();
        let unrelated = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            call(
                &other,
                "PUT",
                "/v1/services/cache/instances/c1",
                Some(r#"{"address":"127.0.0.1","port":7100}"#),
            )
            .await
        });
        let (status, same) = call(
            &http,
            "GET",
            &format!("/v1/services/db/instances?index={index}&wait=1500ms"),
            None,
        )
        .await?;
        let waited = start.elapsed();
        assert_eq!(status, 200);
        assert_eq!(same["index"].as_i64(), Some(index), "{same}");
        assert!(
            waited >= Duration::from_millis(1450) && waited < Duration::from_millis(2900),
            "{waited:?}"
        );
        unrelated.await??;

        // A change: answered within 100 ms of it.
        let waiter = {
            let http = http.clone();
            tokio::spawn(async move {
                let r = call(
                    &http,
                    "GET",
                    &format!("/v1/services/db/instances?index={index}&wait=20s"),
                    None,
                )
                .await;
                (Instant::now(), r)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "answered before any change");
        let body = r#"{"address":"127.0.0.1","port":7002}"#;
        let (status, put) =
            call(&http, "PUT", "/v1/services/db/instances/db-2", Some(body)).await?;
        let changed_at = Instant::now();
        assert_eq!(status, 200);
        let (answered_at, answer) = waiter.await?;
        let (status, answer) = answer?;
        assert_eq!(status, 200);
        let lag = answered_at.saturating_duration_since(changed_at);
        assert!(
            lag <= Duration::from_millis(100),
            "answered {lag:?} after the change"
        );
        assert!(answer["index"].as_i64() > Some(index), "{answer}");
        assert_eq!(answer["index"], put["index"], "{answer} {put}");
        assert_eq!(answer["instances"].as_array().map(Vec::len), Some(2));

        // The same registry from the shell.
        let endpoints = c.members[0].client.clone();
        let nines = |args: &[&str]| {
            Command::new(exe())
                .args(args)
                .args(["--endpoints", &endpoints])
                .output()
        };
        let list = nines(&["service", "list", "-w", "json"])?;
        let list: Value = serde_json::from_slice(&list.stdout)?;
        let db = list["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "db")
            .cloned()
            .context("db listed")?;
        assert_eq!(
            (&db["instances"], &db["passing"]),
            (&Value::from(2), &Value::from(2))
        );
        let gone = nines(&["service", "deregister", "--name", "db", "--id", "db-2"])?;
        assert!(
            gone.status.success(),
            "{}",
            String::from_utf8_lossy(&gone.stderr)
        );
        let again = nines(&["service", "deregister", "--name", "db", "--id", "db-2"])?;
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("not registered"));
        // The member's view follows the CLI's write through its watch.
        until(Duration::from_secs(2), &[7001], || {
            healthy_ports(&http, "db")
        })
        .await?;
        Ok(())
    })
}

/// The `checker` and `status` of one instance, as member `http` sees it.
async fn instance_state(http: &str, service: &str, id: &str) -> anyhow::Result<(String, String)> {
    let (status, body) = call(
        http,
        "GET",
        &format!("/v1/services/{service}/instances/{id}"),
        None,
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    Ok((
        body["checker"].as_str().unwrap_or_default().to_string(),
        body["status"].as_str().unwrap_or_default().to_string(),
    ))
}

#[test]
fn checks_of_a_killed_member_continue_on_the_others() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let mut c = cluster(3).await?;
        let https: Vec<String> = c.members.iter().map(|m| m.http.clone()).collect();
        for h in &https {
            dns_addr(h).await?;
        }
        // Six instances over three members: each member checks some.
        let mut backends = Vec::new();
        for i in 0..6 {
            let (guard, addr) = backend(&format!("b{i}"), 0)?;
            let (status, body) = call(
                &https[0],
                "PUT",
                &format!("/v1/services/svc/instances/i{i}"),
                Some(&register_body(addr, 300)),
            )
            .await?;
            ensure!(status == 200, "{status} {body}");
            backends.push(Some(guard));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let owners = loop {
            let mut owners = Vec::new();
            for i in 0..6 {
                owners.push(instance_state(&https[0], "svc", &format!("i{i}")).await?);
            }
            if owners.iter().all(|(_, s)| s == "passing") {
                break owners;
            }
            ensure!(Instant::now() < deadline, "never all passing: {owners:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Kill the member that checks i0 (never the one whose API we read).
        let victim_name = owners[0].0.clone();
        let victim = c.members.iter().position(|m| m.name == victim_name).context("owner is a member")?;
        let watcher = (victim + 1) % 3;
        let orphans: Vec<usize> = (0..6).filter(|i| owners[*i].0 == victim_name).collect();
        c.kill(victim);
        let killed = Instant::now();
        // Failure detection: its presence lease (2 s) expires; allow a leader
        // election on top.
        let deadline = killed + Duration::from_secs(6);
        loop {
            let (_, info) = call(&https[watcher], "GET", "/v1/registry", None).await?;
            let live: Vec<&str> = info["checkers"].as_array().map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).collect());
            if !live.contains(&victim_name.as_str()) && live.len() == 2 {
                break;
            }
            ensure!(Instant::now() < deadline, "{victim_name} never left the checkers: {info}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let detected_after = killed.elapsed();
        // Its checks run elsewhere: killing their backends turns them
        // critical within interval * fall + 1 s.
        for i in &orphans {
            backends[*i] = None;
        }
        let stopped = Instant::now();
        for i in &orphans {
            let deadline = stopped + Duration::from_millis(300 * 2 + 1000);
            loop {
                let (checker, status) = instance_state(&https[watcher], "svc", &format!("i{i}")).await?;
                if status == "critical" {
                    assert_ne!(checker, victim_name);
                    break;
                }
                ensure!(Instant::now() < deadline, "i{i} still {status} (checker {checker:?})");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        eprintln!(
            "{victim_name} checked {} instances; others took over {detected_after:?} after the kill; critical {:?} after their backends died",
            orphans.len(),
            stopped.elapsed()
        );
        Ok(())
    })
}

#[test]
fn wrk_through_the_gateway_sees_no_errors_while_backends_leave_die_and_join() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let c = cluster(1).await?;
        let http = c.members[0].http.clone();
        dns_addr(&http).await?;
        let mut backends = Vec::new();
        for i in 1..=4 {
            backends.push(backend(&format!("web-{i}"), 0)?);
        }
        for (i, (_, addr)) in backends.iter().enumerate().take(3) {
            let path = format!("/v1/services/web/instances/web-{}", i + 1);
            let (status, body) =
                call(&http, "PUT", &path, Some(&register_body(*addr, 300))).await?;
            ensure!(status == 200, "{status} {body}");
        }
        let first: Vec<u16> = {
            let mut p: Vec<u16> = backends.iter().take(3).map(|(_, a)| a.port()).collect();
            p.sort_unstable();
            p
        };
        let dir = tempfile::tempdir()?;
        let (config, listen, admin) = gateway_config(dir.path())?;
        let _gateway = gateway(&config, &c.members[0].client)?;
        let admin = admin.to_string();
        until(Duration::from_secs(10), &first, || gateway_ports(&admin)).await?;

        let wrk = Command::new("wrk")
            .args(["-t1", "-c8", "-d6s", &format!("http://{listen}/")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("wrk runs (install it with scripts/install-test-deps.sh)")?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, _) = call(&http, "DELETE", "/v1/services/web/instances/web-1", None).await?;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (guard, _) = backends.remove(1);
        drop(guard); // web-2 dies
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let new_addr = backends[2].1;
        let (status, _) = call(
            &http,
            "PUT",
            "/v1/services/web/instances/web-4",
            Some(&register_body(new_addr, 300)),
        )
        .await?;
        assert_eq!(status, 200);
        let out = tokio::task::spawn_blocking(move || wrk.wait_with_output()).await??;
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "wrk failed: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!report.contains("Non-2xx"), "{report}");
        assert!(!report.contains("Socket errors"), "{report}");
        let requests: u64 = report
            .lines()
            .find_map(|l| {
                l.trim()
                    .split_once(" requests in ")
                    .and_then(|(n, _)| n.parse().ok())
            })
            .context("wrk request count")?;
        assert!(requests > 100, "{report}");
        // The gateway now holds web-3 and web-4, and web-4 served traffic.
        let mut now: Vec<u16> = vec![backends[1].1.port(), new_addr.port()];
        now.sort_unstable();
        until(Duration::from_secs(3), &now, || gateway_ports(&admin)).await?;
        let (_, view) = call(&admin, "GET", "/admin/backends", None).await?;
        let served = view["clusters"][0]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["addr"] == new_addr.to_string())
            .and_then(|b| b["requests"].as_u64())
            .unwrap_or(0);
        assert!(served > 0, "the added backend got no traffic: {view}");
        eprintln!("wrk: {requests} requests, all 2xx");
        Ok(())
    })
}

#[test]
fn big_udp_answers_are_truncated_and_tcp_carries_them_whole() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let c = cluster(1).await?;
        let http = c.members[0].http.clone();
        let dns = dns_addr(&http).await?;
        for i in 0..40 {
            let body = format!(
                r#"{{"address":"127.0.0.{}","port":{},"weight":{},"tags":["t{}"]}}"#,
                i + 1,
                9000 + i,
                i + 1,
                i % 2
            );
            let (status, answer) = call(
                &http,
                "PUT",
                &format!("/v1/services/big/instances/b{i}"),
                Some(&body),
            )
            .await?;
            ensure!(status == 200, "{status} {answer}");
        }
        let udp = dig(
            &dns,
            &["+bufsize=512", "+ignore", "big.service.nines", "SRV"],
        )?;
        let flags = udp
            .lines()
            .find(|l| l.contains(";; flags:"))
            .unwrap_or_default()
            .to_string();
        assert!(flags.contains(" tc"), "no TC bit: {udp}");
        let noedns = dig(&dns, &["+noedns", "+ignore", "big.service.nines", "A"])?;
        assert!(
            noedns
                .lines()
                .any(|l| l.contains(";; flags:") && l.contains(" tc")),
            "{noedns}"
        );
        // dig retries over TCP by itself and gets every record.
        assert_eq!(srv_ports(&dns, "big.service.nines")?.len(), 40);
        let tcp_a = dig(&dns, &["+tcp", "big.service.nines", "A", "+short"])?;
        assert_eq!(tcp_a.lines().count(), 40);
        // Tags and weights.
        let tagged = dig(&dns, &["t1.big.service.nines", "SRV", "+short"])?;
        assert_eq!(tagged.lines().count(), 20, "{tagged}");
        let srv = dig(&dns, &["+tcp", "big.service.nines", "SRV", "+short"])?;
        assert!(srv.lines().any(|l| l.starts_with("1 40 9039 ")), "{srv}");
        Ok(())
    })
}

#[test]
fn a_member_runs_a_gateway_that_follows_its_registry() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let dir = tempfile::tempdir()?;
        let (config, listen, admin) = gateway_config(dir.path())?;
        let admin = admin.to_string();
        let config = config.to_str().context("utf-8 path")?.to_string();
        let c = Cluster::start(
            exe(),
            1,
            &["--dns-addr", "127.0.0.1:0", "--gateway-config", &config],
        )?;
        c.wait_ready(Duration::from_secs(30)).await?;
        let http = c.members[0].http.clone();
        dns_addr(&http).await?;
        let (_alpha, alpha) = backend("alpha", 0)?;
        let body = format!(r#"{{"address":"127.0.0.1","port":{}}}"#, alpha.port());
        let (status, answer) = call(
            &http,
            "PUT",
            "/v1/services/web/instances/alpha",
            Some(&body),
        )
        .await?;
        ensure!(status == 200, "{status} {answer}");
        until(Duration::from_secs(2), &[alpha.port()], || {
            gateway_ports(&admin)
        })
        .await?;
        let (status, text) = http_request(&listen.to_string(), "GET", "/", None)
            .await
            .context("gateway answers")?;
        assert_eq!((status, text.trim()), (200, "alpha"));
        // A weight change reaches the gateway within a second, no reload.
        let body = format!(
            r#"{{"address":"127.0.0.1","port":{},"weight":5}}"#,
            alpha.port()
        );
        let (status, _) = call(
            &http,
            "PUT",
            "/v1/services/web/instances/alpha",
            Some(&body),
        )
        .await?;
        assert_eq!(status, 200);
        let changed = Instant::now();
        loop {
            let (_, view) = call(&admin, "GET", "/admin/backends", None).await?;
            if view["clusters"][0]["backends"][0]["weight"] == 5 {
                break;
            }
            ensure!(
                changed.elapsed() < Duration::from_secs(1),
                "weight not updated: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, _) = call(&http, "DELETE", "/v1/services/web/instances/alpha", None).await?;
        assert_eq!(status, 200);
        until(Duration::from_secs(2), &[], || gateway_ports(&admin)).await?;
        Ok(())
    })
}

#[test]
fn an_explicit_dns_address_that_cannot_be_bound_stops_the_member() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let taken = UdpSocket::bind("127.0.0.1:0")?;
    let dns = taken.local_addr()?;
    let dir = tempfile::tempdir()?;
    let ports = nines_testkit::free_ports(3)?;
    let out = Command::new(exe())
        .args(["server", "--name", "solo", "--data-dir"])
        .arg(dir.path().join("solo"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", ports[0]),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", ports[1]),
        ])
        .args(["--http-addr", &format!("127.0.0.1:{}", ports[2])])
        .args(["--dns-addr", &dns.to_string()])
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {dns} (dns)")),
        "{stderr}"
    );
    Ok(())
}
