//! Balancing algorithms, each in its own module with tests of its defining
//! property. A [`Balancer`] is built for one backend list and picks an index
//! into it; it skips unavailable backends and the ones already tried by this
//! request. It never blocks and never touches the network.

mod consistent;
mod ip_hash;
mod least_connections;
mod least_time;
mod random;
mod round_robin;
mod smooth_weighted;

use std::sync::Arc;

use crate::backend::Backend;
use crate::config::BalanceKind;

pub use consistent::Maglev;
pub use ip_hash::IpHash;
pub use least_connections::LeastConnections;
pub use least_time::LeastResponseTime;
pub use random::{PowerOfTwo, RandomPick};
pub use round_robin::RoundRobin;
pub use smooth_weighted::SmoothWeighted;

/// Most attempts a single request may make; bounds the `tried` list.
pub const ATTEMPTS_MAX: usize = 10;

/// What a pick knows about the request.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// Hash of the request's key (client address, header, cookie or path).
    pub key_hash: u64,
    /// Indices already tried by this request.
    pub tried: &'a [usize],
    /// Current time from [`crate::backend::now_ms`].
    pub now_ms: u64,
}

impl PickContext<'_> {
    /// Whether backend `index` may be chosen now.
    pub fn eligible(&self, backends: &[Arc<Backend>], index: usize) -> bool {
        !self.tried.contains(&index) && backends[index].is_available(self.now_ms)
    }
}

/// One balancing algorithm with its state, for one backend list.
#[derive(Debug)]
pub enum Balancer {
    /// See [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// See [`SmoothWeighted`].
    SmoothWeighted(SmoothWeighted),
    /// See [`LeastConnections`].
    LeastConnections(LeastConnections),
    /// See [`LeastResponseTime`].
    LeastResponseTime(LeastResponseTime),
    /// See [`IpHash`].
    IpHash(IpHash),
    /// See [`Maglev`].
    ConsistentHash(Maglev),
    /// See [`RandomPick`].
    Random(RandomPick),
    /// See [`PowerOfTwo`].
    PowerOfTwo(PowerOfTwo),
}

impl Balancer {
    /// Builds the algorithm's state for `backends`.
    pub fn new(kind: BalanceKind, backends: &[Arc<Backend>]) -> Balancer {
        match kind {
            BalanceKind::RoundRobin => Balancer::RoundRobin(RoundRobin::default()),
            BalanceKind::WeightedRoundRobin => {
                Balancer::SmoothWeighted(SmoothWeighted::new(backends.len()))
            }
            BalanceKind::LeastConnections => {
                Balancer::LeastConnections(LeastConnections::default())
            }
            BalanceKind::LeastResponseTime => Balancer::LeastResponseTime(LeastResponseTime),
            BalanceKind::IpHash => Balancer::IpHash(IpHash),
            BalanceKind::ConsistentHash => Balancer::ConsistentHash(Maglev::new(backends)),
            BalanceKind::Random => Balancer::Random(RandomPick),
            BalanceKind::PowerOfTwo => Balancer::PowerOfTwo(PowerOfTwo),
        }
    }

    /// Whether the algorithm uses [`PickContext::key_hash`].
    pub fn needs_key(&self) -> bool {
        matches!(self, Balancer::IpHash(_) | Balancer::ConsistentHash(_))
    }

    /// Picks a backend index, or `None` when no backend is eligible.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        match self {
            Balancer::RoundRobin(b) => b.pick(backends, ctx),
            Balancer::SmoothWeighted(b) => b.pick(backends, ctx),
            Balancer::LeastConnections(b) => b.pick(backends, ctx),
            Balancer::LeastResponseTime(b) => b.pick(backends, ctx),
            Balancer::IpHash(b) => b.pick(backends, ctx),
            Balancer::ConsistentHash(b) => b.pick(backends, ctx),
            Balancer::Random(b) => b.pick(backends, ctx),
            Balancer::PowerOfTwo(b) => b.pick(backends, ctx),
        }
    }
}

/// The first eligible index at or after `start`, wrapping around.
pub(crate) fn scan_from(
    backends: &[Arc<Backend>],
    ctx: &PickContext<'_>,
    start: usize,
) -> Option<usize> {
    let n = backends.len();
    (0..n)
        .map(|offset| (start + offset) % n)
        .find(|&index| ctx.eligible(backends, index))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Backends on distinct loopback ports with the given weights.
    pub fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Arc::new(Backend::new(
                    format!("127.0.0.1:{}", 10_000 + i).parse().expect("addr"),
                    w,
                ))
            })
            .collect()
    }

    /// A context with no key and nothing tried.
    pub fn ctx() -> PickContext<'static> {
        PickContext {
            key_hash: 0,
            tried: &[],
            now_ms: 1,
        }
    }
}
