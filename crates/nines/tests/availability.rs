//! Availability accounting on real member processes: a service with one
//! HTTP-checked instance is taken fully down for a measured interval (its
//! backend killed, then started again on the same port); the report under
//! `/v1/availability/web` shows one incident whose length matches the
//! outage within one second, the downtime and nines of the 1 h window, and,
//! with an SLO set, an overspent error budget and a firing page alert. The
//! history is in the replicated store: after the leader is killed another
//! member reports the same incident.
//!
//! Request outcomes: with `nines gateway` in front of a registered service,
//! requests go on while every backend is down for a measured interval; the
//! report's request counts equal what the client saw, across a restart of
//! the gateway too; `GET /v1/gateways` shows the gateway and its backends,
//! and a gateway disappears when it stops or is killed. A gateway embedded
//! in a member (`--gateway-config`) reports under the member's name, and a
//! static cluster's requests count under the cluster's name.
//! A gateway's sweep ages out every indexed service's old buckets and drops
//! from the index the services with no bucket left.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nines_testkit::{http_get, http_request};
use serde_json::Value;
use support::{cluster, exe};

/// Kills and reaps a child process on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nines demo-backend` on `port` and waits until it listens.
fn demo_backend(port: u16) -> anyhow::Result<Guard> {
    let mut child = Command::new(exe())
        .args(["demo-backend", "--port", &port.to_string(), "--name", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let guard = Guard(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(line.starts_with("listening "), "demo backend: {line:?}");
    Ok(guard)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Polls `GET path` on `http` until its JSON satisfies `done`.
async fn wait_json(
    http: &str,
    path: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    loop {
        if let Some((200, body)) = http_get(http, path).await {
            last = serde_json::from_str(&body).expect("the answer is JSON");
            if done(&last) {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} not as expected: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `GET /v1/availability/web` on `http` until `done` accepts it.
async fn wait_report(http: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    wait_json(http, "/v1/availability/web", within, done).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_outage_is_reported_within_one_second_and_survives_failover() {
    let mut c = cluster(3, &[]).await;
    let port = nines_testkit::free_ports(1).expect("port")[0];
    let mut backend = Some(demo_backend(port).expect("backend"));
    let http = c.members[0].http.clone();
    let body = format!(
        r#"{{"address": "127.0.0.1", "port": {port}, "check": "http",
            "check_url": "http://127.0.0.1:{port}/health", "interval": "100ms",
            "timeout": "100ms", "rise": 1, "fall": 1}}"#
    );
    let (status, answer) = http_request(
        &http,
        "PUT",
        "/v1/services/web/instances/web-1",
        Some(&body),
    )
    .await
    .expect("registry answers");
    assert!((200..300).contains(&status), "register: {status} {answer}");
    wait_report(&http, Duration::from_secs(15), |r| r["up"] == true).await;

    // The outage: the only instance's backend is down for a measured time.
    let down_at = now_ms();
    backend.take();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    backend = Some(demo_backend(port).expect("backend again"));
    let up_at = now_ms();
    let outage_ms = up_at - down_at;

    let r = wait_report(&http, Duration::from_secs(10), |r| {
        r["up"] == true && r["incidents"][0]["end_ms"].is_u64()
    })
    .await;
    let incidents = r["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1, "{r:#}");
    let measured = incidents[0]["duration_ms"].as_u64().expect("duration");
    println!("outage {outage_ms} ms, reported {measured} ms");
    assert!(
        measured.abs_diff(outage_ms) <= 1000,
        "reported {measured} ms for an outage of {outage_ms} ms"
    );
    let start = incidents[0]["start_ms"].as_u64().expect("start");
    assert!(
        start.abs_diff(down_at) <= 1000,
        "incident starts {start}, outage at {down_at}"
    );
    let hour = &r["windows"][0];
    assert_eq!(hour["window"], "1h");
    let downtime = hour["downtime_seconds"].as_f64().expect("downtime");
    assert!((downtime * 1000.0 - measured as f64).abs() < 1.0, "{hour}");
    let availability = hour["availability_percent"].as_f64().expect("availability");
    assert!(availability < 100.0 && availability > 0.0, "{hour}");
    assert!(hour["nines"].as_f64().expect("nines") > 0.0, "{hour}");

    // An SLO turns the downtime into budget spent and a fast burn.
    let (status, answer) = http_request(
        &http,
        "PUT",
        "/v1/availability/web/slo",
        Some(r#"{"target_percent": 99.9}"#),
    )
    .await
    .expect("slo");
    assert_eq!(status, 200, "{answer}");
    let (status, _) = http_request(
        &http,
        "PUT",
        "/v1/availability/web/slo",
        Some(r#"{"target_percent": 101}"#),
    )
    .await
    .expect("bad slo");
    assert_eq!(status, 400, "an impossible target is refused");
    let r = wait_report(&http, Duration::from_secs(5), |r| r["slo_percent"] == 99.9).await;
    assert!(
        r["windows"][0]["error_budget_remaining_percent"]
            .as_f64()
            .expect("budget")
            < 0.0
    );
    assert!(
        r["burn_alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| a["name"] == "page" && a["firing"] == true),
        "{r:#}"
    );

    // The history lives in the replicated store: after the leader dies,
    // another member reports the same incident.
    let leader = c
        .wait_agreed_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    c.kill(leader);
    let other = (leader + 1) % 3;
    let other_http = c.members[other].http.clone();
    let after = wait_report(&other_http, Duration::from_secs(15), |r| {
        r["incidents"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    assert_eq!(after["incidents"][0]["start_ms"].as_u64(), Some(start));
    assert_eq!(
        after["incidents"][0]["duration_ms"].as_u64(),
        Some(measured)
    );
    let (status, list) = http_get(&other_http, "/v1/availability")
        .await
        .expect("list");
    assert_eq!(status, 200);
    assert!(list.contains("\"service\":\"web\""), "{list}");

    // `nines avail report` reads the same history over the etcd API.
    // Every member, the killed leader too: the CLI skips a dead endpoint.
    let endpoints = c.endpoints().join(",");
    let cli = Command::new(exe())
        .args([
            "--endpoints",
            &endpoints,
            "avail",
            "report",
            "--service",
            "web",
        ])
        .args(["--window", "1h", "-w", "json"])
        .output()
        .expect("nines avail report runs");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let reports: Value = serde_json::from_slice(&cli.stdout).expect("json reports");
    let from_cli = &reports[0];
    assert_eq!(from_cli["incidents"][0]["start_ms"].as_u64(), Some(start));
    assert_eq!(
        from_cli["incidents"][0]["duration_ms"].as_u64(),
        Some(measured)
    );
    let table = Command::new(exe())
        .args([
            "--endpoints",
            &endpoints,
            "avail",
            "report",
            "--window",
            "1h",
        ])
        .output()
        .expect("nines avail report runs");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("a row for web: {text}"));
    assert!(row.contains("1h") && row.contains('%'), "{row}");
    assert!(text.contains("incident: down at"), "{text}");
    let unknown = Command::new(exe())
        .args([
            "--endpoints",
            &endpoints,
            "avail",
            "report",
            "--window",
            "2h",
        ])
        .output()
        .expect("runs");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown window"));
    drop(backend);
}

/// Counts what a client of the gateway saw: every request, and those that
/// failed (a 5xx answer or no answer).
#[derive(Default, Debug)]
struct ClientView {
    requests: u64,
    failed: u64,
}

impl ClientView {
    /// One `GET /` through the gateway; whether it succeeded.
    async fn get(&mut self, gateway: &str) -> bool {
        self.requests += 1;
        let ok = matches!(http_get(gateway, "/").await, Some((status, _)) if status < 500);
        if !ok {
            self.failed += 1;
        }
        ok
    }

    /// Requests for `length`, paced so the two shared cores stay usable.
    async fn drive(&mut self, gateway: &str, length: Duration) {
        let end = Instant::now() + length;
        while Instant::now() < end {
            self.get(gateway).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Requests until `n` in a row succeed (bounded by `within`).
    async fn until_ok(&mut self, gateway: &str, n: u32, within: Duration) {
        let deadline = Instant::now() + within;
        let mut streak = 0;
        while streak < n {
            assert!(Instant::now() < deadline, "gateway never recovered");
            streak = if self.get(gateway).await {
                streak + 1
            } else {
                0
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Starts `nines gateway --name edge` and waits until it listens on `addr`.
async fn start_gateway(endpoints: &str, config: &std::path::Path, addr: &str) -> Guard {
    let guard = Guard(
        Command::new(exe())
            .args(["--endpoints", endpoints, "gateway", "--name", "edge"])
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gateway starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "gateway never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    guard
}

/// Polls `GET /v1/gateways` on `http` until `done` accepts it.
async fn wait_gateways(http: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    wait_json(http, "/v1/gateways", within, done).await
}

fn gateway_named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["gateways"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_request_outcomes_match_what_clients_saw_during_an_outage() {
    let c = cluster(3, &[]).await;
    let http = c.members[0].http.clone();
    let ports = nines_testkit::free_ports(3).expect("ports");
    let (backend_ports, gateway_port) = ([ports[0], ports[1]], ports[2]);
    let mut backends: Vec<Guard> = backend_ports
        .iter()
        .map(|&p| demo_backend(p).expect("backend"))
        .collect();
    for (i, port) in backend_ports.iter().enumerate() {
        let body = format!(
            r#"{{"address": "127.0.0.1", "port": {port}, "check": "http",
                "check_url": "http://127.0.0.1:{port}/health", "interval": "100ms",
                "timeout": "100ms", "rise": 1, "fall": 1}}"#
        );
        let path = format!("/v1/services/web/instances/web-{i}");
        let (status, answer) = http_request(&http, "PUT", &path, Some(&body))
            .await
            .expect("registry answers");
        assert!((200..300).contains(&status), "register: {status} {answer}");
    }
    // A service nobody sends requests to.
    let (status, answer) = http_request(
        &http,
        "PUT",
        "/v1/services/idle/instances/idle-1",
        Some(r#"{"address": "127.0.0.1", "port": 9}"#),
    )
    .await
    .expect("registry answers");
    assert!((200..300).contains(&status), "register: {status} {answer}");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nworker_threads = 1\n\n[[listener]]\nname = \"web\"\n\
             bind = \"127.0.0.1:{gateway_port}\"\nprotocol = \"http\"\ncluster = \"web\"\n\n\
             [[cluster]]\nname = \"web\"\nservice = \"web\"\n"
        ),
    )
    .expect("write config");
    let endpoints = c.endpoints().join(",");
    let gateway = format!("127.0.0.1:{gateway_port}");
    let gateway_proc = start_gateway(&endpoints, &config, &gateway).await;

    // Every request through the gateway counts, the first ones that wait
    // for the backends to pass their checks too.
    let mut seen = ClientView::default();
    seen.until_ok(&gateway, 20, Duration::from_secs(20)).await;
    seen.drive(&gateway, Duration::from_millis(1500)).await;
    let failed_before = seen.failed;

    // Every backend down for a measured interval while requests go on.
    let down_at = Instant::now();
    backends.clear();
    seen.drive(&gateway, Duration::from_millis(3000)).await;
    backends = backend_ports
        .iter()
        .map(|&p| demo_backend(p).expect("backend again"))
        .collect();
    let outage = down_at.elapsed();
    seen.until_ok(&gateway, 20, Duration::from_secs(20)).await;
    seen.drive(&gateway, Duration::from_millis(500)).await;
    println!(
        "client saw {} requests, {} failed ({} during the {:?} outage)",
        seen.requests,
        seen.failed,
        seen.failed - failed_before,
        outage
    );
    assert!(seen.failed - failed_before > 50, "{seen:?}");

    // The gateway restarts (its counters start over) under the same name:
    // it says goodbye on SIGTERM, and what the new process counts adds to
    // what the old one stored, in the same buckets.
    let status = Command::new("kill")
        .args(["-TERM", &gateway_proc.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut gateway_proc = gateway_proc;
    let deadline = Instant::now() + Duration::from_secs(15);
    while gateway_proc.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "gateway did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_gateways(&http, Duration::from_secs(3), |l| {
        gateway_named(l, "edge").is_none()
    })
    .await;
    let gateway_proc = start_gateway(&endpoints, &config, &gateway).await;
    seen.until_ok(&gateway, 20, Duration::from_secs(20)).await;
    seen.drive(&gateway, Duration::from_millis(500)).await;

    // The gateway's buckets add up to what the client saw: the whole test
    // is inside the 1 h window, so every request is counted exactly once.
    // The 1 h window sums minute buckets, the 30 d window hour buckets.
    let r = wait_report(&http, Duration::from_secs(15), |r| {
        [0, 3].iter().all(|&i| {
            let w = &r["windows"][i]["gateway_requests"];
            w["requests"].as_u64() == Some(seen.requests)
                && w["failed"].as_u64() == Some(seen.failed)
        })
    })
    .await;
    let hour = &r["windows"][0]["gateway_requests"];
    let expected = 100.0 * (1.0 - seen.failed as f64 / seen.requests as f64);
    let success = hour["success_percent"].as_f64().expect("success");
    assert!((success - expected).abs() < 1e-9, "{hour}");
    assert!(hour["nines"].as_f64().expect("nines") > 0.0, "{hour}");
    // The time-based figures are still there beside them.
    assert!(r["windows"][0]["availability_percent"].is_f64(), "{r:#}");
    let (status, answer) = http_request(
        &http,
        "PUT",
        "/v1/availability/web/slo",
        Some(r#"{"target_percent": 99.9}"#),
    )
    .await
    .expect("slo");
    assert_eq!(status, 200, "{answer}");
    let r = wait_report(&http, Duration::from_secs(5), |r| r["slo_percent"] == 99.9).await;
    let hour = &r["windows"][0]["gateway_requests"];
    assert!(hour["burn_rate"].as_f64().expect("burn") > 1.0, "{hour}");
    assert!(
        hour["error_budget_remaining_percent"]
            .as_f64()
            .expect("budget")
            < 0.0,
        "{hour}"
    );

    // The gateway's status: its cluster, fed by the service, and both
    // backends back.
    let list = wait_gateways(&http, Duration::from_secs(10), |l| {
        gateway_named(l, "edge").is_some_and(|g| {
            g["clusters"][0]["backends"]
                .as_array()
                .is_some_and(|b| b.len() == 2)
        })
    })
    .await;
    let edge = gateway_named(&list, "edge").expect("edge");
    let cluster = &edge["clusters"][0];
    assert_eq!(cluster["name"], "web", "{edge:#}");
    assert_eq!(cluster["service"], "web", "{edge:#}");
    assert!(edge["updated_ms"].as_u64().expect("updated") > 0);
    let mut addrs: Vec<String> = cluster["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["addr"].as_str().expect("addr").to_owned())
        .collect();
    addrs.sort();
    let mut want: Vec<String> = backend_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    want.sort();
    assert_eq!(addrs, want);
    // Every member serves the same list.
    let other = wait_gateways(&c.members[2].http, Duration::from_secs(5), |l| {
        gateway_named(l, "edge").is_some()
    })
    .await;
    assert!(gateway_named(&other, "edge").is_some());

    // `nines avail report` prints both kinds of figures; a service without
    // traffic says so.
    let table = Command::new(exe())
        .args([
            "--endpoints",
            &endpoints,
            "avail",
            "report",
            "--window",
            "1h",
        ])
        .output()
        .expect("nines avail report runs");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    let want_line = format!(
        "requests: {} requests, {} failed",
        seen.requests, seen.failed
    );
    assert!(text.contains(&want_line), "{want_line:?} in {text}");
    let idle_at = text
        .lines()
        .position(|l| l.starts_with("idle "))
        .unwrap_or_else(|| panic!("a row for idle: {text}"));
    assert_eq!(
        text.lines().nth(idle_at + 1).map(str::trim),
        Some("requests: no requests"),
        "{text}"
    );

    // A gateway that dies disappears with its lease.
    drop(gateway_proc);
    wait_gateways(&http, Duration::from_secs(15), |l| {
        gateway_named(l, "edge").is_none()
    })
    .await;
    drop(backends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_s_gateway_reports_under_the_member_s_name() {
    // A static cluster (no registry service) counts under its own name.
    let shop = StaticShop::start();
    let (config, gateway_port) = (shop.config.clone(), shop.gateway_port);
    let c = cluster(1, &["--gateway-config", config.to_str().expect("utf-8")]).await;
    let member = &c.members[0];
    let gateway = format!("127.0.0.1:{gateway_port}");
    let mut seen = ClientView::default();
    for _ in 0..25 {
        seen.get(&gateway).await;
    }
    assert_eq!(seen.failed, 0, "{seen:?}");
    let list = wait_gateways(&member.http, Duration::from_secs(10), |l| {
        gateway_named(l, &member.name)
            .is_some_and(|g| g["clusters"][0]["requests"].as_u64() == Some(25))
    })
    .await;
    let own = gateway_named(&list, &member.name).expect("the member's gateway");
    assert_eq!(own["clusters"][0]["service"], "shop", "{own:#}");
    assert_eq!(own["clusters"][0]["accounting"], "listener", "{own:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = http_get(&member.http, "/v1/availability/shop").await;
        let report: Value = answer
            .as_ref()
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or(Value::Null);
        let hour = &report["windows"][0]["gateway_requests"];
        if hour["requests"] == 25 {
            assert_eq!(hour["failed"], 0, "{report:#}");
            assert_eq!(hour["success_percent"], 100.0, "{report:#}");
            break;
        }
        assert!(Instant::now() < deadline, "no request figures: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, list) = http_get(&member.http, "/v1/availability")
        .await
        .expect("list");
    assert_eq!(status, 200);
    assert!(list.contains("\"service\":\"shop\""), "{list}");
}

/// The keys under `prefix`, without it.
async fn keys_under(client: &mut etcd_client::Client, prefix: &str) -> Vec<String> {
    let answer = client
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("get");
    answer
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sweep_ages_out_every_service_and_prunes_the_index() {
    const INDEX: &str = "/nines/availability/request-services/";
    const REQUESTS: &str = "/nines/availability/requests/";
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 86_400_000;
    let c = cluster(1, &[]).await;
    let mut client = etcd_client::Client::connect(c.endpoints(), None)
        .await
        .expect("client");
    // Left by a gateway that is gone: "gone" is indexed with no bucket,
    // "old" has only buckets past their retention (hours 31 days, minutes
    // 2 days), "kept" has an hour bucket of an hour ago.
    let now = now_ms();
    let totals = r#"{"requests":1,"failed":0}"#;
    for service in ["gone", "old", "kept"] {
        client
            .put(format!("{INDEX}{service}"), "", None)
            .await
            .expect("put");
    }
    let old_hour = (now - 40 * DAY) / HOUR * HOUR;
    let old_minute = (now - 3 * DAY) / 60_000 * 60_000;
    let recent_hour = (now - HOUR) / HOUR * HOUR;
    for key in [
        format!("{REQUESTS}old/h/{old_hour:020}/far"),
        format!("{REQUESTS}old/m/{old_minute:020}/far"),
        format!("{REQUESTS}kept/h/{recent_hour:020}/far"),
    ] {
        client.put(key, totals, None).await.expect("put");
    }

    // A gateway sweeps at its first publish.
    let shop = StaticShop::start();
    let (config, gateway_port) = (shop.config.clone(), shop.gateway_port);
    let gateway = format!("127.0.0.1:{gateway_port}");
    let _gateway = start_gateway(&c.endpoints().join(","), &config, &gateway).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let indexed = keys_under(&mut client, INDEX).await;
        if indexed == ["kept"] {
            break;
        }
        assert!(Instant::now() < deadline, "index still {indexed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        keys_under(&mut client, REQUESTS).await,
        [format!("kept/h/{recent_hour:020}/far")],
        "only the bucket within its retention is left"
    );
}

/// A demo backend and a gateway config with one HTTP listener, `shop`, in
/// front of it as a static cluster (no registry service), on free ports.
struct StaticShop {
    _backend: Guard,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    gateway_port: u16,
}

impl StaticShop {
    fn start() -> StaticShop {
        let ports = nines_testkit::free_ports(2).expect("ports");
        let (backend_port, gateway_port) = (ports[0], ports[1]);
        let backend = demo_backend(backend_port).expect("backend");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nworker_threads = 1\n\n[[listener]]\nname = \"shop\"\n\
                 bind = \"127.0.0.1:{gateway_port}\"\nprotocol = \"http\"\ncluster = \"shop\"\n\n\
                 [[cluster]]\nname = \"shop\"\nbackends = [{{ addr = \"127.0.0.1:{backend_port}\" }}]\n"
            ),
        )
        .expect("write config");
        StaticShop {
            _backend: backend,
            _dir: dir,
            config,
            gateway_port,
        }
    }
}
