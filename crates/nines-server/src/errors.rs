//! The one place where domain errors become gRPC statuses, with the codes and
//! messages etcd clients match on (their retry logic depends on them).

use nines_raft::{ApplyError, ApplyErrorKind, TransferError, WriteError};
use nines_store::StoreError;
use tonic::{Code, Status};

/// etcd's "request is too large".
pub fn request_too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

/// etcd's "too many operations in txn request".
pub fn too_many_ops() -> Status {
    Status::invalid_argument("etcdserver: too many operations in txn request")
}

/// etcd's "key is not provided".
pub fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

/// A store refusal.
pub fn store(e: &StoreError) -> Status {
    apply(&ApplyError::from(e))
}

/// A store refusal that came back through Raft.
pub fn apply(e: &ApplyError) -> Status {
    let code = match e.kind {
        ApplyErrorKind::Compacted | ApplyErrorKind::FutureRevision => Code::OutOfRange,
        ApplyErrorKind::LeaseNotFound => Code::NotFound,
        ApplyErrorKind::LeaseExists => Code::FailedPrecondition,
        ApplyErrorKind::InvalidArgument => Code::InvalidArgument,
        ApplyErrorKind::NoSpace => Code::ResourceExhausted,
    };
    Status::new(code, e.message.clone())
}

/// A write or read that Raft could not complete. All are `Unavailable`, which
/// etcd clients retry on another endpoint.
pub fn write(e: &WriteError) -> Status {
    Status::unavailable(e.to_string())
}

/// A leader move that did not happen, with etcd's codes (`FailedPrecondition`
/// for not-leader and a bad transferee, `DeadlineExceeded` for a timeout).
pub fn transfer(e: &TransferError) -> Status {
    let code = match e {
        TransferError::NotLeader | TransferError::BadTransferee => Code::FailedPrecondition,
        TransferError::Timeout => Code::DeadlineExceeded,
        TransferError::Stopped => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

/// etcd's "database space exceeded" (the NOSPACE alarm is raised).
pub fn no_space() -> Status {
    Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
}
