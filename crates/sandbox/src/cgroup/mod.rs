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
//! # Files
//!
//! This file holds the manager, the box's group and the types callers see; the
//! version-specific parts are two implementations of one private trait,
//! `Interface` (`v1.rs`, `v2.rs`), and nothing outside them looks at the
//! version. `mounts.rs` finds the hierarchies, `fs.rs` reads and writes
//! cgroupfs files (and checks every write), `kill.rs` ends a group's
//! processes, and `fake.rs` (tests only) is a cgroupfs of plain files in a
//! temporary directory so the writes and read-backs of both versions are
//! tested without root.
//!
//! # Errors
//!
//! Failures to find or write cgroups where we lack permission (not root,
//! read-only cgroupfs) make [`CgroupManager::detect`] return `Ok(None)` so the
//! caller can fall back to rlimits; anything else is a [`CgroupError`] whose
//! message names the file, the value and what to do about it.

#[cfg(test)]
mod fake;
mod fs;
mod kill;
mod mounts;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::channel::GroupKill;
use fs::Dirs;
pub use mounts::parent_dirs;
use mounts::MountEntry;

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
// What differs between the versions
// ---------------------------------------------------------------------------

/// What differs between cgroup v1 and v2: [`v1::V1`] and [`v2::V2`] implement it, the manager
/// and the box's group call it, and nothing else looks at the version.
trait Interface: fmt::Debug + Send + Sync {
    fn version(&self) -> CgroupVersion;
    /// The hierarchies and the optional features found, for [`CgroupManager::describe`].
    fn describe(&self, hierarchies: &[Hierarchy]) -> String;
    /// The group directory holding `controller`'s files.
    fn dir_of<'a>(&self, dirs: &'a [GroupDir], controller: &str) -> Option<&'a GroupDir>;
    /// The directory whose freezer freezes the whole group, when there is one.
    fn freezer_dir<'a>(&self, dirs: &'a [GroupDir]) -> Option<&'a Path>;
    /// `(file, value that freezes, value that thaws)` in the freezer directory.
    fn freezer_file(&self) -> (&'static str, &'static str, &'static str);
    /// Whether the freeze requested in `dir` is complete.
    fn is_frozen(&self, dir: &Path) -> bool;
    /// The file that kills the whole group in one write, when the kernel has one.
    fn kill_file(&self, group: &BoxCgroup) -> Option<PathBuf>;
    /// Writes the memory limit and the swap limit, reading both back.
    fn write_memory_limit(&self, group: &BoxCgroup, bytes: u64) -> Result<(), CgroupError>;
    /// Writes the limits besides memory and pids (v1: swappiness and the CFS quota; v2:
    /// `cpu.max`), reading each back.
    fn write_remaining_limits(&self, group: &BoxCgroup, quota_us: u64) -> Result<(), CgroupError>;
    /// The directory the run and worker groups are made in, and how they are killed.
    fn run_groups_home<'a>(
        &self,
        group: &'a BoxCgroup,
    ) -> Result<(&'a Path, GroupKill), CgroupError>;
    /// See [`BoxCgroup::reset_peak`].
    fn reset_peak(&self, group: &BoxCgroup);
    /// See [`BoxCgroup::stats`]; `pids_current` is read the same way on both.
    fn stats(&self, group: &BoxCgroup, pids_current: u64) -> Result<CgroupStats, CgroupError>;
}

static V1: v1::V1 = v1::V1;
static V2: v2::V2 = v2::V2;

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

/// The leaf group container mode moves this process into, beside the boxes' parent group, in
/// the root of the cgroup2 mount (see [`CgroupManager::detect_explained`]).
pub const SERVER_LEAF: &str = "codebeaker-server";

/// What [`CgroupManager::detect_explained`] found: the manager when cgroups can be used, and
/// what detection did or skipped on the way (a read-only cgroup2, a move into
/// [`SERVER_LEAF`], a hierarchy without the controllers), each in words an operator can act on.
#[derive(Debug)]
pub struct Detection {
    pub manager: Option<CgroupManager>,
    pub notes: Vec<String>,
}

impl Detection {
    fn found(
        ops: &'static dyn Interface,
        parent: &str,
        hierarchies: Vec<Hierarchy>,
        dirs: Dirs,
        notes: Vec<String>,
    ) -> Detection {
        let manager = CgroupManager {
            ops,
            parent: parent.to_owned(),
            hierarchies,
            dirs,
        };
        info!(description = %manager.describe(), "using cgroups");
        Detection {
            manager: Some(manager),
            notes,
        }
    }
}

