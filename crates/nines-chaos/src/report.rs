//! The verdict of a chaos run: counts, the linearizability and lost-write
//! results, availability (1-second windows with a successful write, the
//! longest write gap overall and per fault) and the faults injected. The
//! report serializes to the JSON that `nines chaos --report FILE` writes (a
//! fixed contract: `linearizable`, `lost_acknowledged_writes`,
//! `longest_write_gap_ms`, `ops`, `faults`) and renders as terminal text.

use serde::{Deserialize, Serialize};

use crate::history::{Operation, Outcome};
use crate::linearizability::{OffendingHistory, Verdict};
use crate::lost_writes::LostWrite;

/// Operation counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Answered by the store.
    pub ok: u64,
    /// Certainly not applied.
    pub failed: u64,
    /// May or may not have been applied.
    pub unknown: u64,
}

impl OpCounts {
    /// Counts the outcomes in `history`.
    pub fn of(history: &[Operation]) -> OpCounts {
        let mut counts = OpCounts::default();
        for operation in history {
            match operation.outcome {
                Outcome::Ok(_) => counts.ok += 1,
                Outcome::Failed => counts.failed += 1,
                Outcome::Unknown => counts.unknown += 1,
            }
        }
        counts
    }
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// The fault kind (`kill`, `pause`, `partition`, ...).
    pub kind: String,
    /// What it hit: member names, or groups like `n1|n2,n3`.
    pub target: String,
    /// When it was injected, in ms from the run's origin.
    pub start_ms: u64,
    /// When it was healed.
    pub end_ms: u64,
    /// When every member was healthy again (0 if they never were).
    pub recovered_ms: u64,
    /// The longest gap between successful writes overlapping
    /// `[start_ms, recovered_ms]`.
    pub longest_write_gap_ms: u64,
    /// Anything notable (e.g. the leader was unknown, so a random member was hit).
    pub note: String,
}

/// Whether the run passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunVerdict {
    /// No violation, and every check finished.
    Pass,
    /// At least one violation.
    Violation,
    /// No violation found, but a check could not finish (search bound hit).
    Inconclusive,
}

/// Everything a chaos run found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `nines` or `etcd`.
    pub target: String,
    /// The seed of the fault schedule and workload choices.
    pub seed: u64,
    /// Members.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys.
    pub keys: usize,
    /// Length of the workload, in ms.
    pub duration_ms: u64,
    /// Operation counts.
    pub ops: OpCounts,
    /// True only if the history was proven linearizable.
    pub linearizable: bool,
    /// The checker's verdict (`unknown` when its bound was hit).
    pub linearizability: Verdict,
    /// A minimal non-linearizable sub-history, when there is a violation.
    pub offending_history: Option<OffendingHistory>,
    /// Acknowledged writes missing from the final reads.
    pub lost_acknowledged_writes: u64,
    /// Acknowledged writes to write-once ledger keys, each checked to be
    /// present after the run (the per-key registers only show their last write).
    /// Absent from reports made before the ledger existed.
    #[serde(default)]
    pub ledger_writes_checked: u64,
    /// The first lost writes (at most 20).
    pub lost_writes: Vec<LostWrite>,
    /// Keys whose final read never succeeded (not judged).
    pub final_reads_missing: Vec<String>,
    /// Percent of 1-second windows with at least one successful write.
    pub availability_percent: f64,
    /// The longest time without a successful write, in ms.
    pub longest_write_gap_ms: u64,
    /// Leader changes seen by polling every member's status.
    pub elections: u64,
    /// The injected faults, in order.
    pub faults: Vec<FaultRecord>,
    /// Every violation, one sentence each.
    pub violations: Vec<String>,
    /// The overall verdict.
    pub verdict: RunVerdict,
}

/// Completion times (ms) of answered writes, sorted.
pub fn write_times_ms(history: &[Operation]) -> Vec<u64> {
    let mut times: Vec<u64> = history
        .iter()
        .filter(|operation| operation.is_answered_write())
        .map(|operation| operation.complete_ns / 1_000_000)
        .collect();
    times.sort_unstable();
    times
}

/// The gaps between consecutive successful writes within `[start, end]`,
/// including from `start` to the first and from the last to `end`, as
/// `(from_ms, to_ms)` pairs.
pub fn write_gaps(write_times: &[u64], start_ms: u64, end_ms: u64) -> Vec<(u64, u64)> {
    let mut points = vec![start_ms];
    points.extend(
        write_times
            .iter()
            .copied()
            .filter(|&t| t >= start_ms && t <= end_ms),
    );
    points.push(end_ms);
    points.windows(2).map(|pair| (pair[0], pair[1])).collect()
}

/// Percent of the whole 1-second windows of `[start, end)` that hold at
/// least one successful write.
pub fn availability_percent(write_times: &[u64], start_ms: u64, end_ms: u64) -> f64 {
    let windows = (end_ms.saturating_sub(start_ms) / 1000).max(1);
    let mut hit = vec![false; windows as usize];
    for &time in write_times {
        if time >= start_ms {
            let window = ((time - start_ms) / 1000) as usize;
            if let Some(slot) = hit.get_mut(window) {
                *slot = true;
            }
        }
    }
    100.0 * hit.iter().filter(|&&slot| slot).count() as f64 / windows as f64
}

