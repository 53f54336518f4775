//! The HTTP data path: routing a request to a cluster, picking a backend,
//! sending the request over a pooled keep-alive connection, and failing over
//! to another backend when the first one fails. Upgrades (WebSocket) get a
//! dedicated upstream connection and are then spliced byte for byte.
//! It owns no sockets of its own beyond upstream connections: `server`
//! accepts clients and calls [`handle`].

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::backend::{ms_at, now_ms, Backend};
use crate::balance::{PickContext, ATTEMPTS_MAX};
use crate::body::{Lease, ProxyBody, UpBody};
use crate::cluster::Cluster;
use crate::config::{HashKey, RouteConfig};
use crate::hash::{hash_bytes, hash_ip};
use crate::head::{
    clone_head, prepare_head, strip_request_hop_headers, strip_response_hop_headers, Forwarding,
};
use crate::metrics::{ListenerMetrics, RequestStats};
use crate::stream::SendStream;
use crate::timer::SleepSlot;
use crate::upstream::{Connection, ResponseHead, UpstreamError, WireRequest};

/// Request bodies up to this size are buffered so they can be replayed on retry.
pub const REPLAY_BODY_BYTES_MAX: u64 = 64 * 1024;
/// Default request body limit.
pub const BODY_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    host: Option<String>,
    path_prefix: Option<String>,
    path: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    methods: Vec<Method>,
    /// Where matching requests go.
    pub cluster: Arc<Cluster>,
    /// The route's counters, fixed when the config is loaded.
    pub stats: Arc<RequestStats>,
    /// How the admin view and the metrics name it ([`RouteConfig::label`]).
    pub label: String,
}

impl Route {
    /// Compiles a validated route that counts into `stats`.
    pub fn new(config: &RouteConfig, cluster: Arc<Cluster>, stats: Arc<RequestStats>) -> Route {
        Route {
            host: config.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path_prefix: config.path_prefix.clone(),
            path: config.path.clone(),
            headers: config
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        HeaderName::from_bytes(name.as_bytes()).ok()?,
                        HeaderValue::from_str(value).ok()?,
                    ))
                })
                .collect(),
            methods: config
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            cluster,
            stats,
            label: config.label(),
        }
    }

    fn matches<B>(&self, request: &Request<B>) -> bool {
        if let Some(host) = &self.host {
            if !request_host(request).is_some_and(|h| h.eq_ignore_ascii_case(host)) {
                return false;
            }
        }
        let path = request.uri().path();
        if self.path.as_ref().is_some_and(|p| p != path)
            || self
                .path_prefix
                .as_ref()
                .is_some_and(|p| !path.starts_with(p.as_str()))
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(request.method()) {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, value)| request.headers().get(name) == Some(value))
    }
}

/// The host a request is for, without port.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    let host = request
        .uri()
        .host()
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok())?;
    Some(match host.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(']') && !name.contains(':')
                || port.bytes().all(|b| b.is_ascii_digit()) && name.ends_with(']') =>
        {
            name
        }
        _ => host,
    })
}

/// What an HTTP listener knows at run time; swapped whole on reload.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// Listener name.
    pub name: String,
    /// Routes in order.
    pub routes: Vec<Route>,
    /// Cluster when no route matches, with the counters of those requests.
    pub default: Option<(Arc<Cluster>, Arc<RequestStats>)>,
    /// Largest request body.
    pub body_bytes_max: u64,
    /// Limit from request head to response head.
    pub request_timeout: Option<Duration>,
    /// Limits applied to connections accepted from now on.
    pub limits: crate::server::HttpLimits,
    /// Counters.
    pub metrics: Arc<ListenerMetrics>,
    /// Access log, when enabled.
    pub access_log: Option<crate::access_log::AccessLog>,
}

impl ListenerRuntime {
    /// The cluster a request goes to and the counters of the route taken.
    fn route<B>(&self, request: &Request<B>) -> Option<(&Arc<Cluster>, &RequestStats)> {
        self.routes
            .iter()
            .find(|r| r.matches(request))
            .map(|r| (&r.cluster, &*r.stats))
            .or_else(|| self.default.as_ref().map(|(c, s)| (c, &**s)))
    }
}

