//! The Raft log: a write-ahead log of checksummed records in segment files,
//! the vote, and the committed index. It owns everything under
//! `DATA_DIR/raft/` and nothing else.
//!
//! Appends are acknowledged to openraft only after `fdatasync`. A dedicated
//! writer thread takes every queued operation, writes them in order, and
//! syncs once for the whole group, so many concurrent appends share one
//! fsync. Reads are served from an in-memory copy of the unpurged log.
//!
//! Record format: `len: u32 LE | crc32(payload): u32 LE | payload` where the
//! payload is a bincode [`Entry`]. The segment being written is kept zeroed
//! ahead of its records ([`ZERO_AHEAD_BYTES`]): records overwrite space that
//! is already allocated and on disk, so the sync of an append group writes
//! data only, with no size or allocation change to record. The zeros are
//! written together with the records of the group that runs short of them
//! and made durable by that group's sync.
//!
//! On open, a header with length 0 followed only by zeros is the end of a
//! segment. In the last segment, a record that fails its checksum is a write
//! cut short by a crash, and is trimmed, only when part of it is missing: a
//! 512-byte sector inside it is all zeros, or the file ends inside it; and
//! only zeros follow it; and no shorter payload matches its checksum (which
//! would mean a damaged length). Any other bad record, and anything non-zero
//! after the end of the log, is corruption: the member refuses to start.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogId, RaftLogReader};

use crate::stats::RaftStats;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Operations the writer thread takes in one group before syncing.
const GROUP_OPS_MAX: usize = 4096;
/// Bound of the queue to the writer thread.
const QUEUE_OPS_MAX: usize = 16 * 1024;
/// A record larger than this is corruption, not data (requests are far smaller).
const RECORD_BYTES_MAX: u32 = 256 * 1024 * 1024;
/// Bytes of the committed-index hint file (a record padded with zeros).
const HINT_BYTES: usize = 64;
/// Zeros kept written ahead of the records in the segment being written.
/// When fewer than half of them are left, the next group tops them up in
/// the same write and sync as its records: one sync in about every
/// `ZERO_AHEAD_BYTES / 2` of log pays for an allocation.
const ZERO_AHEAD_BYTES: u64 = 256 * 1024;
/// A write cut short by a crash leaves whole sectors of this size unwritten.
const SECTOR_BYTES: usize = 512;
/// Source of the zeros written ahead.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// How often the lazy (unsafe) mode writes its buffer.
const LAZY_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest an idle writer thread sleeps before it writes a committed-index
/// hint saved meanwhile (a busy one writes it with its next group).
const HINT_IDLE_INTERVAL: Duration = Duration::from_millis(100);

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    /// A file could not be read or written.
    #[error("raft log i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A record failed its checksum or the log has a gap.
    #[error("raft log is corrupt: {path} at byte {offset}: {reason}; the member refuses to start. Restore this member from a healthy peer (remove it and add it back with an empty data dir) or from a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Switches that tests and chaos runs use to plant faults; all off by default.
#[derive(Debug, Default)]
pub struct LogFaults {
    /// Fail the next fsync (the member must then stop).
    pub fail_next_fsync: AtomicBool,
    /// Acknowledge appends before they are durable (a planted bug for chaos runs).
    pub lazy_fsync: AtomicBool,
}

/// The log as openraft sees it; cheap to clone (clones share one log).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    mem: Mutex<MemLog>,
    tx: SyncSender<WalOp>,
    /// The newest committed index not yet handed to the writer thread.
    hint: Arc<PendingHint>,
}

/// A committed index waiting to be written as the hint file. Openraft saves
/// one per commit; sending each to the writer thread would wake it once per
/// commit for a page-cache write, so only the newest is kept and the thread
/// takes it when it wakes for appends anyway, or after
/// [`HINT_IDLE_INTERVAL`] when idle.
#[derive(Default)]
struct PendingHint(Mutex<Option<Option<LogId>>>);

impl PendingHint {
    fn set(&self, committed: Option<LogId>) {
        *self.0.lock().expect("hint mutex poisoned") = Some(committed);
    }

    fn take(&self) -> Option<Option<LogId>> {
        self.0.lock().expect("hint mutex poisoned").take()
    }
}

