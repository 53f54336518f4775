//! Write coalescing for the gRPC listeners (client and peer): an accepted
//! socket is wrapped in [`CoalescingStream`], which holds what HTTP/2 writes
//! until the connection flushes, and lets every other task that is ready to
//! run go first before the bytes go to the kernel. It owns no protocol logic
//! and never reorders or drops bytes.
//!
//! Why: one Raft batch answers many client requests at once; each answer
//! wakes its request task, which hands a response frame to the connection
//! task. tokio runs a task woken by a running task next (its "LIFO slot"),
//! so without this the connection task wrote each response on its own, one
//! `writev` (and one loopback round through the kernel and one wake-up of
//! the client) per request. Yielding once before the write lets the other
//! answers of the batch join the same write.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpIncoming};

/// Bytes held before a write goes to the socket without waiting for a
/// flush, so a large response streams instead of piling up in memory.
pub const HELD_BYTES_MAX: usize = 256 * 1024;

/// A stream whose writes are held until the caller flushes; the first flush
/// of a group yields to the runtime once (the task is woken at once, so it
/// runs again after the tasks already queued), the next one writes.
#[derive(Debug)]
pub struct CoalescingStream<S> {
    inner: S,
    held: Vec<u8>,
    /// Start of the bytes in `held` not yet written.
    written: usize,
    /// True after a flush yielded and before the held bytes are written.
    yielded: bool,
}

impl<S> CoalescingStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> CoalescingStream<S> {
        CoalescingStream {
            inner,
            held: Vec::new(),
            written: 0,
            yielded: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn pending(&self) -> usize {
        self.held.len() - self.written
    }
}

impl<S: AsyncWrite + Unpin> CoalescingStream<S> {
    /// Writes every held byte to the inner stream.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.held.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room before holding more: past [`HELD_BYTES_MAX`] the held
    /// bytes are written first.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending() >= HELD_BYTES_MAX {
            ready!(self.poll_write_held(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        this.held.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            this.held.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        // Slices are copied into one buffer, so taking them all at once is
        // cheaper for the caller than one call per slice.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() > 0 {
            if !this.yielded {
                // Woken at once: the runtime queues this task behind the
                // ones already runnable (a self-wake is a yield), so answers
                // they are about to hand over join this write.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_write_held(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for CoalescingStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The accepted sockets of `listener`, with `TCP_NODELAY` set (accepted
/// sockets do not inherit a builder's nodelay, and small answers would wait
/// for delayed ACKs), each wrapped in a [`CoalescingStream`]; for tonic's
/// `serve_with_incoming*`.
pub fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = io::Result<CoalescingStream<TcpStream>>> + Send + 'static {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(CoalescingStream::new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    /// An in-memory sink that counts the writes it receives.
    #[derive(Default)]
    struct CountingSink {
        bytes: Vec<u8>,
        writes: usize,
        accept_per_write: Option<usize>,
    }

    impl AsyncWrite for CountingSink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.accept_per_write.unwrap_or(data.len()).min(data.len());
            self.bytes.extend_from_slice(&data[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_before_a_flush_reach_the_socket_in_one_write() {
        let mut s = CoalescingStream::new(CountingSink::default());
        s.write_all(b"one ").await.expect("write");
        s.write_all(b"two ").await.expect("write");
        s.write_all(b"three").await.expect("write");
        assert_eq!(s.inner.writes, 0, "nothing is written before a flush");
        s.flush().await.expect("flush");
        assert_eq!(s.inner.writes, 1);
        assert_eq!(s.inner.bytes, b"one two three");
    }

    #[tokio::test]
    async fn the_first_flush_yields_once_then_writes() {
        let mut s = CoalescingStream::new(CountingSink::default());
        s.write_all(b"answer").await.expect("write");
        let mut polls = 0;
        poll_fn(|cx| {
            polls += 1;
            Pin::new(&mut s).poll_flush(cx)
        })
        .await
        .expect("flush");
        assert_eq!(polls, 2, "one yield, then the write");
        // An empty flush goes straight through.
        let mut polls = 0;
        poll_fn(|cx| {
            polls += 1;
            Pin::new(&mut s).poll_flush(cx)
        })
        .await
        .expect("flush");
        assert_eq!(polls, 1);
    }

    #[tokio::test]
    async fn partial_writes_keep_every_byte_in_order() {
        let sink = CountingSink {
            accept_per_write: Some(3),
            ..Default::default()
        };
        let mut s = CoalescingStream::new(sink);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        s.write_all(&data).await.expect("write");
        s.shutdown().await.expect("shutdown");
        assert_eq!(s.inner.bytes, data);
    }

    #[tokio::test]
    async fn held_bytes_past_the_bound_are_written_without_a_flush() {
        let mut s = CoalescingStream::new(CountingSink::default());
        let chunk = vec![7u8; HELD_BYTES_MAX];
        s.write_all(&chunk).await.expect("write");
        s.write_all(b"more").await.expect("write");
        assert_eq!(s.inner.bytes.len(), HELD_BYTES_MAX);
        assert!(s.pending() <= HELD_BYTES_MAX);
    }
}
