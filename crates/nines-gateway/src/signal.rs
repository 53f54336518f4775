//! Running a client connection until it ends or a rarely firing signal (the
//! listener's drain) fires, without polling the signal on every wake-up of
//! the connection. `tokio::select!` polls each branch whenever the task
//! wakes, and polling the change future of a `watch` receiver takes a lock
//! of the channel that every connection of the listener, on every worker,
//! shares: a lock and a cache line passed between cores twice per request.
//! Here the signal's future is polled with a waker of its own, and polled
//! again only after that waker was woken. It owns no policy: what the signal
//! means is the caller's.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Polls `work` to its end, unless `signal` completes first (`None`). The
/// signal is polled once at the start and then only when it has woken.
pub async fn unless_signalled<W, S>(
    mut work: Pin<&mut W>,
    mut signal: Pin<&mut S>,
) -> Option<W::Output>
where
    W: Future,
    S: Future<Output = ()>,
{
    let relay = Arc::new(Relay::default());
    let signal_waker = Waker::from(Arc::clone(&relay));
    // The task waker the relay holds, as last stored; compared without the lock.
    let mut stored: Option<Waker> = None;
    let mut first = true;
    poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if !stored.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Stored before the signal is polled, so a signal that fires
            // right after its poll finds the task to wake.
            relay.set_task(cx.waker().clone());
            stored = Some(cx.waker().clone());
        }
        if std::mem::take(&mut first) || relay.woken.swap(false, Ordering::AcqRel) {
            let mut signal_cx = Context::from_waker(&signal_waker);
            if signal.as_mut().poll(&mut signal_cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await
}

/// The signal's waker: notes that the signal woke and wakes the task.
#[derive(Debug, Default)]
struct Relay {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Relay {
    fn set_task(&self, waker: Waker) {
        // Nothing under this lock can panic; a poisoned lock still holds a waker.
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker);
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::watch;

    /// A future that counts its polls and never ends.
    struct Counted<'a>(&'a AtomicUsize);

    impl Future for Counted<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn work_that_ends_first_wins_and_the_signal_is_polled_once() {
        let polls = AtomicUsize::new(0);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        let work = pin!(async move {
            let mut sum = 0;
            while let Some(n) = rx.recv().await {
                sum += n;
            }
            sum
        });
        let signal = pin!(Counted(&polls));
        let feeder = tokio::spawn(async move {
            for n in 1..=3 {
                tx.send(n).await.expect("send");
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(unless_signalled(work, signal).await, Some(6));
        feeder.await.expect("feeder");
        // Woken several times by the channel, but never by the signal.
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_signal_that_fires_later_stops_the_work() {
        let (drain_tx, mut drain_rx) = watch::channel(false);
        let signal = pin!(async move {
            let _ = drain_rx.wait_for(|d| *d).await;
        });
        let work = pin!(std::future::pending::<()>());
        let fire = tokio::spawn(async move {
            tokio::task::yield_now().await;
            drain_tx.send(true).expect("send");
            drain_tx
        });
        assert_eq!(unless_signalled(work, signal).await, None);
        drop(fire.await.expect("fire"));
    }
}
