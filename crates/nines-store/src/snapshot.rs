//! The snapshot format: the whole store, history included, as a stream.
//!
//! Layout: the magic `NINESNAP`, the format version (u32 LE), then framed
//! records `[payload length u32 LE][crc32 of payload u32 LE][payload]`,
//! each payload one record (encoded in `codec.rs`): `Meta` first, then every `Lease` by
//! id, then every raised `Alarm`, then the key histories in key order (a long history spans several
//! consecutive `Key` records), and last `End` with the counts and a crc32
//! over every byte before it. A flipped byte fails a record crc or the final
//! checksum; a cut stream misses `End`. A loaded store must also pass the
//! invariant checks before it is returned. Writing streams record by record
//! and never holds the snapshot in memory; reading reads exactly the
//! snapshot's bytes (pass a buffered reader for speed).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, BufWriter, Read, Write};
use std::ops::Bound;
use std::sync::Arc;

use crate::codec::Record;
use crate::error::StoreError;
use crate::history::{Entry, KeyHistory};
use crate::store::{LeaseState, Store};
use crate::types::{AlarmKind, AlarmMember};
use crate::{SNAPSHOT_CHUNK_BYTES, SNAPSHOT_RECORD_BYTES_MAX};

/// First bytes of every snapshot.
const MAGIC: &[u8; 8] = b"NINESNAP";
/// Format version this code writes and reads.
const FORMAT_VERSION: u32 = 1;

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::SnapshotCorrupt {
        reason: reason.into(),
    }
}

struct Writer<W: Write> {
    out: W,
    hasher: crc32fast::Hasher,
    records: u64,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    fn record(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        self.buf.clear();
        record.encode(&mut self.buf);
        let len = u32::try_from(self.buf.len())
            .ok()
            .filter(|&l| l as usize <= SNAPSHOT_RECORD_BYTES_MAX)
            .ok_or_else(|| io::Error::other("a snapshot record exceeds the size limit"))?;
        let crc = crc32fast::hash(&self.buf);
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc.to_le_bytes());
        self.hasher.update(&header);
        self.hasher.update(&self.buf);
        self.out.write_all(&header)?;
        self.out.write_all(&self.buf)?;
        self.records += 1;
        Ok(())
    }
}

struct Reader<'r, R: Read> {
    input: &'r mut R,
    hasher: crc32fast::Hasher,
    records: u64,
    buf: Vec<u8>,
}

impl<R: Read> Reader<'_, R> {
    fn exact(&mut self, out: &mut [u8], what: &str) -> Result<(), StoreError> {
        self.input.read_exact(out).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt(format!("truncated in {what}")),
            _ => StoreError::Io(e),
        })
    }

    /// Reads one record; `hash` says whether its bytes count toward the final checksum.
    fn record(&mut self) -> Result<(Record<'static>, u32), StoreError> {
        let mut header = [0u8; 8];
        self.exact(&mut header, "a record header")?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > SNAPSHOT_RECORD_BYTES_MAX {
            return Err(corrupt(format!(
                "record {} claims {len} bytes, above the limit",
                self.records
            )));
        }
        self.buf.clear();
        // Read through `take` so a corrupt length cannot make us allocate
        // more than the stream actually holds.
        (&mut *self.input)
            .take(len as u64)
            .read_to_end(&mut self.buf)?;
        if self.buf.len() != len {
            return Err(corrupt(format!("truncated in record {}", self.records)));
        }
        if crc32fast::hash(&self.buf) != crc {
            return Err(corrupt(format!("record {} fails its crc", self.records)));
        }
        let before = self.hasher.clone().finalize();
        self.hasher.update(&header);
        self.hasher.update(&self.buf);
        let record = Record::decode(&self.buf)
            .map_err(|e| corrupt(format!("record {} does not decode: {e}", self.records)))?;
        self.records += 1;
        Ok((record, before))
    }
}

