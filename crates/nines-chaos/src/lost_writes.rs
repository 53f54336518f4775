//! The lost-acknowledged-write check. After the cluster is healed, every key
//! is read once more; its final value must be consistent with the writes the
//! store acknowledged. A write acknowledged after the final value's own write
//! had completed (so certainly ordered after it) and yet not visible was lost.
//! This check needs no search, so it still gives an answer when the
//! linearizability checker hits its bound.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::Operation;

/// An acknowledged write that the final reads show was lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    /// The key written.
    pub key: String,
    /// The acknowledged value that is gone.
    pub value: String,
    /// When the write was invoked, in nanoseconds from the run's origin.
    pub invoke_ns: u64,
    /// When it was acknowledged.
    pub complete_ns: u64,
    /// What the final read returned instead.
    pub final_value: Option<String>,
}

/// Compares the final value of each key with the acknowledged writes in
/// `history`. `final_values` maps every key read after healing to the value
/// read (`None`: the key did not exist). Keys missing from `final_values` are
/// not judged.
pub fn lost_acknowledged_writes(
    history: &[Operation],
    final_values: &BTreeMap<String, Option<String>>,
) -> Vec<LostWrite> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(&operation.key).or_default().push(operation);
    }
    let mut lost = Vec::new();
    for (key, operations) in by_key {
        let Some(final_value) = final_values.get(key) else {
            continue;
        };
        // When the final value came from a write, acknowledged writes invoked
        // after that write completed must have replaced it. An unknown write
        // has no completion, so nothing is certainly ordered after it. When
        // the final value was never written at all (or the key is absent),
        // every acknowledged write is gone.
        let writer_complete: Option<u64> = final_value.as_deref().and_then(|value| {
            operations
                .iter()
                .filter(|operation| operation.written_value() == Some(value))
                .map(|operation| match operation.outcome {
                    crate::history::Outcome::Unknown => u64::MAX,
                    _ => operation.complete_ns,
                })
                .max()
        });
        for operation in &operations {
            if !operation.is_acknowledged_write() {
                continue;
            }
            let is_lost = match writer_complete {
                Some(complete) => operation.invoke_ns > complete,
                None => true,
            };
            if is_lost {
                lost.push(LostWrite {
                    key: key.to_string(),
                    value: operation.written_value().unwrap_or_default().to_string(),
                    invoke_ns: operation.invoke_ns,
                    complete_ns: operation.complete_ns,
                    final_value: final_value.clone(),
                });
            }
        }
    }
    lost
}
