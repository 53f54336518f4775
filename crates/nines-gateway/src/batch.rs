//! Send batching: what a worker sends during one poll round of its runtime
//! (replies to clients, bodiless requests to backends) leaves together at the
//! end of the round. A connection's task does not send such bytes itself:
//! [`BatchedStream`] copies them into the connection's outbox and puts the
//! connection on its worker's flush list; the worker's flusher task, woken
//! when that list becomes non-empty, runs after the round's other ready tasks
//! and sends all queued outboxes back to back. The round's reads then come
//! before its sends, as in an event loop that reads all ready sockets first,
//! and replies reach a client (requests a backend) in a burst rather than one
//! per task spread over the round, so a peer that waits on many connections
//! is woken once for several of them. The flusher only ever tries a
//! non-blocking send: when one would block (or fails), the bytes and the
//! error go back to the connection's own task, which waits for the socket to
//! become writable like any writer. After each flush the worker yields its
//! CPU (`sched_yield`), so the peers its sends woke run at the round's
//! boundary rather than preempting it mid-round. It owns no policy: framing
//! and timeouts are the callers'.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::stream;

/// Largest number of bytes an outbox holds; a write that would take it
/// further is sent by the connection's task after what is already waiting.
pub const OUTBOX_BYTES_MAX: usize = 16 * 1024;
/// An outbox whose buffer grew beyond this gives it back once sent, so idle
/// connections do not keep large buffers.
pub const OUTBOX_KEPT_BYTES_MAX: usize = 4 * 1024;
/// Passes over its list the flusher makes per poll before it yields; bounds
/// its work when connections of another thread keep queueing (a
/// multi-threaded runtime), while on a worker the second pass finds the
/// list empty.
pub const FLUSH_PASSES_MAX: usize = 4;

/// A socket whose small writes are sent by the worker's flusher at the end
/// of the poll round.
#[derive(Debug)]
pub struct BatchedStream {
    read: OwnedReadHalf,
    shared: Arc<Shared>,
}

impl BatchedStream {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> BatchedStream {
        let (read, write) = stream.into_split();
        BatchedStream {
            read,
            shared: Arc::new(Shared {
                write,
                outbox: Mutex::new(Outbox::default()),
            }),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &TcpStream {
        self.read.as_ref()
    }

    /// Whether written bytes have not been sent yet.
    pub fn has_unsent(&self) -> bool {
        let outbox = self.shared.lock();
        !outbox.bytes.is_empty() || outbox.error.is_some()
    }

    /// Forgets the task that last wrote. For a connection that is parked
    /// (an idle pooled upstream connection): the waker held for it would
    /// keep that finished task's memory allocated until the next write.
    pub fn forget_task(&self) {
        let task = self.shared.lock().task.take();
        drop(task);
    }

    /// Sends all of `bytes` now, from this task, after anything still
    /// waiting: for writes whose failure the caller must see at once.
    pub async fn send_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let shared = &self.shared;
        poll_fn(|cx| shared.poll_drain(&mut shared.lock(), cx)).await?;
        // Bounded: every pass sends at least one byte or returns.
        while !bytes.is_empty() {
            match poll_fn(|cx| shared.poll_send(cx, bytes)).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                sent => bytes = &bytes[sent..],
            }
        }
        Ok(())
    }

    /// Sends bytes the flusher handed back, if any. `Ready(Err)`: a send
    /// failed; `Pending`: the socket is full (this task is woken when it drains).
    pub fn poll_handed_back(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut outbox = self.shared.lock();
        if outbox.queued || (outbox.bytes.is_empty() && outbox.error.is_none()) {
            return Poll::Ready(Ok(()));
        }
        self.shared.poll_drain(&mut outbox, cx)
    }
}

/// What the connection's task and the flusher share.
#[derive(Debug)]
struct Shared {
    write: OwnedWriteHalf,
    outbox: Mutex<Outbox>,
}

