//! KV semantics through the `etcd-client` crate against a 3-member cluster:
//! revisions, ranges, txns, compaction, and etcd's errors for bad requests
//! (each of which must leave the store unchanged).

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};

use crate::support::{client, cluster};

fn status_text(e: &etcd_client::Error) -> String {
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_semantics_through_each_member() {
    let c = cluster(3, &[]).await;
    // Talk to each member alone: followers must serve writes and reads too.
    let mut per_member = Vec::new();
    for ep in c.endpoints() {
        per_member.push(client(&[ep]).await);
    }
    let r = per_member[0]
        .put("a", "1", None)
        .await
        .expect("put via member 1");
    let rev_a = r.header().expect("header").revision();
    assert_eq!(rev_a, 2, "the first write of a new cluster is revision 2");
    let r = per_member[1]
        .put("b", "2", None)
        .await
        .expect("put via member 2");
    assert_eq!(r.header().expect("header").revision(), 3);
    let r = per_member[2]
        .put("a", "1b", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put via member 3");
    assert_eq!(r.prev_key().expect("prev kv").value(), b"1");

    for m in per_member.iter_mut() {
        // Linearizable reads on every member see every acknowledged write.
        let g = m.get("a", None).await.expect("get");
        let kv = &g.kvs()[0];
        assert_eq!(kv.value(), b"1b");
        assert_eq!(kv.create_revision(), 2);
        assert_eq!(kv.mod_revision(), 4);
        assert_eq!(kv.version(), 2);
        assert_eq!(g.header().expect("header").revision(), 4);
        let h = g.header().expect("header");
        assert_ne!(h.cluster_id(), 0);
        assert_ne!(h.member_id(), 0);
        assert!(h.raft_term() >= 1);
    }
    let mut cl = client(&c.endpoints()).await;
    // Historical read.
    let g = cl
        .get("a", Some(GetOptions::new().with_revision(3)))
        .await
        .expect("get at rev 3");
    assert_eq!(g.kvs()[0].value(), b"1");
    // Sorted, limited prefix read.
    for k in ["p/1", "p/2", "p/3"] {
        cl.put(k, k, None).await.expect("put");
    }
    let g = cl
        .get(
            "p/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_limit(2)
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await
        .expect("prefix get");
    assert_eq!(g.count(), 3);
    assert!(g.more());
    let keys: Vec<&[u8]> = g.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, vec![&b"p/3"[..], b"p/2"]);
    let g = cl
        .get(
            "p/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count");
    assert_eq!(g.count(), 3);
    assert!(g.kvs().is_empty());
    // Serializable reads are served too.
    let g = cl
        .get("p/1", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable");
    assert_eq!(g.kvs().len(), 1);

    // A txn is atomic: one revision for all its writes.
    let before = cl
        .get("a", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    let t = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1b")])
        .and_then([
            TxnOp::put("t1", "x", None),
            TxnOp::put("t2", "y", None),
            TxnOp::delete("b", None),
        ])
        .or_else([TxnOp::put("never", "x", None)]);
    let r = cl.txn(t).await.expect("txn");
    assert!(r.succeeded());
    let after = r.header().expect("h").revision();
    assert_eq!(after, before + 1);
    let g = cl
        .get("t", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert!(g.kvs().iter().all(|kv| kv.mod_revision() == after));
    assert_eq!(cl.get("b", None).await.expect("get").count(), 0);
    // A failed compare runs the failure branch.
    let t = Txn::new()
        .when([Compare::version("a", CompareOp::Greater, 10)])
        .and_then([TxnOp::put("never", "x", None)])
        .or_else([TxnOp::get("a", None)]);
    let r = cl.txn(t).await.expect("txn");
    assert!(!r.succeeded());
    assert_eq!(cl.get("never", None).await.expect("get").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_errors_are_etcds_and_change_nothing() {
    let c = cluster(3, &[]).await;
    let mut cl = client(&c.endpoints()).await;
    for i in 0..5 {
        cl.put("k", format!("v{i}"), None).await.expect("put");
    }
    let rev = cl
        .get("k", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    assert_eq!(rev, 6);

    // Future revision.
    let e = cl
        .get("k", Some(GetOptions::new().with_revision(rev + 10)))
        .await
        .expect_err("future");
    assert!(
        status_text(&e).contains("required revision is a future revision"),
        "{e}"
    );

    // Compaction, then a read below it.
    cl.compact(4, None).await.expect("compact");
    let e = cl
        .get("k", Some(GetOptions::new().with_revision(3)))
        .await
        .expect_err("compacted");
    assert!(
        status_text(&e).contains("required revision has been compacted"),
        "{e}"
    );
    let e = cl.compact(3, None).await.expect_err("compact below");
    assert!(
        status_text(&e).contains("required revision has been compacted"),
        "{e}"
    );
    let e = cl
        .compact(rev + 100, None)
        .await
        .expect_err("compact future");
    assert!(status_text(&e).contains("future revision"), "{e}");
    // Reads at or above the compaction revision still answer.
    let g = cl
        .get("k", Some(GetOptions::new().with_revision(4)))
        .await
        .expect("at compact rev");
    assert_eq!(g.kvs()[0].value(), b"v2");

    // Oversize request: refused, nothing written.
    let big = vec![b'x'; 1536 * 1024 + 100];
    let e = cl.put("big", big, None).await.expect_err("oversize");
    assert!(status_text(&e).contains("request is too large"), "{e}");
    assert_eq!(cl.get("big", None).await.expect("get").count(), 0);

    // Too many operations in one txn.
    let ops: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("t{i}"), "x", None))
        .collect();
    let e = cl
        .txn(Txn::new().and_then(ops))
        .await
        .expect_err("too many ops");
    assert!(
        status_text(&e).contains("too many operations in txn request"),
        "{e}"
    );
    assert_eq!(
        cl.get("t", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .expect("count")
            .count(),
        0
    );

    // Duplicate key in one txn.
    let e = cl
        .txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
        .await
        .expect_err("duplicate");
    assert!(
        status_text(&e).contains("duplicate key given in txn request"),
        "{e}"
    );

    // Empty key.
    let e = cl.put("", "v", None).await.expect_err("empty key");
    assert!(status_text(&e).contains("key is not provided"), "{e}");

    // Unknown lease.
    let e = cl
        .put("l", "v", Some(PutOptions::new().with_lease(12345)))
        .await
        .expect_err("lease");
    assert!(status_text(&e).contains("requested lease not found"), "{e}");

    // An inverted range is empty, not an error.
    let g = cl
        .get("z", Some(GetOptions::new().with_range("a")))
        .await
        .expect("inverted range");
    assert_eq!(g.count(), 0);

    // None of the refused requests moved the revision.
    let now = cl
        .get("k", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    assert_eq!(now, rev, "refused requests must not write");
}
