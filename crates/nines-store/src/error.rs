//! The store's error type. Display strings are etcd's exact messages because
//! clients match on them; the variants carry what a caller needs to act.
//! This module owns no state and must not grow `String` payloads beyond the
//! human-facing snapshot reason.

/// Everything a store operation can refuse or fail with.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The read or watch asked for a revision older than the last compaction.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compaction revision.
        compacted: i64,
    },
    /// The read asked for a revision the store has not reached.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// A request carried an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// The lease does not exist (also returned for a grant of lease id 0, as etcd's lessor does).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound {
        /// The lease id asked for.
        id: i64,
    },
    /// A grant named a lease id that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists {
        /// The lease id asked for.
        id: i64,
    },
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A transaction branch puts one key twice, or puts a key it also deletes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A transaction given to the read-only path would write.
    #[error("etcdserver: a read-only transaction cannot contain writes")]
    TxnHasWrites,
    /// A put with `ignore_value` also carried a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` also carried a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A lease grant asked for a TTL above [`crate::LEASE_TTL_SECS_MAX`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge {
        /// The TTL asked for, in seconds.
        ttl_secs: i64,
    },
    /// The NOSPACE alarm is raised: writes that add data are refused until
    /// an operator frees space and disarms it.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A snapshot failed verification; nothing was loaded.
    #[error("snapshot is corrupt: {reason}")]
    SnapshotCorrupt {
        /// What is wrong, for a human.
        reason: String,
    },
    /// The store was compacted or replaced while a snapshot of it was being
    /// written in steps; the snapshot is abandoned and can be started again.
    #[error("the store was compacted or replaced while a snapshot of revision {revision} was written; start it again")]
    SnapshotDisturbed {
        /// The revision the abandoned snapshot stood for.
        revision: i64,
    },
    /// Reading or writing a snapshot stream failed.
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
}
