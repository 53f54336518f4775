//! Linearizability checker for a history of register operations (put, get,
//! compare-and-swap), after Wing & Gong with Lowe's memoization as Porcupine
//! and Knossos do it. The history is split per key (each key is an
//! independent register, so the whole is linearizable iff every key is), and
//! each key is searched depth-first for an order that respects real time and
//! the register's sequential rules. Visited (linearized set, register value)
//! pairs are remembered so no configuration is explored twice.
//!
//! Operations whose outcome is unknown get an infinite completion time: they
//! may take effect at any point after their invocation, or never. Failed
//! operations and unknown reads have no effect and are dropped. The search
//! is bounded in steps and wall time; when a bound is hit the verdict is
//! [`Verdict::Unknown`], never a guess. When a key is not linearizable, a
//! minimal offending sub-history is extracted by deleting operations while
//! the rest stays non-linearizable, using only deletions that cannot turn a
//! linearizable history into a non-linearizable one, so the reported
//! sub-history is itself a proof of the violation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::history::{Command, Operation, Outcome, Response};

/// Bounds on the checker's work.
#[derive(Clone, Debug)]
pub struct CheckLimits {
    /// Search steps allowed per key before the key's verdict is `Unknown`.
    pub steps_per_key_max: u64,
    /// Wall-clock time allowed for the whole check (all keys and the search
    /// for the offending sub-history).
    pub time_max: Duration,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            steps_per_key_max: 50_000_000,
            time_max: Duration::from_secs(60),
        }
    }
}

/// The checker's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A valid linearization exists.
    Linearizable,
    /// No linearization exists: a violation.
    NotLinearizable,
    /// A bound was hit before the search finished; nothing is claimed.
    Unknown,
}

/// The verdict for a whole history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckReport {
    /// Linearizable only if every key is; not linearizable if any key is not.
    pub verdict: Verdict,
    /// Per-key verdicts, in key order.
    pub keys: BTreeMap<String, Verdict>,
    /// For the first non-linearizable key, a minimal sub-history (sorted by
    /// invocation time) that is itself not linearizable.
    pub offending: Option<OffendingHistory>,
    /// Total search steps spent.
    pub steps: u64,
}

/// A minimal non-linearizable sub-history of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OffendingHistory {
    /// The key.
    pub key: String,
    /// The operations, sorted by invocation time.
    pub operations: Vec<Operation>,
    /// False when the minimizing search ran out of time, so the list may hold
    /// operations that are not needed for the violation.
    pub minimal: bool,
}

/// Checks a whole history within `limits`.
pub fn check_history(history: &[Operation], limits: &CheckLimits) -> CheckReport {
    let started = Instant::now();
    let deadline = started + limits.time_max;
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(&operation.key).or_default().push(operation);
    }
    let mut report = CheckReport {
        verdict: Verdict::Linearizable,
        keys: BTreeMap::new(),
        offending: None,
        steps: 0,
    };
    for (key, operations) in by_key {
        let register = Register::new(&operations);
        let outcome = register.check(limits.steps_per_key_max, deadline);
        report.steps += outcome.steps;
        report.keys.insert(key.to_string(), outcome.verdict);
        match outcome.verdict {
            Verdict::NotLinearizable => {
                report.verdict = Verdict::NotLinearizable;
                if report.offending.is_none() {
                    let (kept, minimal) = register.minimize(limits.steps_per_key_max, deadline);
                    let mut operations: Vec<Operation> = kept
                        .iter()
                        .map(|&index| register.ops[index].source.clone())
                        .collect();
                    operations.sort_by_key(|operation| operation.invoke_ns);
                    report.offending = Some(OffendingHistory {
                        key: key.to_string(),
                        operations,
                        minimal,
                    });
                }
            }
            Verdict::Unknown if report.verdict == Verdict::Linearizable => {
                report.verdict = Verdict::Unknown;
            }
            _ => {}
        }
    }
    report
}

/// Search steps allowed for each trial while minimizing an offending
/// history; a trial that runs out keeps the operations it tried to delete.
const MINIMIZE_STEPS_MAX: u64 = 1_000_000;

/// Register values are interned: 0 is "no value", others index distinct strings.
type Value = u32;
const ABSENT: Value = 0;

/// An operation's effect on the register, with values interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Put { value: Value },
    Get { seen: Value },
    CasSwapped { expected: Value, new: Value },
    CasRefused { expected: Value },
    CasUnknown { expected: Value, new: Value },
}

