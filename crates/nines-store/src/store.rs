//! The [`Store`]: the keyspace with its history, the lease table and the
//! revision log, and the one mutation entry point [`Store::apply`]. Every
//! command is validated in full before anything changes, so an error leaves
//! the store untouched. Reads live in `read.rs`, transactions in `txn.rs`,
//! the snapshot format in `snapshot.rs`; this module must not touch the
//! network, the clock or any I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::error::StoreError;
use crate::history::{key_value, Entry, KeyHistory, Live};
use crate::read::{key_bounds, RangeBounds};
use crate::types::{
    AlarmAction, AlarmKind, AlarmMember, Command, CommandResponse, DeleteRangeRequest,
    DeleteRangeResponse, Event, EventKind, KeyValue, Lease, PutRequest, PutResponse, RequestOp,
    TxnRequest,
};
use crate::LEASE_TTL_SECS_MAX;

/// The MVCC key-value state machine. Build it empty with [`Store::new`] or
/// from a snapshot with [`Store::read_snapshot`]; change it only with
/// [`Store::apply`].
pub struct Store {
    /// Every key with kept history, live or not.
    pub(crate) keys: BTreeMap<Arc<[u8]>, KeyHistory>,
    /// Leases by id.
    pub(crate) leases: BTreeMap<i64, LeaseState>,
    /// The current (header) revision.
    pub(crate) revision: i64,
    /// The last compaction revision, 0 if none.
    pub(crate) compact_revision: i64,
    /// Keys written per revision, in sub-revision order, for revisions
    /// `log_first_revision()..=revision`.
    // Invariant: every revision in that span wrote at least one key, because
    // the revision only moves when something is written.
    pub(crate) log: VecDeque<Vec<Arc<[u8]>>>,
    /// Keys live at the current revision.
    pub(crate) live_keys: usize,
    /// Sum of key and value lengths over all kept entries.
    pub(crate) size_bytes: u64,
    /// Raised alarms.
    pub(crate) alarms: BTreeSet<AlarmMember>,
}

/// A lease and the keys attached to it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseState {
    /// Granted TTL in seconds.
    pub ttl_secs: i64,
    /// Live keys whose current version carries this lease.
    pub keys: BTreeSet<Arc<[u8]>>,
}

/// The outcome of [`Store::apply`].
#[derive(Debug)]
pub struct Applied {
    /// Store revision after the command (unchanged if nothing was written).
    pub revision: i64,
    /// The response; an `Err` means nothing changed.
    pub result: Result<CommandResponse, StoreError>,
    /// Watch events produced, in order (empty on `Err`).
    pub events: Vec<Event>,
}

/// The writes of one revision while it is being applied.
pub(crate) struct WriteBatch {
    /// The revision being written (current + 1).
    pub revision: i64,
    /// Keys written, in sub-revision order.
    pub keys: Vec<Arc<[u8]>>,
    /// Events produced, in the same order.
    pub events: Vec<Event>,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("revision", &self.revision)
            .field("compact_revision", &self.compact_revision)
            .field("keys_with_history", &self.keys.len())
            .field("live_keys", &self.live_keys)
            .field("leases", &self.leases.len())
            .field("log_revisions", &self.log.len())
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

impl Store {
    /// An empty store at revision 1, as a fresh etcd.
    pub fn new() -> Store {
        Store {
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
            revision: 1,
            compact_revision: 0,
            log: VecDeque::new(),
            live_keys: 0,
            size_bytes: 0,
            alarms: BTreeSet::new(),
        }
    }

    /// The raised alarms, by member and kind.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.iter().copied().collect()
    }

    /// Whether an alarm of `kind` is raised by any member.
    pub fn has_alarm(&self, kind: AlarmKind) -> bool {
        self.alarms.iter().any(|a| a.kind == kind)
    }

    /// The current (header) revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The last compaction revision, 0 if none.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Granted TTL of an existing lease.
    pub fn lease_ttl(&self, id: i64) -> Option<i64> {
        self.leases.get(&id).map(|l| l.ttl_secs)
    }

