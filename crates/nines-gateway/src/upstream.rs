//! Pooled upstream HTTP/1.1 connections, driven by the task of the client
//! connection whose request they carry. There is no task per upstream
//! connection and no channel: the client's task writes the request (its
//! head serialized once, so a retry re-sends the same bytes; without a
//! streamed body it is queued for the worker's end-of-round sends, `batch`),
//! reads the response head, and the response body is read from the socket as
//! the client's connection asks for it (`body::ProxyBody`). An idle connection sits in
//! its backend's per-worker pool; nothing polls it there, so before reuse
//! [`Connection::is_idle_usable`] checks that the backend has not closed it
//! or sent stray bytes. Upgrades (WebSocket) do not come here: they take a
//! dedicated hyper connection in `proxy`.

use std::future::poll_fn;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::task::{ready, Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{response, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use socket2::SockRef;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::batch::BatchedStream;
use crate::head::Forwarding;

/// Size of a connection's read buffer; a response head must fit in it.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Most header fields in a response head.
pub const RESPONSE_HEADERS_MAX: usize = 100;
/// Longest chunk-size or trailer line of a chunked response body.
pub const CHUNK_LINE_BYTES_MAX: usize = 4 * 1024;
const _: () = assert!(CHUNK_LINE_BYTES_MAX < READ_BUFFER_BYTES);

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Reading from or writing to the backend failed.
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    /// Sending a queued request failed (`Connection::queue`).
    #[error("sending the request to the backend failed: {0}")]
    Send(io::Error),
    /// The backend closed the connection before the response was complete.
    #[error("the backend closed the connection mid-response")]
    Closed,
    /// The backend's answer is not HTTP/1.x or breaks a limit.
    #[error("malformed response from the backend")]
    Malformed,
    /// The client's request body failed (too large or cut off).
    #[error("the request body could not be read from the client")]
    RequestBody,
    /// A dedicated (upgrade) connection's hyper body failed.
    #[error("upstream: {0}")]
    Hyper(#[from] hyper::Error),
}

/// How the body of a response is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, at this point of it.
    Chunked(Chunk),
    /// Delimited by the backend closing the connection.
    Close,
}

/// Where a chunked body's reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Past the last chunk, skipping trailer lines.
    Trailers,
    /// The body is complete.
    Done,
}

impl BodyFraming {
    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            BodyFraming::Length(0) | BodyFraming::Chunked(Chunk::Done)
        )
    }
}

/// A response head read from a backend.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and header fields.
    pub parts: response::Parts,
    /// How its body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this body.
    pub keep_alive: bool,
}

/// A request ready to be written: its head (and a buffered body) as bytes.
#[derive(Debug, Clone)]
pub struct WireRequest {
    /// Head and, when buffered, body.
    pub bytes: Bytes,
    /// Whether a streamed body follows in chunked coding.
    pub chunked: bool,
    /// The request method (a HEAD response has no body).
    pub method: Method,
}

impl WireRequest {
    /// Serializes a request head whose hop-by-hop fields are gone, with the
    /// forwarding fields of its client. With `body` given, it is sent
    /// after the head with a Content-Length; without, the caller streams the
    /// body, with the client's Content-Length when it sent one, else chunked.
    pub fn encode(parts: &Parts, body: Option<&Bytes>, forwarding: &Forwarding) -> WireRequest {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut wire = BytesMut::with_capacity(256 + body.map_or(0, Bytes::len));
        wire.put_slice(parts.method.as_str().as_bytes());
        wire.put_u8(b' ');
        wire.put_slice(target.as_bytes());
        wire.put_slice(b" HTTP/1.1\r\n");
        let had_length = forwarding.encode_fields(&parts.headers, body.is_some(), &mut wire);
        let chunked = body.is_none() && !had_length;
        match body {
            Some(body) if !body.is_empty() || had_length => {
                wire.put_slice(b"content-length: ");
                wire.put_slice(body.len().to_string().as_bytes());
                wire.put_slice(b"\r\n");
            }
            Some(_) => {}
            None if chunked => wire.put_slice(b"transfer-encoding: chunked\r\n"),
            None => {}
        }
        wire.put_slice(b"\r\n");
        if let Some(body) = body {
            wire.put_slice(body);
        }
        WireRequest {
            bytes: wire.freeze(),
            chunked,
            method: parts.method.clone(),
        }
    }
}

/// Whether `name` is a response field that concerns only the connection it
/// came on.
fn is_response_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// One keep-alive HTTP/1.1 connection to a backend.
#[derive(Debug)]
pub struct Connection {
    stream: BatchedStream,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    served: u64,
}