/// Per-connection context of a client.
#[derive(Debug)]
pub struct ConnContext {
    /// The listener's current runtime.
    pub slot: Arc<ArcSwap<ListenerRuntime>>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Set by the framing tracker when the client sent an ambiguous head.
    pub framing_violation: Arc<AtomicBool>,
    forwarding: Forwarding,
    peer_hash: u64,
    /// The sleep that bounds the wait for each response head, re-armed per request.
    response_timer: SleepSlot,
}

impl ConnContext {
    /// Context for a client connection from `peer`.
    pub fn new(
        slot: Arc<ArcSwap<ListenerRuntime>>,
        peer: SocketAddr,
        framing_violation: Arc<AtomicBool>,
    ) -> ConnContext {
        let ip = peer.ip();
        ConnContext {
            slot,
            peer,
            framing_violation,
            forwarding: Forwarding::new(ip),
            peer_hash: hash_ip(ip),
            response_timer: SleepSlot::default(),
        }
    }
}

/// A response made by the gateway itself.
pub fn status_response(status: StatusCode, close: bool) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("error");
    let mut response = Response::new(ProxyBody::full(format!("{} {reason}\n", status.as_u16())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Serves one client request.
pub async fn handle(ctx: Arc<ConnContext>, request: Request<Incoming>) -> Response<ProxyBody> {
    let runtime = ctx.slot.load_full();
    let metrics = &runtime.metrics;
    metrics.count_request();
    let started = Instant::now();
    let method = request.method().clone();
    let path = runtime
        .access_log
        .as_ref()
        .map(|_| request.uri().path().to_owned());
    let (response, route) = route_and_forward(&ctx, &runtime, request).await;
    let elapsed = started.elapsed();
    metrics.observe(response.status().as_u16(), elapsed);
    if let Some(route) = route {
        route.observe(response.status().as_u16(), elapsed);
    }
    if let (Some(log), Some(path)) = (&runtime.access_log, path) {
        log.record(
            ctx.peer,
            method,
            path,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
}

/// Routes and forwards a request; also returns the counters of the route
/// taken, if one was.
async fn route_and_forward<'r>(
    ctx: &ConnContext,
    runtime: &'r ListenerRuntime,
    request: Request<Incoming>,
) -> (Response<ProxyBody>, Option<&'r RequestStats>) {
    let metrics = &runtime.metrics;
    if ctx.framing_violation.load(Ordering::Relaxed) {
        metrics.smuggling_rejected.fetch_add(1, Ordering::Relaxed);
        return (status_response(StatusCode::BAD_REQUEST, true), None);
    }
    if request.body().size_hint().lower() > runtime.body_bytes_max {
        metrics.body_too_large.fetch_add(1, Ordering::Relaxed);
        return (status_response(StatusCode::PAYLOAD_TOO_LARGE, true), None);
    }
    // Borrowed from the runtime, which the caller holds: no reference count
    // shared by all workers is touched per request.
    let Some((cluster, route)) = runtime.route(&request) else {
        metrics.unrouted.fetch_add(1, Ordering::Relaxed);
        return (status_response(StatusCode::NOT_FOUND, false), None);
    };
    route.count_request();
    if is_upgrade(&request) {
        return (upgrade(ctx, cluster, request, metrics).await, Some(route));
    }
    // Pinned where it is made: the forwarding future is large, and moving it
    // into the timeout (or into the await) would copy all of it per request.
    let forward = pin!(forward(
        ctx,
        cluster,
        request,
        runtime.body_bytes_max,
        metrics
    ));
    let response = match runtime.request_timeout {
        Some(limit) => tokio::time::timeout(limit, forward)
            .await
            .unwrap_or_else(|_| {
                metrics.upstream_failed.fetch_add(1, Ordering::Relaxed);
                status_response(StatusCode::GATEWAY_TIMEOUT, false)
            }),
        None => forward.await,
    };
    (response, Some(route))
}

fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11 && request.headers().contains_key(header::UPGRADE)
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The hash of the request's balancing key.
fn key_hash<B>(ctx: &ConnContext, key: Option<&HashKey>, request: &Request<B>) -> u64 {
    let found = match key {
        None | Some(HashKey::SourceIp) => None,
        Some(HashKey::Path) => Some(hash_bytes(request.uri().path().as_bytes())),
        Some(HashKey::Header(name)) => request
            .headers()
            .get(name.as_str())
            .map(|v| hash_bytes(v.as_bytes())),
        Some(HashKey::Cookie(name)) => cookie(request, name).map(|v| hash_bytes(v.as_bytes())),
    };
    found.unwrap_or(ctx.peer_hash)
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'r, B>(request: &'r Request<B>, name: &str) -> Option<&'r str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|line| {
            line.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then_some(value)
            })
        })
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Reset,
    Timeout,
}

