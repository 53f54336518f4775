//! Routing, forwarding headers, h2c, WebSocket passthrough, TCP listeners
//! and hashing through the real proxy.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

async fn send(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    request: http::Request<Empty<Bytes>>,
) -> anyhow::Result<(u16, String)> {
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_host_path_header_method_first_match_wins() -> anyhow::Result<()> {
    let names = ["default", "exact", "host", "prefix", "canary", "method"];
    let backends: Vec<_> = names
        .iter()
        .map(|n| BackendProcess::spawn(n))
        .collect::<Result<_, _>>()?;
    let mut text = String::from(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
cluster = "default"
[[listener.route]]
path = "/exact"
cluster = "exact"
[[listener.route]]
host = "api.example"
cluster = "host"
[[listener.route]]
path_prefix = "/api/"
cluster = "prefix"
[[listener.route]]
headers = { "x-canary" = "1" }
cluster = "canary"
[[listener.route]]
methods = ["DELETE"]
cluster = "method"

[[listener]]
name = "strict"
bind = "127.0.0.1:0"
protocol = "http"
[[listener.route]]
path_prefix = "/only/"
cluster = "default"
"#,
    );
    for (name, backend) in names.iter().zip(&backends) {
        text.push_str(&format!(
            "[[cluster]]\nname = \"{name}\"\nbackends = {}\n",
            backend_list(&[backend])
        ));
    }
    let gateway = start_gateway(&text).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let strict = gateway.listener_addr("strict").await.expect("strict");
    let client = client();
    let request = |method: &str, path: &str, host: &str, canary: bool| {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{web}{path}"))
            .header("host", host);
        if canary {
            builder = builder.header("x-canary", "1");
        }
        builder.body(Empty::<Bytes>::new()).expect("request")
    };
    assert_eq!(
        send(&client, request("GET", "/", "x", false)).await?,
        (200, "default".into())
    );
    assert_eq!(
        send(&client, request("GET", "/exact", "api.example", false)).await?,
        (200, "exact".into()),
        "first match wins"
    );
    assert_eq!(
        send(&client, request("GET", "/exact/no", "x", false)).await?,
        (200, "default".into()),
        "exact is exact"
    );
    assert_eq!(
        send(&client, request("GET", "/api/x", "API.example:80", false)).await?,
        (200, "host".into())
    );
    assert_eq!(
        send(&client, request("GET", "/api/x", "x", true)).await?,
        (200, "prefix".into())
    );
    assert_eq!(
        send(&client, request("GET", "/", "x", true)).await?,
        (200, "canary".into())
    );
    assert_eq!(
        send(&client, request("DELETE", "/", "x", false)).await?,
        (200, "method".into())
    );
    assert_eq!(
        get(&client, &format!("http://{strict}/")).await?.0,
        404,
        "nothing matches"
    );
    assert_eq!(
        get(&client, &format!("http://{strict}/only/x"))
            .await?
            .1
            .trim(),
        "default"
    );
    // The admin view lists each listener's routes in order, then its
    // default, with the requests each one took.
    let view = gateway.backends_json().await;
    let routes = |listener: &str| -> Vec<(String, String, u64)> {
        let listeners = view["listeners"].as_array().expect("listeners");
        let entry = listeners
            .iter()
            .find(|l| l["name"] == listener)
            .expect("listener shown");
        assert_eq!(entry["protocol"], "http");
        entry["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .map(|r| {
                (
                    r["route"].as_str().expect("label").to_owned(),
                    r["cluster"].as_str().expect("cluster").to_owned(),
                    r["requests"].as_u64().expect("requests"),
                )
            })
            .collect()
    };
    let expected = |rows: &[(&str, &str, u64)]| -> Vec<(String, String, u64)> {
        rows.iter()
            .map(|(r, c, n)| (r.to_string(), c.to_string(), *n))
            .collect()
    };
    assert_eq!(
        routes("web"),
        expected(&[
            ("path=/exact", "exact", 1),
            ("host=api.example", "host", 1),
            ("path_prefix=/api/", "prefix", 1),
            ("header:x-canary=1", "canary", 1),
            ("method=DELETE", "method", 1),
            ("(default)", "default", 2),
        ])
    );
    assert_eq!(
        routes("strict"),
        expected(&[("path_prefix=/only/", "default", 1)]),
        "no default route without a listener cluster"
    );
    gateway.shutdown().await;
    Ok(())
}

fn one_cluster(backends: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\ncluster = \"web\"\n\n[[cluster]]\nname = \"web\"\nbackends = {backends}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_added_and_appended() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let gateway = start_gateway(&one_cluster(&backend_list(&[&a]), "")).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let client = client();
    let request = http::Request::get(format!("http://{web}/echo"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(Empty::new())?;
    let (_, echoed) = send(&client, request).await?;
    assert!(
        echoed.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{echoed}"
    );
    assert!(
        echoed.contains("forwarded: for=127.0.0.1;proto=http"),
        "{echoed}"
    );
    assert!(echoed.contains("x-forwarded-proto: http"), "{echoed}");
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_to_http1_backends() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let gateway = start_gateway(&one_cluster(&backend_list(&[&a]), "")).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let stream = TcpStream::connect(web).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = http::Request::get(format!("http://{web}/")).body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.into_body().collect().await?.to_bytes(),
            Bytes::from_static(b"a\n")
        );
    }
    gateway.shutdown().await;
    Ok(())
}

