//! cgroup v2: one unified hierarchy; the box's group is one directory with every controller.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use super::fs::{
    check_writable, make_dir, parse_controllers, parse_cpu_max, parse_keyed, parse_limit,
    parse_u64, read_file, read_parsed, write_checked, write_exact, write_raw, Limit,
};
use super::{
    is_permission_error, memory_matches, write_hint, BoxCgroup, CgroupError, CgroupStats,
    CgroupVersion, GroupDir, Hierarchy, Interface, CPU_PERIOD_US, V2_CONTROLLERS,
};
use crate::channel::GroupKill;

/// The cgroup v2 interface.
#[derive(Debug)]
pub(super) struct V2;

impl Interface for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn describe(&self, hierarchies: &[Hierarchy]) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let parts: Vec<String> = hierarchies
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
        parts.join("; ")
    }

    fn dir_of<'a>(&self, dirs: &'a [GroupDir], _controller: &str) -> Option<&'a GroupDir> {
        dirs.first()
    }

    fn freezer_dir<'a>(&self, dirs: &'a [GroupDir]) -> Option<&'a Path> {
        dirs.first()
            .map(|d| d.path.as_path())
            .filter(|p| p.join("cgroup.freeze").exists())
    }

    fn freezer_file(&self) -> (&'static str, &'static str, &'static str) {
        ("cgroup.freeze", "1", "0")
    }

    fn is_frozen(&self, dir: &Path) -> bool {
        fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|s| parse_keyed(&s, "frozen") == Some(1))
    }

    fn kill_file(&self, group: &BoxCgroup) -> Option<PathBuf> {
        group
            .dirs
            .first()
            .map(|d| d.path.join("cgroup.kill"))
            .filter(|p| p.exists())
    }

    fn write_memory_limit(&self, group: &BoxCgroup, bytes: u64) -> Result<(), CgroupError> {
        let dir = group.dir_of("memory")?;
        let page_size = group.page_size;
        write_checked(&dir.join("memory.max"), &bytes.to_string(), |back| {
            parse_limit(back).is_some_and(|l| match l {
                Limit::Value(r) => memory_matches(bytes, r, page_size),
                Limit::Max => false,
            })
        })?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write_exact(&swap, "0")?;
        }
        Ok(())
    }

    fn write_remaining_limits(&self, group: &BoxCgroup, quota_us: u64) -> Result<(), CgroupError> {
        write_checked(
            &group.dir_of("cpu")?.join("cpu.max"),
            &format!("{quota_us} {CPU_PERIOD_US}"),
            |back| parse_cpu_max(back) == Some((Limit::Value(quota_us), CPU_PERIOD_US)),
        )
    }

    fn run_groups_home<'a>(
        &self,
        group: &'a BoxCgroup,
    ) -> Result<(&'a Path, GroupKill), CgroupError> {
        let dir = group.dir_of("pids")?;
        if !dir.join("cgroup.kill").exists() {
            return Err(CgroupError::ControllerUnavailable {
                controller: "cgroup.kill",
                path: dir.to_path_buf(),
                detail: "cgroup v2 without cgroup.kill (Linux older than 5.14): runs could \
                         not be ended as a whole; use a newer kernel"
                    .to_owned(),
            });
        }
        Ok((dir, GroupKill::V2Kill))
    }

    fn reset_peak(&self, group: &BoxCgroup) {
        let Ok(dir) = group.dir_of("memory") else {
            return;
        };
        let path = dir.join("memory.peak");
        let opened = fs::OpenOptions::new().read(true).write(true).open(&path);
        let result = opened.and_then(|mut file| {
            file.write_all(b"reset")?;
            Ok(file)
        });
        let mut slot = group.peak_fd.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(file) => *slot = Some(file),
            Err(e) => {
                *slot = None;
                debug!(cgroup = %group.name, path = %path.display(), error = %e, "memory.peak reset not supported by this kernel; peak covers the group's lifetime");
            }
        }
    }

    fn stats(&self, group: &BoxCgroup, pids_current: u64) -> Result<CgroupStats, CgroupError> {
        let memory = group.dir_of("memory")?;
        let cpu_path = group.dir_of("cpu")?.join("cpu.stat");
        let usage_usec = read_parsed(&cpu_path, "a usage_usec line", |t| {
            parse_keyed(t, "usage_usec")
        })?;
        let oom_kills =
            parse_keyed(&read_file(&memory.join("memory.events"))?, "oom_kill").unwrap_or(0);
        Ok(CgroupStats {
            memory_peak_bytes: read_peak(group, memory)?,
            oom_kills,
            cpu_usage_ns: usage_usec.saturating_mul(1000),
            pids_current,
        })
    }
}

/// Prepares the parent group in cgroup2 mount `mount`: `Ok(None)` when the mount lacks a
/// controller a box needs. Enables +memory +pids +cpu in every group from the mount root down to
/// the parent (created when missing).
pub(super) fn detect(mount: &Path, parent: &str) -> Result<Option<Vec<Hierarchy>>, CgroupError> {
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
        enable_controllers(&dir)?;
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
    enable_controllers(&dir)?;
    check_writable(&dir)?;
    Ok(Some(vec![Hierarchy {
        mount: mount.to_path_buf(),
        parent_dir: dir,
        controllers: V2_CONTROLLERS.to_vec(),
    }]))
}

/// Enables the v2 box controllers in `dir/cgroup.subtree_control` and checks
/// they are on.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
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

/// `memory.peak`, through the fd a reset was written to when there is one.
fn read_peak(group: &BoxCgroup, dir: &Path) -> Result<Option<u64>, CgroupError> {
    let path = dir.join("memory.peak");
    let mut slot = group.peak_fd.lock().unwrap_or_else(|p| p.into_inner());
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
