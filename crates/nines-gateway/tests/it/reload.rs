//! Hot reload: under load no request or connection is dropped; a bad config
//! is refused and the old one keeps serving; SIGHUP reloads a gateway process.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use nines_gateway::{Config, Gateway};
use tokio::net::TcpStream;

use crate::common::*;

fn config(listen: &str, admin: &str, backends: &str, balance: &str) -> String {
    format!(
        r#"
[gateway]
admin = "{admin}"

[[listener]]
name = "web"
bind = "{listen}"
protocol = "http"
cluster = "web"

[[cluster]]
name = "web"
balance = "{balance}"
backends = {backends}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_no_request_and_no_connection() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let b = BackendProcess::spawn("b")?;
    let c = BackendProcess::spawn("c")?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gateway.toml");
    let first = config(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &backend_list(&[&a, &b]),
        "round_robin",
    );
    std::fs::write(&path, &first)?;
    let gateway = Gateway::start(Config::load(&path)?, Some(path.clone()), None).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let admin = gateway.admin_addr().expect("admin");

    // An idle keep-alive connection opened before any reload.
    let (mut idle, idle_connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(TcpStream::connect(web).await?)).await?;
    tokio::spawn(idle_connection);
    let response = idle
        .send_request(
            http::Request::get("/")
                .header("host", "x")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (report, tasks) = start_load(format!("http://{web}/"), 16, Arc::clone(&stop));
    let client = client();
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { get(&client, &format!("http://{web}/slow?ms=1500")).await })
    };
    let reload = |client: hyper_util::client::legacy::Client<_, Empty<Bytes>>| async move {
        let request = http::Request::post(format!("http://{admin}/admin/reload"))
            .body(Empty::<Bytes>::new())?;
        let response: http::Response<hyper::body::Incoming> = client.request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    for round in 0..8 {
        let (backends, balance) = if round % 2 == 0 {
            (backend_list(&[&b, &c]), "least_connections")
        } else {
            (backend_list(&[&a, &b]), "round_robin")
        };
        std::fs::write(
            &path,
            config("127.0.0.1:0", "127.0.0.1:0", &backends, balance),
        )?;
        assert_eq!(reload(client.clone()).await?.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Last good config: b and c only.
    std::fs::write(
        &path,
        config(
            "127.0.0.1:0",
            "127.0.0.1:0",
            &backend_list(&[&b, &c]),
            "round_robin",
        ),
    )?;
    assert_eq!(reload(client.clone()).await?.0, 200);
    // A bad config is refused with the file, line and reason; the old one keeps serving.
    std::fs::write(
        &path,
        config(
            "127.0.0.1:0",
            "127.0.0.1:0",
            "[{ addr = \"nowhere\" }]",
            "round_robin",
        ),
    )?;
    let (status, body) = reload(client.clone()).await?;
    assert_eq!(status, 422);
    assert!(body.contains("gateway.toml:14:"), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let (slow_status, _) = slow.await??;
    assert_eq!(
        slow_status, 200,
        "the in-flight request survived the reloads"
    );
    assert_eq!(report.non_2xx.load(Ordering::Relaxed), 0);
    assert_eq!(report.errors.load(Ordering::Relaxed), 0);
    assert!(report.ok.load(Ordering::Relaxed) > 100);

    let response = idle
        .send_request(
            http::Request::get("/")
                .header("host", "x")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    assert_eq!(
        response.status(),
        200,
        "the idle keep-alive connection survived the reloads"
    );
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..10 {
        names.insert(
            get(&client, &format!("http://{web}/"))
                .await?
                .1
                .trim()
                .to_owned(),
        );
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["b", "c"],
        "the last good config is the one running"
    );
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_a_gateway_process() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let b = BackendProcess::spawn("b")?;
    let free = |_: ()| std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let (web, admin) = (free(())?, free(())?);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        config(
            &web.to_string(),
            &admin.to_string(),
            &backend_list(&[&a]),
            "round_robin",
        ),
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nines-gateway"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let client = client();
    let url = format!("http://{web}/");
    let result = async {
        wait_until(Duration::from_secs(10), || async {
            get(&client, &url)
                .await
                .is_ok_and(|(_, body)| body.trim() == "a")
        })
        .await?;
        std::fs::write(
            &path,
            config(
                &web.to_string(),
                &admin.to_string(),
                &backend_list(&[&b]),
                "round_robin",
            ),
        )?;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)?;
        wait_until(Duration::from_secs(5), || async {
            get(&client, &url)
                .await
                .is_ok_and(|(_, body)| body.trim() == "b")
        })
        .await?;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(status.success(), "gateway exited with {status}");
                return anyhow::Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "gateway did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_limits_apply_to_new_connections() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = BackendProcess::spawn("a")?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gateway.toml");
    let base = config(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &backend_list(&[&a]),
        "round_robin",
    );
    std::fs::write(&path, &base)?;
    let gateway = Gateway::start(Config::load(&path)?, Some(path.clone()), None).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(20_000)
    );
    let exchange = |request: String| async move {
        let mut stream = TcpStream::connect(web).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    assert!(
        exchange(big.clone()).await?.starts_with("HTTP/1.1 200"),
        "64 KiB heads pass by default"
    );
    let limited = base.replace(
        "cluster = \"web\"\n\n[[cluster]]",
        "cluster = \"web\"\nheader_bytes_max = 8192\n\n[[cluster]]",
    );
    assert_ne!(limited, base);
    std::fs::write(&path, limited)?;
    gateway.reload().await?;
    assert_eq!(
        gateway.listener_addr("web").await,
        Some(web),
        "the socket is kept"
    );
    let answer = exchange(big).await?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_idle_keep_alive_connections_at_once() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = BackendProcess::spawn("a")?;
    // A drain timeout far beyond the waits below: shutdown only ends in
    // time if the idle connection itself noticed the drain and closed.
    let text = config(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &backend_list(&[&a]),
        "round_robin",
    )
    .replace("[gateway]\n", "[gateway]\ndrain_timeout = \"60s\"\n");
    let gateway = Gateway::start(
        Config::parse(std::path::Path::new("gateway.toml"), &text)?,
        None,
        None,
    )
    .await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let mut stream = TcpStream::connect(web).await?;
    let mut answers = Vec::new();
    // Two requests on the connection, so it has been through keep-alive.
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await??;
        answers.push(String::from_utf8_lossy(&answer[..n]).into_owned());
    }
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 200")),
        "{answers:?}"
    );
    assert_eq!(gateway.open_connections(), 1);
    tokio::time::timeout(Duration::from_secs(10), gateway.shutdown())
        .await
        .map_err(|_| anyhow::anyhow!("shutdown waited on the idle connection"))?;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await?;
    assert!(
        read.is_ok_and(|n| n == 0),
        "the gateway closed the connection"
    );
    assert_eq!(gateway.open_connections(), 0);
    Ok(())
}
