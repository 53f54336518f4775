//! Watches and leases through real clients: a watch survives a leader kill
//! and delivers every event once, in order; a lease kept alive survives two
//! leader kills; an unrenewed lease's keys vanish within TTL + 1 s; etcdctl's
//! lease and watch commands print what etcd prints.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};

use crate::support::{client, cluster, etcdctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_every_event_once_in_order_across_a_leader_kill() {
    let mut c = cluster(3, &[]).await;
    let leader = c
        .wait_agreed_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let follower = (leader + 1) % 3;
    let mut wc = client(&[c.members[follower].client.clone()]).await;
    let mut stream = wc
        .watch("w/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let others: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| c.members[i].client.clone())
        .collect();
    let mut writer = client(&c.endpoints()).await;
    let mut acked = BTreeSet::new();
    for i in 0..300 {
        if i == 100 {
            c.kill(leader);
            writer = client(&others).await;
        }
        if i == 200 {
            c.restart(leader).expect("restart");
        }
        let key = format!("w/{i:04}");
        for _ in 0..50 {
            if writer.put(key.clone(), "v", None).await.is_ok() {
                acked.insert(key.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(acked.len() >= 290, "writes went through: {}", acked.len());
    let last_rev = writer
        .get("w/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut top = 0;
    while top < last_rev {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .expect("events keep coming");
        let resp = msg.expect("stream ok").expect("stream open");
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            assert_eq!(e.event_type(), EventType::Put);
            seen.push((
                kv.mod_revision(),
                String::from_utf8_lossy(kv.key()).into_owned(),
            ));
            top = top.max(kv.mod_revision());
        }
    }
    let revs: Vec<i64> = seen.iter().map(|s| s.0).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revisions strictly increase: no duplicate, no reorder"
    );
    let keys: BTreeSet<String> = seen.iter().map(|s| s.1.clone()).collect();
    for k in &acked {
        assert!(
            keys.contains(k),
            "acknowledged write {k} never reached the watcher"
        );
    }
    // Resuming from a revision replays the same history.
    let first = revs[0];
    let mut s2 = wc
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(first)),
        )
        .await
        .expect("watch from revision");
    let mut replay = Vec::new();
    while replay.len() < revs.len() {
        let resp = tokio::time::timeout(Duration::from_secs(10), s2.message())
            .await
            .expect("replay")
            .expect("ok")
            .expect("open");
        replay.extend(
            resp.events()
                .iter()
                .map(|e| e.kv().expect("kv").mod_revision()),
        );
    }
    assert_eq!(replay, revs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_kept_alive_survives_two_leader_kills() {
    let mut c = cluster(3, &[]).await;
    let mut cl = client(&c.endpoints()).await;
    let lease = cl.lease_grant(3, None).await.expect("grant").id();
    cl.put("held", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");
    let eps = c.endpoints();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let keeper = tokio::spawn(async move {
        // A client that keeps the lease alive once a second, reconnecting
        // through the surviving members when its stream breaks.
        let mut n = 0usize;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) && n < 10_000 {
            n += 1;
            let ep = [eps[n % eps.len()].clone()];
            let Ok(Ok(mut kc)) = tokio::time::timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect(
                    ep.iter().map(|e| format!("http://{e}")).collect::<Vec<_>>(),
                    Some(etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2))),
                ),
            )
            .await
            else {
                continue;
            };
            let Ok((mut k, mut s)) = kc.lease_keep_alive(lease).await else {
                continue;
            };
            loop {
                if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if k.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(2), s.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        }
    });
    for _ in 0..2 {
        let leader = c
            .wait_agreed_leader(Duration::from_secs(15))
            .await
            .expect("leader");
        c.kill(leader);
        c.wait_leader(Duration::from_secs(15))
            .await
            .expect("new leader");
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.restart(leader).expect("restart");
        c.wait_agreed_leader(Duration::from_secs(15))
            .await
            .expect("leader");
    }
    let mut check = client(&c.endpoints()).await;
    let g = check.get("held", None).await.expect("get");
    assert_eq!(
        g.kvs().len(),
        1,
        "a kept-alive lease expired across leader kills"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = keeper.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrenewed_lease_keys_vanish_within_ttl_plus_one_second() {
    let c = cluster(3, &[]).await;
    let mut cl = client(&c.endpoints()).await;
    let lease = cl.lease_grant(2, None).await.expect("grant").id();
    cl.put("temp", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");
    let start = Instant::now();
    loop {
        let g = cl.get("temp", None).await.expect("get");
        if g.kvs().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "key outlived TTL + 1 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "lease expired early: {:?}",
        start.elapsed()
    );
    let ttl = cl.lease_time_to_live(lease, None).await.expect("ttl");
    assert_eq!(ttl.ttl(), -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_and_watch_commands() {
    let c = cluster(3, &[]).await;
    let eps = c.endpoints().join(",");
    let g = etcdctl(&eps, &["lease", "grant", "60"], None);
    assert_eq!(g.code, 0, "{}", g.stderr);
    let id = g
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert_eq!(g.stdout.trim(), format!("lease {id} granted with TTL(60s)"));
    assert_eq!(
        etcdctl(&eps, &["put", "--lease", &id, "lk", "lv"], None)
            .stdout
            .trim(),
        "OK"
    );
    let t = etcdctl(&eps, &["lease", "timetolive", &id, "--keys"], None);
    assert!(
        t.stdout
            .starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout.trim().ends_with("attached keys([lk])"),
        "{}",
        t.stdout
    );
    let l = etcdctl(&eps, &["lease", "list"], None);
    assert_eq!(l.stdout.trim(), format!("found 1 leases\n{id}"));
    let k = etcdctl(&eps, &["lease", "keep-alive", "--once", &id], None);
    assert_eq!(
        k.stdout.trim(),
        format!("lease {id} keepalived with TTL(60)")
    );
    let r = etcdctl(&eps, &["lease", "revoke", &id], None);
    assert_eq!(r.stdout.trim(), format!("lease {id} revoked"));
    assert_eq!(etcdctl(&eps, &["get", "lk"], None).stdout, "");
    let r = etcdctl(&eps, &["lease", "revoke", &id], None);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("Error: failed to revoke lease (etcdserver: requested lease not found)"),
        "{}",
        r.stderr
    );
    let t = etcdctl(&eps, &["lease", "timetolive", &id], None);
    assert_eq!(t.stdout.trim(), format!("lease {id} already expired"));

    // History replay with prev_kv, then a compacted start revision.
    etcdctl(&eps, &["put", "wk", "a"], None);
    etcdctl(&eps, &["put", "wk", "b"], None);
    let rev = etcdctl(&eps, &["get", "wk", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&rev.stdout).expect("json");
    let last = v["header"]["revision"].as_i64().expect("revision");
    let mut w = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={eps}"))
        .args(["watch", "wk", &format!("--rev={}", last - 1), "--prev-kv"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    let mut out = w.stdout.take().expect("stdout");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.lines().count() < 8 && Instant::now() < deadline {
        let mut buf = [0u8; 256];
        use std::io::Read;
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = w.kill();
    let _ = w.wait();
    // etcdctl prints each event as TYPE, then prev key and value, then key and value.
    assert_eq!(text, "PUT\nwk\na\nPUT\nwk\na\nwk\nb\n");
    etcdctl(&eps, &["compaction", &last.to_string()], None);
    // Bounded: a watch that is not cancelled would block forever.
    let wc = std::process::Command::new("timeout")
        .args([
            "10",
            "etcdctl",
            &format!("--endpoints={eps}"),
            "watch",
            "wk",
            "--rev=1",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl watch");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&wc.stdout),
        String::from_utf8_lossy(&wc.stderr)
    );
    assert!(text.contains("compacted"), "{text}");
}

/// SIGTERM stops a member promptly even while clients hold watch streams
/// and lease keep-alives open (they would hold a graceful drain forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_with_open_watches() {
    let mut c = cluster(1, &[]).await;
    let mut cl = client(&c.endpoints()).await;
    let mut stream = cl.watch("w", None).await.expect("watch");
    cl.put("w", "1", None).await.expect("put");
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5 s")
        .expect("watch answer");
    assert!(first.is_some());
    let lease = cl.lease_grant(30, None).await.expect("grant");
    let (_keeper, _responses) = cl.lease_keep_alive(lease.id()).await.expect("keepalive");
    c.terminate(0);
    let code = c
        .wait_exit(0, Duration::from_secs(10))
        .expect("the member exits within 10 s of SIGTERM");
    assert_eq!(code, Some(0));
}
