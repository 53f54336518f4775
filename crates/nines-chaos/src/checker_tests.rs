//! Unit tests of the linearizability checker and the lost-write check on
//! small hand-written histories, known linearizable or known not.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{Command, Operation, Outcome, Response};
use crate::linearizability::{check_history, CheckLimits, Verdict};
use crate::lost_writes::lost_acknowledged_writes;

const MS: u64 = 1_000_000;

fn op(
    client: u32,
    command: Command,
    invoke_ms: u64,
    complete_ms: u64,
    outcome: Outcome,
) -> Operation {
    Operation {
        client,
        key: "k".to_string(),
        command,
        invoke_ns: invoke_ms * MS,
        complete_ns: complete_ms * MS,
        outcome,
    }
}

fn put(client: u32, value: &str, invoke: u64, complete: u64) -> Operation {
    op(
        client,
        Command::Put {
            value: value.into(),
        },
        invoke,
        complete,
        Outcome::Ok(Response::Put),
    )
}

fn put_unknown(client: u32, value: &str, invoke: u64) -> Operation {
    op(
        client,
        Command::Put {
            value: value.into(),
        },
        invoke,
        invoke + 1000,
        Outcome::Unknown,
    )
}

fn put_failed(client: u32, value: &str, invoke: u64, complete: u64) -> Operation {
    op(
        client,
        Command::Put {
            value: value.into(),
        },
        invoke,
        complete,
        Outcome::Failed,
    )
}

fn get(client: u32, seen: Option<&str>, invoke: u64, complete: u64) -> Operation {
    op(
        client,
        Command::Get,
        invoke,
        complete,
        Outcome::Ok(Response::Get(seen.map(String::from))),
    )
}

fn cas(
    client: u32,
    expected: &str,
    new: &str,
    swapped: bool,
    invoke: u64,
    complete: u64,
) -> Operation {
    let command = Command::Cas {
        expected: expected.into(),
        new: new.into(),
    };
    op(
        client,
        command,
        invoke,
        complete,
        Outcome::Ok(Response::Cas(swapped)),
    )
}

fn cas_unknown(client: u32, expected: &str, new: &str, invoke: u64) -> Operation {
    let command = Command::Cas {
        expected: expected.into(),
        new: new.into(),
    };
    op(client, command, invoke, invoke + 1000, Outcome::Unknown)
}

fn verdict(history: &[Operation]) -> Verdict {
    check_history(history, &CheckLimits::default()).verdict
}