    /// All leases, ordered by id.
    pub fn leases(&self) -> Vec<Lease> {
        self.leases
            .iter()
            .map(|(&id, l)| Lease {
                id,
                ttl_secs: l.ttl_secs,
            })
            .collect()
    }

    /// Keys currently attached to the lease, sorted (empty for an unknown lease).
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().map(|k| k.to_vec()).collect())
            .unwrap_or_default()
    }

    /// Live keys at the current revision.
    pub fn key_count(&self) -> usize {
        self.live_keys
    }

    /// Rough bytes held: keys and values of every kept revision.
    pub fn approx_size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The first revision the log covers: writes before it are compacted.
    pub(crate) fn log_first_revision(&self) -> i64 {
        self.revision - self.log.len() as i64 + 1
    }

    /// Applies one command deterministically. On error nothing changed.
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        if self.has_alarm(AlarmKind::NoSpace) && adds_data(cmd) {
            return Applied {
                revision: self.revision,
                result: Err(StoreError::NoSpace),
                events: Vec::new(),
            };
        }
        let result = match cmd {
            Command::Put(req) => self.apply_put(req),
            Command::DeleteRange(req) => self.apply_delete_range(req),
            Command::Txn(req) => self.apply_txn(req),
            Command::Compact { revision } => self.apply_compact(*revision),
            Command::LeaseGrant { id, ttl_secs } => self.apply_lease_grant(*id, *ttl_secs),
            Command::LeaseRevoke { id } => self.apply_lease_revoke(*id),
            Command::Alarm { action, alarm } => Ok((self.apply_alarm(*action, *alarm), None)),
        };
        match result {
            Ok((response, batch)) => {
                let events = batch.map(|b| self.commit(b)).unwrap_or_default();
                Applied {
                    revision: self.revision,
                    result: Ok(response),
                    events,
                }
            }
            Err(e) => Applied {
                revision: self.revision,
                result: Err(e),
                events: Vec::new(),
            },
        }
    }

    /// Starts the batch for the next revision.
    pub(crate) fn begin(&self) -> WriteBatch {
        WriteBatch {
            revision: self.revision + 1,
            keys: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Makes a batch's writes the current revision (if it wrote anything)
    /// and hands back its events.
    fn commit(&mut self, batch: WriteBatch) -> Vec<Event> {
        if batch.keys.is_empty() {
            return Vec::new();
        }
        assert_eq!(
            batch.revision,
            self.revision + 1,
            "revisions are applied in order"
        );
        self.revision = batch.revision;
        self.log.push_back(batch.keys);
        batch.events
    }

    fn apply_put(&mut self, req: &PutRequest) -> ApplyResult {
        check_put_static(req)?;
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(StoreError::LeaseNotFound { id: req.lease });
        }
        self.check_put_target_exists(req)?;
        let mut batch = self.begin();
        let response = self.put_key(&mut batch, req);
        Ok((CommandResponse::Put(response), Some(batch)))
    }

    fn apply_delete_range(&mut self, req: &DeleteRangeRequest) -> ApplyResult {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let mut batch = self.begin();
        let response = self.delete_range(&mut batch, req);
        Ok((CommandResponse::DeleteRange(response), Some(batch)))
    }

    fn apply_compact(&mut self, revision: i64) -> ApplyResult {
        if revision <= self.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        self.compact(revision);
        Ok((CommandResponse::Compact, None))
    }

    /// Raises or clears an alarm; answers with the alarms it changed. No key
    /// changes, so the revision stays.
    fn apply_alarm(&mut self, action: AlarmAction, alarm: AlarmMember) -> CommandResponse {
        let changed = match action {
            AlarmAction::Activate => self.alarms.insert(alarm),
            AlarmAction::Deactivate => self.alarms.remove(&alarm),
        };
        CommandResponse::Alarm(if changed { vec![alarm] } else { Vec::new() })
    }

    fn apply_lease_grant(&mut self, id: i64, ttl_secs: i64) -> ApplyResult {
        // The order of checks follows etcd's lessor.
        if id == 0 {
            return Err(StoreError::LeaseNotFound { id });
        }
        if ttl_secs > LEASE_TTL_SECS_MAX {
            return Err(StoreError::LeaseTtlTooLarge { ttl_secs });
        }
        if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists { id });
        }
        self.leases.insert(
            id,
            LeaseState {
                ttl_secs,
                keys: BTreeSet::new(),
            },
        );
        Ok((CommandResponse::LeaseGrant(Lease { id, ttl_secs }), None))
    }

    fn apply_lease_revoke(&mut self, id: i64) -> ApplyResult {
        let Some(lease) = self.leases.get(&id) else {
            return Err(StoreError::LeaseNotFound { id });
        };
        // Deleting in key order makes the sub-revisions identical on every member.
        let keys: Vec<Arc<[u8]>> = lease.keys.iter().cloned().collect();
        let mut batch = self.begin();
        for key in &keys {
            self.delete_key(&mut batch, key);
        }
        self.leases.remove(&id);
        Ok((CommandResponse::LeaseRevoke, Some(batch)))
    }

    /// Fails with `KeyNotFound` when `ignore_value`/`ignore_lease` names an absent key.
    pub(crate) fn check_put_target_exists(&self, req: &PutRequest) -> Result<(), StoreError> {
        if (req.ignore_value || req.ignore_lease)
            && self
                .keys
                .get(&req.key[..])
                .and_then(|h| h.live_at(self.revision))
                .is_none()
        {
            return Err(StoreError::KeyNotFound);
        }
        Ok(())
    }

    /// Writes one key in `batch`. The request must have been validated.
    pub(crate) fn put_key(&mut self, batch: &mut WriteBatch, req: &PutRequest) -> PutResponse {
        let revision = batch.revision;
        let sub = batch.keys.len() as u32;
        let hist = self
            .keys
            .entry(Arc::from(&req.key[..]))
            .or_insert_with_key(|k| KeyHistory::new(k.clone()));
        let prev = hist.latest();
        let prev_kv = prev.map(|(m, l)| key_value(&req.key, m, l, false));
        let (create_revision, version, old_lease) = match prev {
            Some((_, l)) => (l.create_revision, l.version + 1, l.lease),
            None => (revision, 1, 0),
        };
        let value = match (req.ignore_value, &prev_kv) {
            (true, Some(p)) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = if req.ignore_lease {
            old_lease
        } else {
            req.lease
        };
        let live = Live {
            value,
            lease,
            create_revision,
            version,
        };
        let kv = key_value(&req.key, revision, &live, false);
        self.size_bytes += (req.key.len() + live.value.len()) as u64;
        hist.entries.push(Entry {
            mod_revision: revision,
            sub,
            live: Some(live),
        });
        let key = hist.key.clone();
        if prev_kv.is_none() {
            self.live_keys += 1;
        }
        if old_lease != lease {
            self.detach(old_lease, &key);
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(key.clone());
            }
        }
        batch.keys.push(key);
        let response = PutResponse {
            prev_kv: if req.prev_kv { prev_kv.clone() } else { None },
        };
        batch.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv,
        });
        response
    }

    /// Deletes every key live in the range (as of the writes so far in `batch`).
    pub(crate) fn delete_range(
        &mut self,
        batch: &mut WriteBatch,
        req: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let keys: Vec<Arc<[u8]>> = match key_bounds(&req.key, &req.range_end) {
            RangeBounds::Empty => Vec::new(),
            RangeBounds::Keys(bounds) => self
                .keys
                .range::<[u8], _>(bounds)
                .filter(|(_, h)| h.latest().is_some())
                .map(|(k, _)| k.clone())
                .collect(),
        };
        let mut response = DeleteRangeResponse {
            deleted: keys.len() as i64,
            prev_kvs: Vec::new(),
        };
        for key in &keys {
            let prev = self.delete_key(batch, key);
            if req.prev_kv {
                response.prev_kvs.push(prev);
            }
        }
        response
    }

    /// Writes a tombstone for a live key and returns its previous version.
    fn delete_key(&mut self, batch: &mut WriteBatch, key: &Arc<[u8]>) -> KeyValue {
        let revision = batch.revision;
        let sub = batch.keys.len() as u32;
        let hist = self
            .keys
            .get_mut(&key[..])
            .expect("a key chosen for delete has a history");
        let (prev_mod, prev) = hist.latest().expect("a key chosen for delete is live");
        let prev_kv = key_value(key, prev_mod, prev, false);
        let old_lease = prev.lease;
        hist.entries.push(Entry {
            mod_revision: revision,
            sub,
            live: None,
        });
        self.size_bytes += key.len() as u64;
        self.live_keys -= 1;
        self.detach(old_lease, key);
        batch.keys.push(key.clone());
        batch.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                mod_revision: revision,
                ..KeyValue::default()
            },
            prev_kv: Some(prev_kv.clone()),
        });
        prev_kv
    }

    fn detach(&mut self, lease: i64, key: &[u8]) {
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.remove(key);
            }
        }
    }

    /// Drops history superseded at or before `at` (validated by the caller).
    fn compact(&mut self, at: i64) {
        // Only keys written in the log's revisions up to `at` can hold
        // droppable entries: everything older was compacted before, except
        // a tombstone kept at the previous compaction revision, and that
        // revision is the log's first one. Compacting a key is idempotent,
        // so a key written in several of these revisions is simply visited
        // again (cheaper than sorting the keys to visit each once).
        let first = self.log_first_revision();
        let below = ((at - first).max(0) as usize).min(self.log.len());
        for record in self.log.drain(..below) {
            for key in &record {
                compact_key(&mut self.keys, &mut self.size_bytes, key, at);
            }
        }
        // The record of `at` itself stays: a watch may still start there.
        if at >= first {
            if let Some(record) = self.log.front() {
                for key in record {
                    compact_key(&mut self.keys, &mut self.size_bytes, key, at);
                }
            }
        }
        self.compact_revision = at;
    }
}

