//! The replicated state machine: a [`nines_store::Store`] that applies
//! committed batches, plus the snapshot that stands for the applied prefix of
//! the log. It owns `DATA_DIR/snap/` and nothing else.
//!
//! The store lives in memory. What makes it durable is the pair (snapshot on
//! disk, Raft log): on restart the snapshot is loaded and openraft re-applies
//! the committed entries after it. The log is never purged past the last
//! snapshot written here, so nothing applied can be lost.

use std::fs::{self, File};
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use nines_store::{Event, Store, StoreError};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::types::{
    ApplyError, BatchResult, Entry, LogId, Outcome, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// Capacity of the applied-events broadcast; a receiver that falls further
/// behind is told it lagged and must catch up from the store's history.
pub const EVENTS_CHANNEL_MAX: usize = 4096;

/// Bytes of values a snapshot encodes per hold of the store's read lock;
/// applying waits at most for one step (well under a millisecond).
pub const SNAPSHOT_STEP_BYTES: usize = 256 * 1024;

/// Free capacity the snapshot buffer has before each step: a step writes
/// its 256 KiB of values plus framing, or one key's history whole, so in
/// all but that rare case it never grows the buffer while the lock is held.
pub const SNAPSHOT_SPARE_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of a snapshot file written between two flushes to disk.
pub const SNAPSHOT_SYNC_BYTES: usize = 4 * 1024 * 1024;

/// Events applied at one revision range, as watchers receive them.
#[derive(Clone, Debug)]
pub struct AppliedEvents {
    /// Store revision after these events.
    pub revision: i64,
    /// The events, in order.
    pub events: Arc<Vec<Event>>,
}

/// State shared between the state machine (driven by openraft) and readers.
#[derive(Debug)]
pub struct SmShared {
    /// The MVCC store. Readers take the read lock; only `apply` writes.
    pub store: RwLock<Store>,
    /// The last applied log id and membership.
    pub applied: RwLock<(Option<LogId>, StoredMembership)>,
    /// Index of the last applied entry, readable without a lock.
    pub applied_index: AtomicU64,
    /// Applied events, for watches.
    pub events: broadcast::Sender<AppliedEvents>,
    /// Bumped after the applied membership changed (a membership entry
    /// applied, or a snapshot installed): what watches the membership waits
    /// on this rather than on every openraft metrics change.
    membership_applied: tokio::sync::watch::Sender<u64>,
    /// Held for reading while a snapshot is encoded and written, and for writing by the
    /// two changes an encoding cannot run across: applying a compaction and
    /// installing a snapshot from the leader. A snapshot is encoded in steps
    /// of [`SNAPSHOT_STEP_BYTES`], each under the store's read lock, so
    /// everything else is applied between the steps and the store keeps
    /// answering (the store appends to key histories, so the encoding still
    /// writes the state of the moment it started). Those two wait
    /// asynchronously until the encoding ends; a write lock queued behind a
    /// long-held read lock would instead block the runtime thread, and with
    /// it the member's heartbeats, votes and reads.
    snapshot_gate: Arc<tokio::sync::RwLock<()>>,
    snap_dir: PathBuf,
    snapshot_seq: AtomicU64,
}

/// What a snapshot file holds besides the store.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta,
}

/// The state machine as openraft drives it.
#[derive(Clone)]
pub struct StateMachine {
    /// Shared state.
    pub shared: Arc<SmShared>,
}

