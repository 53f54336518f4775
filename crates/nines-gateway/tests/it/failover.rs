//! Health checks, passive ejection and retries against real backend processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

fn config(backends: &str, health: &str, passive: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
cluster = "web"

[[cluster]]
name = "web"
balance = "round_robin"
backends = {backends}
connect_timeout = "300ms"
response_timeout = "2s"
{health}
{passive}
[cluster.retry]
attempts = 3
on = ["connect-failure", "reset", "timeout"]
budget_percent = 100
"#
    )
}

const HEALTH: &str = r#"
[cluster.health]
kind = "http"
path = "/health"
interval = "200ms"
timeout = "100ms"
rise = 3
fall = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_detected_in_time_and_returns_after_rise() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let mut b = BackendProcess::spawn("b")?;
    let c = BackendProcess::spawn("c")?;
    let gateway = start_gateway(&config(&backend_list(&[&a, &b, &c]), HEALTH, "")).await?;
    let url = format!(
        "http://{}/",
        gateway.listener_addr("web").await.expect("listener")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (report, tasks) = start_load(url.clone(), 8, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(300)).await;

    b.kill();
    // Detection bound: interval * fall + timeout; one interval of slack for tick phase and scheduling.
    let bound = Duration::from_millis(200 * 2 + 100 + 200);
    let detected = wait_until(Duration::from_secs(3), || async {
        backend_state(&gateway, b.addr).await.as_deref() == Some("down")
    })
    .await?;
    assert!(
        detected <= bound,
        "detected after {detected:?}, bound {bound:?}"
    );

    b.restart()?;
    let restarted = Instant::now();
    // Not back after a single success: rise = 3 needs three checks in a row.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        backend_state(&gateway, b.addr).await.as_deref(),
        Some("down")
    );
    wait_until(Duration::from_secs(3), || async {
        backend_state(&gateway, b.addr).await.as_deref() == Some("up")
    })
    .await?;
    let back = restarted.elapsed();
    assert!(
        back >= Duration::from_millis(2 * 200 - 50),
        "back after {back:?}: rise not respected"
    );
    // Traffic reaches b again.
    let client = client();
    let mut saw_b = false;
    for _ in 0..20 {
        saw_b |= get(&client, &url).await?.1.trim() == "b";
    }
    assert!(saw_b, "b takes traffic again");
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    assert_eq!(report.non_2xx.load(Ordering::Relaxed), 0);
    assert_eq!(report.errors.load(Ordering::Relaxed), 0);
    assert!(report.ok.load(Ordering::Relaxed) > 100);
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_works_with_active_checks_off() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let mut b = BackendProcess::spawn("b")?;
    let passive = "[cluster.passive]\nconsecutive_failures = 2\nejection_time = \"30s\"\n";
    let gateway = start_gateway(&config(&backend_list(&[&a, &b]), "", passive)).await?;
    let url = format!(
        "http://{}/",
        gateway.listener_addr("web").await.expect("listener")
    );
    let client = client();
    for _ in 0..4 {
        assert_eq!(get(&client, &url).await?.0, 200);
    }
    b.kill();
    for _ in 0..20 {
        let (status, body) = get(&client, &url).await?;
        assert_eq!(
            (status, body.trim()),
            (200, "a"),
            "retries hide the dead backend"
        );
    }
    assert_eq!(
        backend_state(&gateway, b.addr).await.as_deref(),
        Some("ejected")
    );
    let json = gateway.backends_json().await;
    let b_json = &json["clusters"][0]["backends"][1];
    assert_eq!(b_json["ejections"], 1);
    assert_eq!(
        b_json["failures"], 2,
        "once ejected, b gets no more attempts"
    );
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_concurrent_load_gives_no_errors() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let mut b = BackendProcess::spawn("b")?;
    let c = BackendProcess::spawn("c")?;
    let passive = "[cluster.passive]\nconsecutive_failures = 3\nejection_time = \"5s\"\n";
    let gateway = start_gateway(&config(&backend_list(&[&a, &b, &c]), HEALTH, passive)).await?;
    let url = format!(
        "http://{}/",
        gateway.listener_addr("web").await.expect("listener")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (report, tasks) = start_load(url, 32, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = report.ok.load(Ordering::Relaxed);
    b.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let ok = report.ok.load(Ordering::Relaxed);
    assert!(
        ok > before + 100,
        "load kept flowing after the kill: {before} -> {ok}"
    );
    assert_eq!(report.non_2xx.load(Ordering::Relaxed), 0, "non-2xx answers");
    assert_eq!(report.errors.load(Ordering::Relaxed), 0, "transport errors");
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_answers_503_fast() -> anyhow::Result<()> {
    let mut a = BackendProcess::spawn("a")?;
    let mut b = BackendProcess::spawn("b")?;
    let gateway = start_gateway(&config(&backend_list(&[&a, &b]), HEALTH, "")).await?;
    let url = format!(
        "http://{}/",
        gateway.listener_addr("web").await.expect("listener")
    );
    a.kill();
    b.kill();
    for backend in [a.addr, b.addr] {
        wait_until(Duration::from_secs(3), || async {
            backend_state(&gateway, backend).await.as_deref() == Some("down")
        })
        .await?;
    }
    let client = client();
    // Fast: well under the 300 ms connect timeout, so no backend was even tried.
    for _ in 0..10 {
        let started = Instant::now();
        let (status, _) = get(&client, &url).await?;
        assert_eq!(status, 503);
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "503 took {:?}",
            started.elapsed()
        );
    }
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_5xx_is_retried_on_another_backend() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let b = BackendProcess::spawn("b")?;
    let text = config(&backend_list(&[&a, &b]), "", "").replace(
        "on = [\"connect-failure\", \"reset\", \"timeout\"]",
        "on = [\"connect-failure\", \"5xx\"]",
    );
    let gateway = start_gateway(&text).await?;
    let addr = gateway.listener_addr("web").await.expect("listener");
    let client = client();
    // Every backend fails /fail: after all attempts the last 500 is passed on,
    // and each backend was tried once per request (never the same twice).
    let (status, _) = get(&client, &format!("http://{addr}/fail")).await?;
    assert_eq!(status, 500);
    let json = gateway.backends_json().await;
    let requests: Vec<_> = json["clusters"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["requests"].as_u64())
        .collect();
    assert_eq!(requests, [Some(1), Some(1)]);
    gateway.shutdown().await;
    Ok(())
}

fn limited(backends: &str, extra: &str) -> String {
    format!(
        "[gateway]\nadmin = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\ncluster = \"web\"\n\n\
         [[cluster]]\nname = \"web\"\nbackends = {backends}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_queues_then_refuses_after_the_queue_timeout() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    for (queue_timeout, second_status) in [("2s", 200), ("50ms", 503)] {
        let extra = format!("backend_connections_max = 1\nqueue_timeout = \"{queue_timeout}\"");
        let gateway = start_gateway(&limited(&backend_list(&[&a]), &extra)).await?;
        let web = gateway.listener_addr("web").await.expect("web");
        let client = client();
        let first = {
            let client = client.clone();
            tokio::spawn(async move { get(&client, &format!("http://{web}/slow?ms=400")).await })
        };
        wait_until(Duration::from_secs(2), || async {
            gateway.backends_json().await["clusters"][0]["backends"][0]["active"] == 1
        })
        .await?;
        let (status, _) = get(&client, &format!("http://{web}/")).await?;
        assert_eq!(status, second_status, "queue_timeout {queue_timeout}");
        assert_eq!(first.await??.0, 200);
        gateway.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_times_out_and_the_request_moves_on() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let b = BackendProcess::spawn("b")?;
    let extra = "balance = \"round_robin\"\nresponse_timeout = \"200ms\"\n[cluster.retry]\nattempts = 2\non = [\"timeout\"]";
    let gateway = start_gateway(&limited(&backend_list(&[&a, &b]), extra)).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let client = client();
    // Both backends are slow on /slow: two timeouts, then 504.
    let started = Instant::now();
    assert_eq!(
        get(&client, &format!("http://{web}/slow?ms=1000")).await?.0,
        504
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // The admin /metrics endpoint shows the failures and the backends.
    let admin = gateway.admin_addr().expect("admin");
    let (status, metrics) = get(&client, &format!("http://{admin}/metrics")).await?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("nines_gateway_upstream_failed_total{listener=\"web\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "nines_gateway_backend_failures_total{{cluster=\"web\",backend=\"{}\"}} 1",
            a.addr
        )),
        "{metrics}"
    );
    assert!(metrics.contains("nines_gateway_backend_up{"), "{metrics}");
    let (status, json) = get(&client, &format!("http://{admin}/admin/backends")).await?;
    assert_eq!(status, 200);
    assert!(json.contains("\"ewma_latency_us\""), "{json}");
    gateway.shutdown().await;
    Ok(())
}
