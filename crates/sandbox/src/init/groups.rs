//! Ending a run empty: the box's `run` and `workers` cgroups, driven from inside the box.
//!
//! Every process a run starts is in the `run` group: a program the init forks joins it itself
//! before anything else (it writes `0` to the group's `cgroup.procs`), and a warm run's process is
//! moved there by the init as soon as its worker names it. When the run ends, the init kills the
//! group as a whole (`cgroup.kill` on v2; freeze, signal every member, thaw on v1) and waits until
//! it is empty, so nothing a run started outlives it, whatever it did: threads whose leader
//! exited, `setsid`, `SIGSTOP`, double forks, re-parenting. The warm workers live in the `workers`
//! group, and anything there that is not a worker (a warm run's child that forked before it was
//! moved, say) makes the init kill every worker. The init never decides "clean" by looking at
//! process states.
//!
//! The init is root only of its own user namespace and cannot open the box's cgroup files by path
//! (they belong to host root and are not mounted in the box). The setup process, still host root,
//! opens them and the init inherits the descriptors; the kernel checks a cgroup migration against
//! the credentials the file was opened with. The descriptors are close-on-exec, so no program sees
//! them.
//!
//! A box without cgroups (degraded) falls back to counting every process of the box's PID
//! namespace in `/proc`, zombies included (a zombie may be a thread-group leader whose threads
//! still run).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::channel::{GroupKill, RunGroupPaths};

/// How long the init waits for a killed group to empty before it kills the whole box instead.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(2);

/// One child group of the box's cgroup, as descriptors.
pub struct Group {
    /// `cgroup.procs`, read and write.
    procs: OwnedFd,
    /// `cgroup.kill` (v2) or `freezer.state` (v1 with the freezer).
    control: Option<OwnedFd>,
}

/// The box's `run` and `workers` groups.
pub struct RunGroups {
    pub run: Group,
    pub workers: Group,
    kill: GroupKill,
}

fn open(path: &Path, write_only: bool) -> Result<OwnedFd, String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    let mode = if write_only {
        libc::O_WRONLY
    } else {
        libc::O_RDWR
    };
    // SAFETY: open on a valid C string; the descriptor is ours.
    let fd = unsafe { libc::open(c.as_ptr(), mode | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "opening {}: {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl RunGroups {
    /// Opens the groups' files. Called by the setup process, as host root, before the init is
    /// cloned (so that the init inherits the descriptors).
    pub fn open(paths: &RunGroupPaths) -> Result<RunGroups, String> {
        let group = |dir: &Path| -> Result<Group, String> {
            let control = match paths.kill {
                GroupKill::V2Kill => Some(open(&dir.join("cgroup.kill"), true)?),
                GroupKill::V1Freezer => Some(open(&dir.join("freezer.state"), false)?),
                GroupKill::V1Signal => None,
            };
            Ok(Group {
                procs: open(&dir.join("cgroup.procs"), false)?,
                control,
            })
        };
        Ok(RunGroups {
            run: group(&paths.run)?,
            workers: group(&paths.workers)?,
            kill: paths.kill,
        })
    }

    /// Kills every process of the run group and waits until it is empty. `false` when it did not
    /// empty in time (the caller then kills the whole box).
    pub fn end_run(&self) -> bool {
        self.kill_group(&self.run)
    }

    /// Whether the workers group holds nothing but `workers`.
    pub fn workers_only(&self, workers: &[libc::pid_t]) -> bool {
        match members(&self.workers) {
            Some(pids) => pids.iter().all(|p| workers.contains(p)),
            None => false,
        }
    }

    /// Moves `pid` (a warm run's process) into the run group.
    pub fn move_to_run(&self, pid: libc::pid_t) {
        let text = pid.to_string();
        // SAFETY: writing a buffer we own to a descriptor we own. A process that is already gone
        // (ESRCH) needs no move.
        unsafe { libc::write(self.run.procs.as_raw_fd(), text.as_ptr().cast(), text.len()) };
    }

    fn kill_group(&self, group: &Group) -> bool {
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        let mut pause = Duration::from_micros(50);
        loop {
            let Some(pids) = members(group) else {
                return false;
            };
            if pids.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            match (self.kill, &group.control) {
                (GroupKill::V2Kill, Some(kill)) => {
                    // SAFETY: writing a constant to a descriptor we own.
                    unsafe { libc::write(kill.as_raw_fd(), b"1".as_ptr().cast(), 1) };
                }
                (GroupKill::V1Freezer, Some(state)) => {
                    let frozen = freeze(state.as_raw_fd(), deadline);
                    signal_all(group);
                    // SAFETY: as above.
                    unsafe { libc::pwrite(state.as_raw_fd(), b"THAWED".as_ptr().cast(), 6, 0) };
                    if !frozen {
                        continue;
                    }
                }
                _ => signal_all(group),
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

impl Group {
    /// Makes the calling process a member. Async-signal-safe: called between `fork` and `exec`.
    pub fn join_raw(&self) -> bool {
        // SAFETY: writing a constant to a descriptor we own.
        unsafe { libc::pwrite(self.procs.as_raw_fd(), b"0".as_ptr().cast(), 1, 0) == 1 }
    }
}

/// Requests a freeze and waits until the kernel says `FROZEN` (or the deadline passes).
fn freeze(state: RawFd, deadline: Instant) -> bool {
    // SAFETY: writing a constant to a descriptor we own.
    unsafe { libc::pwrite(state, b"FROZEN".as_ptr().cast(), 6, 0) };
    loop {
        let mut buf = [0u8; 32];
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::pread(state, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 && buf[..n as usize].starts_with(b"FROZEN") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn signal_all(group: &Group) {
    for pid in members(group).unwrap_or_default() {
        // SAFETY: the init signals processes of its own box.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The group's member processes (thread-group ids, zombie leaders of live threads included).
fn members(group: &Group) -> Option<Vec<libc::pid_t>> {
    // On v1 the kernel keeps a group's pid list for about a second per open file and hands it out
    // again, stale, to every later read of that file: read a fresh open of it each time (through
    // /proc/self/fd, since the init cannot name it by path; anyone may read `cgroup.procs`).
    let fresh = std::fs::File::open(format!("/proc/self/fd/{}", group.procs.as_raw_fd())).ok();
    let fd = fresh
        .as_ref()
        .map_or(group.procs.as_raw_fd(), |f| f.as_raw_fd());
    let mut text = Vec::with_capacity(256);
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a buffer we own; a read at offset 0 restarts the listing.
        let n = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                text.len() as libc::off_t,
            )
        };
        if n < 0 {
            return None;
        }
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n as usize]);
    }
    Some(
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
    )
}

/// Without cgroups: whether any process of the box besides the init and `keep` exists. Zombies
/// count: a zombie may be a thread-group leader whose other threads still run, and a zombie child
/// of another process means that process is still there.
pub fn others_alive(keep: &[libc::pid_t]) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<libc::pid_t>().ok())
        })
        .any(|pid| pid != 1 && !keep.contains(&pid))
}
