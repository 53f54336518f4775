//! Body types of the data path. [`UpBody`] is what the gateway sends to a
//! backend over a dedicated (upgrade) hyper connection; [`ProxyBody`] is what
//! it answers a client with: a backend's body read straight from a pooled
//! [`Connection`] while holding a [`Lease`] on the backend, a dedicated
//! connection's hyper body, or a small body the gateway made itself. The
//! lease ends (and a pooled connection returns to the pool) exactly when the
//! backend's body has been read to its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::upstream::{BodyFraming, Connection, ResponseHead, UpstreamError};

/// A request body sent over a dedicated hyper connection: buffered or
/// streamed from the client under the listener's size limit.
pub type UpBody = Either<Full<Bytes>, Limited<Incoming>>;

/// One request in flight on a backend. Dropping it ends the request; with a
/// connection inside, the connection goes back to the backend's idle pool.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
    cluster: Arc<Cluster>,
    connection: Option<Connection>,
}

impl Lease {
    /// Counts a request on `backend` until the lease is dropped.
    pub fn new(backend: Arc<Backend>, cluster: Arc<Cluster>) -> Lease {
        backend.begin_request();
        Lease {
            backend,
            cluster,
            connection: None,
        }
    }

    /// The backend this lease is on.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Keeps a connection to return to the pool when the lease ends.
    pub fn keep_connection(&mut self, connection: Connection) {
        self.connection = Some(connection);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.backend.put_idle(connection);
        }
        self.backend.end_request();
        if self.cluster.config.backend_connections_max > 0 {
            self.cluster.released.notify_one();
        }
    }
}

/// A response body sent to a client.
#[derive(Debug)]
pub enum ProxyBody {
    /// A backend's body on a pooled connection, with the lease it holds
    /// until its end.
    Upstream {
        /// The connection the body is read from; `None` once it ended.
        connection: Option<Connection>,
        /// How much of the body is left.
        framing: BodyFraming,
        /// Whether the connection may be pooled after the body.
        keep_alive: bool,
        /// Released at the end of the body.
        lease: Option<Lease>,
    },
    /// A dedicated connection's body (an upgrade the backend refused).
    Dedicated {
        /// The backend's body.
        inner: Incoming,
        /// Released when the body is dropped.
        lease: Lease,
        /// Kept so the connection lives as long as its body.
        sender: SendRequest<UpBody>,
    },
    /// A body the gateway made (errors, admin answers).
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A body of the given bytes.
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// The body of `head`, read from `connection`; a response without a
    /// body releases the lease and pools the connection now.
    pub fn upstream(head: &ResponseHead, connection: Connection, mut lease: Lease) -> ProxyBody {
        if head.framing.is_done() {
            if let Some(connection) = connection.release(head.keep_alive) {
                lease.keep_connection(connection);
            }
            return ProxyBody::Full(None);
        }
        ProxyBody::Upstream {
            connection: Some(connection),
            framing: head.framing,
            keep_alive: head.keep_alive,
            lease: Some(lease),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Dedicated { inner, .. } => Pin::new(inner)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(UpstreamError::from))),
            ProxyBody::Upstream {
                connection,
                framing,
                keep_alive,
                lease,
            } => {
                let Some(open) = connection.as_mut() else {
                    return Poll::Ready(None);
                };
                let polled = open.poll_body(cx, framing);
                let piece = match polled {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => {
                        // A broken body: the connection is dropped, not pooled.
                        connection.take();
                        lease.take();
                        return Poll::Ready(Some(Err(error)));
                    }
                    Poll::Ready(Ok(piece)) => piece,
                };
                if piece.is_none() || framing.is_done() {
                    let finished = connection.take().expect("checked above");
                    if let (Some(mut lease), Some(reusable)) =
                        (lease.take(), finished.release(*keep_alive))
                    {
                        lease.keep_connection(reusable);
                    }
                }
                Poll::Ready(piece.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Dedicated { inner, .. } => inner.is_end_stream(),
            ProxyBody::Upstream {
                connection,
                framing,
                ..
            } => connection.is_none() || framing.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Dedicated { inner, .. } => inner.size_hint(),
            ProxyBody::Upstream {
                framing: BodyFraming::Length(left),
                ..
            } => SizeHint::with_exact(*left),
            ProxyBody::Upstream { .. } => SizeHint::default(),
        }
    }
}
