//! The store's invariants, checked in full: tests call
//! [`Store::check_invariants`] after every step, and a loaded snapshot must
//! pass the same checks before it is accepted. Read-only; costs O(state).

use std::collections::BTreeMap;

use crate::history::Entry;
use crate::store::Store;

/// What the key histories add up to, checked against the store's counters.
struct KeyTally<'a> {
    /// Keys live at the current revision.
    live: usize,
    /// Key and value bytes over all kept entries.
    size: u64,
    /// Entries the revision log must list.
    logged: usize,
    /// Leased live keys and their lease.
    attached: BTreeMap<&'a [u8], i64>,
}

impl Store {
    /// Panics if an invariant is broken. Costs time proportional to the
    /// whole state: for tests and debugging, not the apply path.
    ///
    /// # Panics
    /// When an invariant is broken, naming it.
    pub fn check_invariants(&self) {
        if let Err(reason) = self.verify() {
            panic!("store invariant broken: {reason}");
        }
    }

    /// Checks every invariant and names the first one broken.
    pub(crate) fn verify(&self) -> Result<(), String> {
        if self.revision < 1 {
            return Err(format!("revision {} is below 1", self.revision));
        }
        if self.compact_revision < 0 || self.compact_revision > self.revision {
            return Err(format!(
                "compact revision {} outside 0..={}",
                self.compact_revision, self.revision
            ));
        }
        if self.leases.contains_key(&0) {
            return Err("lease id 0 exists".into());
        }
        let expected_log_len = (self.revision - self.compact_revision.max(2) + 1).max(0);
        if self.log.len() as i64 != expected_log_len {
            return Err(format!(
                "log holds {} revisions, expected {expected_log_len}",
                self.log.len()
            ));
        }
        let KeyTally {
            live,
            size,
            logged: logged_entries,
            attached,
        } = self.verify_keys()?;
        if live != self.live_keys {
            return Err(format!(
                "{live} live keys counted, {} recorded",
                self.live_keys
            ));
        }
        if size != self.size_bytes {
            return Err(format!(
                "{size} bytes counted, {} recorded",
                self.size_bytes
            ));
        }
        self.verify_log(logged_entries)?;
        for (id, lease) in &self.leases {
            for key in &lease.keys {
                if attached.get(&key[..]) != Some(id) {
                    return Err(format!(
                        "lease {id} lists key {key:?} that is not attached to it"
                    ));
                }
            }
        }
        let listed: usize = self.leases.values().map(|l| l.keys.len()).sum();
        if listed != attached.len() {
            return Err(format!(
                "{listed} keys in lease sets, {} leased live keys",
                attached.len()
            ));
        }
        Ok(())
    }

    /// Checks each key's history; returns the live key count, the byte
    /// count, the number of entries the log must list, and the leased keys.
    fn verify_keys(&self) -> Result<KeyTally<'_>, String> {
        let mut live = 0;
        let mut size = 0u64;
        let mut logged = 0;
        let mut attached = BTreeMap::new();
        for (key, hist) in &self.keys {
            if key.is_empty() || hist.key != *key {
                return Err(format!(
                    "key {key:?} is empty or its history names another key"
                ));
            }
            if hist.entries.is_empty() {
                return Err(format!("key {key:?} has an empty history"));
            }
            let mut prev: Option<&Entry> = None;
            for e in &hist.entries {
                self.verify_entry(key, prev, e)?;
                if e.mod_revision >= self.compact_revision {
                    logged += 1;
                }
                size += (key.len() + e.value_len()) as u64;
                prev = Some(e);
            }
            let below = hist
                .entries
                .iter()
                .filter(|e| e.mod_revision <= self.compact_revision)
                .count();
            if self.compact_revision > 0 && below > 1 {
                return Err(format!(
                    "key {key:?} keeps {below} writes at or before the compaction"
                ));
            }
            if let Some((_, l)) = hist.latest() {
                live += 1;
                if l.lease != 0 {
                    if !self.leases.contains_key(&l.lease) {
                        return Err(format!(
                            "live key {key:?} carries missing lease {}",
                            l.lease
                        ));
                    }
                    attached.insert(&key[..], l.lease);
                }
            }
        }
        Ok(KeyTally {
            live,
            size,
            logged,
            attached,
        })
    }

    /// Checks one entry of a key's history against the one before it.
    fn verify_entry(&self, key: &[u8], prev: Option<&Entry>, e: &Entry) -> Result<(), String> {
        if e.mod_revision < 2 || e.mod_revision > self.revision {
            return Err(format!(
                "key {key:?} has a write at revision {}",
                e.mod_revision
            ));
        }
        if prev.is_some_and(|p| p.mod_revision >= e.mod_revision) {
            return Err(format!(
                "key {key:?} has two writes at or out of revision order"
            ));
        }
        let prev_live = prev.and_then(|p| p.live.as_ref());
        match &e.live {
            Some(l) => {
                let fresh = prev.is_some_and(|p| p.live.is_none());
                let ok = match prev_live {
                    Some(p) => l.create_revision == p.create_revision && l.version == p.version + 1,
                    // A new generation, or the oldest kept version of one.
                    None if fresh || l.version == 1 => {
                        l.version == 1 && l.create_revision == e.mod_revision
                    }
                    // Older versions of this generation were compacted,
                    // so this one was superseded no later than the compaction.
                    None => {
                        l.version > 1
                            && l.create_revision < e.mod_revision
                            && e.mod_revision <= self.compact_revision
                    }
                };
                if !ok {
                    return Err(format!(
                        "key {key:?} at revision {} has version {} create {} that do not follow",
                        e.mod_revision, l.version, l.create_revision
                    ));
                }
            }
            None if prev.is_some() && prev_live.is_none() => {
                return Err(format!("key {key:?} has two tombstones in a row"));
            }
            // Only the tombstone kept at the compaction revision may be
            // the oldest entry of a history.
            None if prev.is_none() && e.mod_revision != self.compact_revision => {
                return Err(format!(
                    "key {key:?} starts with a tombstone at {} not at the compaction",
                    e.mod_revision
                ));
            }
            None => {}
        }
        Ok(())
    }

    /// Checks that the log lists exactly the kept writes of its revisions.
    fn verify_log(&self, logged_entries: usize) -> Result<(), String> {
        let first = self.log_first_revision();
        let mut listed = 0;
        for (offset, record) in self.log.iter().enumerate() {
            let revision = first + offset as i64;
            if record.is_empty() {
                return Err(format!("revision {revision} wrote nothing"));
            }
            for (sub, key) in record.iter().enumerate() {
                let found = self
                    .keys
                    .get(&key[..])
                    .and_then(|h| h.entry_with_prev(revision, sub as u32));
                if found.is_none() {
                    return Err(format!(
                        "log lists {key:?} at {revision}.{sub} but it is not kept"
                    ));
                }
                listed += 1;
            }
        }
        if listed != logged_entries {
            return Err(format!(
                "log lists {listed} writes, histories keep {logged_entries} at or after the compaction"
            ));
        }
        Ok(())
    }
}
