//! `nines backup` against real member processes: full, incremental and
//! differential sets restore into new clusters with the source's keys at the
//! set's revision (compared with the real `etcdctl`, byte for byte); an
//! incremental after 1% of changes is small; damage to any file is found,
//! named and refused; a crashed `create` leaves the repository as it was; a
//! backup under write load is consistent at one revision; bad input gets a
//! clear error and changes nothing. Every member lists, under
//! `GET /v1/backups`, the chain and the last run (a failed one with its
//! error) that `nines backup create` published into the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, PutOptions, Txn, TxnOp};
use nines_testkit::Cluster;

mod cli_support;

use cli_support::{exe, nines, text};

/// `nines backup create`; returns the id printed on the last stdout line.
fn create(endpoints: &str, kind: &str, repo: &Path) -> String {
    let repo = repo.to_str().expect("utf-8 path");
    let out = nines(&[
        "--endpoints",
        endpoints,
        "backup",
        "create",
        "--kind",
        kind,
        "--repo",
        repo,
    ]);
    assert!(out.status.success(), "create {kind}: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let id = stdout
        .lines()
        .last()
        .expect("an id line")
        .trim()
        .to_string();
    assert!(
        !id.is_empty() && !id.contains(' '),
        "last line is the id: {stdout:?}"
    );
    id
}

/// `nines backup list -w json`, by id.
fn list(repo: &Path) -> BTreeMap<String, serde_json::Value> {
    let out = nines(&[
        "backup",
        "list",
        "--repo",
        repo.to_str().expect("path"),
        "-w",
        "json",
    ]);
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    rows.into_iter()
        .map(|r| (r["id"].as_str().expect("id").to_string(), r))
        .collect()
}

fn set_bytes(m: &serde_json::Value) -> u64 {
    m["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["bytes"].as_u64().expect("bytes"))
        .sum()
}

fn verify(repo: &Path) -> Output {
    nines(&["backup", "verify", "--repo", repo.to_str().expect("path")])
}

/// Runs the real etcdctl; returns (exit code, stdout, stderr).
fn etcdctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=20s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("etcdctl runs (install it with scripts/install-test-deps.sh)");
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Every key and value at `rev` (0: now), as etcdctl prints them.
fn dump(endpoints: &str, rev: i64) -> String {
    let rev_arg = format!("--rev={rev}");
    let mut args = vec!["get", "", "--from-key"];
    if rev > 0 {
        args.push(&rev_arg);
    }
    let (code, out, err) = etcdctl(endpoints, &args);
    assert_eq!(code, 0, "etcdctl get: {err}");
    out
}

async fn client(endpoints: &[String]) -> Client {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    Client::connect(eps, Some(opts))
        .await
        .expect("client connects")
}

async fn source(n: usize) -> Cluster {
    let c = Cluster::start(exe(), n, &[]).expect("cluster starts");
    c.wait_agreed_leader(Duration::from_secs(30))
        .await
        .expect("a leader");
    c.wait_ready(Duration::from_secs(30)).await.expect("ready");
    c
}

/// A value that does not compress to nothing: a key-dependent pseudo-random
/// tail (xorshift) after a readable head.
fn value(key: usize, round: usize, len: usize) -> Vec<u8> {
    let mut x = (key as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (round as u64 + 7);
    let mut v = format!("v{round}-{key}-").into_bytes();
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

fn key(i: usize) -> String {
    format!("k/{i:06}")
}

/// Writes `keys` (key index, round) in transactions of 100 puts.
async fn put_many(c: &mut Client, keys: &[usize], round: usize, lease: Option<i64>) {
    for chunk in keys.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|&i| {
                let opts = lease.map(|l| PutOptions::new().with_lease(l));
                TxnOp::put(key(i), value(i, round, 100), opts)
            })
            .collect();
        c.txn(Txn::new().and_then(ops)).await.expect("txn");
    }
}

async fn delete_many(c: &mut Client, keys: &[usize]) {
    for chunk in keys.chunks(100) {
        let ops: Vec<TxnOp> = chunk.iter().map(|&i| TxnOp::delete(key(i), None)).collect();
        c.txn(Txn::new().and_then(ops)).await.expect("txn");
    }
}

/// A cluster started from restored data dirs; members killed on drop.
struct Restored {
    _dir: tempfile::TempDir,
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl Drop for Restored {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Restores set `id` (at `to_revision` if given) into `n` new data dirs,
/// starts a member on each and waits until the cluster serves reads.
async fn restore_cluster(repo: &Path, id: &str, n: usize, to_revision: Option<i64>) -> Restored {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = nines_testkit::free_ports(3 * n).expect("ports");
    let names: Vec<String> = (0..n).map(|i| format!("r{}", i + 1)).collect();
    let peer = |i: usize| format!("http://127.0.0.1:{}", ports[3 * i + 1]);
    let initial = (0..n)
        .map(|i| format!("{}={}", names[i], peer(i)))
        .collect::<Vec<_>>()
        .join(",");
    let to_rev = to_revision.map(|r| r.to_string());
    let mut children = Vec::new();
    let mut endpoints = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let data = dir.path().join(name);
        let mut args = vec![
            "backup",
            "restore",
            "--repo",
            repo.to_str().expect("path"),
            "--backup",
            id,
            "--data-dir",
            data.to_str().expect("path"),
            "--name",
            name,
            "--initial-cluster",
            &initial,
        ];
        let own_peer = peer(i);
        args.extend(["--initial-advertise-peer-urls", &own_peer]);
        if let Some(r) = &to_rev {
            args.extend(["--to-revision", r]);
        }
        let out = nines(&args);
        assert!(out.status.success(), "restore {id}: {}", text(&out.stderr));
    }
    for i in 0..n {
        let client_addr = format!("127.0.0.1:{}", ports[3 * i]);
        let log = std::fs::File::create(dir.path().join(format!("{}.log", names[i]))).expect("log");
        let child = Command::new(exe())
            .args(["server", "--name", &names[i], "--data-dir"])
            .arg(dir.path().join(&names[i]))
            .args(["--listen-client-urls", &format!("http://{client_addr}")])
            .args(["--advertise-client-urls", &format!("http://{client_addr}")])
            .args(["--listen-peer-urls", &peer(i)])
            .args(["--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--http-addr", &format!("127.0.0.1:{}", ports[3 * i + 2])])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restored member starts");
        children.push(child);
        endpoints.push(client_addr);
    }
    let restored = Restored {
        _dir: dir,
        children,
        endpoints,
    };
    let mut c = client(&restored.endpoints).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.get("any", None).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "restored cluster never served: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    restored
}

fn end_revision(sets: &BTreeMap<String, serde_json::Value>, id: &str) -> i64 {
    sets[id]["end_revision"].as_i64().expect("end_revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_incr_diff_incr_each_restore_byte_for_byte_into_a_new_cluster() {
    let src = source(3).await;
    let eps = src.endpoints().join(",");
    let mut c = client(&src.endpoints()).await;
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().join("repo");
    const KEYS: usize = 20_000;

    let lease = c.lease_grant(600, None).await.expect("lease").id();
    let all: Vec<usize> = (0..KEYS).collect();
    put_many(&mut c, &all[..KEYS - 100], 0, None).await;
    put_many(&mut c, &all[KEYS - 100..], 0, Some(lease)).await;
    let full = create(&eps, "full", &repo);

    // 1% changed, some deleted.
    let changed: Vec<usize> = (0..KEYS).step_by(100).collect();
    put_many(&mut c, &changed, 1, None).await;
    delete_many(&mut c, &(1..KEYS).step_by(997).collect::<Vec<_>>()).await;
    let incr1 = create(&eps, "incr", &repo);

    // A create killed mid-run leaves nothing listed and the repository verifying.
    let before = list(&repo);
    let mut doomed = Command::new(exe())
        .args([
            "--endpoints",
            &eps,
            "backup",
            "create",
            "--kind",
            "full",
            "--repo",
        ])
        .arg(&repo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("create starts");
    // kill -9 once its set is being written (its staging dir exists).
    let staging = repo.join("staging");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut killed_mid_run = false;
    loop {
        if doomed.try_wait().expect("try_wait").is_some() {
            break;
        }
        let writing = std::fs::read_dir(&staging).is_ok_and(|mut d| d.next().is_some());
        if writing {
            let _ = doomed.kill();
            killed_mid_run = true;
            break;
        }
        assert!(Instant::now() < deadline, "create never started writing");
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = doomed.wait();
    let after = list(&repo);
    let new_ids: Vec<String> = after
        .keys()
        .filter(|id| !before.contains_key(*id))
        .cloned()
        .collect();
    if killed_mid_run && new_ids.is_empty() {
        // The partial set is still in staging/, and nobody lists it.
        assert!(std::fs::read_dir(&staging)
            .expect("staging")
            .next()
            .is_some());
    }
    assert!(
        new_ids.is_empty() || (new_ids.len() == 1 && after[&new_ids[0]]["kind"] == "full"),
        "a killed create leaves the old sets, or the old sets and its whole set: {new_ids:?}"
    );
    let v = verify(&repo);
    assert!(
        v.status.success(),
        "verify after a killed create: {}",
        text(&v.stderr)
    );
    eprintln!(
        "killed mid-run: {}, published: {new_ids:?}",
        killed_mid_run && new_ids.is_empty()
    );
    // Keep the chain as the test expects it: drop a set the killed create
    // published before the kill landed.
    for id in &new_ids {
        std::fs::remove_dir_all(repo.join("backups").join(id)).expect("remove");
    }

    put_many(&mut c, &(5..KEYS).step_by(50).collect::<Vec<_>>(), 2, None).await;
    delete_many(&mut c, &(7..KEYS).step_by(501).collect::<Vec<_>>()).await;
    put_many(&mut c, &(KEYS..KEYS + 300).collect::<Vec<_>>(), 2, None).await;
    // The differential is read from a follower alone.
    let leader = src
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("a leader");
    let follower = &src.members[(leader + 1) % 3].client;
    let diff = create(follower, "diff", &repo);
    assert_eq!(
        std::fs::read_dir(&staging).expect("staging").count(),
        0,
        "the next create removed what the killed one left"
    );

    put_many(&mut c, &(9..KEYS).step_by(70).collect::<Vec<_>>(), 3, None).await;
    delete_many(&mut c, &(KEYS..KEYS + 50).collect::<Vec<_>>()).await;
    let incr2 = create(&eps, "incr", &repo);

    let sets = list(&repo);
    assert_eq!(sets.len(), 4, "{sets:?}");
    assert_eq!(sets[&incr1]["parent"], full.as_str());
    assert_eq!(sets[&diff]["parent"], full.as_str());
    assert_eq!(sets[&incr2]["parent"], diff.as_str());
    assert_eq!(sets[&full]["key_count"], KEYS as u64);

    // Acceptance 2: the incremental after 1% of changes is at most 5% of the full.
    let (full_bytes, incr_bytes) = (set_bytes(&sets[&full]), set_bytes(&sets[&incr1]));
    eprintln!("full {full_bytes} bytes, incr after 1% {incr_bytes} bytes");
    assert!(
        incr_bytes * 20 <= full_bytes,
        "incr {incr_bytes} bytes > 5% of full {full_bytes} bytes"
    );
    let v = verify(&repo);
    assert!(v.status.success(), "verify: {}", text(&v.stderr));

    // Acceptance 1: each point restores into a new 3-member cluster with the
    // source's keys and values at that point, byte for byte.
    for id in [&full, &incr1, &diff, &incr2] {
        let rev = end_revision(&sets, id);
        let expected = dump(&eps, rev);
        let restored = restore_cluster(&repo, id, 3, None).await;
        let got = dump(&restored.endpoints.join(","), 0);
        assert!(
            got == expected,
            "backup {id} at revision {rev}: restored keys differ ({} vs {} bytes)",
            got.len(),
            expected.len()
        );
        // Every key keeps its mod_revision, and the new cluster goes on from
        // the source's revision.
        let json = |eps: &str, rev: i64| -> serde_json::Value {
            let rev_arg = format!("--rev={rev}");
            let mut args = vec!["get", "", "--from-key", "-w", "json"];
            if rev > 0 {
                args.push(&rev_arg);
            }
            let (code, out, err) = etcdctl(eps, &args);
            assert_eq!(code, 0, "{err}");
            serde_json::from_str(&out).expect("json")
        };
        let mods = |v: &serde_json::Value| -> Vec<(String, i64)> {
            v["kvs"]
                .as_array()
                .map(|kvs| {
                    kvs.iter()
                        .map(|kv| {
                            (
                                kv["key"].as_str().expect("key").to_string(),
                                kv["mod_revision"].as_i64().expect("mod_revision"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let restored_json = json(&restored.endpoints.join(","), 0);
        assert!(
            mods(&restored_json) == mods(&json(&eps, rev)),
            "backup {id}: mod_revisions differ"
        );
        assert!(
            restored_json["header"]["revision"]
                .as_i64()
                .expect("revision")
                >= rev
        );
        // Leased keys keep their lease, which is alive with its TTL refreshed.
        let (_, out, _) = etcdctl(
            &restored.endpoints.join(","),
            &["get", &key(KEYS - 1), "-w", "json"],
        );
        let json: serde_json::Value = serde_json::from_str(&out).expect("json");
        let lease_id = json["kvs"][0]["lease"].as_i64().expect("a lease");
        assert_eq!(lease_id, lease);
        let (code, ttl, err) = etcdctl(
            &restored.endpoints.join(","),
            &["lease", "timetolive", &format!("{lease_id:x}")],
        );
        assert_eq!(code, 0, "{err}");
        assert!(ttl.contains("granted with TTL(600s)"), "{ttl}");
    }

    // --to-revision: the diff's chain restored at the first incremental's revision.
    let rev = end_revision(&sets, &incr1);
    let restored = restore_cluster(&repo, &diff, 1, Some(rev)).await;
    assert!(dump(&restored.endpoints.join(","), 0) == dump(&eps, rev));
    drop(restored);
    let out = nines(&[
        "backup",
        "restore",
        "--repo",
        repo.to_str().expect("path"),
        "--backup",
        &diff,
        "--data-dir",
        repo_dir.path().join("early").to_str().expect("path"),
        "--name",
        "r1",
        "--initial-cluster",
        "r1=http://127.0.0.1:1",
        "--to-revision",
        &(end_revision(&sets, &full) - 1).to_string(),
    ]);
    assert!(
        !out.status.success(),
        "a revision before the full is refused"
    );
    assert!(
        text(&out.stderr).contains("outside the chain"),
        "{}",
        text(&out.stderr)
    );
    assert!(!repo_dir.path().join("early").exists());

    // Prune keeps the newest full chain: a second full, then keep 1.
    let full2 = create(&eps, "full", &repo);
    let out = nines(&[
        "backup",
        "prune",
        "--repo",
        repo.to_str().expect("path"),
        "--keep-full",
        "1",
    ]);
    assert!(out.status.success(), "prune: {}", text(&out.stderr));
    let left: Vec<String> = list(&repo).into_keys().collect();
    assert_eq!(left, vec![full2]);
    assert!(verify(&repo).status.success());
}

/// Copies directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(files_of(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_named_and_refused_and_bad_input_changes_nothing() {
    let src = source(1).await;
    let eps = src.endpoints().join(",");
    let mut c = client(&src.endpoints()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    put_many(&mut c, &(0..2000).collect::<Vec<_>>(), 0, None).await;
    let full = create(&eps, "full", &repo);
    put_many(&mut c, &(0..2000).step_by(10).collect::<Vec<_>>(), 1, None).await;
    let incr = create(&eps, "incr", &repo);
    assert!(verify(&repo).status.success());

    // A partial set left by a crash (a staging dir with some files) is not
    // listed and the repository still verifies.
    let partial = repo.join("staging").join("20990101-000000F.12345");
    std::fs::create_dir_all(&partial).expect("mkdir");
    std::fs::write(partial.join("data.zst"), b"half a set").expect("write");
    assert_eq!(list(&repo).len(), 2);
    assert!(verify(&repo).status.success());

    // Acceptance 3: one flipped byte in any data file or manifest.
    let set_files: Vec<PathBuf> = files_of(&repo.join("backups"));
    assert_eq!(set_files.len(), 6, "{set_files:?}");
    for file in &set_files {
        let damaged = tmp.path().join("damaged");
        let _ = std::fs::remove_dir_all(&damaged);
        copy_dir(&repo, &damaged);
        let rel = file.strip_prefix(&repo).expect("inside");
        let target = damaged.join(rel);
        let mut bytes = std::fs::read(&target).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        std::fs::write(&target, &bytes).expect("write");

        let v = verify(&damaged);
        assert!(
            !v.status.success(),
            "verify missed a flip in {}",
            rel.display()
        );
        let err = text(&v.stderr);
        assert!(
            err.contains(&target.display().to_string()),
            "verify does not name {}: {err}",
            target.display()
        );
        // The incremental's chain holds both sets, so every damaged file is on its path.
        let restore_id = &incr;
        let data = tmp.path().join("restored");
        let out = nines(&[
            "backup",
            "restore",
            "--repo",
            damaged.to_str().expect("path"),
            "--backup",
            restore_id,
            "--data-dir",
            data.to_str().expect("path"),
            "--name",
            "r1",
            "--initial-cluster",
            "r1=http://127.0.0.1:1",
        ]);
        assert!(
            !out.status.success(),
            "restore used a damaged {}",
            rel.display()
        );
        assert!(!data.exists(), "nothing is half restored");
    }

    // Acceptance 6: a repository path that is a file.
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"keep me").expect("write");
    let out = nines(&[
        "--endpoints",
        &eps,
        "backup",
        "create",
        "--kind",
        "full",
        "--repo",
        file.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).expect("read"), b"keep me");

    // A chain with a missing parent.
    let orphaned = tmp.path().join("orphaned");
    copy_dir(&repo, &orphaned);
    std::fs::remove_dir_all(orphaned.join("backups").join(&full)).expect("rm");
    let v = verify(&orphaned);
    assert!(!v.status.success());
    assert!(
        text(&v.stderr).contains("missing from the repository"),
        "{}",
        text(&v.stderr)
    );
    let data = tmp.path().join("orphan-restore");
    let out = nines(&[
        "backup",
        "restore",
        "--repo",
        orphaned.to_str().expect("path"),
        "--backup",
        &incr,
        "--data-dir",
        data.to_str().expect("path"),
        "--name",
        "r1",
        "--initial-cluster",
        "r1=http://127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&full), "{}", text(&out.stderr));
    assert!(!data.exists());

    // A backup of another cluster into this repository.
    let other = source(1).await;
    let before = files_of(&repo.join("backups"));
    let out = nines(&[
        "--endpoints",
        &other.endpoints().join(","),
        "backup",
        "create",
        "--kind",
        "incr",
        "--repo",
        repo.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cluster"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(files_of(&repo.join("backups")), before, "nothing changed");
    drop(other);

    // A restore into a non-empty data dir.
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).expect("mkdir");
    std::fs::write(busy.join("precious"), b"data").expect("write");
    let out = nines(&[
        "backup",
        "restore",
        "--repo",
        repo.to_str().expect("path"),
        "--backup",
        &incr,
        "--data-dir",
        busy.to_str().expect("path"),
        "--name",
        "r1",
        "--initial-cluster",
        "r1=http://127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not empty"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(files_of(&busy), vec![busy.join("precious")]);

    // Compacted history: the next incremental must be a full, and says why.
    c.put("one/more", "x", None).await.expect("put");
    let rev = c
        .put("and/another", "y", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    c.compact(rev, None).await.expect("compact");
    let out = nines(&[
        "--endpoints",
        &eps,
        "backup",
        "create",
        "--kind",
        "incr",
        "--repo",
        repo.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("must be a full"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(list(&repo).len(), 2);
    assert!(verify(&repo).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_is_consistent_at_one_revision() {
    let src = source(1).await;
    let eps = src.endpoints().join(",");
    let mut c = client(&src.endpoints()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    // Enough keys for the full to read many pages while the writers run.
    put_many(&mut c, &(0..20_000).collect::<Vec<_>>(), 0, None).await;
    const WRITERS: usize = 4;
    const GROUP: usize = 10;
    // Each writer sets its GROUP counters to n+1 in one transaction, so at
    // every revision a writer's counters are all equal.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut wc = client(&src.endpoints()).await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 1_000_000 {
                n += 1;
                let ops: Vec<TxnOp> = (0..GROUP)
                    .map(|g| TxnOp::put(format!("c/{w}/{g}"), n.to_string(), None))
                    .collect();
                wc.txn(Txn::new().and_then(ops)).await.expect("txn");
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let repo_s = repo.to_str().expect("path").to_string();
    let eps2 = eps.clone();
    let full = tokio::task::spawn_blocking(move || create(&eps2, "full", Path::new(&repo_s)))
        .await
        .expect("create");
    let repo_s = repo.to_str().expect("path").to_string();
    let eps2 = eps.clone();
    let incr = tokio::task::spawn_blocking(move || create(&eps2, "incr", Path::new(&repo_s)))
        .await
        .expect("create");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let n = t.await.expect("writer");
        assert!(n > 1, "the writers kept writing");
    }
    let sets = list(&repo);
    assert!(
        sets[&incr]["key_count"].as_u64().expect("count") > 0,
        "writes went on between the full and the incremental"
    );
    let lib_repo = nines_backup::LocalRepository::open(&repo, false).expect("repo");
    for id in [&full, &incr] {
        let (store, summary) = nines_backup::restore_store(&lib_repo, id, None).expect("restore");
        let got = store
            .range(&nines_store::RangeRequest {
                key: b"c/".to_vec(),
                range_end: b"c0".to_vec(),
                ..Default::default()
            })
            .expect("range");
        let mut by_writer: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in &got.kvs {
            let k = String::from_utf8_lossy(&kv.key).into_owned();
            let w = k.split('/').nth(1).expect("writer").to_string();
            by_writer
                .entry(w)
                .or_default()
                .push(String::from_utf8_lossy(&kv.value).into_owned());
        }
        for (w, values) in &by_writer {
            assert_eq!(values.len(), GROUP, "writer {w}'s counters in {id}");
            assert!(
                values.iter().all(|v| v == &values[0]),
                "backup {id} is torn: writer {w} has {values:?}"
            );
        }
        // And they are the source's values at the set's revision.
        let (code, out, err) = etcdctl(
            &eps,
            &[
                "get",
                "c/",
                "--prefix",
                &format!("--rev={}", summary.revision),
            ],
        );
        assert_eq!(code, 0, "{err}");
        let expected: Vec<String> = out
            .lines()
            .skip(1)
            .step_by(2)
            .map(|s| s.to_string())
            .collect();
        let restored: Vec<String> = got
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .collect();
        assert_eq!(
            restored, expected,
            "backup {id} equals the source at revision {}",
            summary.revision
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_backup_cleanly_and_changes_nothing() {
    let src = source(1).await;
    let eps = src.endpoints().join(",");
    let mut c = client(&src.endpoints()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    put_many(&mut c, &(0..3000).collect::<Vec<_>>(), 0, None).await;
    let full = create(&eps, "full", &repo);
    put_many(&mut c, &(0..3000).collect::<Vec<_>>(), 1, None).await;
    // No space left, simulated by a file size limit of 16 KiB (with SIGXFSZ
    // ignored, a write past it fails with EFBIG as a full disk fails with ENOSPC).
    let out = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16; exec \"$0\" \"$@\"")
        .arg(exe())
        .args([
            "--endpoints",
            &eps,
            "backup",
            "create",
            "--kind",
            "full",
            "--repo",
        ])
        .arg(&repo)
        .output()
        .expect("bash runs");
    assert!(!out.status.success(), "the backup cannot fit in 16 KiB");
    let err = text(&out.stderr);
    assert!(
        err.contains("data.zst") && err.contains("too large"),
        "{err}"
    );
    assert_eq!(list(&repo).into_keys().collect::<Vec<_>>(), vec![full]);
    assert_eq!(
        std::fs::read_dir(repo.join("staging"))
            .expect("staging")
            .count(),
        0,
        "the partial set was removed"
    );
    assert!(verify(&repo).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_taken_from_real_etcd_restores_into_nines() {
    let etcd = nines_testkit::Etcd::start("e1").expect("etcd starts");
    let mut c = client(std::slice::from_ref(&etcd.endpoint)).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let lease = c.lease_grant(300, None).await.expect("lease").id();
    put_many(&mut c, &(0..1000).collect::<Vec<_>>(), 0, None).await;
    put_many(&mut c, &(1000..1010).collect::<Vec<_>>(), 0, Some(lease)).await;
    let full = create(&etcd.endpoint, "full", &repo);
    put_many(&mut c, &(0..1000).step_by(30).collect::<Vec<_>>(), 1, None).await;
    delete_many(&mut c, &(3..1000).step_by(101).collect::<Vec<_>>()).await;
    let incr = create(&etcd.endpoint, "incr", &repo);
    let sets = list(&repo);
    assert_eq!(sets[&incr]["parent"], full.as_str());
    let restored = restore_cluster(&repo, &incr, 1, None).await;
    let rev = end_revision(&sets, &incr);
    assert!(
        dump(&restored.endpoints.join(","), 0) == dump(&etcd.endpoint, rev),
        "the restored keys are etcd's at revision {rev}"
    );
    let (_, out, _) = etcdctl(
        &restored.endpoints.join(","),
        &["get", &key(1005), "-w", "json"],
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["kvs"][0]["lease"].as_i64(), Some(lease));

    // The new cluster goes on from the source's revision, and history
    // before the restore point reads as compacted.
    let mut rc = client(&restored.endpoints).await;
    let put = rc.put("after/restore", "x", None).await.expect("put");
    assert!(put.header().expect("header").revision() > rev);
    let (code, _, err) = etcdctl(
        &restored.endpoints.join(","),
        &["get", &key(0), &format!("--rev={}", rev - 1)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("compacted"), "{err}");

    // The simple listing shows the chain; a peer URL that is not the
    // member's own is refused before anything is written.
    let out = nines(&["backup", "list", "--repo", repo.to_str().expect("path")]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains(&full) && listing.contains(" incr "),
        "{listing}"
    );
    let data = tmp.path().join("mismatch");
    let out = nines(&[
        "backup",
        "restore",
        "--repo",
        repo.to_str().expect("path"),
        "--backup",
        &incr,
        "--data-dir",
        data.to_str().expect("path"),
        "--name",
        "r1",
        "--initial-cluster",
        "r1=http://127.0.0.1:1",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("differs"),
        "{}",
        text(&out.stderr)
    );
    assert!(!data.exists());
}

/// `GET /v1/backups` on `http`, parsed.
async fn backups_view(http: &str) -> serde_json::Value {
    let (status, body) = nines_testkit::http_get(http, "/v1/backups")
        .await
        .expect("the member answers HTTP");
    assert_eq!(status, 200, "GET /v1/backups: {body}");
    serde_json::from_str(&body).expect("GET /v1/backups is JSON")
}

/// The record of repository `repo` in a `GET /v1/backups` answer.
fn repository<'a>(view: &'a serde_json::Value, repo: &Path) -> Option<&'a serde_json::Value> {
    let path = std::fs::canonicalize(repo).expect("repo exists");
    view["repositories"]
        .as_array()?
        .iter()
        .find(|r| r["repository"].as_str() == path.to_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_shows_the_chain_and_the_last_run_of_a_repository() {
    let src = source(3).await;
    let eps = src.endpoints().join(",");
    let mut c = client(&src.endpoints()).await;
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().join("repo");
    let keys: Vec<usize> = (0..200).collect();
    put_many(&mut c, &keys, 0, None).await;
    let full = create(&eps, "full", &repo);
    put_many(&mut c, &keys[..20], 1, None).await;
    let incr = create(&eps, "incr", &repo);
    let sets = list(&repo);

    // Every member lists the record the command wrote through the cluster.
    for member in &src.members {
        let view = backups_view(&member.http).await;
        let r = repository(&view, &repo).unwrap_or_else(|| panic!("repo listed: {view:#}"));
        let chain = r["chain"].as_array().expect("chain");
        assert_eq!(chain.len(), 2, "{r:#}");
        assert_eq!(chain[0]["id"], full.as_str());
        assert_eq!(chain[0]["kind"], "full");
        assert!(chain[0]["parent"].is_null(), "{r:#}");
        assert_eq!(chain[1]["id"], incr.as_str());
        assert_eq!(chain[1]["kind"], "incremental");
        assert_eq!(chain[1]["parent"], full.as_str());
        for link in chain {
            let id = link["id"].as_str().expect("id");
            assert_eq!(link["revision"].as_i64(), Some(end_revision(&sets, id)));
            assert_eq!(link["bytes"].as_u64(), Some(set_bytes(&sets[id])));
            assert!(link["finished_ms"].as_u64().expect("finished") > 0);
        }
        let last = &r["last_run"];
        assert_eq!(last["ok"], true, "{r:#}");
        assert!(last["error"].is_null(), "{r:#}");
        assert_eq!(last["kind"], "incremental");
        assert!(last["at_ms"].as_u64().expect("at") > 0);
        assert!(last["duration_ms"].is_u64(), "{r:#}");
    }

    // Compaction removes the history the next incremental needs: the run
    // fails, and the record says so with the error, keeping the chain.
    put_many(&mut c, &keys[..20], 2, None).await;
    let now = c
        .get("k", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    c.compact(now, None).await.expect("compact");
    let out = nines(&[
        "--endpoints",
        &eps,
        "backup",
        "create",
        "--kind",
        "incr",
        "--repo",
        repo.to_str().expect("path"),
    ]);
    assert!(
        !out.status.success(),
        "an incr over compacted history fails"
    );
    let view = backups_view(&src.members[1].http).await;
    let r = repository(&view, &repo).unwrap_or_else(|| panic!("repo listed: {view:#}"));
    let last = &r["last_run"];
    assert_eq!(last["ok"], false, "{r:#}");
    assert_eq!(last["kind"], "incremental");
    let error = last["error"].as_str().expect("an error message");
    assert!(
        error.contains("full"),
        "the error says a full is needed: {error}"
    );
    assert_eq!(r["chain"].as_array().map(Vec::len), Some(2), "{r:#}");
}
