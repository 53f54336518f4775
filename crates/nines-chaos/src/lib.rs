//! nines-chaos: the proof that nines keeps its promises. It records client
//! histories against a real cluster of member processes while injecting
//! faults on a seeded schedule, then judges them: a linearizability checker
//! for register operations (`linearizability`), a lost-acknowledged-write
//! check from final reads (`lost_writes`), and availability figures. The
//! `nines chaos` command is a thin shell over [`runner`]. This crate never
//! prints: progress goes to a caller-supplied observer, verdicts into a
//! [`report::Report`].

pub mod history;
pub mod linearizability;
pub mod lost_writes;

#[cfg(test)]
mod checker_tests;

pub use history::{Command, Operation, Outcome, Response};
pub use linearizability::{check_history, CheckLimits, CheckReport, OffendingHistory, Verdict};
pub use lost_writes::{lost_acknowledged_writes, LostWrite};

pub mod cluster;
pub mod faults;
pub mod http;
pub mod report;
pub mod rng;
pub mod runner;
pub mod workload;
