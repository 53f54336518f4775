//! Chain, verify, restore and prune over sets written directly (no cluster):
//! the rules that do not need the etcd API.

use std::io::Write;

use nines_store::{KeyValue, RangeRequest};

use crate::format::{Record, RecordWriter};
use crate::manifest::{BackupKind, FileEntry, Manifest, MANIFEST_FORMAT};
use crate::repo::{LocalRepository, Repository};
use crate::{catalog, restore_store, BackupError, PruneOptions};

fn kv(key: &str, value: &str, rev: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        lease,
    }
}

fn put(key: &str, value: &str, rev: i64) -> Record {
    Record::Event {
        delete: false,
        kv: kv(key, value, rev, 0),
    }
}

fn del(key: &str, rev: i64) -> Record {
    Record::Event {
        delete: true,
        kv: KeyValue {
            key: key.as_bytes().to_vec(),
            mod_revision: rev,
            ..KeyValue::default()
        },
    }
}

struct Set<'a> {
    id: &'a str,
    kind: BackupKind,
    parent: Option<&'a str>,
    cluster_id: u64,
    revisions: (i64, i64),
    data: Vec<Record>,
    leases: Vec<(i64, i64)>,
    finished: u64,
}

fn write_set(repo: &LocalRepository, s: Set<'_>) {
    let mut staging = repo.stage(s.id).expect("stage");
    let mut files = Vec::new();
    for (name, records) in [
        (crate::DATA_FILE, s.data.clone()),
        (
            crate::LEASES_FILE,
            s.leases
                .iter()
                .map(|&(id, ttl_secs)| Record::Lease { id, ttl_secs })
                .collect(),
        ),
    ] {
        let mut w = RecordWriter::new(staging.create(name).expect("create")).expect("writer");
        for r in &records {
            w.write(r).expect("write");
        }
        let (mut inner, stats) = w.finish().expect("finish");
        inner.flush().expect("flush");
        files.push(FileEntry {
            name: name.to_string(),
            bytes: stats.bytes,
            raw_bytes: stats.raw_bytes,
            records: stats.records,
            sha256: stats.sha256,
        });
    }
    let m = Manifest {
        format: MANIFEST_FORMAT,
        id: s.id.to_string(),
        kind: s.kind,
        parent: s.parent.map(str::to_string),
        cluster_id: s.cluster_id,
        start_revision: s.revisions.0,
        end_revision: s.revisions.1,
        key_count: s.data.len() as u64,
        lease_count: s.leases.len() as u64,
        started_unix_secs: s.finished,
        finished_unix_secs: s.finished,
        nines_version: "test".into(),
        files,
    };
    let mut out = staging.create(crate::MANIFEST_FILE).expect("create");
    out.write_all(&m.encode().expect("encode")).expect("write");
    out.flush().expect("flush");
    drop(out);
    staging.publish().expect("publish");
}

/// full F1 at 10 <- incr I1 11..=12 ; F1 <- diff D1 11..=14 <- incr I2 15..=15
fn sample_repo() -> (tempfile::TempDir, LocalRepository) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = LocalRepository::open(&tmp.path().join("repo"), true).expect("open");
    let set = |id, kind, parent, revisions, data, leases| Set {
        id,
        kind,
        parent,
        cluster_id: 9,
        revisions,
        data,
        leases,
        finished: 1000,
    };
    write_set(
        &repo,
        set(
            "F1",
            BackupKind::Full,
            None,
            (1, 10),
            vec![
                Record::Key(kv("a", "1", 3, 0)),
                Record::Key(kv("b", "2", 5, 7)),
                Record::Key(kv("c", "3", 10, 0)),
            ],
            vec![(7, 30)],
        ),
    );
    write_set(
        &repo,
        set(
            "I1",
            BackupKind::Incr,
            Some("F1"),
            (11, 12),
            vec![put("a", "10", 11), del("c", 12)],
            vec![(7, 30)],
        ),
    );
    write_set(
        &repo,
        set(
            "D1",
            BackupKind::Diff,
            Some("F1"),
            (11, 14),
            vec![
                put("a", "10", 11),
                del("c", 12),
                put("d", "4", 13),
                put("e", "5", 13),
                Record::Event {
                    delete: false,
                    kv: kv("f", "6", 14, 8),
                },
            ],
            vec![(7, 30), (8, 45)],
        ),
    );
    write_set(
        &repo,
        set(
            "I2",
            BackupKind::Incr,
            Some("D1"),
            (15, 15),
            vec![del("a", 15)],
            vec![(8, 45)],
        ),
    );
    (tmp, repo)
}

