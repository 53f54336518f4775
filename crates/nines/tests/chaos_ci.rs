//! Acceptance 2 of the chaos issue: about 60 s of `nines chaos` on three
//! members with kills, leader kills, pauses and partitions must stay
//! linearizable, lose no acknowledged write, and never go more than 3 s
//! without a successful write after any single fault.

mod chaos_support;

use std::time::Duration;

use chaos_support::{run_chaos, SERIAL};

#[test]
fn sixty_seconds_of_kills_pauses_and_partitions_keep_every_promise() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let run = run_chaos(
        &[
            "--nodes",
            "3",
            "--duration",
            "60s",
            "--seed",
            "2026",
            "--faults",
            "kill,leader-kill,pause,partition",
            "--max-write-gap",
            "3s",
        ],
        Duration::from_secs(240),
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let report = run.report();
    assert_eq!(report["linearizable"], true, "{}", run.output);
    assert_eq!(run.int("lost_acknowledged_writes"), 0, "{}", run.output);
    let faults = report["faults"].as_array().expect("faults");
    assert!(faults.len() >= 5, "{}", run.output);
    let kinds: Vec<&str> = faults
        .iter()
        .map(|fault| fault["kind"].as_str().expect("kind"))
        .collect();
    for fault in faults {
        let gap = fault["longest_write_gap_ms"].as_u64().expect("gap");
        assert!(gap <= 3000, "gap {gap} ms after {fault}\n{}", run.output);
        assert!(fault["start_ms"].as_u64() <= fault["end_ms"].as_u64());
    }
    assert!(kinds.len() >= 3, "{kinds:?}");
    let ok = report["ops"]["ok"].as_u64().expect("ops.ok");
    assert!(ok > 1000, "{}", run.output);
}
