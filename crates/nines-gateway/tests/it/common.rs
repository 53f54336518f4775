//! Helpers: backend processes, an in-process gateway, an HTTP client and
//! a load generator that counts every non-2xx answer and error.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nines_gateway::{Config, Gateway};

/// A demo backend process, killed on drop.
pub struct BackendProcess {
    child: Option<Child>,
    /// Its address.
    pub addr: SocketAddr,
    /// Its name (the body it answers with).
    pub name: String,
}

impl BackendProcess {
    /// Starts a backend on a free port.
    pub fn spawn(name: &str) -> anyhow::Result<BackendProcess> {
        BackendProcess::spawn_on(name, 0)
    }

    /// Starts a backend on `port` (0: any free port) and waits until it listens.
    pub fn spawn_on(name: &str, port: u16) -> anyhow::Result<BackendProcess> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nines-demo-backend"))
            .args(["--port", &port.to_string(), "--name", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn demo backend")?;
        let stdout = child.stdout.take().context("backend stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("read backend address")?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("backend {name} did not start: {line:?}");
        };
        Ok(BackendProcess {
            child: Some(child),
            addr: addr.parse()?,
            name: name.to_owned(),
        })
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same backend again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match BackendProcess::spawn_on(&self.name, self.addr.port()) {
                Ok(mut fresh) => {
                    self.child = fresh.child.take();
                    return Ok(());
                }
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `backends = [...]` for a config.
pub fn backend_list(backends: &[&BackendProcess]) -> String {
    let items: Vec<_> = backends
        .iter()
        .map(|b| format!("{{ addr = \"{}\" }}", b.addr))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Starts an in-process gateway from config text.
pub async fn start_gateway(text: &str) -> anyhow::Result<Gateway> {
    let config = Config::parse(std::path::Path::new("test.toml"), text)?;
    Ok(Gateway::start(config, None, None).await?)
}

/// A keep-alive HTTP client.
pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

/// GET `url`: status and body.
pub async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
) -> anyhow::Result<(u16, String)> {
    let response = client.get(url.parse()?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns the time taken.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("condition not met within {limit:?}")
}

/// The admin state of backend `addr` in cluster `cluster`.
pub async fn backend_state(gateway: &Gateway, addr: SocketAddr) -> Option<String> {
    let json = gateway.backends_json().await;
    json["clusters"]
        .as_array()?
        .iter()
        .flat_map(|c| c["backends"].as_array().cloned().unwrap_or_default())
        .find_map(|b| {
            (b["addr"].as_str()? == addr.to_string())
                .then(|| b["state"].as_str().map(str::to_owned))
                .flatten()
        })
}

/// Outcome counts of a load run.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// 2xx answers.
    pub ok: AtomicU64,
    /// Other statuses.
    pub non_2xx: AtomicU64,
    /// Transport errors.
    pub errors: AtomicU64,
}

/// Runs `workers` concurrent keep-alive request loops against `url` until `stop`.
pub fn start_load(
    url: String,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<LoadReport>, Vec<tokio::task::JoinHandle<()>>) {
    let report = Arc::new(LoadReport::default());
    let client = client();
    let tasks = (0..workers)
        .map(|_| {
            let (report, client, stop, url) = (
                Arc::clone(&report),
                client.clone(),
                Arc::clone(&stop),
                url.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match get(&client, &url).await {
                        Ok((status, _)) if (200..300).contains(&status) => {
                            report.ok.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok((status, body)) => {
                            eprintln!("non-2xx: {status} {body}");
                            report.non_2xx.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(error) => {
                            eprintln!("error: {error:?}");
                            report.errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (report, tasks)
}
