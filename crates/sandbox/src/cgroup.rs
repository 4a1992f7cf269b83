//! Control groups for boxes: memory, process-count and CPU limits enforced by
//! the kernel, plus counters and a reliable "kill everything in this box".
//!
//! # Why our own code
//!
//! This module writes cgroupfs files directly instead of using `cgroups-rs`.
//! That crate pulls in D-Bus (for systemd) and, on cgroup v1, creates a group
//! in *every* mounted hierarchy (cpuset, blkio, devices, net_cls, ...), which we
//! neither need nor want to clean up. What we need is small: make a directory,
//! write a handful of files, read them back, move a pid, kill a group. Doing it
//! ourselves keeps the dependency tree small and every write visible.
//!
//! # Layout
//!
//! Hierarchies are found by parsing `/proc/self/mountinfo` (never by assuming
//! paths). Box groups live under one parent group (for example `codebeaker`):
//!
//! * cgroup v2 (preferred when a `cgroup2` mount offers the `memory`, `pids`
//!   and `cpu` controllers): `<cgroup2 mount>/<parent>/<box>`. Controllers are
//!   enabled with `cgroup.subtree_control` in every group from the mount root
//!   down to the parent, so that each box has `memory.max`, `pids.max`,
//!   `cpu.max`, ...
//! * cgroup v1: `<mount of hierarchy>/<parent>/<box>` in the hierarchies that
//!   carry `memory`, `pids`, `cpu` and `cpuacct` (required) and `freezer`
//!   (optional, used by [`BoxCgroup::kill_all`]). A hierarchy that carries
//!   several of them (e.g. `cpu,cpuacct`) gets one directory. No other
//!   hierarchy is touched.
//!
//! The parent is created relative to the root of the mount; in a container
//! with its own cgroup namespace that is the container's own group.
//!
//! # Read-back rule
//!
//! Every limit written is read back from the same file and compared with what
//! was written. The only accepted difference is the kernel rounding a memory
//! limit down to a page multiple. Anything else is a [`CgroupError::LimitMismatch`]
//! and, in [`CgroupManager::create`], the group is removed again: a box never
//! runs with a limit that silently did not apply.
//!
//! # Errors
//!
//! Failures to find or write cgroups where we lack permission (not root,
//! read-only cgroupfs) make [`CgroupManager::detect`] return `Ok(None)` so the
//! caller can fall back to rlimits; anything else is a [`CgroupError`] whose
//! message names the file, the value and what to do about it.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{kill_process, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tracing::{debug, info, warn};

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// CFS period used for every CPU quota, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts (1 ms).
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// How long [`BoxCgroup::kill_all`] keeps trying before giving up.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`BoxCgroup::destroy`] retries `rmdir` on `EBUSY`.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for a freeze to complete before signalling anyway.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(100);
const POLL_INTERVAL: Duration = Duration::from_millis(2);
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest accepted group name component.
const MAX_NAME_LEN: usize = 200;

/// Controllers a v2 box needs.
const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// v1 hierarchies a box needs.
const V1_REQUIRED: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];
/// v1 hierarchies used when mounted.
const V1_OPTIONAL: [&str; 1] = ["freezer"];

/// Which cgroup interface is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupVersion::V1 => f.write_str("cgroup v1"),
            CgroupVersion::V2 => f.write_str("cgroup v2"),
        }
    }
}

/// Limits for one box, all enforced by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Hard memory limit in bytes; swap is disabled for the group (v1:
    /// `memory.memsw.limit_in_bytes` set to the same value when present and
    /// `memory.swappiness=0`; v2: `memory.max` and `memory.swap.max=0` when
    /// present). Must be at least one page.
    pub memory_bytes: u64,
    /// `pids.max`; at least 1.
    pub pids_max: u64,
    /// CPU quota in thousandths of a CPU (1000 = one full core), applied with
    /// a 100 ms period; at least 10 (the kernel's 1 ms minimum quota).
    pub cpu_millis: u64,
}

/// Counters read after a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// v1 `memory.max_usage_in_bytes`; v2 `memory.peak` when the kernel has it.
    pub memory_peak_bytes: Option<u64>,
    /// v1: `oom_kill` line of `memory.oom_control`; v2: `oom_kill` in
    /// `memory.events`. 0 on kernels that do not report it.
    pub oom_kills: u64,
    /// v1 `cpuacct.usage`; v2 `usage_usec * 1000` from `cpu.stat`.
    pub cpu_usage_ns: u64,
    /// `pids.current`.
    pub pids_current: u64,
}

/// Everything that can go wrong with cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}; cgroup detection needs /proc mounted in this mount namespace")]
    MountInfo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid cgroup name {name:?}: {reason}; use 1-200 characters from [A-Za-z0-9_.-], not starting with '.' or '-' (the parent may have several such components separated by '/')")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid {what} = {value}: {reason}")]
    InvalidLimit {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot create cgroup directory {path}: {source}; {hint}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("cgroup directory {path} is not writable: {source}; {hint}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("cgroup {path} already exists (probably left behind by a crashed run); remove it with CgroupManager::remove_stale or use another name")]
    AlreadyExists { path: PathBuf },
    #[error(
        "cannot read {path}: {source}; is the controller mounted and does the group still exist?"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unexpected content {content:?} in {path}: expected {expected}; this kernel's cgroup interface is not one we understand")]
    Parse {
        path: PathBuf,
        content: String,
        expected: &'static str,
    },
    #[error("cannot write {value:?} to {path}: {source}; {hint}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("limit not applied: wrote {written:?} to {path} but the kernel reports {read_back:?}; refusing to run a box without this limit (check parent-group limits and kernel version)")]
    LimitMismatch {
        path: PathBuf,
        written: String,
        read_back: String,
    },
    #[error("cannot set the memory limit in {path} to {bytes} bytes: the group uses more memory than that and the kernel could not reclaim it (EBUSY); kill the box's processes first or choose a higher limit")]
    MemoryBusy {
        path: PathBuf,
        bytes: u64,
        #[source]
        source: io::Error,
    },
    #[error("controller {controller} is not available in {path}: {detail}")]
    ControllerUnavailable {
        controller: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("cannot send SIGKILL to process {pid} of cgroup {path}: {source}; are we root in the process's user namespace?")]
    Signal {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("processes {pids:?} are still in cgroup {path} after {waited:?} of SIGKILL; they are probably stuck in uninterruptible sleep (state D, see /proc/<pid>/stack); the group was left in place, retry later with CgroupManager::remove_stale")]
    KillTimeout {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
    #[error("cannot remove cgroup {path}: {source}; {hint}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
}

impl CgroupError {
    /// True when the failure means "we may not use cgroups here" (not root,
    /// read-only cgroupfs), as opposed to a broken setup.
    fn is_permission(&self) -> bool {
        let source = match self {
            CgroupError::CreateDir { source, .. }
            | CgroupError::NotWritable { source, .. }
            | CgroupError::Write { source, .. } => source,
            _ => return false,
        };
        is_permission_error(source)
    }
}

fn is_permission_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
    )
}

/// What to do about a failed write, by errno.
fn write_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EINVAL) => {
            "the kernel rejected the value (out of range or wrong format for this file)"
        }
        Some(libc::ENOENT) => {
            "the file does not exist: the controller is not enabled for this group or the group was removed"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "permission denied: run as root or give this user a delegated cgroup"
        }
        Some(libc::EROFS) => {
            "cgroupfs is mounted read-only (usual in containers): mount it read-write or run without cgroups"
        }
        Some(libc::EBUSY) => {
            "the kernel reports the group busy (v2: a group with member processes cannot enable controllers for children; move those processes into a leaf group)"
        }
        Some(libc::ESRCH) => "no such process: it has already exited",
        Some(libc::EOPNOTSUPP) => {
            "not supported by this kernel or this kind of group (threaded cgroup?)"
        }
        _ => "see the kernel's cgroup documentation for this file",
    }
}

fn mkdir_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "permission denied: run as root or give this user a delegated cgroup"
        }
        Some(libc::EROFS) => {
            "cgroupfs is mounted read-only (usual in containers): mount it read-write or run without cgroups"
        }
        Some(libc::ENOSPC) | Some(libc::EAGAIN) => {
            "the kernel refused a new group (cgroup.max.descendants / cgroup.max.depth reached?)"
        }
        _ => "check that the cgroup hierarchy is mounted and usable",
    }
}

