//! Model-based test: a naive model of etcd's MVCC semantics (a full copy of
//! the keyspace per revision, events per revision) against [`Store`], over
//! random sequences of puts, deletes, transactions, compactions and lease
//! commands on a small keyspace. After every step it compares the apply
//! results and events, ranges at random revisions (historical and
//! compacted ones included), read-only transactions and the change history,
//! and checks the store's invariants. Snapshots must round-trip, and a
//! flipped byte must never load silently.

#[path = "model/gen.rs"]
mod gen;
#[path = "model/naive.rs"]
mod naive;

use std::collections::BTreeMap;

use gen::{command, probe, Probe};
use naive::{from_store, Model};
use nines_store::{Command, Lease, RangeRequest, Store};
use proptest::prelude::*;

fn check_step(store: &mut Store, model: &mut Model, cmd: &Command, probe: &Probe) {
    if let Command::Txn(t) = cmd {
        let got = store.txn_read(t).map_err(|e| from_store(&e));
        assert_eq!(got, model.txn_read(t), "txn_read of {t:?}");
        assert_eq!(
            Store::is_read_only_txn(t),
            !format!("{t:?}").contains("Put(") && !format!("{t:?}").contains("DeleteRange(")
        );
    }
    let applied = store.apply(cmd);
    let expected = model.apply(cmd);
    store.check_invariants();
    match (&applied.result, expected) {
        (Ok(got), Ok((want, events))) => {
            assert_eq!(got, &want, "response to {cmd:?}");
            assert_eq!(applied.events, events, "events of {cmd:?}");
        }
        (Err(got), Err(want)) => {
            assert_eq!(from_store(got), want, "error of {cmd:?}");
            assert!(applied.events.is_empty());
        }
        (got, want) => panic!("{cmd:?}: store {got:?}, model {want:?}"),
    }
    assert_eq!(applied.revision, model.revision());
    assert_eq!(store.revision(), model.revision());
    assert_eq!(store.compact_revision(), model.compact_revision);
    let raised: Vec<u64> = store.alarms().iter().map(|a| a.member_id).collect();
    assert_eq!(raised, model.nospace.iter().copied().collect::<Vec<_>>());
    assert_eq!(store.key_count(), model.current().len());
    let leases: Vec<Lease> = model
        .leases
        .iter()
        .map(|(&id, &ttl_secs)| Lease { id, ttl_secs })
        .collect();
    assert_eq!(store.leases(), leases);
    for id in 0..4 {
        assert_eq!(store.lease_ttl(id), model.leases.get(&id).copied());
        if model.leases.contains_key(&id) {
            assert_eq!(
                store.lease_keys(id),
                model.lease_keys(id),
                "keys of lease {id}"
            );
        }
    }
    for req in &probe.ranges {
        let got = store.range(req).map_err(|e| from_store(&e));
        assert_eq!(got, model.range(req), "range {req:?}");
    }
    // Every kept revision, plus the one just below the compaction.
    for rev in (model.compact_revision - 1).max(0)..=model.revision() + 1 {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        let got = store.range(&req).map_err(|e| from_store(&e));
        assert_eq!(got, model.range(&req), "full range at {rev}");
    }
    let (k, e, start, max) = &probe.changes;
    let got = store
        .changes(k, e, *start, *max)
        .map_err(|e| from_store(&e));
    assert_eq!(got, model.changes(k, e, *start, *max), "changes {probe:?}");
    let from = model.compact_revision.max(1);
    let got = store
        .changes(&[0], &[0], from, usize::MAX)
        .map_err(|e| from_store(&e));
    assert_eq!(
        got,
        model.changes(&[0], &[0], from, usize::MAX),
        "all changes"
    );
}

fn snapshot(store: &Store) -> Vec<u8> {
    let mut buf = Vec::new();
    store.write_snapshot(&mut buf).expect("write to a Vec");
    buf
}