impl<R: Read> Reader<'_, R> {
    /// Reads the records after `Meta` up to and including `End`: the leases
    /// into `leases`, and the key histories with their entry count.
    fn body(
        &mut self,
        leases: &mut BTreeMap<i64, LeaseState>,
        alarms: &mut BTreeSet<AlarmMember>,
    ) -> Result<(Vec<KeyHistory>, u64), StoreError> {
        let mut entries = 0u64;
        let mut histories: Vec<KeyHistory> = Vec::new();
        loop {
            let (record, checksum_before) = self.record()?;
            match record {
                Record::Meta { .. } => return Err(corrupt("a second metadata record")),
                Record::Lease { id, ttl_secs } => {
                    if !histories.is_empty() || leases.keys().next_back() >= Some(&id) {
                        return Err(corrupt(format!("lease {id} out of order")));
                    }
                    let keys = BTreeSet::new();
                    leases.insert(id, LeaseState { ttl_secs, keys });
                }
                Record::Alarm { member_id, kind } => {
                    let kind = match kind {
                        0 => AlarmKind::NoSpace,
                        1 => AlarmKind::Corrupt,
                        k => return Err(corrupt(format!("unknown alarm kind {k}"))),
                    };
                    if !histories.is_empty() || !alarms.insert(AlarmMember { member_id, kind }) {
                        return Err(corrupt("alarm record out of place"));
                    }
                }
                Record::Key { key, entries: run } => {
                    entries += run.len() as u64;
                    add_key_run(&mut histories, &key, run.into_owned())?;
                }
                Record::End {
                    leases: lease_count,
                    keys,
                    entries: entry_count,
                    records,
                    checksum,
                } => {
                    let recorded = (lease_count, keys, entry_count, records);
                    let counted = (
                        leases.len() as u64,
                        histories.len() as u64,
                        entries,
                        self.records - 1,
                    );
                    if counted != recorded {
                        return Err(corrupt(format!(
                            "counts {counted:?} differ from the recorded {recorded:?}"
                        )));
                    }
                    if checksum != checksum_before {
                        return Err(corrupt("final checksum mismatch"));
                    }
                    return Ok((histories, entries));
                }
            }
        }
    }
}

/// A snapshot being written in steps, so the store can keep applying
/// between them: [`Store::start_snapshot`] fixes the revision and writes
/// everything but the keys; each [`SnapshotWriter::write_keys`] writes the
/// next keys' histories up to that revision; [`SnapshotWriter::finish`]
/// writes the end record. The result is the store exactly as it was at the
/// start, because the store only ever appends to a key's history: between
/// the steps it may apply puts, deletes, transactions, lease and alarm
/// changes, but must not be compacted or replaced (checked: the steps fail
/// with [`StoreError::SnapshotDisturbed`]).
pub struct SnapshotWriter<W: Write> {
    out: Writer<BufWriter<W>>,
    /// The revision the snapshot stands for.
    revision: i64,
    compact_revision: i64,
    leases: u64,
    /// The last key written; the next step starts after it.
    after: Option<Arc<[u8]>>,
    keys: u64,
    entries: u64,
    done: bool,
}

impl Store {
    /// Writes the whole state (history, leases, revisions) to `w`.
    ///
    /// # Errors
    /// `Io` when `w` fails.
    pub fn write_snapshot<W: Write>(&self, w: W) -> Result<(), StoreError> {
        let mut writer = self.start_snapshot(w)?;
        while !writer.write_keys(self, usize::MAX)? {}
        writer.finish()?;
        Ok(())
    }

