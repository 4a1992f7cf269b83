//! File helpers for cgroupfs: the formats of its files, single-write writes, the read-back of
//! every value written (see the read-back rule in the module above), and directories that come
//! and go with their groups.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use tracing::{debug, info};

use super::{mkdir_hint, rmdir_hint, write_hint, CgroupError, MAX_POLL_INTERVAL, POLL_INTERVAL};

/// How group directories come and go. cgroupfs fills a new directory with the group's interface
/// files and `rmdir` removes it with them; the tests' fake cgroupfs is plain directories in a
/// temporary directory, where both are done by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dirs {
    Cgroupfs,
    #[cfg(test)]
    Fake,
}

impl Dirs {
    /// Creates one group directory (never its parents); `AlreadyExists` when it is there.
    pub(super) fn create(self, dir: &Path) -> io::Result<()> {
        match self {
            Dirs::Cgroupfs => fs::create_dir(dir),
            #[cfg(test)]
            Dirs::Fake => super::fake::create_group(dir),
        }
    }

    /// Removes one group directory whose child groups are gone.
    pub(super) fn remove(self, dir: &Path) -> io::Result<()> {
        match self {
            Dirs::Cgroupfs => fs::remove_dir(dir),
            #[cfg(test)]
            Dirs::Fake => super::fake::remove_group(dir),
        }
    }
}

// ----- formats -------------------------------------------------------------

