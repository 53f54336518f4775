//! Consistent hashing with a Maglev lookup table (Eisenbud et al., 2016):
//! each backend fills table slots along its own permutation, in turns
//! proportional to its weight. Removing one of N backends moves about 1/N of
//! keys; a backend that is merely down keeps its slots, and its keys alone are
//! rehashed onto the others until it returns.

use std::sync::Arc;

use super::{scan_from, PickContext};
use crate::backend::Backend;
use crate::hash::{hash_bytes, mix};

/// Slots in the table: a prime well above 100 x the expected backend count.
pub const TABLE_SIZE: usize = 65_537;
/// Bounded rehashes before falling back to a scan.
const REHASHES_MAX: u64 = 20;

/// A Maglev table built for one backend list.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Fills the table for `backends` (identified by their address).
    pub fn new(backends: &[Arc<Backend>]) -> Maglev {
        let m = TABLE_SIZE as u64;
        let mut table = vec![u32::MAX; TABLE_SIZE];
        if backends.is_empty() {
            return Maglev { table };
        }
        let permutations: Vec<(u64, u64)> = backends
            .iter()
            .map(|backend| {
                let name = backend.addr.to_string();
                let offset = hash_bytes(name.as_bytes()) % m;
                let skip = mix(hash_bytes(name.as_bytes()) ^ 0x5bd1_e995) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; backends.len()];
        let mut filled = 0;
        // Invariant: every turn fills exactly one empty slot, so this ends after TABLE_SIZE turns.
        'fill: loop {
            for (index, backend) in backends.iter().enumerate() {
                for _ in 0..backend.weight {
                    let (offset, skip) = permutations[index];
                    let mut slot = ((offset + next[index] * skip) % m) as usize;
                    while table[slot] != u32::MAX {
                        next[index] += 1;
                        slot = ((offset + next[index] * skip) % m) as usize;
                    }
                    table[slot] = index as u32;
                    next[index] += 1;
                    filled += 1;
                    if filled == TABLE_SIZE {
                        break 'fill;
                    }
                }
            }
        }
        Maglev { table }
    }

    /// The backend owning the key's slot, or a rehash when it is unavailable.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        let mut hash = ctx.key_hash;
        for _ in 0..REHASHES_MAX {
            let index = self.table[(hash % TABLE_SIZE as u64) as usize] as usize;
            if index < backends.len() && ctx.eligible(backends, index) {
                return Some(index);
            }
            hash = mix(hash.wrapping_add(1));
        }
        scan_from(
            backends,
            ctx,
            (ctx.key_hash % backends.len() as u64) as usize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, ctx};

    fn owners(list: &[Arc<Backend>], keys: u64) -> Vec<std::net::SocketAddr> {
        let maglev = Maglev::new(list);
        (0..keys)
            .map(|key| {
                let ctx = PickContext {
                    key_hash: hash_bytes(format!("user-{key}").as_bytes()),
                    ..ctx()
                };
                list[maglev.pick(list, &ctx).expect("pick")].addr
            })
            .collect()
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_of_keys() {
        for n in [3usize, 5, 10] {
            let all = backends(&vec![1; n]);
            let before = owners(&all, 100_000);
            let mut fewer = all.clone();
            fewer.remove(n / 2);
            let after = owners(&fewer, 100_000);
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            let bound = 100_000.0 * (1.0 / n as f64 + 0.05);
            assert!((moved as f64) <= bound, "n={n}: moved {moved} > {bound}");
            // The keys of the removed backend had to move; they are most of the moves.
            let owned = before.iter().filter(|a| **a == all[n / 2].addr).count();
            assert!(moved >= owned, "n={n}: moved {moved} < owned {owned}");
        }
    }

    #[test]
    fn table_shares_follow_weights() {
        let list = backends(&[1, 1, 2]);
        let maglev = Maglev::new(&list);
        let mut counts = [0usize; 3];
        for &index in &maglev.table {
            counts[index as usize] += 1;
        }
        let quarter = TABLE_SIZE / 4;
        assert!(
            counts[0].abs_diff(quarter) < 200 && counts[2].abs_diff(2 * quarter) < 400,
            "{counts:?}"
        );
    }

    #[test]
    fn down_backend_moves_only_its_own_keys() {
        let list = backends(&[1, 1, 1, 1]);
        let before = owners(&list, 10_000);
        list[0].set_healthy(false, 1);
        let after = owners(&list, 10_000);
        for (old, new) in before.iter().zip(&after) {
            if *old != list[0].addr {
                assert_eq!(old, new);
            } else {
                assert_ne!(*new, list[0].addr);
            }
        }
    }
}