impl Step {
    /// The register's sequential rule: the state after this step, or `None`
    /// when the step's observed result is impossible from `state`.
    fn apply(self, state: Value) -> Option<Value> {
        match self {
            Step::Put { value } => Some(value),
            Step::Get { seen } => (state == seen).then_some(state),
            Step::CasSwapped { expected, new } => (state == expected).then_some(new),
            Step::CasRefused { expected } => (state != expected).then_some(state),
            Step::CasUnknown { expected, new } => Some(if state == expected { new } else { state }),
        }
    }

    /// The value this step may write.
    fn written(self) -> Option<Value> {
        match self {
            Step::Put { value } => Some(value),
            Step::CasSwapped { new, .. } | Step::CasUnknown { new, .. } => Some(new),
            Step::Get { .. } | Step::CasRefused { .. } => None,
        }
    }

    /// The value this step needs to observe, if any.
    fn observed(self) -> Option<Value> {
        match self {
            Step::Get { seen } => Some(seen),
            Step::CasSwapped { expected, .. } | Step::CasUnknown { expected, .. } => Some(expected),
            Step::Put { .. } | Step::CasRefused { .. } => None,
        }
    }
}

/// One operation prepared for the search.
#[derive(Clone, Debug)]
struct PreparedOp<'a> {
    step: Step,
    invoke: u64,
    /// `u64::MAX` for operations whose outcome is unknown.
    complete: u64,
    source: &'a Operation,
}

impl PreparedOp<'_> {
    fn definite(&self) -> bool {
        self.complete != u64::MAX
    }
}

/// The prepared history of one key.
struct Register<'a> {
    ops: Vec<PreparedOp<'a>>,
}

/// What one search returned.
struct SearchOutcome {
    verdict: Verdict,
    steps: u64,
}

impl<'a> Register<'a> {
    fn new(history: &[&'a Operation]) -> Self {
        let mut interned: HashMap<&'a str, Value> = HashMap::new();
        let mut intern = |value: &'a str| -> Value {
            let next = interned.len() as Value + 1;
            *interned.entry(value).or_insert(next)
        };
        let mut ops = Vec::new();
        for &operation in history {
            let step = match (&operation.command, &operation.outcome) {
                (_, Outcome::Failed) | (Command::Get, Outcome::Unknown) => continue,
                (Command::Put { value }, Outcome::Ok(_) | Outcome::Unknown) => Step::Put {
                    value: intern(value),
                },
                (Command::Get, Outcome::Ok(Response::Get(seen))) => Step::Get {
                    seen: seen.as_deref().map_or(ABSENT, &mut intern),
                },
                (Command::Cas { expected, .. }, Outcome::Ok(Response::Cas(false))) => {
                    Step::CasRefused {
                        expected: intern(expected),
                    }
                }
                (Command::Cas { expected, new }, Outcome::Ok(Response::Cas(true))) => {
                    Step::CasSwapped {
                        expected: intern(expected),
                        new: intern(new),
                    }
                }
                (Command::Cas { expected, new }, Outcome::Unknown) => Step::CasUnknown {
                    expected: intern(expected),
                    new: intern(new),
                },
                // A response that does not match its command cannot be judged
                // by the register model: a get answered as a put is a client
                // bug, not a store behaviour. Such operations are skipped.
                _ => continue,
            };
            let complete = match operation.outcome {
                Outcome::Unknown => u64::MAX,
                _ => operation.complete_ns.max(operation.invoke_ns),
            };
            ops.push(PreparedOp {
                step,
                invoke: operation.invoke_ns,
                complete,
                source: operation,
            });
        }
        Register { ops }
    }

    fn check(&self, steps_max: u64, deadline: Instant) -> SearchOutcome {
        let all: Vec<usize> = (0..self.ops.len()).collect();
        self.check_subset(&all, steps_max, deadline)
    }

    /// Searches the operations `subset`, after narrowing what the history
    /// itself proves about unknown writes (see [`effective_ops`]).
    fn check_subset(&self, subset: &[usize], steps_max: u64, deadline: Instant) -> SearchOutcome {
        let effective = effective_ops(&self.ops, subset);
        // A completed operation that observed a value nobody wrote cannot be
        // placed anywhere: no search needed.
        let written: HashSet<Value> = effective
            .iter()
            .filter_map(|op| op.step.written())
            .collect();
        let impossible = effective.iter().any(|op| {
            op.definite()
                && op
                    .step
                    .observed()
                    .is_some_and(|value| value != ABSENT && !written.contains(&value))
        });
        if impossible {
            return SearchOutcome {
                verdict: Verdict::NotLinearizable,
                steps: 0,
            };
        }
        let all: Vec<usize> = (0..effective.len()).collect();
        search(&effective, &all, steps_max, deadline)
    }

