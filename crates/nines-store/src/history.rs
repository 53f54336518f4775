//! The version history of one key: every kept write, oldest first, each a
//! live value or a tombstone. It owns the per-key rules (what a read at a
//! revision sees, what compaction keeps); it knows nothing of leases, the
//! revision log or other keys.

use std::sync::Arc;

use crate::types::KeyValue;

/// The data of a key version that exists (not a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
    /// Revision that created this generation of the key.
    pub create_revision: i64,
    /// Writes since creation, 1 for the creating put.
    pub version: i64,
}

/// One write to a key: a put (live data) or a delete (tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Main revision of the write.
    pub mod_revision: i64,
    /// Position of the write inside its revision (a txn writes several keys).
    pub sub: u32,
    /// The key's data after the write; `None` is a tombstone.
    pub live: Option<Live>,
}

impl Entry {
    /// Bytes this entry's value holds (0 for a tombstone).
    pub fn value_len(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.value.len())
    }
}

/// All kept writes of one key, ordered by `(mod_revision, sub)`.
#[derive(Clone, Debug)]
pub(crate) struct KeyHistory {
    /// The key, shared with the revision log and the lease index.
    pub key: Arc<[u8]>,
    /// Kept writes, oldest first; never empty while the key is in the store.
    pub entries: Vec<Entry>,
}

impl KeyHistory {
    /// A history with no writes yet.
    pub fn new(key: Arc<[u8]>) -> KeyHistory {
        KeyHistory {
            key,
            entries: Vec::with_capacity(1),
        }
    }

    /// The newest entry with `mod_revision <= revision`.
    pub fn entry_at(&self, revision: i64) -> Option<&Entry> {
        // Most reads are at the current revision, so look at the tail first.
        let last = self.entries.last()?;
        if last.mod_revision <= revision {
            return Some(last);
        }
        let idx = self.entries.partition_point(|e| e.mod_revision <= revision);
        idx.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The key's live data at `revision`, with its mod_revision.
    pub fn live_at(&self, revision: i64) -> Option<(i64, &Live)> {
        let e = self.entry_at(revision)?;
        e.live.as_ref().map(|l| (e.mod_revision, l))
    }

    /// The key's data after its newest write (which may be in the revision
    /// being written right now).
    pub fn latest(&self) -> Option<(i64, &Live)> {
        let e = self.entries.last()?;
        e.live.as_ref().map(|l| (e.mod_revision, l))
    }

    /// The entry written at exactly `(revision, sub)` and the live entry before it, if kept.
    pub fn entry_with_prev(&self, revision: i64, sub: u32) -> Option<(&Entry, Option<&Entry>)> {
        let idx = self
            .entries
            .binary_search_by(|e| (e.mod_revision, e.sub).cmp(&(revision, sub)))
            .ok()?;
        let prev = idx
            .checked_sub(1)
            .map(|i| &self.entries[i])
            .filter(|e| e.live.is_some());
        Some((&self.entries[idx], prev))
    }

    /// Drops every entry superseded at or before `at`, and tombstones older
    /// than `at`. A tombstone written exactly at `at` is kept so a watch that
    /// starts at the compaction revision still sees that delete; it goes at
    /// the next compaction. Returns the bytes and the number of entries dropped.
    pub fn compact(&mut self, at: i64) -> (u64, usize) {
        let newest_le = self.entries.partition_point(|e| e.mod_revision <= at);
        if newest_le == 0 {
            return (0, 0);
        }
        let idx = newest_le - 1;
        let keep_idx = {
            let e = &self.entries[idx];
            if e.live.is_some() || e.mod_revision == at {
                idx
            } else {
                idx + 1
            }
        };
        let dropped: u64 = self.entries[..keep_idx]
            .iter()
            .map(|e| (self.key.len() + e.value_len()) as u64)
            .sum();
        self.entries.drain(..keep_idx);
        (dropped, keep_idx)
    }
}

/// Builds the client view of a live key version.
pub(crate) fn key_value(key: &[u8], mod_revision: i64, live: &Live, keys_only: bool) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: live.create_revision,
        mod_revision,
        version: live.version,
        value: if keys_only {
            Vec::new()
        } else {
            live.value.clone()
        },
        lease: live.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, version: i64, create: i64) -> Entry {
        Entry {
            mod_revision: rev,
            sub: 0,
            live: Some(Live {
                value: vec![b'v'; 3],
                lease: 0,
                create_revision: create,
                version,
            }),
        }
    }

    fn tomb(rev: i64) -> Entry {
        Entry {
            mod_revision: rev,
            sub: 0,
            live: None,
        }
    }

    fn history(entries: Vec<Entry>) -> KeyHistory {
        KeyHistory {
            key: Arc::from(&b"k"[..]),
            entries,
        }
    }

    #[test]
    fn entry_at_finds_newest_not_after_revision() {
        let h = history(vec![put(2, 1, 2), put(5, 2, 2), tomb(7)]);
        assert!(h.entry_at(1).is_none());
        assert_eq!(h.entry_at(4).map(|e| e.mod_revision), Some(2));
        assert_eq!(h.entry_at(5).map(|e| e.mod_revision), Some(5));
        assert_eq!(h.live_at(6).map(|(m, _)| m), Some(5));
        assert!(h.live_at(7).is_none());
        assert!(h.latest().is_none());
    }

    #[test]
    fn compact_keeps_newest_live_version_at_or_before_revision() {
        let mut h = history(vec![put(2, 1, 2), put(5, 2, 2), put(9, 3, 2)]);
        let (bytes, n) = h.compact(6);
        assert_eq!((bytes, n), (4, 1));
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.entries[0].mod_revision, 5);
    }

    #[test]
    fn compact_drops_tombstone_before_revision_but_keeps_one_at_it() {
        let mut h = history(vec![put(2, 1, 2), tomb(4), put(6, 1, 6)]);
        h.compact(4);
        assert_eq!(
            h.entries.iter().map(|e| e.mod_revision).collect::<Vec<_>>(),
            vec![4, 6]
        );
        h.compact(5);
        assert_eq!(
            h.entries.iter().map(|e| e.mod_revision).collect::<Vec<_>>(),
            vec![6]
        );
    }

    #[test]
    fn compact_of_deleted_key_empties_history() {
        let mut h = history(vec![put(2, 1, 2), tomb(3)]);
        h.compact(10);
        assert!(h.entries.is_empty());
    }
}
