//! The dashboard in a real browser: Debian's headless Chromium, driven over
//! the W3C WebDriver protocol by chromedriver, loads the dashboard URL that
//! `nines playground` prints for its 3 members, reads the leader and every
//! member by name, a registered service in the services and availability
//! panels, the playground's demo service with each of its backends, the
//! gateway panel (the demo cluster's backends up, with a request rate while
//! the test sends traffic through the demo URL, the demo listener's route
//! with its rate, and those requests counted in the availability panel) and the backups panel (empty, then the chain
//! and last run of a full and an incremental taken with `nines backup
//! create`); a demo backend is killed with `kill -9` and the page must show
//! it critical and out of the gateway's rotation; then the leader is killed
//! with `kill -9` and the page must name the new leader within 3 s.
//! Screenshots before and after are saved under the target directory and
//! their paths printed. Without Chromium the test fails and says how to
//! install it.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use support::exe;

/// How long the page may take to name the new leader after the kill.
const FAILOVER_SHOWN_WITHIN: Duration = Duration::from_secs(3);

/// Chromium's flags: headless, no sandbox (tests run as root), nothing that
/// reaches the network on its own.
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1366,800",
];

/// Finds a program on PATH (or the path in `env`, if set).
fn find_program(names: &[&str], env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver and the Chromium it starts; both stopped by PID on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: Option<String>,
    /// The fresh profile directory; also how Chromium's processes are
    /// found to be killed if chromedriver could not close them.
    profile: tempfile::TempDir,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Browser {
    async fn start() -> anyhow::Result<Browser> {
        let chromium = find_program(&["chromium", "chromium-browser"], "NINES_CHROMIUM")
            .context("Chromium not found: install Debian's `chromium` and `chromium-driver` (scripts/install-test-deps.sh)")?;
        let chromedriver = find_program(&["chromedriver"], "NINES_CHROMEDRIVER")
            .context("chromedriver not found: install Debian's `chromium-driver` (scripts/install-test-deps.sh)")?;
        let port = nines_testkit::free_ports(1)?[0];
        let profile = tempfile::tempdir()?;
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let mut b = Browser {
            driver,
            port,
            session: None,
            profile,
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        b.wait_driver_ready().await?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", b.profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = b
            .call("POST", "/session", Some(caps), Duration::from_secs(60))
            .await
            .context("creating a browser session")?;
        let id = v["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in {v}"))?;
        b.session = Some(id.to_owned());
        Ok(b)
    }

    async fn wait_driver_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = self
                .call("GET", "/status", None, Duration::from_secs(2))
                .await
            {
                if v["ready"] == json!(true) {
                    return Ok(());
                }
            }
            if let Some(st) = self.driver.try_wait()? {
                bail!("chromedriver exited: {st}");
            }
            if Instant::now() > deadline {
                bail!("chromedriver not ready within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One WebDriver command; returns its `value`.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let uri = format!("http://127.0.0.1:{}{path}", self.port);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let res = tokio::time::timeout(timeout, async {
            let res = self.http.request(req).await?;
            let status = res.status();
            let bytes = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        })
        .await
        .with_context(|| format!("WebDriver {method} {path} timed out"))??;
        let v: Value = serde_json::from_slice(&res.1).context("WebDriver answer is not JSON")?;
        if !res.0.is_success() {
            bail!("WebDriver {method} {path}: {} {}", res.0, v);
        }
        Ok(v["value"].clone())
    }

    async fn session_call(
        &self,
        method: &str,
        rest: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let id = self.session.as_deref().context("no session")?;
        self.call(
            method,
            &format!("/session/{id}{rest}"),
            body,
            Duration::from_secs(10),
        )
        .await
    }

    async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .await
            .map(|_| ())
    }

    /// Runs `script` in the page and returns what it returns.
    async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn text_of(&self, selector: &str) -> anyhow::Result<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(selector)
        );
        Ok(self
            .eval(&script)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine;
        let v = self.session_call("GET", "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("screenshot is not a string")?)?;
        std::fs::write(path, png)?;
        println!("dashboard screenshot: {}", path.display());
        Ok(())
    }
}

