//! Transaction semantics: compares, branches, one revision, validation
//! before any write, the duplicate-key rule and the read-only path.

use super::*;
use crate::{Compare, CompareResult, CompareTarget, RequestOp, ResponseOp};

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
    }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(put_req(key, value))
}

fn op_del(key: &str, range_end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        prev_kv: false,
    })
}

fn op_get(key: &str, range_end: &str) -> RequestOp {
    RequestOp::Range(range_req(key, range_end))
}

fn op_txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp::Txn(TxnRequest {
        compare,
        success,
        failure,
    })
}

fn txn_of(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

#[test]
fn txn_writes_are_one_revision_with_events_in_op_order() {
    let mut s = Store::new();
    put(&mut s, "x", "0");
    let applied = s.apply(&Command::Txn(txn_of(
        vec![],
        vec![op_put("b", "1"), op_put("a", "2"), op_del("x", "")],
        vec![],
    )));
    assert_eq!(applied.revision, 3);
    let keys: Vec<&[u8]> = applied.events.iter().map(|e| e.kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"b"[..], b"a", b"x"]);
    assert!(applied.events.iter().all(|e| e.kv.mod_revision == 3));
    let changes = s.changes(b"\0", b"\0", 3, 100).unwrap();
    assert_eq!(changes, applied.events);
    s.check_invariants();
}

#[test]
fn txn_compare_on_absent_key_sees_zero_fields_and_fails_value_compares() {
    let mut s = Store::new();
    let r = txn(
        &mut s,
        txn_of(
            vec![cmp("a", CompareResult::Equal, CompareTarget::Version(0))],
            vec![],
            vec![],
        ),
    );
    assert!(r.succeeded);
    for result in [
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ] {
        let r = txn(
            &mut s,
            txn_of(
                vec![cmp("a", result, CompareTarget::Value(b"x".to_vec()))],
                vec![],
                vec![],
            ),
        );
        assert!(!r.succeeded, "{result:?} on an absent key must fail");
    }
    let r = txn(
        &mut s,
        txn_of(
            vec![cmp("a", CompareResult::Equal, CompareTarget::Lease(0))],
            vec![],
            vec![],
        ),
    );
    assert!(r.succeeded);
}

#[test]
fn txn_compares_every_field_of_an_existing_key() {
    let mut s = Store::new();
    put(&mut s, "k", "m"); // 2
    put(&mut s, "k", "n"); // 3
    let holds = |s: &mut Store, c: Compare| txn(s, txn_of(vec![c], vec![], vec![])).succeeded;
    assert!(holds(
        &mut s,
        cmp("k", CompareResult::Equal, CompareTarget::Version(2))
    ));
    assert!(holds(
        &mut s,
        cmp("k", CompareResult::Equal, CompareTarget::CreateRevision(2))
    ));
    assert!(holds(
        &mut s,
        cmp("k", CompareResult::Greater, CompareTarget::ModRevision(2))
    ));
    assert!(holds(
        &mut s,
        cmp(
            "k",
            CompareResult::Less,
            CompareTarget::Value(b"o".to_vec())
        )
    ));
    assert!(holds(
        &mut s,
        cmp(
            "k",
            CompareResult::NotEqual,
            CompareTarget::Value(b"m".to_vec())
        )
    ));
    assert!(!holds(
        &mut s,
        cmp("k", CompareResult::Greater, CompareTarget::Lease(0))
    ));
}

#[test]
fn txn_range_compare_must_hold_for_every_key_in_range() {
    let mut s = Store::new();
    put(&mut s, "p/a", "1");
    put(&mut s, "p/b", "2");
    let c = |v: i64| Compare {
        result: CompareResult::Greater,
        target: CompareTarget::ModRevision(v),
        key: b"p/".to_vec(),
        range_end: b"p0".to_vec(),
    };
    assert!(txn(&mut s, txn_of(vec![c(1)], vec![], vec![])).succeeded);
    assert!(!txn(&mut s, txn_of(vec![c(2)], vec![], vec![])).succeeded);
}