async fn read_head(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_passed_through() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let gateway = start_gateway(&one_cluster(&backend_list(&[&a]), "")).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let mut stream = TcpStream::connect(web).await?;
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await?;
    let head = read_head(&mut stream).await?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in [&b"hello"[..], b"frames both ways"] {
        stream.write_all(message).await?;
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await??;
        assert_eq!(echoed, message);
    }
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_balances_and_skips_dead_backends() -> anyhow::Result<()> {
    let mut a = BackendProcess::spawn("a")?;
    let b = BackendProcess::spawn("b")?;
    let text = format!(
        "[[listener]]\nname = \"raw\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"raw\"\n\n[[cluster]]\nname = \"raw\"\nbackends = {}\n",
        backend_list(&[&a, &b])
    );
    let gateway = start_gateway(&text).await?;
    let raw = gateway.listener_addr("raw").await.expect("raw");
    let exchange = || async move {
        let mut stream = TcpStream::connect(raw).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await??;
        anyhow::Ok(answer.lines().last().unwrap_or_default().to_owned())
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(exchange().await?);
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
    a.kill();
    for _ in 0..4 {
        assert_eq!(
            exchange().await?,
            "b",
            "connect failures move to the next backend"
        );
    }
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_header_keeps_a_user_on_one_backend() -> anyhow::Result<()> {
    let backends: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| BackendProcess::spawn(n))
        .collect::<Result<_, _>>()?;
    let refs: Vec<_> = backends.iter().collect();
    let gateway = start_gateway(&one_cluster(
        &backend_list(&refs),
        "balance = \"consistent_hash\"\nhash_key = \"header:x-user\"",
    ))
    .await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let client = client();
    let mut owners = std::collections::BTreeSet::new();
    for user in 0..30 {
        let mut first = None;
        for _ in 0..3 {
            let request = http::Request::get(format!("http://{web}/"))
                .header("x-user", format!("user-{user}"))
                .body(Empty::new())?;
            let (_, name) = send(&client, request).await?;
            assert!(
                first.get_or_insert(name.clone()) == &name,
                "user-{user} moved"
            );
        }
        owners.extend(first);
    }
    assert_eq!(owners.len(), 3, "users spread over all backends");
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_a_client_on_its_backend_until_it_dies() -> anyhow::Result<()> {
    let mut backends: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| BackendProcess::spawn(n))
        .collect::<Result<_, _>>()?;
    let refs: Vec<_> = backends.iter().collect();
    let extra = "sticky_cookie = \"nines\"\n[cluster.passive]\nconsecutive_failures = 1\nejection_time = \"30s\"";
    let gateway = start_gateway(&one_cluster(&backend_list(&refs), extra)).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let client = client();
    let response = client.get(format!("http://{web}/").parse()?).await?;
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("first answer sets the cookie")
        .to_str()?
        .to_owned();
    let first = String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes())
        .trim()
        .to_owned();
    let pair = set_cookie.split(';').next().expect("name=value").to_owned();
    let request = || {
        http::Request::get(format!("http://{web}/"))
            .header("cookie", pair.as_str())
            .body(Empty::<Bytes>::new())
    };
    for _ in 0..10 {
        let response = client.request(request()?).await?;
        assert!(
            response.headers().get("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
        let body = response.into_body().collect().await?.to_bytes();
        assert_eq!(String::from_utf8_lossy(&body).trim(), first);
    }
    let index = ["a", "b", "c"]
        .iter()
        .position(|n| *n == first)
        .expect("known backend");
    backends[index].kill();
    let response = client.request(request()?).await?;
    assert_eq!(
        response.status(),
        200,
        "the dead backend's clients fail over"
    );
    assert!(
        response.headers().get("set-cookie").is_some(),
        "and get a new sticky backend"
    );
    gateway.shutdown().await;
    Ok(())
}

/// Sends raw bytes on a new connection and reads until the server closes.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await??;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_small_large_and_chunked_reach_the_backend_whole() -> anyhow::Result<()> {
    let a = BackendProcess::spawn("a")?;
    let retry = "[cluster.retry]\nattempts = 2\non = [\"connect-failure\", \"reset\"]\n";
    let gateway = start_gateway(&one_cluster(&backend_list(&[&a]), retry)).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    // Small enough to be buffered for replay, then larger than the upstream
    // read buffer (streamed with its Content-Length, and echoed back in
    // several reads).
    for size in [11usize, 300_000] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let request = http::Request::put(format!("http://{web}/echo"))
            .body(http_body_util::Full::new(Bytes::from(body.clone())))?;
        let response = client.request(request).await?;
        assert_eq!(response.status(), 200);
        let echoed = response.into_body().collect().await?.to_bytes();
        assert!(
            echoed.ends_with(&body),
            "size {size}: {} bytes back",
            echoed.len()
        );
        let head = String::from_utf8_lossy(&echoed[..echoed.len() - size]).into_owned();
        assert!(head.contains(&format!("content-length: {size}")), "{head}");
    }
    // A chunked POST (streamed, not replayable) arrives as one body.
    let answer = raw_exchange(
        web,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello world"), "{answer}");
    assert!(answer.contains("transfer-encoding: chunked"), "{answer}");
    // HEAD keeps the backend's Content-Length and sends no body; the same
    // pooled connection then serves a GET.
    let answer = raw_exchange(
        web,
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(answer.ends_with("\r\n\r\na\n"), "{answer}");
    gateway.shutdown().await;
    Ok(())
}
