//! Least response time: peak EWMA latency times (active + 1), divided by
//! weight, over two random choices (Finagle's "P2C + peak EWMA"). A backend
//! that slows down is avoided at once; one that recovers wins traffic back as
//! its EWMA decays. A backend without samples costs nothing and gets probed.

use std::sync::Arc;

use super::random::two_choices;
use super::PickContext;
use crate::backend::Backend;

/// Peak EWMA with power-of-two choices.
#[derive(Debug, Default)]
pub struct LeastResponseTime;

impl LeastResponseTime {
    /// The cheaper of two random eligible backends by expected latency.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        two_choices(backends, ctx, |backend| {
            u128::from(backend.ewma_ns()) * (u128::from(backend.active()) + 1) * 100
                / u128::from(backend.effective_weight(ctx.now_ms))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, ctx};
    use std::time::Duration;

    #[test]
    fn slow_backend_gets_the_least_traffic() {
        let list = backends(&[1, 1, 1]);
        list[0].observe_latency(Duration::from_millis(1), 1);
        list[1].observe_latency(Duration::from_millis(1), 1);
        list[2].observe_latency(Duration::from_millis(50), 1);
        let mut counts = [0; 3];
        for _ in 0..900 {
            counts[LeastResponseTime.pick(&list, &ctx()).expect("pick")] += 1;
        }
        assert_eq!(
            counts[2], 0,
            "the slow backend loses every pairing: {counts:?}"
        );
        assert!(counts[0] > 300 && counts[1] > 300, "{counts:?}");
    }

    #[test]
    fn load_raises_cost_of_a_fast_backend() {
        let list = backends(&[1, 1]);
        list[0].observe_latency(Duration::from_millis(1), 1);
        list[1].observe_latency(Duration::from_millis(3), 1);
        for _ in 0..5 {
            list[0].begin_request();
        }
        // Cost 1ms * 6 = 6 against 3ms * 1 = 3: the slower idle backend wins.
        assert_eq!(LeastResponseTime.pick(&list, &ctx()), Some(1));
    }
}