    /// Deletes operations (in halving chunks, then one by one) as long as the
    /// rest stays non-linearizable. Returns the kept indices and whether the
    /// search finished.
    fn minimize(&self, steps_max: u64, deadline: Instant) -> (Vec<usize>, bool) {
        let mut kept: Vec<usize> = (0..self.ops.len()).collect();
        let mut chunk = kept.len().div_ceil(2).max(1);
        loop {
            let mut start = 0;
            let mut removed_any = false;
            while start < kept.len() {
                if Instant::now() >= deadline {
                    return (kept, false);
                }
                let end = (start + chunk).min(kept.len());
                let removal = self.safe_removal(&kept, &kept[start..end]);
                if !removal.is_empty() {
                    let rest: Vec<usize> = kept
                        .iter()
                        .copied()
                        .filter(|index| !removal.contains(index))
                        .collect();
                    let budget = steps_max.min(MINIMIZE_STEPS_MAX);
                    if self.check_subset(&rest, budget, deadline).verdict
                        == Verdict::NotLinearizable
                    {
                        kept = rest;
                        removed_any = true;
                        continue;
                    }
                }
                start = end;
            }
            // A deletion late in a pass (a refused compare-and-swap, a read)
            // can unblock writes earlier in it, so single-operation passes
            // repeat until nothing more goes.
            if chunk == 1 && !removed_any {
                return (kept, true);
            }
            chunk = chunk.div_ceil(2);
        }
    }

    /// The subset of `candidates` whose deletion from `kept` cannot make a
    /// linearizable history non-linearizable. Reads and refused
    /// compare-and-swaps only constrain, so deleting them is always safe. A
    /// write may be deleted only if no kept operation observes its value and
    /// no refused compare-and-swap is kept (that one could have relied on the
    /// register holding the deleted value rather than the one before it).
    fn safe_removal(&self, kept: &[usize], candidates: &[usize]) -> HashSet<usize> {
        let mut removal: HashSet<usize> = candidates.iter().copied().collect();
        loop {
            let rest = kept.iter().filter(|index| !removal.contains(index));
            let mut observed = HashSet::new();
            let mut refused_kept = false;
            for &index in rest {
                let step = self.ops[index].step;
                observed.extend(step.observed());
                refused_kept |= matches!(step, Step::CasRefused { .. });
            }
            let blocked: Vec<usize> = removal
                .iter()
                .copied()
                .filter(|&index| match self.ops[index].step.written() {
                    Some(value) => refused_kept || observed.contains(&value),
                    None => false,
                })
                .collect();
            if blocked.is_empty() {
                return removal;
            }
            for index in blocked {
                removal.remove(&index);
            }
        }
    }
}

/// The operations of `subset` as the search should see them, using what the
/// history itself proves about unknown writes (values are unique, so a
/// value has one writer):
///
/// - an unknown write whose value a completed operation observed certainly
///   took effect, and before that observer completed: it becomes a definite
///   write (a swapped compare-and-swap) completing then;
/// - an unknown write whose value nobody observed can always be placed after
///   everything else ("never happened") unless a refused compare-and-swap
///   might have needed the register to hold that value; without such a
///   refusal after its invocation it is dropped.
///
/// Both keep the verdict and spare the search the placements of operations
/// that could otherwise land anywhere.
fn effective_ops<'a>(ops: &[PreparedOp<'a>], subset: &[usize]) -> Vec<PreparedOp<'a>> {
    let mut writers: HashMap<Value, usize> = HashMap::new();
    let mut observed: HashSet<Value> = HashSet::new();
    let mut first_observer_complete: HashMap<Value, u64> = HashMap::new();
    let mut latest_refusal_complete: Option<u64> = None;
    for &index in subset {
        let op = &ops[index];
        if let Some(value) = op.step.written() {
            *writers.entry(value).or_default() += 1;
        }
        if let Some(value) = op.step.observed() {
            observed.insert(value);
            if op.definite() {
                let earliest = first_observer_complete.entry(value).or_insert(op.complete);
                *earliest = (*earliest).min(op.complete);
            }
        }
        if matches!(op.step, Step::CasRefused { .. }) {
            latest_refusal_complete = latest_refusal_complete.max(Some(op.complete));
        }
    }
    subset
        .iter()
        .filter_map(|&index| {
            let mut op = ops[index].clone();
            let Some(value) = op.step.written().filter(|_| !op.definite()) else {
                return Some(op);
            };
            let sole_writer = writers.get(&value) == Some(&1);
            if let (true, Some(&seen_by)) = (sole_writer, first_observer_complete.get(&value)) {
                op.complete = seen_by.max(op.invoke);
                if let Step::CasUnknown { expected, new } = op.step {
                    op.step = Step::CasSwapped { expected, new };
                }
                return Some(op);
            }
            let refusal_after = latest_refusal_complete.is_some_and(|end| end > op.invoke);
            (observed.contains(&value) || refusal_after).then_some(op)
        })
        .collect()
}

