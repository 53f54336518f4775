//! Snapshot round trips and corruption detection.

use super::*;
use crate::{AlarmAction, AlarmKind, AlarmMember, RequestOp};

pub(crate) fn sample_store() -> Store {
    let mut s = Store::new();
    applied_ok(s.apply(&Command::LeaseGrant {
        id: 7,
        ttl_secs: 30,
    }));
    applied_ok(s.apply(&Command::LeaseGrant { id: 3, ttl_secs: 5 }));
    for i in 0..20 {
        put(&mut s, &format!("key{}", i % 7), &format!("value{i}"));
    }
    apply_put(
        &mut s,
        PutRequest {
            lease: 7,
            ..put_req("leased", "x")
        },
    );
    del(&mut s, "key3", "key5");
    applied_ok(s.apply(&Command::Compact { revision: 10 }));
    put(&mut s, "key3", "again");
    s
}

fn snapshot_bytes(s: &Store) -> Vec<u8> {
    let mut buf = Vec::new();
    s.write_snapshot(&mut buf).unwrap();
    buf
}

pub(crate) fn assert_same(a: &Store, b: &Store) {
    assert_eq!(a.revision(), b.revision());
    assert_eq!(a.compact_revision(), b.compact_revision());
    assert_eq!(a.leases(), b.leases());
    assert_eq!(a.key_count(), b.key_count());
    assert_eq!(a.approx_size_bytes(), b.approx_size_bytes());
    for l in a.leases() {
        assert_eq!(a.lease_keys(l.id), b.lease_keys(l.id));
    }
    for rev in a.compact_revision().max(1)..=a.revision() {
        let req = RangeRequest {
            revision: rev,
            ..range_req("\0", "\0")
        };
        assert_eq!(a.range(&req).unwrap(), b.range(&req).unwrap());
        assert_eq!(a.hash_kv(rev).unwrap(), b.hash_kv(rev).unwrap());
    }
    let from = a.compact_revision().max(1);
    assert_eq!(
        a.changes(b"\0", b"\0", from, usize::MAX).unwrap(),
        b.changes(b"\0", b"\0", from, usize::MAX).unwrap()
    );
}

#[test]
fn snapshot_round_trip_restores_everything() {
    let s = sample_store();
    let bytes = snapshot_bytes(&s);
    let restored = Store::read_snapshot(&mut bytes.as_slice()).unwrap();
    restored.check_invariants();
    assert_same(&s, &restored);
    assert_eq!(
        snapshot_bytes(&restored),
        bytes,
        "snapshots are deterministic"
    );
}

#[test]
fn snapshot_of_empty_store_round_trips() {
    let s = Store::new();
    let restored = Store::read_snapshot(&mut snapshot_bytes(&s).as_slice()).unwrap();
    assert_same(&s, &restored);
}

#[test]
fn snapshot_reads_only_its_own_bytes() {
    let s = sample_store();
    let mut bytes = snapshot_bytes(&s);
    let len = bytes.len();
    bytes.extend_from_slice(b"trailing data");
    let mut cursor = std::io::Cursor::new(bytes);
    Store::read_snapshot(&mut cursor).unwrap();
    assert_eq!(cursor.position() as usize, len);
}

#[test]
fn snapshot_with_bad_magic_or_version_is_corrupt() {
    let bytes = snapshot_bytes(&sample_store());
    let mut bad = bytes.clone();
    bad[0] = b'X';
    let e = Store::read_snapshot(&mut bad.as_slice()).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    let mut bad = bytes;
    bad[8] = 9;
    let e = Store::read_snapshot(&mut bad.as_slice()).unwrap_err();
    assert!(e.to_string().contains("version 9"), "{e}");
}

#[test]
fn truncated_snapshot_is_corrupt_at_every_length() {
    let bytes = snapshot_bytes(&sample_store());
    for len in 0..bytes.len() {
        let e = Store::read_snapshot(&mut &bytes[..len]).unwrap_err();
        assert!(
            matches!(e, StoreError::SnapshotCorrupt { .. }),
            "len {len}: {e:?}"
        );
    }
}

#[test]
fn every_flipped_byte_of_a_snapshot_is_detected() {
    let bytes = snapshot_bytes(&sample_store());
    for pos in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x5a;
        assert!(
            Store::read_snapshot(&mut bad.as_slice()).is_err(),
            "flip at {pos} of {} went unnoticed",
            bytes.len()
        );
    }
}

#[test]
fn long_history_spans_several_records_and_round_trips() {
    let mut s = Store::new();
    let big = "x".repeat(300 * 1024);
    for _ in 0..8 {
        put(&mut s, "big", &big);
    }
    let bytes = snapshot_bytes(&s);
    let restored = Store::read_snapshot(&mut bytes.as_slice()).unwrap();
    assert_same(&s, &restored);
}

#[test]
fn snapshot_round_trips_through_a_file() {
    use std::io::{BufReader, BufWriter, Write};
    let s = sample_store();
    let mut file = tempfile::tempfile().unwrap();
    {
        let mut w = BufWriter::new(&mut file);
        s.write_snapshot(&mut w).unwrap();
        w.flush().unwrap();
    }
    use std::io::Seek;
    file.rewind().unwrap();
    let restored = Store::read_snapshot(&mut BufReader::new(file)).unwrap();
    assert_same(&s, &restored);
}

