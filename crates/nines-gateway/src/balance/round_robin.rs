//! Round robin: each eligible backend in turn, weights ignored. One atomic
//! counter shared by all workers; unavailable backends are skipped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{scan_from, PickContext};
use crate::backend::Backend;

/// Plain round robin.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next eligible backend after the previous pick.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        scan_from(backends, ctx, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, ctx};

    #[test]
    fn cycles_through_all_backends_evenly() {
        let list = backends(&[1, 1, 1]);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6)
            .map(|_| rr.pick(&list, &ctx()).expect("pick"))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_down_and_tried_backends() {
        let list = backends(&[1, 1, 1]);
        list[1].set_healthy(false, 1);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..4)
            .map(|_| rr.pick(&list, &ctx()).expect("pick"))
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");
        let tried = [0, 2];
        let ctx = PickContext {
            tried: &tried,
            ..ctx()
        };
        assert_eq!(rr.pick(&list, &ctx), None);
    }
}