impl Browser {
    /// Ends the session, which makes chromedriver stop Chromium.
    async fn close(mut self) {
        if let Some(id) = self.session.take() {
            let path = format!("/session/{id}");
            let _ = self
                .call("DELETE", &path, None, Duration::from_secs(5))
                .await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_processes_with_arg(&self.profile.path().display().to_string());
    }
}

/// Kills (by PID) any process whose command line holds `marker`: the
/// Chromium processes of this test's profile, should chromedriver have
/// left any behind.
fn kill_processes_with_arg(marker: &str) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A running `nines playground`: its members (name, HTTP address), the
/// dashboard URL, the demo listener and the demo backends it printed.
/// Interrupted like Ctrl-C on drop; whatever is left is killed by PID.
struct Playground {
    child: Child,
    members: Vec<(String, String)>,
    dashboard: String,
    /// The client endpoints, comma-separated.
    endpoints: String,
    /// The demo listener's address (host:port).
    demo: String,
    /// Demo backends: (id, address, pid).
    backends: Vec<(String, String, i32)>,
}

impl Playground {
    fn start() -> anyhow::Result<Playground> {
        use std::io::BufRead;
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-playground.log");
        println!("playground log: {}", log.display());
        let mut child = Command::new(exe())
            .arg("playground")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("playground starts")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // The reader drains stdout for the playground's whole life: a
        // closed pipe would make its next line fail.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut p = Playground {
            child,
            members: Vec::new(),
            dashboard: String::new(),
            endpoints: String::new(),
            demo: String::new(),
            backends: Vec::new(),
        };
        // The last line of the startup is `Ctrl-C stops ...`.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .context("the playground prints its members, dashboard and demo")?;
            if line.starts_with("Ctrl-C") {
                break;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [name, "client", _, "peer", _, "http", http, ..] = words[..] {
                p.members.push((name.to_owned(), http.to_owned()));
            }
            if let [id, addr, "pid", pid] = words[..] {
                p.backends
                    .push((id.to_owned(), addr.to_owned(), pid.parse()?));
            }
            if let Some(url) = line.strip_prefix("dashboard: ") {
                p.dashboard = url.to_owned();
            }
            if let Some(endpoints) = line.strip_prefix("endpoints: ") {
                p.endpoints = endpoints.to_owned();
            }
            if let Some(rest) = line.strip_prefix("demo: http://") {
                p.demo = rest.split('/').next().unwrap_or_default().to_owned();
            }
        }
        Ok(p)
    }

