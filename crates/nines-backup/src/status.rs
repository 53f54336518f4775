//! The status of a backup repository as the cluster shows it (the dashboard,
//! `GET /v1/backups`): after each backup run, successful or not, its taker
//! writes one small record into the store under
//! `/nines/backups/HASH` (HASH: of the repository's path), holding the sets
//! of the repository with their parents (the chains) and the outcome of the
//! last run. It is a report, not a source of truth: the repository's
//! manifests stay authoritative, and a failure to write the record never
//! fails a backup (callers only warn). This module builds and reads the
//! record; it never touches the repository.

use std::path::Path;

use etcd_client::{Client, GetOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{BackupKind, Manifest};
use crate::BackupError;

/// Repository records: `BACKUPS HASH` = [`RepositoryStatus`] JSON.
pub const BACKUPS: &str = "/nines/backups/";
/// Most sets listed in a record (the newest ones), so it stays small.
pub const SETS_LISTED_MAX: usize = 256;
/// Most repositories read back.
pub const REPOSITORIES_READ_MAX: i64 = 1000;
/// Most bytes of an error message kept in a record.
pub const ERROR_BYTES_MAX: usize = 1024;

/// One set of a repository, as listed in its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The set's id.
    pub id: String,
    /// `full`, `differential` or `incremental`.
    pub kind: String,
    /// The set it builds on (`None` for a full).
    pub parent: Option<String>,
    /// When it was published, ms since the Unix epoch.
    pub finished_ms: u64,
    /// Stored bytes of its files.
    pub bytes: u64,
    /// The revision it is consistent at.
    pub revision: i64,
}

/// The outcome of the last backup run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it started, ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether the set was published.
    pub ok: bool,
    /// What went wrong, if it did.
    pub error: Option<String>,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// `full`, `differential` or `incremental`.
    pub kind: String,
}

/// What the store holds about one repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryStatus {
    /// The repository's path.
    pub repository: String,
    /// Its sets, oldest first (at most [`SETS_LISTED_MAX`], the newest).
    pub chain: Vec<ChainLink>,
    /// The last run.
    pub last_run: LastRun,
}

/// The long name of a kind, as records spell it.
pub fn kind_name(kind: BackupKind) -> &'static str {
    match kind {
        BackupKind::Full => "full",
        BackupKind::Diff => "differential",
        BackupKind::Incr => "incremental",
    }
}

/// The store key of the repository at `path` (as given; callers pass the
/// canonical path so that members naming it differently agree).
pub fn repository_key(path: &Path) -> String {
    let digest = Sha256::digest(path.to_string_lossy().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{BACKUPS}{hex}")
}

impl RepositoryStatus {
    /// The record of repository `path` holding `sets` after `last_run`.
    pub fn new(path: &Path, sets: &[Manifest], mut last_run: LastRun) -> RepositoryStatus {
        let mut sets: Vec<&Manifest> = sets.iter().collect();
        sets.sort_by(|a, b| {
            (a.finished_unix_secs, a.end_revision, &a.id).cmp(&(
                b.finished_unix_secs,
                b.end_revision,
                &b.id,
            ))
        });
        let skip = sets.len().saturating_sub(SETS_LISTED_MAX);
        let chain = sets[skip..]
            .iter()
            .map(|m| ChainLink {
                id: m.id.clone(),
                kind: kind_name(m.kind).to_owned(),
                parent: m.parent.clone(),
                finished_ms: m.finished_unix_secs.saturating_mul(1000),
                bytes: m.bytes(),
                revision: m.end_revision,
            })
            .collect();
        if let Some(error) = last_run.error.as_mut() {
            if error.len() > ERROR_BYTES_MAX {
                let mut cut = ERROR_BYTES_MAX;
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
            }
        }
        RepositoryStatus {
            repository: path.display().to_string(),
            chain,
            last_run,
        }
    }

    /// Writes the record into the store.
    pub async fn publish(&self, client: &mut Client) -> Result<(), BackupError> {
        let value = serde_json::to_vec(self).map_err(BackupError::Encode)?;
        client
            .put(repository_key(Path::new(&self.repository)), value, None)
            .await?;
        Ok(())
    }
}

/// Every repository record in the store, as JSON values (records that do
/// not parse as JSON are skipped).
pub async fn fetch_all(client: &mut Client) -> Result<Vec<serde_json::Value>, BackupError> {
    let response = client
        .get(
            BACKUPS,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_limit(REPOSITORIES_READ_MAX),
            ),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, kind: BackupKind, parent: Option<&str>, finished: u64) -> Manifest {
        Manifest {
            format: crate::manifest::MANIFEST_FORMAT,
            id: id.into(),
            kind,
            parent: parent.map(Into::into),
            cluster_id: 1,
            start_revision: 1,
            end_revision: finished as i64,
            key_count: 0,
            lease_count: 0,
            started_unix_secs: finished,
            finished_unix_secs: finished,
            nines_version: "test".into(),
            files: Vec::new(),
        }
    }

    #[test]
    fn a_record_lists_the_sets_oldest_first_with_long_kind_names() {
        let sets = [
            set("b", BackupKind::Incr, Some("a"), 20),
            set("a", BackupKind::Full, None, 10),
        ];
        let run = LastRun {
            at_ms: 19_000,
            ok: true,
            error: None,
            duration_ms: 5,
            kind: kind_name(BackupKind::Incr).into(),
        };
        let status = RepositoryStatus::new(Path::new("/r"), &sets, run);
        let ids: Vec<_> = status.chain.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(status.chain[0].kind, "full");
        assert_eq!(status.chain[1].kind, "incremental");
        assert_eq!(status.chain[1].parent.as_deref(), Some("a"));
        assert_eq!(status.chain[1].finished_ms, 20_000);
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["last_run"]["error"], serde_json::Value::Null);
        assert_eq!(json["chain"][0]["parent"], serde_json::Value::Null);
    }

    #[test]
    fn long_errors_are_cut_and_keys_depend_on_the_path_only() {
        let run = LastRun {
            at_ms: 0,
            ok: false,
            error: Some("é".repeat(ERROR_BYTES_MAX)),
            duration_ms: 0,
            kind: "full".into(),
        };
        let status = RepositoryStatus::new(Path::new("/r"), &[], run);
        let error = status.last_run.error.expect("error");
        assert!(error.len() <= ERROR_BYTES_MAX && !error.is_empty());
        assert_eq!(
            repository_key(Path::new("/a")),
            repository_key(Path::new("/a"))
        );
        assert_ne!(
            repository_key(Path::new("/a")),
            repository_key(Path::new("/b"))
        );
        assert!(repository_key(Path::new("/a")).starts_with(BACKUPS));
    }
}
