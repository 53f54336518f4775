//! The manifest of a backup set: what the set is (id, kind, parent, cluster,
//! revisions, counts) and the size and SHA-256 of each of its files. On disk
//! it is one line of JSON followed by a line `sha256:HEX` over that JSON's
//! bytes, so a flipped byte anywhere in the manifest is detected even where
//! the JSON would still parse.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BackupError, CorruptReason};

/// The three kinds of set, as pgBackRest names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every live key at one revision.
    Full,
    /// The events since the last full.
    Diff,
    /// The events since the last set of any kind.
    Incr,
}

impl BackupKind {
    /// The letter ending a set id of this kind (pgBackRest's F, D, I).
    pub fn letter(self) -> char {
        match self {
            BackupKind::Full => 'F',
            BackupKind::Diff => 'D',
            BackupKind::Incr => 'I',
        }
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        })
    }
}

impl std::str::FromStr for BackupKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<BackupKind, UnknownKind> {
        match s {
            "full" => Ok(BackupKind::Full),
            "diff" => Ok(BackupKind::Diff),
            "incr" => Ok(BackupKind::Incr),
            _ => Err(UnknownKind),
        }
    }
}

/// A kind name other than `full`, `diff` or `incr`.
#[derive(Debug, thiserror::Error)]
#[error("the kind must be full, diff or incr")]
pub struct UnknownKind;

/// One file of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name inside the set's directory.
    pub name: String,
    /// Size in bytes, as stored (compressed).
    pub bytes: u64,
    /// Size of the records before compression.
    pub raw_bytes: u64,
    /// Number of records in the file.
    pub records: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// The description of one backup set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version of the set; readers refuse versions they do not know.
    pub format: u32,
    /// The set's id, also its directory name.
    pub id: String,
    /// Full, differential or incremental.
    pub kind: BackupKind,
    /// The set this one builds on; `None` for a full.
    pub parent: Option<String>,
    /// Cluster id of the source cluster.
    pub cluster_id: u64,
    /// First revision whose changes the set holds (for a full, 1).
    pub start_revision: i64,
    /// The revision the set is consistent at.
    pub end_revision: i64,
    /// Live keys at `end_revision` (a full) or events held (diff, incr).
    pub key_count: u64,
    /// Leases alive when the set was taken.
    pub lease_count: u64,
    /// Unix time the backup started, in seconds.
    pub started_unix_secs: u64,
    /// Unix time the set was published, in seconds.
    pub finished_unix_secs: u64,
    /// Version of nines that wrote the set.
    pub nines_version: String,
    /// The set's data files.
    pub files: Vec<FileEntry>,
}

/// The format version this crate writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

impl Manifest {
    /// Total stored bytes of the set's data files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The manifest as stored: the JSON line and its checksum line.
    pub fn encode(&self) -> Result<Vec<u8>, BackupError> {
        let mut out = serde_json::to_vec(self).map_err(BackupError::Encode)?;
        let digest = hex(&Sha256::digest(&out));
        out.push(b'\n');
        out.extend_from_slice(b"sha256:");
        out.extend_from_slice(digest.as_bytes());
        out.push(b'\n');
        Ok(out)
    }

    /// Reads a stored manifest of set `id`, checking its checksum line first.
    pub fn decode(id: &str, bytes: &[u8]) -> Result<Manifest, BackupError> {
        let corrupt = |reason| BackupError::Corrupt {
            id: id.to_string(),
            file: format!("{id}/{}", crate::MANIFEST_FILE),
            reason,
        };
        let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let split = text
            .iter()
            .rposition(|b| *b == b'\n')
            .ok_or_else(|| corrupt(CorruptReason::ManifestChecksum))?;
        let (body, tail) = (&text[..split], &text[split + 1..]);
        let expected = format!("sha256:{}", hex(&Sha256::digest(body)));
        if tail != expected.as_bytes() || bytes.last() != Some(&b'\n') {
            return Err(corrupt(CorruptReason::ManifestChecksum));
        }
        let m: Manifest =
            serde_json::from_slice(body).map_err(|e| corrupt(CorruptReason::ManifestParse(e)))?;
        if m.id != id {
            return Err(corrupt(CorruptReason::WrongId(m.id)));
        }
        Ok(m)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: "20261126-000000F".into(),
            kind: BackupKind::Full,
            parent: None,
            cluster_id: 7,
            start_revision: 1,
            end_revision: 42,
            key_count: 3,
            lease_count: 1,
            started_unix_secs: 1,
            finished_unix_secs: 2,
            nines_version: "0.1.0".into(),
            files: vec![FileEntry {
                name: "data.zst".into(),
                bytes: 10,
                raw_bytes: 20,
                records: 3,
                sha256: "00".into(),
            }],
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        let bytes = m.encode().expect("encodes");
        assert_eq!(Manifest::decode(&m.id, &bytes).expect("decodes"), m);
    }

    #[test]
    fn every_flipped_byte_of_a_manifest_is_detected() {
        let m = sample();
        let bytes = m.encode().expect("encodes");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Manifest::decode(&m.id, &bad).is_err(),
                "flip at byte {i} went unseen"
            );
        }
    }

    #[test]
    fn a_manifest_under_another_id_is_refused() {
        let bytes = sample().encode().expect("encodes");
        assert!(Manifest::decode("other", &bytes).is_err());
    }
}
