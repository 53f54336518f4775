//! The repository as a catalog of sets: reading manifests, following a set's
//! chain back to its full, checking every file and link ([`verify`]), and
//! retention ([`prune`]). Reads only through [`Repository`]; the only write
//! is the removal of whole sets by `prune`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use crate::error::{BackupError, CorruptReason, LinkFault};
use crate::format::{sha256_of, Record, RecordReader};
use crate::manifest::{BackupKind, Manifest, MANIFEST_FORMAT};
use crate::repo::Repository;

/// Reads and checks the manifest of set `id`.
pub fn load_manifest(repo: &dyn Repository, id: &str) -> Result<Manifest, BackupError> {
    let Some(mut r) = repo.open(id, crate::MANIFEST_FILE)? else {
        return if repo.list_sets()?.iter().any(|s| s == id) {
            Err(BackupError::Corrupt {
                id: id.to_string(),
                file: repo.locate(id, crate::MANIFEST_FILE),
                reason: CorruptReason::Missing,
            })
        } else {
            Err(BackupError::NotFound { id: id.to_string() })
        };
    };
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|e| BackupError::io(repo.locate(id, crate::MANIFEST_FILE), e))?;
    let m = Manifest::decode(id, &bytes).map_err(|e| match e {
        BackupError::Corrupt { id, reason, .. } => BackupError::Corrupt {
            file: repo.locate(&id, crate::MANIFEST_FILE),
            id,
            reason,
        },
        other => other,
    })?;
    if m.format != MANIFEST_FORMAT {
        return Err(BackupError::Corrupt {
            id: id.to_string(),
            file: repo.locate(id, crate::MANIFEST_FILE),
            reason: CorruptReason::Record {
                index: 0,
                what: "unknown manifest format version",
            },
        });
    }
    Ok(m)
}

/// A set id with its manifest, or the error reading it.
pub type Listed = (String, Result<Manifest, BackupError>);

/// Every published set with its manifest, or the error reading it, in id order.
pub fn list(repo: &dyn Repository) -> Result<Vec<Listed>, BackupError> {
    Ok(repo
        .list_sets()?
        .into_iter()
        .map(|id| {
            let m = load_manifest(repo, &id);
            (id, m)
        })
        .collect())
}

/// The readable manifests, sorted by revision then id.
pub fn manifests(repo: &dyn Repository) -> Result<Vec<Manifest>, BackupError> {
    let mut out: Vec<Manifest> = list(repo)?
        .into_iter()
        .filter_map(|(_, m)| m.ok())
        .collect();
    out.sort_by(|a, b| (a.end_revision, &a.id).cmp(&(b.end_revision, &b.id)));
    Ok(out)
}

/// The chain of set `id`: its full first, `id` last, every link checked.
pub fn resolve_chain(repo: &dyn Repository, id: &str) -> Result<Vec<Manifest>, BackupError> {
    let mut chain = vec![load_manifest(repo, id)?];
    // A chain is at most as long as the repository; a longer walk loops.
    let bound = repo.list_sets()?.len() + 1;
    for _ in 0..bound {
        let child = chain.last().expect("chain is not empty");
        let Some(parent_id) = child.parent.clone() else {
            if child.kind != BackupKind::Full {
                return Err(BackupError::BrokenLink {
                    id: child.id.clone(),
                    parent: "(none)".into(),
                    reason: LinkFault::Kind {
                        parent: BackupKind::Full,
                        child: child.kind,
                    },
                });
            }
            chain.reverse();
            return Ok(chain);
        };
        let parent = match load_manifest(repo, &parent_id) {
            Err(BackupError::NotFound { .. }) => {
                return Err(BackupError::MissingParent {
                    id: child.id.clone(),
                    parent: parent_id,
                })
            }
            other => other?,
        };
        check_link(&parent, child)?;
        chain.push(parent);
    }
    Err(BackupError::BrokenLink {
        id: id.to_string(),
        parent: chain.last().map(|m| m.id.clone()).unwrap_or_default(),
        reason: LinkFault::Cycle,
    })
}

