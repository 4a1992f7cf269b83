//! One census of what boxes leave on the host: their cgroups, the processes in the boxes' id
//! range, and mounts on the sandbox's root mount point. `codebeaker doctor --leaks`, the test
//! suite's leak check and the load harness all count with it, so that the naming of boxes, their
//! id range and where their cgroups live are written down once.
//!
//! # What a box leaves, and where
//!
//! * A cgroup named `cb-<owner pid>-<random>` under the parent group `codebeaker`, in every
//!   hierarchy the box uses. The hierarchies are found by the cgroup module's mount discovery
//!   ([`crate::cgroup::parent_dirs`]), never by assuming `/sys/fs/cgroup/...`. Callers see a box
//!   as the container id `cb-<random>`: [`Census::box_of`] maps one back to its box.
//! * Processes whose uids are in the boxes' id range: [`ID_SLOTS`](crate::ID_SLOTS) slots of
//!   65536 ids from the sandbox's `id_base` ([`crate::id_span`]).
//! * Mounts on `<state_dir>/root` (`/run/codebeaker/root` by default) in this mount namespace:
//!   a box mounts its root only in its own mount namespace, so one here is a leak.
//!
//! # What counts as left behind
//!
//! A box whose owner process is alive is that process's business; [`Census::left_behind`]
//! keeps only boxes whose owner is gone, the processes that are not in a box of a live owner, and
//! the mounts. [`Census::without`] then removes what a census taken earlier already had, so that
//! a check counts only what appeared between the two censuses (see `codebeaker doctor --leaks`).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupError};
use crate::host::{SandboxConfig, CGROUP_PARENT};

/// One box cgroup on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBox {
    /// `cb-<owner pid>-<random>`.
    pub name: String,
    /// The CodeBeaker process that made the box, from its name.
    pub owner: Option<i32>,
    pub owner_alive: bool,
    /// The box's group in each hierarchy it is in.
    pub dirs: Vec<PathBuf>,
    /// Processes in the group and its child groups, in any hierarchy.
    pub pids: Vec<i32>,
}

impl HostBox {
    /// The container id callers know the box by (`cb-<random>`).
    pub fn container_id(&self) -> Option<String> {
        let (_, random) = split_name(&self.name)?;
        Some(format!("cb-{random}"))
    }

    /// The content of `file` (e.g. `pids.max`) in whichever of the box's hierarchies has it.
    pub fn file(&self, file: &str) -> Option<String> {
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
    }
}

/// One process whose uids are in the boxes' id range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxProcess {
    pub pid: i32,
    /// The real uid.
    pub uid: u32,
    /// Start time in clock ticks after boot: with `pid`, it names the process even once the
    /// pid is reused.
    pub start_ticks: u64,
    /// State letter from `/proc/<pid>/stat` (`Z` for a zombie).
    pub state: char,
    /// The box whose cgroup it is in, if any.
    pub box_name: Option<String>,
    pub comm: String,
    pub cmdline: String,
}

/// Everything boxes have on the host at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    pub boxes: Vec<HostBox>,
    pub processes: Vec<BoxProcess>,
    /// Mounts on the sandbox's root mount point in this mount namespace.
    pub mounts: Vec<PathBuf>,
}

impl Census {
    /// Counts the boxes on this host as a sandbox with `config` makes them.
    pub fn take(config: &SandboxConfig) -> Result<Census, CgroupError> {
        let parents = cgroup::parent_dirs(CGROUP_PARENT)?;
        let ids = u64::from(config.id_base)..u64::from(config.id_base) + crate::id_span();
        let mut census = Census {
            boxes: boxes_in(&parents)?,
            processes: processes_with_uids(|uid| ids.contains(&u64::from(uid))),
            mounts: mounts_on(&config.state_dir.join("root")),
        };
        census.boxes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(census)
    }

    /// The box callers know as `container_id` (`cb-<random>`).
    pub fn box_of(&self, container_id: &str) -> Option<&HostBox> {
        let random = container_id.strip_prefix("cb-")?;
        self.boxes
            .iter()
            .find(|b| split_name(&b.name).is_some_and(|(_, r)| r == random))
    }

    /// The box named `name` (`cb-<owner pid>-<random>`).
    pub fn named(&self, name: &str) -> Option<&HostBox> {
        self.boxes.iter().find(|b| b.name == name)
    }

    /// The boxes `owner` made.
    pub fn boxes_of(&self, owner: i32) -> impl Iterator<Item = &HostBox> {
        self.boxes.iter().filter(move |b| b.owner == Some(owner))
    }

