//! Bad input from clients and backends: each gets a clear 4xx/5xx or a closed
//! connection, is counted in metrics, and leaves other clients unaffected.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

fn config(backends: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
cluster = "web"
header_read_timeout = "500ms"
header_bytes_max = 8192
header_count_max = 20
body_bytes_max = 100

[[listener]]
name = "raw"
bind = "127.0.0.1:0"
protocol = "tcp"
cluster = "web"

[[cluster]]
name = "web"
backends = {backends}
"#
    )
}

/// Sends raw bytes and reads the answer until close or 2 s.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversize_and_smuggling_requests_are_refused_and_counted() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let gateway = start_gateway(&config(&backend_list(&[&a]))).await?;
    let web = gateway.listener_addr("web").await.expect("web");

    let answer = exchange(web, b"THIS IS NOT HTTP\r\n\r\n").await?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(20_000)
    );
    let answer = exchange(web, big.as_bytes()).await?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = exchange(
        web,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    let smuggle = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG";
    let answer = exchange(web, smuggle).await?;
    assert!(answer.starts_with("HTTP/1.1 400"), "CL+TE: {answer}");
    let duplicate =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    let answer = exchange(web, duplicate).await?;
    assert!(answer.starts_with("HTTP/1.1 400"), "duplicate CL: {answer}");
    let smuggle_later = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx";
    let answer = exchange(web, smuggle_later).await?;
    assert!(
        answer.contains("HTTP/1.1 400"),
        "smuggling after a clean request: {answer}"
    );

    let large = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{}",
        "z".repeat(1000)
    );
    let answer = exchange(web, large.as_bytes()).await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A good client is unaffected.
    let client = client();
    assert_eq!(
        get(&client, &format!("http://{web}/")).await?,
        (200, "a\n".into())
    );

    let text = gateway.metrics().render();
    assert!(
        metric(&text, "nines_gateway_malformed_total{listener=\"web\"}") >= 3,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "nines_gateway_smuggling_rejected_total{listener=\"web\"}"
        ),
        3,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "nines_gateway_body_too_large_total{listener=\"web\"}"
        ),
        1,
        "{text}"
    );
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_while_others_are_served() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let gateway = start_gateway(&config(&backend_list(&[&a]))).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(web).await?;
        let started = Instant::now();
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat_n(&b'a', 100))
        {
            if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
                break;
            }
            let mut probe = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
        anyhow::Ok(started.elapsed())
    });
    let client = client();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(get(&client, &format!("http://{web}/")).await?.0, 200);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let cut_after = slow.await??;
    assert!(
        cut_after < Duration::from_secs(3),
        "slow client cut after {cut_after:?}"
    );
    let text = gateway.metrics().render();
    assert!(
        metric(
            &text,
            "nines_gateway_header_timeouts_total{listener=\"web\"}"
        ) >= 1,
        "{text}"
    );
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_backend_is_a_502_and_garbage_over_tcp_is_contained() -> anyhow::Result<()> {
    let liar = TcpListener::bind("127.0.0.1:0").await?;
    let liar_addr = liar.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = liar.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"\x00\x01garbage that is not http\r\n\r\n")
                    .await;
            });
        }
    });
    let text = config(&format!("[{{ addr = \"{liar_addr}\" }}]"));
    let gateway = start_gateway(&text).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let client = client();
    assert_eq!(get(&client, &format!("http://{web}/")).await?.0, 502);
    let metrics = gateway.metrics().render();
    assert_eq!(
        metric(
            &metrics,
            "nines_gateway_upstream_failed_total{listener=\"web\"}"
        ),
        1,
        "{metrics}"
    );
    gateway.shutdown().await;

    let a = BackendProcess::spawn("a")?;
    let gateway = start_gateway(&config(&backend_list(&[&a]))).await?;
    let raw = gateway.listener_addr("raw").await.expect("raw");
    let answer = exchange(raw, b"\x16\x03\x01\x00garbage\r\n\r\n").await?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let answer = exchange(
        raw,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("a\n"),
        "{answer}"
    );
    let metrics = gateway.metrics().render();
    assert_eq!(
        metric(
            &metrics,
            "nines_gateway_connections_total{listener=\"raw\"}"
        ),
        2,
        "{metrics}"
    );
    gateway.shutdown().await;
    Ok(())
}