impl Connection {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BatchedStream::new(stream),
            buffer: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            served: 0,
        })
    }

    /// Whether the connection has carried a whole exchange before.
    pub fn is_reused(&self) -> bool {
        self.served > 0
    }

    /// Whether an idle connection can take a request: no unread bytes and
    /// no close from the backend. Costs a system call only when the socket
    /// has become readable while idle.
    pub fn is_idle_usable(&self) -> bool {
        if self.start != self.end {
            return false;
        }
        let stream = self.stream.get_ref();
        let mut cx = Context::from_waker(Waker::noop());
        match stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Ends an exchange whose response body was read to its end: the
    /// connection, if it may carry another request (`keep_alive`, no bytes
    /// beyond the response and none of the request left unsent).
    pub fn release(mut self, keep_alive: bool) -> Option<Connection> {
        if !keep_alive || self.start != self.end || self.stream.has_unsent() {
            return None;
        }
        self.stream.forget_task();
        self.served += 1;
        Some(self)
    }

    /// Writes all of `bytes` now; an error shows here.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.send_all(bytes).await
    }

    /// Queues `bytes` (a whole request) to be sent at the end of the
    /// worker's poll round with the other queued writes (`batch`); larger
    /// requests go at once. A failed send shows as `UpstreamError::Send`
    /// when the response is read.
    pub async fn queue(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Streams a client's request body, in chunked coding when `chunked`.
    pub async fn send_body(
        &mut self,
        body: &mut Limited<Incoming>,
        chunked: bool,
    ) -> Result<(), UpstreamError> {
        // Bounded by the body's size limit: each frame is at least one byte.
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| UpstreamError::RequestBody)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let mut piece = BytesMut::with_capacity(data.len() + 20);
                piece.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                piece.put_slice(&data);
                piece.put_slice(b"\r\n");
                self.write_all(&piece).await?;
            } else {
                self.write_all(&data).await?;
            }
        }
        if chunked {
            self.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Reads the final response head, skipping interim (1xx) responses.
    pub async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, UpstreamError> {
        // Bounded: each pass consumes a head or reads more bytes, and the
        // buffer refuses to grow past its size.
        loop {
            if self.start < self.end {
                if let Some((head, interim)) = self.parse_head(method)? {
                    if !interim {
                        return Ok(head);
                    }
                    continue;
                }
            }
            if poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(UpstreamError::Closed);
            }
        }
    }

    /// Parses a complete head at the start of the buffer and consumes it.
    /// `None`: more bytes are needed. The flag marks an interim response.
    fn parse_head(
        &mut self,
        method: &Method,
    ) -> Result<Option<(ResponseHead, bool)>, UpstreamError> {
        // Left uninitialized: filling 100 empty fields for every response
        // is a measurable share of the parse.
        let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() };
            RESPONSE_HEADERS_MAX];
        let mut parsed = httparse::Response::new(&mut []);
        let data = &self.buffer[self.start..self.end];
        let outcome = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            data,
            &mut fields,
        );
        let length = match outcome {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(UpstreamError::Malformed),
        };
        let status = parsed
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or(UpstreamError::Malformed)?;
        // One copy of the head; header values are slices of it.
        let head = Bytes::copy_from_slice(&data[..length]);
        let base = data.as_ptr() as usize;
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        let mut content_length: Option<u64> = None;
        let mut transfer_encoding: Option<bool> = None;
        let mut keep_alive = parsed.version == Some(1);
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| UpstreamError::Malformed)?;
            let offset = field.value.as_ptr() as usize - base;
            let value =
                HeaderValue::from_maybe_shared(head.slice(offset..offset + field.value.len()))
                    .map_err(|_| UpstreamError::Malformed)?;
            if name == header::CONTENT_LENGTH {
                let n = std::str::from_utf8(field.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(UpstreamError::Malformed)?;
                if content_length.is_some_and(|known| known != n) {
                    return Err(UpstreamError::Malformed);
                }
                content_length = Some(n);
            } else if name == header::TRANSFER_ENCODING {
                let last = field.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name == header::CONNECTION {
                for token in field.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && parsed.version == Some(0)
                    {
                        keep_alive = true;
                    }
                }
            }
            // Hop-by-hop fields stay on this hop: the client's connection
            // frames and keeps itself alive on its own terms.
            if !is_response_hop_by_hop(&name) {
                headers.append(name, value);
            }
        }
        self.start += length;
        let interim = status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS;
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = match (bodiless, transfer_encoding, content_length) {
            (true, _, _) => BodyFraming::Length(0),
            (false, Some(true), _) => BodyFraming::Chunked(Chunk::Size),
            (false, Some(false), _) | (false, None, None) => BodyFraming::Close,
            (false, None, Some(n)) => BodyFraming::Length(n),
        };
        if framing == BodyFraming::Close || status == StatusCode::SWITCHING_PROTOCOLS {
            keep_alive = false;
        }
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        parts.headers = headers;
        let head = ResponseHead {
            parts,
            framing,
            keep_alive,
        };
        Ok(Some((head, interim)))
    }

    /// Reads more bytes into the buffer. `Ok(0)`: the backend closed.
    /// A queued request that could not be sent fails it with `Send`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, UpstreamError>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buffer.len() {
            if self.start == 0 {
                return Poll::Ready(Err(io::Error::other("response head too large").into()));
            }
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if let Poll::Ready(Err(error)) = self.stream.poll_handed_back(cx) {
            return Poll::Ready(Err(UpstreamError::Send(error)));
        }
        let stream = self.stream.get_ref();
        let target = &mut self.buffer[self.end..];
        let room = target.len();
        // Bounded: each pass returns or consumed a stale readiness event.
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let mut read = 0;
            // A short read drained the socket: report it as would-block so
            // tokio forgets the readiness, and the next wait goes straight to
            // the event loop instead of costing a system call that finds nothing.
            let outcome = stream.try_io(Interest::READABLE, || {
                read = (&*SockRef::from(stream)).read(target)?;
                if read > 0 && read < room {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(read)
                }
            });
            match outcome {
                Ok(n) => {
                    self.end += n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => {
                    self.end += read;
                    return Poll::Ready(Ok(read));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// The next piece of a response body. `Ok(None)`: the body is complete;
    /// the connection is then reusable if the head allowed it.
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut BodyFraming,
    ) -> Poll<Result<Option<Bytes>, UpstreamError>> {
        // Bounded: each pass consumes buffered bytes or reads more.
        loop {
            let available = self.end - self.start;
            match framing {
                BodyFraming::Length(0) | BodyFraming::Chunked(Chunk::Done) => {
                    return Poll::Ready(Ok(None));
                }
                BodyFraming::Length(left) if available > 0 => {
                    let n = available.min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    return Poll::Ready(Ok(Some(self.take(n))));
                }
                BodyFraming::Close if available > 0 => {
                    return Poll::Ready(Ok(Some(self.take(available))));
                }
                BodyFraming::Chunked(chunk) => {
                    if let Some(piece) = self.chunked_step(chunk)? {
                        return Poll::Ready(Ok(Some(piece)));
                    }
                    if self.end - self.start != available {
                        continue;
                    }
                }
                BodyFraming::Length(_) | BodyFraming::Close => {}
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(match framing {
                    BodyFraming::Close => Ok(None),
                    _ => Err(UpstreamError::Closed),
                });
            }
        }
    }

    /// Advances a chunked body over buffered bytes: returns data when some
    /// is buffered; `None` when it consumed framing or needs more bytes.
    fn chunked_step(&mut self, chunk: &mut Chunk) -> Result<Option<Bytes>, UpstreamError> {
        let available = self.end - self.start;
        match *chunk {
            Chunk::Size | Chunk::Trailers => {
                let data = &self.buffer[self.start..self.end];
                let Some(line) = data.windows(2).position(|w| w == b"\r\n") else {
                    if available > CHUNK_LINE_BYTES_MAX {
                        return Err(UpstreamError::Malformed);
                    }
                    return Ok(None);
                };
                if *chunk == Chunk::Trailers {
                    *chunk = if line == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Trailers
                    };
                } else {
                    let digits = data[..line]
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(b"")
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.len() <= 15)
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or(UpstreamError::Malformed)?;
                    *chunk = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                self.start += line + 2;
                Ok(None)
            }
            Chunk::Data(left) if available > 0 => {
                let n = available.min(usize::try_from(left).unwrap_or(usize::MAX));
                *chunk = if left == n as u64 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n as u64)
                };
                Ok(Some(self.take(n)))
            }
            Chunk::DataEnd if available >= 2 => {
                if &self.buffer[self.start..self.start + 2] != b"\r\n" {
                    return Err(UpstreamError::Malformed);
                }
                self.start += 2;
                *chunk = Chunk::Size;
                Ok(None)
            }
            Chunk::Data(_) | Chunk::DataEnd | Chunk::Done => Ok(None),
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        let piece = Bytes::copy_from_slice(&self.buffer[self.start..self.start + n]);
        self.start += n;
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connection to a loopback peer that answers every request with
    /// `pieces`, written one at a time so parsing meets split input.
    async fn answered_by(pieces: Vec<&'static [u8]>) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _ = peer.read(&mut request).await;
            for piece in pieces {
                peer.write_all(piece).await.expect("write");
                peer.flush().await.expect("flush");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        let mut connection = Connection::open(addr).await.expect("connect");
        connection
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("request");
        connection
    }

    async fn body(connection: &mut Connection, framing: &mut BodyFraming) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(piece) = poll_fn(|cx| connection.poll_body(cx, framing))
            .await
            .expect("body")
        {
            all.extend_from_slice(&piece);
        }
        all
    }

    #[tokio::test]
    async fn chunked_body_split_across_reads_is_decoded_and_the_connection_kept() {
        let mut connection = answered_by(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nCONTENT-type: text/plain\r\nDate: Thu\r\n\r\n5\r\nhel",
            b"lo\r\n6;ext=1\r\n worl",
            b"d\r\n0\r\nTrailer: x\r\n\r\n",
        ])
        .await;
        let head = connection.read_head(&Method::GET).await.expect("head");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.parts.headers["x-a"], "1");
        assert!(!head.parts.headers.contains_key("transfer-encoding"));
        assert_eq!(head.parts.headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(head.parts.headers[header::DATE], "Thu");
        assert!(head.keep_alive);
        let mut framing = head.framing;
        assert_eq!(body(&mut connection, &mut framing).await, b"hello world");
        assert!(framing.is_done());
        assert!(connection.release(true).is_some_and(|c| c.is_reused()));
    }

    #[tokio::test]
    async fn length_and_close_delimited_bodies_end_where_they_should() {
        let mut connection = answered_by(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
            b"cd",
        ])
        .await;
        let head = connection.read_head(&Method::GET).await.expect("head");
        let mut framing = head.framing;
        assert_eq!(framing, BodyFraming::Length(4));
        assert_eq!(body(&mut connection, &mut framing).await, b"abcd");

        let mut connection = answered_by(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"close"]).await;
        let head = connection.read_head(&Method::GET).await.expect("head");
        assert!(!head.keep_alive);
        let mut framing = head.framing;
        assert_eq!(framing, BodyFraming::Close);
        assert_eq!(body(&mut connection, &mut framing).await, b"until close");
        assert!(connection.release(head.keep_alive).is_none());
    }

    #[tokio::test]
    async fn head_answers_have_no_body_and_bad_answers_are_refused() {
        let mut connection =
            answered_by(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"]).await;
        let head = connection.read_head(&Method::HEAD).await.expect("head");
        assert!(head.framing.is_done());
        assert_eq!(head.parts.headers["content-length"], "99");

        for answer in [
            &b"\x00\x01garbage that is not http\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let mut connection = answered_by(vec![answer]).await;
            assert!(matches!(
                connection.read_head(&Method::GET).await,
                Err(UpstreamError::Malformed)
            ));
        }
        let mut connection = answered_by(vec![b"HTTP/1.1 200 OK\r\nContent-Le"]).await;
        assert!(matches!(
            connection.read_head(&Method::GET).await,
            Err(UpstreamError::Closed)
        ));
    }

    #[test]
    fn a_buffered_body_gets_a_content_length_and_a_streamed_one_chunks() {
        let (mut parts, ()) = http::Request::post("/submit?x=1")
            .header("host", "example.com")
            .header("transfer-encoding", "chunked")
            .body(())
            .expect("request")
            .into_parts();
        parts.headers.remove("transfer-encoding");
        let forwarding = Forwarding::new("10.0.0.9".parse().expect("ip"));
        let body = Bytes::from_static(b"abc");
        let wire = WireRequest::encode(&parts, Some(&body), &forwarding);
        assert_eq!(
            &wire.bytes[..],
            b"POST /submit?x=1 HTTP/1.1\r\nhost: example.com\r\nx-forwarded-for: 10.0.0.9\r\n\
              forwarded: for=10.0.0.9;proto=http\r\nx-forwarded-proto: http\r\n\
              content-length: 3\r\n\r\nabc"
        );
        let wire = WireRequest::encode(&parts, None, &forwarding);
        assert!(wire.chunked);
        assert!(wire.bytes.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        parts
            .headers
            .insert("content-length", HeaderValue::from_static("10"));
        let wire = WireRequest::encode(&parts, None, &forwarding);
        assert!(!wire.chunked);
        let text = String::from_utf8_lossy(&wire.bytes);
        assert!(text.contains("\r\ncontent-length: 10\r\n"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(text.ends_with("x-forwarded-proto: http\r\n\r\n"), "{text}");
    }
}
