//! Fan-out tests against a real single-member server in this process: many
//! streams with watchers of different kinds (prefix, previous values, filters,
//! a start in the past) follow puts, deletes and a multi-key transaction, and
//! each watcher must see exactly its events, once, in revision order; a
//! progress notification must come after every event up to its revision.

use std::time::{Duration, Instant};

use nines_raft::{ClusterState, NodeConfig, Timing};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::{Limits, ServerConfig};

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// One watcher as a test client sees it.
struct Seen {
    /// (mod_revision, key, is_put, has_prev_kv) of every event, in order.
    events: Vec<(i64, String, bool, bool)>,
}

fn put(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_exactly_its_events_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer, http) = (free_addr(), free_addr(), free_addr());
    let cfg = ServerConfig {
        node: NodeConfig {
            name: "w1".into(),
            data_dir: dir.path().join("w1"),
            listen_peer: peer,
            advertise_peer_urls: vec![format!("http://{peer}")],
            client_urls: vec![format!("http://{client}")],
            initial_cluster: vec![("w1".into(), format!("http://{peer}"))],
            cluster_state: ClusterState::New,
            timing: Timing::default(),
            snapshot_entries: 10_000,
            request_timeout: Duration::from_secs(5),
            unsafe_stale_reads: false,
            unsafe_lazy_fsync: false,
            quota_bytes: 2 << 30,
        },
        listen_client: client,
        http_addr: http,
        limits: Limits::default(),
        fault_injection: false,
        watch_progress_interval: Duration::from_secs(600),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::run(cfg, async move {
        let _ = stop_rx.await;
    }));
    let url = format!("http://{client}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kv = loop {
        assert!(Instant::now() < deadline, "the member never served a put");
        if server.is_finished() {
            panic!("the member stopped: {:?}", server.await);
        }
        if let Ok(mut kv) = KvClient::connect(url.clone()).await {
            let probe = pb::PutRequest {
                key: b"probe".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            };
            if kv.put(probe).await.is_ok() {
                break kv;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Per stream: watcher 0 every event under f/, watcher 1 puts only with
    // previous values, watcher 2 (added after the first writes) from an
    // earlier revision, so it replays history, then follows live events.
    let streams = 12;
    let mut senders = Vec::new();
    let mut inbound = Vec::new();
    let create = |start_revision: i64, prev_kv: bool, no_delete: bool| pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"f/".to_vec(),
            range_end: b"f0".to_vec(),
            start_revision,
            prev_kv,
            filters: if no_delete {
                vec![pb::watch_create_request::FilterType::Nodelete as i32]
            } else {
                Vec::new()
            },
            ..Default::default()
        })),
    };
    for _ in 0..streams {
        let (tx, rx) = mpsc::channel(16);
        tx.send(create(0, false, false)).await.expect("send");
        tx.send(create(0, true, true)).await.expect("send");
        let mut wc = WatchClient::connect(url.clone()).await.expect("connect");
        let mut resp = wc
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        // Both watchers exist before the first write.
        for id in 0..2 {
            let created = resp.next().await.expect("open").expect("no error");
            assert!(created.created && !created.canceled && created.watch_id == id);
        }
        senders.push(tx);
        inbound.push(resp);
    }
    let mut first_rev = 0;
    let mut writes = Vec::new();
    for i in 0..60 {
        let key = format!("f/k{}", i % 7);
        let r = kv
            .put(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .expect("put");
        let rev = r.into_inner().header.expect("header").revision;
        if i == 0 {
            first_rev = rev;
        }
        writes.push((rev, key, true));
        if i == 30 {
            for tx in &senders {
                tx.send(create(first_rev, false, false))
                    .await
                    .expect("send");
            }
        }
        if i % 10 == 9 {
            let key = format!("f/k{}", i % 7);
            let r = kv
                .delete_range(pb::DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await
                .expect("delete");
            writes.push((r.into_inner().header.expect("h").revision, key, false));
        }
    }
    let txn = pb::TxnRequest {
        success: vec![put("f/t1"), put("f/t2"), put("f/t3")],
        ..Default::default()
    };
    let rev = kv
        .txn(txn)
        .await
        .expect("txn")
        .into_inner()
        .header
        .expect("h")
        .revision;
    for k in ["f/t1", "f/t2", "f/t3"] {
        writes.push((rev, k.to_string(), true));
    }
    let last_rev = rev;
    for tx in &senders {
        let progress = pb::WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
        };
        tx.send(progress).await.expect("send");
    }

    let expected_all: Vec<(i64, String, bool)> = writes.clone();
    let expected_puts: Vec<(i64, String, bool)> = writes.iter().filter(|w| w.2).cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for stream in &mut inbound {
        let mut seen: Vec<Seen> = (0..3).map(|_| Seen { events: Vec::new() }).collect();
        let mut progress_rev = None;
        while progress_rev.is_none()
            || seen
                .iter()
                .any(|s| s.events.last().map(|e| e.0) < Some(last_rev))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, stream.next())
                .await
                .expect("events keep coming")
                .expect("stream open")
                .expect("no error");
            assert!(!msg.canceled, "no watcher is canceled: {msg:?}");
            if msg.watch_id == -1 {
                let rev = msg.header.expect("header").revision;
                // Every event up to the notification's revision came first.
                for s in &seen[..2] {
                    assert!(s.events.last().map(|e| e.0) >= Some(rev.min(last_rev)));
                }
                progress_rev = Some(rev);
                continue;
            }
            let w = usize::try_from(msg.watch_id).expect("watch id");
            for e in msg.events {
                let kv = e.kv.expect("kv");
                seen[w].events.push((
                    kv.mod_revision,
                    String::from_utf8(kv.key).expect("utf8"),
                    e.r#type == 0,
                    e.prev_kv.is_some(),
                ));
            }
        }
        let strip = |s: &Seen| -> Vec<(i64, String, bool)> {
            s.events.iter().map(|e| (e.0, e.1.clone(), e.2)).collect()
        };
        assert_eq!(
            strip(&seen[0]),
            expected_all,
            "watcher 0: every event once, in order"
        );
        assert_eq!(strip(&seen[1]), expected_puts, "watcher 1: puts only");
        assert_eq!(
            strip(&seen[2]),
            expected_all,
            "watcher 2: history, then live"
        );
        assert!(
            seen[0].events.iter().all(|e| !e.3),
            "no previous values unasked"
        );
        // A put of a key that existed carries its previous value.
        assert!(
            seen[1].events.iter().any(|e| e.3),
            "previous values when asked"
        );
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
