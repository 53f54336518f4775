//! Body types of the data path: what the gateway sends upstream.

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;

/// A request body sent to a backend: buffered (and so replayable for retries)
/// or streamed from the client under the listener's size limit.
pub type UpBody = Either<Full<Bytes>, Limited<Incoming>>;