/// Bytes written by the connection and not yet sent.
#[derive(Debug, Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// Whether the connection is on the flush list: the flusher will try to
    /// send `bytes`. Otherwise the connection's task sends them.
    queued: bool,
    /// The connection's task, woken when the flusher hands bytes back.
    task: Option<Waker>,
    /// A send error met by the flusher, returned by the connection's next
    /// read, write or flush.
    error: Option<io::Error>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // Nothing that could panic runs under this lock, so a poisoned lock
        // still holds a consistent outbox.
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stream(&self) -> &TcpStream {
        self.write.as_ref()
    }

    /// One `send(2)` without waiting; `WouldBlock` when the socket is full.
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        stream::try_send(self.stream(), bytes)
    }

    /// Sends `bytes` from the connection's task, waiting for the socket to
    /// become writable as needed.
    fn poll_send(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        stream::poll_send(self.stream(), cx, bytes)
    }

    /// Sends everything in the outbox from the connection's task, or
    /// returns the error the flusher met.
    fn poll_drain(&self, outbox: &mut Outbox, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = outbox.error.take() {
            return Poll::Ready(Err(error));
        }
        // Bounded: every pass sends at least one byte or returns.
        while !outbox.bytes.is_empty() {
            match ready!(self.poll_send(cx, &outbox.bytes))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                sent => drop(outbox.bytes.drain(..sent)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The flusher's part: one non-blocking send of the outbox. What is
    /// left, and any error, goes back to the connection's task.
    fn flush_queued(&self) {
        let mut outbox = self.lock();
        outbox.queued = false;
        if outbox.bytes.is_empty() {
            return;
        }
        match self.send(&outbox.bytes) {
            Ok(sent) if sent == outbox.bytes.len() => {
                outbox.bytes.clear();
                if outbox.bytes.capacity() > OUTBOX_KEPT_BYTES_MAX {
                    outbox.bytes = Vec::new();
                }
                return;
            }
            Ok(0) => outbox.error = Some(io::ErrorKind::WriteZero.into()),
            Ok(sent) => drop(outbox.bytes.drain(..sent)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => outbox.error = Some(error),
        }
        let task = outbox.task.take();
        drop(outbox);
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl AsyncRead for BatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            // Bytes the flusher handed back are sent whenever the task runs:
            // a connection waiting for its client's next request may be
            // polled only for reading.
            let mut outbox = this.shared.lock();
            if !outbox.queued && (!outbox.bytes.is_empty() || outbox.error.is_some()) {
                if let Poll::Ready(Err(error)) = this.shared.poll_drain(&mut outbox, cx) {
                    return Poll::Ready(Err(error));
                }
            }
        }
        Pin::new(&mut this.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for BatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.get_mut().shared;
        let mut outbox = shared.lock();
        if !(outbox.queued && outbox.error.is_none())
            || outbox.bytes.len() + buf.len() > OUTBOX_BYTES_MAX
        {
            // What waits goes first, from this task.
            ready!(shared.poll_drain(&mut outbox, cx))?;
        }
        if buf.len() > OUTBOX_BYTES_MAX {
            return shared.poll_send(cx, buf);
        }
        outbox.bytes.extend_from_slice(buf);
        if !outbox
            .task
            .as_ref()
            .is_some_and(|t| t.will_wake(cx.waker()))
        {
            outbox.task = Some(cx.waker().clone());
        }
        if !outbox.queued {
            outbox.queued = true;
            drop(outbox);
            flush_list_push(Arc::clone(shared));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.get_mut().shared;
        let mut outbox = shared.lock();
        if outbox.queued && outbox.error.is_none() {
            // The flusher sends them at the end of this round, or hands them
            // back and wakes this task.
            return Poll::Ready(Ok(()));
        }
        shared.poll_drain(&mut outbox, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.get_mut().shared;
        ready!(shared.poll_drain(&mut shared.lock(), cx))?;
        Poll::Ready(SockRef::from(shared.stream()).shutdown(Shutdown::Write))
    }
}

/// A worker's list of connections with queued bytes, and its flusher task.
#[derive(Debug, Default)]
struct FlushList {
    state: Mutex<FlushState>,
}

#[derive(Debug, Default)]
struct FlushState {
    queued: Vec<Arc<Shared>>,
    /// The flusher, while it waits for the list to become non-empty.
    flusher: Option<Waker>,
    /// False once the flusher task is gone (its runtime shut down).
    alive: bool,
}

impl FlushList {
    fn lock(&self) -> MutexGuard<'_, FlushState> {
        // Nothing that could panic runs under this lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a list with its flusher on the current runtime.
    fn start() -> Arc<FlushList> {
        let list = Arc::new(FlushList::default());
        list.lock().alive = true;
        tokio::spawn(flush(Arc::clone(&list)));
        list
    }

    /// Queues `shared`; false when the flusher is gone.
    fn push(&self, shared: Arc<Shared>) -> Result<(), Arc<Shared>> {
        let mut state = self.lock();
        if !state.alive {
            return Err(shared);
        }
        state.queued.push(shared);
        let flusher = state.flusher.take();
        drop(state);
        if let Some(flusher) = flusher {
            flusher.wake();
        }
        Ok(())
    }
}

thread_local! {
    /// The flush list of the worker running on this thread.
    static FLUSH_LIST: RefCell<Option<Arc<FlushList>>> = const { RefCell::new(None) };
}

/// Puts a connection on this thread's flush list, starting the list's
/// flusher on the current runtime when there is none (first use, or the
/// runtime that ran the last one has shut down).
fn flush_list_push(shared: Arc<Shared>) {
    FLUSH_LIST.with(|slot| {
        let mut slot = slot.borrow_mut();
        let list = slot.get_or_insert_with(FlushList::start);
        if let Err(shared) = list.push(shared) {
            let fresh = FlushList::start();
            // A new list is alive until its task is dropped, which cannot
            // happen before this thread's runtime runs again.
            let _ = fresh.push(shared);
            *slot = Some(fresh);
        }
    });
}

/// Marks the list dead when the flusher task is dropped.
struct Alive(Arc<FlushList>);

impl Drop for Alive {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.alive = false;
        // Connections still queued keep their bytes; dropping them here
        // closes sockets whose runtime is gone anyway.
        state.queued.clear();
    }
}

/// The flusher: sends every queued outbox, then waits for the list to
/// become non-empty again. Runs until its runtime shuts down.
async fn flush(list: Arc<FlushList>) {
    let alive = Alive(list);
    let list = &alive.0;
    let mut batch: Vec<Arc<Shared>> = Vec::new();
    poll_fn(|cx| {
        for _ in 0..FLUSH_PASSES_MAX {
            {
                let mut state = list.lock();
                if state.queued.is_empty() {
                    state.flusher = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                std::mem::swap(&mut state.queued, &mut batch);
            }
            for shared in batch.drain(..) {
                shared.flush_queued();
            }
            // The round's sends have woken the peers that read them (clients,
            // backends), often onto this worker's CPU. Giving the CPU up here,
            // with nothing of the round left half done, lets them run now
            // instead of preempting the worker in the middle of its next
            // round, where every connection it holds would wait with it.
            // With no other task runnable on the CPU this returns at once.
            std::thread::yield_now();
        }
        cx.waker().wake_by_ref();
        Poll::<()>::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (BatchedStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (BatchedStream::new(server), client)
    }

    #[tokio::test]
    async fn small_writes_arrive_in_order_after_a_flush_round() {
        let (mut server, mut client) = pair().await;
        for i in 0..100u8 {
            server.write_all(&[i; 10]).await.expect("write");
            server.flush().await.expect("flush");
        }
        let mut received = vec![0; 1000];
        client.read_exact(&mut received).await.expect("read");
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn bytes_beyond_a_full_socket_reach_the_peer_and_shutdown_ends_the_stream() {
        let (server, mut client) = pair().await;
        // Much larger than the socket buffers: the flusher meets a full
        // socket and hands bytes back to the writer.
        let message: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = message.clone();
        let writer = tokio::spawn(async move {
            let mut server = server;
            for piece in message.chunks(1000) {
                server.write_all(piece).await.expect("write");
                server.flush().await.expect("flush");
            }
            server.shutdown().await.expect("shutdown");
            server
        });
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.expect("read");
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes arrive in order");
        drop(writer.await.expect("writer"));
    }

    #[tokio::test]
    async fn a_reply_queued_before_the_reader_waits_is_sent_without_a_flush() {
        let (mut server, mut client) = pair().await;
        client.write_all(b"ping").await.expect("write");
        let mut request = [0; 4];
        server.read_exact(&mut request).await.expect("read");
        server.write_all(b"pong").await.expect("write");
        // No flush and no further write: the flusher sends it while this
        // task waits for the next request.
        let reading = tokio::spawn(async move {
            let mut next = [0; 4];
            server.read_exact(&mut next).await.map(|_| next)
        });
        let mut reply = [0; 4];
        client.read_exact(&mut reply).await.expect("reply");
        assert_eq!(&reply, b"pong");
        client.write_all(b"next").await.expect("write");
        assert_eq!(&reading.await.expect("task").expect("read"), b"next");
    }

    #[tokio::test]
    async fn a_write_to_a_closed_peer_fails_on_a_later_call() {
        let (mut server, client) = pair().await;
        drop(client);
        // The first sends may still be accepted by the kernel; a reset
        // follows. Bounded: the error shows within a few writes.
        let mut failed = false;
        for _ in 0..100 {
            let written = server.write_all(&[1; 100]).await;
            let flushed = server.flush().await;
            tokio::task::yield_now().await;
            if written.is_err() || flushed.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writing to a closed peer fails");
    }
}