#[test]
fn sequential_history_is_linearizable() {
    let history = [
        get(1, None, 0, 1),
        put(1, "a", 2, 3),
        get(2, Some("a"), 4, 5),
        cas(1, "a", "b", true, 6, 7),
        cas(2, "a", "c", false, 8, 9),
        get(1, Some("b"), 10, 11),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn concurrent_reads_may_see_either_side_of_a_write() {
    let history = [
        put(1, "a", 0, 1),
        put(1, "b", 10, 20),
        get(2, Some("b"), 11, 12),
        get(3, Some("a"), 13, 14),
    ];
    // b's put is still in flight while both reads run, but once a read saw b,
    // a later read (in real time) must not see a.
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
    let history = [
        put(1, "a", 0, 1),
        put(1, "b", 10, 20),
        get(2, Some("a"), 11, 12),
        get(3, Some("b"), 13, 14),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn stale_read_is_not_linearizable() {
    let history = [
        put(1, "a", 0, 1),
        put(1, "b", 2, 3),
        get(2, Some("a"), 4, 5),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn lost_write_is_not_linearizable() {
    let history = [put(1, "a", 0, 1), get(2, None, 2, 3)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn duplicate_cas_success_is_not_linearizable() {
    let history = [
        put(1, "a", 0, 1),
        cas(1, "a", "b", true, 2, 10),
        cas(2, "a", "c", true, 3, 11),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn read_of_never_written_value_is_not_linearizable() {
    let history = [put(1, "a", 0, 1), get(2, Some("zz"), 2, 3)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn failed_write_must_not_be_visible() {
    let history = [
        put(1, "a", 0, 1),
        put_failed(1, "b", 2, 3),
        get(2, Some("b"), 4, 5),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
    let history = [
        put(1, "a", 0, 1),
        put_failed(1, "b", 2, 3),
        get(2, Some("a"), 4, 5),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_write_may_apply_long_after_its_invocation() {
    let history = [
        put(1, "a", 0, 1),
        put_unknown(2, "b", 2),
        get(3, Some("a"), 100, 101),
        get(3, Some("b"), 200, 201),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_write_may_never_apply() {
    let history = [
        put(1, "a", 0, 1),
        put_unknown(2, "b", 2),
        get(3, Some("a"), 100, 101),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_write_cannot_apply_before_its_invocation() {
    let history = [
        put(1, "a", 0, 1),
        get(3, Some("b"), 2, 3),
        put_unknown(2, "b", 10),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn unknown_write_applies_at_most_once() {
    let history = [
        put(1, "a", 0, 1),
        put_unknown(2, "b", 2),
        get(3, Some("b"), 10, 11),
        put(1, "c", 20, 21),
        get(3, Some("b"), 30, 31),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn unknown_cas_applies_only_when_its_comparison_holds() {
    let history = [
        put(1, "a", 0, 1),
        cas_unknown(2, "a", "b", 2),
        get(3, Some("b"), 10, 11),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
    let history = [
        put(1, "x", 0, 1),
        cas_unknown(2, "a", "b", 2),
        get(3, Some("b"), 10, 11),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn refused_cas_is_judged_against_unknown_writes() {
    // The refused swap expected "a" after "a" was written; it is explainable
    // only by the unknown put of "b" landing before it.
    let history = [
        put(1, "a", 0, 1),
        put_unknown(2, "b", 2),
        cas(3, "a", "c", false, 10, 11),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
    let history = [put(1, "a", 0, 1), cas(3, "a", "c", false, 10, 11)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn keys_are_checked_independently() {
    let mut other = put(1, "a", 0, 1);
    other.key = "other".into();
    let mut other_read = get(2, None, 2, 3);
    other_read.key = "other".into();
    let history = [
        put(1, "a", 0, 1),
        get(2, Some("a"), 2, 3),
        other,
        other_read,
    ];
    let report = check_history(&history, &CheckLimits::default());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert_eq!(report.keys["k"], Verdict::Linearizable);
    assert_eq!(report.keys["other"], Verdict::NotLinearizable);
    assert_eq!(report.offending.expect("offending history").key, "other");
}

#[test]
fn offending_sub_history_is_the_shortest_witness() {
    // A long healthy history with one stale read in the middle.
    let mut history = Vec::new();
    let mut now = 0;
    for round in 0..200u64 {
        let value = format!("v{round}");
        history.push(put(1, &value, now, now + 2));
        history.push(get(2, Some(&value), now + 3, now + 4));
        history.push(get(3, Some(&value), now + 3, now + 5));
        if round == 120 {
            history.push(get(4, Some("v118"), now + 6, now + 7));
        }
        now += 10;
    }
    let report = check_history(&history, &CheckLimits::default());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let offending = report.offending.expect("offending history");
    assert!(offending.minimal);
    let described: Vec<String> = offending
        .operations
        .iter()
        .map(Operation::describe)
        .collect();
    assert_eq!(offending.operations.len(), 3, "{described:#?}");
    assert_eq!(
        offending.operations[0].command,
        Command::Put {
            value: "v118".into()
        }
    );
    // Any later acknowledged put completed before the stale read proves it.
    assert!(matches!(
        offending.operations[1].command,
        Command::Put { .. }
    ));
    assert!(offending.operations[1].complete_ns < offending.operations[2].invoke_ns);
    assert_eq!(offending.operations[2].client, 4);
}

#[test]
fn search_bound_gives_unknown_not_a_verdict() {
    // Many concurrent writes and reads of values that force deep search.
    let mut history = Vec::new();
    for client in 0..24u32 {
        history.push(put(client, &format!("v{client}"), 0, 1000));
    }
    for client in 0..24u32 {
        history.push(get(
            100 + client,
            Some(&format!("v{}", 23 - client)),
            1,
            999,
        ));
    }
    let limits = CheckLimits {
        steps_per_key_max: 100,
        time_max: Duration::from_secs(5),
    };
    assert_eq!(check_history(&history, &limits).verdict, Verdict::Unknown);
}

#[test]
fn many_concurrent_clients_stay_fast() {
    // 8 clients with overlapping operations over 2000 rounds: memoization
    // keeps this a quick check.
    let mut history = Vec::new();
    let mut last = None::<String>;
    for round in 0..2000u64 {
        let base = round * 10;
        let value = format!("v{round}");
        history.push(put(round as u32 % 8, &value, base, base + 15));
        history.push(get(8, last.as_deref(), base, base + 1));
        last = Some(value);
    }
    let report = check_history(&history, &CheckLimits::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
}

#[test]
fn acknowledged_write_missing_from_final_read_is_lost() {
    let history = [put(1, "a", 0, 1), put(1, "b", 2, 3), put(1, "c", 4, 5)];
    let finals = BTreeMap::from([("k".to_string(), Some("a".to_string()))]);
    let lost = lost_acknowledged_writes(&history, &finals);
    let values: Vec<&str> = lost.iter().map(|lost| lost.value.as_str()).collect();
    assert_eq!(values, ["b", "c"]);
    let finals = BTreeMap::from([("k".to_string(), None)]);
    assert_eq!(lost_acknowledged_writes(&history, &finals).len(), 3);
    let finals = BTreeMap::from([("k".to_string(), Some("c".to_string()))]);
    assert!(lost_acknowledged_writes(&history, &finals).is_empty());
}

#[test]
fn concurrent_or_unknown_writes_may_win_the_final_read() {
    let history = [
        put(1, "a", 0, 10),
        put(2, "b", 5, 6),
        put_unknown(3, "c", 20),
        put(1, "d", 30, 31),
    ];
    // a and b overlapped, so a may be last of the two.
    let finals = BTreeMap::from([("k".to_string(), Some("d".to_string()))]);
    assert!(lost_acknowledged_writes(&history, &finals).is_empty());
    // The unknown put of c may have landed after d.
    let finals = BTreeMap::from([("k".to_string(), Some("c".to_string()))]);
    assert!(lost_acknowledged_writes(&history, &finals).is_empty());
    let history = [put(2, "b", 5, 6), put(1, "a", 0, 10)];
    let finals = BTreeMap::from([("k".to_string(), Some("a".to_string()))]);
    assert!(lost_acknowledged_writes(&history, &finals).is_empty());
}

#[test]
fn final_value_never_written_loses_every_acknowledged_write() {
    let history = [put(1, "a", 0, 1), cas(1, "a", "b", true, 2, 3)];
    let finals = BTreeMap::from([("k".to_string(), Some("garbage".to_string()))]);
    assert_eq!(lost_acknowledged_writes(&history, &finals).len(), 2);
}

/// Builds a history that is linearizable by construction: operations are
/// applied to a register in a random order, each one's interval contains its
/// linearization point, and some writes become unknown (applied or not) or
/// failed (not applied).
fn generated_history(seed: u64, operations: usize, fates: u64) -> Vec<Operation> {
    let mut rng = crate::rng::SeededRng::new(seed);
    let mut state: Option<String> = None;
    let mut written: Vec<String> = Vec::new();
    let mut history = Vec::new();
    for index in 0..operations {
        let point = index as u64 * 10;
        let invoke = point.saturating_sub(rng.below(40));
        let complete = point + rng.below(40);
        let client = rng.below(6) as u32;
        let value = format!("v{index}");
        let roll = rng.below(10);
        // Fates 0-2 make writes failed or unknown (applied or not); out of
        // 30 that is about what a chaos run sees, out of 10 far more.
        let fate = rng.below(fates);
        let (command, outcome) = if roll < 4 {
            let command = Command::Put {
                value: value.clone(),
            };
            match fate {
                0 => (command, Outcome::Failed),
                1 => (command, Outcome::Unknown),
                2 => {
                    state = Some(value.clone());
                    (command, Outcome::Unknown)
                }
                _ => {
                    state = Some(value.clone());
                    (command, Outcome::Ok(Response::Put))
                }
            }
        } else if roll < 7 || written.is_empty() {
            (Command::Get, Outcome::Ok(Response::Get(state.clone())))
        } else {
            let expected = if rng.chance(1, 2) {
                state.clone().unwrap_or_else(|| written[0].clone())
            } else {
                rng.pick(&written).clone()
            };
            let swaps = state.as_deref() == Some(expected.as_str());
            let command = Command::Cas {
                expected,
                new: value.clone(),
            };
            match fate {
                0 | 1 => (command, Outcome::Unknown),
                _ => {
                    if swaps {
                        state = Some(value.clone());
                    }
                    (command, Outcome::Ok(Response::Cas(swaps)))
                }
            }
        };
        written.push(value);
        history.push(op(client, command, invoke, complete, outcome));
    }
    history
}

#[test]
fn generated_linearizable_histories_are_accepted() {
    for seed in 0..200 {
        let history = generated_history(seed, 150, 30);
        let report = check_history(&history, &CheckLimits::default());
        assert_eq!(report.verdict, Verdict::Linearizable, "seed {seed}");
    }
    for seed in 0..200 {
        let history = generated_history(seed, 60, 10);
        let report = check_history(&history, &CheckLimits::default());
        assert_eq!(report.verdict, Verdict::Linearizable, "seed {seed}");
    }
}

#[test]
fn generated_histories_with_an_impossible_read_are_rejected() {
    for seed in 0..100 {
        let mut history = generated_history(seed, 150, 30);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&index| history[index].command == Command::Get)
            .collect();
        let Some(&victim) = reads.get(reads.len() / 2) else {
            continue;
        };
        history[victim].outcome = Outcome::Ok(Response::Get(Some("never-written".into())));
        let report = check_history(&history, &CheckLimits::default());
        assert_eq!(report.verdict, Verdict::NotLinearizable, "seed {seed}");
        let offending = report.offending.expect("offending history");
        assert!(offending
            .operations
            .iter()
            .any(|operation| operation.outcome
                == Outcome::Ok(Response::Get(Some("never-written".into())))));
    }
}