#[test]
fn txn_runs_failure_branch_when_a_compare_fails() {
    let mut s = Store::new();
    let r = txn(
        &mut s,
        txn_of(
            vec![cmp("a", CompareResult::Equal, CompareTarget::Version(1))],
            vec![op_put("then", "1")],
            vec![op_put("else", "1"), op_get("else", "")],
        ),
    );
    assert!(!r.succeeded);
    assert!(get(&s, "then").is_none());
    assert!(get(&s, "else").is_some());
    let ResponseOp::Range(rr) = &r.responses[1] else {
        panic!("second response is a range")
    };
    assert_eq!(
        rr.kvs.len(),
        1,
        "a range sees the earlier put in the same txn"
    );
    assert_eq!(rr.kvs[0].mod_revision, 2);
}

#[test]
fn txn_without_writes_does_not_bump_revision() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let applied = s.apply(&Command::Txn(txn_of(
        vec![],
        vec![op_get("a", "")],
        vec![op_put("b", "")],
    )));
    assert_eq!(applied.revision, 2);
    assert!(applied.events.is_empty());
    let applied = s.apply(&Command::Txn(txn_of(
        vec![],
        vec![op_del("zz", "")],
        vec![],
    )));
    assert_eq!(applied.revision, 2);
}

#[test]
fn txn_putting_one_key_twice_is_a_duplicate() {
    let mut s = Store::new();
    let e = apply_err(
        &mut s,
        Command::Txn(txn_of(
            vec![],
            vec![op_put("a", "1"), op_put("a", "2")],
            vec![],
        )),
    );
    assert!(matches!(e, StoreError::DuplicateKey));
    assert_eq!(
        e.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
}

#[test]
fn txn_putting_inside_a_deleted_range_is_a_duplicate_also_when_nested() {
    let mut s = Store::new();
    for ops in [
        vec![op_del("a", "c"), op_put("b", "1")],
        vec![op_put("b", "1"), op_del("a", "c")],
        vec![op_put("b", "1"), op_del("a", "\0")],
        vec![
            op_del("a", "c"),
            op_txn(vec![], vec![op_put("b", "1")], vec![]),
        ],
        vec![
            op_put("b", "1"),
            op_txn(vec![], vec![], vec![op_del("b", "")]),
        ],
        vec![
            op_txn(vec![], vec![op_put("b", "1")], vec![]),
            op_txn(vec![], vec![op_del("b", "")], vec![]),
        ],
    ] {
        let e = apply_err(&mut s, Command::Txn(txn_of(vec![], ops.clone(), vec![])));
        assert!(matches!(e, StoreError::DuplicateKey), "{ops:?}");
        let e = apply_err(&mut s, Command::Txn(txn_of(vec![], vec![], ops)));
        assert!(matches!(e, StoreError::DuplicateKey));
    }
}

#[test]
fn txn_same_key_in_nested_then_and_else_is_allowed() {
    let mut s = Store::new();
    let r = txn(
        &mut s,
        txn_of(
            vec![],
            vec![op_txn(
                vec![],
                vec![op_put("a", "then")],
                vec![op_put("a", "else")],
            )],
            vec![op_put("a", "outer-failure")],
        ),
    );
    assert!(r.succeeded);
    assert_eq!(get(&s, "a").unwrap().value, b"then");
    let e = apply_err(
        &mut s,
        Command::Txn(txn_of(
            vec![],
            vec![
                op_put("a", "1"),
                op_txn(vec![], vec![], vec![op_put("a", "2")]),
            ],
            vec![],
        )),
    );
    assert!(matches!(e, StoreError::DuplicateKey));
}

#[test]
fn txn_error_in_a_later_op_changes_nothing() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let e = apply_err(
        &mut s,
        Command::Txn(txn_of(
            vec![],
            vec![
                op_put("b", "1"),
                op_del("a", ""),
                op_txn(
                    vec![],
                    vec![RequestOp::Put(PutRequest {
                        lease: 9,
                        ..put_req("c", "")
                    })],
                    vec![],
                ),
            ],
            vec![],
        )),
    );
    assert!(matches!(e, StoreError::LeaseNotFound { id: 9 }));
    let e = apply_err(
        &mut s,
        Command::Txn(txn_of(
            vec![],
            vec![
                op_put("b", "1"),
                RequestOp::Put(PutRequest {
                    ignore_value: true,
                    ..put_req("c", "")
                }),
            ],
            vec![],
        )),
    );
    assert!(matches!(e, StoreError::KeyNotFound));
    let e = apply_err(
        &mut s,
        Command::Txn(txn_of(
            vec![],
            vec![
                op_put("b", "1"),
                RequestOp::Range(RangeRequest {
                    revision: 99,
                    ..range_req("a", "")
                }),
            ],
            vec![],
        )),
    );
    assert!(matches!(
        e,
        StoreError::FutureRevision { requested: 99, .. }
    ));
}

