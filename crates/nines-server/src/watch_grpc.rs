//! The gRPC face of `etcdserverpb.Watch`, written by hand rather than
//! generated for two reasons. Responses leave as bytes the session already
//! encoded (`WatchCodec` copies them into the frame), so each event's
//! protobuf encoding is shared by every watcher. And a stream's session runs
//! inside its response body (`SessionStream`): the task hyper polls the body
//! with is the one the fan-out hub wakes, so delivering a batch to a stream
//! costs one task wake-up, not a wake-up of a session task and then of the
//! body's. Requests are decoded by prost as usual. Watch semantics live in
//! `watch.rs`; this module only carries bytes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, StdError};
use tonic::{Status, Streaming};
use tonic_prost::ProstDecoder;

use crate::pb::etcdserverpb as pb;
use crate::watch::WatchService;
use crate::watch_hub::WireResponse;

/// The gRPC path of the one method.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// Responses queued for a stream's transport before its session waits.
const OUTBOX_MAX: usize = 256;

/// `etcdserverpb.Watch` as a tonic service (what tonic would generate, with
/// [`WatchCodec`] instead of prost's codec).
#[derive(Clone)]
pub struct WatchServer {
    service: Arc<WatchService>,
}

impl WatchServer {
    /// Serves `service`.
    pub fn new(service: WatchService) -> WatchServer {
        WatchServer {
            service: Arc::new(service),
        }
    }
}

impl tonic::server::NamedService for WatchServer {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> tower::Service<http::Request<B>> for WatchServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = WatchMethod(Arc::clone(&self.service));
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(WatchCodec);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

/// The method handler: opens a session per stream.
struct WatchMethod(Arc<WatchService>);

impl tonic::server::StreamingService<pb::WatchRequest> for WatchMethod {
    type Response = WireResponse;
    type ResponseStream = SessionStream;
    type Future = std::future::Ready<Result<tonic::Response<SessionStream>, Status>>;

    fn call(&mut self, req: tonic::Request<Streaming<pb::WatchRequest>>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.open(req.into_inner()))))
    }
}

/// Decodes `WatchRequest`s with prost; encodes nothing itself: a response is
/// already a whole encoded `WatchResponse`.
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WireResponse;
    type Decode = pb::WatchRequest;
    type Encoder = EncodedEncoder;
    type Decoder = ProstDecoder<pb::WatchRequest>;

    fn encoder(&mut self) -> EncodedEncoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Writes an encoded message into the frame.
struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = WireResponse;
    type Error = Status;

    fn encode(&mut self, item: WireResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.write_to(dst);
        Ok(())
    }
}

/// Encoded responses a session has produced and its transport has not taken
/// yet. Bounded: a full outbox makes the session wait (see [`Outbox::push`]).
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<WireResponse>>,
}

impl Outbox {
    /// Queues `bytes`, waiting while the outbox is full. The wait registers
    /// no waker, which is sound only because of the invariant of
    /// [`SessionStream`]: the session is polled by its stream alone, and the
    /// stream polls it again once it has handed every queued response on.
    pub async fn push(&self, response: WireResponse) {
        let mut item = Some(response);
        std::future::poll_fn(|_cx| {
            let mut queue = self.queue.lock().expect("outbox lock poisoned");
            if queue.len() >= OUTBOX_MAX {
                return Poll::Pending;
            }
            queue.push_back(item.take().expect("pushed once"));
            Poll::Ready(())
        })
        .await
    }

    fn pop(&self) -> Option<WireResponse> {
        self.queue.lock().expect("outbox lock poisoned").pop_front()
    }
}

/// A stream's response body: the queued responses, then whatever its session
/// produces when polled. The session ends when the client's side of the
/// stream ends; the body ends once the outbox is empty after that.
pub(crate) struct SessionStream {
    outbox: Arc<Outbox>,
    session: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl SessionStream {
    /// A body that runs `session`, which queues its responses in `outbox`.
    pub fn new(outbox: Arc<Outbox>, session: impl Future<Output = ()> + Send + 'static) -> Self {
        SessionStream {
            outbox,
            session: Some(Box::pin(session)),
        }
    }
}

impl Stream for SessionStream {
    type Item = Result<WireResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(response) = self.outbox.pop() {
            return Poll::Ready(Some(Ok(response)));
        }
        // Invariant: the session is polled here and nowhere else, and only
        // with an empty outbox, so a session waiting on a full outbox is
        // always resumed. If it returns Pending with the outbox still empty
        // it waits on its client, the hub or its timer, which wake this task.
        if let Some(session) = self.session.as_mut() {
            if session.as_mut().poll(cx).is_ready() {
                self.session = None;
            }
        }
        match self.outbox.pop() {
            Some(response) => Poll::Ready(Some(Ok(response))),
            None if self.session.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}
