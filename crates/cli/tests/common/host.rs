//! Boxes as the host sees them, through the sandbox's census ([`codebeaker_sandbox::census`]):
//! their cgroups, found where the cgroup module finds them, and the processes in the boxes' id
//! range. The tests never name a cgroup path, a box id range or a box name format themselves.
//!
//! The census does not say whether a process is exiting (`PF_EXITING` in `/proc/<pid>/stat`),
//! which [`dying`] reads for the processes it lists.

use std::collections::BTreeSet;

use codebeaker_sandbox::census::{self, BoxProcess, Census};

/// What boxes have on this host now.
pub fn census() -> Census {
    Census::take(&super::sandbox_config()).expect("the census of boxes on this host")
}

/// The host name (and cgroup name) of the box of `owner` (the process whose engine made it)
/// that callers know as `container_id`.
pub fn box_name(owner: u32, container_id: &str) -> String {
    census::box_name(owner, container_id)
        .unwrap_or_else(|| panic!("{container_id:?} is not a container id"))
}

/// The names of the boxes `owner` made that have a cgroup now.
pub fn boxes_of(owner: u32) -> BTreeSet<String> {
    let owner = i32::try_from(owner).expect("a pid");
    census().boxes_of(owner).map(|b| b.name.clone()).collect()
}

/// The name of the box, made by any process, that callers know as `container_id`.
pub fn box_of(container_id: &str) -> String {
    census()
        .box_of(container_id)
        .map(|b| b.name.clone())
        .unwrap_or_else(|| panic!("no cgroup for container {container_id}"))
}

/// Whether box `name` still has a cgroup.
pub fn box_exists(name: &str) -> bool {
    census().named(name).is_some()
}

/// The processes in box `name`'s cgroups.
pub fn box_pids(name: &str) -> Vec<i32> {
    census()
        .named(name)
        .map(|b| b.pids.clone())
        .unwrap_or_default()
}

/// The content of `file` (e.g. `pids.max`) of box `name`'s cgroups, in whichever hierarchy has
/// it.
pub fn box_file(name: &str, file: &str) -> Option<String> {
    census().named(name)?.file(file)
}

/// Host processes in the boxes' id range that still run code (see [`dying`]).
pub fn box_processes() -> Vec<BoxProcess> {
    census()
        .processes
        .into_iter()
        .filter(|p| !dying(p.pid))
        .collect()
}

/// Host processes in the boxes' id range whose command line or name contains `marker`.
pub fn processes_with(marker: &str) -> Vec<BoxProcess> {
    box_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(marker) || p.comm.contains(marker))
        .collect()
}

/// A zombie, a process that is gone, or one that is exiting (`PF_EXITING`): it runs no code any
/// more and has left its cgroup; it only waits to be reaped.
pub fn dying(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let state = fields.first().copied().unwrap_or("X");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    const PF_EXITING: u64 = 0x4;
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

/// A process that exists and is not a zombie (it may be exiting).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
