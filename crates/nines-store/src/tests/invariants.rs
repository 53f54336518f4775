//! The invariant checker notices each kind of damage it claims to check.

use std::sync::Arc;

use super::*;

fn leased_store() -> Store {
    let mut s = Store::new();
    applied_ok(s.apply(&Command::LeaseGrant { id: 1, ttl_secs: 5 }));
    apply_put(
        &mut s,
        PutRequest {
            lease: 1,
            ..put_req("a", "1")
        },
    );
    put(&mut s, "a", "2");
    apply_put(
        &mut s,
        PutRequest {
            lease: 1,
            ..put_req("b", "1")
        },
    );
    del(&mut s, "a", "");
    s.check_invariants();
    s
}

fn broken(damage: impl FnOnce(&mut Store)) -> String {
    let mut s = leased_store();
    damage(&mut s);
    s.verify().expect_err("damage must be noticed")
}

#[test]
fn invariant_checker_notices_wrong_counters() {
    assert!(broken(|s| s.live_keys += 1).contains("live keys"));
    assert!(broken(|s| s.size_bytes -= 1).contains("bytes"));
    assert!(broken(|s| s.revision += 1).contains("log"));
}

#[test]
fn invariant_checker_notices_broken_lease_index() {
    assert!(broken(|s| {
        s.leases.get_mut(&1).unwrap().keys.clear();
    })
    .contains("lease"));
    assert!(broken(|s| {
        s.leases
            .get_mut(&1)
            .unwrap()
            .keys
            .insert(Arc::from(&b"a"[..]));
    })
    .contains("not attached"));
}

#[test]
fn invariant_checker_notices_broken_history() {
    assert!(broken(|s| {
        let h = s.keys.get_mut(&b"a"[..]).unwrap();
        h.entries.swap(1, 2);
    })
    .contains("order"));
    assert!(broken(|s| {
        let h = s.keys.get_mut(&b"a"[..]).unwrap();
        h.entries[1].live.as_mut().unwrap().version = 5;
    })
    .contains("do not follow"));
    assert!(broken(|s| {
        let h = s.keys.get_mut(&b"a"[..]).unwrap();
        h.entries.remove(0);
    })
    .contains("do not follow"));
    assert!(broken(|s| {
        let h = s.keys.get_mut(&b"a"[..]).unwrap();
        h.entries.drain(..2);
    })
    .contains("not at the compaction"));
    assert!(broken(|s| {
        s.log.back_mut().unwrap().clear();
    })
    .contains("wrote nothing"));
}

#[test]
#[should_panic(expected = "store invariant broken")]
fn check_invariants_panics_on_damage() {
    let mut s = leased_store();
    s.live_keys = 0;
    s.check_invariants();
}