/// Why the state machine could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SmOpenError {
    /// The snapshot file could not be read.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The snapshot file is damaged.
    #[error("snapshot {path} is corrupt: {reason}; the member refuses to start. Remove this member's data dir and let it rejoin, or restore from a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl StateMachine {
    /// Loads the last snapshot under `dir/snap` (or starts empty).
    pub fn open(dir: &Path) -> Result<StateMachine, SmOpenError> {
        let snap_dir = dir.join("snap");
        fs::create_dir_all(&snap_dir).map_err(|source| SmOpenError::Io {
            path: snap_dir.clone(),
            source,
        })?;
        let path = snap_dir.join("current.snap");
        let (store, applied) = match fs::read(&path) {
            Ok(bytes) => {
                let (meta, store) =
                    decode_snapshot(&bytes).map_err(|reason| SmOpenError::Corrupt {
                        path: path.clone(),
                        reason,
                    })?;
                (store, (meta.last_log_id, meta.last_membership))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (Store::new(), (None, StoredMembership::default()))
            }
            Err(source) => return Err(SmOpenError::Io { path, source }),
        };
        let (events, _) = broadcast::channel(EVENTS_CHANNEL_MAX);
        let applied_index = applied.0.map(|l| l.index).unwrap_or(0);
        Ok(StateMachine {
            shared: Arc::new(SmShared {
                store: RwLock::new(store),
                applied: RwLock::new(applied),
                applied_index: AtomicU64::new(applied_index),
                events,
                membership_applied: tokio::sync::watch::Sender::new(0),
                snapshot_gate: Arc::new(tokio::sync::RwLock::new(())),
                snap_dir,
                snapshot_seq: AtomicU64::new(0),
            }),
        })
    }
}

/// The start of a snapshot file: `len | crc32 | header`, followed by the
/// store's own checksummed format.
fn snapshot_prefix(meta: &SnapshotMeta, store: &Store) -> Result<Vec<u8>, io::Error> {
    let header =
        bincode::serialize(&SnapshotHeader { meta: meta.clone() }).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(header.len() + 1024 + store.approx_size_bytes() as usize);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    out.extend_from_slice(&header);
    Ok(out)
}

/// Encodes a snapshot of a store nothing else changes.
fn encode_snapshot(meta: &SnapshotMeta, store: &Store) -> Result<Vec<u8>, io::Error> {
    let mut out = snapshot_prefix(meta, store)?;
    store
        .write_snapshot(&mut out)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(out)
}

fn store_io(e: StoreError) -> io::Error {
    match e {
        StoreError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, Store), String> {
    let (meta, store, used) = decode_snapshot_prefix(bytes)?;
    if used != bytes.len() {
        return Err("trailing bytes after the store".into());
    }
    Ok((meta, store))
}

/// Block size exported snapshot files are padded to before their SHA-256
/// trailer. etcd's snapshot files are bolt pages (multiples of 512 bytes)
/// plus a SHA-256, and etcdctl checks a downloaded file has that shape.
pub const EXPORT_BLOCK_BYTES: usize = 512;
/// Length of the SHA-256 trailer of an exported snapshot.
pub const EXPORT_DIGEST_BYTES: usize = 32;

/// Reads an exported snapshot file (see [`SmShared::export_snapshot`]):
/// checks its SHA-256 trailer and padding, and decodes the meta and store.
pub fn read_exported_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, Store), String> {
    use sha2::Digest;
    let body_len = bytes
        .len()
        .checked_sub(EXPORT_DIGEST_BYTES)
        .ok_or("shorter than its checksum")?;
    let (body, digest) = bytes.split_at(body_len);
    if sha2::Sha256::digest(body).as_slice() != digest {
        return Err("sha256 checksum mismatch".into());
    }
    let (meta, store, used) = decode_snapshot_prefix(body)?;
    if body.len() - used >= EXPORT_BLOCK_BYTES || body[used..].iter().any(|b| *b != 0) {
        return Err("unexpected bytes after the store".into());
    }
    Ok((meta, store))
}