    /// PIDs of the member processes, by `--name`.
    fn member_pid(&self, name: &str) -> Option<i32> {
        let parent = self.child.id().to_string();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let named = args
                .windows(2)
                .any(|w| w[0] == b"--name" && w[1] == name.as_bytes());
            (ppid == parent && named).then_some(pid)
        })
    }

    /// The leader's name as the members report it.
    async fn leader(&self) -> Option<String> {
        for (_, http) in &self.members {
            if let Some((200, body)) = nines_testkit::http_get(http, "/v1/cluster").await {
                let v: Value = serde_json::from_str(&body).ok()?;
                if let Some(l) = v["leader"].as_str() {
                    return Some(l.to_owned());
                }
            }
        }
        None
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        let names: Vec<String> = self.members.iter().map(|m| m.0.clone()).collect();
        let mut pids: Vec<i32> = names.iter().filter_map(|n| self.member_pid(n)).collect();
        pids.extend(self.backends.iter().map(|b| b.2));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Waits until `#leader` reads `Leader: NAME` for a NAME `accept` takes.
async fn wait_leader_shown(
    b: &Browser,
    within: Duration,
    accept: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        last = b.text_of("#leader").await.unwrap_or(last);
        if let Some(name) = last.strip_prefix("Leader: ") {
            if accept(name) {
                return Ok(name.to_owned());
            }
        }
        if Instant::now() > deadline {
            let banner = b.text_of("#banner").await.unwrap_or_default();
            bail!("the page shows {last:?} after {within:?} ({banner})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the text of `selector` is one `accept` takes; returns it.
async fn wait_text(
    b: &Browser,
    selector: &str,
    within: Duration,
    accept: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let text = b.text_of(selector).await?;
        if accept(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{selector} shows {text:?} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One row of the gateway panel's backends table.
#[derive(Debug, serde::Deserialize)]
struct BackendRow {
    addr: String,
    state: String,
    rate: String,
}

/// The gateway panel's rows for `cluster` of gateway `gateway`.
async fn backend_rows(
    b: &Browser,
    gateway: &str,
    cluster: &str,
) -> anyhow::Result<Vec<BackendRow>> {
    let selector = format!(
        "#gateways .gateway[data-name='{gateway}'] .cluster[data-name='{cluster}'] tr.backend"
    );
    let script = format!(
        "return Array.from(document.querySelectorAll({})).map(r => ({{ \
           addr: r.dataset.addr, \
           state: r.querySelector('.backend-state').textContent, \
           rate: r.querySelector('.rate').textContent }}));",
        json!(selector)
    );
    Ok(serde_json::from_value(b.eval(&script).await?)?)
}

/// Sends GETs to `addr` until dropped, so the gateway has a request rate.
struct Traffic(tokio::task::JoinHandle<()>);

impl Traffic {
    fn start(addr: String) -> Traffic {
        Traffic(tokio::spawn(async move {
            loop {
                let _ = nines_testkit::http_get(&addr, "/").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The demo service, the gateway panel and the backups panel show what the
/// playground runs: every demo backend passing; the playground's gateway
/// with the demo cluster's backends (the addresses the playground printed)
/// up, and a request rate above zero while traffic flows, counted in the
/// availability panel; no backup yet, then the chain of two taken here.
async fn check_demo_gateway_and_backups(b: &Browser, playground: &Playground) {
    let ids: Vec<&str> = playground.backends.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        ids,
        ["demo-1", "demo-2", "demo-3"],
        "the playground's demo backends"
    );
    let total = ids.len();
    wait_text(
        b,
        "#services li.service[data-name='demo']",
        Duration::from_secs(20),
        |t| t.contains(&format!("{total}/{total} passing")) && ids.iter().all(|id| t.contains(id)),
    )
    .await
    .expect("the services panel shows every demo backend passing");

    let _traffic = Traffic::start(playground.demo.clone());
    let mut want: Vec<String> = playground.backends.iter().map(|x| x.1.clone()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = backend_rows(b, "playground", "demo")
            .await
            .expect("gateway rows");
        let mut addrs: Vec<String> = rows.iter().map(|r| r.addr.clone()).collect();
        addrs.sort();
        let all_up = rows.iter().all(|r| r.state == "up");
        let flowing = rows
            .iter()
            .any(|r| r.rate.parse::<f64>().is_ok_and(|v| v > 0.0));
        if addrs == want && all_up && flowing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway panel shows {rows:?} (want {want:?} up with a rate): {:?}",
            b.text_of("#gateways").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The demo cluster's p99 over the last report period, while traffic flows.
    wait_text(
        b,
        "#gateways .gateway[data-name='playground'] .cluster[data-name='demo'] .cluster-head",
        Duration::from_secs(10),
        |t| t.contains("p99 \u{2264} ") && t.contains(" ms"),
    )
    .await
    .expect("the gateway panel shows the demo cluster's p99");
    // The demo listener's line names its route and cluster, with a rate.
    wait_text(
        b,
        "#gateways .gateway[data-name='playground'] .listener[data-name='demo']",
        Duration::from_secs(10),
        |t| {
            t.contains("path_prefix=/ \u{2192} demo (")
                && !t.contains("(\u{2013} req/s)")
                && !t.contains("(0.0 req/s)")
        },
    )
    .await
    .expect("the gateway panel shows the demo listener's route with its request rate");
    // The gateway's request outcomes reach the availability panel.
    wait_text(
        b,
        "#availability tr[data-service='demo'] .requests-ok",
        Duration::from_secs(20),
        |t| t.starts_with("100.0000% of "),
    )
    .await
    .expect("the availability panel counts the demo's requests");
    wait_text(b, "#backups", Duration::from_secs(10), |t| {
        t.contains("no backup yet")
    })
    .await
    .expect("the backups panel says there is no backup yet");
    check_backups_panel(b, &playground.endpoints).await;
    b.eval("document.getElementById('gateways').scrollIntoView(); return null;")
        .await
        .expect("scroll to the gateway panel");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    b.screenshot(&dir.join("dashboard-gateway.png"))
        .await
        .expect("screenshot");
    check_backend_kill_shown(b, playground).await;
    b.eval("window.scrollTo(0, 0); return null;")
        .await
        .expect("scroll back");
}

/// Kills the last demo backend with `kill -9`: the services panel must show
/// its instance critical and the demo `2/3 passing`, and the gateway panel
/// must stop listing it as up in the demo cluster, while the others stay up.
async fn check_backend_kill_shown(b: &Browser, playground: &Playground) {
    let (id, addr, pid) = playground.backends.last().expect("a demo backend");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(*pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 a demo backend");
    let total = playground.backends.len();
    let passing = format!("{}/{total} passing", total - 1);
    let instance = format!("#services li.service[data-name='demo'] li.instance[data-id='{id}']");
    wait_text(b, &instance, Duration::from_secs(10), |t| {
        t.starts_with("critical")
    })
    .await
    .expect("the killed backend's instance is shown critical");
    wait_text(
        b,
        "#services li.service[data-name='demo'] .service-head",
        Duration::from_secs(10),
        |t| t.contains(&passing),
    )
    .await
    .expect("the demo service is shown with one instance less passing");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = backend_rows(b, "playground", "demo")
            .await
            .expect("gateway rows");
        let up: Vec<&str> = rows
            .iter()
            .filter(|r| r.state == "up")
            .map(|r| r.addr.as_str())
            .collect();
        if up.len() == total - 1 && !up.contains(&addr.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway panel after killing {addr}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    b.screenshot(&dir.join("dashboard-backend-killed.png"))
        .await
        .expect("screenshot");
}

/// Takes a full then an incremental backup of the playground's cluster with
/// `nines backup create`; the backups panel must show the chain (one full,
/// one incremental, both listed) and the last run as ok.
async fn check_backups_panel(b: &Browser, endpoints: &str) {
    let repo = tempfile::tempdir().expect("repository dir");
    let mut ids = Vec::new();
    for kind in ["full", "incr"] {
        let mut command = Command::new(exe());
        command
            .args(["backup", "create", "--kind", kind, "--repo"])
            .arg(repo.path())
            .args(["--endpoints", endpoints]);
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("join")
            .expect("nines backup create runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "backup create --kind {kind}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(stdout.lines().last().unwrap_or_default().trim().to_owned());
    }
    // The record names the repository by its canonical path.
    let path = repo.path().canonicalize().expect("repository path");
    let selector = format!(
        "#backups .repository[data-repository={}]",
        json!(path.display().to_string())
    );
    let script = format!(
        "const r = document.querySelector({}); if (!r) return null; \
         return {{ full: r.querySelectorAll('.chain .set.full').length, \
           incremental: r.querySelectorAll('.chain .set.incremental').length, \
           listed: Array.from(r.querySelectorAll('tr.set-row')).map(e => e.dataset.id), \
           last: r.querySelector('.last-run').textContent }};",
        json!(selector)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = b.eval(&script).await.expect("backups panel");
        let listed: Vec<String> = serde_json::from_value(v["listed"].clone()).unwrap_or_default();
        if v["full"] == json!(1)
            && v["incremental"] == json!(1)
            && ids.iter().all(|id| listed.contains(id))
            && v["last"]
                .as_str()
                .is_some_and(|t| t.starts_with("Last run: ok"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backups panel shows {v} for sets {ids:?}: {:?}",
            b.text_of("#backups").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_members_and_a_new_leader_within_3s_of_a_kill() {
    let browser = Browser::start()
        .await
        .expect("headless Chromium via chromedriver (run scripts/install-test-deps.sh)");
    let playground = Playground::start().expect("playground");
    let names: Vec<String> = playground.members.iter().map(|m| m.0.clone()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader_name = loop {
        if let Some(l) = playground.leader().await {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let member_http = playground.members[0].1.clone();
    browser
        .goto(&playground.dashboard)
        .await
        .expect("load the dashboard");

    let shown = wait_leader_shown(&browser, Duration::from_secs(10), |n| n == leader_name)
        .await
        .expect("the leader is shown");
    assert_eq!(shown, leader_name);
    let rows = browser
        .eval("return Array.from(document.querySelectorAll('#members td.member-name')).map(e => e.textContent);")
        .await
        .expect("member names");
    let mut listed: Vec<String> = serde_json::from_value(rows).expect("names");
    listed.sort();
    assert_eq!(listed, names, "every member is listed by name");
    // Each row is that member's own answer; the first ones may still be on
    // their way (connections are made lazily).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = format!("#members tr[data-name='{leader_name}']");
        let role = browser
            .text_of(&format!("{row} .role"))
            .await
            .expect("role");
        if role == "leader" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leader's row: {:?}",
            browser.text_of(&row).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The services panel shows a registered service and its instance.
    let body = r#"{"address": "127.0.0.1", "port": 8081, "check": "none"}"#;
    let (status, answer) = nines_testkit::http_request(
        &member_http,
        "PUT",
        "/v1/services/web/instances/web-1",
        Some(body),
    )
    .await
    .expect("registry answers");
    assert!((200..300).contains(&status), "register: {status} {answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let service = browser
            .text_of("#services li.service[data-name='web']")
            .await
            .expect("services");
        if service.contains("1/1 passing") && service.contains("web-1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "services panel shows {:?}",
            browser.text_of("#services").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The availability panel accounts the service from when it was up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = browser
            .text_of("#availability tr[data-service='web']")
            .await
            .expect("availability");
        if row.contains("up") && row.contains("100") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "availability panel shows {:?}",
            browser.text_of("#availability").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_demo_gateway_and_backups(&browser, &playground).await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    browser
        .screenshot(&dir.join("dashboard-before-kill.png"))
        .await
        .expect("screenshot");

    // Kill the leader, whichever member serves the page.
    let pid = playground
        .member_pid(&leader_name)
        .expect("the leader's process");
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the leader");
    let new_leader = wait_leader_shown(&browser, FAILOVER_SHOWN_WITHIN, |n| {
        n != leader_name && names.iter().any(|m| m == n)
    })
    .await
    .expect("the new leader is shown within 3 s");
    let took = killed.elapsed();
    println!("page named the new leader {new_leader} {took:?} after the kill");
    assert!(took <= FAILOVER_SHOWN_WITHIN);
    // The dead member is shown as unreachable once the page polls again.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let role = browser
            .text_of(&format!("#members tr[data-name='{leader_name}'] .role"))
            .await
            .expect("role");
        if role == "unreachable" {
            break;
        }
        assert!(Instant::now() < deadline, "killed member shown as {role:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser
        .screenshot(&dir.join("dashboard-after-kill.png"))
        .await
        .expect("screenshot");
    browser.close().await;
}