/// Compacts one key's history at `at`, removing the key once nothing of it is kept.
fn compact_key(
    keys: &mut BTreeMap<Arc<[u8]>, KeyHistory>,
    size_bytes: &mut u64,
    key: &[u8],
    at: i64,
) {
    // A key met again after its history emptied is already gone.
    let Some(hist) = keys.get_mut(key) else {
        return;
    };
    let (bytes, _) = hist.compact(at);
    *size_bytes -= bytes;
    if hist.entries.is_empty() {
        keys.remove(key);
    }
}

/// What a command handler returns: the response and, if it may have written,
/// the batch to commit.
type ApplyResult = Result<(CommandResponse, Option<WriteBatch>), StoreError>;

/// Checks of a put that need no state: etcd's request validation.
pub(crate) fn check_put_static(req: &PutRequest) -> Result<(), StoreError> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

/// Whether a command would add data, which the NOSPACE alarm refuses (as
/// etcd's capped applier does): puts, transactions with a put anywhere, and
/// lease grants. Deletes, compaction and revokes free space and pass.
pub fn adds_data(cmd: &Command) -> bool {
    added_bytes(cmd).is_some()
}

/// The key and value bytes a command adds at most (the larger branch of a
/// transaction), or `None` when it adds no data (see [`adds_data`]).
pub fn added_bytes(cmd: &Command) -> Option<u64> {
    fn txn_puts(t: &TxnRequest) -> Option<u64> {
        let branch = |ops: &[RequestOp]| {
            ops.iter()
                .filter_map(|op| match op {
                    RequestOp::Put(p) => Some((p.key.len() + p.value.len()) as u64),
                    RequestOp::Txn(inner) => txn_puts(inner),
                    RequestOp::Range(_) | RequestOp::DeleteRange(_) => None,
                })
                .reduce(|a, b| a + b)
        };
        match (branch(&t.success), branch(&t.failure)) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
        }
    }
    match cmd {
        Command::Put(p) => Some((p.key.len() + p.value.len()) as u64),
        Command::LeaseGrant { .. } => Some(0),
        Command::Txn(t) => txn_puts(t),
        Command::DeleteRange(_)
        | Command::Compact { .. }
        | Command::LeaseRevoke { .. }
        | Command::Alarm { .. } => None,
    }
}
