//! A fake cgroupfs for unit tests: plain directories and files in a temporary directory, a
//! mountinfo that points at them, and groups that are filled with the interface files of both
//! versions when they are made (as the kernel fills a new group). It lets the v1 and v2 writes,
//! their read-backs, the counters and the removal be tested without root. A file named with
//! [`ignore_writes`] becomes a link to `/dev/null`: it accepts every write and reads back empty,
//! like a kernel that does not apply a limit.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Files of a new group and their first content, v1 and v2 together.
const GROUP_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cgroup.controllers", "cpuset cpu io memory pids\n"),
    ("cgroup.subtree_control", ""),
    ("cgroup.kill", ""),
    ("cgroup.freeze", "0\n"),
    ("cgroup.events", "populated 0\nfrozen 0\n"),
    // v2
    ("memory.max", "max\n"),
    ("memory.swap.max", "max\n"),
    ("memory.peak", "0\n"),
    ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
    ("pids.max", "max\n"),
    ("pids.current", "0\n"),
    ("cpu.max", "max 100000\n"),
    ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
    // v1
    ("memory.limit_in_bytes", "9223372036854771712\n"),
    ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
    ("memory.swappiness", "60\n"),
    ("memory.max_usage_in_bytes", "0\n"),
    (
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    ),
    ("cpu.cfs_period_us", "100000\n"),
    ("cpu.cfs_quota_us", "-1\n"),
    ("cpuacct.usage", "0\n"),
    ("freezer.state", "THAWED\n"),
];