#[test]
fn txn_empty_keys_are_rejected_on_every_branch() {
    let mut s = Store::new();
    let e = apply_err(
        &mut s,
        Command::Txn(txn_of(vec![], vec![], vec![op_get("", "")])),
    );
    assert!(matches!(e, StoreError::EmptyKey));
    let e = apply_err(
        &mut s,
        Command::Txn(txn_of(
            vec![cmp("", CompareResult::Equal, CompareTarget::Version(0))],
            vec![],
            vec![],
        )),
    );
    assert!(matches!(e, StoreError::EmptyKey));
}

#[test]
fn txn_state_checks_apply_only_to_the_branch_taken() {
    let mut s = Store::new();
    let bad_put = RequestOp::Put(PutRequest {
        lease: 9,
        ..put_req("c", "")
    });
    let r = txn(
        &mut s,
        txn_of(vec![], vec![op_put("a", "1")], vec![bad_put]),
    );
    assert!(r.succeeded);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let mut s = Store::new();
    let r = txn(
        &mut s,
        txn_of(
            vec![],
            vec![
                op_put("a", "1"),
                op_txn(
                    vec![cmp("a", CompareResult::Equal, CompareTarget::Version(0))],
                    vec![op_put("seen-absent", "1")],
                    vec![op_put("seen-present", "1")],
                ),
            ],
            vec![],
        ),
    );
    let ResponseOp::Txn(nested) = &r.responses[1] else {
        panic!("nested txn response")
    };
    assert!(nested.succeeded);
    assert!(get(&s, "seen-absent").is_some());
    assert_eq!(s.revision(), 2);
}

#[test]
fn txn_range_at_explicit_revision_reads_history() {
    let mut s = Store::new();
    put(&mut s, "a", "old"); // 2
    let r = txn(
        &mut s,
        txn_of(
            vec![],
            vec![
                op_put("a", "new"),
                RequestOp::Range(RangeRequest {
                    revision: 2,
                    ..range_req("a", "")
                }),
            ],
            vec![],
        ),
    );
    let ResponseOp::Range(rr) = &r.responses[1] else {
        panic!("range response")
    };
    assert_eq!(rr.kvs[0].value, b"old");
}

#[test]
fn txn_read_answers_ranges_and_refuses_writes_on_the_taken_branch() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let read = txn_of(
        vec![cmp("a", CompareResult::Equal, CompareTarget::Version(1))],
        vec![
            op_get("a", ""),
            op_txn(vec![], vec![op_get("a", "")], vec![op_put("x", "")]),
        ],
        vec![op_put("b", "")],
    );
    assert!(!Store::is_read_only_txn(&read));
    let r = s.txn_read(&read).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.responses.len(), 2);
    let write = txn_of(vec![], vec![op_get("a", ""), op_del("a", "")], vec![]);
    let e = s.txn_read(&write).unwrap_err();
    assert!(matches!(e, StoreError::TxnHasWrites));
    assert_eq!(
        e.to_string(),
        "etcdserver: a read-only transaction cannot contain writes"
    );
    assert!(Store::is_read_only_txn(&txn_of(
        vec![],
        vec![op_get("a", "")],
        vec![op_txn(vec![], vec![], vec![op_get("b", "")])]
    )));
}

#[test]
fn txn_read_honours_range_revision_errors() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let req = txn_of(
        vec![],
        vec![RequestOp::Range(RangeRequest {
            revision: 5,
            ..range_req("a", "")
        })],
        vec![],
    );
    assert!(matches!(
        s.txn_read(&req),
        Err(StoreError::FutureRevision { .. })
    ));
}