fn assert_same_store(a: &Store, b: &Store) {
    assert_eq!(a.revision(), b.revision());
    assert_eq!(a.compact_revision(), b.compact_revision());
    assert_eq!(a.leases(), b.leases());
    assert_eq!(a.alarms(), b.alarms());
    assert_eq!(a.key_count(), b.key_count());
    assert_eq!(a.approx_size_bytes(), b.approx_size_bytes());
    for l in a.leases() {
        assert_eq!(a.lease_keys(l.id), b.lease_keys(l.id));
    }
    for rev in a.compact_revision().max(1)..=a.revision() {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        assert_eq!(a.range(&req).unwrap(), b.range(&req).unwrap());
        assert_eq!(a.hash_kv(rev).unwrap(), b.hash_kv(rev).unwrap());
    }
    let from = a.compact_revision().max(1);
    assert_eq!(
        a.changes(&[0], &[0], from, usize::MAX).unwrap(),
        b.changes(&[0], &[0], from, usize::MAX).unwrap()
    );
}

/// `hash_kv` refuses the revisions a range refuses, and the hash at a
/// revision never changes while the compaction revision stays: later writes
/// must not leak into it.
fn check_hashes(store: &Store, model: &Model, seen: &mut BTreeMap<i64, (u32, i64)>) {
    for rev in (model.compact_revision - 1).max(0)..=model.revision() + 1 {
        let got = store.hash_kv(rev).map_err(|e| from_store(&e));
        match (got, model.read_revision(rev)) {
            (Ok(hash), Ok(_)) if rev > 0 => {
                assert_eq!(hash.1, model.compact_revision);
                if let Some(before) = seen.insert(rev, hash) {
                    if before.1 == hash.1 {
                        assert_eq!(before, hash, "hash at {rev} changed");
                    }
                }
            }
            (Ok(_), Ok(_)) => {}
            (got, want) => assert_eq!(got.map(|_| ()), want.map(|_| ()), "hash_kv at {rev}"),
        }
    }
}

/// Maps a percentage in `0..=100` onto `0..=reached + 1`; negatives stay.
fn scale(percent: i64, reached: i64) -> i64 {
    if percent < 0 {
        percent
    } else {
        percent * (reached + 1) / 100
    }
}

/// Runs the steps against the store and the model; returns the store and
/// the commands as applied (compaction revisions scaled).
fn run(steps: &[(Command, Probe)]) -> (Store, Vec<Command>) {
    let mut store = Store::new();
    let mut model = Model::new();
    let mut hashes = BTreeMap::new();
    let mut applied = Vec::new();
    for (cmd, probe) in steps {
        // Compaction and probe revisions are generated as percentages of the
        // revision reached, so they land on kept, compacted and future ones.
        let reached = model.revision();
        let cmd = match cmd {
            Command::Compact { revision } => Command::Compact {
                revision: scale(*revision, reached),
            },
            other => other.clone(),
        };
        let mut probe = probe.clone();
        for r in &mut probe.ranges {
            r.revision = scale(r.revision, reached);
        }
        probe.changes.2 = scale(probe.changes.2, reached);
        check_step(&mut store, &mut model, &cmd, &probe);
        check_hashes(&store, &model, &mut hashes);
        applied.push(cmd);
    }
    (store, applied)
}

proptest! {
    // PROPTEST_CASES raises the count for a longer hunt; 512 by default.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec((command(), probe()), 1..60)) {
        let (store, applied) = run(&steps);
        let bytes = snapshot(&store);
        let restored = Store::read_snapshot(&mut bytes.as_slice()).expect("own snapshot loads");
        restored.check_invariants();
        assert_same_store(&store, &restored);
        prop_assert_eq!(snapshot(&restored), bytes.clone());
        // Apply is deterministic: the same commands give the same bytes.
        let mut replica = Store::new();
        for cmd in &applied {
            replica.apply(cmd);
        }
        prop_assert_eq!(snapshot(&replica), bytes);
    }

    #[test]
    fn flipped_snapshot_byte_is_always_detected(
        steps in prop::collection::vec((command(), probe()), 1..25),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 300),
    ) {
        let (store, _) = run(&steps);
        let bytes = snapshot(&store);
        for (at, mask) in flips {
            let mut bad = bytes.clone();
            let pos = at.index(bad.len());
            bad[pos] ^= mask;
            let loaded = Store::read_snapshot(&mut bad.as_slice());
            prop_assert!(loaded.is_err(), "flip {mask:#x} at {pos} of {} loaded", bytes.len());
        }
    }
}