/// Writes `dir/snap/current.snap` for a founding member of a new cluster
/// restored from an exported snapshot: the file's store, with `members` as
/// the membership, at the file's applied index under term 0 (so the new
/// cluster's first leader, of term 1 or more, appends after it). Refuses a
/// dir that already holds a snapshot.
pub fn restore_exported_snapshot(
    dir: &Path,
    exported: &[u8],
    members: std::collections::BTreeMap<crate::types::NodeId, crate::types::MemberNode>,
) -> Result<(), String> {
    let (meta, store) = read_exported_snapshot(exported)?;
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0).max(1);
    let log_id = LogId::new(openraft::CommittedLeaderId::new(0, 0), index);
    let voters = members.keys().copied().collect();
    let membership = openraft::Membership::new(vec![voters], members);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("restored-{index}"),
    };
    let bytes = encode_snapshot(&meta, &store).map_err(|e| e.to_string())?;
    let snap_dir = dir.join("snap");
    if snap_dir.join("current.snap").exists() {
        return Err(format!("{} already holds a snapshot", snap_dir.display()));
    }
    fs::create_dir_all(&snap_dir).map_err(|e| format!("{}: {e}", snap_dir.display()))?;
    let tmp = snap_dir.join("current.snap.tmp");
    File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, snap_dir.join("current.snap")))
        .and_then(|()| File::open(&snap_dir)?.sync_all())
        .map_err(|e| format!("cannot write the restored snapshot: {e}"))
}

fn decode_snapshot_prefix(bytes: &[u8]) -> Result<(SnapshotMeta, Store, usize), String> {
    let (meta, header_end) = decode_header(bytes)?;
    let mut rest = Cursor::new(&bytes[header_end..]);
    let store = Store::read_snapshot(&mut rest).map_err(|e: StoreError| e.to_string())?;
    Ok((meta, store, header_end + rest.position() as usize))
}

/// The snapshot meta of a snapshot file and where its store part starts;
/// checks the header's own checksum only (the store is checked on load).
fn decode_header(bytes: &[u8]) -> Result<(SnapshotMeta, usize), String> {
    if bytes.len() < 8 {
        return Err("shorter than its header".into());
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4"));
    let header = bytes.get(8..8 + len).ok_or("header cut short")?;
    if crc32fast::hash(header) != crc {
        return Err("header checksum mismatch".into());
    }
    let header: SnapshotHeader =
        bincode::deserialize(header).map_err(|e| format!("undecodable header: {e}"))?;
    Ok((header.meta, 8 + len))
}

/// Whether applying `entry` compacts the store.
fn compacts(entry: &Entry) -> bool {
    match &entry.payload {
        EntryPayload::Normal(batch) => batch
            .commands
            .iter()
            .any(|c| matches!(c, nines_store::Command::Compact { .. })),
        _ => false,
    }
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        io::Error::other(e.to_string()),
    )
}

