//! Taking a backup from a running cluster, as an etcd v3 client (nines or
//! etcd alike), without stopping writes:
//! - a **full** reads every key with a paginated Range pinned at one
//!   revision R (the first page's), so the set is consistent at R;
//! - a **diff** or **incr** reads, with one Watch starting just after the
//!   parent's revision, every event up to the cluster's revision R when the
//!   backup started.
//!   Every revision carries at least one event and revisions are never split
//!   across watch responses, so the set holds exactly revisions
//!   `parent+1..=R`, which is checked as it is read. If the cluster compacted
//!   that history, the backup says it must be a full and why.
//!
//! Leases are listed before and after the key read, with their granted TTL.
//! The set is staged and published atomically by the [`Repository`].

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions, WatchOptions};
use nines_store::KeyValue;

use crate::catalog::manifests;
use crate::error::BackupError;
use crate::format::{FileStats, Record, RecordWriter};
use crate::manifest::{BackupKind, FileEntry, Manifest, MANIFEST_FORMAT};
use crate::repo::{Repository, Staging};

/// How to take a backup.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Full, differential or incremental.
    pub kind: BackupKind,
    /// The whole backup must finish within this time.
    pub timeout: Duration,
}

/// Progress of a running backup, for a progress bar.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Keys (full) or events (diff, incr) read so far.
    pub records: u64,
    /// Revisions read so far (diff, incr) or 0.
    pub revisions_done: i64,
    /// Revisions to read (diff, incr) or 0.
    pub revisions_total: i64,
}

/// Takes a backup of the cluster `client` talks to into `repo` and returns
/// the published set's manifest. The caller holds the repository's lock.
pub async fn create_backup(
    client: &mut Client,
    repo: &dyn Repository,
    opts: &CreateOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Manifest, BackupError> {
    let deadline = Instant::now() + opts.timeout;
    let started_unix_secs = unix_now();
    // The revision and cluster the backup is taken at.
    let head = client
        .get(
            vec![0u8],
            Some(GetOptions::new().with_range(vec![0u8]).with_count_only()),
        )
        .await?;
    let header = head.header().ok_or(BackupError::Protocol {
        reason: "a response without a header",
    })?;
    let (cluster_id, revision) = (header.cluster_id(), header.revision());
    let existing = manifests(repo)?;
    if let Some(other) = existing.iter().find(|m| m.cluster_id != cluster_id) {
        return Err(BackupError::ClusterMismatch {
            repo_cluster: other.cluster_id,
            source_cluster: cluster_id,
        });
    }
    let parent = match opts.kind {
        BackupKind::Full => None,
        BackupKind::Diff => existing.iter().rev().find(|m| m.kind == BackupKind::Full),
        BackupKind::Incr => existing.last(),
    };
    if opts.kind != BackupKind::Full && parent.is_none() {
        return Err(BackupError::NoBase { kind: opts.kind });
    }
    if let Some(p) = parent {
        if revision < p.end_revision {
            return Err(BackupError::RevisionBehind {
                parent: p.id.clone(),
                parent_end: p.end_revision,
                current: revision,
            });
        }
    }
    let id = new_id(repo, opts.kind, parent, &existing, started_unix_secs)?;
    let leases_before = read_leases(client).await?;
    let mut staging = repo.stage(&id)?;
    let data = staging.create(crate::DATA_FILE)?;
    let mut writer = RecordWriter::new(data)
        .map_err(|e| BackupError::io(repo.locate(&id, crate::DATA_FILE), e))?;
    let data_file = repo.locate(&id, crate::DATA_FILE);
    let io_err = |e| BackupError::io(&data_file, e);
    let (start_revision, end_revision) = match parent {
        None => {
            let end = read_full(client, &data_file, &mut writer, deadline, opts, progress).await?;
            (1, end)
        }
        Some(p) => {
            read_events(
                client,
                &data_file,
                &mut writer,
                (p.end_revision, revision),
                deadline,
                opts,
                progress,
            )
            .await?;
            (p.end_revision + 1, revision)
        }
    };
    let key_count = writer.records();
    let data_stats = finish(writer).map_err(io_err)?;
    let mut leases = leases_before;
    leases.extend(read_leases(client).await?);
    let lease_stats = write_leases(&mut *staging, &leases)
        .map_err(|e| BackupError::io(repo.locate(&id, crate::LEASES_FILE), e))?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        kind: opts.kind,
        parent: parent.map(|p| p.id.clone()),
        cluster_id,
        start_revision,
        end_revision,
        key_count,
        lease_count: leases.len() as u64,
        started_unix_secs,
        finished_unix_secs: unix_now(),
        nines_version: env!("CARGO_PKG_VERSION").to_string(),
        files: vec![
            entry(crate::DATA_FILE, data_stats),
            entry(crate::LEASES_FILE, lease_stats),
        ],
    };
    let mut out = staging.create(crate::MANIFEST_FILE)?;
    out.write_all(&manifest.encode()?)
        .and_then(|_| out.flush())
        .map_err(|e| BackupError::io(repo.locate(&id, crate::MANIFEST_FILE), e))?;
    drop(out);
    staging.publish()?;
    Ok(manifest)
}

