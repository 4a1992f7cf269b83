//! cgroup v1: one hierarchy per controller (or per group of controllers, e.g. `cpu,cpuacct`); the
//! box's group is a directory in each hierarchy it uses.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::fs::{
    check_writable, make_dirs, parse_keyed, parse_u64, read_file, read_parsed, write_checked,
    write_exact, write_file,
};
use super::mounts::V1Mount;
use super::{
    memory_matches, BoxCgroup, CgroupError, CgroupStats, CgroupVersion, GroupDir, Hierarchy,
    Interface, CPU_PERIOD_US, V1_OPTIONAL,
};
use crate::channel::GroupKill;

/// The cgroup v1 interface.
#[derive(Debug)]
pub(super) struct V1;

impl Interface for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn describe(&self, hierarchies: &[Hierarchy]) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut parts: Vec<String> = hierarchies
            .iter()
            .map(|h| format!("{} -> {}", h.controllers.join(","), h.parent_dir.display()))
            .collect();
        if !hierarchies
            .iter()
            .any(|h| h.controllers.contains(&"freezer"))
        {
            parts.push("freezer not available (kill_all does not freeze)".to_owned());
        }
        if let Some(h) = hierarchies
            .iter()
            .find(|h| h.controllers.contains(&"memory"))
        {
            parts.push(format!(
                "memory.memsw: {}",
                yes_no(h.parent_dir.join("memory.memsw.limit_in_bytes").exists())
            ));
        }
        parts.join("; ")
    }

    fn dir_of<'a>(&self, dirs: &'a [GroupDir], controller: &str) -> Option<&'a GroupDir> {
        dirs.iter().find(|d| d.controllers.contains(&controller))
    }

    fn freezer_dir<'a>(&self, dirs: &'a [GroupDir]) -> Option<&'a Path> {
        self.dir_of(dirs, "freezer").map(|d| d.path.as_path())
    }

    fn freezer_file(&self) -> (&'static str, &'static str, &'static str) {
        ("freezer.state", "FROZEN", "THAWED")
    }

    fn is_frozen(&self, dir: &Path) -> bool {
        fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
    }

    fn kill_file(&self, _group: &BoxCgroup) -> Option<PathBuf> {
        None
    }

    fn write_memory_limit(&self, group: &BoxCgroup, bytes: u64) -> Result<(), CgroupError> {
        let dir = group.dir_of("memory")?;
        let value = bytes.to_string();
        let page_size = group.page_size;
        let accept =
            |back: &str| parse_u64(back).is_some_and(|r| memory_matches(bytes, r, page_size));
        let limit = dir.join("memory.limit_in_bytes");
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        // memsw must never be below the plain limit: raise it first, lower it last.
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
        Ok(())
    }

    fn write_remaining_limits(&self, group: &BoxCgroup, quota_us: u64) -> Result<(), CgroupError> {
        let cpu = group.dir_of("cpu")?;
        write_exact(&group.dir_of("memory")?.join("memory.swappiness"), "0")?;
        write_exact(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        write_exact(&cpu.join("cpu.cfs_quota_us"), &quota_us.to_string())
    }

    fn run_groups_home<'a>(
        &self,
        group: &'a BoxCgroup,
    ) -> Result<(&'a Path, GroupKill), CgroupError> {
        match group.freezer_dir() {
            Some(dir) => Ok((dir, GroupKill::V1Freezer)),
            None => Ok((group.dir_of("pids")?, GroupKill::V1Signal)),
        }
    }

    fn reset_peak(&self, group: &BoxCgroup) {
        let Ok(dir) = group.dir_of("memory") else {
            return;
        };
        if let Err(e) = write_file(&dir.join("memory.max_usage_in_bytes"), "0") {
            warn!(cgroup = %group.name, error = %e, "cannot reset peak memory counter");
        }
    }

    fn stats(&self, group: &BoxCgroup, pids_current: u64) -> Result<CgroupStats, CgroupError> {
        let memory = group.dir_of("memory")?;
        let oom_path = memory.join("memory.oom_control");
        let oom_kills = parse_keyed(&read_file(&oom_path)?, "oom_kill").unwrap_or_else(|| {
            tracing::debug!(path = %oom_path.display(), "no oom_kill counter (kernel < 4.13); reporting 0");
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
                &group.dir_of("cpuacct")?.join("cpuacct.usage"),
                "a number of nanoseconds",
                parse_u64,
            )?,
            pids_current,
        })
    }
}

/// Creates the parent group in every planned hierarchy. An optional hierarchy that is not
/// usable is left out; a required one is an error.
pub(super) fn prepare(plan: Vec<V1Mount>, parent: &str) -> Result<Vec<Hierarchy>, CgroupError> {
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
    Ok(hierarchies)
}
