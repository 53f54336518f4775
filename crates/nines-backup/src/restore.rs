//! Rebuilds a [`nines_store::Store`] from a set's chain: the full's keys,
//! then the events of each later set up to the target revision, then the
//! leases alive at that point. Every file of the chain is verified before the
//! first record is applied, so a damaged chain yields an error and no store.
//! Writing data dirs from the store is the caller's job.
//!
//! The rebuilt store holds the same keys, values and lease attachments as the
//! source at the target revision, and every key keeps its `mod_revision`:
//! keys are written in source revision order, the keys of one source
//! revision in one transaction, and the revisions between them are taken by
//! writes to a padding key that is deleted at the end. The store then ends at
//! the target revision (or one past it) with its history compacted there, so
//! the new cluster goes on from the source's revision and a watch from an
//! older revision is told it was compacted (as `etcdutl snapshot restore
//! --mark-compacted` does). `create_revision` and `version` are not kept:
//! each key is created once.

use std::collections::BTreeMap;

use nines_store::{
    Command, DeleteRangeRequest, KeyValue, PutRequest, RequestOp, Store, TxnRequest,
};

use crate::catalog::{check_files, read_checked, resolve_chain};
use crate::error::BackupError;
use crate::format::Record;
use crate::manifest::Manifest;
use crate::repo::Repository;

/// What a restore rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The source revision the store matches.
    pub revision: i64,
    /// Sets applied, full first.
    pub sets: Vec<String>,
    /// Keys in the store.
    pub keys: u64,
    /// Leases in the store.
    pub leases: u64,
    /// Leases granted [`crate::LEASE_TTL_UNKNOWN_SECS`] because no set recorded their TTL.
    pub leases_ttl_unknown: u64,
    /// Cluster id of the source.
    pub source_cluster_id: u64,
}

/// Rebuilds the store of set `id` at its revision, or at `to_revision`
/// (which must lie between the chain's full and the set).
pub fn restore_store(
    repo: &dyn Repository,
    id: &str,
    to_revision: Option<i64>,
) -> Result<(Store, RestoreSummary), BackupError> {
    let chain = resolve_chain(repo, id)?;
    let (first, last) = (&chain[0], chain.last().expect("chain is not empty"));
    let target = to_revision.unwrap_or(last.end_revision);
    if target < first.end_revision || target > last.end_revision {
        return Err(BackupError::RevisionOutsideChain {
            id: id.to_string(),
            requested: target,
            first: first.end_revision,
            last: last.end_revision,
        });
    }
    // Check every byte of the chain before decoding anything; records are
    // checked as they are read, into a store in memory, so a fault anywhere
    // leaves nothing behind.
    for m in &chain {
        check_files(repo, m)?;
    }
    let used: Vec<&Manifest> = chain
        .iter()
        .take_while(|m| m.start_revision <= target)
        .collect();
    let mut keys: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    for m in &used {
        read_checked(repo, m, crate::DATA_FILE, |record| {
            match record {
                // The map owns each key once: the record's copy moves into
                // the map's key and is put back when the store is built.
                Record::Key(mut kv) => {
                    keys.insert(std::mem::take(&mut kv.key), kv);
                }
                Record::Event { delete, mut kv } if kv.mod_revision <= target => {
                    if delete {
                        keys.remove(&kv.key);
                    } else {
                        keys.insert(std::mem::take(&mut kv.key), kv);
                    }
                }
                Record::Event { .. } => {}
                Record::Lease { .. } => return Err("lease record in a data file"),
            }
            Ok(())
        })?;
    }
    let leases = leases_at(repo, &chain, target)?;
    build_store(keys, leases, &chain, target, id)
}

/// Lease TTLs by id: (alive at the target, recorded anywhere in the chain).
type LeaseTables = (BTreeMap<i64, i64>, BTreeMap<i64, i64>);

/// Leases as recorded by the first set of the chain that reaches `target`,
/// plus, for lease ids only other sets recorded, their TTLs from there.
fn leases_at(
    repo: &dyn Repository,
    chain: &[Manifest],
    target: i64,
) -> Result<LeaseTables, BackupError> {
    let mut at_target = BTreeMap::new();
    let mut known = BTreeMap::new();
    let covering = chain
        .iter()
        .position(|m| m.end_revision >= target)
        .expect("target lies inside the chain");
    for (i, m) in chain.iter().enumerate() {
        read_checked(repo, m, crate::LEASES_FILE, |record| match record {
            Record::Lease { id, ttl_secs } => {
                known.entry(id).or_insert(ttl_secs);
                if i == covering {
                    at_target.insert(id, ttl_secs);
                }
                Ok(())
            }
            _ => Err("non-lease record in the leases file"),
        })?;
    }
    Ok((at_target, known))
}

