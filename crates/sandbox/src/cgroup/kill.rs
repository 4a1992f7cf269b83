//! Ending every process of a box's group: `cgroup.kill` where v2 has it, otherwise freeze (when
//! the version's freezer is there), SIGKILL every member through a pidfd, thaw, and again, until
//! only the dead are left.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::Instant;

use rustix::io::Errno;
use rustix::process::{kill_process, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tracing::{debug, warn};

use super::fs::{collect_procs, parse_keyed, write_file};
use super::{
    BoxCgroup, CgroupError, FREEZE_TIMEOUT, KILL_TIMEOUT, MAX_POLL_INTERVAL, POLL_INTERVAL,
};

impl BoxCgroup {
    /// Processes in the group and any child groups, in every hierarchy.
    /// A directory that vanished counts as empty.
    pub(super) fn member_pids(&self) -> Result<BTreeSet<i32>, CgroupError> {
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
        let kill_file = self.ops.kill_file(self);
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
        let (file, value, _) = self.ops.freezer_file();
        if let Err(e) = write_file(&dir.join(file), value) {
            warn!(cgroup = %self.name, error = %e, "cannot freeze cgroup; signalling without freezing");
            return false;
        }
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            let done = self.ops.is_frozen(dir);
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
        let (file, _, value) = self.ops.freezer_file();
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
}

/// True only when /proc positively says the process is a zombie; anything
/// unreadable counts as alive so that a missing /proc never makes a group
/// look empty.
///
/// A thread-group leader that called `SYS_exit` while its other threads run shows as a zombie too;
/// it is alive until its last thread ends, so a zombie with more than one thread is not dead.
pub(crate) fn is_zombie(pid: i32) -> bool {
    let zombie = crate::procfs::read_stat(pid).map(|s| s.state) == Some('Z');
    zombie && thread_count(pid) <= 1
}

/// Threads of `pid` as `/proc/<pid>/status` counts them (unreadable: 2, so "alive").
fn thread_count(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_keyed(&s.replace(':', ""), "Threads"))
        .unwrap_or(2)
}
