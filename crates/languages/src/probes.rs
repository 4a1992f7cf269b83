//! The version probes' answers, kept on disk so that a command does not run `go version`,
//! `javac -version` and the others again while nothing changed.
//!
//! An answer is keyed by the probe's command line and, for each executable the toolchain found,
//! its resolved path, size, modification time and inode: an upgrade, a reinstall or an
//! `update-alternatives` switch changes one of them, and the probe runs again. Only successful
//! probes are kept (a toolchain that failed is probed again next time, so installing it is seen
//! at once). The file is JSON, written whole to a temporary file and renamed, so a reader never
//! sees half of it; one that does not parse is ignored (and replaced). It holds version strings
//! only, nothing a run gave.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The answers of one discovery: read once from the file, written back once if any changed.
#[derive(Debug, Default)]
pub(crate) struct ProbeCache {
    path: Option<PathBuf>,
    answers: Mutex<Answers>,
}

#[derive(Debug, Default)]
struct Answers {
    known: BTreeMap<String, String>,
    changed: bool,
}

impl ProbeCache {
    /// The answers kept in `path` (none when it is missing or unreadable, or when `reuse` is
    /// false: every probe then runs, and its answer replaces the kept one); `None` keeps nothing.
    pub(crate) fn open(path: Option<&Path>, reuse: bool) -> ProbeCache {
        let known = path
            .filter(|_| reuse)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        ProbeCache {
            path: path.map(Path::to_path_buf),
            answers: Mutex::new(Answers {
                known,
                changed: false,
            }),
        }
    }

    /// The key of a probe: its command line and what identifies each executable it concerns.
    /// `None` when one of them cannot be looked at (then the probe just runs).
    pub(crate) fn key(argv: &[String], executables: &BTreeMap<String, PathBuf>) -> Option<String> {
        let mut key = argv.join("\u{1f}");
        for (tool, path) in executables {
            let resolved = std::fs::canonicalize(path).ok()?;
            let meta = std::fs::metadata(&resolved).ok()?;
            key.push_str(&format!(
                "\u{1e}{tool}={}:{}:{}.{}:{}",
                resolved.display(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino()
            ));
        }
        Some(key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.lock().known.get(key).cloned()
    }

    pub(crate) fn put(&self, key: String, answer: String) {
        let mut answers = self.lock();
        if answers.known.get(&key) != Some(&answer) {
            answers.known.insert(key, answer);
            answers.changed = true;
        }
    }

    /// Writes the answers back when a probe ran. A failure only costs the next command its
    /// probes, so it is logged, not returned.
    pub(crate) fn save(&self) {
        let answers = self.lock();
        let Some(path) = self.path.as_deref().filter(|_| answers.changed) else {
            return;
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            let bytes = serde_json::to_vec_pretty(&answers.known).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        };
        if let Err(e) = write() {
            tracing::debug!(path = %path.display(), error = %e, "could not keep the toolchain probes");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_a_reopen_and_a_changed_executable_misses() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\necho 1.0\n").unwrap();
        let file = dir.path().join("probes.json");
        let executables = BTreeMap::from([("tool".to_string(), tool.clone())]);
        let argv = vec![tool.display().to_string(), "--version".to_string()];
        let key = ProbeCache::key(&argv, &executables).unwrap();

        let cache = ProbeCache::open(Some(&file), true);
        assert_eq!(cache.get(&key), None);
        // Not reused: nothing is read, though what is probed is kept.
        cache.put(key.clone(), "tool 0.9".into());
        cache.save();
        assert_eq!(ProbeCache::open(Some(&file), false).get(&key), None);
        cache.put(key.clone(), "tool 1.0".into());
        cache.save();
        assert_eq!(
            ProbeCache::open(Some(&file), true).get(&key).as_deref(),
            Some("tool 1.0")
        );

        // Another size (an upgrade): another key, so the probe runs again.
        std::fs::write(&tool, "#!/bin/sh\necho 2.0 upgraded\n").unwrap();
        let changed = ProbeCache::key(&argv, &executables).unwrap();
        assert_ne!(changed, key);
        assert_eq!(ProbeCache::open(Some(&file), true).get(&changed), None);

        // A file that does not parse is ignored.
        std::fs::write(&file, "{not json").unwrap();
        assert_eq!(ProbeCache::open(Some(&file), true).get(&key), None);
    }
}
