//! Unit tests of the store's etcd semantics, one file per concern, with
//! small helpers that build commands and unwrap their results.

mod changes;
mod compact;
mod invariants;
mod kv;
mod lease;
mod snapshot;
mod txn;

use crate::{
    Applied, Command, CommandResponse, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    PutRequest, PutResponse, RangeRequest, RangeResponse, Store, StoreError, TxnRequest,
    TxnResponse,
};

pub(crate) fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    }
}

pub(crate) fn put(store: &mut Store, key: &str, value: &str) -> PutResponse {
    apply_put(store, put_req(key, value))
}

pub(crate) fn apply_put(store: &mut Store, req: PutRequest) -> PutResponse {
    match applied_ok(store.apply(&Command::Put(req))) {
        CommandResponse::Put(r) => r,
        other => panic!("unexpected response {other:?}"),
    }
}

pub(crate) fn del(store: &mut Store, key: &str, range_end: &str) -> DeleteRangeResponse {
    let req = DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        prev_kv: true,
    };
    match applied_ok(store.apply(&Command::DeleteRange(req))) {
        CommandResponse::DeleteRange(r) => r,
        other => panic!("unexpected response {other:?}"),
    }
}

pub(crate) fn txn(store: &mut Store, req: TxnRequest) -> TxnResponse {
    match applied_ok(store.apply(&Command::Txn(req))) {
        CommandResponse::Txn(r) => r,
        other => panic!("unexpected response {other:?}"),
    }
}

pub(crate) fn applied_ok(applied: Applied) -> CommandResponse {
    match applied.result {
        Ok(r) => r,
        Err(e) => panic!("command failed: {e:?}"),
    }
}

/// Applies a command that must fail, and checks that nothing changed.
pub(crate) fn apply_err(store: &mut Store, cmd: Command) -> StoreError {
    let before = fingerprint(store);
    let applied = store.apply(&cmd);
    store.check_invariants();
    assert!(
        applied.events.is_empty(),
        "a failed command produced events"
    );
    assert_eq!(applied.revision, store.revision());
    assert_eq!(
        fingerprint(store),
        before,
        "a failed command changed the store"
    );
    match applied.result {
        Err(e) => e,
        Ok(r) => panic!("command should have failed, got {r:?}"),
    }
}

/// Everything observable about a store, for equality checks.
pub(crate) fn fingerprint(store: &Store) -> (i64, i64, u32, Vec<crate::Lease>, usize) {
    (
        store.revision(),
        store.compact_revision(),
        store.hash_kv(0).expect("hash at current").0,
        store.leases(),
        store.key_count(),
    )
}

pub(crate) fn range_req(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        ..RangeRequest::default()
    }
}

pub(crate) fn get(store: &Store, key: &str) -> Option<KeyValue> {
    let r = store.range(&range_req(key, "")).expect("range");
    r.kvs.into_iter().next()
}

pub(crate) fn keys_of(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).expect("utf8 key"))
        .collect()
}
