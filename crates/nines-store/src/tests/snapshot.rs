//! Snapshot round trips and corruption detection.

use super::*;

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
