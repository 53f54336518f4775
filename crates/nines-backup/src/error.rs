//! The error type of every operation of this crate: what went wrong, on which
//! set or file, so the command line can say what to do.

use std::path::PathBuf;

/// Errors of backup, verify, restore and prune.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The repository path exists but is not a directory.
    #[error("repository {path} is not a directory")]
    RepoNotDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// Another process holds the repository lock.
    #[error("repository {path} is locked by another backup command")]
    RepoLocked {
        /// The lock file.
        path: PathBuf,
    },
    /// No published set has this id.
    #[error("no backup {id} in the repository")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A file of a set does not match its manifest or does not decode.
    #[error("backup {id}: file {file} is corrupt: {reason}")]
    Corrupt {
        /// The set.
        id: String,
        /// The file, as a path inside the repository.
        file: String,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// A set names a parent that is not in the repository.
    #[error("backup {id} depends on {parent}, which is missing from the repository")]
    MissingParent {
        /// The set.
        id: String,
        /// Its parent.
        parent: String,
    },
    /// A chain link does not fit (cluster, revisions or kinds).
    #[error("backup {id} does not follow {parent}: {reason}")]
    BrokenLink {
        /// The set.
        id: String,
        /// Its parent.
        parent: String,
        /// Why.
        reason: LinkFault,
    },
    /// The repository holds backups of another cluster.
    #[error(
        "the repository holds backups of cluster {repo_cluster:x}, but the endpoints serve cluster \
         {source_cluster:x}; use another repository"
    )]
    ClusterMismatch {
        /// Cluster of the repository's sets.
        repo_cluster: u64,
        /// Cluster the endpoints belong to.
        source_cluster: u64,
    },
    /// A differential or incremental backup has no set to build on.
    #[error("a {kind} backup needs an earlier full backup in the repository; take a full first")]
    NoBase {
        /// The kind asked for.
        kind: crate::BackupKind,
    },
    /// History the next differential or incremental needs was compacted.
    #[error(
        "this backup must be a full: it needs the history from revision {needed}, but the \
         cluster compacted it up to revision {compacted}"
    )]
    MustBeFull {
        /// First revision the set would need.
        needed: i64,
        /// The cluster's compaction revision.
        compacted: i64,
    },
    /// The cluster's revision is below the parent's: not the cluster the chain was taken of.
    #[error(
        "the cluster is at revision {current}, below revision {parent_end} of backup {parent}; \
         it is not the cluster this chain was taken of"
    )]
    RevisionBehind {
        /// The parent set.
        parent: String,
        /// The parent's revision.
        parent_end: i64,
        /// The cluster's revision.
        current: i64,
    },
    /// The requested restore revision is outside the chain.
    #[error(
        "--to-revision {requested} is outside the chain of backup {id}, which covers revisions \
         {first}..={last}"
    )]
    RevisionOutsideChain {
        /// The set restored.
        id: String,
        /// The revision asked for.
        requested: i64,
        /// The full's revision.
        first: i64,
        /// The set's revision.
        last: i64,
    },
    /// The cluster answered in a way the backup cannot use (a watch that
    /// ended early or skipped revisions, a response without a header).
    #[error("unexpected answer from the cluster: {reason}")]
    Protocol {
        /// What happened.
        reason: &'static str,
    },
    /// The cluster did not answer within the backup's deadline.
    #[error("the backup did not finish within {secs} s")]
    Timeout {
        /// The deadline.
        secs: u64,
    },
    /// An etcd API call failed.
    #[error("etcd API: {0}")]
    Client(#[from] etcd_client::Error),
    /// A manifest could not be encoded.
    #[error("encoding the manifest: {0}")]
    Encode(#[source] serde_json::Error),
    /// Applying a restored record to the store failed.
    #[error("rebuilding the store: {0}")]
    Store(#[from] nines_store::StoreError),
}

/// What is wrong with a corrupt file.
#[derive(Debug, thiserror::Error)]
pub enum CorruptReason {
    /// The file is absent.
    #[error("missing")]
    Missing,
    /// Its SHA-256 differs from the manifest's.
    #[error("sha256 mismatch (manifest {expected}, file {actual})")]
    Checksum {
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// Its size differs from the manifest's.
    #[error("size mismatch (manifest {expected} bytes, file {actual} bytes)")]
    Size {
        /// From the manifest.
        expected: u64,
        /// Of the file.
        actual: u64,
    },
    /// The manifest's own checksum line is absent or wrong.
    #[error("manifest checksum mismatch")]
    ManifestChecksum,
    /// The manifest does not parse.
    #[error("manifest does not parse: {0}")]
    ManifestParse(#[source] serde_json::Error),
    /// A record's frame or checksum is bad.
    #[error("record {index}: {what}")]
    Record {
        /// Index of the record in the file.
        index: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// The zstd stream does not decode.
    #[error("zstd: {0}")]
    Decompress(#[source] std::io::Error),
    /// The record counts differ from the manifest's.
    #[error("holds {actual} records, the manifest says {expected}")]
    Count {
        /// From the manifest.
        expected: u64,
        /// In the file.
        actual: u64,
    },
    /// The manifest's id is not its directory's name.
    #[error("manifest names backup {0}")]
    WrongId(String),
}

/// Why a set does not follow its parent.
#[derive(Debug, thiserror::Error)]
pub enum LinkFault {
    /// The parent belongs to another cluster.
    #[error("the parent is of cluster {parent:x}, the set of cluster {child:x}")]
    Cluster {
        /// Parent's cluster.
        parent: u64,
        /// Set's cluster.
        child: u64,
    },
    /// The set does not start right after its parent's revision.
    #[error("the set starts at revision {start}, the parent ends at {parent_end}")]
    Revision {
        /// The set's first revision.
        start: i64,
        /// The parent's last revision.
        parent_end: i64,
    },
    /// A differential's parent is not a full, or a full has a parent.
    #[error("a {child} set cannot build on a {parent} set")]
    Kind {
        /// Parent's kind.
        parent: crate::BackupKind,
        /// Set's kind.
        child: crate::BackupKind,
    },
    /// Following parents loops.
    #[error("the chain loops")]
    Cycle,
}

impl BackupError {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BackupError {
        BackupError::Io {
            path: path.into(),
            source,
        }
    }
}