/// Checks that `child` builds on `parent`.
pub fn check_link(parent: &Manifest, child: &Manifest) -> Result<(), BackupError> {
    let broken = |reason| BackupError::BrokenLink {
        id: child.id.clone(),
        parent: parent.id.clone(),
        reason,
    };
    let kind_ok = match child.kind {
        BackupKind::Full => false,
        BackupKind::Diff => parent.kind == BackupKind::Full,
        BackupKind::Incr => true,
    };
    if !kind_ok {
        return Err(broken(LinkFault::Kind {
            parent: parent.kind,
            child: child.kind,
        }));
    }
    if parent.cluster_id != child.cluster_id {
        return Err(broken(LinkFault::Cluster {
            parent: parent.cluster_id,
            child: child.cluster_id,
        }));
    }
    if child.start_revision != parent.end_revision + 1 {
        return Err(broken(LinkFault::Revision {
            start: child.start_revision,
            parent_end: parent.end_revision,
        }));
    }
    Ok(())
}

/// Checks every file of set `m` against its manifest (size, SHA-256), then
/// decodes every record (frame checksums, record kinds, revisions, counts).
pub fn verify_set(repo: &dyn Repository, m: &Manifest) -> Result<(), BackupError> {
    check_files(repo, m)?;
    for f in &m.files {
        read_checked(repo, m, &f.name, |_| Ok(()))?;
    }
    Ok(())
}

/// Checks that set `m` has its data files and that each matches its
/// manifest entry in size and SHA-256 (every byte, without decoding).
pub fn check_files(repo: &dyn Repository, m: &Manifest) -> Result<(), BackupError> {
    for name in [crate::DATA_FILE, crate::LEASES_FILE] {
        if !m.files.iter().any(|f| f.name == name) {
            return Err(BackupError::Corrupt {
                id: m.id.clone(),
                file: repo.locate(&m.id, name),
                reason: CorruptReason::Missing,
            });
        }
    }
    for f in &m.files {
        let corrupt = |reason| BackupError::Corrupt {
            id: m.id.clone(),
            file: repo.locate(&m.id, &f.name),
            reason,
        };
        let r = repo
            .open(&m.id, &f.name)?
            .ok_or_else(|| corrupt(CorruptReason::Missing))?;
        let (sha256, bytes) =
            sha256_of(r).map_err(|e| BackupError::io(repo.locate(&m.id, &f.name), e))?;
        if bytes != f.bytes {
            return Err(corrupt(CorruptReason::Size {
                expected: f.bytes,
                actual: bytes,
            }));
        }
        if sha256 != f.sha256 {
            return Err(corrupt(CorruptReason::Checksum {
                expected: f.sha256.clone(),
                actual: sha256,
            }));
        }
    }
    Ok(())
}

/// Calls `f` with each record of file `name` of set `m`, checking that each
/// belongs in that file and that the count matches the manifest.
pub fn read_checked(
    repo: &dyn Repository,
    m: &Manifest,
    name: &str,
    mut f: impl FnMut(Record) -> Result<(), &'static str>,
) -> Result<(), BackupError> {
    let expected = m
        .files
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.records)
        .ok_or_else(|| BackupError::Corrupt {
            id: m.id.clone(),
            file: repo.locate(&m.id, name),
            reason: CorruptReason::Missing,
        })?;
    let mut count = 0u64;
    for_each_record(repo, m, name, |record| {
        count += 1;
        check_record(m, name, &record)?;
        f(record)
    })?;
    if count != expected {
        return Err(BackupError::Corrupt {
            id: m.id.clone(),
            file: repo.locate(&m.id, name),
            reason: CorruptReason::Count {
                expected,
                actual: count,
            },
        });
    }
    Ok(())
}

/// Whether `record` may appear in file `name` of set `m`.
fn check_record(m: &Manifest, name: &str, record: &Record) -> Result<(), &'static str> {
    match (name, record) {
        (crate::LEASES_FILE, Record::Lease { .. }) => Ok(()),
        (crate::DATA_FILE, Record::Key(kv)) if m.kind == BackupKind::Full => {
            if kv.mod_revision > m.end_revision {
                Err("key written after the set's revision")
            } else {
                Ok(())
            }
        }
        (crate::DATA_FILE, Record::Event { kv, .. }) if m.kind != BackupKind::Full => {
            if kv.mod_revision < m.start_revision || kv.mod_revision > m.end_revision {
                Err("event outside the set's revisions")
            } else {
                Ok(())
            }
        }
        _ => Err("record of the wrong kind for this file"),
    }
}

