//! Smooth weighted round robin, nginx's algorithm: every pick adds each
//! eligible backend's weight to its current value, takes the largest and
//! subtracts the total from it. The sequence is exact and evenly
//! interleaved (weights 5,1,1 give a a b a c a a). State sits behind a short
//! mutex: the algorithm is inherently sequential.

use std::sync::{Arc, Mutex};

use super::PickContext;
use crate::backend::Backend;

/// Smooth weighted round robin.
#[derive(Debug)]
pub struct SmoothWeighted {
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    /// State for `count` backends.
    pub fn new(count: usize) -> SmoothWeighted {
        SmoothWeighted {
            current: Mutex::new(vec![0; count]),
        }
    }

    /// The next backend of the weighted sequence among the eligible ones.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        let mut current = self.current.lock().expect("swrr lock is never poisoned");
        if current.len() != backends.len() {
            current.resize(backends.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (index, backend) in backends.iter().enumerate() {
            if !ctx.eligible(backends, index) {
                continue;
            }
            let weight = backend.effective_weight(ctx.now_ms) as i64;
            current[index] += weight;
            total += weight;
            if best.is_none_or(|b| current[index] > current[b]) {
                best = Some(index);
            }
        }
        let chosen = best?;
        current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, ctx};

    #[test]
    fn weights_5_1_1_give_the_nginx_sequence() {
        let list = backends(&[5, 1, 1]);
        let swrr = SmoothWeighted::new(3);
        let names = ["a", "b", "c"];
        let sequence: Vec<_> = (0..14)
            .map(|_| names[swrr.pick(&list, &ctx()).expect("pick")])
            .collect();
        assert_eq!(
            sequence,
            ["a", "a", "b", "a", "c", "a", "a", "a", "a", "b", "a", "c", "a", "a"]
        );
    }

    #[test]
    fn shares_follow_weights_and_skip_down_backends() {
        let list = backends(&[3, 2, 1]);
        let swrr = SmoothWeighted::new(3);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[swrr.pick(&list, &ctx()).expect("pick")] += 1;
        }
        assert_eq!(counts, [300, 200, 100]);
        list[0].set_healthy(false, 1);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[swrr.pick(&list, &ctx()).expect("pick")] += 1;
        }
        assert_eq!(counts, [0, 200, 100]);
    }
}
