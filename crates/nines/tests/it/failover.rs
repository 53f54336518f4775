//! kill -9 under write load: a new leader serves writes again, every
//! acknowledged write survives on every live member, and a killed member
//! restarts from its data dir and catches up, also by snapshot install
//! after the others purged their logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use crate::support::{client, cluster, Cluster};

/// Acknowledged writes: key -> value, and the time of the last success.
#[derive(Default)]
struct Acks {
    writes: BTreeMap<String, String>,
    last_ok: Option<Instant>,
}

/// Writers that keep putting unique keys until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Acks>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(endpoints: Vec<String>, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Acks::default()));
        let mut tasks = Vec::new();
        for w in 0..writers {
            // Each writer talks to one member, so a kill hits some writers
            // and followers forward for the others.
            let mut cl = client(&[endpoints[w % endpoints.len()].clone()]).await;
            let all = endpoints.clone();
            let (stop, acks) = (stop.clone(), acks.clone());
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                let mut failures = 0u32;
                while !stop.load(Ordering::Relaxed) && seq < 1_000_000 {
                    let key = format!("w/{w}/{seq:08}");
                    let val = format!("v{seq}");
                    match tokio::time::timeout(
                        Duration::from_secs(6),
                        cl.put(key.clone(), val.clone(), None),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            let mut a = acks.lock().expect("acks");
                            a.writes.insert(key, val);
                            a.last_ok = Some(Instant::now());
                            failures = 0;
                        }
                        _ => {
                            failures += 1;
                            // The member may be dead: move to the next one.
                            if failures.is_multiple_of(3) {
                                let next = all[(w + failures as usize / 3) % all.len()].clone();
                                cl = client(&[next]).await;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    seq += 1;
                }
            }));
        }
        Load { stop, acks, tasks }
    }

    fn acked(&self) -> usize {
        self.acks.lock().expect("acks").writes.len()
    }

    /// Waits until `n` more writes than now are acknowledged.
    async fn wait_more(&self, n: usize, timeout: Duration) -> Duration {
        let start = Instant::now();
        let target = self.acked() + n;
        while self.acked() < target {
            assert!(
                start.elapsed() < timeout,
                "writes stalled: {} of {target} acknowledged",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    async fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = self.acks.lock().expect("acks");
        acks.writes.clone()
    }
}

/// Every acknowledged write is on every running member (read linearizably
/// through that member alone).
async fn assert_all_present(c: &Cluster, acked: &BTreeMap<String, String>) {
    assert!(!acked.is_empty(), "the load acknowledged no write");
    for i in 0..c.members.len() {
        if !c.is_running(i) {
            continue;
        }
        let mut cl = client(&[c.members[i].client.clone()]).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            match cl.get("w/", Some(GetOptions::new().with_prefix())).await {
                Ok(g) => break g,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "member {} does not answer: {e}",
                        c.members[i].name
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let have: BTreeMap<String, String> = got
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into(),
                    String::from_utf8_lossy(kv.value()).into(),
                )
            })
            .collect();
        for (k, v) in acked {
            assert_eq!(
                have.get(k),
                Some(v),
                "member {} lost acknowledged write {k}",
                c.members[i].name
            );
        }
    }
}

