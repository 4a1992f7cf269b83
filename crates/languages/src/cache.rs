//! The content-addressed compile cache.
//!
//! Layout under the cache root (mode `0711`: a box that is given the root can open an entry whose
//! key it knows, but cannot list the others):
//!
//! ```text
//! <root>/<key>/...          one entry per Plan::cache_key, mode 0755, files 0644 or 0755
//! <root>/locks/<key>.lock   flock(2) files serialising compiles of the same key (0700 dir)
//! <root>/tmp/               staging area for atomic inserts and evictions (0700)
//! ```
//!
//! Entries are written into `tmp/`, fsynced and renamed into place, so a reader sees either no
//! entry or a complete one; when two writers race, the first rename wins and the second keeps
//! that entry. Looking an entry up bumps its mtime; eviction removes least recently used entries
//! until the cache fits its byte budget, skipping entries whose key lock is held.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation};

use crate::registry::check_file_name;
use crate::LanguageError;

/// Staging directories older than this are leftovers of a crashed process.
const STALE_STAGING: Duration = Duration::from_secs(3600);

/// A directory of compiled programs keyed by [`crate::Plan::cache_key`].
#[derive(Debug, Clone)]
pub struct CompileCache {
    root: PathBuf,
    max_bytes: u64,
}

/// An exclusive per-key lock; released when dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
    key: String,
}

