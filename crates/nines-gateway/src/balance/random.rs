//! Random choice and power-of-two choices: two random backends, the one with
//! fewer active requests per unit of weight wins. Stateless; falls back to a
//! scan from a random start when the random draws are not eligible.

use std::sync::Arc;

use rand::Rng;

use super::{scan_from, PickContext};
use crate::backend::Backend;

/// Uniform random choice among eligible backends.
#[derive(Debug, Default)]
pub struct RandomPick;

impl RandomPick {
    /// A random eligible backend.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        let start = rand::thread_rng().gen_range(0..backends.len());
        scan_from(backends, ctx, start)
    }
}

/// Two random choices, fewer active requests (weighted) wins.
#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl PowerOfTwo {
    /// The less loaded of two random eligible backends.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        two_choices(backends, ctx, |backend| {
            (u128::from(backend.active()) + 1) * 1_000_000
                / u128::from(backend.effective_weight(ctx.now_ms))
        })
    }
}

/// Draws two distinct backends and keeps the eligible one of lower `cost`.
pub(crate) fn two_choices(
    backends: &[Arc<Backend>],
    ctx: &PickContext<'_>,
    cost: impl Fn(&Backend) -> u128,
) -> Option<usize> {
    let n = backends.len();
    let mut rng = rand::thread_rng();
    if n == 1 {
        return scan_from(backends, ctx, 0);
    }
    let first = rng.gen_range(0..n);
    let second = (first + rng.gen_range(1..n)) % n;
    match (
        ctx.eligible(backends, first),
        ctx.eligible(backends, second),
    ) {
        (true, true) => {
            if cost(&backends[second]) < cost(&backends[first]) {
                Some(second)
            } else {
                Some(first)
            }
        }
        (true, false) => Some(first),
        (false, true) => Some(second),
        (false, false) => scan_from(backends, ctx, rng.gen_range(0..n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, ctx};

    #[test]
    fn random_covers_every_backend_roughly_evenly() {
        let list = backends(&[1, 1, 1, 1]);
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[RandomPick.pick(&list, &ctx()).expect("pick")] += 1;
        }
        assert!(
            counts.iter().all(|&c| (700..1300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn two_choices_never_picks_the_most_loaded() {
        let list = backends(&[1, 1, 1]);
        for _ in 0..50 {
            list[2].begin_request();
        }
        for _ in 0..500 {
            assert_ne!(PowerOfTwo.pick(&list, &ctx()), Some(2));
        }
    }

    #[test]
    fn two_choices_keeps_load_balanced() {
        let list = backends(&[1, 1, 1, 1, 1]);
        for _ in 0..1000 {
            let index = PowerOfTwo.pick(&list, &ctx()).expect("pick");
            list[index].begin_request();
        }
        let loads: Vec<_> = list.iter().map(|b| b.active()).collect();
        let spread = loads.iter().max().expect("max") - loads.iter().min().expect("min");
        assert!(spread <= 10, "p2c keeps the gap small: {loads:?}");
    }
}
