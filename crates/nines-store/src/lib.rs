//! The MVCC key-value state machine with etcd v3 semantics.
//! It owns keys, revisions, leases and the event history that watches replay;
//! it must not touch the network, Raft or the clock.

pub mod types;
pub use types::*;