    /// What nobody will clean up: boxes whose owner is gone, processes not in a box of a live
    /// owner, and the mounts.
    pub fn left_behind(&self) -> Census {
        let live: BTreeSet<&str> = self
            .boxes
            .iter()
            .filter(|b| b.owner_alive)
            .map(|b| b.name.as_str())
            .collect();
        Census {
            boxes: self
                .boxes
                .iter()
                .filter(|b| !b.owner_alive)
                .cloned()
                .collect(),
            processes: self
                .processes
                .iter()
                .filter(|p| !p.box_name.as_deref().is_some_and(|n| live.contains(n)))
                .cloned()
                .collect(),
            mounts: self.mounts.clone(),
        }
    }

    /// This census without what `earlier` already had: boxes by name, processes by pid and start
    /// time, and as many mounts as `earlier` counted.
    pub fn without(&self, earlier: &Census) -> Census {
        let mut mounts = Vec::new();
        for m in self.mounts.iter().collect::<BTreeSet<_>>() {
            let count = |list: &[PathBuf]| list.iter().filter(|e| *e == m).count();
            let new = count(&self.mounts).saturating_sub(count(&earlier.mounts));
            mounts.extend((0..new).map(|_| m.clone()));
        }
        Census {
            boxes: self
                .boxes
                .iter()
                .filter(|b| earlier.named(&b.name).is_none())
                .cloned()
                .collect(),
            processes: self
                .processes
                .iter()
                .filter(|p| {
                    !earlier
                        .processes
                        .iter()
                        .any(|e| e.pid == p.pid && e.start_ticks == p.start_ticks)
                })
                .cloned()
                .collect(),
            mounts,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty() && self.processes.is_empty() && self.mounts.is_empty()
    }
}

/// `(owner pid, random part)` of a box name `cb-<owner pid>-<random>`.
fn split_name(name: &str) -> Option<(i32, &str)> {
    let (pid, random) = name.strip_prefix("cb-")?.split_once('-')?;
    let pid = pid.parse().ok().filter(|p| *p > 0)?;
    (!random.is_empty()).then_some((pid, random))
}

/// The pid of the process that made the box named `name` (`cb-<pid>-<random>`).
pub fn owner_pid(name: &str) -> Option<i32> {
    split_name(name).map(|(pid, _)| pid)
}

/// The box name of the box `owner` made that callers know as `container_id` (`cb-<random>`).
pub fn box_name(owner: u32, container_id: &str) -> Option<String> {
    let random = container_id.strip_prefix("cb-")?;
    (!random.is_empty()).then(|| format!("cb-{owner}-{random}"))
}

/// Whether process `pid` exists, as `kill(pid, 0)` sees it: a process we may not signal
/// exists, and so does a zombie (the owner of a box that is a zombie is not reaped yet).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    unsafe {
        libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
}

/// The box groups under `parents` (one per hierarchy), merged by name.
fn boxes_in(parents: &[PathBuf]) -> Result<Vec<HostBox>, CgroupError> {
    let mut boxes: Vec<HostBox> = Vec::new();
    for parent in parents {
        let entries = match std::fs::read_dir(parent) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CgroupError::Read {
                    path: parent.clone(),
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let dir = entry.path();
            if !name.starts_with("cb-") || !dir.is_dir() {
                continue;
            }
            let pids = group_pids(&dir);
            match boxes.iter_mut().find(|b| b.name == name) {
                Some(b) => {
                    b.dirs.push(dir);
                    b.pids.extend(pids);
                }
                None => {
                    let owner = owner_pid(&name);
                    boxes.push(HostBox {
                        owner_alive: owner.is_some_and(process_alive),
                        owner,
                        name,
                        dirs: vec![dir],
                        pids: pids.collect(),
                    })
                }
            }
        }
    }
    for b in &mut boxes {
        b.pids.sort_unstable();
        b.pids.dedup();
    }
    Ok(boxes)
}

/// Pids in `dir/cgroup.procs` and in those of its child groups; what cannot be read is empty.
fn group_pids(dir: &Path) -> std::vec::IntoIter<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    pids.into_iter()
}

/// Processes any of whose uids (real, effective, saved, filesystem) `wanted` accepts.
fn processes_with_uids(wanted: impl Fn(u32) -> bool) -> Vec<BoxProcess> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|u| u.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if !uids.iter().any(|u| wanted(*u)) {
            continue;
        }
        let (state, start_ticks) =
            crate::procfs::read_stat(pid).map_or(('?', 0), |s| (s.state, s.start_ticks));
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        found.push(BoxProcess {
            pid,
            uid: uids[0],
            start_ticks,
            state,
            box_name: box_in_cgroup_file(&cgroups),
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cmdline: String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// State letter and start time (field 22) from `/proc/<pid>/stat`.
/// The box named in `/proc/<pid>/cgroup` content: the group after the parent group.
fn box_in_cgroup_file(text: &str) -> Option<String> {
    let parent = CGROUP_PARENT.rsplit('/').next()?;
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let mut parts = path.split('/').skip_while(|c| *c != parent).skip(1);
        parts
            .next()
            .filter(|n| split_name(n).is_some())
            .map(str::to_owned)
    })
}

