//! The real `etcdctl` 3.4 against a 3-member nines cluster, side by side
//! with a real etcd running the same command sequence: outputs must match
//! once member ids, cluster ids and raft terms are masked.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nines_testkit::Etcd;

use crate::support::{cluster, etcdctl, Out};

/// Masks what legitimately differs between two clusters: ids, terms, timings.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        let mut l = line.to_string();
        for field in ["\"cluster_id\":", "\"member_id\":", "\"raft_term\":"] {
            while let Some(pos) = l.find(field) {
                let start = pos + field.len();
                let end = l[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map(|e| start + e)
                    .unwrap_or(l.len());
                l = format!("{}{}X{}", &l[..pos], field.replace(':', "="), &l[end..]);
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The user-facing error lines of etcdctl's stderr (its retry logs carry
/// timestamps and connection ids that differ by nature).
fn error_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| l.starts_with("Error")).collect()
}

/// The command sequence both sides run, with optional stdin.
fn sequence() -> Vec<(Vec<&'static str>, Option<&'static str>)> {
    vec![
        (vec!["put", "foo", "bar"], None),
        (vec!["put", "foo2", "baz"], None),
        (vec!["put", "fop", "x"], None),
        (vec!["put", "a", "1"], None),
        (vec!["put", "foo", "bar2"], None),
        (vec!["get", "foo"], None),
        (vec!["get", "foo", "--prefix"], None),
        (vec!["get", "a", "--from-key"], None),
        (vec!["get", "foo", "--rev=2"], None),
        (vec!["get", "foo", "--prefix", "--limit=1"], None),
        (vec!["get", "foo", "--prefix", "--keys-only"], None),
        (vec!["get", "foo", "--prefix", "--print-value-only"], None),
        (vec!["get", "foo", "-w", "json"], None),
        (vec!["get", "fo", "--prefix", "-w", "json"], None),
        (vec!["get", "nothing"], None),
        (vec!["get", "foo", "--rev=100"], None),
        (vec!["del", "fop", "--prev-kv"], None),
        (vec!["del", "foo", "--prefix"], None),
        (vec!["del", "nothing"], None),
        (vec!["put", "k", "v1"], None),
        (
            vec!["txn"],
            Some("value(\"k\") = \"v1\"\n\nput k v2\nget k\n\nput k failed\n\n"),
        ),
        (
            vec!["txn"],
            Some("mod(\"k\") < \"3\"\n\nput k never\n\nget k\ndel a\n\n"),
        ),
        (
            vec!["txn", "-w", "json"],
            Some("version(\"k\") = \"2\"\n\nget k\n\n\n"),
        ),
        (vec!["get", "", "--from-key"], None),
        (vec!["compaction", "5"], None),
        (vec!["get", "foo", "--rev=3"], None),
        (vec!["compaction", "4"], None),
        (vec!["get", "k", "--rev=6"], None),
    ]
}

fn run_all(endpoints: &str) -> Vec<Out> {
    sequence()
        .into_iter()
        .map(|(args, stdin)| etcdctl(endpoints, &args, stdin))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_kv_commands_match_real_etcd() {
    let c = cluster(3, &[]).await;
    let nines_eps = c.endpoints().join(",");
    let nines = run_all(&nines_eps);
    let etcd = Etcd::start("e1").expect("etcd");
    let reference = run_all(&etcd.endpoint);
    for (i, ((args, _), (n, e))) in sequence()
        .iter()
        .zip(nines.iter().zip(&reference))
        .enumerate()
    {
        assert_eq!(
            n.code, e.code,
            "step {i} {args:?}: exit code; nines stderr: {}",
            n.stderr
        );
        assert_eq!(
            normalize(&n.stdout),
            normalize(&e.stdout),
            "step {i} {args:?}: stdout"
        );
        assert_eq!(
            error_lines(&n.stderr),
            error_lines(&e.stderr),
            "step {i} {args:?}: stderr"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_endpoint_and_member_commands_work() {
    let c = cluster(3, &[]).await;
    let eps = c.endpoints().join(",");
    let health = etcdctl(&eps, &["endpoint", "health"], None);
    assert_eq!(health.code, 0, "{}", health.stderr);
    assert_eq!(
        health.stdout.matches("is healthy").count() + health.stderr.matches("is healthy").count(),
        3
    );

    let status = etcdctl(&eps, &["endpoint", "status", "-w", "json"], None);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("json status");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    let leaders: std::collections::BTreeSet<u64> = rows
        .iter()
        .map(|r| r["Status"]["leader"].as_u64().expect("leader id"))
        .collect();
    assert_eq!(leaders.len(), 1, "all members name one leader: {leaders:?}");
    let member_ids: Vec<u64> = rows
        .iter()
        .map(|r| {
            r["Status"]["header"]["member_id"]
                .as_u64()
                .expect("member id")
        })
        .collect();
    assert!(member_ids.contains(leaders.iter().next().expect("one")));

    let members = etcdctl(&eps, &["member", "list"], None);
    assert_eq!(members.code, 0, "{}", members.stderr);
    let lines: Vec<&str> = members.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", members.stdout);
    for m in &c.members {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!(", {}, ", m.name)))
            .unwrap_or_else(|| panic!("member {} listed: {}", m.name, members.stdout));
        assert!(line.contains("started"), "{line}");
        assert!(line.contains(&format!("http://{}", m.peer)), "{line}");
        assert!(line.contains(&format!("http://{}", m.client)), "{line}");
        assert!(line.ends_with("false"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_work() {
    let c = cluster(3, &[]).await;
    let eps = c.endpoints().join(",");
    // `lock NAME CMD` runs CMD while holding the lock, with the key in the environment.
    let l = etcdctl(
        &eps,
        &["lock", "job", "--", "sh", "-c", "echo held $ETCD_LOCK_KEY"],
        None,
    );
    assert_eq!(l.code, 0, "{}", l.stderr);
    assert!(l.stdout.starts_with("held job/"), "{}", l.stdout);
    // A campaign prints the leader key and value; `elect -l` observes it.
    let mut campaign = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={eps}"))
        .args(["elect", "chief", "p1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl elect");
    let mut out = campaign.stdout.take().expect("stdout");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.lines().count() < 2 && Instant::now() < deadline {
        let mut buf = [0u8; 256];
        use std::io::Read;
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() >= 2 && lines[0].starts_with("chief/") && lines[1] == "p1",
        "{text}"
    );
    let observe = Command::new("timeout")
        .args([
            "2",
            "etcdctl",
            &format!("--endpoints={eps}"),
            "elect",
            "-l",
            "chief",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl elect -l");
    let seen = String::from_utf8_lossy(&observe.stdout);
    assert!(seen.starts_with(&format!("{}\np1", lines[0])), "{seen}");
    let _ = campaign.kill();
    let _ = campaign.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_alarm_defrag_and_hashkv_work() {
    let c = cluster(3, &[]).await;
    let eps = c.endpoints().join(",");
    for i in 0..10 {
        etcdctl(&eps, &["put", &format!("h{i}"), "v"], None);
    }
    let alarms = etcdctl(&eps, &["alarm", "list"], None);
    assert_eq!(
        (alarms.code, alarms.stdout.as_str()),
        (0, ""),
        "{}",
        alarms.stderr
    );
    let defrag = etcdctl(&eps, &["defrag"], None);
    assert_eq!(defrag.code, 0, "{}", defrag.stderr);
    assert_eq!(
        defrag
            .stdout
            .matches("Finished defragmenting etcd member")
            .count(),
        3,
        "{}",
        defrag.stdout
    );
    // Every member holds the same history, so every member reports one hash.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = etcdctl(&eps, &["endpoint", "hashkv", "-w", "json"], None);
        assert_eq!(h.code, 0, "{}", h.stderr);
        let v: serde_json::Value = serde_json::from_str(&h.stdout).expect("json");
        let hashes: std::collections::BTreeSet<u64> = v
            .as_array()
            .expect("array")
            .iter()
            .map(|r| r["HashKV"]["hash"].as_u64().unwrap_or(0))
            .collect();
        if hashes.len() == 1 && !hashes.contains(&0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members disagree on HashKV: {}",
            h.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The leader and member ids of a cluster, from `endpoint status`.
fn leader_and_members(eps: &str) -> (u64, Vec<u64>) {
    let status = etcdctl(eps, &["endpoint", "status", "-w", "json"], None);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("json status");
    let rows = v.as_array().expect("array");
    let leader = rows[0]["Status"]["leader"].as_u64().expect("leader");
    let members = rows
        .iter()
        .map(|r| r["Status"]["header"]["member_id"].as_u64().expect("id"))
        .collect();
    (leader, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_move_leader_works_and_refuses_a_bad_transferee() {
    let c = cluster(3, &[]).await;
    let eps = c.endpoints().join(",");
    etcdctl(&eps, &["put", "before", "1"], None);
    let (leader, members) = leader_and_members(&eps);
    let target = *members.iter().find(|&&m| m != leader).expect("a follower");
    let moved = etcdctl(&eps, &["move-leader", &format!("{target:x}")], None);
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    assert_eq!(
        moved.stdout.trim(),
        format!("Leadership transferred from {leader:x} to {target:x}")
    );
    // Every member names the new leader, and it serves writes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = etcdctl(&eps, &["endpoint", "status", "-w", "json"], None);
        let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
        let leaders: std::collections::BTreeSet<u64> = v
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["Status"]["leader"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        if leaders.len() == 1 && leaders.contains(&target) {
            break;
        }
        assert!(Instant::now() < deadline, "members name {leaders:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let put = etcdctl(&eps, &["put", "after", "2"], None);
    assert_eq!((put.code, put.stdout.trim()), (0, "OK"), "{}", put.stderr);
    let get = etcdctl(&eps, &["get", "before", "--print-value-only"], None);
    assert_eq!(get.stdout.trim(), "1");

    // An unknown transferee: the same error as etcd's, nothing moves.
    let bogus = "abcdef12345";
    let refused = etcdctl(&eps, &["move-leader", bogus], None);
    let etcd = Etcd::start("e1").expect("etcd");
    let reference = etcdctl(&etcd.endpoint, &["move-leader", bogus], None);
    assert_eq!(refused.code, reference.code, "{}", refused.stderr);
    assert_eq!(error_lines(&refused.stderr), error_lines(&reference.stderr));
    assert_eq!(leader_and_members(&eps).0, target);
}

/// What one side printed in the NOSPACE sequence, masked for comparison.
#[derive(Debug, PartialEq)]
struct NoSpaceRun {
    /// The error of the first refused put.
    refused: Vec<String>,
    /// `alarm list` while raised.
    listed: String,
    /// A small put while raised: exit code and error.
    small_put: (i32, Vec<String>),
    /// A read while raised: exit code.
    read_code: i32,
    /// A prefix delete while raised: exit code.
    delete_code: i32,
    /// `alarm disarm` after freeing space.
    disarmed: String,
    /// A put after disarming.
    put_after: (i32, String),
    /// `alarm list` at the end.
    listed_after: String,
}

fn mask_member(s: &str) -> String {
    s.lines()
        .map(|l| match l.strip_prefix("memberID:") {
            Some(rest) => format!(
                "memberID:X{}",
                &rest[rest.find(' ').unwrap_or(rest.len())..]
            ),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fills the store past its quota, then frees space and disarms.
fn nospace_sequence(eps: &str) -> NoSpaceRun {
    let value = "v".repeat(8 * 1024);
    let mut refused = None;
    for i in 0..200 {
        let out = etcdctl(eps, &["put", &format!("big/{i:03}"), &value], None);
        if out.code != 0 {
            refused = Some(
                error_lines(&out.stderr)
                    .iter()
                    .map(|l| l.to_string())
                    .collect(),
            );
            break;
        }
    }
    let refused = refused.expect("the quota is reached within 200 puts");
    let listed = mask_member(&etcdctl(eps, &["alarm", "list"], None).stdout);
    let small = etcdctl(eps, &["put", "small", "v"], None);
    let small_put = (
        small.code,
        error_lines(&small.stderr)
            .iter()
            .map(|l| l.to_string())
            .collect(),
    );
    let read_code = etcdctl(eps, &["get", "big/000"], None).code;
    let delete_code = etcdctl(eps, &["del", "big/", "--prefix"], None).code;
    let status = etcdctl(eps, &["endpoint", "status", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    let rev = v[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision");
    assert_eq!(etcdctl(eps, &["compact", &rev.to_string()], None).code, 0);
    assert_eq!(etcdctl(eps, &["defrag"], None).code, 0);
    let disarmed = mask_member(&etcdctl(eps, &["alarm", "disarm"], None).stdout);
    let after = etcdctl(eps, &["put", "small", "v"], None);
    let listed_after = etcdctl(eps, &["alarm", "list"], None).stdout;
    NoSpaceRun {
        refused,
        listed,
        small_put,
        read_code,
        delete_code,
        disarmed,
        put_after: (after.code, after.stdout.trim().to_string()),
        listed_after,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_matches_real_etcd() {
    let quota = (256 * 1024).to_string();
    let c = cluster(3, &["--quota-backend-bytes", &quota]).await;
    let nines = nospace_sequence(&c.endpoints().join(","));
    let etcd = Etcd::start_with("e1", &["--quota-backend-bytes", &quota]).expect("etcd");
    let reference = nospace_sequence(&etcd.endpoint);
    assert_eq!(
        reference.refused,
        vec!["Error: etcdserver: mvcc: database space exceeded".to_string()],
        "the reference behaves as expected"
    );
    assert_eq!(nines, reference);
}
