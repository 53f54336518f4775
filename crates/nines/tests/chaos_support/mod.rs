//! Shared helpers of the `chaos_*` process tests: run `nines chaos` (this
//! build's binary) with a bounded wall time, in a private work directory,
//! and read back its JSON report. The chaos command owns and cleans up its
//! member processes; the helpers check that nothing was left behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Chaos runs share two cores; one at a time keeps availability figures
/// meaningful.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// What one run left: exit code, report, output.
pub struct ChaosRun {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// The JSON report, if written.
    pub report: Option<Value>,
    /// stdout and stderr, for assertion messages.
    pub output: String,
}

/// Runs `nines chaos ARGS --report FILE --work-dir DIR`, failing the test if
/// it takes longer than `wall_max`. Checks that the work directory is empty
/// afterwards (the run removed its temporary directory).
pub fn run_chaos(args: &[&str], wall_max: Duration) -> ChaosRun {
    let work = tempfile::tempdir().expect("work dir");
    let report_path = work.path().join("report.json");
    let runs_dir = work.path().join("runs");
    std::fs::create_dir(&runs_dir).expect("runs dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nines"))
        .arg("chaos")
        .args(args)
        .arg("--report")
        .arg(&report_path)
        .arg("--work-dir")
        .arg(&runs_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nines chaos");
    let deadline = Instant::now() + wall_max;
    loop {
        if child.try_wait().expect("poll chaos").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "nines chaos ran past {wall_max:?}:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("collect output");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert_dir_empty(&runs_dir, &output);
    let report = std::fs::read_to_string(&report_path)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("report is JSON"));
    ChaosRun {
        code: status.code(),
        report,
        output,
    }
}

/// Fails if `dir` holds anything.
pub fn assert_dir_empty(dir: &Path, context: &str) {
    let left: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{context}");
}

/// True while a process with this PID exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

impl ChaosRun {
    /// The report, or a failure showing the output.
    pub fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no report written:\n{}", self.output))
    }

    /// An integer field of the report.
    pub fn int(&self, field: &str) -> u64 {
        self.report()[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} missing:\n{}", self.output))
    }
}