async fn kill_and_recover(c: &mut Cluster, load: &Load, victim: usize) {
    c.kill(victim);
    let gap = load.wait_more(20, Duration::from_secs(15)).await;
    eprintln!(
        "member {} killed; 20 more writes acknowledged after {gap:?}",
        c.members[victim].name
    );
    c.wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    c.restart(victim).expect("restart");
    load.wait_more(50, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_write() {
    let mut c = cluster(3, &[]).await;
    let load = Load::start(c.endpoints(), 8).await;
    load.wait_more(100, Duration::from_secs(20)).await;
    let leader = c
        .wait_agreed_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    kill_and_recover(&mut c, &load, leader).await;
    let acked = load.stop().await;
    assert_all_present(&c, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_kill_and_two_restarts_in_a_row() {
    let mut c = cluster(3, &[]).await;
    let load = Load::start(c.endpoints(), 8).await;
    load.wait_more(100, Duration::from_secs(20)).await;
    let leader = c
        .wait_agreed_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let follower = (leader + 1) % 3;
    kill_and_recover(&mut c, &load, follower).await;
    // Two leader kills back to back.
    for _ in 0..2 {
        let leader = c
            .wait_agreed_leader(Duration::from_secs(15))
            .await
            .expect("leader");
        kill_and_recover(&mut c, &load, leader).await;
    }
    let acked = load.stop().await;
    assert_all_present(&c, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_member_catches_up_by_snapshot_after_purge() {
    let mut c = cluster(3, &["--snapshot-count", "50"]).await;
    let load = Load::start(c.endpoints(), 8).await;
    load.wait_more(100, Duration::from_secs(20)).await;
    let leader = c
        .wait_agreed_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let follower = (leader + 1) % 3;
    c.kill(follower);
    // Enough writes that the others snapshot and purge what it lacks.
    load.wait_more(1500, Duration::from_secs(60)).await;
    let purged = std::fs::read_dir(c.data_dir(leader).join("raft/wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name() == "purged");
    assert!(purged, "the leader purged its log");
    c.restart(follower).expect("restart");
    load.wait_more(100, Duration::from_secs(20)).await;
    let acked = load.stop().await;
    assert_all_present(&c, &acked).await;
    let log = std::fs::read_to_string(c.log_path(follower)).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

/// A leader killed and restarted before anyone else campaigns comes back as
/// leader of the same term, with its state machine from the last snapshot
/// and, at worst, no commit index on disk. Its linearizable reads must
/// still see every write it acknowledged before the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_leader_serves_no_stale_read() {
    // A long election timeout keeps the followers from campaigning while
    // the leader is down, so it returns as leader.
    let mut c = cluster(3, &["--snapshot-count", "40", "--election-timeout", "4000"]).await;
    let leader = c
        .wait_agreed_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let ep = c.endpoints()[leader].clone();
    let mut cl = client(std::slice::from_ref(&ep)).await;
    cl.put("register", "old", None).await.expect("put old");
    // Enough entries for a snapshot holding "old", and few enough after it
    // that no later snapshot holds "new".
    for i in 0..50 {
        cl.put(format!("filler/{i:03}"), "x", None)
            .await
            .expect("put filler");
    }
    let snap = c.data_dir(leader).join("snap/current.snap");
    assert!(snap.exists(), "the leader took a snapshot");
    cl.put("register", "new", None).await.expect("put new");
    let term_before = c.cluster_view(leader).await.expect("view")["term"].clone();

    // The followers stop while the leader is down, so the restarted
    // leader's first read and its first replication race from the start.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &f in &followers {
        c.pause(f, true);
    }
    c.kill(leader);
    // The commit index on disk is only a hint; lose it.
    let _ = std::fs::remove_file(c.data_dir(leader).join("raft/committed"));
    c.restart(leader).expect("restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&ep).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "member did not listen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reads fail (no quorum) until the followers continue; the first one to
    // succeed races the restarted leader's first replication round.
    let read = tokio::spawn(async move {
        let mut cl = client(std::slice::from_ref(&ep)).await;
        for _ in 0..2000 {
            if let Ok(resp) = cl.get("register", None).await {
                return Some(resp);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for &f in &followers {
        c.pause(f, false);
    }
    let resp = read
        .await
        .expect("read task")
        .expect("a linearizable get succeeds once the followers continue");
    let value = resp
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or("").to_string());
    assert_eq!(value.as_deref(), Some("new"), "stale read after restart");

    let view = c.cluster_view(leader).await.expect("view");
    assert_eq!(
        view["term"], term_before,
        "the test needs the leader to return in the same term: {view}"
    );
}
