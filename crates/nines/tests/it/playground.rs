//! `nines playground` brings up a cluster that etcdctl can use, prints the
//! fixed lines, and leaves no process behind when interrupted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{etcdctl, exe};

fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn alive(pid: u32) -> bool {
    // Zombies count as gone: they hold no ports or files.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

#[test]
fn playground_serves_etcdctl_and_ctrl_c_leaves_nothing() {
    let mut child = Command::new(exe())
        .arg("playground")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("playground starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut endpoints = None;
    let mut dashboard = None;
    while endpoints.is_none() || dashboard.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("playground prints endpoints and dashboard");
        if let Some(e) = line.strip_prefix("endpoints: ") {
            endpoints = Some(e.to_string());
        }
        if let Some(d) = line.strip_prefix("dashboard: ") {
            dashboard = Some(d.to_string());
        }
    }
    let endpoints = endpoints.expect("endpoints");
    assert_eq!(endpoints.split(',').count(), 3, "{endpoints}");
    assert!(dashboard
        .expect("dashboard")
        .starts_with("http://127.0.0.1:"));
    let put = etcdctl(&endpoints, &["put", "hello", "world"], None);
    assert_eq!(put.stdout.trim(), "OK", "{}", put.stderr);
    let get = etcdctl(&endpoints, &["get", "hello", "--print-value-only"], None);
    assert_eq!(get.stdout.trim(), "world");

    let members = children_of(child.id());
    assert_eq!(members.len(), 3, "three member processes: {members:?}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "playground exits cleanly: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "playground did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in members {
        assert!(!alive(pid), "member process {pid} left behind");
    }
}
