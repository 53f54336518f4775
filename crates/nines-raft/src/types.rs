//! The openraft type configuration of nines: what a log entry carries
//! (a batch of store commands), what applying it answers, and what a member
//! is. Everything here travels between members, so it is serde.

use std::fmt;
use std::io::Cursor;

use nines_store::{Command, CommandResponse, StoreError};
use serde::{Deserialize, Serialize};

/// A member's id: derived from its name and first peer URL (see [`crate::member_id`]).
pub type NodeId = u64;

/// What the cluster knows of a member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// The member's `--name`.
    pub name: String,
    /// URLs other members reach its Raft transport at.
    pub peer_urls: Vec<String>,
    /// URLs clients reach its gRPC API at (published once the member runs).
    pub client_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

/// One Raft log entry's payload: client commands proposed together. Batching
/// lets one fsync and one replication round carry many client writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The commands, applied in order, each with its own revision.
    pub commands: Vec<Command>,
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {}", self.commands.len())
    }
}

/// The class of a command that the store refused; the server maps it to a
/// gRPC code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyErrorKind {
    /// Read or compaction below the compaction revision.
    Compacted,
    /// A revision past the current one.
    FutureRevision,
    /// The lease does not exist.
    LeaseNotFound,
    /// The lease exists already.
    LeaseExists,
    /// Any other refusal of a malformed or impossible request.
    InvalidArgument,
    /// The NOSPACE alarm is raised.
    NoSpace,
}

/// A store refusal as it travels in a [`BatchResult`]: the kind and etcd's message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    /// The class of error.
    pub kind: ApplyErrorKind,
    /// etcd's message, e.g. `etcdserver: requested lease not found`.
    pub message: String,
}

impl From<&StoreError> for ApplyError {
    fn from(e: &StoreError) -> Self {
        let kind = match e {
            StoreError::Compacted { .. } => ApplyErrorKind::Compacted,
            StoreError::FutureRevision { .. } => ApplyErrorKind::FutureRevision,
            StoreError::LeaseNotFound { .. } => ApplyErrorKind::LeaseNotFound,
            StoreError::LeaseExists { .. } => ApplyErrorKind::LeaseExists,
            StoreError::NoSpace => ApplyErrorKind::NoSpace,
            _ => ApplyErrorKind::InvalidArgument,
        };
        ApplyError {
            kind,
            message: e.to_string(),
        }
    }
}

/// The outcome of one applied command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Store revision after the command.
    pub revision: i64,
    /// The raft term of the leader that committed it (for response headers).
    pub raft_term: u64,
    /// The command's response, or the store's refusal (nothing changed then).
    pub result: Result<CommandResponse, ApplyError>,
}

/// What applying one log entry answers: one outcome per command of its batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// Outcomes, in the batch's order.
    pub outcomes: Vec<Outcome>,
}

openraft::declare_raft_types!(
    /// The nines Raft type configuration.
    pub TypeConfig:
        D = Batch,
        R = BatchResult,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry of nines.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of nines.
pub type LogId = openraft::LogId<NodeId>;
/// A vote of nines.
pub type Vote = openraft::Vote<NodeId>;
/// The membership as stored with the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;
/// The openraft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;
