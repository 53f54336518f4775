//! Backups of a nines cluster with pgBackRest's three kinds: a **full** set
//! holds every live key at one revision, a **differential** set the events
//! since the last full, an **incremental** set the events since the last set
//! of any kind. This crate owns the repository layout, the set format
//! (manifest plus zstd-compressed, framed and checksummed record files), chain
//! resolution, verification, retention and the rebuild of a
//! [`nines_store::Store`] from a chain. It talks to a cluster only as an etcd
//! v3 client ([`capture`]); it must not depend on Raft or the server, never
//! prints and never exits: the binary turns a rebuilt store into data dirs.
//!
//! A set is written under a temporary name and published by one rename, so a
//! crash leaves the repository as it was; every file's SHA-256 is in the
//! manifest, and the manifest carries its own SHA-256, so one flipped byte
//! anywhere is found by [`verify`] (which names the file) and refused by
//! [`restore`].
#![forbid(unsafe_code)]

pub mod capture;
pub mod catalog;
mod error;
pub mod format;
pub mod manifest;
pub mod repo;
pub mod restore;
pub mod status;

pub use capture::{create_backup, CreateOptions, Progress};
pub use catalog::{list, prune, resolve_chain, verify, PruneOptions, PruneReport, VerifyReport};
pub use error::BackupError;
pub use manifest::{BackupKind, FileEntry, Manifest};
pub use repo::{LocalRepository, Repository, Staging};
pub use restore::{restore_store, RestoreSummary};

/// Largest record a data file may hold (a key of 1.5 MiB plus its value
/// fits many times over); a larger length prefix is corruption.
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Keys read by the first Range page of a full backup; later pages aim at
/// [`RANGE_PAGE_BYTES`] from the sizes seen, within [`RANGE_PAGE_KEYS_MAX`].
/// A page over [`CLIENT_DECODE_BYTES_MAX`] is retried at half the size.
pub const RANGE_PAGE_KEYS_FIRST: i64 = 1000;

/// Most keys in one Range page.
pub const RANGE_PAGE_KEYS_MAX: i64 = 100_000;

/// Bytes of keys and values a Range page aims at.
pub const RANGE_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest gRPC message the backup client decodes (a Range page or a watch
/// response).
pub const CLIENT_DECODE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// zstd level of data files: level 3 is zstd's default, fast to write and
/// within a few percent of higher levels on key-value data.
pub const ZSTD_LEVEL: i32 = 3;

/// TTL given on restore to a lease a key was attached to but whose TTL the
/// backup could not read (granted and revoked between two lease listings).
pub const LEASE_TTL_UNKNOWN_SECS: i64 = 60;

/// Name of the manifest file of a set.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Name of the data file holding keys (full) or events (diff, incr).
pub const DATA_FILE: &str = "data.zst";
/// Name of the data file holding the leases alive at the set's revision.
pub const LEASES_FILE: &str = "leases.zst";

const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(RANGE_PAGE_KEYS_FIRST > 0 && RANGE_PAGE_KEYS_FIRST <= RANGE_PAGE_KEYS_MAX);
const _: () = assert!(RANGE_PAGE_BYTES * 4 <= CLIENT_DECODE_BYTES_MAX);

#[cfg(test)]
mod tests;
