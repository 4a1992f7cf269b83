//! cgroup v2: one unified hierarchy; the box's group is one directory with every controller.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::fs::{
    check_writable, make_dir, parse_controllers, parse_cpu_max, parse_keyed, parse_limit,
    parse_u64, read_file, read_parsed, write_checked, write_exact, write_file, write_raw, Dirs,
    Limit,
};
use super::{
    is_permission_error, memory_matches, write_hint, BoxCgroup, CgroupError, CgroupStats,
    CgroupVersion, GroupDir, Hierarchy, Interface, CPU_PERIOD_US, SERVER_LEAF, V2_CONTROLLERS,
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

/// Prepares the parent group under `base` in cgroup2 mount `mount` (`base` is the mount's root
/// for root, and this process's own group, delegated to the user, when rootless): `Ok(None)` when
/// `base` lacks a controller a box needs (and says so in `notes`). Enables +memory +pids +cpu in
/// every group from `base` down to the parent (created when missing); with `move_to_leaf`, first
/// moves this process out of `base` when that is what stands in the way (see
/// [`leave_namespace_root`]).
pub(super) fn detect(
    mount: &Path,
    base: &Path,
    parent: &str,
    dirs: Dirs,
    move_to_leaf: bool,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<Hierarchy>>, CgroupError> {
    let available = match fs::read_to_string(base.join("cgroup.controllers")) {
        Ok(text) => parse_controllers(&text),
        Err(e) => {
            debug!(mount = %base.display(), error = %e, "cannot read cgroup.controllers of cgroup2 mount");
            return Ok(None);
        }
    };
    let missing: Vec<&str> = V2_CONTROLLERS
        .into_iter()
        .filter(|c| !available.contains(*c))
        .collect();
    if !missing.is_empty() {
        let note = format!(
            "cgroup2 at {} lacks the {} controller(s) (bound to cgroup v1, disabled, or not \
             delegated to this group): not used",
            base.display(),
            missing.join(", ")
        );
        info!("{note}");
        notes.push(note);
        return Ok(None);
    }
    if needs_enabling(base)? && !is_host_root(base) && holds_this_process(base)? {
        if move_to_leaf {
            notes.push(leave_namespace_root(base, dirs)?);
        } else {
            let note = format!(
                "this process is in {}, the root of its cgroup namespace, which therefore cannot \
                 enable controllers for boxes; container mode is off ([sandbox] move_to_leaf = \
                 false), so nothing was moved",
                base.display()
            );
            warn!("{note}");
            notes.push(note);
        }
    }
    let mut dir = base.to_path_buf();
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

/// Whether a box controller is still to be enabled in `dir`'s `cgroup.subtree_control`.
fn needs_enabling(dir: &Path) -> Result<bool, CgroupError> {
    let enabled = parse_controllers(&read_file(&dir.join("cgroup.subtree_control"))?);
    Ok(V2_CONTROLLERS.into_iter().any(|c| !enabled.contains(c)))
}

/// This process's own group in cgroup2 mount `mount`, from `/proc/self/cgroup` (`0::/path`):
/// where a rootless sandbox makes its boxes, when the group was delegated to its user. A process
/// in a [`SERVER_LEAF`] (moved there by [`leave_namespace_root`], or started by a process that
/// was) takes the leaf's parent, where the CodeBeaker before it made its boxes.
pub(super) fn own_group(mount: &Path) -> Result<PathBuf, CgroupError> {
    let text = read_file(Path::new("/proc/self/cgroup"))?;
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/'))
        .unwrap_or_default();
    let path = Path::new(path);
    let path = match path.file_name() {
        Some(name) if name == SERVER_LEAF => path.parent().unwrap_or(path),
        _ => path,
    };
    Ok(mount.join(path))
}

/// The host's root group is the one group without `cgroup.type`; it alone may both hold
/// processes and enable controllers for its children. A cgroup namespace's root is an ordinary
/// group and has the file.
fn is_host_root(dir: &Path) -> bool {
    !dir.join("cgroup.type").exists()
}

fn holds_this_process(dir: &Path) -> Result<bool, CgroupError> {
    let me = std::process::id().to_string();
    Ok(read_file(&dir.join("cgroup.procs"))?
        .lines()
        .any(|line| line.trim() == me))
}

/// Container mode: moves this process (all its threads) from the mount's root into the leaf
/// group [`SERVER_LEAF`] beside the boxes' parent, so that the root, once it holds no process,
/// may enable the box controllers. Other processes in the root are left where they are; when
/// there are any, enabling fails afterwards with an error that counts them. Returns the note
/// that says what was done.
fn leave_namespace_root(mount: &Path, dirs: Dirs) -> Result<String, CgroupError> {
    let leaf = mount.join(SERVER_LEAF);
    match dirs.create(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && leaf.is_dir() => {}
        Err(source) => {
            return Err(CgroupError::CreateDir {
                path: leaf,
                hint: super::mkdir_hint(&source),
                source,
            })
        }
    }
    let pid = std::process::id();
    write_file(&leaf.join("cgroup.procs"), &pid.to_string())?;
    let note = format!(
        "container mode: this process (pid {pid}) was in {}, the root of its cgroup namespace, \
         which cannot enable controllers for boxes while it holds processes; moved it into {} \
         ([sandbox] move_to_leaf = false turns this off)",
        mount.display(),
        leaf.display()
    );
    info!("{note}");
    Ok(note)
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
                    "writing {value:?} to {} failed with EBUSY: the group holds {} process(es), and cgroup v2 does not let such a group enable controllers for its children; move them into a leaf group (in a container: run CodeBeaker as the container's only process with [sandbox] move_to_leaf = true, the default, or mkdir {}/init and move every pid of its cgroup.procs there)",
                    path.display(),
                    member_count(dir),
                    dir.display()
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

/// How many processes `dir` holds, for an error message ("?" when unreadable).
fn member_count(dir: &Path) -> String {
    fs::read_to_string(dir.join("cgroup.procs")).map_or_else(
        |_| "?".to_owned(),
        |text| {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .count()
                .to_string()
        },
    )
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

#[cfg(test)]
mod tests {
    use super::super::fake::FakeHost;
    use super::*;

    /// A cgroup namespace's root as a container runtime leaves it: an ordinary group (it has
    /// `cgroup.type`) that holds this process and has enabled nothing for its children.
    fn container_root(host: &FakeHost) -> PathBuf {
        let mount = host.path("unified");
        fs::write(mount.join("cgroup.type"), "domain\n").expect("cgroup.type");
        fs::write(mount.join("cgroup.subtree_control"), "").expect("subtree_control");
        fs::write(
            mount.join("cgroup.procs"),
            format!("1\n{}\n", std::process::id()),
        )
        .expect("procs");
        mount
    }

    #[test]
    fn only_a_namespace_root_holding_this_process_is_left() {
        let host = FakeHost::v2("codebeaker").expect("fake host");
        let mount = host.path("unified");
        // The host's root (no cgroup.type) may hold processes and enable controllers.
        assert!(is_host_root(&mount));
        let mount = container_root(&host);
        assert!(!is_host_root(&mount));
        assert!(needs_enabling(&mount).expect("read"));
        assert!(holds_this_process(&mount).expect("read"));
        assert!(!holds_this_process(&mount.join("codebeaker")).expect("read"));
        assert_eq!(member_count(&mount), "2");
    }

    #[test]
    fn leaving_the_namespace_root_moves_this_process_only_and_says_so() {
        let host = FakeHost::v2("codebeaker").expect("fake host");
        let mount = container_root(&host);
        let note = leave_namespace_root(&mount, Dirs::Fake).expect("move");
        let leaf = mount.join(SERVER_LEAF);
        assert_eq!(
            fs::read_to_string(leaf.join("cgroup.procs"))
                .expect("leaf procs")
                .trim(),
            std::process::id().to_string()
        );
        assert!(note.contains("container mode"), "{note}");
        assert!(note.contains(&leaf.display().to_string()), "{note}");
        // A leaf left by an earlier start is reused.
        leave_namespace_root(&mount, Dirs::Fake).expect("again");
    }
}
