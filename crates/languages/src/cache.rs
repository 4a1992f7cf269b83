//! The content-addressed compile cache, with a byte budget per owner.
//!
//! Layout under the cache root (mode `0711`: a box that is given the root can open an entry whose
//! key it knows, but cannot list the others or see who uses them):
//!
//! ```text
//! <root>/<key>/...               one entry per Plan::cache_key, mode 0755, files 0644 or 0755
//! <root>/owners/<owner>/<key>    a mark per owner that uses the entry: its size in bytes; its
//!                                mtime is that owner's last use (0700 dirs)
//! <root>/locks/<key>.lock        flock(2) files serialising compiles of the same key (0700 dir)
//! <root>/tmp/                    staging area for atomic inserts and evictions (0700)
//! ```
//!
//! Entries are written into `tmp/`, fsynced and renamed into place, so a reader sees either no
//! entry or a complete one; when two writers race, the first rename wins and the second keeps
//! that entry. Every entry belongs to the owners that stored or used it ([`CacheOwner`]): a caller,
//! charged for the whole entry against its own budget, or [`CacheOwner::Pinned`], the engine's own
//! artifacts, never evicted. An owner over its budget gives up its least recently used marks, and
//! an entry is removed only when no owner marks it any more, so no caller can evict what another
//! caller (or the engine) uses. An owner's mark is written before its entry is renamed into place:
//! an entry without any mark is a leftover (of a crash, or of a cache made before owners existed)
//! and is removed when the cache is opened.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation};
use sha2::{Digest, Sha256};

use crate::registry::check_file_name;
use crate::LanguageError;

/// Staging directories older than this are leftovers of a crashed process.
const STALE_STAGING: Duration = Duration::from_secs(3600);

/// The owners' directory under the root.
const OWNERS: &str = "owners";

/// The owner directory of [`CacheOwner::Pinned`].
const PINNED: &str = "pinned";

/// Who an entry is kept for, and whose budget it counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheOwner {
    /// A caller of the engine, by name: its entries count against its own budget, and only its
    /// own stores and uses evict them.
    Caller(String),
    /// The engine's own artifacts (a warm worker's native part, a toolchain's shared build
    /// cache): never evicted, and outside every caller's budget.
    Pinned,
}