fn rmdir_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EBUSY) => {
            "processes (or child groups) are still in it: see cgroup.procs; unreaped zombies keep a group busy until their parent waits for them"
        }
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            "permission denied: run as root"
        }
        _ => "check that the cgroup hierarchy is still mounted",
    }
}

// ---------------------------------------------------------------------------
// Pure parsing
// ---------------------------------------------------------------------------

/// One line of `/proc/self/mountinfo`, reduced to what we need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    mount_point: PathBuf,
    fstype: String,
    /// `ro` in the per-mount options (field 6).
    read_only: bool,
    /// Per-superblock options after the `-` separator; for v1 cgroups these
    /// hold the controller names, e.g. `rw,cpu,cpuacct`.
    super_options: Vec<String>,
}

/// Parses mountinfo text (see proc(5)); malformed lines are skipped.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    if fields.len() < 10 {
        return None;
    }
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fstype = fields.get(sep + 1)?;
    let super_options = fields.get(sep + 3)?;
    Some(MountEntry {
        mount_point: unescape_mount_path(fields[4]),
        fstype: (*fstype).to_owned(),
        read_only: fields[5].split(',').any(|o| o == "ro"),
        super_options: super_options.split(',').map(str::to_owned).collect(),
    })
}

/// Undoes the octal escapes (`\040` for space, etc.) the kernel uses in
/// mountinfo paths.
fn unescape_mount_path(raw: &str) -> PathBuf {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(digits) = bytes
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|d| (b'0'..=b'7').contains(d)))
            {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Writable cgroup2 mounts, in mountinfo order.
fn v2_mounts(mounts: &[MountEntry]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2" && !m.read_only)
        .map(|m| m.mount_point.clone())
        .collect()
}

/// A v1 hierarchy we use and the controllers (of those we care about) it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Mount {
    mount: PathBuf,
    controllers: Vec<&'static str>,
}

/// Picks the v1 hierarchies for the required and optional controllers.
/// `Err` explains what is missing.
fn plan_v1(mounts: &[MountEntry]) -> Result<Vec<V1Mount>, String> {
    let mut plan: Vec<V1Mount> = Vec::new();
    let mut missing = Vec::new();
    for controller in V1_REQUIRED.iter().chain(V1_OPTIONAL.iter()) {
        let carries = |m: &&MountEntry| {
            m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller)
        };
        match mounts.iter().filter(carries).find(|m| !m.read_only) {
            Some(m) => match plan.iter_mut().find(|p| p.mount == m.mount_point) {
                Some(p) => p.controllers.push(controller),
                None => plan.push(V1Mount {
                    mount: m.mount_point.clone(),
                    controllers: vec![controller],
                }),
            },
            None if V1_REQUIRED.contains(controller) => {
                if mounts.iter().any(|m| carries(&m)) {
                    missing.push(format!("{controller} (mounted read-only)"));
                } else {
                    missing.push(format!("{controller} (not mounted)"));
                }
            }
            None => {}
        }
    }
    if missing.is_empty() {
        Ok(plan)
    } else {
        Err(format!("v1 hierarchies missing: {}", missing.join(", ")))
    }
}

