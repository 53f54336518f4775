//! `nines bench kv --verify FILE`: reads back, with linearizable range reads,
//! every write that a `--check-acked FILE` run was told had succeeded, and
//! fails unless each is present with its value. It only reads.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, ensure, Context};
use etcd_client::GetOptions;
use serde::Serialize;

use super::{connect, KvBenchArgs, OutputFormat};

/// Keys fetched per page.
const VERIFY_PAGE_KEYS: i64 = 5_000;
/// Keys named in the report when some are missing.
const EXAMPLES_MAX: usize = 10;

/// The expected value of every acknowledged key.
type Expected = HashMap<Vec<u8>, Vec<u8>>;

/// The outcome of `--verify`.
#[derive(Serialize, Debug)]
pub(super) struct VerifyReport {
    /// Writes recorded as acknowledged.
    pub(super) acked: u64,
    /// Of those, present with their value.
    pub(super) present: u64,
    /// Of those, absent.
    pub(super) missing: u64,
    /// Of those, present with another value.
    pub(super) wrong_value: u64,
    /// Up to ten keys that were acknowledged but are missing or hold another value.
    pub(super) examples: Vec<String>,
}

/// Reads a --check-acked file: its fresh-key prefix and the expected value of each key.
pub(super) fn read_acked(path: &Path) -> anyhow::Result<(String, Expected)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = BufReader::new(file).lines();
    let header = lines
        .next()
        .transpose()
        .with_context(|| format!("reading {}", path.display()))?
        .unwrap_or_default();
    let Some((_, prefix)) = header.split_once(": prefix ") else {
        bail!(
            "{} is not a --check-acked file (bad first line)",
            path.display()
        );
    };
    let mut expected = HashMap::new();
    for (number, line) in lines.enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let Some((key, value)) = line.split_once(' ') else {
            bail!(
                "{} line {}: expected `KEY VALUE`",
                path.display(),
                number + 2
            );
        };
        expected.insert(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    }
    Ok((prefix.to_string(), expected))
}

/// Checks with linearizable reads that every acknowledged write is present with its value.
pub(super) async fn verify_acked(
    args: &KvBenchArgs,
    endpoints: &[String],
    path: &Path,
) -> anyhow::Result<VerifyReport> {
    let (prefix, expected) = read_acked(path)?;
    let mut kv = connect(args, endpoints).await?.remove(0);
    let range_end = {
        // The prefix's range end: last byte plus one (the keys are ASCII, so no carry).
        let mut end = prefix.clone().into_bytes();
        let last = end.pop().context("empty prefix")?;
        end.push(last.checked_add(1).context("prefix ends in byte 0xff")?);
        end
    };
    let mut from = prefix.clone().into_bytes();
    let (mut present, mut wrong_value) = (0u64, 0u64);
    let mut examples = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let options = GetOptions::new()
            .with_range(range_end.clone())
            .with_limit(VERIFY_PAGE_KEYS);
        let response = kv
            .get(from.clone(), Some(options))
            .await
            .context("reading the acknowledged keys back")?;
        for kv in response.kvs() {
            let Some(value) = expected.get(kv.key()) else {
                continue;
            };
            seen.insert(kv.key().to_vec());
            if value.as_slice() == kv.value() {
                present += 1;
            } else {
                wrong_value += 1;
                if examples.len() < EXAMPLES_MAX {
                    examples.push(format!(
                        "{} (wrong value)",
                        String::from_utf8_lossy(kv.key())
                    ));
                }
            }
        }
        match response.kvs().last() {
            // A full page means more may follow even if `more` were not set.
            Some(last) if response.more() || response.kvs().len() as i64 >= VERIFY_PAGE_KEYS => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    for key in expected.keys().filter(|key| !seen.contains(*key)) {
        if examples.len() >= EXAMPLES_MAX {
            break;
        }
        examples.push(format!("{} (missing)", String::from_utf8_lossy(key)));
    }
    let acked = expected.len() as u64;
    Ok(VerifyReport {
        acked,
        present,
        missing: acked - present - wrong_value,
        wrong_value,
        examples,
    })
}

/// Prints `report`; fails if any acknowledged write is missing or holds another value.
pub(super) fn print_verify_report(
    report: &VerifyReport,
    format: OutputFormat,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string(report).context("writing the report")?
        );
    } else {
        println!(
            "acknowledged {}  present {}  missing {}  wrong value {}",
            report.acked, report.present, report.missing, report.wrong_value
        );
        for example in &report.examples {
            println!("  {example}");
        }
    }
    let lost = report.missing + report.wrong_value;
    ensure!(
        lost == 0,
        "{lost} acknowledged writes are not present with their value"
    );
    Ok(())
}
