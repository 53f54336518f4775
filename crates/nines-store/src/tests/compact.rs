//! Compaction: its errors, what it drops and that reads at or after the
//! compaction revision answer exactly as before.

use super::*;

fn history_store() -> Store {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "a", "2"); // 4
    del(&mut s, "b", ""); // 5
    put(&mut s, "a", "3"); // 6
    put(&mut s, "c", "1"); // 7
    s
}

fn all_at(s: &Store, revision: i64) -> Result<RangeResponse, StoreError> {
    s.range(&RangeRequest {
        revision,
        ..range_req("\0", "\0")
    })
}

#[test]
fn compact_refuses_old_and_future_revisions() {
    let mut s = history_store();
    let e = apply_err(&mut s, Command::Compact { revision: 8 });
    assert!(matches!(
        e,
        StoreError::FutureRevision {
            requested: 8,
            current: 7
        }
    ));
    let e = apply_err(&mut s, Command::Compact { revision: 0 });
    assert!(matches!(
        e,
        StoreError::Compacted {
            requested: 0,
            compacted: 0
        }
    ));
    applied_ok(s.apply(&Command::Compact { revision: 4 }));
    let e = apply_err(&mut s, Command::Compact { revision: 4 });
    assert!(matches!(
        e,
        StoreError::Compacted {
            requested: 4,
            compacted: 4
        }
    ));
    assert_eq!(
        e.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

#[test]
fn compact_keeps_reads_at_and_after_its_revision_and_refuses_older() {
    let mut s = history_store();
    let before: Vec<_> = (1..=7).map(|r| all_at(&s, r).unwrap()).collect();
    for at in [3, 5, 7] {
        let applied = s.apply(&Command::Compact { revision: at });
        assert!(applied.result.is_ok());
        assert_eq!(applied.revision, 7, "compaction does not bump the revision");
        s.check_invariants();
        for r in 1..=7 {
            match all_at(&s, r) {
                Ok(resp) => {
                    assert!(r >= at);
                    assert_eq!(resp, before[(r - 1) as usize]);
                }
                Err(StoreError::Compacted {
                    requested,
                    compacted,
                }) => {
                    assert!(r < at);
                    assert_eq!((requested, compacted), (r, at));
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
}

#[test]
fn compact_drops_superseded_versions_and_deleted_keys() {
    let mut s = history_store();
    let size_before = s.approx_size_bytes();
    applied_ok(s.apply(&Command::Compact { revision: 6 }));
    // Left: a@6 and c@7 only.
    assert_eq!(s.approx_size_bytes(), 4);
    assert!(s.approx_size_bytes() < size_before);
    assert_eq!(s.keys.len(), 2);
    s.check_invariants();
}

#[test]
fn compact_on_fresh_store_at_revision_one_is_allowed() {
    let mut s = Store::new();
    applied_ok(s.apply(&Command::Compact { revision: 1 }));
    assert_eq!(s.compact_revision(), 1);
    put(&mut s, "a", "1");
    s.check_invariants();
}