impl CacheOwner {
    /// The owner's directory name: caller names are hashed, so any name is a safe file name and
    /// the cache does not show who its callers are.
    fn dir_name(&self) -> String {
        match self {
            CacheOwner::Pinned => PINNED.to_string(),
            CacheOwner::Caller(name) => {
                let digest = Sha256::digest(name.as_bytes());
                format!("caller-{}", &hex::encode(digest)[..32])
            }
        }
    }
}

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
    /// Opens (creating if needed) a cache rooted at `dir` in which each owner keeps at most
    /// `max_bytes` of entries ([`CacheOwner::Pinned`] has no bound). Sets the permissions
    /// described in the module docs, removes stale staging directories and every entry that no
    /// owner marks.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<CompileCache, LanguageError> {
        let root = dir.into();
        fs::create_dir_all(&root)
            .map_err(|e| LanguageError::cache("create directory", &root, e))?;
        set_mode(&root, 0o711)?;
        for private in ["locks", "tmp", OWNERS] {
            create_private_dir(&root.join(private))?;
        }
        let cache = CompileCache { root, max_bytes };
        cache.remove_stale_staging();
        cache.remove_unowned()?;
        Ok(cache)
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The byte budget of each owner.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The entry directory for `key` if it exists, without recording a use. Invalid keys find
    /// nothing.
    pub fn lookup(&self, key: &str) -> Option<PathBuf> {
        check_key(key).ok()?;
        let path = self.root.join(key);
        if !fs::symlink_metadata(&path).ok()?.is_dir() {
            return None;
        }
        Some(path)
    }

    /// The entry for `key`, recorded as used by `owner` (which charges `owner`'s budget for it,
    /// and may evict `owner`'s least recently used entries). Does not wait: `None` when the entry
    /// is missing or its key's lock is held (a compile or an eviction of it is under way; take
    /// [`lock`](Self::lock) and use [`claim_locked`](Self::claim_locked)).
    pub fn claim(&self, key: &str, owner: &CacheOwner) -> Result<Option<PathBuf>, LanguageError> {
        check_key(key)?;
        if self.lookup(key).is_none() {
            return Ok(None);
        }
        let file = self.open_lock_file(key)?;
        match flock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(LanguageError::cache("lock", self.lock_path(key), e.into())),
        }
        self.claim_held(key, owner)
    }

    /// Like [`claim`](Self::claim), for the holder of the key's lock.
    pub fn claim_locked(
        &self,
        lock: &CacheLock,
        owner: &CacheOwner,
    ) -> Result<Option<PathBuf>, LanguageError> {
        self.claim_held(&lock.key, owner)
    }

    fn claim_held(&self, key: &str, owner: &CacheOwner) -> Result<Option<PathBuf>, LanguageError> {
        let Some(path) = self.lookup(key) else {
            return Ok(None);
        };
        if !touch_existing(&self.mark_path(owner, key)) {
            self.write_mark(owner, key, tree_size(&path))?;
            self.evict_owner(&self.owner_dir(owner), Some(key))?;
        }
        Ok(Some(path))
    }

    /// Takes the exclusive lock for `key`, blocking until it is free. Hold it while compiling so
    /// that concurrent requests for the same program compile it once:
    /// `claim`, else `lock`, `claim_locked`, compile, `insert`.
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

    /// Stores `files` (`(relative name, contents, executable)`) as the entry for `key`, owned by
    /// `owner`, and returns its directory. Atomic; if the entry already exists it is kept,
    /// recorded as used by `owner`, and returned. Then evicts `owner`'s least recently used
    /// entries while `owner` is over its budget (never the entry just stored).
    pub fn insert<N, B>(
        &self,
        key: &str,
        owner: &CacheOwner,
        files: &[(N, B, bool)],
    ) -> Result<PathBuf, LanguageError>
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
            return self.keep_existing(key, owner, existing);
        }
        let staging_root = self.root.join("tmp");
        let staging = tempfile::Builder::new()
            .prefix("insert-")
            .tempdir_in(&staging_root)
            .map_err(|e| LanguageError::cache("create staging directory in", &staging_root, e))?;
        let dir = staging.path();
        let mut dirs = vec![dir.to_path_buf()];
        let mut bytes = 0u64;
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
            bytes += contents.as_ref().len() as u64;
        }
        for d in dirs.iter().rev() {
            set_mode(d, 0o755)?;
            sync_dir(d)?;
        }
        // The mark first: an entry in place without a mark is a leftover, removed on open.
        self.write_mark(owner, key, bytes)?;
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
                return self.keep_existing(key, owner, destination);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staged);
                let _ = fs::remove_file(self.mark_path(owner, key));
                return Err(LanguageError::cache("rename into", &destination, e));
            }
        }
        sync_dir(&self.root)?;
        self.evict_owner(&self.owner_dir(owner), Some(key))?;
        Ok(destination)
    }

    fn keep_existing(
        &self,
        key: &str,
        owner: &CacheOwner,
        existing: PathBuf,
    ) -> Result<PathBuf, LanguageError> {
        self.write_mark(owner, key, tree_size(&existing))?;
        self.evict_owner(&self.owner_dir(owner), Some(key))?;
        Ok(existing)
    }

    /// Stores every regular file under `dir` (recursively, keeping executable bits) as the entry
    /// for `key`, owned by `owner`. Symbolic links and other special files are refused.
    pub fn insert_dir(
        &self,
        key: &str,
        owner: &CacheOwner,
        dir: &Path,
    ) -> Result<PathBuf, LanguageError> {
        let mut files: Vec<(String, Vec<u8>, bool)> = Vec::new();
        collect_files(dir, dir, &mut files)?;
        self.insert(key, owner, &files)
    }

    /// Returns the entry for `key` (recorded as used by `owner`), compiling it under the key's
    /// lock if it is missing: `compile` runs at most once across all processes sharing the cache
    /// for a given key (unless it fails) and returns the files to store.
    pub fn get_or_insert_with<E, F>(
        &self,
        key: &str,
        owner: &CacheOwner,
        compile: F,
    ) -> Result<PathBuf, E>
    where
        E: From<LanguageError>,
        F: FnOnce() -> Result<Vec<(String, Vec<u8>, bool)>, E>,
    {
        if let Some(path) = self.claim(key, owner)? {
            return Ok(path);
        }
        let lock = self.lock(key)?;
        if let Some(path) = self.claim_locked(&lock, owner)? {
            return Ok(path);
        }
        let files = compile()?;
        Ok(self.insert(key, owner, &files)?)
    }

    /// Total bytes of file contents in all entries.
    pub fn size(&self) -> Result<u64, LanguageError> {
        let mut total = 0;
        for item in self.read_root()? {
            total += tree_size(&self.root.join(item));
        }
        Ok(total)
    }

    /// Bytes of the entries `owner` marks (each counted whole).
    pub fn owner_bytes(&self, owner: &CacheOwner) -> Result<u64, LanguageError> {
        Ok(self
            .marks(&self.owner_dir(owner))?
            .iter()
            .map(|m| m.bytes)
            .sum())
    }

    /// Evicts least recently used entries of every owner over its budget, and entries no owner
    /// marks. Returns the number of entries removed.
    pub fn evict(&self) -> Result<usize, LanguageError> {
        let owners = self.root.join(OWNERS);
        let read = fs::read_dir(&owners).map_err(|e| LanguageError::cache("list", &owners, e))?;
        let mut removed = 0;
        for item in read.filter_map(|e| e.ok()) {
            if item.file_name() != PINNED {
                removed += self.evict_owner(&item.path(), None)?;
            }
        }
        Ok(removed + self.remove_unowned()?)
    }

    /// Gives up the owner's least recently used marks until its entries fit the budget (skipping
    /// `keep` and entries whose lock is held), removing each entry no other owner marks.
    fn evict_owner(&self, owner_dir: &Path, keep: Option<&str>) -> Result<usize, LanguageError> {
        if owner_dir.file_name().is_some_and(|n| n == PINNED) {
            return Ok(0);
        }
        let mut marks = self.marks(owner_dir)?;
        let mut total: u64 = marks.iter().map(|m| m.bytes).sum();
        if total <= self.max_bytes {
            return Ok(0);
        }
        marks.sort_by_key(|m| m.used);
        let mut removed = 0;
        for mark in marks {
            if total <= self.max_bytes {
                break;
            }
            if Some(mark.key.as_str()) == keep {
                continue;
            }
            // A held lock means the entry is being compiled, claimed or evicted right now.
            let Some(lock) = self.try_lock(&mark.key)? else {
                continue;
            };
            let path = owner_dir.join(&mark.key);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != ErrorKind::NotFound {
                    return Err(LanguageError::cache("remove", &path, e));
                }
            }
            total = total.saturating_sub(mark.bytes);
            if !self.marked(&mark.key)? && self.remove_entry(&mark.key) {
                removed += 1;
                tracing::debug!(key = %mark.key, bytes = mark.bytes, "evicted compile cache entry");
            }
            drop(lock);
        }
        Ok(removed)
    }

    /// Removes entries that no owner marks, and marks (older than an hour, so that no insert is
    /// still on its way) of entries that are gone.
    fn remove_unowned(&self) -> Result<usize, LanguageError> {
        let mut removed = 0;
        for key in self.read_root()? {
            if self.marked(&key)? {
                continue;
            }
            let Some(lock) = self.try_lock(&key)? else {
                continue;
            };
            if !self.marked(&key)? && self.remove_entry(&key) {
                removed += 1;
                tracing::debug!(key = %key, "removed a compile cache entry that no owner keeps");
            }
            drop(lock);
        }
        let owners = self.root.join(OWNERS);
        let read = fs::read_dir(&owners).map_err(|e| LanguageError::cache("list", &owners, e))?;
        for owner in read.filter_map(|e| e.ok()) {
            let Ok(marks) = fs::read_dir(owner.path()) else {
                continue;
            };
            for mark in marks.filter_map(|e| e.ok()) {
                let name = mark.file_name().to_string_lossy().into_owned();
                let stale = mark
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_STAGING);
                if stale && self.lookup(&name).is_none() {
                    let _ = fs::remove_file(mark.path());
                }
            }
        }
        Ok(removed)
    }

    /// Moves the entry out of sight, then deletes it; `false` if it was not there.
    fn remove_entry(&self, key: &str) -> bool {
        let source = self.root.join(key);
        let trash = self.root.join("tmp").join(format!("evict-{key}"));
        let _ = fs::remove_dir_all(&trash);
        if fs::rename(&source, &trash).is_err() {
            return false;
        }
        let _ = fs::remove_dir_all(&trash);
        true
    }

    /// Whether any owner marks `key`.
    fn marked(&self, key: &str) -> Result<bool, LanguageError> {
        let owners = self.root.join(OWNERS);
        let read = fs::read_dir(&owners).map_err(|e| LanguageError::cache("list", &owners, e))?;
        Ok(read
            .filter_map(|e| e.ok())
            .any(|owner| fs::symlink_metadata(owner.path().join(key)).is_ok()))
    }

    /// The marks in one owner's directory whose entries exist.
    fn marks(&self, owner_dir: &Path) -> Result<Vec<Mark>, LanguageError> {
        let read = match fs::read_dir(owner_dir) {
            Ok(read) => read,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LanguageError::cache("list", owner_dir, e)),
        };
        let mut marks = Vec::new();
        for item in read.filter_map(|e| e.ok()) {
            let key = item.file_name().to_string_lossy().into_owned();
            if check_key(&key).is_err() || self.lookup(&key).is_none() {
                continue;
            }
            let used = item
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let bytes = fs::read_to_string(item.path())
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_else(|| tree_size(&self.root.join(&key)));
            marks.push(Mark { key, bytes, used });
        }
        Ok(marks)
    }

    /// Names of the entries (valid keys) under the root.
    fn read_root(&self) -> Result<Vec<String>, LanguageError> {
        let read =
            fs::read_dir(&self.root).map_err(|e| LanguageError::cache("list", &self.root, e))?;
        Ok(read
            .filter_map(|e| e.ok())
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .filter(|name| check_key(name).is_ok() && self.lookup(name).is_some())
            .collect())
    }

    fn owner_dir(&self, owner: &CacheOwner) -> PathBuf {
        self.root.join(OWNERS).join(owner.dir_name())
    }

    fn mark_path(&self, owner: &CacheOwner, key: &str) -> PathBuf {
        self.owner_dir(owner).join(key)
    }

    /// Writes (or rewrites) `owner`'s mark of `key`: the entry's size, used now.
    fn write_mark(&self, owner: &CacheOwner, key: &str, bytes: u64) -> Result<(), LanguageError> {
        let dir = self.owner_dir(owner);
        create_private_dir(&dir)?;
        let path = dir.join(key);
        fs::write(&path, bytes.to_string()).map_err(|e| LanguageError::cache("write", &path, e))
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

/// One owner's use of one entry.
struct Mark {
    key: String,
    bytes: u64,
    used: SystemTime,
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

fn create_private_dir(path: &Path) -> Result<(), LanguageError> {
    match fs::create_dir(path) {
        Ok(()) => set_mode(path, 0o700),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(LanguageError::cache("create directory", path, e)),
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

/// Bumps an existing file's mtime (an owner's use); `false` if there is no such file. A failed
/// bump only makes the use look older to eviction.
fn touch_existing(path: &Path) -> bool {
    match OpenOptions::new().write(true).open(path) {
        Ok(file) => {
            let _ = file.set_modified(SystemTime::now());
            true
        }
        Err(_) => false,
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
