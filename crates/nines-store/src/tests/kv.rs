//! Put, delete and range semantics.

use super::*;
use crate::{SortOrder, SortTarget};

#[test]
fn new_store_starts_at_revision_one_with_nothing() {
    let s = Store::new();
    assert_eq!(s.revision(), 1);
    assert_eq!(s.compact_revision(), 0);
    assert_eq!(s.key_count(), 0);
    assert_eq!(s.approx_size_bytes(), 0);
    s.check_invariants();
}

#[test]
fn put_bumps_revision_by_one_and_sets_key_fields() {
    let mut s = Store::new();
    let applied = s.apply(&Command::Put(put_req("a", "1")));
    assert_eq!(applied.revision, 2);
    assert_eq!(applied.events.len(), 1);
    assert!(applied.events[0].prev_kv.is_none());
    let kv = get(&s, "a").expect("a exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
    assert_eq!(kv.value, b"1");
    assert_eq!(applied.events[0].kv, kv);
    s.check_invariants();
}

#[test]
fn put_on_existing_key_increments_version_and_keeps_create_revision() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    put(&mut s, "b", "x");
    let r = apply_put(
        &mut s,
        PutRequest {
            prev_kv: true,
            ..put_req("a", "2")
        },
    );
    let prev = r.prev_kv.expect("prev_kv asked for");
    assert_eq!((prev.value.as_slice(), prev.mod_revision), (&b"1"[..], 2));
    let kv = get(&s, "a").expect("a exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));
    s.check_invariants();
}

#[test]
fn put_on_deleted_key_starts_new_generation() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    del(&mut s, "a", "");
    put(&mut s, "a", "3");
    let kv = get(&s, "a").expect("a exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    s.check_invariants();
}

#[test]
fn put_without_prev_kv_flag_returns_none() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    assert!(put(&mut s, "a", "2").prev_kv.is_none());
}

#[test]
fn put_with_empty_key_is_rejected_and_changes_nothing() {
    let mut s = Store::new();
    let e = apply_err(&mut s, Command::Put(put_req("", "1")));
    assert!(matches!(e, StoreError::EmptyKey));
    assert_eq!(e.to_string(), "etcdserver: key is not provided");
}

#[test]
fn put_with_missing_lease_is_rejected() {
    let mut s = Store::new();
    let e = apply_err(
        &mut s,
        Command::Put(PutRequest {
            lease: 7,
            ..put_req("a", "1")
        }),
    );
    assert!(matches!(e, StoreError::LeaseNotFound { id: 7 }));
}

#[test]
fn put_ignore_value_keeps_value_and_needs_existing_key() {
    let mut s = Store::new();
    let req = PutRequest {
        ignore_value: true,
        ..put_req("a", "")
    };
    let e = apply_err(&mut s, Command::Put(req.clone()));
    assert!(matches!(e, StoreError::KeyNotFound));
    put(&mut s, "a", "keep");
    apply_put(&mut s, req);
    let kv = get(&s, "a").expect("a exists");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"keep"[..], 2));
    let e = apply_err(
        &mut s,
        Command::Put(PutRequest {
            ignore_value: true,
            ..put_req("a", "x")
        }),
    );
    assert!(matches!(e, StoreError::ValueProvided));
}

#[test]
fn put_ignore_lease_keeps_lease_and_needs_existing_key() {
    let mut s = Store::new();
    applied_ok(s.apply(&Command::LeaseGrant {
        id: 5,
        ttl_secs: 10,
    }));
    let req = PutRequest {
        ignore_lease: true,
        ..put_req("a", "2")
    };
    let e = apply_err(&mut s, Command::Put(req.clone()));
    assert!(matches!(e, StoreError::KeyNotFound));
    apply_put(
        &mut s,
        PutRequest {
            lease: 5,
            ..put_req("a", "1")
        },
    );
    apply_put(&mut s, req);
    let kv = get(&s, "a").expect("a exists");
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"2"[..], 5));
    let e = apply_err(
        &mut s,
        Command::Put(PutRequest {
            ignore_lease: true,
            lease: 5,
            ..put_req("a", "3")
        }),
    );
    assert!(matches!(e, StoreError::LeaseProvided));
    s.check_invariants();
}

#[test]
fn delete_of_nothing_does_not_bump_revision() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let r = del(&mut s, "b", "");
    assert_eq!(r.deleted, 0);
    assert_eq!(s.revision(), 2);
    let applied = s.apply(&Command::DeleteRange(DeleteRangeRequest {
        key: b"zz".to_vec(),
        range_end: b"\0".to_vec(),
        prev_kv: false,
    }));
    assert!(applied.events.is_empty());
    assert_eq!(applied.revision, 2);
}

#[test]
fn delete_range_removes_all_keys_in_one_revision_with_prev_kvs() {
    let mut s = Store::new();
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, k);
    }
    let applied = s.apply(&Command::DeleteRange(DeleteRangeRequest {
        key: b"b".to_vec(),
        range_end: b"d".to_vec(),
        prev_kv: true,
    }));
    assert_eq!(applied.revision, 6);
    let Ok(CommandResponse::DeleteRange(r)) = applied.result else {
        panic!("delete failed")
    };
    assert_eq!(r.deleted, 2);
    assert_eq!(
        r.prev_kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(s.key_count(), 2);
    assert_eq!(applied.events.len(), 2);
    for ev in &applied.events {
        assert_eq!(ev.kind, crate::EventKind::Delete);
        assert_eq!(ev.kv.mod_revision, 6);
        assert_eq!(
            (ev.kv.version, ev.kv.create_revision, ev.kv.lease),
            (0, 0, 0)
        );
        assert!(ev.kv.value.is_empty());
        assert_eq!(ev.prev_kv.as_ref().map(|p| &p.key), Some(&ev.kv.key));
    }
    s.check_invariants();
}