impl SmShared {
    /// A receiver told each time the applied membership changes; read the
    /// membership itself from [`SmShared::applied`].
    pub fn membership_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.membership_applied.subscribe()
    }

    /// The applied state as a snapshot file for download: the format of
    /// `current.snap`, zero padding to a multiple of [`EXPORT_BLOCK_BYTES`],
    /// then the SHA-256 of everything before it. Blocks on the store lock
    /// for each step of the encoding; a running member calls it through
    /// [`SmShared::export_snapshot_gated`], which keeps compactions and
    /// installs out of the way.
    pub fn export_snapshot(&self) -> io::Result<Vec<u8>> {
        use sha2::Digest;
        let (_, mut bytes) = self.encode_in_steps(
            |last, membership| SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
                snapshot_id: format!("export-{}", last.map(|l| l.index).unwrap_or(0)),
            },
            false,
        )?;
        bytes.resize(bytes.len().next_multiple_of(EXPORT_BLOCK_BYTES), 0);
        let digest = sha2::Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        // Invariant: what is exported reads back (checked twice, as style asks).
        debug_assert!(read_exported_snapshot(&bytes).is_ok());
        Ok(bytes)
    }

    /// [`SmShared::export_snapshot`] off the runtime, with compactions and
    /// snapshot installs held back by the snapshot gate while it encodes.
    pub async fn export_snapshot_gated(self: Arc<Self>) -> io::Result<Vec<u8>> {
        let gate = Arc::clone(&self.snapshot_gate).read_owned().await;
        tokio::task::spawn_blocking(move || {
            let bytes = self.export_snapshot();
            drop(gate);
            bytes
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Encodes the applied state as a snapshot file, the store's keys in
    /// steps of [`SNAPSHOT_STEP_BYTES`] with the store's read lock taken
    /// per step, so applying goes on between them. `meta` names the
    /// snapshot from the applied log id and membership of the moment it
    /// starts. The caller holds the snapshot gate for reading (or owns the
    /// state machine alone), so no compaction or install runs meanwhile.
    /// `paced`: after each step the encoder sleeps as long as the step took,
    /// so a background snapshot takes at most half a core from the member's
    /// runtime and the other processes on the machine (it then takes about
    /// twice as long); a download asked for by a user is not paced.
    fn encode_in_steps(
        &self,
        meta: impl FnOnce(Option<LogId>, StoredMembership) -> SnapshotMeta,
        paced: bool,
    ) -> io::Result<(SnapshotMeta, Vec<u8>)> {
        let (meta, mut writer) = {
            let store = self.store.read().expect("store lock poisoned");
            // `apply` changes both under the store's write lock: read
            // together, they describe the same moment.
            let (last, membership) = self.applied.read().expect("applied lock").clone();
            let meta = meta(last, membership);
            let prefix = snapshot_prefix(&meta, &store)?;
            (meta, store.start_snapshot(prefix).map_err(store_io)?)
        };
        loop {
            let step = std::time::Instant::now();
            // Grow the output here, outside the lock: a step that outgrew it
            // would copy everything encoded so far (a hundred megabytes and
            // more) while applying waits for the lock.
            let out = writer.get_mut();
            if out.capacity() - out.len() < SNAPSHOT_SPARE_BYTES {
                out.reserve(out.len().max(SNAPSHOT_SPARE_BYTES));
            }
            let store = self.store.read().expect("store lock poisoned");
            if writer
                .write_keys(&store, SNAPSHOT_STEP_BYTES)
                .map_err(store_io)?
            {
                break;
            }
            drop(store);
            if paced {
                std::thread::sleep(step.elapsed());
            }
        }
        Ok((meta, writer.finish().map_err(store_io)?))
    }

    /// Writes a snapshot file atomically (temp, fsync, rename, fsync dir).
    /// The file is written and flushed in pieces of [`SNAPSHOT_SYNC_BYTES`]:
    /// written whole and flushed once, a large snapshot would queue its
    /// whole size on the disk at once, ahead of the Raft log's own flushes.
    fn persist(&self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.snap_dir.join("current.snap.tmp");
        {
            let mut f = File::create(&tmp)?;
            for piece in bytes.chunks(SNAPSHOT_SYNC_BYTES) {
                f.write_all(piece)?;
                f.sync_data()?;
            }
            f.sync_all()?;
        }
        fs::rename(&tmp, self.snap_dir.join("current.snap"))?;
        File::open(&self.snap_dir)?.sync_all()
    }

    fn read_current(&self) -> io::Result<Option<Vec<u8>>> {
        match File::open(self.snap_dir.join("current.snap")) {
            Ok(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v)?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        // Compactions and installs wait (asynchronously) until the store is
        // encoded; everything else is applied between the encoding's steps.
        let gate = Arc::clone(&shared.snapshot_gate).read_owned().await;
        // Encoding a large store takes a while: do it off the runtime.
        let res = tokio::task::spawn_blocking(move || -> io::Result<(SnapshotMeta, Vec<u8>)> {
            let seq = shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let encoded = shared.encode_in_steps(
                |last, membership| SnapshotMeta {
                    last_log_id: last,
                    last_membership: membership,
                    snapshot_id: format!(
                        "{}-{}-{seq}",
                        last.map(|l| l.leader_id.term).unwrap_or(0),
                        last.map(|l| l.index).unwrap_or(0)
                    ),
                },
                true,
            );
            let (meta, bytes) = encoded?;
            let encoded_in = started.elapsed();
            shared.persist(&bytes)?;
            // Released only once the file is written, so that an install
            // (which waits for the gate) is never overwritten by this older state.
            drop(gate);
            tracing::info!(
                index = meta.last_log_id.map(|l| l.index).unwrap_or(0),
                bytes = bytes.len(),
                encode_ms = encoded_in.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "snapshot saved"
            );
            Ok((meta, bytes))
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
        .map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
        })?;
        Ok(Snapshot {
            meta: res.0,
            snapshot: Box::new(Cursor::new(res.1)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.shared.applied.read().expect("applied lock").clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let entries: Vec<Entry> = entries.into_iter().collect();
        // A compaction drops history an encoding in progress still reads.
        let _gate = if entries.iter().any(compacts) {
            Some(self.shared.snapshot_gate.write().await)
        } else {
            None
        };
        let mut store = self.shared.store.write().expect("store lock poisoned");
        let mut applied = self.shared.applied.write().expect("applied lock");
        let mut membership_changed = false;
        for entry in entries {
            // Invariant: entries are applied once each, in log order.
            assert!(
                applied.0.is_none_or(|a| a.index < entry.log_id.index),
                "entry {} applied twice or out of order (last applied {:?})",
                entry.log_id,
                applied.0
            );
            let term = entry.log_id.leader_id.term;
            let mut result = BatchResult::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    result.outcomes.reserve(batch.commands.len());
                    for cmd in &batch.commands {
                        let a = store.apply(cmd);
                        if !a.events.is_empty() {
                            // No receiver is fine: nobody watches.
                            let _ = self.shared.events.send(AppliedEvents {
                                revision: a.revision,
                                events: Arc::new(a.events),
                            });
                        }
                        result.outcomes.push(Outcome {
                            revision: a.revision,
                            raft_term: term,
                            result: a.result.map_err(|e| ApplyError::from(&e)),
                        });
                    }
                }
                EntryPayload::Membership(m) => {
                    applied.1 = StoredMembership::new(Some(entry.log_id), m);
                    membership_changed = true;
                }
            }
            applied.0 = Some(entry.log_id);
            self.shared
                .applied_index
                .store(entry.log_id.index, Ordering::Release);
            results.push(result);
        }
        drop((store, applied));
        if membership_changed {
            self.shared.membership_applied.send_modify(|n| *n += 1);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        // Held from before the file is written: a snapshot being built
        // meanwhile would otherwise write its older state over this one.
        let _gate = self.shared.snapshot_gate.write().await;
        let shared = Arc::clone(&self.shared);
        // Decoding and writing a large store take a while: off the runtime.
        let (file_meta, store) = tokio::task::spawn_blocking(move || {
            let decoded = decode_snapshot(&bytes)
                .map_err(|reason| (ErrorVerb::Read, io::Error::other(reason)))?;
            shared.persist(&bytes).map_err(|e| (ErrorVerb::Write, e))?;
            Ok(decoded)
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
        .map_err(|(verb, e)| {
            StorageError::from_io_error(ErrorSubject::Snapshot(Some(meta.signature())), verb, e)
        })?;
        // Invariant: the file describes the snapshot openraft says it installs.
        assert_eq!(
            file_meta.last_log_id, meta.last_log_id,
            "snapshot meta mismatch"
        );
        let revision = store.revision();
        {
            let mut st = self.shared.store.write().expect("store lock poisoned");
            let mut applied = self.shared.applied.write().expect("applied lock");
            *st = store;
            *applied = (meta.last_log_id, meta.last_membership.clone());
            self.shared.applied_index.store(
                meta.last_log_id.map(|l| l.index).unwrap_or(0),
                Ordering::Release,
            );
        }
        self.shared.membership_applied.send_modify(|n| *n += 1);
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            revision,
            "snapshot from the leader installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let bytes = self.shared.read_current().map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)
        })?;
        let Some(bytes) = bytes else { return Ok(None) };
        // Only the meta is needed here: decoding the whole store would cost
        // seconds on a large one, and the receiver verifies it on install.
        let (meta, _) = decode_header(&bytes).map_err(|reason| {
            StorageError::from_io_error(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                io::Error::other(reason),
            )
        })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::future::Future;
    use std::task::{Context, Waker};

    /// An empty state machine in a temporary dir, and a runtime to drive it.
    fn fresh() -> (tempfile::TempDir, StateMachine, tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = StateMachine::open(dir.path()).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        (dir, sm, rt)
    }

    fn entry(index: u64, commands: Vec<nines_store::Command>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::types::Batch { commands }),
        }
    }

    fn put(key: &str, value: &[u8]) -> nines_store::Command {
        nines_store::Command::Put(nines_store::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })
    }

    /// While a snapshot is being encoded (the gate held for reading), writes
    /// are applied at once; a compaction waits without blocking the thread:
    /// it is pending, the store stays readable on the same thread, and it
    /// is applied once the encoding ends.
    #[test]
    fn only_a_compaction_waits_for_a_snapshot_and_without_blocking_the_thread() {
        let (_dir, mut sm, rt) = fresh();
        rt.block_on(async {
            let encoding = Arc::clone(&sm.shared.snapshot_gate).read_owned().await;
            let shared = Arc::clone(&sm.shared);
            let mut cx = Context::from_waker(Waker::noop());
            {
                let mut apply =
                    Box::pin(sm.apply(vec![entry(1, vec![put("a", b"1"), put("b", b"2")])]));
                assert!(
                    apply.as_mut().poll(&mut cx).is_ready(),
                    "a put does not wait"
                );
            }
            assert_eq!(shared.applied_index.load(Ordering::Acquire), 1);
            let revision = shared.store.read().expect("store readable").revision();
            let compact = nines_store::Command::Compact { revision };
            let mut apply = Box::pin(sm.apply(vec![entry(2, vec![compact])]));
            assert!(apply.as_mut().poll(&mut cx).is_pending());
            let compacted = || {
                shared
                    .store
                    .read()
                    .expect("store readable")
                    .compact_revision()
            };
            assert_eq!(compacted(), 0);
            assert_eq!(shared.applied_index.load(Ordering::Acquire), 1);
            drop(encoding);
            apply.await.expect("applied");
            assert_eq!(shared.applied_index.load(Ordering::Acquire), 2);
            assert_eq!(compacted(), revision);
        });
    }

    /// A snapshot encoded in steps while writes are applied between them
    /// stands for the moment it started: its store is exactly the state
    /// after the log entries up to the index its meta names.
    #[test]
    fn a_snapshot_encoded_while_applying_is_the_state_its_meta_names() {
        let (_dir, mut sm, rt) = fresh();
        rt.block_on(async {
            // Enough value bytes for many encoding steps.
            let big = vec![b'x'; 4096];
            let first: Vec<_> = (0..2000)
                .map(|i| put(&format!("key{i:04}"), &big))
                .collect();
            let mut log = vec![first.clone()];
            sm.apply(vec![entry(1, first)]).await.expect("applied");
            let shared = Arc::clone(&sm.shared);
            let encoder = std::thread::spawn(move || {
                shared.encode_in_steps(
                    |last, membership| SnapshotMeta {
                        last_log_id: last,
                        last_membership: membership,
                        snapshot_id: "test".into(),
                    },
                    true,
                )
            });
            // Writes keep coming while it encodes (bounded).
            while !encoder.is_finished() && log.len() < 100_000 {
                let index = log.len() as u64 + 1;
                let commands = vec![put(&format!("key{:04}", index % 2000), b"new")];
                log.push(commands.clone());
                sm.apply(vec![entry(index, commands)])
                    .await
                    .expect("applied");
            }
            let (meta, bytes) = encoder.join().expect("encoder").expect("encoded");
            let (file_meta, store) = decode_snapshot(&bytes).expect("decodes");
            assert_eq!(file_meta.last_log_id, meta.last_log_id);
            let named = meta.last_log_id.expect("a log id").index as usize;
            let mut expected = Store::new();
            for commands in &log[..named] {
                for command in commands {
                    assert!(expected.apply(command).result.is_ok());
                }
            }
            let encode = |store: &Store| {
                let mut out = Vec::new();
                store.write_snapshot(&mut out).expect("encoded");
                out
            };
            assert_eq!(
                encode(&store),
                encode(&expected),
                "the store after entries 1..={named} of {}",
                log.len()
            );
        });
    }
}