struct MemLog {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

enum WalOp {
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    Truncate(u64),
    Purge(LogId),
    Vote(Vote, tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, verifying every record.
    pub fn open(
        dir: &Path,
        faults: Arc<LogFaults>,
        stats: Arc<RaftStats>,
    ) -> Result<LogStore, LogOpenError> {
        let wal_dir = dir.join("wal");
        fs::create_dir_all(&wal_dir).map_err(|source| LogOpenError::Io {
            path: wal_dir.clone(),
            source,
        })?;
        let vote = read_checked::<Vote>(&dir.join("vote"))?;
        let last_purged = read_checked::<LogId>(&wal_dir.join("purged"))?;
        // The committed index is a hint; an unreadable one is simply absent.
        let committed = read_hint(&dir.join("committed"));
        let (mut wal, entries) = Wal::open(dir, &wal_dir, last_purged, faults)?;
        wal.stats = stats;
        let last_index = entries.keys().next_back().copied();
        // A committed hint past the end of the durable log (possible after a
        // power loss) is clamped: openraft must never apply what it lacks.
        let committed = match (committed, last_index) {
            (Some(c), Some(last)) if c.index <= last => Some(c),
            _ => None,
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE_OPS_MAX);
        let hint = Arc::new(PendingHint::default());
        let wal_hint = Arc::clone(&hint);
        std::thread::Builder::new()
            .name("nines-wal".into())
            .spawn(move || wal.run(rx, &wal_hint))
            .map_err(|source| LogOpenError::Io {
                path: wal_dir.clone(),
                source,
            })?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                mem: Mutex::new(MemLog {
                    entries,
                    last_purged,
                    vote,
                    committed,
                }),
                tx,
                hint,
            }),
        })
    }

    /// The vote on disk.
    pub fn saved_vote(&self) -> Option<Vote> {
        self.mem().vote
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, MemLog> {
        self.shared.mem.lock().expect("log mutex poisoned")
    }

    // The error type is openraft's, and it is large; it is returned rarely.
    #[allow(clippy::result_large_err)]
    fn send(&self, op: WalOp) -> Result<(), StorageError> {
        self.shared
            .tx
            .send(op)
            .map_err(|_| io_err(ErrorVerb::Write, io::Error::other("log writer stopped")))
    }

    /// Index of the last entry in the log (0 when empty).
    pub fn last_index(&self) -> u64 {
        let mem = self.mem();
        mem.entries
            .keys()
            .next_back()
            .copied()
            .or(mem.last_purged.map(|l| l.index))
            .unwrap_or(0)
    }
}

fn io_err(verb: ErrorVerb, e: io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Logs, verb, e)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mem = self.mem();
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem();
        let last = mem
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(mem.last_purged);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WalOp::Vote(*vote, tx))?;
        let res = rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other("log writer stopped")));
        res.map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.mem().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.mem().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.mem().committed = committed;
        self.shared.hint.set(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.mem().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut mem = self.mem();
            for e in &entries {
                mem.entries.insert(e.log_id.index, e.clone());
            }
        }
        self.send(WalOp::Append(entries, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut mem = self.mem();
            let _dropped = mem.entries.split_off(&log_id.index);
        }
        self.send(WalOp::Truncate(log_id.index))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut mem = self.mem();
            let kept = mem.entries.split_off(&(log_id.index + 1));
            mem.entries = kept;
            mem.last_purged = Some(log_id);
        }
        self.send(WalOp::Purge(log_id))
    }
}

/// Reads a small `crc32 | bincode` file; `None` when it does not exist.
fn read_checked<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, LogOpenError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LogOpenError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |reason: &str| LogOpenError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() < 4 {
        return Err(corrupt("file shorter than its checksum"));
    }
    let crc = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[4..]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    bincode::deserialize(&bytes[4..])
        .map(Some)
        .map_err(|e| corrupt(&format!("undecodable: {e}")))
}

/// Writes a small `crc32 | bincode` file atomically: temp file, fsync, rename, fsync dir.
fn write_checked<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let payload = bincode::serialize(value).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(payload.len() + 4);
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_path(wal_dir: &Path, first_index: u64) -> PathBuf {
    wal_dir.join(format!("{first_index:020}.seg"))
}

/// The writer thread's state: the segment files and where each entry sits.
struct Wal {
    raft_dir: PathBuf,
    wal_dir: PathBuf,
    /// First index of each segment, in order; the last one is being written.
    segments: Vec<u64>,
    /// The last segment, written at explicit offsets.
    current: File,
    /// End of the records in `current`.
    current_len: u64,
    /// Length of `current`; everything from `current_len` up to it is zeros.
    current_alloc: u64,
    /// A segment is sealed past this size ([`SEGMENT_BYTES_MAX`]; tests lower it).
    segment_max: u64,
    /// (segment first index, byte offset) of every unpurged entry.
    positions: BTreeMap<u64, (u64, u64)>,
    faults: Arc<LogFaults>,
    /// Records written to the file but not yet synced, waiting callbacks.
    pending: Vec<LogFlushed<TypeConfig>>,
    /// Lazy mode only: encoded records not yet written at all.
    lazy_buf: Vec<u8>,
    lazy_since: Instant,
    failed: Option<String>,
    /// The committed-index hint file, kept open and rewritten in place.
    hint: Option<File>,
    stats: Arc<RaftStats>,
}

