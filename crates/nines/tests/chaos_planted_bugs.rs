//! Acceptance 1 of the chaos issue: the checkers catch planted bugs. A
//! member that serves linearizable reads from local state (no ReadIndex) must
//! be reported as not linearizable; a member that acknowledges log writes
//! before they are durable must lose acknowledged writes across a crash of
//! every member, and be reported. Without the planted flag, the very same
//! runs (same seed, same faults) pass.

mod chaos_support;

use std::time::Duration;

use chaos_support::{run_chaos, SERIAL};

const STALE_READ_RUN: &[&str] = &[
    "--duration",
    "10s",
    "--seed",
    "11",
    "--faults",
    "partition,pause",
    "--hold",
    "1500ms-2500ms",
    "--quiet",
    "500ms-1500ms",
];

const CRASH_RUN: &[&str] = &[
    "--duration",
    "10s",
    "--seed",
    "12",
    "--faults",
    "kill-all",
    "--hold",
    "1s-2s",
    "--quiet",
    "1s-2s",
];

fn with_flag(run: &[&'static str], flag: &'static str) -> Vec<&'static str> {
    let mut args = run.to_vec();
    args.push(flag);
    args
}

#[test]
fn stale_reads_without_read_index_are_not_linearizable() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let run = run_chaos(
        &with_flag(STALE_READ_RUN, "--unsafe-stale-reads"),
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(1), "{}", run.output);
    let report = run.report();
    assert_eq!(report["linearizable"], false, "{}", run.output);
    let offending = report["offending_history"]["operations"]
        .as_array()
        .unwrap_or_else(|| panic!("no offending history:\n{}", run.output));
    assert!(
        (2..=10).contains(&offending.len()),
        "offending history should be short: {}",
        run.output
    );
    assert!(run.output.contains("linearizable: NO"), "{}", run.output);
}

#[test]
fn acknowledging_before_fsync_loses_writes_in_a_full_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let run = run_chaos(
        &with_flag(CRASH_RUN, "--unsafe-lazy-fsync"),
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(1), "{}", run.output);
    assert!(run.int("lost_acknowledged_writes") > 0, "{}", run.output);
}

#[test]
fn the_same_runs_pass_without_planted_bugs() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    for args in [STALE_READ_RUN, CRASH_RUN] {
        let run = run_chaos(args, Duration::from_secs(120));
        assert_eq!(run.code, Some(0), "{}", run.output);
        let report = run.report();
        assert_eq!(report["linearizable"], true, "{}", run.output);
        assert_eq!(run.int("lost_acknowledged_writes"), 0, "{}", run.output);
        assert!(
            !report["faults"].as_array().expect("faults").is_empty(),
            "{}",
            run.output
        );
    }
}