fn keys(store: &nines_store::Store) -> Vec<(String, String, i64)> {
    store
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..RangeRequest::default()
        })
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.lease,
            )
        })
        .collect()
}

fn owned(v: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    v.iter()
        .map(|(k, val, l)| (k.to_string(), val.to_string(), *l))
        .collect()
}

#[test]
fn chains_resolve_full_first() {
    let (_tmp, repo) = sample_repo();
    let ids = |id| -> Vec<String> {
        catalog::resolve_chain(&repo, id)
            .expect("chain")
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(ids("I2"), ["F1", "D1", "I2"]);
    assert_eq!(ids("I1"), ["F1", "I1"]);
    assert_eq!(ids("F1"), ["F1"]);
    let report = catalog::verify(&repo, None).expect("verify");
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    assert_eq!(report.good.len(), 4);
}

#[test]
fn each_point_restores_its_keys_and_leases() {
    let (_tmp, repo) = sample_repo();
    let (s, sum) = restore_store(&repo, "F1", None).expect("restore");
    assert_eq!(
        keys(&s),
        owned(&[("a", "1", 0), ("b", "2", 7), ("c", "3", 0)])
    );
    assert_eq!(sum.revision, 10);
    assert_eq!(s.lease_ttl(7), Some(30));

    let (s, _) = restore_store(&repo, "I1", None).expect("restore");
    assert_eq!(keys(&s), owned(&[("a", "10", 0), ("b", "2", 7)]));

    let (s, sum) = restore_store(&repo, "I2", None).expect("restore");
    assert_eq!(
        keys(&s),
        owned(&[("b", "2", 7), ("d", "4", 0), ("e", "5", 0), ("f", "6", 8)])
    );
    assert_eq!(sum.sets, ["F1", "D1", "I2"]);
    // Lease 7 is not in I2's lease list, but a key still holds it: its TTL
    // comes from an earlier set of the chain.
    assert_eq!(s.lease_ttl(7), Some(30));
    assert_eq!(s.lease_ttl(8), Some(45));
    assert_eq!(sum.leases_ttl_unknown, 0);
}

#[test]
fn to_revision_stops_inside_the_chain() {
    let (_tmp, repo) = sample_repo();
    let (s, sum) = restore_store(&repo, "I2", Some(12)).expect("restore");
    assert_eq!(keys(&s), owned(&[("a", "10", 0), ("b", "2", 7)]));
    assert_eq!(sum.sets, ["F1", "D1"]);
    let (s, _) = restore_store(&repo, "I2", Some(10)).expect("restore");
    assert_eq!(
        keys(&s),
        owned(&[("a", "1", 0), ("b", "2", 7), ("c", "3", 0)])
    );
    for bad in [9, 16] {
        assert!(matches!(
            restore_store(&repo, "I2", Some(bad)),
            Err(BackupError::RevisionOutsideChain { .. })
        ));
    }
}

#[test]
fn a_missing_parent_or_a_foreign_link_is_refused() {
    let (tmp, repo) = sample_repo();
    repo.remove("D1").expect("remove");
    assert!(matches!(
        restore_store(&repo, "I2", None),
        Err(BackupError::MissingParent { ref parent, .. }) if parent == "D1"
    ));
    let report = catalog::verify(&repo, None).expect("verify");
    assert_eq!(report.faults.len(), 1, "{:?}", report.faults);

    write_set(
        &repo,
        Set {
            id: "X1",
            kind: BackupKind::Incr,
            parent: Some("I1"),
            cluster_id: 10,
            revisions: (13, 13),
            data: vec![put("z", "1", 13)],
            leases: vec![],
            finished: 1000,
        },
    );
    assert!(matches!(
        restore_store(&repo, "X1", None),
        Err(BackupError::BrokenLink { .. })
    ));
    drop(tmp);
}

#[test]
fn a_damaged_file_is_named_and_nothing_is_restored() {
    let (tmp, repo) = sample_repo();
    let path = tmp.path().join("repo/backups/D1").join(crate::DATA_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&path, bytes).expect("write");
    let report = catalog::verify(&repo, Some("I2")).expect("verify");
    assert_eq!(report.faults.len(), 1);
    assert!(report.faults[0]
        .to_string()
        .contains(&path.display().to_string()));
    assert!(matches!(
        restore_store(&repo, "I2", None),
        Err(BackupError::Corrupt { .. })
    ));
    // I1's chain does not include D1.
    assert!(restore_store(&repo, "I1", None).is_ok());
}

#[test]
fn prune_removes_whole_old_chains_dependants_first() {
    let (_tmp, repo) = sample_repo();
    write_set(
        &repo,
        Set {
            id: "F2",
            kind: BackupKind::Full,
            parent: None,
            cluster_id: 9,
            revisions: (1, 20),
            data: vec![Record::Key(kv("a", "1", 3, 0))],
            leases: vec![],
            finished: 5000,
        },
    );
    let report = crate::prune(
        &repo,
        &PruneOptions {
            keep_full: Some(1),
            older_than_secs: None,
            now_unix_secs: 6000,
        },
    )
    .expect("prune");
    assert_eq!(report.removed, ["I2", "D1", "I1", "F1"]);
    assert_eq!(repo.list_sets().expect("list"), ["F2"]);
    // The newest chain is kept whatever its age.
    let report = crate::prune(
        &repo,
        &PruneOptions {
            keep_full: None,
            older_than_secs: Some(10),
            now_unix_secs: 1_000_000,
        },
    )
    .expect("prune");
    assert!(report.removed.is_empty());
}

#[test]
fn restored_keys_keep_their_mod_revision_and_history_before_is_compacted() {
    let (_tmp, repo) = sample_repo();
    let (s, sum) = restore_store(&repo, "I2", None).expect("restore");
    let got: Vec<(String, i64)> = s
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..RangeRequest::default()
        })
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect();
    let want: Vec<(String, i64)> = [("b", 5), ("d", 13), ("e", 13), ("f", 14)]
        .iter()
        .map(|(k, r)| (k.to_string(), *r))
        .collect();
    assert_eq!(got, want);
    assert!(s.revision() == sum.revision || s.revision() == sum.revision + 1);
    assert_eq!(s.compact_revision(), s.revision());
    s.check_invariants();
}

#[test]
fn prune_by_age_removes_old_chains_but_never_the_newest() {
    let (_tmp, repo) = sample_repo();
    write_set(
        &repo,
        Set {
            id: "F2",
            kind: BackupKind::Full,
            parent: None,
            cluster_id: 9,
            revisions: (1, 20),
            data: vec![Record::Key(kv("a", "1", 3, 0))],
            leases: vec![],
            finished: 5000,
        },
    );
    let opts = |now| PruneOptions {
        keep_full: None,
        older_than_secs: Some(1000),
        now_unix_secs: now,
    };
    // At 1500 the F1 chain (finished at 1000) is 500 s old: kept.
    let report = crate::prune(&repo, &opts(1500)).expect("prune");
    assert!(report.removed.is_empty());
    // At 6500 it is 5500 s old: removed; F2 is old too but the newest chain.
    let report = crate::prune(&repo, &opts(6500)).expect("prune");
    assert_eq!(report.removed, ["I2", "D1", "I1", "F1"]);
    assert_eq!(repo.list_sets().expect("list"), ["F2"]);
}
