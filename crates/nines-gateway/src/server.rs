//! Listeners and client connections: the accept loops of HTTP and TCP
//! listeners, the per-connection HTTP server (HTTP/1.1 with keep-alive and
//! upgrades, h2c by prior knowledge), limits and timeouts, graceful drain,
//! and the raw TCP proxy. Routing and forwarding live in `proxy`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::backend::now_ms;
use crate::balance::{PickContext, ATTEMPTS_MAX};
use crate::batch::BatchedStream;
use crate::body::Lease;
use crate::cluster::Cluster;
use crate::framing::FramingTracker;
use crate::hash::hash_ip;
use crate::metrics::ListenerMetrics;
use crate::proxy::{handle, ConnContext, ListenerRuntime};
use crate::signal::unless_signalled;
use crate::timer::ConnectionTimer;
use crate::worker::Workers;

/// Default time for a client to send a request head (and keep-alive idle time).
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default largest request head.
pub const HEADER_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default largest number of header fields.
pub const HEADER_COUNT_MAX_DEFAULT: usize = 100;
/// Accept backlog of listening sockets.
pub const ACCEPT_BACKLOG: u32 = 4096;

/// Connection limits of an HTTP listener; a reload changes them for
/// connections accepted afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time allowed for a request head, also the keep-alive idle time.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub header_bytes_max: usize,
    /// Largest number of header fields.
    pub header_count_max: usize,
}

/// Counts open client connections so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct ConnectionTracker {
    open: AtomicUsize,
    closed: Notify,
}

impl ConnectionTracker {
    /// Open client connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }

    fn enter(self: &Arc<Self>, metrics: &Arc<ListenerMetrics>) -> ConnectionGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        metrics.connections_active.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            tracker: Arc::clone(self),
            metrics: Arc::clone(metrics),
        }
    }
}

struct ConnectionGuard {
    tracker: Arc<ConnectionTracker>,
    metrics: Arc<ListenerMetrics>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        if self.tracker.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.closed.notify_waiters();
        }
    }
}

/// Binds a listening socket with address reuse and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Accepts HTTP clients until `stop` or `drain` turns true.
pub async fn run_http_listener(
    listener: TcpListener,
    slot: Arc<ArcSwap<ListenerRuntime>>,
    mut stop: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    tracker: Arc<ConnectionTracker>,
    workers: Workers,
) {
    let first = slot.load().limits;
    let mut current = (first, http_builder(first));
    let mut drain_accept = drain.clone();
    let mut next_worker = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
            _ = drain_accept.wait_for(|d| *d) => return,
        };
        let Ok((stream, peer)) = accepted else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (metrics, limits) = {
            let runtime = slot.load();
            (Arc::clone(&runtime.metrics), runtime.limits)
        };
        if limits != current.0 {
            current = (limits, http_builder(limits));
        }
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let guard = tracker.enter(&metrics);
        let builder = Arc::clone(&current.1);
        let slot = Arc::clone(&slot);
        let drain = drain.clone();
        next_worker = next_worker.wrapping_add(1);
        workers.spawn(next_worker, async move {
            if let Some(stream) = on_this_worker(stream) {
                serve_http_connection(stream, peer, slot, &builder, drain, &metrics).await;
            }
            drop(guard);
        });
    }
}

/// Registers an accepted socket with the reactor of the worker that runs
/// this call. A socket stays registered with the reactor that accepted it:
/// left there, every readiness event of a connection served on another
/// worker would be taken by the accepting thread and handed over with a
/// cross-thread wake-up, per request. `None`: the socket could not be
/// registered (the connection is dropped).
fn on_this_worker(stream: std::net::TcpStream) -> Option<TcpStream> {
    TcpStream::from_std(stream).ok()
}

/// An HTTP/1.1 + h2c connection builder for `limits`.
fn http_builder(limits: HttpLimits) -> Arc<auto::Builder<TokioExecutor>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The HTTP/1 timer is set per connection (`serve_http_connection`).
    builder
        .http1()
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.header_bytes_max.max(8192))
        .max_headers(limits.header_count_max)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.header_bytes_max as u32);
    Arc::new(builder)
}

