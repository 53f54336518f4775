//! IP hash: the client address's hash modulo the backend list. With the same
//! backends in the same order the mapping is the same in every process and
//! after every reload (the hash is not randomly seeded). A down backend's
//! clients are spread over the others by rehashing, not piled on a neighbour.

use std::sync::Arc;

use super::{scan_from, PickContext};
use crate::backend::Backend;
use crate::hash::mix;

/// Bounded rehashes before falling back to a scan.
const REHASHES_MAX: u64 = 20;

/// IP hash.
#[derive(Debug, Default)]
pub struct IpHash;

impl IpHash {
    /// The backend the key hash maps to, or a rehash when it is unavailable.
    pub fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
        let n = backends.len() as u64;
        let mut hash = ctx.key_hash;
        for _ in 0..REHASHES_MAX {
            let index = (hash % n) as usize;
            if ctx.eligible(backends, index) {
                return Some(index);
            }
            hash = mix(hash.wrapping_add(1));
        }
        scan_from(backends, ctx, (ctx.key_hash % n) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, ctx};
    use crate::balance::Balancer;
    use crate::config::BalanceKind;
    use crate::hash::hash_ip;
    use std::net::IpAddr;

    fn client(i: u32) -> u64 {
        hash_ip(IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
    }

    #[test]
    fn same_backends_give_the_same_mapping_after_a_reload() {
        let before = backends(&[1, 1, 1, 1]);
        let old = Balancer::new(BalanceKind::IpHash, &before);
        // A reload builds new backend objects and a new balancer from the same list.
        let after = backends(&[1, 1, 1, 1]);
        let new = Balancer::new(BalanceKind::IpHash, &after);
        for i in 0..10_000 {
            let ctx = PickContext {
                key_hash: client(i),
                ..ctx()
            };
            assert_eq!(old.pick(&before, &ctx), new.pick(&after, &ctx));
        }
    }

    #[test]
    fn one_client_always_lands_on_one_backend_and_clients_spread() {
        let list = backends(&[1, 1, 1]);
        let mut counts = [0; 3];
        for i in 0..3000 {
            let ctx = PickContext {
                key_hash: client(i),
                ..ctx()
            };
            let first = IpHash.pick(&list, &ctx).expect("pick");
            assert_eq!(IpHash.pick(&list, &ctx), Some(first));
            counts[first] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn down_backend_clients_move_and_others_stay() {
        let list = backends(&[1, 1, 1]);
        let before: Vec<_> = (0..1000)
            .map(|i| {
                IpHash.pick(
                    &list,
                    &PickContext {
                        key_hash: client(i),
                        ..ctx()
                    },
                )
            })
            .collect();
        list[1].set_healthy(false, 1);
        for (i, old) in before.iter().enumerate() {
            let now = IpHash.pick(
                &list,
                &PickContext {
                    key_hash: client(i as u32),
                    ..ctx()
                },
            );
            assert_ne!(now, Some(1));
            if *old != Some(1) {
                assert_eq!(now, *old, "clients of healthy backends keep their backend");
            }
        }
    }
}