/// Controller names in `cgroup.controllers` / `cgroup.subtree_control`.
pub(super) fn parse_controllers(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A cgroup limit value: a number or `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    Max,
    Value(u64),
}

pub(super) fn parse_limit(text: &str) -> Option<Limit> {
    match text.trim() {
        "max" => Some(Limit::Max),
        s => s.parse().ok().map(Limit::Value),
    }
}

pub(super) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Value of `key` in a flat keyed file (`key value` per line), e.g.
/// `memory.events`, `cpu.stat`, v1 `memory.oom_control`.
pub(super) fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        if parts.next()? == key {
            parts.next()?.parse().ok()
        } else {
            None
        }
    })
}

/// v2 `cpu.max`: `"$MAX $PERIOD"`, `$MAX` being a number or `max`.
pub(super) fn parse_cpu_max(text: &str) -> Option<(Limit, u64)> {
    let mut parts = text.split_whitespace();
    let quota = parse_limit(parts.next()?)?;
    let period = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((quota, period))
}

/// `cgroup.procs`: one pid per line; v1 may repeat pids, so the result is
/// sorted and deduplicated.
pub(super) fn parse_procs(text: &str) -> Option<Vec<i32>> {
    let mut pids = text
        .split_whitespace()
        .map(|s| s.parse::<i32>().ok().filter(|p| *p > 0))
        .collect::<Option<Vec<i32>>>()?;
    pids.sort_unstable();
    pids.dedup();
    Some(pids)
}

// ----- files ---------------------------------------------------------------

pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(raw).ok().filter(|p| *p > 0).unwrap_or(4096)
}

pub(super) fn read_file(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn read_parsed<T>(
    path: &Path,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, CgroupError> {
    let text = read_file(path)?;
    parse(&text).ok_or_else(|| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.trim().to_owned(),
        expected,
    })
}

/// Writes `value` in a single `write(2)`, as cgroupfs requires. Never creates
/// the file. `O_TRUNC` is ignored by cgroupfs (as for `echo value > file`) and makes the same
/// write replace the whole content of a plain file, as the fake cgroupfs of the tests needs.
pub(super) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(value.as_bytes())
}

pub(super) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        hint: write_hint(&source),
        source,
    })
}

/// Writes `value`, reads the file back and fails unless `accept` likes what
/// the kernel reports.
pub(super) fn write_checked(
    path: &Path,
    value: &str,
    accept: impl Fn(&str) -> bool,
) -> Result<(), CgroupError> {
    write_file(path, value)?;
    let back = read_file(path)?;
    let back = back.trim();
    if accept(back) {
        debug!(path = %path.display(), value, "cgroup value written and verified");
        Ok(())
    } else {
        Err(CgroupError::LimitMismatch {
            path: path.to_path_buf(),
            written: value.to_owned(),
            read_back: back.to_owned(),
        })
    }
}

pub(super) fn write_exact(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_checked(path, value, |back| back == value)
}

/// Creates `base/rel` component by component; existing directories are fine.
pub(super) fn make_dirs(base: &Path, rel: &str) -> Result<PathBuf, CgroupError> {
    let mut dir = base.to_path_buf();
    for component in rel.split('/') {
        dir.push(component);
        make_dir(&dir)?;
    }
    Ok(dir)
}

pub(super) fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => {
            info!(path = %dir.display(), "created cgroup");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(source) => Err(CgroupError::CreateDir {
            path: dir.to_path_buf(),
            hint: mkdir_hint(&source),
            source,
        }),
    }
}

pub(super) fn check_writable(dir: &Path) -> Result<(), CgroupError> {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|e| {
        let source = io::Error::from(e);
        CgroupError::NotWritable {
            path: dir.to_path_buf(),
            hint: mkdir_hint(&source),
            source,
        }
    })
}

/// Adds the pids of `dir` and of its child groups to `pids`.
pub(super) fn collect_procs(dir: &Path, pids: &mut BTreeSet<i32>) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.procs");
    match fs::read_to_string(&path) {
        Ok(text) => match parse_procs(&text) {
            Some(list) => pids.extend(list),
            None => {
                return Err(CgroupError::Parse {
                    path,
                    content: text.trim().to_owned(),
                    expected: "one process id per line",
                })
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path, source }),
    }
    for child in child_dirs(dir)? {
        collect_procs(&child, pids)?;
    }
    Ok(())
}

pub(super) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let read_err = |source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(read_err(source)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        if entry.file_type().map_err(read_err)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Removes `dir` and any child groups below it, retrying EBUSY until
/// `deadline`. A directory already gone is fine.
pub(super) fn remove_tree(dirs: Dirs, dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    for child in child_dirs(dir)? {
        remove_tree(dirs, &child, deadline)?;
    }
    let mut interval = POLL_INTERVAL;
    loop {
        match dirs.remove(dir) {
            Ok(()) => {
                debug!(path = %dir.display(), "removed cgroup directory");
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(interval);
                interval = (interval * 2).min(MAX_POLL_INTERVAL);
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    hint: rmdir_hint(&source),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_value_files() {
        assert_eq!(parse_limit("max\n"), Some(Limit::Max));
        assert_eq!(parse_limit("16\n"), Some(Limit::Value(16)));
        assert_eq!(parse_limit("-1"), None);
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_controllers("cpuset cpu io memory pids\n").len(), 5);
        assert!(parse_controllers("").is_empty());
        assert_eq!(
            parse_cpu_max("50000 100000\n"),
            Some((Limit::Value(50000), 100000))
        );
        assert_eq!(parse_cpu_max("max 100000"), Some((Limit::Max, 100000)));
        assert_eq!(parse_cpu_max("max"), None);
        assert_eq!(parse_cpu_max("1 2 3"), None);
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_keyed(oom_control, "oom_kill"), Some(3));
        assert_eq!(parse_keyed(oom_control, "oom_kill_disable"), Some(0));
        assert_eq!(
            parse_keyed("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
            None
        );
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
        let cpu_stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(parse_keyed(cpu_stat, "usage_usec"), Some(123456));
        assert_eq!(parse_procs("12\n7\n12\n"), Some(vec![7, 12]));
        assert_eq!(parse_procs(""), Some(vec![]));
        assert_eq!(parse_procs("12\nabc\n"), None);
        assert_eq!(parse_procs("0\n"), None);
    }
}
