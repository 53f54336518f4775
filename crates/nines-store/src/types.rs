//! The request, response and event types of the MVCC store. They mirror etcd's
//! v3 messages field for field so the server converts them one to one, and they
//! are serde types because commands travel through the Raft log.

use serde::{Deserialize, Serialize};

/// A key with its value and the revisions that describe its history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key bytes.
    pub key: Vec<u8>,
    /// Revision of the put that created the key (in its current generation).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Number of writes since creation; 1 for a new key, reset by deletion.
    pub version: i64,
    /// The value bytes (empty with `keys_only`).
    pub value: Vec<u8>,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// Sort order of a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Key order, ascending (the default, no sort needed).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// Field a range is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    /// By key.
    #[default]
    Key,
    /// By version.
    Version,
    /// By create revision.
    Create,
    /// By mod revision.
    Mod,
    /// By value bytes.
    Value,
}

/// A read over `[key, range_end)` with etcd's conventions: an empty
/// `range_end` means the single key, `range_end == [0]` means every key
/// `>= key`, and `key == [0] && range_end == [0]` means all keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// First key of the range.
    pub key: Vec<u8>,
    /// End of the range, exclusive (see the type's doc for conventions).
    pub range_end: Vec<u8>,
    /// Maximum number of keys returned; 0 is no limit.
    pub limit: i64,
    /// Read at this revision; 0 or less is the current revision.
    pub revision: i64,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Leave values out.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Lower bound on mod_revision, 0 for none.
    pub min_mod_revision: i64,
    /// Upper bound on mod_revision, 0 for none.
    pub max_mod_revision: i64,
    /// Lower bound on create_revision, 0 for none.
    pub min_create_revision: i64,
    /// Upper bound on create_revision, 0 for none.
    pub max_create_revision: i64,
}

/// Result of a range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// Matching keys, sorted and limited as asked.
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result.
    pub more: bool,
    /// Number of keys in the range (before `limit`).
    pub count: i64,
}

/// Write one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key; must not be empty.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none; must exist.
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (key must exist).
    pub ignore_lease: bool,
}

/// Result of a put.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The previous key-value, when asked and present.
    pub prev_kv: Option<KeyValue>,
}

/// Delete `[key, range_end)` (same conventions as [`RangeRequest`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// End of the range, exclusive.
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// Result of a delete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the key's field to the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    /// Equal.
    Equal,
    /// Greater than.
    Greater,
    /// Less than.
    Less,
    /// Not equal.
    NotEqual,
}

/// The field a compare looks at, with the value it is compared to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's version (0 when absent).
    Version(i64),
    /// The key's create revision (0 when absent).
    CreateRevision(i64),
    /// The key's mod revision (0 when absent).
    ModRevision(i64),
    /// The key's value (an absent key fails every value compare).
    Value(Vec<u8>),
    /// The key's lease (0 when absent or unleased).
    Lease(i64),
}

/// One compare of a transaction, over one key or a range of keys (all must hold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The relation.
    pub result: CompareResult,
    /// Field and value.
    pub target: CompareTarget,
    /// The key.
    pub key: Vec<u8>,
    /// Optional range end, with the range conventions.
    pub range_end: Vec<u8>,
}

/// One operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// The result of one operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    /// A read's result.
    Range(RangeResponse),
    /// A write's result.
    Put(PutResponse),
    /// A delete's result.
    DeleteRange(DeleteRangeResponse),
    /// A nested transaction's result.
    Txn(TxnResponse),
}

/// An atomic transaction: if every compare holds, run `success`, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    /// Compares, all of which must hold.
    pub compare: Vec<Compare>,
    /// Operations when they hold.
    pub success: Vec<RequestOp>,
    /// Operations when they do not.
    pub failure: Vec<RequestOp>,
}

/// Result of a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Whether the compares held.
    pub succeeded: bool,
    /// One result per operation of the branch taken.
    pub responses: Vec<ResponseOp>,
}

/// A lease: a TTL that the leader counts down; attached keys go with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease id, never 0.
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl_secs: i64,
}

/// A state-machine command: everything that changes the store goes through
/// Raft as one of these and is applied deterministically on every member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Write a key.
    Put(PutRequest),
    /// Delete keys.
    DeleteRange(DeleteRangeRequest),
    /// Run a transaction.
    Txn(TxnRequest),
    /// Compact history up to `revision`.
    Compact {
        /// Revisions below this are dropped (the key state at it is kept).
        revision: i64,
    },
    /// Create a lease.
    LeaseGrant {
        /// Lease id (chosen by the proposer, never 0).
        id: i64,
        /// TTL in seconds.
        ttl_secs: i64,
    },
    /// Remove a lease and delete its keys in one revision.
    LeaseRevoke {
        /// Lease id.
        id: i64,
    },
    /// Raise or clear an alarm (replicated, as etcd's alarms are).
    Alarm {
        /// Raise or clear.
        action: AlarmAction,
        /// The alarm.
        alarm: AlarmMember,
    },
}

/// What an [`Command::Alarm`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    /// Raise the alarm.
    Activate,
    /// Clear it.
    Deactivate,
}

/// The kinds of alarm (etcd's `AlarmType`, without `NONE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmKind {
    /// The store reached its space quota: writes that add data are refused.
    NoSpace,
    /// A member found its data inconsistent with the others.
    Corrupt,
}

/// One alarm, raised by one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlarmMember {
    /// The member that raised it.
    pub member_id: u64,
    /// The kind.
    pub kind: AlarmKind,
}

/// The response to a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A put's result.
    Put(PutResponse),
    /// A delete's result.
    DeleteRange(DeleteRangeResponse),
    /// A transaction's result.
    Txn(TxnResponse),
    /// Compaction done.
    Compact,
    /// Lease granted.
    LeaseGrant(Lease),
    /// Lease revoked.
    LeaseRevoke,
    /// The alarms the command changed (none when it changed nothing).
    Alarm(Vec<AlarmMember>),
}

/// What happened to one key, as a watcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A put.
    Put,
    /// A delete.
    Delete,
}

/// One change to one key, in revision order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete only `key` and `mod_revision`
    /// (the deleting revision) are set.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev_kv: Option<KeyValue>,
}
