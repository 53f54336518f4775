//! Where sets live. [`Repository`] is the small interface the rest of the
//! crate uses (list, read, stage and publish, remove), so object storage can
//! follow the local directory of [`LocalRepository`]. Publishing is atomic: a
//! set is written under `staging/`, every file and the directory fsynced, then
//! renamed into `backups/` and the parent directory fsynced; a crash at any
//! point leaves either no set or the whole set.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::BackupError;

/// A store of backup sets.
pub trait Repository {
    /// Ids of the published sets, sorted.
    fn list_sets(&self) -> Result<Vec<String>, BackupError>;
    /// Opens file `name` of set `id`; `Ok(None)` when it is absent.
    fn open(&self, id: &str, name: &str) -> Result<Option<Box<dyn Read + Send>>, BackupError>;
    /// Starts writing set `id`; nothing is visible until [`Staging::publish`].
    fn stage(&self, id: &str) -> Result<Box<dyn Staging>, BackupError>;
    /// Removes a published set.
    fn remove(&self, id: &str) -> Result<(), BackupError>;
    /// Where file `name` of set `id` is, for messages.
    fn locate(&self, id: &str, name: &str) -> String;
}

/// A set being written.
pub trait Staging: Send {
    /// Creates file `name` in the set.
    fn create(&mut self, name: &str) -> Result<Box<dyn Write + Send>, BackupError>;
    /// Makes the set durable and visible under its id, all at once.
    fn publish(self: Box<Self>) -> Result<(), BackupError>;
}

/// A repository in a local directory:
/// `DIR/backups/ID/*` for sets, `DIR/staging/` for sets being written,
/// `DIR/lock` held by commands that change the repository.
#[derive(Clone, Debug)]
pub struct LocalRepository {
    root: PathBuf,
}

/// Holds the repository's lock; released on drop.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

impl LocalRepository {
    /// Opens the repository at `root`, creating it when `create` is set and
    /// it does not exist. A path that is not a directory is refused.
    pub fn open(root: &Path, create: bool) -> Result<LocalRepository, BackupError> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BackupError::RepoNotDirectory {
                    path: root.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir_all(root).map_err(|e| BackupError::io(root, e))?;
            }
            Err(e) => return Err(BackupError::io(root, e)),
        }
        let repo = LocalRepository {
            root: root.to_path_buf(),
        };
        if create {
            for d in [repo.backups_dir(), repo.staging_dir()] {
                fs::create_dir_all(&d).map_err(|e| BackupError::io(&d, e))?;
            }
        }
        Ok(repo)
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn backups_dir(&self) -> PathBuf {
        self.root.join("backups")
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Takes the repository lock (fails at once if another command holds
    /// it), then removes what a crashed command left in `staging/`: with the
    /// lock held no other command can be writing there.
    pub fn lock(&self) -> Result<RepoLock, BackupError> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BackupError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(BackupError::RepoLocked { path }),
            Err(fs::TryLockError::Error(e)) => return Err(BackupError::io(&path, e)),
        }
        let staging = self.staging_dir();
        if let Ok(entries) = fs::read_dir(&staging) {
            for entry in entries.flatten() {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(|e| BackupError::io(&p, e))?;
            }
        }
        Ok(RepoLock { _file: file })
    }
}