/// Finds the cgroup hierarchies and creates box groups in them.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    ops: &'static dyn Interface,
    parent: String,
    hierarchies: Vec<Hierarchy>,
    dirs: Dirs,
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
    /// group from the mount root down to it). Never moves this process; see
    /// [`CgroupManager::detect_explained`].
    pub fn detect(parent: &str) -> Result<Option<CgroupManager>, CgroupError> {
        Ok(Self::detect_explained(parent, false)?.manager)
    }

    /// [`CgroupManager::detect`], saying what it did and skipped on the way.
    ///
    /// With `move_to_leaf`, container mode: when the root of a cgroup2 mount
    /// is not the host's root group (a cgroup namespace, as container runtimes
    /// make), holds this process and has not enabled the box controllers for
    /// its children, this process (and only this process) moves into the leaf
    /// group [`SERVER_LEAF`] first. cgroup v2 lets a group with member
    /// processes enable controllers for its children only when it is the
    /// host's root, so without the move the kernel refuses `+memory` (EBUSY).
    /// Processes other than this one are never moved: when some remain, the
    /// error says so.
    pub fn detect_explained(parent: &str, move_to_leaf: bool) -> Result<Detection, CgroupError> {
        validate_parent(parent)?;
        Self::detect_from(
            &mounts::read_mountinfo()?,
            parent,
            Dirs::Cgroupfs,
            move_to_leaf,
        )
    }

    fn detect_from(
        mounts: &[MountEntry],
        parent: &str,
        dirs: Dirs,
        move_to_leaf: bool,
    ) -> Result<Detection, CgroupError> {
        let mut notes = Vec::new();
        for mount in mounts::read_only_v2_mounts(mounts) {
            let note = format!(
                "cgroup2 at {} is mounted read-only (a container without cgroup delegation): \
                 not used; give the container a writable cgroup (a cgroup namespace with \
                 cgroup2 mounted read-write, e.g. `--cgroupns=private` with a writable \
                 /sys/fs/cgroup, or `--privileged`) for per-box limits",
                mount.display()
            );
            warn!("{note}");
            notes.push(note);
        }
        let rootless = !crate::ids::is_root();
        for mount in mounts::v2_mounts(mounts) {
            let base = if rootless {
                v2::own_group(&mount)?
            } else {
                mount.clone()
            };
            match v2::detect(&mount, &base, parent, dirs, move_to_leaf, &mut notes) {
                Ok(Some(hierarchies)) => {
                    return Ok(Detection::found(&V2, parent, hierarchies, dirs, notes))
                }
                Ok(None) => {}
                Err(e) if rootless => {
                    let note = format!(
                        "rootless: this process's cgroup {} is not delegated to this user in a way \
                         boxes can use ({e}); run CodeBeaker in a group of its own that is \
                         delegated to you, e.g. `systemd-run --user --scope -p Delegate=yes \
                         codebeaker ...`, or ask an administrator to delegate a subtree (chown \
                         it and its cgroup.procs, cgroup.subtree_control and cgroup.threads to \
                         you, with memory, pids and cpu enabled above it)",
                        base.display()
                    );
                    warn!("{note}");
                    notes.push(note);
                }
                Err(e) if e.is_permission() => {
                    let note = format!("cgroup2 at {} is not usable by us: {e}", mount.display());
                    warn!("{note}");
                    notes.push(note);
                }
                Err(e) => return Err(e),
            }
        }
        let plan = match mounts::plan_v1(mounts) {
            Ok(plan) => plan,
            Err(reason) => {
                let note = format!(
                    "no usable cgroup hierarchy (no writable cgroup2 with memory, pids and cpu; \
                     {reason}): limits fall back to rlimits"
                );
                warn!("{note}");
                notes.push(note);
                return Ok(Detection {
                    manager: None,
                    notes,
                });
            }
        };
        match v1::prepare(plan, parent) {
            Ok(hierarchies) => Ok(Detection::found(&V1, parent, hierarchies, dirs, notes)),
            Err(e) if e.is_permission() => {
                let note = format!(
                    "cgroup v1 hierarchies are not writable by us ({e}): limits fall back to rlimits"
                );
                warn!("{note}");
                notes.push(note);
                Ok(Detection {
                    manager: None,
                    notes,
                })
            }
            Err(e) => Err(e),
        }
    }

    pub fn version(&self) -> CgroupVersion {
        self.ops.version()
    }

    /// Human-readable description for diagnostics: version, directories and
    /// controllers.
    pub fn describe(&self) -> String {
        format!(
            "{}, parent group {:?}: {}",
            self.version(),
            self.parent,
            self.ops.describe(&self.hierarchies)
        )
    }

    /// Creates the group `name` under the parent, applies `limits`, reads
    /// every value back and fails (removing the group) if a value read back
    /// differs from what was written. Fails with
    /// [`CgroupError::AlreadyExists`] if the group exists.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<BoxCgroup, CgroupError> {
        validate_name(name)?;
        let page_size = fs::page_size();
        let quota_us = validate_limits(limits, page_size)?;
        let mut group = self.group(name, page_size);
        for h in &self.hierarchies {
            let path = h.parent_dir.join(name);
            if let Err(source) = self.dirs.create(&path) {
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

    fn group(&self, name: &str, page_size: u64) -> BoxCgroup {
        BoxCgroup {
            ops: self.ops,
            name: name.to_owned(),
            dirs: Vec::new(),
            fs: self.dirs,
            page_size,
            peak_fd: Mutex::new(None),
            destroyed: false,
        }
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
            for entry in std::fs::read_dir(&h.parent_dir).map_err(read_err)? {
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
        let mut group = self.group(name, fs::page_size());
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
    ops: &'static dyn Interface,
    name: String,
    dirs: Vec<GroupDir>,
    fs: Dirs,
    page_size: u64,
    /// v2: the `memory.peak` fd a reset was written to; a reset applies only
    /// to reads through that same fd (kernel >= 6.12).
    peak_fd: Mutex<Option<std::fs::File>>,
    destroyed: bool,
}

impl BoxCgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory of the hierarchy carrying `controller` (v2: the one directory).
    fn dir_of(&self, controller: &'static str) -> Result<&Path, CgroupError> {
        self.ops
            .dir_of(&self.dirs, controller)
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
        self.ops.freezer_dir(&self.dirs)
    }

    /// Writes every limit, each read back (the read-back rule).
    fn apply_limits(&self, limits: &CgroupLimits, quota_us: u64) -> Result<(), CgroupError> {
        let pids = self.dir_of("pids")?;
        self.dir_of("cpu")?;
        self.ops.write_memory_limit(self, limits.memory_bytes)?;
        fs::write_exact(&pids.join("pids.max"), &limits.pids_max.to_string())?;
        self.ops.write_remaining_limits(self, quota_us)
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
            fs::write_file(&dir.path.join("cgroup.procs"), &value)?;
        }
        debug!(cgroup = %self.name, pid, "process added to cgroup");
        Ok(())
    }

    /// Creates the box's `run` and `workers` child groups, which the init uses to end every run
    /// empty (see [`crate::channel::RunGroupPaths`]). They carry no controller of their own (limits
    /// stay on the box's group), so on v2 the box's group may keep the init as a member. On v1
    /// they live in the freezer hierarchy, or in the pids hierarchy when there is no freezer.
    pub fn create_run_groups(&self) -> Result<crate::channel::RunGroupPaths, CgroupError> {
        let (dir, kill) = self.ops.run_groups_home(self)?;
        let run = dir.join("run");
        let workers = dir.join("workers");
        for path in [&run, &workers] {
            self.fs
                .create(path)
                .map_err(|source| CgroupError::CreateDir {
                    path: path.clone(),
                    hint: mkdir_hint(&source),
                    source,
                })?;
        }
        Ok(crate::channel::RunGroupPaths { run, workers, kill })
    }

    /// Changes the memory limit (and memsw / swap) and reads it back.
    /// Lowering below current usage may fail with EBUSY on v1, reported as
    /// [`CgroupError::MemoryBusy`].
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        validate_memory(bytes, self.page_size)?;
        self.ops.write_memory_limit(self, bytes)?;
        debug!(cgroup = %self.name, bytes, "memory limit changed");
        Ok(())
    }

    /// Resets the peak-memory counter before a run (v1: writes 0 to
    /// `memory.max_usage_in_bytes`; v2: writes to `memory.peak` where the
    /// kernel supports it (>= 6.12) and keeps that fd for [`stats`](Self::stats),
    /// since a v2 reset only applies to reads through the same fd).
    /// Failures are logged, never fatal.
    pub fn reset_peak(&self) {
        self.ops.reset_peak(self);
    }

    /// Reads the group's counters.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let pids_current = fs::read_parsed(
            &self.dir_of("pids")?.join("pids.current"),
            "a number",
            fs::parse_u64,
        )?;
        self.ops.stats(self, pids_current)
    }

    /// PIDs (host view) of all processes in the group (`cgroup.procs` of
    /// the memory or unified hierarchy).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let path = self.dir_of("memory")?.join("cgroup.procs");
        fs::read_parsed(&path, "one process id per line", fs::parse_procs)
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
            if let Err(e) = fs::remove_tree(self.fs, &dir.path, deadline) {
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::thread;

    use rustix::process::{kill_process, Pid, Signal};

    use super::*;

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
        while crate::procfs::read_stat(pid).map(|s| s.state) != Some('T') {
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