/// Opens a pooled-kind upstream connection to `backend`.
async fn open(backend: &Backend, limit: Duration) -> Option<Connection> {
    let connection = tokio::time::timeout(limit, Connection::open(backend.addr))
        .await
        .ok()?
        .ok()?;
    backend
        .counters
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    Some(connection)
}

/// Opens a dedicated hyper connection for an upgrade, its I/O driven by a task of its own.
async fn connect_dedicated(backend: &Backend, limit: Duration) -> Option<SendRequest<UpBody>> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(backend.addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(SendStream::new(stream)))
        .await
        .ok()?;
    tokio::spawn(connection.with_upgrades());
    backend
        .counters
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    Some(sender)
}

/// An idle pooled connection that is still usable, if any.
fn take_ready(backend: &Backend) -> Option<Connection> {
    for _ in 0..crate::backend::IDLE_CONNECTIONS_MAX {
        let connection = backend.take_idle()?;
        if connection.is_idle_usable() {
            return Some(connection);
        }
    }
    None
}

/// Picks a backend, waiting up to the queue timeout when every available
/// backend is at its connection limit. `None`: nothing to pick.
async fn pick(
    cluster: &Arc<Cluster>,
    key: u64,
    tried: &[usize],
    sticky: Option<u64>,
    now: u64,
) -> Option<(usize, Arc<Backend>)> {
    let deadline = cluster
        .config
        .queue_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let mut now = now;
    loop {
        let set = cluster.set.load();
        let ctx = PickContext {
            key_hash: key,
            tried,
            now_ms: now,
        };
        // A sticky client goes back to its backend while that one is eligible.
        let stuck = sticky
            .and_then(|id| set.backends.iter().position(|b| b.id == id))
            .filter(|&i| ctx.eligible(&set.backends, i));
        if let Some(index) = stuck.or_else(|| set.balancer.pick(&set.backends, &ctx)) {
            return Some((index, Arc::clone(&set.backends[index])));
        }
        let waiting = set
            .backends
            .iter()
            .enumerate()
            .any(|(i, b)| !tried.contains(&i) && b.is_up(ctx.now_ms));
        drop(set);
        let deadline =
            deadline.filter(|_| waiting && cluster.config.backend_connections_max > 0)?;
        let notified = cluster.released.notified();
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return None;
        }
        now = now_ms();
    }
}

