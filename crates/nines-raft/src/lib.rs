//! The Raft side of a nines member, on openraft: the durable log
//! ([`log_store`]), the state machine over `nines-store` ([`state_machine`]),
//! the peer transport ([`network`], `peer_service`, with the write
//! coalescing of [`coalesce`] that the client listener uses too) and the member handle
//! ([`RaftNode`]) that the server layer uses to write and to read
//! linearizably. It knows nothing of the client protocol.

pub mod coalesce;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod stats;
pub mod transfer;
pub mod types;

mod identity;
mod peer_service;

/// Generated peer protocol.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("ninespeer");
}

pub use membership::{ChangeOutcome, MemberChange, MemberInfo, MembershipError};
pub use node::{ClusterState, NodeConfig, NodeStatus, RaftNode, StartError, Timing, WriteError};
pub use openraft::ServerState;
pub use state_machine::AppliedEvents;
pub use transfer::TransferError;
pub use types::*;

/// The id a member is known by: FNV-1a over its name and first peer URL, so
/// every member computes the same ids from `--initial-cluster`.
pub fn member_id(name: &str, peer_url: &str) -> NodeId {
    fnv(name.bytes().chain([0u8]).chain(peer_url.bytes())).max(1)
}

/// The cluster id: FNV-1a over the founding members' ids, in order.
pub fn cluster_id_of(members: &std::collections::BTreeMap<NodeId, MemberNode>) -> u64 {
    fnv(members.keys().flat_map(|id| id.to_le_bytes())).max(1)
}

fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