/// The longest gap that overlaps `[from_ms, to_ms]`.
pub fn longest_gap_overlapping(gaps: &[(u64, u64)], from_ms: u64, to_ms: u64) -> u64 {
    gaps.iter()
        .filter(|&&(start, end)| start <= to_ms && end >= from_ms)
        .map(|&(start, end)| end - start)
        .max()
        .unwrap_or(0)
}

impl Report {
    /// Per fault kind (in order of first appearance): how many were
    /// injected, and the maximum and median of their longest write gaps.
    pub fn gaps_by_fault_kind(&self) -> Vec<(String, usize, u64, u64)> {
        let mut kinds: Vec<(String, Vec<u64>)> = Vec::new();
        for fault in &self.faults {
            match kinds.iter_mut().find(|(kind, _)| *kind == fault.kind) {
                Some((_, gaps)) => gaps.push(fault.longest_write_gap_ms),
                None => kinds.push((fault.kind.clone(), vec![fault.longest_write_gap_ms])),
            }
        }
        kinds
            .into_iter()
            .map(|(kind, mut gaps)| {
                gaps.sort_unstable();
                let max = gaps.last().copied().unwrap_or(0);
                (kind, gaps.len(), max, gaps[gaps.len() / 2])
            })
            .collect()
    }

    /// The report as terminal text.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let mut line = |s: String| {
            text.push_str(&s);
            text.push('\n');
        };
        line(format!(
            "target {} · {} members · {} clients · {} keys · seed {} · {:.1}s",
            self.target,
            self.nodes,
            self.clients,
            self.keys,
            self.seed,
            self.duration_ms as f64 / 1000.0
        ));
        line(format!(
            "ops: {} ok, {} failed, {} unknown",
            self.ops.ok, self.ops.failed, self.ops.unknown
        ));
        line(format!("faults: {}", self.faults.len()));
        for fault in &self.faults {
            line(format!(
                "  {:>8}ms-{:>8}ms {:<11} {:<14} longest write gap {} ms{}",
                fault.start_ms,
                fault.end_ms,
                fault.kind,
                fault.target,
                fault.longest_write_gap_ms,
                if fault.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", fault.note)
                }
            ));
        }
        line("by fault kind: count, longest write gap max / median (ms)".to_string());
        for (kind, count, max, median) in self.gaps_by_fault_kind() {
            line(format!("  {kind:<11} {count:>4}  {max:>6} / {median:>6}"));
        }
        line(format!("elections seen: {}", self.elections));
        line(format!(
            "availability: {:.1}% of 1-second windows had a successful write; longest write gap {} ms",
            self.availability_percent, self.longest_write_gap_ms
        ));
        let verdict = match self.linearizability {
            Verdict::Linearizable => "yes",
            Verdict::NotLinearizable => "NO",
            Verdict::Unknown => "unknown (checker bound reached)",
        };
        line(format!("linearizable: {verdict}"));
        if let Some(offending) = &self.offending_history {
            line(format!(
                "  shortest offending sub-history on {}{}:",
                offending.key,
                if offending.minimal {
                    ""
                } else {
                    " (not fully minimized)"
                }
            ));
            for operation in &offending.operations {
                line(format!("    {}", operation.describe()));
            }
        }
        line(format!(
            "lost acknowledged writes: {} (final reads of every key, and of {} write-once ledger keys)",
            self.lost_acknowledged_writes, self.ledger_writes_checked
        ));
        for lost in &self.lost_writes {
            line(format!(
                "  {} = {:?} acknowledged at {:.3}s, final value {:?}",
                lost.key,
                lost.value,
                lost.complete_ns as f64 / 1e9,
                lost.final_value
            ));
        }
        if !self.final_reads_missing.is_empty() {
            line(format!(
                "final reads missing for: {}",
                self.final_reads_missing.join(", ")
            ));
        }
        for violation in &self.violations {
            line(format!("VIOLATION: {violation}"));
        }
        line(format!(
            "verdict: {}",
            match self.verdict {
                RunVerdict::Pass => "pass",
                RunVerdict::Violation => "VIOLATION",
                RunVerdict::Inconclusive => "inconclusive",
            }
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{availability_percent, longest_gap_overlapping, write_gaps};

    #[test]
    fn gaps_and_windows_follow_the_write_times() {
        let writes = [100, 200, 2900, 3100];
        let gaps = write_gaps(&writes, 0, 4000);
        assert_eq!(
            gaps,
            [
                (0, 100),
                (100, 200),
                (200, 2900),
                (2900, 3100),
                (3100, 4000)
            ]
        );
        assert_eq!(longest_gap_overlapping(&gaps, 1000, 1500), 2700);
        assert_eq!(longest_gap_overlapping(&gaps, 3000, 3050), 200);
        // Windows [0,1000) [1000,2000) [2000,3000) [3000,4000): three hit.
        assert!((availability_percent(&writes, 0, 4000) - 75.0).abs() < 1e-9);
    }
}
