//! Where the cgroup hierarchies are: `/proc/self/mountinfo` parsed (never paths assumed), the
//! hierarchies a box uses picked from it, and the box groups' parent directories found without
//! creating anything (for the census of what boxes leave on the host).

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::{CgroupError, V1_OPTIONAL, V1_REQUIRED};

pub(super) const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Reads and parses this process's mountinfo.
pub(super) fn read_mountinfo() -> Result<Vec<MountEntry>, CgroupError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::MountInfo {
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// One line of `/proc/self/mountinfo`, reduced to what we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountEntry {
    pub(super) mount_point: PathBuf,
    pub(super) fstype: String,
    /// `ro` in the per-mount options (field 6).
    pub(super) read_only: bool,
    /// Per-superblock options after the `-` separator; for v1 cgroups these
    /// hold the controller names, e.g. `rw,cpu,cpuacct`.
    pub(super) super_options: Vec<String>,
}

/// Parses mountinfo text (see proc(5)); malformed lines are skipped.
pub(super) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
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
    PathBuf::from(OsString::from_vec(out))
}

/// Writable cgroup2 mounts, in mountinfo order.
pub(super) fn v2_mounts(mounts: &[MountEntry]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2" && !m.read_only)
        .map(|m| m.mount_point.clone())
        .collect()
}

/// Read-only cgroup2 mounts (a container without cgroup delegation), which detection skips and
/// says so.
pub(super) fn read_only_v2_mounts(mounts: &[MountEntry]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2" && m.read_only)
        .map(|m| m.mount_point.clone())
        .collect()
}

/// A v1 hierarchy we use and the controllers (of those we care about) it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V1Mount {
    pub(super) mount: PathBuf,
    pub(super) controllers: Vec<&'static str>,
}

/// Picks the v1 hierarchies for the required and optional controllers.
/// `Err` explains what is missing.
pub(super) fn plan_v1(mounts: &[MountEntry]) -> Result<Vec<V1Mount>, String> {
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

/// The directories box groups live in, under `parent` (e.g. "codebeaker"): one per cgroup2 mount
/// and one per v1 hierarchy that carries a controller a box uses, when it exists. Creates and
/// writes nothing, so it also finds groups that another CodeBeaker process made.
pub fn parent_dirs(parent: &str) -> Result<Vec<PathBuf>, CgroupError> {
    super::validate_parent(parent)?;
    Ok(parent_dirs_in(&read_mountinfo()?, parent))
}

pub(super) fn parent_dirs_in(mounts: &[MountEntry], parent: &str) -> Vec<PathBuf> {
    let used = |m: &MountEntry| match m.fstype.as_str() {
        "cgroup2" => true,
        "cgroup" => m
            .super_options
            .iter()
            .any(|o| V1_REQUIRED.contains(&o.as_str()) || V1_OPTIONAL.contains(&o.as_str())),
        _ => false,
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts.iter().filter(|m| used(m)) {
        let dir = m.mount_point.join(parent);
        if dir.is_dir() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::super::fs::Dirs;
    use super::super::CgroupManager;
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
    fn detect_from_read_only_fixture_gives_none_and_says_why() {
        let mounts = parse_mountinfo(DOCKER_RO_V2);
        let found = CgroupManager::detect_from(&mounts, "codebeaker", Dirs::Cgroupfs, true)
            .expect("no error");
        assert!(found.manager.is_none());
        let notes = found.notes.join("\n");
        assert!(
            notes.contains("cgroup2 at /sys/fs/cgroup is mounted read-only"),
            "{notes}"
        );
        assert!(notes.contains("limits fall back to rlimits"), "{notes}");
    }
}