impl CacheLock {
    /// The key this lock is for.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl CompileCache {
    /// Opens (creating if needed) a cache rooted at `dir` that keeps at most `max_bytes` of
    /// artifacts. Sets the permissions described in the module docs and removes stale staging
    /// directories.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<CompileCache, LanguageError> {
        let root = dir.into();
        fs::create_dir_all(&root)
            .map_err(|e| LanguageError::cache("create directory", &root, e))?;
        set_mode(&root, 0o711)?;
        for private in ["locks", "tmp"] {
            let path = root.join(private);
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(LanguageError::cache("create directory", &path, e)),
            }
            set_mode(&path, 0o700)?;
        }
        let cache = CompileCache { root, max_bytes };
        cache.remove_stale_staging();
        Ok(cache)
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The entry directory for `key` if it exists; bumps its mtime so eviction sees it as recently
    /// used. Invalid keys find nothing.
    pub fn lookup(&self, key: &str) -> Option<PathBuf> {
        check_key(key).ok()?;
        let path = self.root.join(key);
        if !fs::symlink_metadata(&path).ok()?.is_dir() {
            return None;
        }
        touch(&path);
        Some(path)
    }

    /// Takes the exclusive lock for `key`, blocking until it is free. Hold it while compiling so
    /// that concurrent requests for the same program compile it once:
    /// `lookup`, else `lock`, `lookup` again, compile, `insert`.
    pub fn lock(&self, key: &str) -> Result<CacheLock, LanguageError> {
        check_key(key)?;
        let file = self.open_lock_file(key)?;
        flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| LanguageError::cache("lock", self.lock_path(key), e.into()))?;
        Ok(CacheLock {
            _file: file,
            key: key.to_string(),
        })
    }

    /// Like [`CompileCache::lock`] but returns `None` instead of waiting.
    pub fn try_lock(&self, key: &str) -> Result<Option<CacheLock>, LanguageError> {
        check_key(key)?;
        let file = self.open_lock_file(key)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(CacheLock {
                _file: file,
                key: key.to_string(),
            })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(LanguageError::cache("lock", self.lock_path(key), e.into())),
        }
    }

    /// Stores `files` (`(relative name, contents, executable)`) as the entry for `key` and
    /// returns its directory. Atomic; if the entry already exists it is kept and returned. Evicts
    /// least recently used entries afterwards if the cache exceeds its budget.
    pub fn insert<N, B>(&self, key: &str, files: &[(N, B, bool)]) -> Result<PathBuf, LanguageError>
    where
        N: AsRef<str>,
        B: AsRef<[u8]>,
    {
        check_key(key)?;
        for (name, _, _) in files {
            check_file_name(name.as_ref())
                .map_err(|_| LanguageError::InvalidFileName(name.as_ref().to_string()))?;
        }
        if let Some(existing) = self.lookup(key) {
            return Ok(existing);
        }
        let staging_root = self.root.join("tmp");
        let staging = tempfile::Builder::new()
            .prefix("insert-")
            .tempdir_in(&staging_root)
            .map_err(|e| LanguageError::cache("create staging directory in", &staging_root, e))?;
        let dir = staging.path();
        let mut dirs = vec![dir.to_path_buf()];
        for (name, contents, executable) in files {
            let path = dir.join(name.as_ref());
            if let Some(parent) = path.parent() {
                if !parent.exists() {
                    fs::create_dir_all(parent)
                        .map_err(|e| LanguageError::cache("create directory", parent, e))?;
                    dirs.push(parent.to_path_buf());
                }
            }
            let mode = if *executable { 0o755 } else { 0o644 };
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| LanguageError::cache("create", &path, e))?;
            file.write_all(contents.as_ref())
                .and_then(|()| file.sync_all())
                .map_err(|e| LanguageError::cache("write", &path, e))?;
            set_mode(&path, mode)?;
        }
        for d in dirs.iter().rev() {
            set_mode(d, 0o755)?;
            sync_dir(d)?;
        }
        let destination = self.root.join(key);
        let staged = staging.keep();
        match fs::rename(&staged, &destination) {
            Ok(()) => {}
            Err(e)
                if e.kind() == ErrorKind::AlreadyExists
                    || e.kind() == ErrorKind::DirectoryNotEmpty =>
            {
                // Someone else inserted the same key first: theirs is identical by construction.
                let _ = fs::remove_dir_all(&staged);
                touch(&destination);
                return Ok(destination);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staged);
                return Err(LanguageError::cache("rename into", &destination, e));
            }
        }
        sync_dir(&self.root)?;
        self.evict_except(Some(key))?;
        Ok(destination)
    }

    /// Stores every regular file under `dir` (recursively, keeping executable bits) as the entry
    /// for `key`. Symbolic links and other special files are refused.
    pub fn insert_dir(&self, key: &str, dir: &Path) -> Result<PathBuf, LanguageError> {
        let mut files: Vec<(String, Vec<u8>, bool)> = Vec::new();
        collect_files(dir, dir, &mut files)?;
        self.insert(key, &files)
    }

    /// Returns the entry for `key`, compiling it under the key's lock if it is missing:
    /// `compile` runs at most once across all processes sharing the cache for a given key (unless
    /// it fails) and returns the files to store.
    pub fn get_or_insert_with<E, F>(&self, key: &str, compile: F) -> Result<PathBuf, E>
    where
        E: From<LanguageError>,
        F: FnOnce() -> Result<Vec<(String, Vec<u8>, bool)>, E>,
    {
        if let Some(path) = self.lookup(key) {
            return Ok(path);
        }
        let _lock = self.lock(key)?;
        if let Some(path) = self.lookup(key) {
            return Ok(path);
        }
        let files = compile()?;
        Ok(self.insert(key, &files)?)
    }

    /// Total bytes of file contents in all entries.
    pub fn size(&self) -> Result<u64, LanguageError> {
        Ok(self.entries()?.iter().map(|e| e.bytes).sum())
    }

    /// Evicts least recently used entries until the cache fits `max_bytes`. Returns the number
    /// of entries removed.
    pub fn evict(&self) -> Result<usize, LanguageError> {
        self.evict_except(None)
    }

    fn evict_except(&self, keep: Option<&str>) -> Result<usize, LanguageError> {
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        if total <= self.max_bytes {
            return Ok(0);
        }
        entries.sort_by_key(|e| e.modified);
        let mut removed = 0;
        for entry in entries {
            if total <= self.max_bytes {
                break;
            }
            if Some(entry.key.as_str()) == keep {
                continue;
            }
            // A held lock means the entry is being compiled or used right now.
            let Some(lock) = self.try_lock(&entry.key)? else {
                continue;
            };
            let source = self.root.join(&entry.key);
            let trash = self.root.join("tmp").join(format!("evict-{}", entry.key));
            let _ = fs::remove_dir_all(&trash);
            if fs::rename(&source, &trash).is_ok() {
                let _ = fs::remove_dir_all(&trash);
                total = total.saturating_sub(entry.bytes);
                removed += 1;
                tracing::debug!(key = %entry.key, bytes = entry.bytes, "evicted compile cache entry");
                let _ = fs::remove_file(self.lock_path(&entry.key));
            }
            drop(lock);
        }
        Ok(removed)
    }

    fn entries(&self) -> Result<Vec<Entry>, LanguageError> {
        let read =
            fs::read_dir(&self.root).map_err(|e| LanguageError::cache("list", &self.root, e))?;
        let mut entries = Vec::new();
        for item in read.filter_map(|e| e.ok()) {
            let name = item.file_name().to_string_lossy().into_owned();
            if check_key(&name).is_err() {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(item.path()) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            entries.push(Entry {
                bytes: tree_size(&item.path()),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                key: name,
            });
        }
        Ok(entries)
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    fn open_lock_file(&self, key: &str) -> Result<File, LanguageError> {
        let path = self.lock_path(key);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| LanguageError::cache("open lock", &path, e))
    }

    fn remove_stale_staging(&self) {
        let Ok(items) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for item in items.filter_map(|e| e.ok()) {
            let stale = item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_STAGING);
            if stale {
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }
}

struct Entry {
    key: String,
    bytes: u64,
    modified: SystemTime,
}

fn check_key(key: &str) -> Result<(), LanguageError> {
    if key.len() == 64
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(LanguageError::InvalidCacheKey(key.to_string()))
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), LanguageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| LanguageError::cache("set permissions of", path, e))
}

