//! Bad input never panics a member: garbage on the client port, bad flags,
//! another cluster's data dir, and a corrupted log file (refused at start
//! with a clear error rather than served).

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::support::{client, cluster, exe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_client_port_harms_nobody() {
    let c = cluster(3, &[]).await;
    for payload in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x00\x01\x02\x03garbage garbage garbage",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x00\xff\xff\xff\xff",
    ] {
        let mut s = std::net::TcpStream::connect(&c.members[0].client).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = s.write_all(payload);
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
    let mut cl = client(&[c.members[0].client.clone()]).await;
    cl.put("still", "fine", None)
        .await
        .expect("the member still serves");
    let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

fn server_fails(args: &[&str]) -> String {
    let out = Command::new(exe())
        .arg("server")
        .args(args)
        .output()
        .expect("runs");
    assert!(
        !out.status.success(),
        "server started with bad input {args:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let data = data.to_str().expect("utf8");
    let ports = nines_testkit::free_ports(3).expect("ports");
    let peer = format!("http://127.0.0.1:{}", ports[0]);
    let client = format!("http://127.0.0.1:{}", ports[1]);
    let http = format!("127.0.0.1:{}", ports[2]);
    let base = [
        "--data-dir",
        data,
        "--listen-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--http-addr",
        &http,
    ];

    let err = server_fails(
        &[
            &base[..],
            &["--name", "n9", "--initial-cluster", &format!("n1={peer}")],
        ]
        .concat(),
    );
    assert!(err.contains("no member named \"n9\""), "{err}");
    let err = server_fails(
        &[
            &base[..],
            &["--name", "n1", "--initial-cluster", "n1=ftp://x"],
        ]
        .concat(),
    );
    assert!(err.contains("must start with http://"), "{err}");
    let err = server_fails(&[&base[..], &["--name", "n1", "--initial-cluster", "n1"]].concat());
    assert!(err.contains("is not NAME=URL"), "{err}");
    let err = server_fails(
        &[
            &base[..],
            &["--name", "n1", "--initial-cluster-state", "maybe"],
        ]
        .concat(),
    );
    assert!(err.contains("`new` or `existing`"), "{err}");
    let err = server_fails(
        &[
            &base[..],
            &[
                "--name",
                "n1",
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "150",
            ],
        ]
        .concat(),
    );
    assert!(err.contains("at least twice"), "{err}");
    let err = server_fails(
        &[
            &base[..],
            &[
                "--name",
                "n1",
                "--initial-cluster",
                &format!("n1={peer},n1={peer}"),
            ],
        ]
        .concat(),
    );
    assert!(err.contains("twice"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_cluster_or_member_is_refused() {
    let mut c = cluster(1, &[]).await;
    let mut cl = client(&c.endpoints()).await;
    cl.put("k", "v", None).await.expect("put");
    c.kill(0);
    let data = c.data_dir(0);
    let data = data.to_str().expect("utf8");
    let ports = nines_testkit::free_ports(4).expect("ports");
    let peer = format!("http://127.0.0.1:{}", ports[0]);
    let client_url = format!("http://127.0.0.1:{}", ports[1]);
    let http = format!("127.0.0.1:{}", ports[2]);
    // Same name, a different cluster.
    let other = format!("n1={peer},n2=http://127.0.0.1:{}", ports[3]);
    let err = server_fails(&[
        "--name",
        "n1",
        "--data-dir",
        data,
        "--listen-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &other,
        "--http-addr",
        &http,
    ]);
    assert!(err.contains("belongs to"), "{err}");
    // Another member's name.
    let err = server_fails(&[
        "--name",
        "n7",
        "--data-dir",
        data,
        "--listen-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("n7={peer}"),
        "--http-addr",
        &http,
    ]);
    assert!(err.contains("belongs to member \"n1\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_log_is_detected_and_refused() {
    let mut c = cluster(1, &[]).await;
    let mut cl = client(&c.endpoints()).await;
    for i in 0..20 {
        cl.put(format!("k{i}"), format!("value-{i}"), None)
            .await
            .expect("put");
    }
    c.kill(0);
    let wal = c.data_dir(0).join("raft/wal");
    let seg = std::fs::read_dir(&wal)
        .expect("wal dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    assert!(bytes.len() > 200, "segment has records");
    // Flip a byte inside the payload of an early record.
    bytes[40] ^= 0x5a;
    std::fs::write(&seg, &bytes).expect("write segment");
    let mut cmd = c.command(0);
    let out = cmd.output().expect("runs");
    assert!(!out.status.success(), "a member started on a corrupt log");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(err.contains(".seg"), "the error names the file: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
