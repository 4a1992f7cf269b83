//! The box's root filesystem, built inside its own mount namespace, in order:
//!
//! 1. every mount of the inherited namespace becomes private (nothing propagates to the host);
//! 2. a small tmpfs becomes the new root, on the host's (empty, shared) mount point;
//! 3. read-only binds of the base system (`/usr`, `/bin`, `/lib*`), of the few `/etc` entries
//!    programs read, and of the extra directories the box was asked for (toolchains, the compile
//!    cache), each at the box path it was given (a neutral one for host-specific places);
//! 4. generated `/etc/passwd`, `/etc/group`, `/etc/hosts` and `/etc/hostname`;
//! 5. a fresh `/proc`, a minimal `/dev` (null, zero, full, random, urandom and the usual links),
//!    and tmpfs for `/workspace`, `/tmp` and `/dev/shm`, each capped in size and in files;
//! 6. `pivot_root` into it, detach the old root, and make the root tmpfs read-only.
//!
//! Nothing of the host is visible beyond what step 3 binds; `/root`, `/home` and `/etc/shadow`
//! are simply not there.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::SANDBOX_UID;
use crate::channel::BoxSetup;

/// Base system directories bound read-only (or recreated as symlinks on merged-/usr systems).
const BASE_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];

/// `/etc` entries that interpreters and the dynamic loader read.
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "protocols",
    "services",
    "mime.types",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "os-release",
    "debian_version",
    "inputrc",
    // Debian's matplotlib reads its defaults here, and refuses to import without them.
    "matplotlibrc",
];

type R<T> = Result<T, String>;

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Builds the box root and enters it, in the order of the module doc.
pub fn build(setup: &BoxSetup, sources: &[OwnedFd]) -> R<()> {
    let root = setup.root_mountpoint.as_path();
    let limits = &setup.limits;
    make_mounts_private()?;
    // Rootless, the setup process may not clone mounts of the host's mount namespace; the init
    // may, of its own, and reaches what the user reaches (see `crate::ids`).
    let opened;
    let sources = match setup.ids {
        crate::ids::IdMap::HostRange { .. } => sources,
        _ => {
            opened = setup
                .binds
                .iter()
                .map(|bind| open_source(&bind.source))
                .collect::<R<Vec<_>>>()?;
            &opened
        }
    };
    mount_root(root)?;
    bind_base_system(root)?;
    attach_binds(root, setup, sources)?;
    write_etc(&root.join("etc"))?;
    mount_proc(root)?;
    build_dev(root, limits.tmp_bytes, limits.tmp_files)?;
    mount_workspace(root, limits.workspace_bytes, limits.workspace_files)?;
    mount_tmp(root, limits.tmp_bytes, limits.tmp_files)?;
    enter(root)
}

/// Makes every mount of the inherited namespace private, so that nothing propagates to the host.
fn make_mounts_private() -> R<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))
}

/// Mounts the small tmpfs that becomes the new root on the host's (empty, shared) mount point.
fn mount_root(root: &Path) -> R<()> {
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=4m,nr_inodes=4096,mode=0755"),
    )
    .map_err(|e| err("mounting the root tmpfs on", root, e))
}

/// Binds the base system ([`BASE_DIRS`]) and the `/etc` entries programs read
/// ([`ETC_ENTRIES`]), read-only.
fn bind_base_system(root: &Path) -> R<()> {
    for dir in BASE_DIRS {
        bind_host_path(root, Path::new(dir))?;
    }
    mkdir(&root.join("etc"), 0o755)?;
    for entry in ETC_ENTRIES {
        bind_host_path(root, &Path::new("/etc").join(entry))?;
    }
    Ok(())
}

/// Attaches the extra directories the box was asked for (toolchains, the compile cache), each at
/// its box path, from the detached mounts the setup process opened ([`open_source`]).
fn attach_binds(root: &Path, setup: &BoxSetup, sources: &[OwnedFd]) -> R<()> {
    for (bind, fd) in setup.binds.iter().zip(sources) {
        let target = root.join(bind.target.strip_prefix("/").unwrap_or(&bind.target));
        if bind.source == bind.target && target.exists() && is_inside_bound(&bind.target) {
            // Already visible through a base bind (for example a toolchain under /usr).
            continue;
        }
        let is_dir = rustix::fs::fstat(fd)
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
            .map_err(|e| err("stat", &bind.source, e))?;
        attach(fd, is_dir, &target)?;
    }
    Ok(())
}

/// Mounts a fresh `/proc` (nosuid, nodev, noexec).
fn mount_proc(root: &Path) -> R<()> {
    let proc_dir = root.join("proc");
    mkdir(&proc_dir, 0o555)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| err("mounting", &proc_dir, e))
}

/// Mounts `/workspace`, owned by the sandbox user, capped in bytes and files.
fn mount_workspace(root: &Path, bytes: u64, files: u64) -> R<()> {
    let ws = root.join("workspace");
    mkdir(&ws, 0o755)?;
    tmpfs(
        &ws,
        &format!("size={bytes},nr_inodes={files},mode=0755,uid={SANDBOX_UID},gid={SANDBOX_UID}"),
    )
}

/// Mounts `/tmp`, sticky and open to all, capped in bytes and files.
fn mount_tmp(root: &Path, bytes: u64, files: u64) -> R<()> {
    let tmp = root.join("tmp");
    mkdir(&tmp, 0o755)?;
    tmpfs(&tmp, &format!("size={bytes},nr_inodes={files},mode=1777"))
}

