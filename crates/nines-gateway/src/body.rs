//! Body types of the data path. [`UpBody`] is what the gateway sends to a
//! backend; [`ProxyBody`] is what it answers a client with: a backend's
//! streamed body holding a [`Lease`] on the backend, or a small body the
//! gateway made itself. The lease ends (and the upstream connection returns
//! to the pool) exactly when the backend's body has been read to its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use crate::backend::Backend;
use crate::cluster::Cluster;

/// A request body sent to a backend: buffered (and so replayable for retries)
/// or streamed from the client under the listener's size limit.
pub type UpBody = Either<Full<Bytes>, Limited<Incoming>>;

/// One request in flight on a backend. Dropping it ends the request; with a
/// connection inside, the connection goes back to the backend's idle pool.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
    cluster: Arc<Cluster>,
    connection: Option<SendRequest<UpBody>>,
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
    pub fn keep_connection(&mut self, connection: SendRequest<UpBody>) {
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
    /// A backend's body, with the lease it holds until its end.
    Upstream {
        /// The backend's body.
        inner: Incoming,
        /// Released at the end of the body.
        lease: Option<Lease>,
        /// Pooled again only if the body is read to its end.
        connection: Option<SendRequest<UpBody>>,
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

    /// Wraps a backend body; an already finished body releases the lease now.
    pub fn upstream(
        inner: Incoming,
        mut lease: Lease,
        connection: SendRequest<UpBody>,
    ) -> ProxyBody {
        if inner.is_end_stream() {
            lease.keep_connection(connection);
            return ProxyBody::Upstream {
                inner,
                lease: None,
                connection: None,
            };
        }
        ProxyBody::Upstream {
            inner,
            lease: Some(lease),
            connection: Some(connection),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream {
                inner,
                lease,
                connection,
            } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                let finished = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        connection.take();
                        lease.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if finished {
                    if let (Some(mut lease), Some(connection)) = (lease.take(), connection.take()) {
                        lease.keep_connection(connection);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}
