//! Timers a client connection re-arms for each request instead of making
//! new ones. A request on a keep-alive connection runs two deadlines: the
//! time allowed for its head (hyper's header-read timeout, which is also the
//! keep-alive idle time) and the time allowed for the backend's response
//! head. A fresh tokio sleep per deadline costs an allocation, an insert into
//! the runtime's timer wheel on first poll and a removal when it is dropped,
//! twice per request. A [`SleepSlot`] keeps one sleep per connection and
//! deadline instead: re-arming it for a later deadline is a single atomic
//! update, and the wheel sees the entry again only when its old deadline
//! comes round (then it is moved to the new one, or fires if the connection
//! has been idle that long, which wakes the connection's task once for
//! nothing). Deadlines and their effects stay with the callers: hyper for
//! the request head, `proxy` for the response.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// One parked sleep of a connection, re-armed by whoever takes it next.
#[derive(Debug, Default)]
pub struct SleepSlot {
    parked: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl SleepSlot {
    /// A sleep until `deadline`: the parked one re-armed, or a new one when
    /// none is parked (first use, or another request of an HTTP/2
    /// connection holds it).
    pub fn take(&self, deadline: Instant) -> Pin<Box<Sleep>> {
        // No code runs under this lock that could panic, so a poisoned lock
        // still holds a consistent `Option`.
        let parked = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match parked {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keeps `sleep` for the next [`SleepSlot::take`].
    pub fn park(&self, sleep: Pin<Box<Sleep>>) {
        let previous = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(sleep);
        // Another request of the same HTTP/2 connection parked one first:
        // this one is dropped outside the lock.
        drop(previous);
    }

    /// Runs `future` until it completes or `deadline` passes (`None`).
    /// Like `tokio::time::timeout_at`, but on the parked sleep.
    /// The future is taken pinned so that it is not moved (copied) again.
    pub async fn limit<F: Future>(
        &self,
        deadline: Instant,
        mut future: Pin<&mut F>,
    ) -> Option<F::Output> {
        let mut sleep = self.take(deadline);
        let outcome = poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await;
        self.park(sleep);
        outcome
    }
}

/// hyper's timer for one HTTP/1 client connection: the header-read sleeps it
/// hands out all come from one [`SleepSlot`] and go back to it when hyper
/// drops them (after each request head).
#[derive(Debug, Clone, Default)]
pub struct ConnectionTimer {
    slot: Arc<SleepSlot>,
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(SlotSleep {
            sleep: Some(self.slot.take(deadline.into())),
            slot: Arc::clone(&self.slot),
        })
    }
}

/// A sleep lent out by a [`SleepSlot`]; dropping it parks the sleep again.
struct SlotSleep {
    /// `Some` until dropped.
    sleep: Option<Pin<Box<Sleep>>>,
    slot: Arc<SleepSlot>,
}

impl Future for SlotSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut().sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl hyper::rt::Sleep for SlotSleep {}

impl Drop for SlotSleep {
    fn drop(&mut self) {
        if let Some(sleep) = self.sleep.take() {
            self.slot.park(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;
    use std::pin::pin;

    const TICK: Duration = Duration::from_millis(40);

    #[tokio::test]
    async fn a_parked_sleep_is_rearmed_and_still_fires_at_its_new_deadline() {
        let slot = SleepSlot::default();
        let quick = slot.limit(Instant::now() + TICK, pin!(async { 7 })).await;
        assert_eq!(quick, Some(7));
        // The parked sleep guards a later deadline and fires there, not before.
        let start = Instant::now();
        let slow = slot
            .limit(start + 2 * TICK, pin!(std::future::pending::<()>()))
            .await;
        assert_eq!(slow, None);
        assert!(Instant::now() >= start + 2 * TICK);
        // Fired, then re-armed: it waits again instead of firing at once, so
        // a future that ends before the deadline wins.
        let later = slot
            .limit(Instant::now() + 4 * TICK, pin!(tokio::time::sleep(TICK)))
            .await;
        assert_eq!(later, Some(()));
    }

    #[tokio::test]
    async fn a_taken_sleep_is_the_parked_one() {
        let slot = SleepSlot::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = slot.take(deadline);
        let address: *const Sleep = &*first;
        slot.park(first);
        let second = slot.take(deadline + Duration::from_secs(1));
        assert_eq!(address, &*second as *const Sleep);
        assert_eq!(second.deadline(), deadline + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn hyper_sleeps_go_back_to_the_slot_and_fire_on_time() {
        let timer = ConnectionTimer::default();
        drop(timer.sleep(Duration::from_secs(30)));
        assert!(timer.slot.parked.lock().expect("lock").is_some());
        let start = Instant::now();
        timer.sleep(TICK).await;
        assert!(Instant::now() >= start + TICK);
        assert!(timer.slot.parked.lock().expect("lock").is_some());
    }
}
