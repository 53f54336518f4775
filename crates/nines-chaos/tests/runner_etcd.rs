//! The chaos runner against real etcd members (Debian's etcd 3.4 at
//! /usr/bin/etcd, installed by scripts/install-test-deps.sh): a short run
//! with crash, pause and restart faults must come out linearizable with no
//! lost write, and dropping a run midway must kill every member and remove
//! its directory. These run the same code paths as `nines chaos`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nines_chaos::cluster::{Cluster, ClusterConfig, Target};
use nines_chaos::faults::FaultKind;
use nines_chaos::report::RunVerdict;
use nines_chaos::runner::{self, ChaosConfig, Progress};

/// Process tests share two cores; running them one at a time keeps the
/// availability figures meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

fn etcd_binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcd");
    assert!(
        path.exists(),
        "etcd is not installed: run scripts/install-test-deps.sh"
    );
    path
}

fn process_alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn etcd_under_kills_and_pauses_stays_linearizable() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let work = tempfile::tempdir().expect("work dir");
    let mut config = ChaosConfig::new(Target::Etcd {
        binary: etcd_binary(),
    });
    config.duration = Duration::from_secs(16);
    config.faults = vec![
        FaultKind::Kill,
        FaultKind::LeaderKill,
        FaultKind::Pause,
        FaultKind::Restart,
        FaultKind::KillAll,
    ];
    config.hold_ms = (1500, 2500);
    config.quiet_ms = (500, 1500);
    config.seed = 7;
    config.base_dir = Some(work.path().to_path_buf());
    let report = runtime()
        .block_on(runner::run(config, &|_| {}))
        .expect("chaos run");
    let text = report.to_text();
    eprintln!("{text}");
    assert!(report.ops.ok > 100, "{text}");
    assert!(!report.faults.is_empty(), "{text}");
    assert!(report.linearizable, "{text}");
    assert_eq!(report.lost_acknowledged_writes, 0, "{text}");
    assert_eq!(report.verdict, RunVerdict::Pass, "{text}");
    assert!(report.elections >= 1, "{text}");
    assert_dir_empty(work.path());
}

#[test]
fn dropping_a_run_kills_members_and_removes_the_directory() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let work = tempfile::tempdir().expect("work dir");
    let mut config = ChaosConfig::new(Target::Etcd {
        binary: etcd_binary(),
    });
    config.duration = Duration::from_secs(60);
    config.faults = vec![FaultKind::Pause];
    config.hold_ms = (3000, 3000);
    config.quiet_ms = (100, 100);
    config.base_dir = Some(work.path().to_path_buf());
    let started: Mutex<Option<(PathBuf, Vec<u32>)>> = Mutex::new(None);
    let observer = |progress: Progress| {
        if let Progress::ClusterStarted { dir, members } = progress {
            let pids = members.iter().map(|(_, pid, _)| *pid).collect();
            *started.lock().expect("lock") = Some((dir, pids));
        }
    };
    let runtime = runtime();
    runtime.block_on(async {
        let run = runner::run(config, &observer);
        // Interrupt in the middle of a pause: a stopped member must die too.
        let interrupted = tokio::time::timeout(Duration::from_secs(6), run).await;
        assert!(interrupted.is_err(), "the run should still be going");
    });
    let (dir, pids) = started
        .lock()
        .expect("lock")
        .clone()
        .expect("cluster started");
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!process_alive(pid), "member pid {pid} survived");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert_dir_empty(work.path());
}

fn assert_dir_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read work dir")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_panic_while_a_cluster_runs_kills_its_members_and_removes_the_directory() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let work = tempfile::tempdir().expect("work dir");
    let config = ClusterConfig {
        target: Target::Etcd {
            binary: etcd_binary(),
        },
        nodes: 3,
        base_dir: Some(work.path().to_path_buf()),
        fault_injection: false,
        member_flags: Vec::new(),
    };
    let seen: Mutex<Option<(PathBuf, Vec<u32>)>> = Mutex::new(None);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = Cluster::start(config).expect("start members");
        let pids = cluster
            .members()
            .iter()
            .map(|member| member.pid().expect("running"))
            .collect();
        *seen.lock().expect("lock") = Some((cluster.dir().to_path_buf(), pids));
        panic!("a bug in the middle of a run");
    }));
    assert!(unwound.is_err());
    let (dir, pids) = seen.lock().expect("lock").clone().expect("cluster started");
    for pid in pids {
        assert!(!process_alive(pid), "member pid {pid} survived the panic");
    }
    assert!(!dir.exists(), "{} survived the panic", dir.display());
    assert_dir_empty(work.path());
}
