//! The change history watches replay, and the history hash.

use super::*;
use crate::EventKind;

#[test]
fn changes_replay_events_in_revision_order_with_prev_kv() {
    let mut s = Store::new();
    let mut all = Vec::new();
    for cmd in [
        Command::Put(put_req("a", "1")),
        Command::Put(put_req("b", "1")),
        Command::Put(put_req("a", "2")),
        Command::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        }),
    ] {
        all.extend(s.apply(&cmd).events);
    }
    assert_eq!(s.changes(b"\0", b"\0", 1, 100).unwrap(), all);
    let only_a = s.changes(b"a", b"", 3, 100).unwrap();
    assert_eq!(only_a.len(), 2);
    assert_eq!(only_a[0].kind, EventKind::Put);
    assert_eq!(only_a[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(only_a[1].kind, EventKind::Delete);
    assert_eq!(only_a[1].prev_kv.as_ref().unwrap().value, b"2");
}

#[test]
fn changes_stop_after_max_events_without_splitting_a_revision() {
    let mut s = Store::new();
    put(&mut s, "x", "1"); // 2
    del(&mut s, "\0", "\0"); // 3 (one event)
    put(&mut s, "a", "1");
    put(&mut s, "b", "1");
    put(&mut s, "c", "1"); // 4,5,6
    del(&mut s, "a", "\0"); // 7: three events
    put(&mut s, "d", "1"); // 8
    let ev = s.changes(b"\0", b"\0", 7, 1).unwrap();
    assert_eq!(ev.len(), 3, "revision 7 is returned whole");
    let ev = s.changes(b"\0", b"\0", 2, 2).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(s.changes(b"\0", b"\0", 2, 0).unwrap().is_empty());
}

#[test]
fn changes_from_future_revision_are_empty() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    assert!(s.changes(b"a", b"", 3, 10).unwrap().is_empty());
}

#[test]
fn changes_before_compaction_are_refused_but_from_it_are_complete() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    del(&mut s, "a", ""); // 4
    put(&mut s, "b", "2"); // 5
    applied_ok(s.apply(&Command::Compact { revision: 4 }));
    let e = s.changes(b"\0", b"\0", 3, 10).unwrap_err();
    assert!(matches!(
        e,
        StoreError::Compacted {
            requested: 3,
            compacted: 4
        }
    ));
    let ev = s.changes(b"\0", b"\0", 4, 10).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].kind, ev[0].kv.mod_revision), (EventKind::Delete, 4));
    assert!(ev[0].prev_kv.is_none(), "the deleted version is compacted");
    assert_eq!(ev[1].prev_kv.as_ref().unwrap().mod_revision, 3);
    applied_ok(s.apply(&Command::Compact { revision: 5 }));
    s.check_invariants();
    assert_eq!(s.changes(b"\0", b"\0", 5, 10).unwrap().len(), 1);
}

#[test]
fn hash_kv_matches_for_same_history_and_ignores_later_writes() {
    let mut a = Store::new();
    let mut b = Store::new();
    for s in [&mut a, &mut b] {
        put(s, "k", "1");
        put(s, "k", "2");
    }
    assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
    let at3 = a.hash_kv(3).unwrap();
    put(&mut a, "k", "3");
    assert_eq!(a.hash_kv(3).unwrap(), at3);
    assert_ne!(a.hash_kv(0).unwrap(), at3);
    put(&mut b, "k", "4");
    assert_ne!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
    assert!(matches!(
        a.hash_kv(9),
        Err(StoreError::FutureRevision { .. })
    ));
    applied_ok(a.apply(&Command::Compact { revision: 3 }));
    assert!(matches!(a.hash_kv(2), Err(StoreError::Compacted { .. })));
    assert_eq!(a.hash_kv(0).unwrap().1, 3);
}
