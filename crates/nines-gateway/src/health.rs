//! Active health checks. One task per cluster probes every backend each
//! interval (HTTP GET with an expected status, or a TCP connect), counts
//! successes and failures in a row, and flips a backend down after `fall`
//! failures and up after `rise` successes. The task stops when its stop
//! signal fires (reload, shutdown) or its cluster is gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::backend::{now_ms, Backend};
use crate::cluster::Cluster;
use crate::config::{HealthConfig, HealthKind};

#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    successes: u32,
    failures: u32,
}

/// Runs checks for `cluster` until `stop` turns true or the cluster is dropped.
pub async fn run(cluster: Weak<Cluster>, config: HealthConfig, mut stop: watch::Receiver<bool>) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let backends: Vec<Arc<Backend>> = cluster.set.load().backends.clone();
        let name = cluster.name.clone();
        drop(cluster);
        let checks = backends.iter().map(|backend| {
            let backend = Arc::clone(backend);
            let config = config.clone();
            tokio::spawn(async move { probe(&backend, &config).await })
        });
        let checks: Vec<_> = checks.collect();
        for (backend, check) in backends.iter().zip(checks) {
            let ok = check.await.unwrap_or(false);
            let streak = streaks.entry(backend.addr).or_default();
            if ok {
                streak.successes = streak.successes.saturating_add(1);
                streak.failures = 0;
            } else {
                streak.failures = streak.failures.saturating_add(1);
                streak.successes = 0;
            }
            let now = now_ms();
            if !ok && streak.failures >= *config.fall.get_ref() && backend.set_healthy(false, now) {
                tracing::warn!(cluster = %name, backend = %backend.addr, failures = streak.failures, "backend down");
            } else if ok
                && streak.successes >= *config.rise.get_ref()
                && backend.set_healthy(true, now)
            {
                tracing::info!(cluster = %name, backend = %backend.addr, "backend up");
            }
        }
        streaks.retain(|addr, _| backends.iter().any(|b| b.addr == *addr));
    }
}

/// One probe within the configured timeout.
async fn probe(backend: &Backend, config: &HealthConfig) -> bool {
    let check = async {
        let stream = TcpStream::connect(backend.addr).await.ok()?;
        if config.kind == HealthKind::Tcp {
            return Some(true);
        }
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        let connection = tokio::spawn(connection);
        let request = Request::get(config.path.as_str())
            .header(http::header::HOST, backend.addr.to_string())
            .header(http::header::USER_AGENT, "nines-gateway-health")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        connection.abort();
        let status = response.status();
        Some(match config.expect_status {
            Some(expected) => status.as_u16() == expected,
            None => status.is_success(),
        })
    };
    matches!(
        tokio::time::timeout(config.timeout, check).await,
        Ok(Some(true))
    )
}