/// Controller names in `cgroup.controllers` / `cgroup.subtree_control`.
fn parse_controllers(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A cgroup limit value: a number or `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Max,
    Value(u64),
}

fn parse_limit(text: &str) -> Option<Limit> {
    match text.trim() {
        "max" => Some(Limit::Max),
        s => s.parse().ok().map(Limit::Value),
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Value of `key` in a flat keyed file (`key value` per line), e.g.
/// `memory.events`, `cpu.stat`, v1 `memory.oom_control`.
fn parse_keyed(text: &str, key: &str) -> Option<u64> {
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
fn parse_cpu_max(text: &str) -> Option<(Limit, u64)> {
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
fn parse_procs(text: &str) -> Option<Vec<i32>> {
    let mut pids = text
        .split_whitespace()
        .map(|s| s.parse::<i32>().ok().filter(|p| *p > 0))
        .collect::<Option<Vec<i32>>>()?;
    pids.sort_unstable();
    pids.dedup();
    Some(pids)
}

/// Whether `read` is what the kernel stores for a written memory limit:
/// equal, or rounded down to a page multiple.
fn memory_matches(written: u64, read: u64, page_size: u64) -> bool {
    read == written
        || (read < written && written - read < page_size && read.is_multiple_of(page_size))
}

/// CPU quota in microseconds per [`CPU_PERIOD_US`] for `millis` thousandths
/// of a CPU.
fn cpu_quota_us(millis: u64) -> Option<u64> {
    millis.checked_mul(CPU_PERIOD_US / 1000)
}

/// Process state letter from `/proc/<pid>/stat` content.
fn parse_stat_state(stat: &str) -> Option<char> {
    // "pid (comm) S ..."; comm may contain spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

fn validate_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 200 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("it starts with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("it contains a character outside [A-Za-z0-9_.-]");
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), CgroupError> {
    validate_component(name).map_err(|reason| CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

fn validate_parent(parent: &str) -> Result<(), CgroupError> {
    parent
        .split('/')
        .try_for_each(validate_component)
        .map_err(|reason| CgroupError::InvalidName {
            name: parent.to_owned(),
            reason,
        })
}

fn validate_memory(bytes: u64, page_size: u64) -> Result<(), CgroupError> {
    if bytes < page_size {
        return Err(CgroupError::InvalidLimit {
            what: "memory_bytes",
            value: bytes.to_string(),
            reason: format!("must be at least one page ({page_size} bytes)"),
        });
    }
    Ok(())
}

fn validate_limits(limits: &CgroupLimits, page_size: u64) -> Result<u64, CgroupError> {
    validate_memory(limits.memory_bytes, page_size)?;
    if limits.pids_max == 0 {
        return Err(CgroupError::InvalidLimit {
            what: "pids_max",
            value: "0".to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }
    match cpu_quota_us(limits.cpu_millis) {
        Some(quota) if quota >= MIN_CPU_QUOTA_US => Ok(quota),
        _ => Err(CgroupError::InvalidLimit {
            what: "cpu_millis",
            value: limits.cpu_millis.to_string(),
            reason: format!(
                "must be at least {} (the kernel's minimum quota is {MIN_CPU_QUOTA_US} us per {CPU_PERIOD_US} us period) and not overflow",
                MIN_CPU_QUOTA_US * 1000 / CPU_PERIOD_US
            ),
        }),
    }
}

// ---------------------------------------------------------------------------
// File helpers
// ---------------------------------------------------------------------------

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(raw).ok().filter(|p| *p > 0).unwrap_or(4096)
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_parsed<T>(
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
/// the file.
fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        hint: write_hint(&source),
        source,
    })
}

/// Writes `value`, reads the file back and fails unless `accept` likes what
/// the kernel reports.
fn write_checked(
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

fn write_exact(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_checked(path, value, |back| back == value)
}

/// Creates `base/rel` component by component; existing directories are fine.
fn make_dirs(base: &Path, rel: &str) -> Result<PathBuf, CgroupError> {
    let mut dir = base.to_path_buf();
    for component in rel.split('/') {
        dir.push(component);
        make_dir(&dir)?;
    }
    Ok(dir)
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
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

fn check_writable(dir: &Path) -> Result<(), CgroupError> {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|e| {
        let source = io::Error::from(e);
        CgroupError::NotWritable {
            path: dir.to_path_buf(),
            hint: mkdir_hint(&source),
            source,
        }
    })
}

/// Enables the v2 box controllers in `dir/cgroup.subtree_control` and checks
/// they are on.
fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = parse_controllers(&read_file(&path)?);
    for controller in V2_CONTROLLERS {
        if enabled.contains(controller) {
            continue;
        }
        let value = format!("+{controller}");
        if let Err(source) = write_raw(&path, &value) {
            if is_permission_error(&source) {
                return Err(CgroupError::Write {
                    path,
                    value,
                    hint: write_hint(&source),
                    source,
                });
            }
            let detail = match source.raw_os_error() {
                Some(libc::EBUSY) => format!(
                    "writing {value:?} to {} failed with EBUSY: the group has member processes, and cgroup v2 does not let such a group enable controllers for its children; move its processes into a leaf group (in a container: mkdir <mount>/init and move every pid of cgroup.procs there)",
                    path.display()
                ),
                Some(libc::EINVAL) if controller == "cpu" => format!(
                    "writing {value:?} to {} failed with EINVAL: a realtime process outside the root group prevents enabling the cpu controller",
                    path.display()
                ),
                _ => format!(
                    "writing {value:?} to {} failed: {source}; {}",
                    path.display(),
                    write_hint(&source)
                ),
            };
            return Err(CgroupError::ControllerUnavailable {
                controller,
                path: dir.to_path_buf(),
                detail,
            });
        }
        info!(path = %path.display(), value, "enabled cgroup v2 controller");
    }
    let after = parse_controllers(&read_file(&path)?);
    for controller in V2_CONTROLLERS {
        if !after.contains(controller) {
            return Err(CgroupError::ControllerUnavailable {
                controller,
                path: dir.to_path_buf(),
                detail: format!(
                    "the write to {} succeeded but the controller is not listed there afterwards",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Manager
// ---------------------------------------------------------------------------

/// One hierarchy we create box groups in.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    /// `<mount>/<parent>`.
    parent_dir: PathBuf,
    /// Controllers used from this hierarchy (v2: all of [`V2_CONTROLLERS`]).
    controllers: Vec<&'static str>,
}

/// Finds the cgroup hierarchies and creates box groups in them.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    version: CgroupVersion,
    parent: String,
    hierarchies: Vec<Hierarchy>,
}

impl CgroupManager {
    /// Finds usable cgroups. `Ok(None)` when there is no usable cgroup
    /// hierarchy with the memory, pids and cpu controllers, or we may not
    /// write to it (caller then degrades to rlimits). Prefers v2 when a
    /// cgroup2 mount has memory+pids+cpu available, else v1 when memory,
    /// pids, cpu and cpuacct v1 hierarchies are mounted and writable.
    /// `parent` is the name of our parent group, e.g. "codebeaker" (it may be
    /// a path such as "system.slice/codebeaker"); it is created if missing
    /// (v2: +memory +pids +cpu are enabled in the subtree_control of every
    /// group from the mount root down to it).
    pub fn detect(parent: &str) -> Result<Option<CgroupManager>, CgroupError> {
        validate_parent(parent)?;
        let text = fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::MountInfo {
            path: PathBuf::from(MOUNTINFO),
            source,
        })?;
        Self::detect_from(&parse_mountinfo(&text), parent)
    }

    fn detect_from(
        mounts: &[MountEntry],
        parent: &str,
    ) -> Result<Option<CgroupManager>, CgroupError> {
        for mount in v2_mounts(mounts) {
            match Self::try_v2(&mount, parent) {
                Ok(Some(manager)) => {
                    info!(description = %manager.describe(), "using cgroups");
                    return Ok(Some(manager));
                }
                Ok(None) => {}
                Err(e) if e.is_permission() => {
                    warn!(mount = %mount.display(), error = %e, "cgroup v2 mount is not usable by us");
                }
                Err(e) => return Err(e),
            }
        }
        let plan = match plan_v1(mounts) {
            Ok(plan) => plan,
            Err(reason) => {
                warn!(%reason, "no usable cgroup hierarchy (v2 without memory+pids+cpu, v1 incomplete); limits fall back to rlimits");
                return Ok(None);
            }
        };
        match Self::try_v1(plan, parent) {
            Ok(manager) => {
                info!(description = %manager.describe(), "using cgroups");
                Ok(Some(manager))
            }
            Err(e) if e.is_permission() => {
                warn!(error = %e, "cgroup v1 hierarchies are not writable by us; limits fall back to rlimits");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn try_v2(mount: &Path, parent: &str) -> Result<Option<CgroupManager>, CgroupError> {
        let available = match fs::read_to_string(mount.join("cgroup.controllers")) {
            Ok(text) => parse_controllers(&text),
            Err(e) => {
                debug!(mount = %mount.display(), error = %e, "cannot read cgroup.controllers of cgroup2 mount");
                return Ok(None);
            }
        };
        let missing: Vec<&str> = V2_CONTROLLERS
            .into_iter()
            .filter(|c| !available.contains(*c))
            .collect();
        if !missing.is_empty() {
            info!(mount = %mount.display(), ?missing, "cgroup2 mount lacks controllers (they are bound to v1 or disabled); not using v2 there");
            return Ok(None);
        }
        let mut dir = mount.to_path_buf();
        for component in parent.split('/') {
            enable_v2_controllers(&dir)?;
            dir.push(component);
            make_dir(&dir)?;
        }
        let available = parse_controllers(&read_file(&dir.join("cgroup.controllers"))?);
        if let Some(controller) = V2_CONTROLLERS.into_iter().find(|c| !available.contains(*c)) {
            return Err(CgroupError::ControllerUnavailable {
                controller,
                path: dir,
                detail: "not listed in its cgroup.controllers although enabled in the parent's cgroup.subtree_control".to_owned(),
            });
        }
        enable_v2_controllers(&dir)?;
        check_writable(&dir)?;
        Ok(Some(CgroupManager {
            version: CgroupVersion::V2,
            parent: parent.to_owned(),
            hierarchies: vec![Hierarchy {
                mount: mount.to_path_buf(),
                parent_dir: dir,
                controllers: V2_CONTROLLERS.to_vec(),
            }],
        }))
    }

    fn try_v1(plan: Vec<V1Mount>, parent: &str) -> Result<CgroupManager, CgroupError> {
        let mut hierarchies = Vec::with_capacity(plan.len());
        for m in plan {
            let prepared = make_dirs(&m.mount, parent).and_then(|dir| {
                check_writable(&dir)?;
                Ok(dir)
            });
            match prepared {
                Ok(parent_dir) => hierarchies.push(Hierarchy {
                    mount: m.mount,
                    parent_dir,
                    controllers: m.controllers,
                }),
                Err(e) if m.controllers.iter().all(|c| V1_OPTIONAL.contains(c)) => {
                    warn!(mount = %m.mount.display(), error = %e, "optional v1 hierarchy not usable; kill_all will not freeze");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(CgroupManager {
            version: CgroupVersion::V1,
            parent: parent.to_owned(),
            hierarchies,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Human-readable description for diagnostics: version, directories and
    /// controllers.
    pub fn describe(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        match self.version {
            CgroupVersion::V2 => {
                let parts: Vec<String> = self
                    .hierarchies
                    .iter()
                    .map(|h| {
                        let has = |f: &str| yes_no(h.parent_dir.join(f).exists());
                        format!(
                            "{} (mount {}), controllers {}; cgroup.kill: {}, cgroup.freeze: {}, memory.swap.max: {}, memory.peak: {}",
                            h.parent_dir.display(),
                            h.mount.display(),
                            h.controllers.join(" "),
                            has("cgroup.kill"),
                            has("cgroup.freeze"),
                            has("memory.swap.max"),
                            has("memory.peak"),
                        )
                    })
                    .collect();
                format!(
                    "cgroup v2, parent group {:?}: {}",
                    self.parent,
                    parts.join("; ")
                )
            }
            CgroupVersion::V1 => {
                let mut parts: Vec<String> = self
                    .hierarchies
                    .iter()
                    .map(|h| format!("{} -> {}", h.controllers.join(","), h.parent_dir.display()))
                    .collect();
                if !self
                    .hierarchies
                    .iter()
                    .any(|h| h.controllers.contains(&"freezer"))
                {
                    parts.push("freezer not available (kill_all does not freeze)".to_owned());
                }
                if let Some(h) = self
                    .hierarchies
                    .iter()
                    .find(|h| h.controllers.contains(&"memory"))
                {
                    parts.push(format!(
                        "memory.memsw: {}",
                        yes_no(h.parent_dir.join("memory.memsw.limit_in_bytes").exists())
                    ));
                }
                format!(
                    "cgroup v1, parent group {:?}: {}",
                    self.parent,
                    parts.join("; ")
                )
            }
        }
    }

    /// Creates the group `name` under the parent, applies `limits`, reads
    /// every value back and fails (removing the group) if a value read back
    /// differs from what was written. Fails with
    /// [`CgroupError::AlreadyExists`] if the group exists.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<BoxCgroup, CgroupError> {
        validate_name(name)?;
        let page_size = page_size();
        let quota_us = validate_limits(limits, page_size)?;
        let mut group = BoxCgroup::new(self.version, name, page_size);
        for h in &self.hierarchies {
            let path = h.parent_dir.join(name);
            if let Err(source) = fs::create_dir(&path) {
                let err = if source.kind() == io::ErrorKind::AlreadyExists {
                    CgroupError::AlreadyExists { path }
                } else {
                    CgroupError::CreateDir {
                        path,
                        hint: mkdir_hint(&source),
                        source,
                    }
                };
                group.discard();
                return Err(err);
            }
            group.dirs.push(GroupDir {
                path,
                controllers: h.controllers.clone(),
            });
        }
        if let Err(e) = group.apply_limits(limits, quota_us) {
            group.discard();
            return Err(e);
        }
        info!(
            cgroup = name,
            memory_bytes = limits.memory_bytes,
            pids_max = limits.pids_max,
            cpu_millis = limits.cpu_millis,
            "created box cgroup"
        );
        Ok(group)
    }

    /// Names of existing child groups under our parent, in all hierarchies
    /// (for stale clean-up and leak checks), sorted.
    pub fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = BTreeSet::new();
        for h in &self.hierarchies {
            let read_err = |source| CgroupError::Read {
                path: h.parent_dir.clone(),
                source,
            };
            for entry in fs::read_dir(&h.parent_dir).map_err(read_err)? {
                let entry = entry.map_err(read_err)?;
                if !entry.file_type().map_err(read_err)?.is_dir() {
                    continue;
                }
                match entry.file_name().into_string() {
                    Ok(name) => {
                        names.insert(name);
                    }
                    Err(raw) => {
                        warn!(parent = %h.parent_dir.display(), name = ?raw, "ignoring cgroup with a non-UTF-8 name");
                    }
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Kills every process in the child group `name` and removes it in every
    /// hierarchy (used for groups left by a crashed process). A group that
    /// does not exist is not an error.
    pub fn remove_stale(&self, name: &str) -> Result<(), CgroupError> {
        validate_name(name)?;
        let mut group = BoxCgroup::new(self.version, name, page_size());
        group.dirs = self
            .hierarchies
            .iter()
            .map(|h| GroupDir {
                path: h.parent_dir.join(name),
                controllers: h.controllers.clone(),
            })
            .filter(|d| d.path.is_dir())
            .collect();
        if group.dirs.is_empty() {
            group.destroyed = true;
            debug!(cgroup = name, "stale cgroup already gone");
            return Ok(());
        }
        debug!(cgroup = name, "removing stale cgroup");
        group.destroy()
    }
}

// ---------------------------------------------------------------------------
// One box
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GroupDir {
    path: PathBuf,
    controllers: Vec<&'static str>,
}

/// The cgroup of one box. Dropping it without [`BoxCgroup::destroy`] kills
/// its processes and removes it on a best-effort basis.
#[derive(Debug)]
pub struct BoxCgroup {
    version: CgroupVersion,
    name: String,
    dirs: Vec<GroupDir>,
    page_size: u64,
    /// v2: the `memory.peak` fd a reset was written to; a reset applies only
    /// to reads through that same fd (kernel >= 6.12).
    peak_fd: Mutex<Option<fs::File>>,
    destroyed: bool,
}

impl BoxCgroup {
    fn new(version: CgroupVersion, name: &str, page_size: u64) -> BoxCgroup {
        BoxCgroup {
            version,
            name: name.to_owned(),
            dirs: Vec::new(),
            page_size,
            peak_fd: Mutex::new(None),
            destroyed: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory of the hierarchy carrying `controller` (v2: the one directory).
    fn dir_of(&self, controller: &'static str) -> Result<&Path, CgroupError> {
        let found = match self.version {
            CgroupVersion::V2 => self.dirs.first(),
            CgroupVersion::V1 => self
                .dirs
                .iter()
                .find(|d| d.controllers.contains(&controller)),
        };
        found
            .map(|d| d.path.as_path())
            .ok_or_else(|| CgroupError::ControllerUnavailable {
                controller,
                path: self.primary_path(),
                detail: format!("box {:?} has no directory in that hierarchy", self.name),
            })
    }

    /// The directory named in messages: memory hierarchy (v1) or the group (v2).
    fn primary_path(&self) -> PathBuf {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&"memory"))
            .or(self.dirs.first())
            .map(|d| d.path.clone())
            .unwrap_or_else(|| PathBuf::from(&self.name))
    }

    fn freezer_dir(&self) -> Option<&Path> {
        match self.version {
            CgroupVersion::V2 => self
                .dirs
                .first()
                .map(|d| d.path.as_path())
                .filter(|p| p.join("cgroup.freeze").exists()),
            CgroupVersion::V1 => self
                .dirs
                .iter()
                .find(|d| d.controllers.contains(&"freezer"))
                .map(|d| d.path.as_path()),
        }
    }

    fn apply_limits(&self, limits: &CgroupLimits, quota_us: u64) -> Result<(), CgroupError> {
        let pids = self.dir_of("pids")?;
        let cpu = self.dir_of("cpu")?;
        self.write_memory_limit(limits.memory_bytes)?;
        let pids_max = limits.pids_max.to_string();
        write_exact(&pids.join("pids.max"), &pids_max)?;
        match self.version {
            CgroupVersion::V1 => {
                write_exact(&self.dir_of("memory")?.join("memory.swappiness"), "0")?;
                write_exact(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write_exact(&cpu.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            }
            CgroupVersion::V2 => {
                write_checked(
                    &cpu.join("cpu.max"),
                    &format!("{quota_us} {CPU_PERIOD_US}"),
                    |back| parse_cpu_max(back) == Some((Limit::Value(quota_us), CPU_PERIOD_US)),
                )?;
            }
        }
        Ok(())
    }

    /// Writes the memory limit and the swap limit, verifying both.
    fn write_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        let dir = self.dir_of("memory")?;
        let value = bytes.to_string();
        let page_size = self.page_size;
        let accept =
            |back: &str| parse_u64(back).is_some_and(|r| memory_matches(bytes, r, page_size));
        match self.version {
            CgroupVersion::V1 => {
                let limit = dir.join("memory.limit_in_bytes");
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                // memsw must never be below the plain limit: raise it first,
                // lower it last.
                let mut order = vec![limit.as_path()];
                if memsw.exists() {
                    let current = read_parsed(&limit, "a number of bytes", parse_u64)?;
                    if bytes > current {
                        order.insert(0, &memsw);
                    } else {
                        order.push(&memsw);
                    }
                }
                for path in order {
                    write_checked(path, &value, accept).map_err(|e| match e {
                        CgroupError::Write { path, source, .. }
                            if source.raw_os_error() == Some(libc::EBUSY) =>
                        {
                            CgroupError::MemoryBusy {
                                path,
                                bytes,
                                source,
                            }
                        }
                        other => other,
                    })?;
                }
            }
            CgroupVersion::V2 => {
                write_checked(&dir.join("memory.max"), &value, |back| {
                    parse_limit(back).is_some_and(|l| match l {
                        Limit::Value(r) => memory_matches(bytes, r, page_size),
                        Limit::Max => false,
                    })
                })?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write_exact(&swap, "0")?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the group in every hierarchy (v1: memory,
    /// pids, cpu, cpuacct and freezer if mounted) by writing to
    /// `cgroup.procs`. On error the process may already be in some of the
    /// hierarchies: kill it rather than run it.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidLimit {
                what: "pid",
                value: pid.to_string(),
                reason: "a process id must be positive".to_owned(),
            });
        }
        let value = pid.to_string();
        for dir in &self.dirs {
            write_file(&dir.path.join("cgroup.procs"), &value)?;
        }
        debug!(cgroup = %self.name, pid, "process added to cgroup");
        Ok(())
    }

    /// Creates the box's `run` and `workers` child groups, which the init uses to end every run
    /// empty (see [`crate::wire::RunGroupPaths`]). They carry no controller of their own (limits
    /// stay on the box's group), so on v2 the box's group may keep the init as a member. On v1
    /// they live in the freezer hierarchy, or in the pids hierarchy when there is no freezer.
    pub fn create_run_groups(&self) -> Result<crate::wire::RunGroupPaths, CgroupError> {
        use crate::wire::GroupKill;
        let (dir, kill) = match self.version {
            CgroupVersion::V2 => {
                let dir = self.dir_of("pids")?;
                if !dir.join("cgroup.kill").exists() {
                    return Err(CgroupError::ControllerUnavailable {
                        controller: "cgroup.kill",
                        path: dir.to_path_buf(),
                        detail:
                            "cgroup v2 without cgroup.kill (Linux older than 5.14): runs could \
                                 not be ended as a whole; use a newer kernel"
                                .to_owned(),
                    });
                }
                (dir, GroupKill::V2Kill)
            }
            CgroupVersion::V1 => match self.freezer_dir() {
                Some(dir) => (dir, GroupKill::V1Freezer),
                None => (self.dir_of("pids")?, GroupKill::V1Signal),
            },
        };
        let run = dir.join("run");
        let workers = dir.join("workers");
        for path in [&run, &workers] {
            fs::create_dir(path).map_err(|source| CgroupError::CreateDir {
                path: path.clone(),
                hint: mkdir_hint(&source),
                source,
            })?;
        }
        Ok(crate::wire::RunGroupPaths { run, workers, kill })
    }

    /// Changes the memory limit (and memsw / swap) and reads it back.
    /// Lowering below current usage may fail with EBUSY on v1, reported as
    /// [`CgroupError::MemoryBusy`].
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        validate_memory(bytes, self.page_size)?;
        self.write_memory_limit(bytes)?;
        debug!(cgroup = %self.name, bytes, "memory limit changed");
        Ok(())
    }

    /// Resets the peak-memory counter before a run (v1: writes 0 to
    /// `memory.max_usage_in_bytes`; v2: writes to `memory.peak` where the
    /// kernel supports it (>= 6.12) and keeps that fd for [`stats`](Self::stats),
    /// since a v2 reset only applies to reads through the same fd).
    /// Failures are logged, never fatal.
    pub fn reset_peak(&self) {
        let Ok(dir) = self.dir_of("memory") else {
            return;
        };
        match self.version {
            CgroupVersion::V1 => {
                if let Err(e) = write_file(&dir.join("memory.max_usage_in_bytes"), "0") {
                    warn!(cgroup = %self.name, error = %e, "cannot reset peak memory counter");
                }
            }
            CgroupVersion::V2 => {
                let path = dir.join("memory.peak");
                let opened = fs::OpenOptions::new().read(true).write(true).open(&path);
                let result = opened.and_then(|mut file| {
                    file.write_all(b"reset")?;
                    Ok(file)
                });
                let mut slot = self.peak_fd.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(file) => *slot = Some(file),
                    Err(e) => {
                        *slot = None;
                        debug!(cgroup = %self.name, path = %path.display(), error = %e, "memory.peak reset not supported by this kernel; peak covers the group's lifetime");
                    }
                }
            }
        }
    }

    /// Reads the group's counters.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let memory = self.dir_of("memory")?;
        let pids_current = read_parsed(
            &self.dir_of("pids")?.join("pids.current"),
            "a number",
            parse_u64,
        )?;
        match self.version {
            CgroupVersion::V1 => {
                let oom_path = memory.join("memory.oom_control");
                let oom_kills = parse_keyed(&read_file(&oom_path)?, "oom_kill").unwrap_or_else(|| {
                    debug!(path = %oom_path.display(), "no oom_kill counter (kernel < 4.13); reporting 0");
                    0
                });
                Ok(CgroupStats {
                    memory_peak_bytes: Some(read_parsed(
                        &memory.join("memory.max_usage_in_bytes"),
                        "a number of bytes",
                        parse_u64,
                    )?),
                    oom_kills,
                    cpu_usage_ns: read_parsed(
                        &self.dir_of("cpuacct")?.join("cpuacct.usage"),
                        "a number of nanoseconds",
                        parse_u64,
                    )?,
                    pids_current,
                })
            }
            CgroupVersion::V2 => {
                let cpu_path = self.dir_of("cpu")?.join("cpu.stat");
                let usage_usec = read_parsed(&cpu_path, "a usage_usec line", |t| {
                    parse_keyed(t, "usage_usec")
                })?;
                let oom_kills = parse_keyed(&read_file(&memory.join("memory.events"))?, "oom_kill")
                    .unwrap_or(0);
                Ok(CgroupStats {
                    memory_peak_bytes: self.read_peak_v2(memory)?,
                    oom_kills,
                    cpu_usage_ns: usage_usec.saturating_mul(1000),
                    pids_current,
                })
            }
        }
    }

    fn read_peak_v2(&self, dir: &Path) -> Result<Option<u64>, CgroupError> {
        let path = dir.join("memory.peak");
        let mut slot = self.peak_fd.lock().unwrap_or_else(|p| p.into_inner());
        let text = if let Some(file) = slot.as_mut() {
            let mut text = String::new();
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_string(&mut text))
                .map_err(|source| CgroupError::Read {
                    path: path.clone(),
                    source,
                })?;
            text
        } else {
            match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(CgroupError::Read { path, source }),
            }
        };
        parse_u64(&text)
            .map(Some)
            .ok_or_else(|| CgroupError::Parse {
                path,
                content: text.trim().to_owned(),
                expected: "a number of bytes",
            })
    }

    /// PIDs (host view) of all processes in the group (`cgroup.procs` of
    /// the memory or unified hierarchy).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let path = self.dir_of("memory")?.join("cgroup.procs");
        read_parsed(&path, "one process id per line", parse_procs)
    }

    /// Processes in the group and any child groups, in every hierarchy.
    /// A directory that vanished counts as empty.
    fn member_pids(&self) -> Result<BTreeSet<i32>, CgroupError> {
        let mut pids = BTreeSet::new();
        for dir in &self.dirs {
            collect_procs(&dir.path, &mut pids)?;
        }
        Ok(pids)
    }

    /// Members that are not zombies (a zombie is dead; only its parent's
    /// wait() can release it).
    fn live_pids(&self) -> Result<Vec<i32>, CgroupError> {
        Ok(self
            .member_pids()?
            .into_iter()
            .filter(|pid| !is_zombie(*pid))
            .collect())
    }

    /// Kills every process in the group, including stopped ones and ones
    /// that keep forking: v2 uses `cgroup.kill` when present; otherwise (and
    /// on v1) freezes the group when possible, SIGKILLs every member, thaws,
    /// and repeats until the group is empty, for at most 2 s.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let start = Instant::now();
        let kill_file = match self.version {
            CgroupVersion::V2 => self
                .dirs
                .first()
                .map(|d| d.path.join("cgroup.kill"))
                .filter(|p| p.exists()),
            CgroupVersion::V1 => None,
        };
        let mut use_kill_file = kill_file.is_some();
        let mut interval = POLL_INTERVAL;
        loop {
            let live = self.live_pids()?;
            if live.is_empty() {
                debug!(cgroup = %self.name, elapsed = ?start.elapsed(), "cgroup is empty");
                return Ok(());
            }
            if start.elapsed() >= KILL_TIMEOUT {
                return Err(CgroupError::KillTimeout {
                    path: self.primary_path(),
                    pids: live,
                    waited: start.elapsed(),
                });
            }
            match (&kill_file, use_kill_file) {
                (Some(path), true) => {
                    if let Err(e) = write_file(path, "1") {
                        warn!(cgroup = %self.name, error = %e, "cgroup.kill failed; falling back to freeze + SIGKILL");
                        use_kill_file = false;
                        continue;
                    }
                }
                _ => {
                    let frozen = self.freeze();
                    let signalled = self.signal_members();
                    if frozen {
                        self.thaw();
                    }
                    signalled?;
                }
            }
            thread::sleep(interval);
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
        }
    }

    /// Freezes the group so no member can fork while we signal. Returns
    /// whether a freeze was requested (and a thaw is due).
    fn freeze(&self) -> bool {
        let Some(dir) = self.freezer_dir() else {
            return false;
        };
        let (file, value) = match self.version {
            CgroupVersion::V1 => ("freezer.state", "FROZEN"),
            CgroupVersion::V2 => ("cgroup.freeze", "1"),
        };
        if let Err(e) = write_file(&dir.join(file), value) {
            warn!(cgroup = %self.name, error = %e, "cannot freeze cgroup; signalling without freezing");
            return false;
        }
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            let done = match self.version {
                CgroupVersion::V1 => fs::read_to_string(dir.join("freezer.state"))
                    .is_ok_and(|s| s.trim() == "FROZEN"),
                CgroupVersion::V2 => fs::read_to_string(dir.join("cgroup.events"))
                    .is_ok_and(|s| parse_keyed(&s, "frozen") == Some(1)),
            };
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                debug!(cgroup = %self.name, "freeze not complete yet; signalling anyway");
                return true;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn thaw(&self) {
        let Some(dir) = self.freezer_dir() else {
            return;
        };
        let (file, value) = match self.version {
            CgroupVersion::V1 => ("freezer.state", "THAWED"),
            CgroupVersion::V2 => ("cgroup.freeze", "0"),
        };
        if let Err(e) = write_file(&dir.join(file), value) {
            warn!(cgroup = %self.name, error = %e, "cannot thaw cgroup; killed processes cannot exit until it is thawed");
        }
    }

    /// SIGKILLs every member without racing against pid reuse: a pidfd is
    /// opened for each listed pid, membership is read again, and only pidfds
    /// whose pid is still listed are signalled. A pid cannot be reused while
    /// its process is alive or unreaped, so a pid listed after the pidfd was
    /// opened is that very process. Kernels without pidfd_open (< 5.3) fall
    /// back to kill(2).
    fn signal_members(&self) -> Result<(), CgroupError> {
        let mut targets: Vec<(i32, Pid, Option<OwnedFd>)> = Vec::new();
        for raw in self.member_pids()? {
            let Some(pid) = Pid::from_raw(raw) else {
                continue;
            };
            match pidfd_open(pid, PidfdFlags::empty()) {
                Ok(fd) => targets.push((raw, pid, Some(fd))),
                Err(Errno::SRCH) => {}
                Err(Errno::NOSYS) => targets.push((raw, pid, None)),
                Err(e) => {
                    warn!(pid = raw, error = %e, "pidfd_open failed; using kill(2)");
                    targets.push((raw, pid, None));
                }
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let still = self.member_pids()?;
        for (raw, pid, fd) in targets {
            if !still.contains(&raw) {
                continue;
            }
            let sent = match &fd {
                Some(fd) => pidfd_send_signal(fd, Signal::KILL),
                None => kill_process(pid, Signal::KILL),
            };
            match sent {
                Ok(()) | Err(Errno::SRCH) => {}
                Err(e) => {
                    return Err(CgroupError::Signal {
                        pid: raw,
                        path: self.primary_path(),
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// kill_all, then rmdir the group in every hierarchy, retrying EBUSY for
    /// up to 2 s (the kernel releases a group shortly after its last process
    /// is reaped). If processes cannot be killed the group is left in place.
    pub fn destroy(mut self) -> Result<(), CgroupError> {
        self.destroy_inner()
    }

    fn destroy_inner(&mut self) -> Result<(), CgroupError> {
        if self.destroyed {
            return Ok(());
        }
        self.destroyed = true;
        *self.peak_fd.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.kill_all()?;
        let deadline = Instant::now() + RMDIR_TIMEOUT;
        let mut first_err = None;
        for dir in self.dirs.iter().rev() {
            if let Err(e) = remove_tree(&dir.path, deadline) {
                warn!(cgroup = %self.name, error = %e, "cannot remove cgroup directory");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => {
                info!(cgroup = %self.name, "removed box cgroup");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Removes what `create` made after a failure; no process was added.
    fn discard(&mut self) {
        if let Err(e) = self.destroy_inner() {
            warn!(cgroup = %self.name, error = %e, "cannot remove half-created cgroup; remove_stale will clean it up");
        }
    }
}

impl Drop for BoxCgroup {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        if let Err(e) = self.destroy_inner() {
            warn!(cgroup = %self.name, error = %e, "best-effort destroy of dropped box cgroup failed; remove_stale will clean it up");
        }
    }
}

/// Adds the pids of `dir` and of its child groups to `pids`.
fn collect_procs(dir: &Path, pids: &mut BTreeSet<i32>) -> Result<(), CgroupError> {
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

fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
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
fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    for child in child_dirs(dir)? {
        remove_tree(&child, deadline)?;
    }
    let mut interval = POLL_INTERVAL;
    loop {
        match fs::remove_dir(dir) {
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

/// True only when /proc positively says the process is a zombie; anything
/// unreadable counts as alive so that a missing /proc never makes a group
/// look empty.
///
/// A thread-group leader that called `SYS_exit` while its other threads run shows as a zombie too;
/// it is alive until its last thread ends, so a zombie with more than one thread is not dead.
fn is_zombie(pid: i32) -> bool {
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat_state(&s))
        == Some('Z');
    zombie && thread_count(pid) <= 1
}

/// Threads of `pid` as `/proc/<pid>/status` counts them (unreadable: 2, so "alive").
fn thread_count(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_keyed(&s.replace(':', ""), "Threads"))
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ----- fixtures --------------------------------------------------------

    /// This VM: every v1 controller in its own hierarchy, empty cgroup2.
    const V1_SEPARATE: &str = "\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A modern systemd host: pure v2.
    const PURE_V2: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
36 25 0:31 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
";

    /// systemd "hybrid" (Ubuntu 20.04 style): v1 controllers with combined
    /// cpu,cpuacct, plus a cgroup2 mount for systemd only.
    const HYBRID: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
34 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,freezer
";

    /// A Docker container: cgroup2 mounted read-only.
    const DOCKER_RO_V2: &str = "\
612 611 0:95 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
";

    fn v1_plan(text: &str) -> Result<Vec<V1Mount>, String> {
        plan_v1(&parse_mountinfo(text))
    }

    // ----- parsing ---------------------------------------------------------

    #[test]
    fn parses_mountinfo_fields() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 8);
        assert_eq!(mounts[0].fstype, "tmpfs");
        assert!(mounts[0].read_only);
        let cpu = &mounts[3];
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.fstype, "cgroup");
        assert!(!cpu.read_only);
        assert_eq!(cpu.super_options, vec!["rw", "cpu", "cpuacct"]);
    }

    #[test]
    fn mountinfo_handles_optional_fields_escapes_and_garbage() {
        let text = "\
50 1 0:40 / /mnt/my\\040cgroup rw shared:1 master:2 - cgroup cgroup rw,memory
not a mountinfo line
51 1 0:41 / /x rw - cgroup2
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/my cgroup"));
        assert_eq!(mounts[0].super_options, vec!["rw", "memory"]);
        assert_eq!(unescape_mount_path("a\\134b\\011"), PathBuf::from("a\\b\t"));
        assert_eq!(
            unescape_mount_path("trailing\\04"),
            PathBuf::from("trailing\\04")
        );
        assert_eq!(unescape_mount_path("\\999"), PathBuf::from("\\999"));
    }

    #[test]
    fn plan_for_this_vm_separate_hierarchies() {
        let mounts = parse_mountinfo(V1_SEPARATE);
        assert_eq!(
            v2_mounts(&mounts),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        let plan = v1_plan(V1_SEPARATE).expect("complete v1");
        let expected: Vec<(&str, Vec<&str>)> = vec![
            ("/sys/fs/cgroup/memory", vec!["memory"]),
            ("/sys/fs/cgroup/pids", vec!["pids"]),
            ("/sys/fs/cgroup/cpu", vec!["cpu"]),
            ("/sys/fs/cgroup/cpuacct", vec!["cpuacct"]),
            ("/sys/fs/cgroup/freezer", vec!["freezer"]),
        ];
        let got: Vec<(&str, Vec<&str>)> = plan
            .iter()
            .map(|m| (m.mount.to_str().unwrap_or_default(), m.controllers.clone()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn plan_for_hybrid_host_combined_cpu_cpuacct() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(
            v2_mounts(&mounts),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        let plan = v1_plan(HYBRID).expect("complete v1");
        assert_eq!(plan.len(), 4);
        let cpu = plan
            .iter()
            .find(|m| m.controllers.contains(&"cpu"))
            .expect("cpu planned");
        assert_eq!(cpu.mount, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert!(plan.iter().all(|m| !m.mount.ends_with("systemd")));
        assert!(plan.iter().all(|m| !m.mount.ends_with("net_cls,net_prio")));
    }

    #[test]
    fn plan_for_pure_v2_host() {
        let mounts = parse_mountinfo(PURE_V2);
        assert_eq!(v2_mounts(&mounts), vec![PathBuf::from("/sys/fs/cgroup")]);
        let err = v1_plan(PURE_V2).expect_err("no v1");
        assert!(err.contains("memory (not mounted)"), "{err}");
    }

    #[test]
    fn read_only_mounts_are_not_used() {
        assert!(v2_mounts(&parse_mountinfo(DOCKER_RO_V2)).is_empty());
        let ro_memory = V1_SEPARATE.replace(
            "/sys/fs/cgroup/memory rw,relatime",
            "/sys/fs/cgroup/memory ro,relatime",
        );
        let err = v1_plan(&ro_memory).expect_err("memory is read-only");
        assert!(err.contains("memory (mounted read-only)"), "{err}");
        // Missing freezer is fine.
        let no_freezer: String = V1_SEPARATE
            .lines()
            .filter(|l| !l.contains("freezer"))
            .map(|l| format!("{l}\n"))
            .collect();
        let plan = v1_plan(&no_freezer).expect("freezer is optional");
        assert!(plan.iter().all(|m| !m.controllers.contains(&"freezer")));
        let no_pids: String = V1_SEPARATE
            .lines()
            .filter(|l| !l.contains("pids"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(v1_plan(&no_pids).is_err());
    }

    #[test]
    fn detect_from_read_only_fixture_gives_none() {
        let mounts = parse_mountinfo(DOCKER_RO_V2);
        let found = CgroupManager::detect_from(&mounts, "codebeaker").expect("no error");
        assert!(found.is_none());
    }

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

    #[test]
    fn memory_readback_allows_page_rounding_only() {
        assert!(memory_matches(67_108_864, 67_108_864, 4096));
        assert!(memory_matches(100_000, 98_304, 4096));
        assert!(!memory_matches(100_000, 94_208, 4096));
        assert!(!memory_matches(100_000, 100_001, 4096));
        assert!(!memory_matches(100_000, 98_305, 4096));
        assert!(!memory_matches(67_108_864, 9_223_372_036_854_771_712, 4096));
        assert!(memory_matches(100_000, 65_536, 65_536));
    }

    #[test]
    fn validates_names_and_limits() {
        assert!(validate_name("box-1_a.b").is_ok());
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "é",
            &"x".repeat(201),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_parent("system.slice/codebeaker").is_ok());
        assert!(validate_parent("a//b").is_err());
        assert!(validate_parent("/abs").is_err());
        assert!(validate_parent("a/../b").is_err());

        let ok = CgroupLimits {
            memory_bytes: 64 << 20,
            pids_max: 16,
            cpu_millis: 500,
        };
        assert_eq!(validate_limits(&ok, 4096).ok(), Some(50_000));
        let zero_mem = CgroupLimits {
            memory_bytes: 100,
            ..ok
        };
        assert!(validate_limits(&zero_mem, 4096).is_err());
        let zero_pids = CgroupLimits { pids_max: 0, ..ok };
        assert!(validate_limits(&zero_pids, 4096).is_err());
        let tiny_cpu = CgroupLimits {
            cpu_millis: 9,
            ..ok
        };
        assert!(validate_limits(&tiny_cpu, 4096).is_err());
        let min_cpu = CgroupLimits {
            cpu_millis: 10,
            ..ok
        };
        assert_eq!(validate_limits(&min_cpu, 4096).ok(), Some(1000));
        let huge_cpu = CgroupLimits {
            cpu_millis: u64::MAX,
            ..ok
        };
        assert!(validate_limits(&huge_cpu, 4096).is_err());
    }

    #[test]
    fn parses_proc_stat_state() {
        assert_eq!(parse_stat_state("123 (sleep) S 1 2 3"), Some('S'));
        assert_eq!(parse_stat_state("123 (a) b) Z 1 2 3"), Some('Z'));
        assert_eq!(parse_stat_state("garbage"), None);
    }

    #[test]
    fn version_serializes_lowercase() {
        // serde_json is a regular dependency of the crate.
        assert_eq!(
            serde_json::to_string(&CgroupVersion::V2).ok().as_deref(),
            Some("\"v2\"")
        );
        assert_eq!(
            serde_json::to_string(&CgroupVersion::V1).ok().as_deref(),
            Some("\"v1\"")
        );
    }

    // ----- real cgroups (root only) ------------------------------------------

    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};

    const TEST_PARENT: &str = "codebeaker-test";

    fn manager() -> Option<CgroupManager> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: cgroup tests need root");
            return None;
        }
        match CgroupManager::detect(TEST_PARENT) {
            Ok(Some(m)) => Some(m),
            Ok(None) => {
                eprintln!("skipping: no usable cgroups on this machine");
                None
            }
            Err(e) => panic!("detect failed: {e}"),
        }
    }

    fn unique(tag: &str) -> String {
        format!("t{}-{tag}", std::process::id())
    }

    fn limits(memory_bytes: u64) -> CgroupLimits {
        CgroupLimits {
            memory_bytes,
            pids_max: 16,
            cpu_millis: 500,
        }
    }

    fn group_dirs(m: &CgroupManager, name: &str) -> Vec<PathBuf> {
        m.hierarchies
            .iter()
            .map(|h| h.parent_dir.join(name))
            .collect()
    }

    fn read(path: PathBuf) -> String {
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// Spawns `cmd`, which is gated on a line on stdin so it can be moved
    /// into the group before it does anything.
    fn spawn_gated(script: &str) -> Child {
        Command::new("/usr/bin/python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3")
    }

    fn release(child: &mut Child) {
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write to child");
        stdin.flush().expect("flush");
    }

    fn wait_line(child: &mut Child) -> String {
        let stdout = child.stdout.as_mut().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read child");
        line
    }

    fn spawn_sleep() -> Child {
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep")
    }

    fn pid_of(child: &Child) -> i32 {
        i32::try_from(child.id()).expect("pid fits i32")
    }

    fn assert_killed(child: &mut Child) {
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    #[test]
    fn describe_and_version() {
        let Some(m) = manager() else { return };
        let text = m.describe();
        assert!(text.contains(TEST_PARENT), "{text}");
        match m.version() {
            CgroupVersion::V1 => {
                for c in V1_REQUIRED {
                    assert!(text.contains(c), "{text}");
                }
            }
            CgroupVersion::V2 => assert!(text.contains("memory pids cpu"), "{text}"),
        }
        eprintln!("{text}");
    }

    #[test]
    fn create_reads_back_limits_then_destroy_removes_it() {
        let Some(m) = manager() else { return };
        let name = unique("limits");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        assert_eq!(cg.name(), name);
        let mem = cg.dir_of("memory").expect("memory dir").to_path_buf();
        let pids = cg.dir_of("pids").expect("pids dir").to_path_buf();
        let cpu = cg.dir_of("cpu").expect("cpu dir").to_path_buf();
        assert_eq!(read(pids.join("pids.max")), "16");
        match m.version() {
            CgroupVersion::V1 => {
                assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
                if mem.join("memory.memsw.limit_in_bytes").exists() {
                    assert_eq!(read(mem.join("memory.memsw.limit_in_bytes")), "67108864");
                }
                assert_eq!(read(mem.join("memory.swappiness")), "0");
                assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
                assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
            }
            CgroupVersion::V2 => {
                assert_eq!(read(mem.join("memory.max")), "67108864");
                assert_eq!(read(cpu.join("cpu.max")), "50000 100000");
            }
        }
        assert!(m.list().expect("list").contains(&name));
        assert!(cg.pids().expect("pids").is_empty());
        let stats = cg.stats().expect("stats");
        assert_eq!(stats.pids_current, 0);
        assert_eq!(stats.oom_kills, 0);

        // The same name again is refused and the first group stays intact.
        let again = m.create(&name, &limits(64 << 20));
        assert!(
            matches!(again, Err(CgroupError::AlreadyExists { .. })),
            "{again:?}"
        );
        assert!(group_dirs(&m, &name).iter().all(|d| d.is_dir()));

        cg.destroy().expect("destroy");
        assert!(group_dirs(&m, &name).iter().all(|d| !d.exists()));
        assert!(!m.list().expect("list").contains(&name));
    }

    #[test]
    fn invalid_limits_create_nothing() {
        let Some(m) = manager() else { return };
        let name = unique("invalid");
        let bad = CgroupLimits {
            cpu_millis: 0,
            ..limits(64 << 20)
        };
        let err = m.create(&name, &bad).expect_err("invalid");
        assert!(matches!(err, CgroupError::InvalidLimit { .. }), "{err}");
        assert!(group_dirs(&m, &name).iter().all(|d| !d.exists()));
        assert!(m.create("../escape", &limits(64 << 20)).is_err());
    }

    #[test]
    fn process_is_tracked_and_killed() {
        let Some(m) = manager() else { return };
        let name = unique("proc");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        let mut child = spawn_sleep();
        let pid = pid_of(&child);
        cg.add_process(pid).expect("add");
        assert_eq!(cg.pids().expect("pids"), vec![pid]);
        for dir in group_dirs(&m, &name) {
            assert!(read(dir.join("cgroup.procs"))
                .lines()
                .any(|l| l == pid.to_string()));
        }
        let stats = cg.stats().expect("stats");
        assert_eq!(stats.pids_current, 1);
        cg.kill_all().expect("kill_all");
        assert_killed(&mut child);
        assert!(cg.pids().expect("pids").is_empty());
        cg.destroy().expect("destroy");
        assert!(group_dirs(&m, &name).iter().all(|d| !d.exists()));
        assert!(!m.list().expect("list").contains(&name));
    }

    #[test]
    fn stopped_process_is_killed() {
        let Some(m) = manager() else { return };
        let name = unique("stopped");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        let mut child = spawn_sleep();
        let pid = pid_of(&child);
        cg.add_process(pid).expect("add");
        let p = Pid::from_raw(pid).expect("pid");
        kill_process(p, Signal::STOP).expect("SIGSTOP");
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat_state(&s))
            != Some('T')
        {
            assert!(Instant::now() < deadline, "child never stopped");
            thread::sleep(Duration::from_millis(5));
        }
        cg.kill_all().expect("kill_all");
        assert_killed(&mut child);
        cg.destroy().expect("destroy");
    }

    #[test]
    fn fork_bomb_is_capped_and_killed() {
        let Some(m) = manager() else { return };
        let name = unique("forkbomb");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        // Forks only once inside the group; every process keeps forking for
        // at most 20 s.
        let script = format!(
            "import os, sys, time\n\
             sys.stdin.readline()\n\
             if '/{name}' not in open('/proc/self/cgroup').read(): sys.exit(3)\n\
             print('ready', flush=True)\n\
             end = time.time() + 20\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       os.fork()\n\
             \x20   except OSError:\n\
             \x20       time.sleep(0.01)\n\
             os._exit(0)\n"
        );
        let mut child = spawn_gated(&script);
        cg.add_process(pid_of(&child)).expect("add");
        release(&mut child);
        assert_eq!(wait_line(&mut child).trim(), "ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cg.stats().expect("stats").pids_current < 16 {
            assert!(
                Instant::now() < deadline,
                "fork bomb never reached pids.max"
            );
            thread::sleep(Duration::from_millis(10));
        }
        assert!(cg.pids().expect("pids").len() <= 16);
        assert_eq!(cg.stats().expect("stats").pids_current, 16);
        cg.kill_all().expect("kill_all");
        assert_killed(&mut child);
        assert!(cg.pids().expect("pids").is_empty());
        cg.destroy().expect("destroy");
        assert!(group_dirs(&m, &name).iter().all(|d| !d.exists()));
    }

    #[test]
    fn memory_hog_is_oom_killed() {
        let Some(m) = manager() else { return };
        let name = unique("oom");
        let cg = m.create(&name, &limits(32 << 20)).expect("create");
        cg.reset_peak();
        let mut child = spawn_gated(
            "import sys\nsys.stdin.readline()\nb = b'x' * (200 * 1024 * 1024)\nprint(len(b))\n",
        );
        cg.add_process(pid_of(&child)).expect("add");
        release(&mut child);
        assert_killed(&mut child);
        let stats = cg.stats().expect("stats");
        assert!(stats.oom_kills >= 1, "{stats:?}");
        if let Some(peak) = stats.memory_peak_bytes {
            assert!(peak <= 32 << 20, "{stats:?}");
            assert!(peak > 16 << 20, "{stats:?}");
        }
        cg.reset_peak();
        let after = cg.stats().expect("stats");
        if m.version() == CgroupVersion::V1 {
            assert!(
                after.memory_peak_bytes < stats.memory_peak_bytes,
                "{after:?}"
            );
        }
        cg.destroy().expect("destroy");
    }

    #[test]
    fn cpu_is_accounted_and_throttled() {
        let Some(m) = manager() else { return };
        let name = unique("cpu");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        let mut child = spawn_gated(
            "import sys, time\nsys.stdin.readline()\nt = time.time()\nwhile time.time() - t < 1.0: pass\n",
        );
        cg.add_process(pid_of(&child)).expect("add");
        let start = Instant::now();
        release(&mut child);
        let status = child.wait().expect("wait");
        let wall = start.elapsed();
        assert!(status.success(), "{status:?}");
        let stats = cg.stats().expect("stats");
        assert!(stats.cpu_usage_ns > 0, "{stats:?}");
        // 500 millis = half a CPU: usage cannot exceed half the wall time
        // (plus one period of slack).
        let bound = wall.as_nanos() / 2 + 150_000_000;
        assert!(
            u128::from(stats.cpu_usage_ns) <= bound,
            "used {} ns in {wall:?}",
            stats.cpu_usage_ns
        );
        cg.destroy().expect("destroy");
    }

    #[test]
    fn memory_limit_changes_are_verified() {
        let Some(m) = manager() else { return };
        let name = unique("setmem");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        let mem = cg.dir_of("memory").expect("memory").to_path_buf();
        let file = match m.version() {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        };
        cg.set_memory_limit(128 << 20).expect("raise");
        assert_eq!(read(mem.join(file)), (128u64 << 20).to_string());
        cg.set_memory_limit(48 << 20).expect("lower");
        assert_eq!(read(mem.join(file)), (48u64 << 20).to_string());
        // Rounded down to a page.
        cg.set_memory_limit((40 << 20) + 100).expect("unaligned");
        assert_eq!(read(mem.join(file)), (40u64 << 20).to_string());
        if m.version() == CgroupVersion::V1 && mem.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(mem.join("memory.memsw.limit_in_bytes")),
                (40u64 << 20).to_string()
            );
        }
        assert!(cg.set_memory_limit(0).is_err());

        // Lowering below what a process holds: v1 refuses with EBUSY (no
        // swap to reclaim into); v2 reclaims or OOM-kills instead.
        if m.version() == CgroupVersion::V1 {
            let mut child = spawn_gated(
                "import sys, time\nsys.stdin.readline()\nb = b'x' * (24 * 1024 * 1024)\nprint('ready', flush=True)\ntime.sleep(30)\n",
            );
            cg.add_process(pid_of(&child)).expect("add");
            release(&mut child);
            assert_eq!(wait_line(&mut child).trim(), "ready");
            let err = cg.set_memory_limit(4 << 20).expect_err("must not shrink");
            assert!(matches!(err, CgroupError::MemoryBusy { .. }), "{err}");
            assert!(err.to_string().contains("EBUSY"), "{err}");
            cg.kill_all().expect("kill_all");
            assert_killed(&mut child);
        }
        cg.destroy().expect("destroy");
    }

    #[test]
    fn remove_stale_kills_and_removes() {
        let Some(m) = manager() else { return };
        let name = unique("stale");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        let mut child = spawn_sleep();
        cg.add_process(pid_of(&child)).expect("add");
        // Simulate a crash: the handle disappears without clean-up.
        std::mem::forget(cg);
        assert!(m.list().expect("list").contains(&name));
        m.remove_stale(&name).expect("remove_stale");
        assert_killed(&mut child);
        assert!(group_dirs(&m, &name).iter().all(|d| !d.exists()));
        assert!(!m.list().expect("list").contains(&name));
        // Idempotent.
        m.remove_stale(&name).expect("second remove_stale");
    }

    #[test]
    fn limit_that_does_not_apply_is_an_error() {
        let Some(m) = manager() else { return };
        let name = unique("mismatch");
        // The kernel clamps memory limits to PAGE_COUNTER_MAX pages, so this
        // value cannot be stored as written.
        let err = m.create(&name, &limits(u64::MAX)).expect_err("clamped");
        assert!(matches!(err, CgroupError::LimitMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&u64::MAX.to_string()), "{err}");
        assert!(group_dirs(&m, &name).iter().all(|d| !d.exists()));
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CgroupManager>();
        check::<BoxCgroup>();
        check::<CgroupError>();
    }

    #[test]
    fn drop_destroys() {
        let Some(m) = manager() else { return };
        let name = unique("drop");
        let cg = m.create(&name, &limits(64 << 20)).expect("create");
        let mut child = spawn_sleep();
        cg.add_process(pid_of(&child)).expect("add");
        drop(cg);
        assert_killed(&mut child);
        assert!(group_dirs(&m, &name).iter().all(|d| !d.exists()));
    }
}