#[test]
fn delete_with_empty_key_is_rejected() {
    let mut s = Store::new();
    let e = apply_err(&mut s, Command::DeleteRange(DeleteRangeRequest::default()));
    assert!(matches!(e, StoreError::EmptyKey));
}

fn abc_store() -> Store {
    let mut s = Store::new();
    for (k, v) in [("a", "3"), ("b", "1"), ("b1", "2"), ("c", "0")] {
        put(&mut s, k, v);
    }
    s
}

#[test]
fn range_end_conventions_select_single_prefix_from_key_and_all() {
    let s = abc_store();
    assert_eq!(keys_of(&s.range(&range_req("b", "")).unwrap()), ["b"]);
    assert_eq!(
        keys_of(&s.range(&range_req("b", "c")).unwrap()),
        ["b", "b1"]
    );
    assert_eq!(
        keys_of(&s.range(&range_req("b1", "\0")).unwrap()),
        ["b1", "c"]
    );
    assert_eq!(
        keys_of(&s.range(&range_req("\0", "\0")).unwrap()),
        ["a", "b", "b1", "c"]
    );
    assert!(s.range(&range_req("zz", "")).unwrap().kvs.is_empty());
}

#[test]
fn range_end_at_or_before_key_is_empty() {
    let s = abc_store();
    let r = s.range(&range_req("b", "a")).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 0));
    let r = s.range(&range_req("b", "b")).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 0));
}

#[test]
fn range_limit_sets_more_and_count_ignores_limit() {
    let s = abc_store();
    let r = s
        .range(&RangeRequest {
            limit: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(keys_of(&r), ["a", "b"]);
    assert!(r.more);
    assert_eq!(r.count, 4);
    let r = s
        .range(&RangeRequest {
            limit: 4,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert!(!r.more);
}

#[test]
fn range_count_only_returns_count_without_kvs() {
    let s = abc_store();
    let r = s
        .range(&RangeRequest {
            count_only: true,
            ..range_req("b", "c")
        })
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 2);
}

#[test]
fn range_keys_only_leaves_values_out() {
    let s = abc_store();
    let r = s
        .range(&RangeRequest {
            keys_only: true,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
}

#[test]
fn range_sorts_by_target_and_defaults_to_ascend_for_non_key_targets() {
    let s = abc_store();
    let all = |order, target| {
        keys_of(
            &s.range(&RangeRequest {
                sort_order: order,
                sort_target: target,
                ..range_req("a", "\0")
            })
            .unwrap(),
        )
    };
    assert_eq!(
        all(SortOrder::None, SortTarget::Value),
        ["c", "b", "b1", "a"]
    );
    assert_eq!(
        all(SortOrder::Descend, SortTarget::Value),
        ["a", "b1", "b", "c"]
    );
    assert_eq!(
        all(SortOrder::Descend, SortTarget::Key),
        ["c", "b1", "b", "a"]
    );
    assert_eq!(
        all(SortOrder::Descend, SortTarget::Create),
        ["c", "b1", "b", "a"]
    );
    assert_eq!(
        all(SortOrder::Ascend, SortTarget::Mod),
        ["a", "b", "b1", "c"]
    );
    let r = s
        .range(&RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Key,
            limit: 1,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (keys_of(&r), r.more, r.count),
        (vec!["c".to_string()], true, 4)
    );
}

#[test]
fn range_revision_filters_apply_before_limit_and_not_to_count() {
    let s = abc_store(); // a@2 b@3 b1@4 c@5
    let r = s
        .range(&RangeRequest {
            min_mod_revision: 3,
            max_mod_revision: 4,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!((keys_of(&r), r.count), (vec!["b".into(), "b1".into()], 4));
    let r = s
        .range(&RangeRequest {
            min_create_revision: 4,
            limit: 1,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!((keys_of(&r), r.more), (vec!["b1".into()], true));
    let r = s
        .range(&RangeRequest {
            max_create_revision: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(keys_of(&r), ["a"]);
}

#[test]
fn range_at_historical_revision_sees_the_past() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    del(&mut s, "a", ""); // 4
    let at = |rev| {
        s.range(&RangeRequest {
            revision: rev,
            ..range_req("a", "")
        })
        .unwrap()
        .kvs
    };
    assert!(at(1).is_empty());
    assert_eq!(at(2)[0].value, b"1");
    assert_eq!(at(3)[0].value, b"2");
    assert!(at(4).is_empty());
    assert!(at(0).is_empty());
}

#[test]
fn range_of_future_revision_is_rejected() {
    let s = abc_store();
    let e = s
        .range(&RangeRequest {
            revision: 6,
            ..range_req("a", "")
        })
        .unwrap_err();
    assert!(matches!(
        e,
        StoreError::FutureRevision {
            requested: 6,
            current: 5
        }
    ));
    assert_eq!(
        e.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
}

#[test]
fn range_with_empty_key_is_rejected() {
    let s = abc_store();
    assert!(matches!(
        s.range(&range_req("", "")),
        Err(StoreError::EmptyKey)
    ));
}

#[test]
fn approx_size_counts_keys_and_values_of_every_revision() {
    let mut s = Store::new();
    put(&mut s, "ab", "1234");
    put(&mut s, "ab", "12");
    del(&mut s, "ab", "");
    assert_eq!(s.approx_size_bytes(), 6 + 4 + 2);
}

#[test]
fn debug_output_summarises_instead_of_dumping() {
    let s = abc_store();
    let text = format!("{s:?}");
    assert!(
        text.contains("revision: 5") && text.contains("live_keys: 4"),
        "{text}"
    );
}

#[test]
fn store_and_applied_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    send_sync::<Applied>();
}