    /// Starts a snapshot of the store as it is now, to be continued with
    /// [`SnapshotWriter::write_keys`] (see [`SnapshotWriter`]).
    ///
    /// # Errors
    /// `Io` when `w` fails.
    pub fn start_snapshot<W: Write>(&self, w: W) -> Result<SnapshotWriter<W>, StoreError> {
        debug_assert_eq!(self.verify(), Ok(()));
        let mut out = Writer {
            out: BufWriter::new(w),
            hasher: crc32fast::Hasher::new(),
            records: 0,
            buf: Vec::new(),
        };
        out.raw(MAGIC)?;
        out.raw(&FORMAT_VERSION.to_le_bytes())?;
        out.record(&Record::Meta {
            revision: self.revision,
            compact_revision: self.compact_revision,
        })?;
        for (&id, lease) in &self.leases {
            out.record(&Record::Lease {
                id,
                ttl_secs: lease.ttl_secs,
            })?;
        }
        for alarm in &self.alarms {
            out.record(&Record::Alarm {
                member_id: alarm.member_id,
                kind: match alarm.kind {
                    AlarmKind::NoSpace => 0,
                    AlarmKind::Corrupt => 1,
                },
            })?;
        }
        Ok(SnapshotWriter {
            out,
            revision: self.revision,
            compact_revision: self.compact_revision,
            leases: self.leases.len() as u64,
            after: None,
            keys: 0,
            entries: 0,
            done: false,
        })
    }
}

impl<W: Write> SnapshotWriter<W> {
    /// The revision the snapshot stands for.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The output written to so far (not counting up to a few KiB still
    /// buffered here): for a caller that wants to prepare it between steps,
    /// such as growing a `Vec`'s capacity outside a lock.
    pub fn get_mut(&mut self) -> &mut W {
        self.out.out.get_mut()
    }

    /// Writes the histories, up to the snapshot's revision, of the keys
    /// after the last one written, until about `budget` bytes of values
    /// are written or no key is left. `store` is the store the snapshot was
    /// started from, changed since only by applying commands other than a
    /// compaction. Returns whether every key is written.
    ///
    /// # Errors
    /// `SnapshotDisturbed` when `store` was compacted or replaced since the
    /// start; `Io` when the output fails.
    pub fn write_keys(&mut self, store: &Store, budget: usize) -> Result<bool, StoreError> {
        if self.done {
            return Ok(true);
        }
        if store.compact_revision != self.compact_revision || store.revision < self.revision {
            return Err(StoreError::SnapshotDisturbed {
                revision: self.revision,
            });
        }
        let start = match &self.after {
            Some(key) => Bound::Excluded(&key[..]),
            None => Bound::Unbounded,
        };
        let mut written = 0usize;
        for (key, hist) in store.keys.range::<[u8], _>((start, Bound::Unbounded)) {
            if written >= budget {
                // The next step resumes here: `after` is the last key written.
                return Ok(false);
            }
            // Writes after the snapshot's revision are not part of it, and
            // a key created after it has none that are.
            let kept = hist
                .entries
                .partition_point(|e| e.mod_revision <= self.revision);
            if kept == 0 {
                continue;
            }
            for chunk in chunks(&hist.entries[..kept]) {
                written += chunk.iter().map(Entry::value_len).sum::<usize>() + key.len();
                self.out.record(&Record::Key {
                    key: Cow::Borrowed(key),
                    entries: Cow::Borrowed(chunk),
                })?;
            }
            self.keys += 1;
            self.entries += kept as u64;
            self.after = Some(key.clone());
        }
        self.done = true;
        Ok(true)
    }

    /// Writes the end record and returns the output.
    ///
    /// # Errors
    /// `Io` when the output fails.
    ///
    /// # Panics
    /// When keys are left to write (a caller bug).
    pub fn finish(mut self) -> Result<W, StoreError> {
        assert!(
            self.done,
            "a snapshot is finished before all its keys are written"
        );
        let end = Record::End {
            leases: self.leases,
            keys: self.keys,
            entries: self.entries,
            records: self.out.records,
            checksum: self.out.hasher.clone().finalize(),
        };
        self.out.record(&end)?;
        self.out
            .out
            .into_inner()
            .map_err(|e| StoreError::Io(e.into_error()))
    }
}