impl Repository for LocalRepository {
    fn list_sets(&self) -> Result<Vec<String>, BackupError> {
        let dir = self.backups_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackupError::io(&dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| BackupError::io(&dir, e))?;
            if entry.path().is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn open(&self, id: &str, name: &str) -> Result<Option<Box<dyn Read + Send>>, BackupError> {
        if !is_plain_name(id) || !is_plain_name(name) {
            return Ok(None);
        }
        let path = self.backups_dir().join(id).join(name);
        match File::open(&path) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackupError::io(&path, e)),
        }
    }

    fn stage(&self, id: &str) -> Result<Box<dyn Staging>, BackupError> {
        if !is_plain_name(id) {
            return Err(BackupError::NotFound { id: id.to_string() });
        }
        let staging = self.staging_dir();
        fs::create_dir_all(&staging).map_err(|e| BackupError::io(&staging, e))?;
        let dir = staging.join(format!("{id}.{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| BackupError::io(&dir, e))?;
        Ok(Box::new(LocalStaging {
            dir,
            target: self.backups_dir().join(id),
            files: Vec::new(),
            published: false,
        }))
    }

    fn remove(&self, id: &str) -> Result<(), BackupError> {
        if !is_plain_name(id) {
            return Err(BackupError::NotFound { id: id.to_string() });
        }
        let dir = self.backups_dir().join(id);
        // Move the set out of `backups/` first, so a crash mid-removal never
        // leaves a listed set with files missing.
        let doomed = self
            .staging_dir()
            .join(format!("{id}.removing.{}", std::process::id()));
        fs::rename(&dir, &doomed).map_err(|e| BackupError::io(&dir, e))?;
        sync_dir(&self.backups_dir())?;
        fs::remove_dir_all(&doomed).map_err(|e| BackupError::io(&doomed, e))
    }

    fn locate(&self, id: &str, name: &str) -> String {
        self.backups_dir().join(id).join(name).display().to_string()
    }
}

struct LocalStaging {
    dir: PathBuf,
    target: PathBuf,
    files: Vec<PathBuf>,
    published: bool,
}

impl Staging for LocalStaging {
    fn create(&mut self, name: &str) -> Result<Box<dyn Write + Send>, BackupError> {
        if !is_plain_name(name) {
            return Err(BackupError::NotFound {
                id: name.to_string(),
            });
        }
        let path = self.dir.join(name);
        let f = File::create(&path).map_err(|e| BackupError::io(&path, e))?;
        self.files.push(path);
        Ok(Box::new(io::BufWriter::with_capacity(1 << 20, f)))
    }

    fn publish(mut self: Box<Self>) -> Result<(), BackupError> {
        for path in &self.files {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| BackupError::io(path, e))?;
        }
        sync_dir(&self.dir)?;
        if self.target.exists() {
            return Err(BackupError::io(
                &self.target,
                io::Error::new(io::ErrorKind::AlreadyExists, "a set with this id exists"),
            ));
        }
        fs::rename(&self.dir, &self.target).map_err(|e| BackupError::io(&self.target, e))?;
        self.published = true;
        let parent = self.target.parent().expect("a set dir has a parent");
        sync_dir(parent)
    }
}

impl Drop for LocalStaging {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: the next locked command removes leftovers anyway.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether `name` is a single path component of ordinary characters, so a
/// set id or file name from the command line never leaves the repository.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| BackupError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_invisible_until_published_and_gone_if_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = LocalRepository::open(&tmp.path().join("r"), true).expect("open");
        let mut s = repo.stage("A").expect("stage");
        s.create("f")
            .expect("create")
            .write_all(b"x")
            .expect("write");
        assert!(repo.list_sets().expect("list").is_empty());
        s.publish().expect("publish");
        assert_eq!(repo.list_sets().expect("list"), vec!["A".to_string()]);

        let mut s = repo.stage("B").expect("stage");
        s.create("f")
            .expect("create")
            .write_all(b"y")
            .expect("write");
        drop(s);
        assert_eq!(repo.list_sets().expect("list"), vec!["A".to_string()]);
        assert_eq!(fs::read_dir(repo.staging_dir()).expect("dir").count(), 0);
    }

    #[test]
    fn ids_that_would_leave_the_repository_are_not_found() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = LocalRepository::open(&tmp.path().join("r"), true).expect("open");
        fs::write(tmp.path().join("secret"), b"x").expect("write");
        assert!(repo.open("..", "secret").expect("open").is_none());
        assert!(repo.open("../..", "etc").expect("open").is_none());
        assert!(repo.stage("../escape").is_err());
        assert!(repo.remove("..").is_err());
        assert!(tmp.path().join("secret").exists());
    }

    #[test]
    fn a_file_as_repository_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        fs::write(&file, b"not a repo").expect("write");
        assert!(matches!(
            LocalRepository::open(&file, true),
            Err(BackupError::RepoNotDirectory { .. })
        ));
        assert_eq!(fs::read(&file).expect("read"), b"not a repo");
    }

    #[test]
    fn the_lock_is_exclusive_and_clears_leftovers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = LocalRepository::open(tmp.path(), true).expect("open");
        fs::create_dir_all(repo.staging_dir().join("X.999")).expect("leftover");
        let held = repo.lock().expect("lock");
        assert_eq!(fs::read_dir(repo.staging_dir()).expect("dir").count(), 0);
        assert!(matches!(repo.lock(), Err(BackupError::RepoLocked { .. })));
        drop(held);
        repo.lock().expect("lock again");
    }
}