/// Re-frames a snapshot whose records were edited, with valid crcs and
/// final checksum, to prove that the semantic checks on load hold too.
fn reframe(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"NINESNAP".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    let (body, end) = records.split_at(records.len() - 1);
    for payload in body {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }
    // End: tag, leases, keys, entries, records (u64 each), then the checksum (u32).
    let mut end = end[0].clone();
    let checksum = crc32fast::hash(&out);
    let at = end.len() - 4;
    end[at..].copy_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(&(end.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&end).to_le_bytes());
    out.extend_from_slice(&end);
    out
}

fn split_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut at = 12;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        records.push(bytes[at + 8..at + 8 + len].to_vec());
        at += 8 + len;
    }
    records
}

#[test]
fn snapshot_with_valid_checksums_but_impossible_state_is_refused() {
    let s = sample_store();
    let bytes = snapshot_bytes(&s);
    let records = split_records(&bytes);
    assert_eq!(
        reframe(&records),
        bytes,
        "reframing an untouched snapshot is exact"
    );
    // Meta: tag u8, then revision i64, compact_revision i64.
    let mut bad = records.clone();
    bad[0][1..9].copy_from_slice(&i64::MAX.to_le_bytes());
    let e = Store::read_snapshot(&mut reframe(&bad).as_slice()).unwrap_err();
    assert!(e.to_string().contains("cannot all have writes"), "{e}");
    let mut bad = records.clone();
    bad[0][9..17].copy_from_slice(&(s.revision() + 1).to_le_bytes());
    let e = Store::read_snapshot(&mut reframe(&bad).as_slice()).unwrap_err();
    assert!(matches!(e, StoreError::SnapshotCorrupt { .. }), "{e}");
    // Dropping a lease record leaves a key attached to a missing lease
    // (the End counts are patched so only the invariant check can object).
    let mut bad = records;
    let lease_7 = bad
        .iter()
        .position(|r| r[0] == 1 && r[1..9] == 7i64.to_le_bytes())
        .expect("the record of lease 7");
    bad.remove(lease_7);
    let end = bad.len() - 1;
    let leases = u64::from_le_bytes(bad[end][1..9].try_into().unwrap()) - 1;
    bad[end][1..9].copy_from_slice(&leases.to_le_bytes());
    let records_count = u64::from_le_bytes(bad[end][25..33].try_into().unwrap()) - 1;
    bad[end][25..33].copy_from_slice(&records_count.to_le_bytes());
    let e = Store::read_snapshot(&mut reframe(&bad).as_slice()).unwrap_err();
    assert!(e.to_string().contains("lease"), "{e}");
}

/// Writes `store`'s snapshot in steps of about `budget` value bytes,
/// calling `between` on the store after every step.
fn snapshot_in_steps(
    store: &mut Store,
    budget: usize,
    mut between: impl FnMut(&mut Store, usize),
) -> Result<Vec<u8>, StoreError> {
    let mut writer = store.start_snapshot(Vec::new())?;
    let mut step = 0;
    while !writer.write_keys(store, budget)? {
        between(store, step);
        step += 1;
        assert!(step < 100_000, "the snapshot ends");
    }
    writer.finish()
}

#[test]
fn a_snapshot_written_in_steps_is_the_store_as_it_was_at_the_start() {
    let mut s = sample_store();
    for i in 0..200 {
        put(&mut s, &format!("many{i:03}"), &"v".repeat(i % 50));
    }
    let before = snapshot_bytes(&s);
    let at_start = Store::read_snapshot(&mut &before[..]).unwrap();
    // Between the steps: new keys before and after the cursor, overwrites,
    // deletes, a transaction, a lease granted and one revoked with its
    // keys, an alarm raised.
    let stepped = snapshot_in_steps(&mut s, 64, |s, step| match step % 6 {
        0 => {
            put(s, &format!("a-new{step}"), "before the cursor");
        }
        1 => {
            put(s, &format!("zz-new{step}"), "after the cursor");
        }
        2 => {
            put(s, &format!("many{:03}", (step * 7) % 200), "overwritten");
        }
        3 => {
            del(s, &format!("many{:03}", (step * 13) % 200), "");
        }
        4 => {
            applied_ok(s.apply(&Command::LeaseGrant {
                id: 1000 + step as i64,
                ttl_secs: 9,
            }));
        }
        _ => {
            if step == 5 {
                applied_ok(s.apply(&Command::LeaseRevoke { id: 7 }));
                applied_ok(s.apply(&Command::Alarm {
                    action: AlarmAction::Activate,
                    alarm: AlarmMember {
                        member_id: 1,
                        kind: AlarmKind::Corrupt,
                    },
                }));
            }
            txn(
                s,
                TxnRequest {
                    success: vec![RequestOp::Put(put_req(&format!("t{step}"), "in a txn"))],
                    ..TxnRequest::default()
                },
            );
        }
    })
    .unwrap();
    assert!(
        s.revision() > at_start.revision() + 20,
        "the store moved on"
    );
    assert_eq!(
        stepped, before,
        "the same bytes as a snapshot taken at the start"
    );
    assert_same(&Store::read_snapshot(&mut &stepped[..]).unwrap(), &at_start);
}

#[test]
fn a_snapshot_in_steps_refuses_a_store_compacted_meanwhile() {
    let mut s = sample_store();
    for i in 0..50 {
        put(&mut s, &format!("many{i:03}"), "value");
    }
    let compact_to = s.revision();
    let err = snapshot_in_steps(&mut s, 16, |s, step| {
        if step == 2 {
            applied_ok(s.apply(&Command::Compact {
                revision: compact_to,
            }));
        }
    })
    .unwrap_err();
    assert!(
        matches!(err, StoreError::SnapshotDisturbed { .. }),
        "{err:?}"
    );
}
