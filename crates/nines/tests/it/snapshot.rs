//! `nines snapshot save` downloads a member's snapshot; `nines snapshot
//! restore` turns it into the data dir of a member of a new cluster, which
//! then serves the same keys at the same revision.

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use crate::support::{client, cluster, exe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_snapshot_restores_into_a_new_cluster() {
    let c = cluster(3, &[]).await;
    let mut cl = client(&c.endpoints()).await;
    for i in 0..50 {
        cl.put(format!("s/{i:02}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let rev = cl
        .get("s/", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("snap.db");
    let out = Command::new(exe())
        .args(["--endpoints", &c.members[1].client, "snapshot", "save"])
        .arg(&file)
        .output()
        .expect("save runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ports = nines_testkit::free_ports(3).expect("ports");
    let peer = format!("http://127.0.0.1:{}", ports[0]);
    let data = dir.path().join("r1");
    let initial = format!("r1={peer}");
    let out = Command::new(exe())
        .args(["snapshot", "restore"])
        .arg(&file)
        .args(["--name", "r1", "--initial-cluster", &initial, "--data-dir"])
        .arg(&data)
        .output()
        .expect("restore runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring twice into the same dir is refused.
    let again = Command::new(exe())
        .args(["snapshot", "restore"])
        .arg(&file)
        .args(["--name", "r1", "--initial-cluster", &initial, "--data-dir"])
        .arg(&data)
        .output()
        .expect("restore runs");
    assert!(!again.status.success());

    let client_url = format!("127.0.0.1:{}", ports[1]);
    let mut member = Command::new(exe())
        .args(["server", "--name", "r1", "--data-dir"])
        .arg(&data)
        .args(["--listen-client-urls", &format!("http://{client_url}")])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &initial])
        .args(["--http-addr", &format!("127.0.0.1:{}", ports[2])])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("restored member starts");
    let mut rc = client(&[client_url]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match rc.get("s/", Some(GetOptions::new().with_prefix())).await {
            Ok(g) => break g,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "restored member never served: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(got.count(), 50);
    assert!(got.header().expect("h").revision() >= rev);
    assert_eq!(got.kvs()[7].value(), b"v7");
    rc.put("after", "restore", None)
        .await
        .expect("the restored cluster takes writes");
    let _ = member.kill();
    let _ = member.wait();
}
