//! Acceptance 3 of the chaos issue: thirty `kill -9` of random members
//! during heavy writes, each member restarted at once. Every member must
//! come back (a refusal to start is reported with its log), and afterwards
//! every acknowledged write must be present and the history linearizable.
//! The members snapshot often, so kills also hit snapshots being written
//! and members catch up by snapshot installs.

mod chaos_support;

use std::time::Duration;

use chaos_support::{run_chaos, SERIAL};

#[test]
fn thirty_crashes_under_writes_lose_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let run = run_chaos(
        // Snapshots every 200 entries: kills also land while a snapshot is
        // written, and restarted members catch up by snapshot installs.
        &[
            "--crash-loop",
            "30",
            "--duration",
            "5s",
            "--seed",
            "30",
            "--snapshot-count",
            "200",
        ],
        Duration::from_secs(240),
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let report = run.report();
    let kills = report["faults"].as_array().expect("faults");
    assert_eq!(kills.len(), 30, "{}", run.output);
    assert!(kills.iter().all(|kill| kill["kind"] == "kill"));
    assert!(
        kills
            .iter()
            .all(|kill| kill["recovered_ms"].as_u64() > Some(0)),
        "a member did not come back:\n{}",
        run.output
    );
    assert_eq!(run.int("lost_acknowledged_writes"), 0, "{}", run.output);
    // Every acknowledged write to a write-once key was read back, not only
    // the last write of each register.
    assert!(run.int("ledger_writes_checked") >= 100, "{}", run.output);
    assert_eq!(report["linearizable"], true, "{}", run.output);
    assert!(report["final_reads_missing"]
        .as_array()
        .expect("missing")
        .is_empty());
}
