//! The record of a chaos run: one [`Operation`] per client request, with the
//! moments it was invoked and completed (nanoseconds from one monotonic
//! origin) and what came back. This module only describes histories; the
//! checks that judge them live in `linearizability` and `lost_writes`.

use serde::{Deserialize, Serialize};

/// What a client asked the store to do on one key (a register).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Write `value` unconditionally.
    Put {
        /// The value written; unique within a run.
        value: String,
    },
    /// A linearizable read of the key.
    Get,
    /// Compare-and-swap: write `new` only if the current value is `expected`.
    Cas {
        /// The value the key must hold for the swap to happen.
        expected: String,
        /// The value written when the comparison holds; unique within a run.
        new: String,
    },
}

/// What the store answered to a completed request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The put was acknowledged.
    Put,
    /// The value read, or `None` when the key did not exist.
    Get(Option<String>),
    /// Whether the comparison held (and so whether the swap was applied).
    Cas(bool),
}

/// How a request ended, as far as the client can know.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The store answered; the response says what happened.
    Ok(Response),
    /// The request certainly had no effect (refused before it was sent, or an
    /// error that guarantees nothing was applied).
    Failed,
    /// The client cannot know: a timeout or a connection lost after sending.
    /// The request may take effect at any moment after its invocation, or never.
    Unknown,
}

/// One client request on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// The client (process) that issued the request.
    pub client: u32,
    /// The key (register) the request touched.
    pub key: String,
    /// What was asked.
    pub command: Command,
    /// When the request was sent, in nanoseconds from the run's origin.
    pub invoke_ns: u64,
    /// When the answer (or the give-up) came, in nanoseconds from the origin.
    /// For an [`Outcome::Unknown`] operation the checker ignores it: the effect
    /// may land at any later time.
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl Operation {
    /// The value this operation may have written, if it is a write that was not
    /// certainly refused (an acknowledged or unknown put, a successful or
    /// unknown compare-and-swap).
    pub fn written_value(&self) -> Option<&str> {
        match (&self.command, &self.outcome) {
            (_, Outcome::Failed) => None,
            (Command::Put { value }, _) => Some(value),
            (Command::Cas { new, .. }, Outcome::Ok(Response::Cas(true)) | Outcome::Unknown) => {
                Some(new)
            }
            _ => None,
        }
    }

    /// True when the store acknowledged that this operation wrote its value.
    pub fn is_acknowledged_write(&self) -> bool {
        matches!(
            (&self.command, &self.outcome),
            (Command::Put { .. }, Outcome::Ok(Response::Put))
                | (Command::Cas { .. }, Outcome::Ok(Response::Cas(true)))
        )
    }

    /// True for requests that reached consensus and were answered: an
    /// acknowledged put or an answered compare-and-swap (either result). These
    /// are the "successful writes" availability is measured on.
    pub fn is_answered_write(&self) -> bool {
        matches!(
            (&self.command, &self.outcome),
            (Command::Put { .. }, Outcome::Ok(_)) | (Command::Cas { .. }, Outcome::Ok(_))
        )
    }

    /// One line for reports, e.g. `c3 put(k1, "3-17") ok [1.204s, 1.210s]`.
    pub fn describe(&self) -> String {
        let command = match &self.command {
            Command::Put { value } => format!("put({}, {value:?})", self.key),
            Command::Get => format!("get({})", self.key),
            Command::Cas { expected, new } => {
                format!("cas({}, {expected:?} -> {new:?})", self.key)
            }
        };
        let outcome = match &self.outcome {
            Outcome::Ok(Response::Put) => "ok".to_string(),
            Outcome::Ok(Response::Get(Some(value))) => format!("-> {value:?}"),
            Outcome::Ok(Response::Get(None)) => "-> none".to_string(),
            Outcome::Ok(Response::Cas(true)) => "-> swapped".to_string(),
            Outcome::Ok(Response::Cas(false)) => "-> compare failed".to_string(),
            Outcome::Failed => "failed".to_string(),
            Outcome::Unknown => "unknown".to_string(),
        };
        let complete = match self.outcome {
            Outcome::Unknown => "?".to_string(),
            _ => format_seconds(self.complete_ns),
        };
        format!(
            "c{} {command} {outcome} [{}, {complete}]",
            self.client,
            format_seconds(self.invoke_ns)
        )
    }
}

fn format_seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}