thread_local! {
    static IGNORED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// Makes `file` of every group created afterwards on this thread ignore what is written to it.
pub(super) fn ignore_writes(file: &'static str) {
    IGNORED.with(|i| i.borrow_mut().push(file));
}

/// Like the kernel's `mkdir` in cgroupfs: the group comes with its files.
pub(super) fn create_group(dir: &Path) -> io::Result<()> {
    fs::create_dir(dir)?;
    populate(dir)
}

fn populate(dir: &Path) -> io::Result<()> {
    let ignored = IGNORED.with(|i| i.borrow().clone());
    for (file, content) in GROUP_FILES {
        let path = dir.join(file);
        if ignored.contains(file) {
            symlink("/dev/null", &path)?;
        } else {
            fs::write(&path, content)?;
        }
    }
    Ok(())
}

/// Like the kernel's `rmdir` in cgroupfs: the files go with the group.
pub(super) fn remove_group(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            fs::remove_file(entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// A fake host: hierarchies under a temporary directory and the mountinfo that names them.
pub(super) struct FakeHost {
    pub(super) root: tempfile::TempDir,
    pub(super) mountinfo: String,
}

impl FakeHost {
    /// One cgroup2 mount with the box controllers on, and the parent group `parent` in it.
    pub(super) fn v2(parent: &str) -> io::Result<FakeHost> {
        let root = tempfile::tempdir()?;
        let mount = root.path().join("unified");
        fs::create_dir(&mount)?;
        populate(&mount)?;
        fs::write(mount.join("cgroup.subtree_control"), "cpu memory pids\n")?;
        let parent_dir = mount.join(parent);
        create_group(&parent_dir)?;
        fs::write(
            parent_dir.join("cgroup.subtree_control"),
            "cpu memory pids\n",
        )?;
        let mountinfo = format!(
            "35 25 0:30 / {} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n",
            mount.display()
        );
        Ok(FakeHost { root, mountinfo })
    }

    /// v1 hierarchies as a systemd hybrid host has them (`cpu,cpuacct` together).
    pub(super) fn v1() -> io::Result<FakeHost> {
        let root = tempfile::tempdir()?;
        let mut mountinfo = String::new();
        for (id, controllers) in ["memory", "pids", "cpu,cpuacct", "freezer", "blkio"]
            .iter()
            .enumerate()
        {
            let mount = root.path().join(controllers);
            fs::create_dir(&mount)?;
            populate(&mount)?;
            mountinfo.push_str(&format!(
                "{} 25 0:{} / {} rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,{controllers}\n",
                30 + id,
                40 + id,
                mount.display()
            ));
        }
        Ok(FakeHost { root, mountinfo })
    }

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mounts::{parent_dirs_in, parse_mountinfo};
    use super::super::{fs::Dirs, CgroupError, CgroupLimits, CgroupManager, CgroupStats};
    use super::*;

    const PARENT: &str = "codebeaker";

    fn manager(host: &FakeHost) -> CgroupManager {
        CgroupManager::detect_from(&parse_mountinfo(&host.mountinfo), PARENT, Dirs::Fake, true)
            .expect("detect")
            .manager
            .expect("a usable fake hierarchy")
    }

    fn limits() -> CgroupLimits {
        CgroupLimits {
            memory_bytes: 64 << 20,
            pids_max: 16,
            cpu_millis: 500,
        }
    }

    fn read(path: PathBuf) -> String {
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    #[test]
    fn v2_limits_are_written_and_read_back() {
        let host = FakeHost::v2(PARENT).expect("fake host");
        let m = manager(&host);
        assert_eq!(m.version(), super::super::CgroupVersion::V2);
        let cg = m.create("cb-1-aa", &limits()).expect("create");
        let dir = host.path("unified/codebeaker/cb-1-aa");
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("memory.swap.max")), "0");
        assert_eq!(read(dir.join("pids.max")), "16");
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        cg.set_memory_limit(32 << 20).expect("lower");
        assert_eq!(read(dir.join("memory.max")), (32u64 << 20).to_string());
        assert_eq!(m.list().expect("list"), vec!["cb-1-aa".to_owned()]);
        cg.destroy().expect("destroy");
        assert!(!dir.exists());
        assert!(m.list().expect("list").is_empty());
    }

    #[test]
    fn v1_limits_are_written_and_read_back_in_their_hierarchies() {
        let host = FakeHost::v1().expect("fake host");
        let m = manager(&host);
        assert_eq!(m.version(), super::super::CgroupVersion::V1);
        let cg = m.create("cb-1-bb", &limits()).expect("create");
        let memory = host.path("memory/codebeaker/cb-1-bb");
        let cpu = host.path("cpu,cpuacct/codebeaker/cb-1-bb");
        assert_eq!(read(memory.join("memory.limit_in_bytes")), "67108864");
        assert_eq!(read(memory.join("memory.memsw.limit_in_bytes")), "67108864");
        assert_eq!(read(memory.join("memory.swappiness")), "0");
        assert_eq!(read(host.path("pids/codebeaker/cb-1-bb/pids.max")), "16");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        // Only the hierarchies a box uses get a group.
        assert!(!host.path("blkio/codebeaker").exists());
        assert!(host.path("freezer/codebeaker/cb-1-bb").is_dir());
        // Raising memsw first and lowering it last keeps it never below the plain limit.
        cg.set_memory_limit(128 << 20).expect("raise");
        assert_eq!(
            read(memory.join("memory.memsw.limit_in_bytes")),
            (128u64 << 20).to_string()
        );
        let dirs = parent_dirs_in(&parse_mountinfo(&host.mountinfo), PARENT);
        assert_eq!(dirs.len(), 4, "{dirs:?}");
        cg.destroy().expect("destroy");
        for h in ["memory", "pids", "cpu,cpuacct", "freezer"] {
            assert!(
                !host.path(&format!("{h}/codebeaker/cb-1-bb")).exists(),
                "{h}"
            );
        }
    }

    #[test]
    fn a_limit_that_reads_back_differently_is_an_error_and_removes_the_group() {
        for (host, file) in [
            (FakeHost::v2(PARENT), "cpu.max"),
            (FakeHost::v1(), "memory.swappiness"),
        ] {
            let host = host.expect("fake host");
            let m = manager(&host);
            ignore_writes(file);
            let err = m.create("cb-1-cc", &limits()).expect_err("not applied");
            IGNORED.with(|i| i.borrow_mut().clear());
            match &err {
                CgroupError::LimitMismatch {
                    path, read_back, ..
                } => {
                    assert!(path.ends_with(file), "{err}");
                    assert_eq!(read_back, "");
                }
                other => panic!("{other}"),
            }
            assert!(m.list().expect("list").is_empty(), "{err}");
        }
    }

    #[test]
    fn stats_are_parsed_for_each_version() {
        let host = FakeHost::v2(PARENT).expect("fake host");
        let m = manager(&host);
        let cg = m.create("cb-1-dd", &limits()).expect("create");
        let dir = host.path("unified/codebeaker/cb-1-dd");
        fs::write(dir.join("memory.peak"), "12345\n").expect("write");
        fs::write(
            dir.join("memory.events"),
            "low 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .expect("write");
        fs::write(dir.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").expect("write");
        fs::write(dir.join("pids.current"), "3\n").expect("write");
        let want = CgroupStats {
            memory_peak_bytes: Some(12345),
            oom_kills: 2,
            cpu_usage_ns: 7000,
            pids_current: 3,
        };
        assert_eq!(cg.stats().expect("stats"), want);
        fs::write(dir.join("cpu.stat"), "user_usec 5\n").expect("write");
        assert!(matches!(cg.stats(), Err(CgroupError::Parse { .. })));
        cg.destroy().expect("destroy");

        let host = FakeHost::v1().expect("fake host");
        let m = manager(&host);
        let cg = m.create("cb-1-dd", &limits()).expect("create");
        let memory = host.path("memory/codebeaker/cb-1-dd");
        fs::write(memory.join("memory.max_usage_in_bytes"), "12345\n").expect("write");
        fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 2\n",
        )
        .expect("write");
        fs::write(
            host.path("cpu,cpuacct/codebeaker/cb-1-dd/cpuacct.usage"),
            "7000\n",
        )
        .expect("write");
        fs::write(host.path("pids/codebeaker/cb-1-dd/pids.current"), "3\n").expect("write");
        assert_eq!(cg.stats().expect("stats"), want);
        cg.reset_peak();
        assert_eq!(read(memory.join("memory.max_usage_in_bytes")), "0");
        cg.destroy().expect("destroy");
    }

    #[test]
    fn groups_are_removed_with_their_run_groups_and_stale_ones_too() {
        for host in [FakeHost::v2(PARENT), FakeHost::v1()] {
            let host = host.expect("fake host");
            let m = manager(&host);
            let cg = m.create("cb-1-ee", &limits()).expect("create");
            let groups = cg.create_run_groups().expect("run groups");
            assert!(groups.run.is_dir() && groups.workers.is_dir());
            let again = m.create("cb-1-ee", &limits());
            assert!(
                matches!(again, Err(CgroupError::AlreadyExists { .. })),
                "{again:?}"
            );
            assert!(
                groups.run.is_dir(),
                "a refused create leaves the group alone"
            );
            cg.destroy().expect("destroy");
            assert!(!groups.run.exists());
            assert!(m.list().expect("list").is_empty());

            let cg = m.create("cb-1-ff", &limits()).expect("create");
            std::mem::forget(cg);
            assert_eq!(m.list().expect("list"), vec!["cb-1-ff".to_owned()]);
            m.remove_stale("cb-1-ff").expect("remove_stale");
            assert!(m.list().expect("list").is_empty());
            m.remove_stale("cb-1-ff").expect("idempotent");
        }
    }
}