/// Forwards a request with retries; always answers.
async fn forward(
    ctx: &ConnContext,
    cluster: &Arc<Cluster>,
    request: Request<Incoming>,
    body_bytes_max: u64,
    metrics: &ListenerMetrics,
) -> Response<ProxyBody> {
    let now = now_ms();
    cluster.budget.record_request(now);
    let policy = &cluster.retry;
    let key = {
        let set = cluster.set.load();
        if set.balancer.needs_key() {
            key_hash(ctx, cluster.hash_key.as_ref(), &request)
        } else {
            0
        }
    };
    let sticky_cookie = cluster.config.sticky_cookie.as_deref();
    let sticky = sticky_cookie
        .and_then(|name| cookie(&request, name))
        .and_then(|v| u64::from_str_radix(v, 16).ok());
    let (mut parts, body) = request.into_parts();
    strip_request_hop_headers(&mut parts, false);
    let idempotent = policy.all_methods || is_idempotent(&parts.method);
    let may_replay = idempotent
        && policy.attempts > 1
        && (policy.on_reset || policy.on_timeout || !policy.on_status.is_empty());
    // A replayable body is kept as bytes; a streamed one can be sent once.
    let mut replay: Option<Bytes> = None;
    let mut stream: Option<Limited<Incoming>> = None;
    if body.is_end_stream() {
        replay = Some(Bytes::new());
    } else if may_replay
        && body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= REPLAY_BODY_BYTES_MAX)
    {
        match Limited::new(body, REPLAY_BODY_BYTES_MAX as usize)
            .collect()
            .await
        {
            Ok(collected) => replay = Some(collected.to_bytes()),
            Err(_) => return status_response(StatusCode::BAD_REQUEST, true),
        }
    } else {
        stream = Some(Limited::new(body, body_bytes_max as usize));
    }
    // The head is serialized once: every attempt sends the same bytes.
    let wire = WireRequest::encode(&parts, replay.as_ref(), &ctx.forwarding);
    drop(parts);
    let attempts = (policy.attempts as usize).clamp(1, ATTEMPTS_MAX);
    let mut tried: [usize; ATTEMPTS_MAX] = [usize::MAX; ATTEMPTS_MAX];
    let mut last_failure = None;
    let mut last_response: Option<Response<ProxyBody>> = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            if !cluster.budget.try_retry(policy, now_ms()) {
                metrics.retries_over_budget.fetch_add(1, Ordering::Relaxed);
                break;
            }
            metrics.retries.fetch_add(1, Ordering::Relaxed);
        }
        let now = if attempt == 0 { now } else { now_ms() };
        let Some((index, backend)) = pick(cluster, key, &tried[..attempt], sticky, now).await
        else {
            if attempt == 0 {
                metrics.no_backend.fetch_add(1, Ordering::Relaxed);
                return status_response(StatusCode::SERVICE_UNAVAILABLE, false);
            }
            break;
        };
        tried[attempt] = index;
        let lease = Lease::new(backend, Arc::clone(cluster));
        let backend: &Backend = lease.backend();
        let connection = match take_ready(backend) {
            Some(connection) => Some(connection),
            None => open(backend, cluster.connect_timeout).await,
        };
        let Some(mut connection) = connection else {
            record_failure(cluster, backend);
            last_failure = Some(Failure::Connect);
            if policy.on_connect_failure || attempt == 0 {
                continue;
            }
            break;
        };
        let last = attempt + 1 == attempts;
        let body = stream.take();
        if replay.is_none() && body.is_none() {
            break;
        }
        let sent_at = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent_at) + cluster.response_timeout;
        let outcome = {
            let exchange = pin!(exchange(backend, cluster, &mut connection, &wire, body));
            ctx.response_timer.limit(deadline, exchange).await
        };
        let head = match outcome {
            None => {
                record_failure(cluster, backend);
                last_failure = Some(Failure::Timeout);
                if policy.on_timeout && idempotent && replay.is_some() {
                    continue;
                }
                break;
            }
            Some(Err(_)) => {
                record_failure(cluster, backend);
                last_failure = Some(Failure::Reset);
                if policy.on_reset && idempotent && replay.is_some() {
                    continue;
                }
                break;
            }
            Some(Ok(head)) => head,
        };
        let done = Instant::now();
        backend.observe_latency(done - sent_at, ms_at(done));
        let status = head.parts.status.as_u16();
        if status >= 500 {
            backend
                .counters
                .responses_5xx
                .fetch_add(1, Ordering::Relaxed);
            if cluster.passive_5xx {
                record_failure(cluster, backend);
            }
        } else {
            backend.record_success();
        }
        let backend_id = backend.id;
        let body = ProxyBody::upstream(&head, connection, lease);
        // The upstream reader has left out the hop-by-hop fields.
        let ResponseHead { mut parts, .. } = head;
        if let Some(name) = sticky_cookie.filter(|_| sticky != Some(backend_id)) {
            let value = format!("{name}={backend_id:016x}; Path=/; HttpOnly");
            if let Ok(value) = HeaderValue::from_str(&value) {
                parts.headers.append(header::SET_COOKIE, value);
            }
        }
        let response = Response::from_parts(parts, body);
        if status >= 500
            && !last
            && idempotent
            && replay.is_some()
            && policy.on_status.contains(&status)
        {
            // Kept in case no other backend does better.
            last_response = Some(response);
            continue;
        }
        return response;
    }
    if let Some(response) = last_response {
        return response;
    }
    metrics.upstream_failed.fetch_add(1, Ordering::Relaxed);
    match last_failure {
        Some(Failure::Timeout) => status_response(StatusCode::GATEWAY_TIMEOUT, false),
        _ => status_response(StatusCode::BAD_GATEWAY, false),
    }
}