/// Clones a bind source as a detached, read-only, nosuid, nodev mount, as host root and before
/// the box's namespaces exist (rootless: in the init, see [`build`]). The init, root only of its own user namespace, may not be able to
/// reach the source by path (a toolchain under `/root`, say) and may not bind a mount of another
/// mount namespace; it attaches this detached one with `move_mount` instead.
pub fn open_source(path: &Path) -> R<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let fd = rustix::mount::open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| err("cloning bind source", path, e))?;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on a descriptor we own, with a correctly sized struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(err(
            "making read-only",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// Attaches a detached mount from [`open_source`] at `target` (created first).
fn attach(fd: &OwnedFd, is_dir: bool, target: &Path) -> R<()> {
    if is_dir {
        fs::create_dir_all(target).map_err(|e| err("creating", target, e))?;
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| err("creating", parent, e))?;
        }
        fs::write(target, b"").map_err(|e| err("creating", target, e))?;
    }
    rustix::mount::move_mount(
        fd,
        c"",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| err("attaching a bind at", target, e))
}

/// Whether `target` lies under one of the base directories (and so is already bound).
fn is_inside_bound(target: &Path) -> bool {
    BASE_DIRS
        .iter()
        .any(|d| target.starts_with(d) && Path::new(d).is_dir())
}

fn mkdir(path: &Path, mode: u32) -> R<()> {
    fs::create_dir_all(path).map_err(|e| err("creating", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| err("chmod", path, e))
}

fn tmpfs(path: &Path, options: &str) -> R<()> {
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .map_err(|e| err("mounting tmpfs on", path, e))?;
    // Read the caps back: a cap that did not apply is an error, never silence.
    let option = |name: &str| {
        options
            .split(',')
            .find_map(|o| o.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| err("statvfs", path, e))?;
    if let Some(wanted) = option("size=") {
        let got = st.blocks() as u64 * st.fragment_size() as u64;
        // The kernel rounds the size up to whole pages.
        if got < wanted || got > wanted + 4096 {
            return Err(format!(
                "the size cap of {} did not apply: asked for {wanted} bytes, got {got}",
                path.display()
            ));
        }
    }
    if let Some(wanted) = option("nr_inodes=") {
        let got = st.files() as u64;
        if got != wanted {
            return Err(format!(
                "the file count cap of {} did not apply: asked for {wanted}, got {got}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Makes host `path` visible at the same place under `root`: symlinks are recreated, directories
/// and files bound read-only. Missing host paths are skipped.
fn bind_host_path(root: &Path, path: &Path) -> R<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    let target = root.join(path.strip_prefix("/").unwrap_or(path));
    if meta.file_type().is_symlink() {
        let link = fs::read_link(path).map_err(|e| err("reading link", path, e))?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| err("creating", parent, e))?;
        }
        return symlink(&link, &target).map_err(|e| err("creating link", &target, e));
    }
    bind_ro(path, &target)
}

/// Read-only, nosuid bind of `source` at `target` (created as an empty file or directory).
fn bind_ro(source: &Path, target: &Path) -> R<()> {
    let is_dir = source.is_dir();
    if is_dir {
        fs::create_dir_all(target).map_err(|e| err("creating", target, e))?;
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| err("creating", parent, e))?;
        }
        fs::write(target, b"").map_err(|e| err("creating", target, e))?;
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("binding", source, e))?;
    // A remount inside a user namespace must keep the flags the kernel locked on the original
    // mount (nodev, noexec, atime), so read them and add ours.
    let flags = locked_flags(source)? | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(|e| err("making read-only", target, e))
}

fn locked_flags(path: &Path) -> R<MsFlags> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| err("statvfs", path, e))?;
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

/// Writes the generated `/etc/passwd`, `/etc/group`, `/etc/hosts` and `/etc/hostname`.
fn write_etc(etc: &Path) -> R<()> {
    let files: [(&str, String); 4] = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/workspace:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            "127.0.0.1\tlocalhost codebeaker\n::1\tlocalhost ip6-localhost\n".into(),
        ),
        ("hostname", "codebeaker\n".into()),
    ];
    for (name, content) in files {
        let path = etc.join(name);
        fs::write(&path, content).map_err(|e| err("writing", &path, e))?;
    }
    Ok(())
}

/// Builds a minimal `/dev`: null, zero, full, random and urandom bound from the host, the usual
/// links into `/proc/self/fd`, and a `/dev/shm` tmpfs capped like `/tmp`.
fn build_dev(root: &Path, shm_bytes: u64, shm_files: u64) -> R<()> {
    let dev = root.join("dev");
    mkdir(&dev, 0o755)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,nr_inodes=64,mode=0755"),
    )
    .map_err(|e| err("mounting tmpfs on", &dev, e))?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let target = dev.join(node);
        let source = PathBuf::from("/dev").join(node);
        fs::write(&target, b"").map_err(|e| err("creating", &target, e))?;
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err("binding", &source, e))?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(name)).map_err(|e| err("creating link", &dev.join(name), e))?;
    }
    let shm = dev.join("shm");
    mkdir(&shm, 0o755)?;
    tmpfs(
        &shm,
        &format!("size={shm_bytes},nr_inodes={shm_files},mode=1777"),
    )
}

/// `pivot_root` into `root`, drop the old root, and freeze the root tmpfs read-only.
fn enter(root: &Path) -> R<()> {
    nix::unistd::chdir(root).map_err(|e| err("chdir", root, e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("making the root read-only: {e}"))
}

/// Brings up `lo` in the box's (otherwise empty) network namespace.
pub fn network_loopback_up() -> R<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo"; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        let name = CString::new("lo").map_err(|e| e.to_string())?;
        for (i, b) in name.as_bytes_with_nul().iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(format!(
                    "SIOCSIFFLAGS lo: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        libc::close(fd);
        result
    }
}