impl Store {
    /// Reads a snapshot written by [`Store::write_snapshot`], verifying the
    /// magic, the format version, every record's crc, the counts, the final
    /// checksum and the store invariants.
    ///
    /// # Errors
    /// `SnapshotCorrupt` naming the first fault found (bad magic, unknown
    /// format version, truncation, a record crc, counts, the final checksum,
    /// a broken invariant); `Io` when `r` fails.
    pub fn read_snapshot<R: Read>(r: &mut R) -> Result<Store, StoreError> {
        let mut input = Reader {
            input: r,
            hasher: crc32fast::Hasher::new(),
            records: 0,
            buf: Vec::new(),
        };
        let mut head = [0u8; 12];
        input.exact(&mut head, "the header")?;
        if &head[..8] != MAGIC {
            return Err(corrupt("bad magic: not a nines snapshot"));
        }
        let version = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(corrupt(format!("unsupported format version {version}")));
        }
        input.hasher.update(&head);
        let Record::Meta {
            revision,
            compact_revision,
        } = input.record()?.0
        else {
            return Err(corrupt("first record is not the metadata"));
        };
        let mut store = Store::new();
        store.revision = revision;
        store.compact_revision = compact_revision;
        let (histories, entries) = input.body(&mut store.leases, &mut store.alarms)?;
        // The histories arrive in strictly increasing key order, which lets
        // the map be built in bulk rather than by one insert per key.
        store.keys = histories.into_iter().map(|h| (h.key.clone(), h)).collect();
        store.rebuild_indexes(entries).map_err(corrupt)?;
        store.verify().map_err(corrupt)?;
        Ok(store)
    }

    /// Recomputes the live count, the byte count, the lease key sets and the
    /// revision log from the key histories.
    fn rebuild_indexes(&mut self, entries: u64) -> Result<(), String> {
        let first = self.compact_revision.max(2);
        let span = self.revision.saturating_sub(first).saturating_add(1).max(0);
        // Every revision the log covers wrote at least one entry, so a span
        // longer than the entries is corrupt (and must not be allocated).
        if span as u64 > entries {
            return Err(format!(
                "revisions {first}..={} cannot all have writes with {entries} entries",
                self.revision
            ));
        }
        let span = span as usize;
        let mut log: Vec<Vec<(u32, Arc<[u8]>)>> = vec![Vec::new(); span];
        for hist in self.keys.values() {
            for e in &hist.entries {
                self.size_bytes += (hist.key.len() + e.value_len()) as u64;
                if e.mod_revision >= first && e.mod_revision <= self.revision {
                    log[(e.mod_revision - first) as usize].push((e.sub, hist.key.clone()));
                }
            }
            if let Some((_, live)) = hist.latest() {
                self.live_keys += 1;
                if let Some(lease) = self.leases.get_mut(&live.lease) {
                    lease.keys.insert(hist.key.clone());
                }
            }
        }
        self.log = log
            .into_iter()
            .map(|mut record| {
                record.sort_unstable_by_key(|(sub, _)| *sub);
                record.into_iter().map(|(_, k)| k).collect()
            })
            .collect::<VecDeque<_>>();
        Ok(())
    }
}

/// Appends a run of a key's history read from a snapshot, checking order.
fn add_key_run(
    histories: &mut Vec<KeyHistory>,
    key: &[u8],
    run: Vec<Entry>,
) -> Result<(), StoreError> {
    if run.is_empty() {
        return Err(corrupt(format!("key {key:?} has an empty record")));
    }
    if let Some(last) = histories.last_mut() {
        if &last.key[..] == key {
            last.entries.extend(run);
            return Ok(());
        }
        if &last.key[..] > key {
            return Err(corrupt(format!("key {key:?} out of order")));
        }
    }
    histories.push(KeyHistory {
        key: Arc::from(key),
        entries: run,
    });
    Ok(())
}

/// Splits a history into runs of about [`SNAPSHOT_CHUNK_BYTES`] of values.
fn chunks(entries: &[Entry]) -> impl Iterator<Item = &[Entry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() && (n == 0 || bytes < SNAPSHOT_CHUNK_BYTES) {
            bytes += rest[n].value_len();
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}