impl Wal {
    fn open(
        raft_dir: &Path,
        wal_dir: &Path,
        last_purged: Option<LogId>,
        faults: Arc<LogFaults>,
    ) -> Result<(Wal, BTreeMap<u64, Entry>), LogOpenError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogOpenError::Io { path, source }
        };
        let mut segments: Vec<u64> = fs::read_dir(wal_dir)
            .map_err(io(wal_dir))?
            .filter_map(|d| d.ok())
            .filter_map(|d| {
                let name = d.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        segments.sort_unstable();
        let purged_index = last_purged.map(|l| l.index);
        let mut entries = BTreeMap::new();
        let mut positions = BTreeMap::new();
        let mut expected: Option<u64> = None;
        let last_seg = segments.last().copied();
        let mut last_end = 0u64;
        for &seg in &segments {
            let path = segment_path(wal_dir, seg);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(&path))?;
            let corrupt = |offset: usize, reason: String| LogOpenError::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                reason,
            };
            let is_last = Some(seg) == last_seg;
            let scan = scan_segment(&bytes, is_last).map_err(|(off, r)| corrupt(off, r))?;
            if scan.torn {
                // A write cut short by a crash: it was never acknowledged.
                // Cutting the file there also drops the bytes after it, so
                // the next appends (which write their own zeros ahead) can
                // never be followed by anything of the old tail.
                tracing::warn!(file = %path.display(), offset = scan.end, "trimming a torn record at the end of the log");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(scan.end as u64).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            if is_last {
                last_end = scan.end as u64;
            }
            for (off, len) in scan.records {
                let payload = &bytes[off + 8..off + 8 + len];
                let entry: Entry = bincode::deserialize(payload)
                    .map_err(|e| corrupt(off, format!("undecodable entry: {e}")))?;
                let index = entry.log_id.index;
                if let Some(exp) = expected {
                    // After a snapshot install the log goes on past the
                    // snapshot: a gap is fine when the purge point covers it.
                    let gap_purged = index > exp && purged_index.is_some_and(|p| index <= p + 1);
                    if index != exp && !gap_purged {
                        return Err(corrupt(off, format!("expected entry {exp}, found {index}")));
                    }
                }
                expected = Some(index + 1);
                if purged_index.is_none_or(|p| index > p) {
                    positions.insert(index, (seg, off as u64));
                    entries.insert(index, entry);
                }
            }
        }
        if let (Some(p), Some(&first)) = (purged_index, entries.keys().next()) {
            if first != p + 1 {
                return Err(LogOpenError::Corrupt {
                    path: wal_dir.to_path_buf(),
                    offset: 0,
                    reason: format!("log starts at {first} but was purged only up to {p}"),
                });
            }
        }
        let first_index = expected.or(purged_index.map(|p| p + 1)).unwrap_or(0);
        if segments.is_empty() {
            segments.push(first_index);
            File::create(segment_path(wal_dir, first_index)).map_err(io(wal_dir))?;
            sync_dir(wal_dir).map_err(io(wal_dir))?;
        }
        let cur_path = segment_path(wal_dir, *segments.last().expect("one segment"));
        let current = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cur_path)
            .map_err(io(&cur_path))?;
        // Past the records, the scan found only zeros (or nothing).
        let current_alloc = current.metadata().map_err(io(&cur_path))?.len();
        Ok((
            Wal {
                raft_dir: raft_dir.to_path_buf(),
                wal_dir: wal_dir.to_path_buf(),
                segments,
                current,
                current_len: last_end,
                current_alloc,
                segment_max: SEGMENT_BYTES_MAX,
                positions,
                faults,
                pending: Vec::new(),
                lazy_buf: Vec::new(),
                lazy_since: Instant::now(),
                failed: None,
                hint: None,
                stats: Arc::default(),
            },
            entries,
        ))
    }

    fn run(mut self, rx: mpsc::Receiver<WalOp>, hint: &PendingHint) {
        loop {
            match rx.recv_timeout(HINT_IDLE_INTERVAL) {
                Ok(first) => {
                    self.handle(first);
                    for _ in 1..GROUP_OPS_MAX {
                        match rx.try_recv() {
                            Ok(op) => self.handle(op),
                            Err(_) => break,
                        }
                    }
                    self.sync_pending();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_pending_hint(hint);
                    return;
                }
            }
            self.write_pending_hint(hint);
            if !self.lazy_buf.is_empty() && self.lazy_since.elapsed() >= LAZY_FLUSH_INTERVAL {
                self.flush_lazy();
            }
        }
    }

    /// Writes the newest committed index saved since the last call, if any.
    /// A hint only: no fsync, and a failure here is harmless.
    fn write_pending_hint(&mut self, hint: &PendingHint) {
        if self.failed.is_some() {
            return;
        }
        if let Some(committed) = hint.take() {
            let _ = self.write_hint(&committed);
        }
    }

    fn handle(&mut self, op: WalOp) {
        if let Some(reason) = &self.failed {
            let err = io::Error::other(format!("log writer failed earlier: {reason}"));
            match op {
                WalOp::Append(_, cb) => cb.log_io_completed(Err(err)),
                WalOp::Vote(_, tx) => {
                    let _ = tx.send(Err(err));
                }
                _ => {}
            }
            return;
        }
        let res = match op {
            WalOp::Append(entries, cb) => {
                let r = self.append(&entries);
                match r {
                    Ok(()) if self.faults.lazy_fsync.load(Ordering::Relaxed) => {
                        cb.log_io_completed(Ok(()))
                    }
                    Ok(()) => self.pending.push(cb),
                    Err(e) => {
                        let msg = e.to_string();
                        cb.log_io_completed(Err(e));
                        self.fail(msg);
                    }
                }
                return;
            }
            WalOp::Truncate(index) => self.truncate(index),
            WalOp::Purge(log_id) => self.purge(log_id),
            WalOp::Vote(vote, tx) => {
                let r = self
                    .flush_lazy_checked()
                    .and_then(|()| self.check_fsync_fault())
                    .and_then(|()| write_checked(&self.raft_dir.join("vote"), &vote));
                let failed = r.as_ref().err().map(|e| e.to_string());
                let _ = tx.send(r);
                if let Some(msg) = failed {
                    self.fail(msg);
                }
                return;
            }
        };
        if let Err(e) = res {
            self.fail(e.to_string());
        }
    }

    /// Rewrites the committed-index hint in place: one page-cache write, no
    /// truncation, no new file (on ext4 both would cost a disk write, and a
    /// discard, per commit).
    fn write_hint(&mut self, committed: &Option<LogId>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.hint.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(self.raft_dir.join("committed"))?;
            self.hint = Some(f);
        }
        let payload = bincode::serialize(committed).map_err(io::Error::other)?;
        let mut bytes = Vec::with_capacity(HINT_BYTES);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.resize(bytes.len().max(HINT_BYTES), 0);
        self.hint
            .as_ref()
            .expect("opened above")
            .write_all_at(&bytes, 0)
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(%reason, "raft log writer failed; the member must stop");
        for cb in self.pending.drain(..) {
            cb.log_io_completed(Err(io::Error::other(reason.clone())));
        }
        self.failed = Some(reason);
    }

    fn check_fsync_fault(&self) -> io::Result<()> {
        if self.faults.fail_next_fsync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let started = Instant::now();
        let res = self.append_entries(first.log_id.index, entries);
        self.stats.log_append.observe(started.elapsed());
        res
    }

    fn append_entries(&mut self, first_index: u64, entries: &[Entry]) -> io::Result<()> {
        if self.current_len >= self.segment_max {
            self.rotate(first_index)?;
        }
        let mut buf = Vec::with_capacity(entries.len() * 512);
        let base = self.current_len + self.lazy_buf.len() as u64;
        let seg = *self.segments.last().expect("one segment");
        for e in entries {
            let payload = bincode::serialize(e).map_err(io::Error::other)?;
            self.positions
                .insert(e.log_id.index, (seg, base + buf.len() as u64));
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        if self.faults.lazy_fsync.load(Ordering::Relaxed) {
            if self.lazy_buf.is_empty() {
                self.lazy_since = Instant::now();
            }
            self.lazy_buf.extend_from_slice(&buf);
            return Ok(());
        }
        self.write_records(&buf)
    }

    /// Writes encoded records at the end of the log, and tops up the zeros
    /// ahead of them when fewer than half are left. Both reach the disk
    /// with the next sync.
    fn write_records(&mut self, buf: &[u8]) -> io::Result<()> {
        let end = self.current_len + buf.len() as u64;
        self.current.write_all_at(buf, self.current_len)?;
        self.current_len = end;
        if self.current_alloc < end + ZERO_AHEAD_BYTES / 2 {
            let mut at = self.current_alloc.max(end);
            let target = end + ZERO_AHEAD_BYTES;
            while at < target {
                let n = (target - at).min(ZEROS.len() as u64) as usize;
                self.current.write_all_at(&ZEROS[..n], at)?;
                at += n as u64;
            }
            self.current_alloc = target;
        }
        Ok(())
    }

    fn sync_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let r = self
            .check_fsync_fault()
            .and_then(|()| self.current.sync_data());
        self.stats.log_fsync.observe(started.elapsed());
        match r {
            Ok(()) => {
                for cb in self.pending.drain(..) {
                    cb.log_io_completed(Ok(()));
                }
            }
            Err(e) => self.fail(format!("fsync of the raft log failed: {e}")),
        }
    }

    fn flush_lazy(&mut self) {
        if let Err(e) = self.flush_lazy_checked() {
            self.fail(e.to_string());
        }
    }

    fn flush_lazy_checked(&mut self) -> io::Result<()> {
        if self.lazy_buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.lazy_buf);
        self.write_records(&buf)?;
        self.current.sync_data()
    }

    fn rotate(&mut self, first_index: u64) -> io::Result<()> {
        self.flush_lazy_checked()?;
        // The sealed segment ends with its last record, not with zeros.
        self.current.set_len(self.current_len)?;
        self.current.sync_all()?;
        let path = segment_path(&self.wal_dir, first_index);
        self.current = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        self.current_len = 0;
        self.current_alloc = 0;
        self.segments.push(first_index);
        sync_dir(&self.wal_dir)
    }

    fn truncate(&mut self, index: u64) -> io::Result<()> {
        self.flush_lazy_checked()?;
        let Some(&(seg, off)) = self.positions.get(&index) else {
            return Ok(()); // Nothing at or after `index` is on disk.
        };
        while let Some(&last) = self.segments.last() {
            if last <= seg {
                break;
            }
            fs::remove_file(segment_path(&self.wal_dir, last))?;
            self.segments.pop();
        }
        // Cutting the file drops the zeros ahead too; the next append
        // writes new ones, so nothing old can follow the new records.
        let path = segment_path(&self.wal_dir, seg);
        self.current = OpenOptions::new().read(true).write(true).open(&path)?;
        self.current.set_len(off)?;
        self.current.sync_all()?;
        self.current_len = off;
        self.current_alloc = off;
        let _dropped = self.positions.split_off(&index);
        sync_dir(&self.wal_dir)
    }

    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // Record the purge point first: a crash between the two steps then
        // leaves extra entries (skipped on open), never a gap.
        write_checked(&self.wal_dir.join("purged"), &log_id)?;
        while self.segments.len() > 1 && self.segments[1] <= log_id.index + 1 {
            fs::remove_file(segment_path(&self.wal_dir, self.segments[0]))?;
            self.segments.remove(0);
        }
        let kept = self.positions.split_off(&(log_id.index + 1));
        self.positions = kept;
        Ok(())
    }
}

