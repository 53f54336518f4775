//! Weighted least connections: the eligible backend with the smallest
//! active/weight ratio wins; ties rotate so equal backends share the load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::PickContext;
use crate::backend::Backend;

/// Weighted least connections.
#[derive(Debug, Default)]
pub struct LeastConnections {
    rotate: AtomicUsize,
}

impl LeastConnections {
    /// The backend with the fewest active requests per unit of weight.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        let n = backends.len();
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for offset in 0..n {
            let index = (start + offset) % n;
            if !ctx.eligible(backends, index) {
                continue;
            }
            let active = backends[index].active();
            let weight = backends[index].effective_weight(ctx.now_ms);
            // Compare active/weight without division: a/w < b/v <=> a*v < b*w.
            let better = match best {
                None => true,
                Some((_, best_active, best_weight)) => {
                    u128::from(active) * u128::from(best_weight)
                        < u128::from(best_active) * u128::from(weight)
                }
            };
            if better {
                best = Some((index, active, weight));
            }
        }
        best.map(|(index, _, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, ctx};

    #[test]
    fn skewed_load_goes_to_the_least_loaded() {
        let list = backends(&[1, 1, 1]);
        for _ in 0..10 {
            list[0].begin_request();
        }
        for _ in 0..5 {
            list[1].begin_request();
        }
        let lc = LeastConnections::default();
        // New requests stay open: the idle backend takes them until it catches up.
        for _ in 0..5 {
            let index = lc.pick(&list, &ctx()).expect("pick");
            assert_eq!(index, 2);
            list[index].begin_request();
        }
        let mut counts = [0; 3];
        for _ in 0..10 {
            let index = lc.pick(&list, &ctx()).expect("pick");
            counts[index] += 1;
            list[index].begin_request();
        }
        assert_eq!(counts, [0, 5, 5], "then the two at 5 share");
    }

    #[test]
    fn weight_scales_the_share() {
        let list = backends(&[3, 1]);
        let lc = LeastConnections::default();
        for _ in 0..40 {
            let index = lc.pick(&list, &ctx()).expect("pick");
            list[index].begin_request();
        }
        assert_eq!((list[0].active(), list[1].active()), (30, 10));
    }
}
