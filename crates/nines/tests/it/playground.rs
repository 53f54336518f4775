//! `nines playground` brings up a cluster that etcdctl can use and a demo
//! service behind its gateway, prints the fixed lines, keeps the demo
//! answering 200 when a backend is killed, and leaves no process behind
//! (members and demo backends, by the PIDs it printed) when interrupted.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
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

/// Kills (by PID) every process the test saw, should it fail half-way; a
/// passing run has stopped them all already.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// What the playground prints before it settles down.
#[derive(Default)]
struct Printed {
    endpoints: String,
    dashboard: String,
    /// The demo listener's address (host:port).
    demo: String,
    /// Demo backends: (id, pid).
    backends: Vec<(String, u32)>,
    /// Members: (name, pid).
    members: Vec<(String, u32)>,
}

/// Reads the startup lines up to the last one (`Ctrl-C stops ...`).
fn read_startup(lines: &Receiver<String>) -> Printed {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut p = Printed::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("playground prints its startup lines");
        if line.starts_with("Ctrl-C") {
            return p;
        }
        if let Some(e) = line.strip_prefix("endpoints: ") {
            p.endpoints = e.to_owned();
        }
        if let Some(d) = line.strip_prefix("dashboard: ") {
            p.dashboard = d.to_owned();
        }
        if let Some(rest) = line.strip_prefix("demo: http://") {
            p.demo = rest.split('/').next().unwrap_or_default().to_owned();
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [name, "client", _, "peer", _, "http", _, "pid", pid] = words[..] {
            p.members
                .push((name.to_owned(), pid.parse().expect("a numeric pid")));
        }
        if let [id, _addr, "pid", pid] = words[..] {
            if id.starts_with("demo-") {
                p.backends
                    .push((id.to_owned(), pid.parse().expect("a numeric pid")));
            }
        }
    }
}

/// One GET to `addr`: (status, body).
fn get(rt: &tokio::runtime::Runtime, addr: &str) -> Option<(u16, String)> {
    rt.block_on(nines_testkit::http_get(addr, "/"))
}

/// Starts `nines playground`: the child, a reaper holding its pid, and its
/// stdout line by line (read on a thread of its own).
fn start_playground() -> (
    std::process::Child,
    Reaper,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = Command::new(exe())
        .arg("playground")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("playground starts");
    let reaper = Reaper(vec![child.id()]);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, reaper, rx)
}

#[test]
fn playground_serves_etcdctl_and_a_demo_and_ctrl_c_leaves_nothing() {
    let (mut child, mut reaper, rx) = start_playground();
    let printed = read_startup(&rx);
    assert_eq!(
        printed.endpoints.split(',').count(),
        3,
        "{}",
        printed.endpoints
    );
    assert!(printed.dashboard.starts_with("http://127.0.0.1:"));
    assert!(
        printed.demo.starts_with("127.0.0.1:"),
        "demo: {}",
        printed.demo
    );
    let ids: Vec<&str> = printed.backends.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(ids, ["demo-1", "demo-2", "demo-3"]);

    let put = etcdctl(&printed.endpoints, &["put", "hello", "world"], None);
    assert_eq!(put.stdout.trim(), "OK", "{}", put.stderr);
    let get_hello = etcdctl(
        &printed.endpoints,
        &["get", "hello", "--print-value-only"],
        None,
    );
    assert_eq!(get_hello.stdout.trim(), "world");

    let members_and_backends = children_of(child.id());
    reaper.0.extend(&members_and_backends);
    assert_eq!(
        members_and_backends.len(),
        6,
        "three members and three demo backends: {members_and_backends:?}"
    );
    assert_eq!(printed.members.len(), 3, "a pid per member");
    for (name, pid) in printed.members.iter().chain(&printed.backends) {
        assert!(
            members_and_backends.contains(pid),
            "{name} (pid {pid}) is a child of the playground"
        );
    }

    // Through the gateway, the demo answers 200 from every backend in turn
    // (round robin over the registry's healthy instances).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut answered = BTreeSet::new();
    while answered.len() < ids.len() {
        let (status, body) = get(&rt, &printed.demo).expect("the demo answers");
        assert_eq!(status, 200, "demo: {body}");
        assert!(ids.contains(&body.trim()), "answered by {body:?}");
        answered.insert(body.trim().to_owned());
        assert!(
            Instant::now() < deadline,
            "only {answered:?} answered through the gateway"
        );
    }

    // A killed backend is hidden: every request still answers 200, from
    // another backend.
    let (killed, killed_pid) = &printed.backends[0];
    kill(Pid::from_raw(*killed_pid as i32), Signal::SIGKILL).expect("kill -9 a backend");
    for _ in 0..12 {
        let (status, body) = get(&rt, &printed.demo).expect("the demo answers");
        assert_eq!(status, 200, "demo after the kill: {body}");
        assert_ne!(body.trim(), killed, "a dead backend cannot answer");
    }

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
    for pid in members_and_backends {
        assert!(!alive(pid), "process {pid} left behind");
    }
    for (id, pid) in &printed.backends {
        assert!(!alive(*pid), "demo backend {id} (pid {pid}) left behind");
    }
}

/// A Ctrl-C while the playground is still starting (right after it printed
/// its members, before or while it waits for a leader) stops it cleanly and
/// leaves none of its processes behind.
#[test]
fn playground_interrupted_while_starting_leaves_nothing() {
    let (mut child, mut reaper, rx) = start_playground();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut members = Vec::new();
    while members.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("playground prints its members");
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [_, "client", _, "peer", _, "http", _, "pid", pid] = words[..] {
            members.push(pid.parse::<u32>().expect("a numeric pid"));
        }
    }
    reaper.0.extend(&members);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "playground exits cleanly: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "playground did not stop on Ctrl-C while starting"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Whatever it had started by then (members, maybe demo backends) is gone.
    let mut started = members;
    started.extend(rx.try_iter().filter_map(|line| {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        match &words[..] {
            [id, _, pid_word, pid] if id.starts_with("demo-") && pid_word == "pid" => {
                pid.parse::<u32>().ok()
            }
            _ => None,
        }
    }));
    for pid in started {
        assert!(!alive(pid), "process {pid} left behind");
    }
}
