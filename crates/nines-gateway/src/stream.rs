//! The socket type both sides of the HTTP data path are driven over: a tokio
//! TCP stream whose writes are single `send(2)` calls on one flat buffer.
//! tokio's own stream writes with `writev(2)` (hyper then queues a response's
//! head and body as separate slices); on a socket that call also walks the
//! file layer (position lock, range check, iovec import), which for the
//! small messages a proxy moves is a measurable share of the kernel time per
//! request. With vectored writes reported as unsupported, hyper flattens
//! head and body into its write buffer and hands over one slice. It owns no
//! policy: timeouts and framing are the callers'.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// One `send(2)` of `bytes` on `stream` without waiting; `WouldBlock` when
/// the socket is full (and its readiness is cleared, so the next wait waits).
pub(crate) fn try_send(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    stream.try_io(Interest::WRITABLE, || SockRef::from(stream).send(bytes))
}

/// One `send(2)` of `bytes` on `stream`, waiting for the socket to become
/// writable as needed.
pub(crate) fn poll_send(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> Poll<io::Result<usize>> {
    // Bounded: each pass either returns or consumed a readiness event that
    // turned out stale, and the next `poll_write_ready` then waits.
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match try_send(stream, bytes) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            sent => return Poll::Ready(sent),
        }
    }
}

/// A TCP stream that writes with `send(2)`.
#[derive(Debug)]
pub struct SendStream {
    inner: TcpStream,
}

impl SendStream {
    /// Wraps a connected stream.
    pub fn new(inner: TcpStream) -> SendStream {
        SendStream { inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for SendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_send(&self.get_mut().inner, cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_written_arrive_in_order_and_shutdown_ends_the_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut client = SendStream::new(client);
        // Larger than a socket buffer, so writes meet back-pressure.
        let message: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = message.clone();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            server.read_to_end(&mut received).await.expect("read");
            received
        });
        client.write_all(&message).await.expect("write");
        client.shutdown().await.expect("shutdown");
        assert_eq!(reader.await.expect("reader"), expected);
    }
}