/// Mounts whose mount point is `target` in this process's mount namespace.
fn mounts_on(target: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m) == target)
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_box(name: &str, owner_alive: bool) -> HostBox {
        HostBox {
            name: name.to_owned(),
            owner: owner_pid(name),
            owner_alive,
            dirs: Vec::new(),
            pids: Vec::new(),
        }
    }

    fn process(pid: i32, box_name: Option<&str>) -> BoxProcess {
        BoxProcess {
            pid,
            uid: 100_000_000,
            start_ticks: 7,
            state: 'S',
            box_name: box_name.map(str::to_owned),
            comm: "sleep".to_owned(),
            cmdline: "sleep 30".to_owned(),
        }
    }

    #[test]
    fn names_and_container_ids() {
        assert_eq!(owner_pid("cb-123-00ff"), Some(123));
        assert_eq!(owner_pid("cb-x-00ff"), None);
        assert_eq!(owner_pid("cb-123-"), None);
        assert_eq!(owner_pid("other"), None);
        assert_eq!(box_name(123, "cb-00ff").as_deref(), Some("cb-123-00ff"));
        assert_eq!(box_name(123, "00ff"), None);
        assert_eq!(
            host_box("cb-123-00ff", true).container_id().as_deref(),
            Some("cb-00ff")
        );
        let census = Census {
            boxes: vec![host_box("cb-1-aa", true), host_box("cb-2-bb", false)],
            ..Census::default()
        };
        assert_eq!(
            census.box_of("cb-bb").map(|b| b.name.as_str()),
            Some("cb-2-bb")
        );
        assert!(census.box_of("cb-cc").is_none());
        assert!(census.box_of("cb-").is_none());
    }

    #[test]
    fn parses_proc_files() {
        let v1 = "12:pids:/codebeaker/cb-7-ab/run\n5:memory:/codebeaker/cb-7-ab\n0::/init.scope\n";
        assert_eq!(box_in_cgroup_file(v1).as_deref(), Some("cb-7-ab"));
        let v2 = "0::/system.slice/codebeaker/cb-7-ab/workers\n";
        assert_eq!(box_in_cgroup_file(v2).as_deref(), Some("cb-7-ab"));
        assert_eq!(box_in_cgroup_file("0::/codebeaker\n"), None);
        assert_eq!(box_in_cgroup_file("0::/user.slice/cb-7-ab\n"), None);
    }

    #[test]
    fn left_behind_keeps_what_no_live_owner_will_remove() {
        let census = Census {
            boxes: vec![host_box("cb-1-aa", true), host_box("cb-2-bb", false)],
            processes: vec![
                process(10, Some("cb-1-aa")),
                process(11, Some("cb-2-bb")),
                process(12, None),
            ],
            mounts: vec![PathBuf::from("/run/codebeaker/root")],
        };
        let left = census.left_behind();
        assert_eq!(left.boxes, vec![host_box("cb-2-bb", false)]);
        let pids: Vec<i32> = left.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![11, 12]);
        assert_eq!(left.mounts.len(), 1);
        assert!(!left.is_empty());
        assert!(Census::default().left_behind().is_empty());
    }

    #[test]
    fn without_counts_only_what_is_new() {
        let root = PathBuf::from("/run/codebeaker/root");
        let before = Census {
            boxes: vec![host_box("cb-2-bb", false)],
            processes: vec![process(11, Some("cb-2-bb"))],
            mounts: vec![root.clone()],
        };
        let mut reused = process(11, None);
        reused.start_ticks = 8;
        let after = Census {
            boxes: vec![host_box("cb-2-bb", false), host_box("cb-3-cc", false)],
            processes: vec![process(11, Some("cb-2-bb")), reused.clone()],
            mounts: vec![root.clone(), root.clone()],
        };
        let new = after.without(&before);
        assert_eq!(new.boxes, vec![host_box("cb-3-cc", false)]);
        assert_eq!(new.processes, vec![reused]);
        assert_eq!(new.mounts, vec![root]);
        assert!(after.without(&after).is_empty());
    }

    #[test]
    fn census_of_this_host_has_a_live_owner_for_none_of_ours() {
        // No box of this test process exists; the census must still be takeable.
        let census = match Census::take(&SandboxConfig::default()) {
            Ok(c) => c,
            Err(e) => panic!("census: {e}"),
        };
        let me = std::process::id() as i32;
        assert_eq!(census.boxes_of(me).count(), 0);
        assert!(process_alive(me));
        assert!(!process_alive(0));
    }
}