/// A node of the doubly linked event list (Dancing Links style): index 0 is
/// the head sentinel, `NIL` ends the list.
#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    /// For a call event, the node of its return event; `NIL` for returns.
    matching: usize,
}

const NIL: usize = usize::MAX;

/// Searches for a linearization of the operations `subset` (indices into `ops`).
fn search(
    ops: &[PreparedOp<'_>],
    subset: &[usize],
    steps_max: u64,
    deadline: Instant,
) -> SearchOutcome {
    // Events sorted by time; at equal times calls come first, so touching
    // operations count as concurrent (the lenient reading, never a false
    // violation).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(subset.len() * 2);
    for (local, &index) in subset.iter().enumerate() {
        events.push((ops[index].invoke, false, local));
        events.push((ops[index].complete, true, local));
    }
    events.sort_unstable();
    let mut nodes = vec![
        Node {
            prev: NIL,
            next: NIL,
            op: NIL,
            matching: NIL
        };
        events.len() + 1
    ];
    let mut return_node = vec![NIL; subset.len()];
    for (position, &(_, is_return, local)) in events.iter().enumerate() {
        let node = position + 1;
        nodes[node] = Node {
            prev: node - 1,
            next: if node < events.len() { node + 1 } else { NIL },
            op: local,
            matching: NIL,
        };
        if is_return {
            return_node[local] = node;
        }
    }
    nodes[0].next = if events.is_empty() { NIL } else { 1 };
    for (position, node) in nodes.iter_mut().enumerate().skip(1) {
        if return_node[node.op] != position {
            node.matching = return_node[node.op];
        }
    }

    let mut definite_left = subset
        .iter()
        .filter(|&&index| ops[index].definite())
        .count();
    let words = subset.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut visited: HashSet<(Vec<u64>, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state = ABSENT;
    let mut entry = nodes[0].next;
    let mut steps = 0u64;
    while definite_left > 0 {
        steps += 1;
        if steps > steps_max || (steps.is_multiple_of(4096) && Instant::now() >= deadline) {
            return SearchOutcome {
                verdict: Verdict::Unknown,
                steps,
            };
        }
        if entry != NIL && nodes[entry].matching != NIL {
            let local = nodes[entry].op;
            let op = &ops[subset[local]];
            let advanced = op.step.apply(state).and_then(|next_state| {
                linearized[local / 64] |= 1 << (local % 64);
                if visited.insert((linearized.clone(), next_state)) {
                    Some(next_state)
                } else {
                    linearized[local / 64] &= !(1 << (local % 64));
                    None
                }
            });
            match advanced {
                Some(next_state) => {
                    stack.push((entry, state));
                    state = next_state;
                    if op.definite() {
                        definite_left -= 1;
                    }
                    lift(&mut nodes, entry);
                    entry = nodes[0].next;
                }
                None => entry = nodes[entry].next,
            }
        } else {
            // A return event (or the end): the operation it closes must come
            // before anything later, and it could not be placed. Backtrack.
            let Some((call, previous_state)) = stack.pop() else {
                return SearchOutcome {
                    verdict: Verdict::NotLinearizable,
                    steps,
                };
            };
            let local = nodes[call].op;
            linearized[local / 64] &= !(1 << (local % 64));
            if ops[subset[local]].definite() {
                definite_left += 1;
            }
            state = previous_state;
            unlift(&mut nodes, call);
            entry = nodes[call].next;
        }
    }
    SearchOutcome {
        verdict: Verdict::Linearizable,
        steps,
    }
}

/// Removes a call node and its return node from the list.
fn lift(nodes: &mut [Node], call: usize) {
    let Node {
        prev,
        next,
        matching,
        ..
    } = nodes[call];
    nodes[prev].next = next;
    if next != NIL {
        nodes[next].prev = prev;
    }
    let Node { prev, next, .. } = nodes[matching];
    nodes[prev].next = next;
    if next != NIL {
        nodes[next].prev = prev;
    }
}

/// Puts back what [`lift`] removed, in reverse order.
fn unlift(nodes: &mut [Node], call: usize) {
    let matching = nodes[call].matching;
    let Node { prev, next, .. } = nodes[matching];
    nodes[prev].next = matching;
    if next != NIL {
        nodes[next].prev = matching;
    }
    let Node { prev, next, .. } = nodes[call];
    nodes[prev].next = call;
    if next != NIL {
        nodes[next].prev = call;
    }
}
