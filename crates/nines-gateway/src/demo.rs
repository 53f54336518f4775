//! A small real HTTP backend for demos, tests and benchmarks. It answers
//! `/` with its name, `/health` with `ok`, `/slow?ms=N` after a delay,
//! `/fail` with 500, `/status/N` with status N, `/echo` with the request body
//! and headers it received, and echoes bytes after an `Upgrade` (101).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Longest delay `/slow` accepts.
pub const SLOW_MS_MAX: u64 = 60_000;

/// A running demo backend.
#[derive(Debug)]
pub struct DemoBackend {
    name: Arc<str>,
    requests: Arc<AtomicU64>,
}

impl DemoBackend {
    /// A backend answering with `name`.
    pub fn new(name: &str) -> DemoBackend {
        DemoBackend {
            name: Arc::from(name),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Serves on `listener` forever.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let name = Arc::clone(&self.name);
            let requests = Arc::clone(&self.requests);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let name = Arc::clone(&name);
                    requests.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, Infallible>(answer(&name, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn query_u64(request: &Request<Incoming>, key: &str) -> Option<u64> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn answer(name: &str, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        let mut response = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        if let Some(protocol) = request.headers().get(http::header::UPGRADE) {
            headers.insert(http::header::UPGRADE, protocol.clone());
        }
        return response;
    }
    let path = request.uri().path().to_owned();
    match path.as_str() {
        "/health" => text(StatusCode::OK, "ok\n"),
        "/fail" => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{name} failed\n"),
        ),
        "/slow" => {
            let ms = query_u64(&request, "ms").unwrap_or(1000).min(SLOW_MS_MAX);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("{name}\n"))
        }
        "/echo" => {
            let mut head = String::new();
            for (key, value) in request.headers() {
                head.push_str(&format!("{key}: {}\n", value.to_str().unwrap_or("?")));
            }
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            text(StatusCode::OK, [head.as_bytes(), b"\n", &body].concat())
        }
        _ => match path
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(code) => text(
                StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                format!("{name}\n"),
            ),
            None => text(StatusCode::OK, format!("{name}\n")),
        },
    }
}

/// Binds `addr` and serves a demo backend named `name` until the process ends.
pub async fn run(addr: SocketAddr, name: &str) -> std::io::Result<()> {
    let listener = crate::server::bind(addr)?;
    tracing::info!(addr = %listener.local_addr()?, name, "demo backend listening");
    DemoBackend::new(name).serve(listener).await;
    Ok(())
}
