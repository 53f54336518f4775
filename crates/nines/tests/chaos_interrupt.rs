//! Acceptance 5 of the chaos issue: `nines chaos` cleans up every process
//! and directory it made, also when interrupted with Ctrl-C (SIGINT) in the
//! middle of a fault.

mod chaos_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chaos_support::{assert_dir_empty, process_alive, SERIAL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn ctrl_c_kills_every_member_and_removes_the_run_directory() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let work = tempfile::tempdir().expect("work dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nines"))
        .args(["chaos", "--duration", "120s", "--faults", "pause,kill"])
        .args(["--quiet", "200ms-200ms", "--hold", "5s-5s", "--seed", "5"])
        .arg("--work-dir")
        .arg(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nines chaos");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut pids = Vec::new();
    let mut run_dir = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("nines chaos printed its members and started the workload");
        if let Some(dir) = line.strip_prefix("cluster: ") {
            run_dir = Some(std::path::PathBuf::from(dir));
        }
        if let Some(rest) = line.strip_prefix("member ") {
            let pid = rest.split_whitespace().nth(2).expect("pid field");
            pids.push(pid.parse::<u32>().expect("pid"));
        }
        if line == "workload started" {
            break;
        }
    }
    let run_dir = run_dir.expect("cluster directory printed");
    assert_eq!(pids.len(), 3);
    assert!(run_dir.exists());
    // Let the first fault (a pause or a kill, held 5 s) begin.
    std::thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("send SIGINT");
    let exit_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll chaos") {
            break status;
        }
        assert!(Instant::now() < exit_deadline, "nines chaos ignored SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    for pid in pids {
        assert!(!process_alive(pid), "member pid {pid} survived Ctrl-C");
    }
    assert!(!run_dir.exists(), "{} survived Ctrl-C", run_dir.display());
    assert_dir_empty(work.path(), "after Ctrl-C");
}