fn build_store(
    keys: BTreeMap<Vec<u8>, KeyValue>,
    (mut leases, known): LeaseTables,
    chain: &[Manifest],
    target: i64,
    id: &str,
) -> Result<(Store, RestoreSummary), BackupError> {
    let mut ttl_unknown = 0u64;
    for kv in keys.values() {
        if kv.lease != 0 && !leases.contains_key(&kv.lease) {
            let ttl = known.get(&kv.lease).copied().unwrap_or_else(|| {
                ttl_unknown += 1;
                crate::LEASE_TTL_UNKNOWN_SECS
            });
            leases.insert(kv.lease, ttl);
        }
    }
    let mut store = Store::new();
    for (&lease, &ttl_secs) in &leases {
        store
            .apply(&Command::LeaseGrant {
                id: lease,
                ttl_secs,
            })
            .result?;
    }
    let key_count = keys.len() as u64;
    let mut pad = Padding::new(&keys);
    let mut ordered: Vec<KeyValue> = keys
        .into_iter()
        .map(|(key, kv)| KeyValue { key, ..kv })
        .collect();
    // Stable: keys of one revision stay in key order.
    ordered.sort_by_key(|kv| kv.mod_revision);
    let mut rest = ordered.into_iter().peekable();
    // Each round takes at least one key, so this ends.
    while let Some(first) = rest.next() {
        let mod_revision = first.mod_revision;
        let mut puts = vec![first];
        while let Some(next) = rest.next_if(|kv| kv.mod_revision == mod_revision) {
            puts.push(next);
        }
        pad.advance_to(&mut store, mod_revision - 1)?;
        let put = |kv: KeyValue| PutRequest {
            key: kv.key,
            value: kv.value,
            lease: kv.lease,
            ..PutRequest::default()
        };
        // Keys written by one source revision are written by one revision here.
        let cmd = if puts.len() == 1 {
            Command::Put(put(puts.pop().expect("one key")))
        } else {
            Command::Txn(TxnRequest {
                compare: Vec::new(),
                success: puts.into_iter().map(|kv| RequestOp::Put(put(kv))).collect(),
                failure: Vec::new(),
            })
        };
        store.apply(&cmd).result?;
    }
    pad.advance_to(&mut store, target)?;
    pad.finish(&mut store)?;
    let summary = RestoreSummary {
        revision: target,
        sets: chain
            .iter()
            .take_while(|m| m.start_revision <= target)
            .map(|m| m.id.clone())
            .collect(),
        keys: key_count,
        leases: leases.len() as u64,
        leases_ttl_unknown: ttl_unknown,
        source_cluster_id: chain[0].cluster_id,
    };
    debug_assert_eq!(store.key_count() as u64, summary.keys, "restore of {id}");
    Ok((store, summary))
}

/// Takes the revisions between restored writes: alternately puts and deletes
/// a key that is in no restored set, compacting now and then so its history
/// stays small, and at the end deletes it and compacts at the final revision.
struct Padding {
    key: Vec<u8>,
    live: bool,
    steps: u64,
}

/// Padding writes between compactions of the padding key's history.
const PADDING_COMPACT_EVERY: u64 = 65_536;

impl Padding {
    fn new(keys: &BTreeMap<Vec<u8>, KeyValue>) -> Padding {
        let mut key = b"\xff\xffnines-backup-restore-padding".to_vec();
        // Bounded: each attempt adds a byte, and the set has finitely many keys.
        while keys.contains_key(&key) {
            key.push(b'_');
        }
        Padding {
            key,
            live: false,
            steps: 0,
        }
    }

    fn step(&mut self, store: &mut Store) -> Result<(), BackupError> {
        let cmd = if self.live {
            Command::DeleteRange(DeleteRangeRequest {
                key: self.key.clone(),
                ..DeleteRangeRequest::default()
            })
        } else {
            Command::Put(PutRequest {
                key: self.key.clone(),
                ..PutRequest::default()
            })
        };
        store.apply(&cmd).result?;
        self.live = !self.live;
        self.steps += 1;
        if self.steps.is_multiple_of(PADDING_COMPACT_EVERY) {
            store
                .apply(&Command::Compact {
                    revision: store.revision(),
                })
                .result?;
        }
        Ok(())
    }

    /// Writes padding until the store is at `revision` (never backwards).
    fn advance_to(&mut self, store: &mut Store, revision: i64) -> Result<(), BackupError> {
        // Each step moves the revision by exactly one, so this ends.
        while store.revision() < revision {
            self.step(store)?;
        }
        Ok(())
    }

    fn finish(mut self, store: &mut Store) -> Result<(), BackupError> {
        if self.live {
            self.step(store)?;
        }
        if store.revision() > store.compact_revision() {
            store
                .apply(&Command::Compact {
                    revision: store.revision(),
                })
                .result?;
        }
        Ok(())
    }
}