/// Calls `f` with each record of file `name` of set `m`, in order. An error
/// from `f` is reported as corruption of that record.
pub fn for_each_record(
    repo: &dyn Repository,
    m: &Manifest,
    name: &str,
    mut f: impl FnMut(Record) -> Result<(), &'static str>,
) -> Result<(), BackupError> {
    let corrupt = |reason| BackupError::Corrupt {
        id: m.id.clone(),
        file: repo.locate(&m.id, name),
        reason,
    };
    let r = repo
        .open(&m.id, name)?
        .ok_or_else(|| corrupt(CorruptReason::Missing))?;
    let mut reader = RecordReader::new(r).map_err(corrupt)?;
    let mut index = 0u64;
    while let Some(record) = reader.next_record().map_err(corrupt)? {
        f(record).map_err(|what| corrupt(CorruptReason::Record { index, what }))?;
        index += 1;
    }
    Ok(())
}

/// What [`verify`] looked at and what it found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Sets whose files and links all checked out.
    pub good: Vec<String>,
    /// Every fault found (a set appears once, with its first fault).
    pub faults: Vec<BackupError>,
}

/// Verifies set `id` and its chain, or, with `None`, every set in the
/// repository: manifests, every file's size and checksum, every record,
/// every chain link.
pub fn verify(repo: &dyn Repository, id: Option<&str>) -> Result<VerifyReport, BackupError> {
    let ids: Vec<String> = match id {
        Some(id) => {
            // The set's own manifest names its chain; an unreadable one is a fault of the set.
            match resolve_chain(repo, id) {
                Ok(chain) => chain.into_iter().map(|m| m.id).collect(),
                Err(e @ BackupError::NotFound { .. }) => return Err(e),
                Err(e) => {
                    return Ok(VerifyReport {
                        good: Vec::new(),
                        faults: vec![e],
                    })
                }
            }
        }
        None => repo.list_sets()?,
    };
    let mut report = VerifyReport::default();
    for id in ids {
        let result = load_manifest(repo, &id).and_then(|m| {
            verify_set(repo, &m)?;
            resolve_chain(repo, &id).map(|_| ())
        });
        match result {
            Ok(()) => report.good.push(id),
            Err(e) => report.faults.push(e),
        }
    }
    Ok(report)
}

/// Retention rules for [`prune`].
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Keep the newest this many full chains (a full and every set built on it).
    pub keep_full: Option<usize>,
    /// Remove chains whose newest set finished more than this many seconds
    /// ago (the newest full chain is always kept).
    pub older_than_secs: Option<u64>,
    /// The current Unix time, in seconds.
    pub now_unix_secs: u64,
}

/// What [`prune`] removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Removed sets, in removal order (newest first).
    pub removed: Vec<String>,
    /// Sets kept.
    pub kept: Vec<String>,
}

/// Removes whole full chains by the rules in `opts`, dependants before the
/// sets they build on, so an interrupted prune never leaves a set without
/// its parent. Sets whose chain does not resolve are kept (verify reports
/// them).
pub fn prune(repo: &dyn Repository, opts: &PruneOptions) -> Result<PruneReport, BackupError> {
    let all = manifests(repo)?;
    // Root full of every set that resolves.
    let mut root_of: BTreeMap<String, String> = BTreeMap::new();
    for m in &all {
        if let Ok(chain) = resolve_chain(repo, &m.id) {
            root_of.insert(m.id.clone(), chain[0].id.clone());
        }
    }
    let mut fulls: Vec<&Manifest> = all.iter().filter(|m| m.kind == BackupKind::Full).collect();
    fulls.sort_by(|a, b| (b.end_revision, &b.id).cmp(&(a.end_revision, &a.id)));
    let mut doomed_roots: BTreeSet<String> = BTreeSet::new();
    for (rank, full) in fulls.iter().enumerate() {
        let newest_finish = all
            .iter()
            .filter(|m| root_of.get(&m.id) == Some(&full.id))
            .map(|m| m.finished_unix_secs)
            .max()
            .unwrap_or(full.finished_unix_secs);
        let over_count = opts.keep_full.is_some_and(|n| rank >= n);
        let too_old = rank > 0
            && opts
                .older_than_secs
                .is_some_and(|age| opts.now_unix_secs.saturating_sub(newest_finish) > age);
        if over_count || too_old {
            doomed_roots.insert(full.id.clone());
        }
    }
    let mut report = PruneReport::default();
    for m in all.iter().rev() {
        let doomed = root_of
            .get(&m.id)
            .is_some_and(|root| doomed_roots.contains(root));
        if doomed {
            repo.remove(&m.id)?;
            report.removed.push(m.id.clone());
        } else {
            report.kept.push(m.id.clone());
        }
    }
    report.kept.reverse();
    Ok(report)
}
