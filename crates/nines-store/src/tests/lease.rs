//! Lease grant, attach, detach and revoke.

use super::*;
use crate::{EventKind, Lease, LEASE_TTL_SECS_MAX};

fn grant(s: &mut Store, id: i64, ttl_secs: i64) {
    let applied = s.apply(&Command::LeaseGrant { id, ttl_secs });
    assert_eq!(
        applied.result.unwrap(),
        CommandResponse::LeaseGrant(Lease { id, ttl_secs })
    );
    assert!(applied.events.is_empty());
}

fn put_leased(s: &mut Store, key: &str, lease: i64) {
    apply_put(
        s,
        PutRequest {
            lease,
            ..put_req(key, "v")
        },
    );
}

#[test]
fn lease_grant_does_not_bump_revision_and_is_listed() {
    let mut s = Store::new();
    grant(&mut s, 20, 5);
    grant(&mut s, 10, 60);
    assert_eq!(s.revision(), 1);
    assert_eq!(s.lease_ttl(10), Some(60));
    assert_eq!(s.lease_ttl(11), None);
    assert_eq!(
        s.leases(),
        vec![
            Lease {
                id: 10,
                ttl_secs: 60
            },
            Lease {
                id: 20,
                ttl_secs: 5
            }
        ]
    );
}

#[test]
fn lease_grant_refuses_id_zero_existing_id_and_huge_ttl() {
    let mut s = Store::new();
    grant(&mut s, 1, 5);
    let e = apply_err(&mut s, Command::LeaseGrant { id: 0, ttl_secs: 5 });
    assert!(matches!(e, StoreError::LeaseNotFound { id: 0 }));
    let e = apply_err(&mut s, Command::LeaseGrant { id: 1, ttl_secs: 5 });
    assert!(matches!(e, StoreError::LeaseExists { id: 1 }));
    assert_eq!(e.to_string(), "etcdserver: lease already exists");
    let e = apply_err(
        &mut s,
        Command::LeaseGrant {
            id: 2,
            ttl_secs: LEASE_TTL_SECS_MAX + 1,
        },
    );
    assert!(matches!(e, StoreError::LeaseTtlTooLarge { .. }));
}

#[test]
fn put_moves_key_between_leases_and_lease_zero_detaches() {
    let mut s = Store::new();
    grant(&mut s, 1, 5);
    grant(&mut s, 2, 5);
    put_leased(&mut s, "b", 1);
    put_leased(&mut s, "a", 1);
    assert_eq!(s.lease_keys(1), vec![b"a".to_vec(), b"b".to_vec()]);
    put_leased(&mut s, "a", 2);
    assert_eq!(s.lease_keys(1), vec![b"b".to_vec()]);
    assert_eq!(s.lease_keys(2), vec![b"a".to_vec()]);
    put(&mut s, "a", "unleased");
    assert!(s.lease_keys(2).is_empty());
    assert_eq!(get(&s, "a").unwrap().lease, 0);
    s.check_invariants();
}

#[test]
fn delete_detaches_key_from_its_lease() {
    let mut s = Store::new();
    grant(&mut s, 1, 5);
    put_leased(&mut s, "a", 1);
    del(&mut s, "a", "");
    assert!(s.lease_keys(1).is_empty());
    s.check_invariants();
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision_in_key_order() {
    let mut s = Store::new();
    grant(&mut s, 1, 5);
    put_leased(&mut s, "c", 1);
    put_leased(&mut s, "a", 1);
    put(&mut s, "b", "unleased");
    let applied = s.apply(&Command::LeaseRevoke { id: 1 });
    assert_eq!(applied.result.unwrap(), CommandResponse::LeaseRevoke);
    assert_eq!(applied.revision, 5);
    let keys: Vec<&[u8]> = applied.events.iter().map(|e| e.kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"a"[..], b"c"]);
    assert!(applied
        .events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 5));
    assert_eq!(s.key_count(), 1);
    assert_eq!(s.lease_ttl(1), None);
    s.check_invariants();
}

#[test]
fn lease_revoke_without_keys_does_not_bump_revision() {
    let mut s = Store::new();
    grant(&mut s, 1, 5);
    let applied = s.apply(&Command::LeaseRevoke { id: 1 });
    assert!(applied.result.is_ok());
    assert_eq!(applied.revision, 1);
    assert!(s.leases().is_empty());
}

#[test]
fn lease_revoke_of_absent_lease_is_not_found() {
    let mut s = Store::new();
    let e = apply_err(&mut s, Command::LeaseRevoke { id: 3 });
    assert!(matches!(e, StoreError::LeaseNotFound { id: 3 }));
    assert_eq!(e.to_string(), "etcdserver: requested lease not found");
}