async fn serve_http_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<ArcSwap<ListenerRuntime>>,
    builder: &auto::Builder<TokioExecutor>,
    mut drain: watch::Receiver<bool>,
    metrics: &ListenerMetrics,
) {
    let violation = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(FramingIo {
        inner: BatchedStream::new(stream),
        tracker: FramingTracker::default(),
        violation: Arc::clone(&violation),
    });
    let ctx = Arc::new(ConnContext::new(slot, peer, violation));
    // The listener's settings with a header-read timer of this connection's own.
    let mut builder = builder.clone();
    builder.http1().timer(ConnectionTimer::default());
    let service = service_fn(move |request| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(ctx, request).await) }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let drained = async move {
        let _ = drain.wait_for(|d| *d).await;
    };
    tokio::pin!(drained);
    let finished = unless_signalled(connection.as_mut(), drained).await;
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        match error.downcast_ref::<hyper::Error>() {
            Some(e) if e.is_timeout() => metrics.header_timeouts.fetch_add(1, Ordering::Relaxed),
            Some(e) if e.is_parse() || e.is_parse_too_large() => {
                metrics.malformed.fetch_add(1, Ordering::Relaxed)
            }
            Some(_) => 0,
            // Not a hyper error: the auto builder failed to read the preface or version.
            None => metrics.malformed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The client socket, with request framing watched on every read and
/// replies sent at the end of the worker's poll round (`batch`).
struct FramingIo {
    inner: BatchedStream,
    tracker: FramingTracker,
    violation: Arc<AtomicBool>,
}

impl AsyncRead for FramingIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if !this.tracker.violated() {
                this.tracker.feed(&buf.filled()[before..]);
                if this.tracker.violated() {
                    this.violation.store(true, Ordering::Relaxed);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for FramingIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What a TCP listener knows at run time; swapped whole on reload.
#[derive(Debug)]
pub struct TcpRuntime {
    /// Listener name.
    pub name: String,
    /// Where connections go.
    pub cluster: Arc<Cluster>,
    /// Counters.
    pub metrics: Arc<ListenerMetrics>,
}

/// Accepts TCP clients until `stop` or `drain` turns true.
pub async fn run_tcp_listener(
    listener: TcpListener,
    slot: Arc<ArcSwap<TcpRuntime>>,
    mut stop: watch::Receiver<bool>,
    mut drain: watch::Receiver<bool>,
    tracker: Arc<ConnectionTracker>,
    workers: Workers,
) {
    let mut next_worker = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
            _ = drain.wait_for(|d| *d) => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let runtime = slot.load_full();
        let guard = tracker.enter(&runtime.metrics);
        next_worker = next_worker.wrapping_add(1);
        // A TCP connection has no request boundary to stop at: during a drain it
        // runs to its end, and shutdown stops waiting at the drain timeout.
        workers.spawn(next_worker, async move {
            if let Some(stream) = on_this_worker(stream) {
                serve_tcp_connection(stream, peer, &runtime).await;
            }
            drop(guard);
        });
    }
}

async fn serve_tcp_connection(mut client: TcpStream, peer: SocketAddr, runtime: &TcpRuntime) {
    let _ = client.set_nodelay(true);
    let cluster = &runtime.cluster;
    let key = hash_ip(peer.ip());
    let attempts = (cluster.retry.attempts as usize).clamp(2, ATTEMPTS_MAX);
    let mut tried = Vec::with_capacity(attempts);
    for _ in 0..attempts {
        let picked = {
            let set = cluster.set.load();
            let ctx = PickContext {
                key_hash: key,
                tried: &tried,
                now_ms: now_ms(),
            };
            set.balancer
                .pick(&set.backends, &ctx)
                .map(|i| (i, Arc::clone(&set.backends[i])))
        };
        let Some((index, backend)) = picked else {
            break;
        };
        tried.push(index);
        let lease = Lease::new(Arc::clone(&backend), Arc::clone(cluster));
        let connected =
            tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(backend.addr)).await;
        let Ok(Ok(mut upstream)) = connected else {
            backend.counters.failures.fetch_add(1, Ordering::Relaxed);
            backend.record_failure(cluster.passive_failures, cluster.ejection_time, now_ms());
            continue;
        };
        backend.record_success();
        let _ = upstream.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        drop(lease);
        return;
    }
    runtime
        .metrics
        .tcp_connect_failed
        .fetch_add(1, Ordering::Relaxed);
}