fn sync_dir(path: &Path) -> Result<(), LanguageError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| LanguageError::cache("sync", path, e))
}

/// Best effort: a failed mtime bump only makes the entry look older to eviction.
fn touch(path: &Path) {
    if let Ok(dir) = File::open(path) {
        let _ = dir.set_modified(SystemTime::now());
    }
}

fn tree_size(path: &Path) -> u64 {
    let Ok(items) = fs::read_dir(path) else {
        return 0;
    };
    items
        .filter_map(|e| e.ok())
        .map(|item| match fs::symlink_metadata(item.path()) {
            Ok(meta) if meta.is_dir() => tree_size(&item.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn collect_files(
    base: &Path,
    dir: &Path,
    out: &mut Vec<(String, Vec<u8>, bool)>,
) -> Result<(), LanguageError> {
    let items = fs::read_dir(dir).map_err(|e| LanguageError::cache("list", dir, e))?;
    for item in items {
        let item = item.map_err(|e| LanguageError::cache("list", dir, e))?;
        let path = item.path();
        let meta =
            fs::symlink_metadata(&path).map_err(|e| LanguageError::cache("stat", &path, e))?;
        if meta.is_dir() {
            collect_files(base, &path, out)?;
        } else if meta.is_file() {
            let contents = fs::read(&path).map_err(|e| LanguageError::cache("read", &path, e))?;
            let name = path
                .strip_prefix(base)
                .map_err(|_| LanguageError::InvalidFileName(path.display().to_string()))?
                .to_string_lossy()
                .into_owned();
            out.push((name, contents, meta.permissions().mode() & 0o111 != 0));
        } else {
            return Err(LanguageError::InvalidFileName(format!(
                "{} (not a regular file)",
                path.display()
            )));
        }
    }
    Ok(())
}
