//! The MVCC key-value state machine with etcd v3 semantics.
//! It owns keys, revisions, leases and the event history that watches replay;
//! it must not touch the network, Raft or the clock.
//!
//! [`Store::apply`] is the only way to change a store: the Raft layer feeds
//! it every committed [`Command`] in log order, and because apply is
//! deterministic every member holds the same state at the same index. Reads
//! ([`Store::range`], [`Store::txn_read`], [`Store::changes`]) never mutate.
//! [`Store::write_snapshot`] and [`Store::read_snapshot`] move the whole
//! state, history included, between members.
//!
//! The semantics are etcd 3.4's, with these deliberate differences, each
//! chosen so that every key is written at most once per revision and no
//! history a reader may still ask for is lost:
//! - The duplicate-key check of a transaction treats a delete with
//!   `range_end == [0]` as the range `>= key` it deletes, and refuses a put
//!   in one nested transaction followed by a delete covering that key in a
//!   later sibling (etcd accepts both and writes the key twice).
//! - Compaction keeps a tombstone written exactly at the compaction
//!   revision until the next compaction, so [`Store::changes`] from the
//!   compaction revision (which etcd allows) still reports that delete.
//! - Range results sorted by a non-key target keep key order among equal
//!   values (etcd's sort is not stable).
//! - [`Store::hash_kv`] accepts the compaction revision itself.
//!
//! Lease TTLs are stored as granted: clamping to a minimum TTL is the
//! proposer's job, as it depends on the cluster's election timeout.
#![forbid(unsafe_code)]

mod codec;
mod error;
mod history;
mod invariants;
mod read;
mod snapshot;
mod store;
mod txn;
pub mod types;

pub use error::StoreError;
pub use snapshot::SnapshotWriter;
pub use store::{added_bytes, adds_data, Applied, Store};
pub use types::*;

/// Largest lease TTL a grant accepts, in seconds (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_SECS_MAX: i64 = 9_000_000_000;

/// Largest snapshot record accepted on load. A record holds one key's
/// history (split into chunks of about [`SNAPSHOT_CHUNK_BYTES`]), so only a
/// single value larger than this could exceed it.
pub const SNAPSHOT_RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Value bytes after which a key's history continues in a new snapshot record.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

const _: () = assert!(SNAPSHOT_CHUNK_BYTES < SNAPSHOT_RECORD_BYTES_MAX);
const _: () = assert!(SNAPSHOT_RECORD_BYTES_MAX <= u32::MAX as usize);

#[cfg(test)]
mod tests;