fn entry(name: &str, s: FileStats) -> FileEntry {
    FileEntry {
        name: name.to_string(),
        bytes: s.bytes,
        raw_bytes: s.raw_bytes,
        records: s.records,
        sha256: s.sha256,
    }
}

fn finish(writer: RecordWriter<Box<dyn Write + Send>>) -> std::io::Result<FileStats> {
    let (mut inner, stats) = writer.finish()?;
    inner.flush()?;
    Ok(stats)
}

/// Writes every key at one revision; returns that revision.
async fn read_full(
    client: &mut Client,
    file: &str,
    writer: &mut RecordWriter<Box<dyn Write + Send>>,
    deadline: Instant,
    opts: &CreateOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<i64, BackupError> {
    // Pages of many keys need more than the client's default 4 MiB per message.
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(crate::CLIENT_DECODE_BYTES_MAX);
    let mut from = vec![0u8];
    let mut pinned = 0i64;
    let mut records = 0u64;
    let mut page_keys = crate::RANGE_PAGE_KEYS_FIRST;
    // Each page moves `from` past at least one key, so the loop ends; the
    // deadline bounds it in time as well.
    loop {
        check_deadline(deadline, opts)?;
        let result = kv
            .get(
                from.clone(),
                Some(
                    GetOptions::new()
                        .with_range(vec![0u8])
                        .with_limit(page_keys)
                        .with_revision(pinned),
                ),
            )
            .await;
        let mut page = match result {
            Ok(page) => page,
            // A page over the message limit (large values): halve it and
            // retry; the page size only shrinks, so this ends.
            Err(etcd_client::Error::GRpcStatus(s))
                if page_keys > 1
                    && matches!(
                        s.code(),
                        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                    ) =>
            {
                page_keys /= 2;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if pinned == 0 {
            pinned = page
                .header()
                .map(|h| h.revision())
                .ok_or(BackupError::Protocol {
                    reason: "a response without a header",
                })?;
        }
        let more = page.more();
        let kvs = page.take_kvs();
        let Some(last) = kvs.last() else { break };
        from = last.key().to_vec();
        from.push(0);
        page_keys = next_page_keys(&kvs);
        for kv in kvs {
            let record = Record::Key(KeyValue {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                version: kv.version(),
                lease: kv.lease(),
            });
            writer
                .write(&record)
                .map_err(|e| BackupError::io(file, e))?;
            records += 1;
        }
        progress(Progress {
            records,
            ..Progress::default()
        });
        if !more {
            break;
        }
    }
    Ok(pinned)
}

/// The size of the next Range page: about [`crate::RANGE_PAGE_BYTES`] at
/// the last page's bytes per key. Few large pages matter because a Range
/// counts every key to the end of the range on each page.
fn next_page_keys(kvs: &[etcd_client::KeyValue]) -> i64 {
    let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
    let per_key = (bytes / kvs.len().max(1)).max(1);
    ((crate::RANGE_PAGE_BYTES / per_key) as i64).clamp(1, crate::RANGE_PAGE_KEYS_MAX)
}

/// Writes every event of revisions `after+1..=until`.
async fn read_events(
    client: &mut Client,
    file: &str,
    writer: &mut RecordWriter<Box<dyn Write + Send>>,
    (after, until): (i64, i64),
    deadline: Instant,
    opts: &CreateOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), BackupError> {
    if until == after {
        return Ok(());
    }
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(crate::CLIENT_DECODE_BYTES_MAX)
        .watch(
            vec![0u8],
            Some(
                WatchOptions::new()
                    .with_range(vec![0u8])
                    .with_start_revision(after + 1),
            ),
        )
        .await?;
    let mut last_rev = after;
    let mut records = 0u64;
    while last_rev < until {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, stream.message()).await {
            Err(_) => return Err(timeout(opts)),
            Ok(m) => m?,
        };
        let Some(resp) = msg else {
            return Err(BackupError::Protocol {
                reason: "the watch stream ended before the backup's revision",
            });
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Err(BackupError::MustBeFull {
                    needed: after + 1,
                    compacted: resp.compact_revision(),
                });
            }
            return Err(BackupError::Protocol {
                reason: "the cluster cancelled the watch",
            });
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else {
                return Err(BackupError::Protocol {
                    reason: "an event without a key",
                });
            };
            let rev = kv.mod_revision();
            if rev > until {
                break;
            }
            if rev != last_rev && rev != last_rev + 1 {
                return Err(BackupError::Protocol {
                    reason: "the watch skipped revisions",
                });
            }
            last_rev = rev;
            let delete = event.event_type() == etcd_client::EventType::Delete;
            let record = Record::Event {
                delete,
                kv: KeyValue {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: rev,
                    version: kv.version(),
                    lease: kv.lease(),
                },
            };
            writer
                .write(&record)
                .map_err(|e| BackupError::io(file, e))?;
            records += 1;
        }
        progress(Progress {
            records,
            revisions_done: last_rev - after,
            revisions_total: until - after,
        });
    }
    // Dropping the stream ends the watch on the server.
    Ok(())
}

/// Every lease with its granted TTL, by id.
async fn read_leases(client: &mut Client) -> Result<BTreeMap<i64, i64>, BackupError> {
    let list = client.leases().await?;
    let ids: Vec<i64> = list.leases().iter().map(|l| l.id()).collect();
    let mut out = BTreeMap::new();
    for id in ids {
        match client.lease_time_to_live(id, None).await {
            // A lease that expired since the listing has ttl -1: skip it.
            Ok(ttl) if ttl.ttl() >= 0 => {
                out.insert(id, ttl.granted_ttl());
            }
            Ok(_) => {}
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn write_leases(
    staging: &mut dyn Staging,
    leases: &BTreeMap<i64, i64>,
) -> Result<FileStats, std::io::Error> {
    let out = staging
        .create(crate::LEASES_FILE)
        .map_err(std::io::Error::other)?;
    let mut w = RecordWriter::new(out)?;
    for (&id, &ttl_secs) in leases {
        w.write(&Record::Lease { id, ttl_secs })?;
    }
    finish(w)
}

fn check_deadline(deadline: Instant, opts: &CreateOptions) -> Result<(), BackupError> {
    if Instant::now() >= deadline {
        return Err(timeout(opts));
    }
    Ok(())
}

fn timeout(opts: &CreateOptions) -> BackupError {
    BackupError::Timeout {
        secs: opts.timeout.as_secs(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// pgBackRest's ids: `YYYYMMDD-HHMMSSF` for a full, and for a diff or incr
/// the full's id, `_`, its own stamp and `D` or `I`; a suffix `.N` keeps ids
/// unique when two sets start in the same second.
fn new_id(
    repo: &dyn Repository,
    kind: BackupKind,
    parent: Option<&Manifest>,
    existing: &[Manifest],
    now_unix_secs: u64,
) -> Result<String, BackupError> {
    let stamp = format!("{}{}", utc_stamp(now_unix_secs), kind.letter());
    let base = match parent {
        None => stamp,
        Some(p) => {
            let root = match p.kind {
                BackupKind::Full => p.id.clone(),
                _ => p.id.split('_').next().unwrap_or(&p.id).to_string(),
            };
            format!("{root}_{stamp}")
        }
    };
    let taken = repo.list_sets()?;
    let free = |id: &String| !taken.contains(id) && !existing.iter().any(|m| &m.id == id);
    if free(&base) {
        return Ok(base);
    }
    // Bounded: at most as many collisions as there are sets.
    for n in 1..=taken.len() + 1 {
        let id = format!("{base}.{n}");
        if free(&id) {
            return Ok(id);
        }
    }
    unreachable!("one of taken.len() + 1 suffixes is free")
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_795_651_199), "20261125-235959");
    }
}