/// Sends `wire` (and a streamed body) on `connection` and reads the response
/// head. When a pooled connection turns out closed as the request is
/// written, sends again on a fresh connection to the same backend (nothing
/// reached the backend, so this is not a retry). A request without a
/// streamed body is queued to leave with the worker's other sends at the
/// end of the poll round (`batch`); its send error shows as the response is
/// awaited.
async fn exchange(
    backend: &Backend,
    cluster: &Cluster,
    connection: &mut Connection,
    wire: &WireRequest,
    body: Option<Limited<Incoming>>,
) -> Result<ResponseHead, UpstreamError> {
    if body.is_none() {
        connection.queue(&wire.bytes).await?;
        return match connection.read_head(&wire.method).await {
            Err(UpstreamError::Send(_)) if connection.is_reused() => {
                *connection = open(backend, cluster.connect_timeout)
                    .await
                    .ok_or(UpstreamError::Closed)?;
                connection.write_all(&wire.bytes).await?;
                connection.read_head(&wire.method).await
            }
            read => read,
        };
    }
    // A streamed body's frames are gone once sent: the head is sent at once,
    // so a stale connection shows before any of the body is taken.
    if let Err(error) = connection.write_all(&wire.bytes).await {
        if !connection.is_reused() {
            return Err(error.into());
        }
        *connection = open(backend, cluster.connect_timeout)
            .await
            .ok_or(UpstreamError::Closed)?;
        connection.write_all(&wire.bytes).await?;
    }
    if let Some(mut body) = body {
        connection.send_body(&mut body, wire.chunked).await?;
    }
    connection.read_head(&wire.method).await
}

fn record_failure(cluster: &Cluster, backend: &Backend) {
    backend.counters.failures.fetch_add(1, Ordering::Relaxed);
    if backend.record_failure(cluster.passive_failures, cluster.ejection_time, now_ms()) {
        tracing::warn!(cluster = %cluster.name, backend = %backend.addr, "backend ejected after consecutive failures");
    }
}

/// Forwards an `Upgrade` request on a dedicated connection and, on 101,
/// splices the two upgraded streams together.
async fn upgrade(
    ctx: &ConnContext,
    cluster: &Arc<Cluster>,
    mut request: Request<Incoming>,
    metrics: &ListenerMetrics,
) -> Response<ProxyBody> {
    let key = key_hash(ctx, cluster.hash_key.as_ref(), &request);
    let client_upgrade = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    prepare_head(&mut parts, &ctx.forwarding, true);
    let mut tried = Vec::new();
    let mut body = Some(body);
    for _ in 0..(cluster.retry.attempts as usize).clamp(1, ATTEMPTS_MAX) {
        let Some((index, backend)) = pick(cluster, key, &tried, None, now_ms()).await else {
            break;
        };
        tried.push(index);
        let Some(mut sender) = connect_dedicated(&backend, cluster.connect_timeout).await else {
            record_failure(cluster, &backend);
            continue;
        };
        let lease = Lease::new(Arc::clone(&backend), Arc::clone(cluster));
        let upstream_body: UpBody = Either::Right(Limited::new(
            body.take().expect("body is sent once"),
            usize::MAX,
        ));
        let (p, ()) = clone_head(&parts).into_parts();
        let Ok(mut response) = sender
            .send_request(Request::from_parts(p, upstream_body))
            .await
        else {
            record_failure(cluster, &backend);
            break;
        };
        backend.record_success();
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut response_parts, inner) = response.into_parts();
            strip_response_hop_headers(&mut response_parts.headers);
            return Response::from_parts(
                response_parts,
                ProxyBody::Dedicated {
                    inner,
                    lease,
                    sender,
                },
            );
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let _lease = lease;
            if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(upstream),
                )
                .await;
            }
        });
        let (response_parts, _) = response.into_parts();
        return Response::from_parts(response_parts, ProxyBody::empty());
    }
    metrics.upstream_failed.fetch_add(1, Ordering::Relaxed);
    if tried.is_empty() {
        metrics.no_backend.fetch_add(1, Ordering::Relaxed);
        return status_response(StatusCode::SERVICE_UNAVAILABLE, false);
    }
    status_response(StatusCode::BAD_GATEWAY, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_strips_ports() {
        let request = Request::builder()
            .uri("/")
            .header("host", "Example.com:8080")
            .body(())
            .expect("request");
        assert_eq!(request_host(&request), Some("Example.com"));
        let request = Request::builder()
            .uri("/")
            .header("host", "[::1]:80")
            .body(())
            .expect("request");
        assert_eq!(request_host(&request), Some("[::1]"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let request = Request::builder()
            .uri("/")
            .header("cookie", "a=1; sid=xyz; b=2")
            .body(())
            .expect("request");
        assert_eq!(cookie(&request, "sid"), Some("xyz"));
        assert_eq!(cookie(&request, "c"), None);
    }
}
