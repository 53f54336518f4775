//! Reads: ranges at a revision (with etcd's range-end conventions, limits,
//! filters and sorting), compares, the change history that watches replay,
//! and the history hash. Nothing here mutates the store.

use std::cmp::Ordering;
use std::ops::Bound;

use crate::error::StoreError;
use crate::history::{key_value, Live};
use crate::store::Store;
use crate::types::{
    Compare, CompareResult, CompareTarget, Event, EventKind, KeyValue, RangeRequest, RangeResponse,
    SortOrder, SortTarget,
};

/// The keys a `(key, range_end)` pair names.
pub(crate) enum RangeBounds<'a> {
    /// No key at all (`range_end` at or before `key`).
    Empty,
    /// The keys within these bounds.
    Keys((Bound<&'a [u8]>, Bound<&'a [u8]>)),
}

/// Resolves etcd's range conventions: an empty `range_end` is the single
/// key, `[0]` is every key `>= key` (so `key == [0]` with it is every key),
/// anything else is `[key, range_end)`.
pub(crate) fn key_bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> RangeBounds<'a> {
    if range_end.is_empty() {
        return RangeBounds::Keys((Bound::Included(key), Bound::Included(key)));
    }
    if range_end == [0] {
        return RangeBounds::Keys((Bound::Included(key), Bound::Unbounded));
    }
    if range_end <= key {
        return RangeBounds::Empty;
    }
    RangeBounds::Keys((Bound::Included(key), Bound::Excluded(range_end)))
}

/// Whether `candidate` lies in the range `(key, range_end)` names.
pub(crate) fn in_range(candidate: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    match key_bounds(key, range_end) {
        RangeBounds::Empty => false,
        RangeBounds::Keys((_, end)) => {
            candidate >= key
                && match end {
                    Bound::Included(e) => candidate <= e,
                    Bound::Excluded(e) => candidate < e,
                    Bound::Unbounded => true,
                }
        }
    }
}

/// A live key version found by a range, before it is turned into a [`KeyValue`].
struct Found<'a> {
    key: &'a [u8],
    mod_revision: i64,
    live: &'a Live,
}

impl Found<'_> {
    fn cmp_by(&self, other: &Found<'_>, target: SortTarget) -> Ordering {
        match target {
            SortTarget::Key => self.key.cmp(other.key),
            SortTarget::Version => self.live.version.cmp(&other.live.version),
            SortTarget::Create => self.live.create_revision.cmp(&other.live.create_revision),
            SortTarget::Mod => self.mod_revision.cmp(&other.mod_revision),
            SortTarget::Value => self.live.value.cmp(&other.live.value),
        }
    }
}

