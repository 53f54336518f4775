//! Scheduled backups in `nines server`, against real member processes: with
//! the same `--backup-*` flags on every member, only the leader takes
//! backups (a full, then incrementals on its chain); `GET /v1/backups` and
//! `/metrics` report the runs on the leader, and a follower says it does not
//! run them but lists the chain and last run the leader published; after
//! `kill -9` of the leader the new leader goes on with incrementals on the
//! same chain, without a second full, and the repository
//! verifies. When compaction removed the history the next incremental
//! needs, the failure is reported and a full starts a new chain. Retention
//! from the config file keeps the newest full chain. Bad schedule flags stop
//! the server at startup with a clear message.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nines_testkit::{http_get, Cluster};

mod cli_support;

use cli_support::{exe, nines, text};

/// The sets of the repository in chain order, from `nines backup list -w json`.
fn list(repo: &Path) -> Vec<serde_json::Value> {
    let out = nines(&[
        "backup",
        "list",
        "--repo",
        repo.to_str().expect("utf-8 path"),
        "-w",
        "json",
    ]);
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("list prints JSON")
}

fn count(sets: &[serde_json::Value], kind: &str) -> usize {
    sets.iter().filter(|s| s["kind"] == kind).count()
}

/// Polls the repository until `done` holds, within `timeout`.
async fn wait_sets(
    repo: &Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let sets = list(repo);
        if done(&sets) {
            return sets;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {timeout:?}: {sets:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn backups_view(http: &str) -> serde_json::Value {
    let (status, body) = http_get(http, "/v1/backups")
        .await
        .expect("the member answers HTTP");
    assert_eq!(status, 200, "GET /v1/backups: {body}");
    serde_json::from_str(&body).expect("GET /v1/backups is JSON")
}

/// Waits until `GET /v1/backups` on `http` reports a successful last run
/// by this member.
async fn wait_leader_run(http: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = backups_view(http).await;
        if v["leader_runs"] == true && v["last"]["ok"] == true {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no successful run reported within {timeout:?}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `GET /v1/backups` on `http` until `done` holds, within `timeout`.
async fn wait_view(
    http: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = backups_view(http).await;
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {timeout:?}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum over the running members of every sample of `name` with `labels`.
async fn sum_samples(cluster: &Cluster, name: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    for (i, m) in cluster.members.iter().enumerate() {
        if !cluster.is_running(i) {
            continue;
        }
        let (status, metrics) = http_get(&m.http, "/metrics").await.expect("metrics answer");
        assert_eq!(status, 200, "{metrics}");
        sum += metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// The value of the sample `name{labels}` in the text exposition, if any.
fn sample(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Writes keys until `stop` is set, ignoring failures while the leader
/// changes.
fn start_writer(endpoints: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let eps: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        let mut client = etcd_client::Client::connect(eps, Some(opts))
            .await
            .expect("client connects");
        let mut written = 0u64;
        // Bounded: the test stops it within a minute at most.
        for i in 0..1_000_000u64 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if client
                .put(format!("k{:04}", i % 500), format!("v{i}"), None)
                .await
                .is_ok()
            {
                written += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        written
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_takes_scheduled_backups_and_a_new_leader_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let repo_arg = repo.to_str().expect("utf-8 path");
    let mut cluster = Cluster::start(
        exe(),
        3,
        &[
            "--backup-repo",
            repo_arg,
            "--backup-schedule",
            "full=1h,incr=2s",
            "--backup-keep-full",
            "1",
        ],
    )
    .expect("cluster starts");
    cluster
        .wait_agreed_leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(cluster.endpoints(), stop.clone());

    // A full, then incrementals on it.
    let sets = wait_sets(&repo, Duration::from_secs(20), "a full and 2 incrs", |s| {
        count(s, "full") == 1 && count(s, "incr") >= 2
    })
    .await;
    assert_eq!(sets[0]["kind"], "full", "the chain starts with the full");
    for pair in sets.windows(2) {
        assert_eq!(
            pair[1]["parent"], pair[0]["id"],
            "each incr builds on the set before it"
        );
    }

    // Under load the leadership may have moved since the start; ask again,
    // and judge runs over all members.
    let leader = cluster
        .wait_agreed_leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    let view = wait_leader_run(&cluster.members[leader].http, Duration::from_secs(10)).await;
    assert_eq!(view["schedule"]["incr"]["interval_secs"], 2, "{view:#}");
    assert!(view["backups"].as_array().is_some_and(|b| b.len() >= 3));
    let last = &view["last"];
    assert!(last["id"].is_string() && last["end_revision"].as_i64() > Some(0));
    for (i, m) in cluster.members.iter().enumerate() {
        if i != leader {
            wait_view(&m.http, Duration::from_secs(5), "leader_runs: false", |v| {
                v["leader_runs"] == false
            })
            .await;
        }
    }
    let full_runs = sum_samples(
        &cluster,
        "nines_backup_runs_total",
        &["kind=\"full\"", "outcome=\"success\""],
    )
    .await;
    assert_eq!(full_runs, 1.0, "one full in the whole cluster");
    let incr_runs = sum_samples(
        &cluster,
        "nines_backup_runs_total",
        &["kind=\"incr\"", "outcome=\"success\""],
    )
    .await;
    assert!(incr_runs >= 2.0, "{incr_runs} incrs");
    let (status, metrics) = http_get(&cluster.members[leader].http, "/metrics")
        .await
        .expect("metrics answer");
    assert_eq!(status, 200);
    assert!(
        sample(
            &metrics,
            "nines_backup_last_success_timestamp_seconds",
            &["kind=\"incr\""]
        )
        .is_some_and(|t| t > 1.7e9),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "nines_backup_leader_runs", &[]),
        Some(1.0),
        "{metrics}"
    );

    // A `nines backup` command holding the repository lock makes the
    // scheduler skip its rounds, not fail; it goes on once the lock is free.
    let held = nines_backup::LocalRepository::open(&repo, false).expect("repo opens");
    let deadline = Instant::now() + Duration::from_secs(10);
    let lock = loop {
        match held.lock() {
            Ok(lock) => break lock,
            Err(e) => assert!(Instant::now() < deadline, "lock never free: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let locked_sets = list(&repo).len();
    // Longer than the incr interval plus a round: a backup would be due.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(list(&repo).len(), locked_sets, "no set while locked");
    drop(lock);
    wait_sets(
        &repo,
        Duration::from_secs(10),
        "a set after the lock",
        |s| s.len() > locked_sets,
    )
    .await;
    let failures = sum_samples(
        &cluster,
        "nines_backup_runs_total",
        &["outcome=\"failure\""],
    )
    .await;
    assert_eq!(failures, 0.0, "a busy lock is no failure");

    // Failover: the new leader continues the same chain.
    let before = list(&repo).len();
    cluster.kill(leader);
    let new_leader = cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    let sets = wait_sets(
        &repo,
        Duration::from_secs(20),
        "2 more incrs after the failover",
        |s| s.len() >= before + 2,
    )
    .await;
    assert_eq!(count(&sets, "full"), 1, "no second full: {sets:#?}");
    assert_eq!(sets[0]["kind"], "full");
    for pair in sets.windows(2) {
        assert_eq!(pair[1]["parent"], pair[0]["id"], "one chain: {sets:#?}");
    }
    let view = wait_leader_run(&cluster.members[new_leader].http, Duration::from_secs(10)).await;
    assert_eq!(view["last"]["kind"], "incr", "{view:#}");

    // The leader's runs are in the store: a member that takes no backups
    // lists the repository's chain and the last run under `repositories`.
    let follower = (0..3)
        .find(|&i| i != leader && i != new_leader)
        .expect("a third member");
    let canonical = std::fs::canonicalize(&repo).expect("repo exists");
    let view = wait_view(
        &cluster.members[follower].http,
        Duration::from_secs(10),
        "the repository's record",
        |v| {
            v["repositories"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["repository"].as_str() == canonical.to_str()
                        && r["last_run"]["ok"] == true
                        && r["last_run"]["kind"] == "incremental"
                        && r["chain"].as_array().is_some_and(|c| c.len() >= 3)
                })
            })
        },
    )
    .await;
    let record = view["repositories"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["repository"].as_str() == canonical.to_str())
        })
        .expect("the record");
    let chain = record["chain"].as_array().expect("chain");
    assert_eq!(chain[0]["kind"], "full", "{record:#}");
    for pair in chain.windows(2) {
        assert_eq!(pair[1]["parent"], pair[0]["id"], "one chain: {record:#}");
        assert_eq!(pair[1]["kind"], "incremental", "{record:#}");
    }

    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer ends");
    assert!(written > 0, "writes went on");
    let out = nines(&["backup", "verify", "--repo", repo_arg]);
    assert!(
        out.status.success(),
        "verify: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Runs `nines server` with `extra` flags and returns its exit status and
/// stderr; it must exit on its own within a few seconds.
fn server_fails(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let ports = nines_testkit::free_ports(3).expect("ports");
    let log = dir.join("server.log");
    let mut child = Command::new(exe())
        .arg("server")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", ports[0]),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", ports[1]),
        ])
        .args(["--http-addr", &format!("127.0.0.1:{}", ports[2])])
        .args(["--dns-addr", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("server starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nines server {extra:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn bad_backup_flags_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let repo = repo.to_str().expect("utf-8 path");
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--backup-repo", repo, "--backup-schedule", "weekly=1d"],
            &["weekly=1d", "full, diff or incr"],
        ),
        (
            &["--backup-repo", repo, "--backup-schedule", "incr=abc"],
            &["incr=abc", "\"abc\""],
        ),
        (
            &["--backup-repo", repo, "--backup-keep-full", "0"],
            &["--backup-keep-full"],
        ),
        (&["--backup-schedule", "full=1d"], &["need --backup-repo"]),
    ];
    for (flags, words) in cases {
        let (code, stderr) = server_fails(dir.path(), flags);
        assert!(code.is_some_and(|c| c != 0), "{flags:?}: exit {code:?}");
        for w in words {
            assert!(stderr.contains(w), "{flags:?}: {w:?} not in {stderr:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_from_the_config_file_keeps_the_newest_full_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A `_` in a value is kept as written.
    let repo = dir.path().join("nines_repo");
    let config = dir.path().join("server.toml");
    // The config file spells keys with `_` and `-` alike.
    std::fs::write(
        &config,
        format!(
            "backup-repo = {:?}\nbackup_schedule = \"full=3s,incr=1s\"\nbackup-keep-full = 1\n",
            repo.to_str().expect("utf-8 path")
        ),
    )
    .expect("config written");
    let cluster = Cluster::start(
        exe(),
        1,
        &["--config", config.to_str().expect("utf-8 path")],
    )
    .expect("cluster starts");
    cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    let first = wait_sets(&repo, Duration::from_secs(15), "a full", |s| {
        count(s, "full") == 1
    })
    .await[0]["id"]
        .clone();
    let sets = wait_sets(
        &repo,
        Duration::from_secs(20),
        "the next full chain alone",
        |s| count(s, "full") == 1 && s[0]["id"] != first,
    )
    .await;
    assert_eq!(sets[0]["kind"], "full");
    assert!(
        sets.iter().all(|m| m["id"] != first),
        "the first chain is pruned: {sets:#?}"
    );
    for pair in sets.windows(2) {
        assert_eq!(pair[1]["parent"], pair[0]["id"], "one chain: {sets:#?}");
    }
    let view = backups_view(&cluster.members[0].http).await;
    assert_eq!(view["keep_full"], 1, "{view:#}");
    assert_eq!(view["repo"], repo.to_str().expect("utf-8 path"), "{view:#}");
    assert_eq!(view["schedule"]["full"]["interval_secs"], 3, "{view:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_fails_the_incr_and_a_full_starts_a_new_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let cluster = Cluster::start(
        exe(),
        1,
        &[
            "--backup-repo",
            repo.to_str().expect("utf-8 path"),
            "--backup-schedule",
            "full=1h,incr=1s",
        ],
    )
    .expect("cluster starts");
    cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    let http = cluster.members[0].http.clone();
    wait_sets(&repo, Duration::from_secs(15), "a full", |s| {
        count(s, "full") == 1
    })
    .await;
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
    let mut client = etcd_client::Client::connect(
        [format!("http://{}", cluster.members[0].client)],
        Some(opts),
    )
    .await
    .expect("client connects");
    // Write and compact at once, until an incr finds its history gone (an
    // incr may slip in between a put and its compaction; then try again).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let put = client.put("k", "v", None).await.expect("put");
        let revision = put.header().expect("header").revision();
        client.put("k", "w", None).await.expect("put");
        client.compact(revision + 1, None).await.expect("compact");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (_, metrics) = http_get(&http, "/metrics").await.expect("metrics answer");
        let failed = sample(
            &metrics,
            "nines_backup_runs_total",
            &["kind=\"incr\"", "outcome=\"failure\""],
        );
        if failed.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no incr failed: {metrics}");
    }
    let view = backups_view(&http).await;
    // The failure names the cause, or a full already followed it.
    let last = &view["last"];
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("must be a full"))
            || (last["kind"] == "full" && last["ok"] == true),
        "{view:#}"
    );
    let sets = wait_sets(&repo, Duration::from_secs(15), "a second full", |s| {
        count(s, "full") == 2
    })
    .await;
    let out = nines(&[
        "backup",
        "verify",
        "--repo",
        repo.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "verify: {}{}: {sets:#?}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