/// The records of one segment file, as found on open.
struct SegmentScan {
    /// (byte offset, payload length) of every whole record, in order.
    records: Vec<(usize, usize)>,
    /// Where the records end; only zeros (or a torn record) follow.
    end: usize,
    /// A torn record starts at `end` and must be trimmed.
    torn: bool,
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Finds the records of a segment and where they end; on corruption, the
/// offset and what is wrong. Only the last segment (`last`) may end in a
/// torn record; any segment may end in zeros.
fn scan_segment(bytes: &[u8], last: bool) -> Result<SegmentScan, (usize, String)> {
    let mut records = Vec::new();
    let mut off = 0usize;
    let torn = loop {
        let rest = &bytes[off..];
        if all_zero(rest) {
            break false; // The end, possibly followed by zeros written ahead.
        }
        if rest.len() < 8 {
            if last {
                break true; // A header cut short by the end of the file.
            }
            return Err((off, "record cut short inside a sealed segment".into()));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 {
            return Err((off, "non-zero bytes after the end of the log".into()));
        }
        let end = off + 8 + len as usize;
        if len <= RECORD_BYTES_MAX
            && end <= bytes.len()
            && crc32fast::hash(&bytes[off + 8..end]) == crc
        {
            records.push((off, len as usize));
            off = end;
            continue;
        }
        if !last {
            let reason = if end > bytes.len() {
                "record cut short inside a sealed segment"
            } else {
                "checksum mismatch"
            };
            return Err((off, reason.into()));
        }
        if len > RECORD_BYTES_MAX {
            return Err((off, format!("record length {len} is implausible")));
        }
        torn_record(bytes, off, len as usize, crc).map_err(|reason| (off, reason))?;
        break true;
    };
    Ok(SegmentScan {
        records,
        end: off,
        torn,
    })
}

/// Whether the bad record of `len` payload bytes at `off`, the last thing in
/// the last segment, is a write cut short by a crash (`Ok`) rather than
/// damaged data (`Err` with the reason). A write cut short leaves whole
/// sectors unwritten, and they were zeros (written ahead) or past the end
/// of the file; what follows the record was never written either.
fn torn_record(bytes: &[u8], off: usize, len: usize, crc: u32) -> Result<(), String> {
    let end = off + 8 + len;
    let present_end = end.min(bytes.len());
    if !all_zero(&bytes[present_end..]) {
        return Err("checksum mismatch, and non-zero bytes follow the record".into());
    }
    let cut_by_eof = end > bytes.len();
    let first_sector = (off / SECTOR_BYTES + 1) * SECTOR_BYTES;
    let zero_sector = (first_sector..present_end)
        .step_by(SECTOR_BYTES)
        .any(|s| all_zero(&bytes[s..(s + SECTOR_BYTES).min(bytes.len())]));
    if !cut_by_eof && !zero_sector {
        return Err("checksum mismatch".into());
    }
    // A damaged length that points into the zeros looks like a cut-short
    // write; the true, shorter payload then matches the checksum.
    let payload = &bytes[off + 8..present_end];
    let mut hasher = crc32fast::Hasher::new();
    for (i, b) in payload.iter().enumerate() {
        hasher.update(std::slice::from_ref(b));
        if i + 1 < len && hasher.clone().finalize() == crc {
            return Err(format!(
                "checksum mismatch; the first {} payload bytes match it: the length field is damaged",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Reads the committed-index hint written by `Wal::write_hint`; anything
/// missing, short or damaged reads as no hint.
fn read_hint(path: &Path) -> Option<LogId> {
    let bytes = fs::read(path).ok()?;
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    bincode::deserialize::<Option<LogId>>(payload)
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn open(dir: &Path) -> Result<(Wal, BTreeMap<u64, Entry>), LogOpenError> {
        let wal_dir = dir.join("wal");
        fs::create_dir_all(&wal_dir).expect("wal dir");
        let purged = read_checked::<LogId>(&wal_dir.join("purged")).expect("purged readable");
        Wal::open(dir, &wal_dir, purged, Arc::new(LogFaults::default()))
    }

    #[test]
    fn log_continues_past_a_snapshot_install_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = open(dir.path()).expect("open");
            wal.append(&(1..=5).map(entry).collect::<Vec<_>>())
                .expect("append");
            // A snapshot up to 20 was installed: the log is purged to 20 and
            // goes on at 21 in the same segment.
            wal.purge(*entry(20).get_log_id()).expect("purge");
            wal.append(&(21..=23).map(entry).collect::<Vec<_>>())
                .expect("append");
            wal.current.sync_data().expect("sync");
        }
        let (_, entries) = open(dir.path()).expect("reopen after the gap");
        assert_eq!(
            entries.keys().copied().collect::<Vec<_>>(),
            vec![21, 22, 23]
        );
    }

    #[test]
    fn a_gap_not_covered_by_the_purge_point_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = open(dir.path()).expect("open");
            wal.append(&(1..=5).map(entry).collect::<Vec<_>>())
                .expect("append");
            wal.append(&(9..=10).map(entry).collect::<Vec<_>>())
                .expect("append");
            wal.current.sync_data().expect("sync");
        }
        let err = open(dir.path()).err().expect("a gap is refused");
        assert!(
            err.to_string().contains("expected entry 6, found 9"),
            "{err}"
        );
    }

    #[test]
    fn torn_tail_is_trimmed_and_flipped_byte_is_refused() {
        // A segment written before zeros were kept ahead: it ends with its
        // last record, and a crash cut that record short at the file's end.
        let dir = tempfile::tempdir().expect("tempdir");
        let data_end = {
            let (mut wal, _) = open(dir.path()).expect("open");
            wal.append(&(1..=3).map(entry).collect::<Vec<_>>())
                .expect("append");
            wal.current.sync_data().expect("sync");
            wal.current_len as usize
        };
        let seg = segment_path(&dir.path().join("wal"), 0);
        let full = fs::read(&seg).expect("read");
        fs::write(&seg, &full[..data_end - 3]).expect("tear");
        let (_, entries) = open(dir.path()).expect("a torn tail is trimmed");
        assert_eq!(entries.len(), 2);
        let mut bytes = fs::read(&seg).expect("read");
        bytes[10] ^= 0xff;
        fs::write(&seg, &bytes).expect("flip");
        let err = open(dir.path()).err().expect("a flipped byte is refused");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    /// An entry whose record spans several sectors, with no zero byte
    /// inside its commands.
    fn big_entry(index: u64) -> Entry {
        use crate::types::Batch;
        use nines_store::Command;
        let commands = (0..150)
            .map(|i| Command::Compact {
                revision: 0x0101_0101_0101_0101 + i + index as i64 * 1000,
            })
            .collect();
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch { commands }),
        }
    }

    /// Writes [`big_entry`] 1..=`count` as one group into a fresh log in
    /// `dir`; returns the first segment and the byte extent of entry `index`.
    fn big_records_with_extent(dir: &Path, count: u64, index: u64) -> (PathBuf, usize, usize) {
        let seg = segment_path(&dir.join("wal"), 0);
        let (mut wal, _) = open(dir).expect("open");
        write_group(&mut wal, (1..=count).map(big_entry).collect());
        let bytes = fs::read(&seg).expect("read");
        let (start, end) = record_extent(&wal, index, &bytes);
        (seg, start, end)
    }

    fn write_group(wal: &mut Wal, entries: Vec<Entry>) {
        wal.append(&entries).expect("append");
        wal.current.sync_data().expect("sync");
    }

    fn indexes(entries: &BTreeMap<u64, Entry>) -> Vec<u64> {
        entries.keys().copied().collect()
    }

    /// The byte range of entry `index`'s record (header included).
    fn record_extent(wal: &Wal, index: u64, bytes: &[u8]) -> (usize, usize) {
        let (_, off) = wal.positions[&index];
        let off = off as usize;
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4")) as usize;
        (off, off + 8 + len)
    }

    #[test]
    fn appends_overwrite_zeros_written_ahead_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = segment_path(&dir.path().join("wal"), 0);
        {
            let (mut wal, _) = open(dir.path()).expect("open");
            write_group(&mut wal, (1..=3).map(entry).collect());
            let len = fs::metadata(&seg).expect("stat").len();
            assert_eq!(len, wal.current_alloc);
            assert!(len >= wal.current_len + ZERO_AHEAD_BYTES / 2, "zeros ahead");
            assert!(all_zero(
                &fs::read(&seg).expect("read")[wal.current_len as usize..]
            ));
            // Small groups go into the zeros: the file does not grow.
            write_group(&mut wal, (4..=6).map(entry).collect());
            assert_eq!(fs::metadata(&seg).expect("stat").len(), len);
        }
        let data_end = {
            let (mut wal, entries) = open(dir.path()).expect("reopen");
            assert_eq!(indexes(&entries), (1..=6).collect::<Vec<_>>());
            write_group(&mut wal, (7..=8).map(big_entry).collect());
            wal.current_len
        };
        let (wal, entries) = open(dir.path()).expect("reopen again");
        assert_eq!(indexes(&entries), (1..=8).collect::<Vec<_>>());
        assert_eq!(entries[&8], big_entry(8));
        assert_eq!(wal.current_len, data_end);
    }

    #[test]
    fn growing_past_the_zeros_writes_more_of_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path()).expect("open");
        let mut next = 1;
        while wal.current_len < 2 * ZERO_AHEAD_BYTES {
            write_group(&mut wal, (next..next + 10).map(big_entry).collect());
            next += 10;
            assert!(wal.current_alloc >= wal.current_len + ZERO_AHEAD_BYTES / 2);
        }
        drop(wal);
        let (_, entries) = open(dir.path()).expect("reopen");
        assert_eq!(indexes(&entries), (1..next).collect::<Vec<_>>());
    }

    #[test]
    fn torn_record_in_zeroed_space_is_trimmed_and_the_log_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, start, end) = big_records_with_extent(dir.path(), 3, 3);
        // The write of entry 3 reached the disk except one sector inside it.
        let mut bytes = fs::read(&seg).expect("read");
        let sector = (start / SECTOR_BYTES + 2) * SECTOR_BYTES;
        assert!(sector + SECTOR_BYTES <= end, "the record spans the sector");
        bytes[sector..sector + SECTOR_BYTES].fill(0);
        fs::write(&seg, &bytes).expect("tear");
        {
            let (mut wal, entries) = open(dir.path()).expect("a torn record is trimmed");
            assert_eq!(indexes(&entries), vec![1, 2]);
            assert_eq!(wal.current_len as usize, start);
            assert_eq!(fs::metadata(&seg).expect("stat").len() as usize, start);
            // A shorter entry 3 and one more: nothing of the torn record may
            // follow them.
            write_group(&mut wal, vec![entry(3), big_entry(4)]);
        }
        let (_, entries) = open(dir.path()).expect("reopen after appends");
        assert_eq!(indexes(&entries), vec![1, 2, 3, 4]);
        assert_eq!(entries[&3], entry(3));
        assert_eq!(entries[&4], big_entry(4));
    }

    #[test]
    fn record_cut_short_by_a_kill_is_trimmed() {
        // A kill stops a write at a page boundary: everything after it in
        // the group stays zero.
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, start, end) = big_records_with_extent(dir.path(), 4, 3);
        let mut bytes = fs::read(&seg).expect("read");
        let cut = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
        assert!(cut < end);
        bytes[cut..].fill(0);
        fs::write(&seg, &bytes).expect("cut");
        let (_, entries) = open(dir.path()).expect("a cut-short group is trimmed");
        assert_eq!(indexes(&entries), vec![1, 2]);
    }

    fn assert_refused(dir: &Path, what: &str) -> String {
        match open(dir) {
            Err(e @ LogOpenError::Corrupt { .. }) => e.to_string(),
            Err(e) => panic!("{what}: wrong error {e}"),
            Ok((_, entries)) => panic!("{what}: opened with {:?}", indexes(&entries)),
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, start, end) = big_records_with_extent(dir.path(), 3, 3);
        let clean = fs::read(&seg).expect("read");
        // A byte of the payload, of the checksum, and of the length (grown
        // so that the record reaches into the zeros ahead).
        for (at, mask, what) in [
            (end - 100, 0x10u8, "payload"),
            (start + 5, 0x01, "checksum"),
            (start + 1, 0x10, "length"),
        ] {
            let mut bytes = clean.clone();
            bytes[at] ^= mask;
            fs::write(&seg, &bytes).expect("flip");
            let err = assert_refused(dir.path(), what);
            assert!(
                err.contains(&format!("at byte {start}: checksum mismatch")),
                "{what}: {err}"
            );
            if what == "length" {
                assert!(err.contains("the length field is damaged"), "{err}");
            }
        }
        fs::write(&seg, &clean).expect("restore");
        let (_, entries) = open(dir.path()).expect("the clean log opens");
        assert_eq!(indexes(&entries), vec![1, 2, 3]);
    }

    #[test]
    fn non_zero_bytes_after_the_end_of_the_log_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = segment_path(&dir.path().join("wal"), 0);
        let data_end = {
            let (mut wal, _) = open(dir.path()).expect("open");
            write_group(&mut wal, (1..=3).map(entry).collect());
            wal.current_len as usize
        };
        let clean = fs::read(&seg).expect("read");
        for at in [data_end, data_end + 5, data_end + 3000, clean.len() - 1] {
            let mut bytes = clean.clone();
            bytes[at] = 0x5a;
            fs::write(&seg, &bytes).expect("garbage");
            let err = assert_refused(dir.path(), &format!("garbage at {at}"));
            assert!(err.contains(&format!("at byte {data_end}")), "{err}");
        }
    }

    #[test]
    fn segments_roll_over_and_purge_and_truncate_still_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal_dir = dir.path().join("wal");
        let segments = {
            let (mut wal, _) = open(dir.path()).expect("open");
            wal.segment_max = 8 * 1024;
            for first in (1..=40).step_by(4) {
                write_group(&mut wal, (first..first + 4).map(big_entry).collect());
            }
            assert!(wal.segments.len() >= 3, "{:?}", wal.segments);
            // Sealed segments end with their last record.
            for &s in &wal.segments[..wal.segments.len() - 1] {
                let bytes = fs::read(segment_path(&wal_dir, s)).expect("read");
                let scan = scan_segment(&bytes, false).expect("scan");
                assert_eq!(scan.end, bytes.len(), "segment {s}");
            }
            wal.segments.clone()
        };
        {
            let (mut wal, entries) = open(dir.path()).expect("reopen");
            assert_eq!(indexes(&entries), (1..=40).collect::<Vec<_>>());
            assert_eq!(wal.segments, segments);
            // A new leader overwrites from entry 10 on: the later segments go.
            let (holder, _) = wal.positions[&10];
            wal.truncate(10).expect("truncate");
            assert_eq!(wal.segments.last(), Some(&holder));
            for &s in &segments {
                assert_eq!(
                    segment_path(&wal_dir, s).exists(),
                    s <= holder,
                    "segment {s}"
                );
            }
            write_group(&mut wal, (10..=12).map(entry).collect());
        }
        {
            let (mut wal, entries) = open(dir.path()).expect("reopen after truncate");
            assert_eq!(indexes(&entries), (1..=12).collect::<Vec<_>>());
            assert_eq!(entries[&11], entry(11));
            wal.purge(*entry(9).get_log_id()).expect("purge");
            // Segments holding only purged entries are gone; the one that
            // holds entry 10 stays.
            let first = wal.segments[0];
            assert!(first <= 10 && wal.segments.get(1).is_none_or(|&s| s > 10));
            assert!(first > segments[0], "{:?}", wal.segments);
            assert!(!segment_path(&wal_dir, segments[0]).exists());
            write_group(&mut wal, (13..=14).map(big_entry).collect());
        }
        let (_, entries) = open(dir.path()).expect("reopen after purge");
        assert_eq!(indexes(&entries), (10..=14).collect::<Vec<_>>());
        assert_eq!(entries[&14], big_entry(14));
    }

    #[test]
    fn committed_hint_is_written_and_read_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open_store = || {
            LogStore::open(
                dir.path(),
                Arc::new(LogFaults::default()),
                Arc::new(RaftStats::default()),
            )
            .expect("open")
        };
        {
            let (mut wal, _) = open(dir.path()).expect("open");
            write_group(&mut wal, (1..=3).map(entry).collect());
        }
        {
            let mut store = open_store();
            futures::executor::block_on(store.save_committed(Some(*entry(2).get_log_id())))
                .expect("save");
            let deadline = Instant::now() + Duration::from_secs(10);
            while read_hint(&dir.path().join("committed")).map(|c| c.index) != Some(2) {
                assert!(Instant::now() < deadline, "the hint was never written");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut store = open_store();
        let committed = futures::executor::block_on(store.read_committed()).expect("read");
        assert_eq!(committed.map(|c| c.index), Some(2));
    }

    #[test]
    fn a_segment_without_zeros_ahead_opens_and_takes_appends() {
        // The layout written before zeros were kept ahead: records only.
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = segment_path(&dir.path().join("wal"), 0);
        let data_end = {
            let (mut wal, _) = open(dir.path()).expect("open");
            write_group(&mut wal, (1..=4).map(big_entry).collect());
            wal.current_len
        };
        File::options()
            .write(true)
            .open(&seg)
            .and_then(|f| f.set_len(data_end))
            .expect("cut the zeros");
        {
            let (mut wal, entries) = open(dir.path()).expect("open the old layout");
            assert_eq!(indexes(&entries), vec![1, 2, 3, 4]);
            assert_eq!((wal.current_len, wal.current_alloc), (data_end, data_end));
            write_group(&mut wal, (5..=6).map(entry).collect());
            assert!(wal.current_alloc >= wal.current_len + ZERO_AHEAD_BYTES / 2);
        }
        let (_, entries) = open(dir.path()).expect("reopen");
        assert_eq!(indexes(&entries), (1..=6).collect::<Vec<_>>());
    }
}