impl Store {
    /// Reads a range. `revision <= 0` reads the current revision.
    ///
    /// # Errors
    /// `EmptyKey` for an empty key, `FutureRevision` above the current
    /// revision, `Compacted` below the compaction revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let revision = self.read_revision(req.revision)?;
        Ok(self.range_at(req, revision))
    }

    /// The revision a read asking for `requested` sees, or why it cannot.
    pub(crate) fn read_revision(&self, requested: i64) -> Result<i64, StoreError> {
        if requested > self.revision {
            return Err(StoreError::FutureRevision {
                requested,
                current: self.revision,
            });
        }
        let revision = if requested <= 0 {
            self.revision
        } else {
            requested
        };
        if revision < self.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compact_revision,
            });
        }
        Ok(revision)
    }

    /// Visits every key live at `revision` in the range, in key order.
    fn for_each_live<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
        revision: i64,
        mut visit: impl FnMut(Found<'a>),
    ) {
        let RangeBounds::Keys(bounds) = key_bounds(key, range_end) else {
            return;
        };
        for (k, hist) in self.keys.range::<[u8], _>(bounds) {
            if let Some((mod_revision, live)) = hist.live_at(revision) {
                visit(Found {
                    key: k,
                    mod_revision,
                    live,
                });
            }
        }
    }

    /// Reads a range at an already validated revision, following etcd 3.4:
    /// `count` is every key in range at that revision, before the filters
    /// and the limit; filters, then sorting, then the limit apply to `kvs`.
    pub(crate) fn range_at(&self, req: &RangeRequest, revision: i64) -> RangeResponse {
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let order = match (req.sort_order, req.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        // Without filters or sorting only the first `limit + 1` keys matter
        // (the extra one sets `more`); the rest are only counted.
        let keep = if req.count_only {
            0
        } else if req.limit > 0 && !filtered && order == SortOrder::None {
            req.limit as usize + 1
        } else {
            usize::MAX
        };
        let mut count = 0i64;
        let mut found: Vec<Found<'_>> = Vec::new();
        self.for_each_live(&req.key, &req.range_end, revision, |f| {
            count += 1;
            if found.len() < keep && passes_filters(req, &f) {
                found.push(f);
            }
        });
        match order {
            SortOrder::None => {}
            SortOrder::Ascend => found.sort_by(|a, b| a.cmp_by(b, req.sort_target)),
            SortOrder::Descend => found.sort_by(|a, b| b.cmp_by(a, req.sort_target)),
        }
        let mut more = false;
        if req.limit > 0 && found.len() > req.limit as usize {
            found.truncate(req.limit as usize);
            more = true;
        }
        RangeResponse {
            kvs: found
                .iter()
                .map(|f| key_value(f.key, f.mod_revision, f.live, req.keys_only))
                .collect(),
            more,
            count,
        }
    }

    /// Evaluates one compare at `revision`: every live key in its range must
    /// satisfy it; an empty range compares a zero key-value, except that a
    /// value compare on absent keys always fails (etcd's rule).
    pub(crate) fn compare_holds(&self, cmp: &Compare, revision: i64) -> bool {
        let mut any = false;
        let mut all = true;
        self.for_each_live(&cmp.key, &cmp.range_end, revision, |f| {
            any = true;
            if all {
                all = compare_one(cmp, Some(&f));
            }
        });
        if any {
            all
        } else {
            !matches!(cmp.target, CompareTarget::Value(_)) && compare_one(cmp, None)
        }
    }

    /// The events of revisions `>= start_revision` for keys in the range, in
    /// `(revision, sub)` order. Stops at the end of the first revision that
    /// brings the count to `max_events` or more, so a revision is never split.
    /// A `start_revision` below 1 is treated as 1.
    ///
    /// # Errors
    /// `Compacted` when `start_revision` is below the compaction revision
    /// (etcd's rule: a watch may start at the compaction revision itself).
    pub fn changes(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max_events: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if start_revision < self.compact_revision {
            return Err(StoreError::Compacted {
                requested: start_revision,
                compacted: self.compact_revision,
            });
        }
        let first = self.log_first_revision();
        let start = start_revision.max(first);
        let mut events = Vec::new();
        if start > self.revision {
            return Ok(events);
        }
        let skip = (start - first) as usize;
        for (offset, record) in self.log.range(skip..).enumerate() {
            if events.len() >= max_events {
                break;
            }
            let revision = start + offset as i64;
            for (sub, k) in record.iter().enumerate() {
                if !in_range(k, key, range_end) {
                    continue;
                }
                events.push(self.event_at(k, revision, sub as u32));
            }
        }
        Ok(events)
    }

    /// Rebuilds the event of the write at `(revision, sub)` to `key`.
    fn event_at(&self, key: &[u8], revision: i64, sub: u32) -> Event {
        let hist = self.keys.get(key).expect("a logged key has a history");
        let (entry, prev) = hist
            .entry_with_prev(revision, sub)
            .expect("a logged write is kept in its key's history");
        let prev_kv = prev.and_then(|p| {
            p.live
                .as_ref()
                .map(|l| key_value(key, p.mod_revision, l, false))
        });
        match &entry.live {
            Some(live) => Event {
                kind: EventKind::Put,
                kv: key_value(key, revision, live, false),
                prev_kv,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.to_vec(),
                    mod_revision: revision,
                    ..KeyValue::default()
                },
                prev_kv,
            },
        }
    }

    /// A crc32 over every kept entry with main revision `<= revision` (0 is
    /// the current revision), in key then revision order, and the compaction
    /// revision. Members with the same history get the same hash. Returns the
    /// hash and the compaction revision.
    ///
    /// # Errors
    /// `FutureRevision` above the current revision, `Compacted` below the
    /// compaction revision.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), StoreError> {
        let upto = self.read_revision(revision)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.compact_revision.to_le_bytes());
        for (key, hist) in &self.keys {
            for e in hist.entries.iter().take_while(|e| e.mod_revision <= upto) {
                hasher.update(&(key.len() as u64).to_le_bytes());
                hasher.update(key);
                hasher.update(&e.mod_revision.to_le_bytes());
                hasher.update(&e.sub.to_le_bytes());
                match &e.live {
                    None => hasher.update(&[0]),
                    Some(l) => {
                        hasher.update(&[1]);
                        hasher.update(&l.create_revision.to_le_bytes());
                        hasher.update(&l.version.to_le_bytes());
                        hasher.update(&l.lease.to_le_bytes());
                        hasher.update(&(l.value.len() as u64).to_le_bytes());
                        hasher.update(&l.value);
                    }
                }
            }
        }
        Ok((hasher.finalize(), self.compact_revision))
    }
}

fn passes_filters(req: &RangeRequest, f: &Found<'_>) -> bool {
    let m = f.mod_revision;
    let c = f.live.create_revision;
    !(req.max_mod_revision != 0 && m > req.max_mod_revision
        || req.min_mod_revision != 0 && m < req.min_mod_revision
        || req.max_create_revision != 0 && c > req.max_create_revision
        || req.min_create_revision != 0 && c < req.min_create_revision)
}

/// Compares one key (`None` = the zero key-value of an absent key).
fn compare_one(cmp: &Compare, found: Option<&Found<'_>>) -> bool {
    let ordering = match &cmp.target {
        CompareTarget::Value(v) => {
            let current: &[u8] = found.map_or(&[], |f| &f.live.value);
            current.cmp(v.as_slice())
        }
        CompareTarget::Version(v) => found.map_or(0, |f| f.live.version).cmp(v),
        CompareTarget::CreateRevision(v) => found.map_or(0, |f| f.live.create_revision).cmp(v),
        CompareTarget::ModRevision(v) => found.map_or(0, |f| f.mod_revision).cmp(v),
        CompareTarget::Lease(v) => found.map_or(0, |f| f.live.lease).cmp(v),
    };
    match cmp.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}
