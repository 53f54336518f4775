//! Structured access log, off the hot path: the data path pushes a small
//! record into a bounded channel and a writer task emits one `tracing` event
//! per request (target `nines_gateway::access`). When the writer falls
//! behind, records are dropped and counted rather than slowing requests.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Records buffered before new ones are dropped.
pub const ACCESS_LOG_QUEUE_MAX: usize = 8192;

#[derive(Debug)]
struct Record {
    listener: Arc<str>,
    peer: SocketAddr,
    method: Method,
    path: String,
    status: u16,
    duration: Duration,
}

/// The sending side of the access log of one listener.
#[derive(Debug, Clone)]
pub struct AccessLog {
    listener: Arc<str>,
    sender: mpsc::Sender<Record>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts a writer task; it ends when every [`AccessLog`] clone is dropped.
    pub fn start(listener: &str, metrics: Arc<Metrics>) -> AccessLog {
        let (sender, mut receiver) = mpsc::channel::<Record>(ACCESS_LOG_QUEUE_MAX);
        tokio::spawn(async move {
            while let Some(r) = receiver.recv().await {
                tracing::info!(
                    target: "nines_gateway::access",
                    listener = %r.listener, peer = %r.peer, method = %r.method, path = %r.path,
                    status = r.status, duration_us = r.duration.as_micros() as u64,
                );
            }
        });
        AccessLog {
            listener: Arc::from(listener),
            sender,
            metrics,
        }
    }

    /// Queues one record, or counts it as dropped.
    pub fn record(
        &self,
        peer: SocketAddr,
        method: Method,
        path: String,
        status: u16,
        duration: Duration,
    ) {
        let record = Record {
            listener: Arc::clone(&self.listener),
            peer,
            method,
            path,
            status,
            duration,
        };
        if self.sender.try_send(record).is_err() {
            self.metrics
                .access_log_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
