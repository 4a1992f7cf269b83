//! The processes that build a box and live inside it.
//!
//! The host starts its own binary again as `codebeaker __box-init <fd>` (see
//! [`crate::INIT_ARG`]); that fresh, single-threaded process is the *setup process*. Its steps, in
//! order:
//!
//! 1. read the [`BoxSetup`] from the inherited socket;
//! 2. open the bind sources and the box's run and worker groups (`groups.rs`) as host root, for the
//!    init to inherit;
//! 3. take the box's own host ids as its effective uid and gid, so that the new user namespace is
//!    *owned* by them: per-user kernel counters (pipe buffers, in-flight fds, inotify, queued
//!    signals, message queues) are charged to the box's own ids at every level, never to host root
//!    and never to another box;
//! 4. `clone` the box init into new user, PID, mount, network, IPC, UTS and cgroup namespaces (it
//!    is born inside the box's cgroup, which the host joined the setup process to);
//! 5. become host root again, write the init's uid and gid maps (it may: it is root in the parent
//!    namespace), report the init's host pid, and let the init go on;
//! 6. wait for the init and exit with it.
//!
//! The *box init* is PID 1 of the box. It becomes root of its user namespace, sets the namespace's
//! own low limits (`NAMESPACE_LIMITS`), builds the root filesystem (`root.rs`), brings up loopback,
//! says `Ready`, and then serves the host one request at a time: runs (`run.rs`, the steps between fork and
//! exec in `child.rs`), contexts' kernels and their cells (`kernels.rs`) and file operations
//! (`files.rs`). When the host's end of the socket closes the init exits, and the kernel kills
//! everything left in the box with it.

mod child;
mod context;
mod files;
mod groups;
mod kernels;
mod root;
mod run;
mod warm;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::channel::{self, BoxSetup, HostMsg, InitMsg};
use crate::ids::IdMap;

/// Namespaces every box gets.
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// Number of uids and gids mapped into each box (all but rootless boxes without subordinate ids,
/// see [`crate::ids`]).
pub const ID_RANGE: u32 = 65536;

/// uid and gid that programs in a box run as.
pub const SANDBOX_UID: u32 = 1000;

/// Limits of the box's own user namespace (`/proc/sys/user/*` inside it), per user of the box. No
/// program needs a namespace of its own; inotify and fanotify are charged here before they reach
/// the box's owner on the host.
const NAMESPACE_LIMITS: &[(&str, u32)] = &[
    ("max_user_namespaces", 0),
    ("max_mnt_namespaces", 0),
    ("max_pid_namespaces", 0),
    ("max_net_namespaces", 0),
    ("max_ipc_namespaces", 0),
    ("max_uts_namespaces", 0),
    ("max_cgroup_namespaces", 0),
    ("max_time_namespaces", 0),
    ("max_inotify_instances", 16),
    ("max_inotify_watches", 8192),
    ("max_fanotify_groups", 0),
    ("max_fanotify_marks", 0),
];

/// Entry point of the setup process. `args` are the arguments after [`crate::INIT_ARG`]. Never
/// returns.
pub fn main(args: &[String]) -> ! {
    let code = match setup_process(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("codebeaker box setup: {message}");
            1
        }
    };
    std::process::exit(code)
}

/// The setup process, in the order of the module doc; returns the init's exit code. A failure
/// after the setup was read is also reported to the host as [`InitMsg::SetupFailed`].
fn setup_process(args: &[String]) -> Result<i32, String> {
    let (mut sock, setup) = read_setup(args)?;
    let (sources, groups) = open_host_handles(&setup).map_err(|msg| failed(&mut sock, msg))?;
    // The init waits on this pipe until its maps are written.
    let (go_read, go_write) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // The new user namespace's owner is the effective uid of its creator: take the box's own
    // (rootless, it is the user's, the only one there is).
    if let IdMap::HostRange { base } = setup.ids {
        set_effective_ids(base).map_err(|msg| failed(&mut sock, msg))?;
    }
    // SAFETY: this process is single-threaded (a fresh exec of our binary that started no
    // threads), so a raw clone behaves like fork.
    let cloned = unsafe { clone_init() };
    if let Ok(0) = cloned {
        drop(go_write);
        wait_for_go(go_read);
        box_init(sock, setup, sources, groups)
    }
    let pid = take_back_root(&mut sock, cloned, setup.ids)?;
    drop(groups);
    drop(go_read);
    map_ids(pid, setup.ids)
        .and_then(|()| run::protect_from_oom(pid))
        .map_err(|msg| {
            let msg = failed(&mut sock, msg);
            kill(pid);
            msg
        })?;
    channel::send(&mut sock, &InitMsg::Spawned { pid }).map_err(|e| format!("socket: {e}"))?;
    let_init_go(go_write)?;
    // Only the init holds the box's end of the socket from here on.
    drop(sock);
    wait_for_init(pid)
}

/// Tells the host that setting the box up failed with `msg`, and returns `msg`.
fn failed(sock: &mut UnixStream, msg: String) -> String {
    let _ = channel::send(sock, &InitMsg::SetupFailed(msg.clone()));
    msg
}

/// Kills the init, the setup process's own child.
fn kill(pid: libc::pid_t) {
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Reads the [`BoxSetup`] from the socket whose descriptor the host passed in `args`.
fn read_setup(args: &[String]) -> Result<(UnixStream, BoxSetup), String> {
    let fd: i32 = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or("usage: __box-init <socket fd>")?;
    // SAFETY: the host passed us this descriptor for the socket and nothing else owns it.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    set_cloexec(fd);
    match channel::recv::<HostMsg>(&mut sock) {
        Ok(Some(HostMsg::Setup(setup))) => Ok((sock, setup)),
        Ok(_) => Err("expected the box setup first".into()),
        Err(e) => Err(format!("reading the box setup: {e}")),
    }
}

/// Opens the bind sources and the box's run and worker groups, as host root, for the init to
/// inherit.
///
/// The init, root only of its own user namespace, may not be able to reach the bind sources by
/// path (toolchains under /root, for example). It mounts them through these descriptors instead.
fn open_host_handles(
    setup: &BoxSetup,
) -> Result<(Vec<OwnedFd>, Option<groups::RunGroups>), String> {
    let sources = match setup.ids {
        IdMap::HostRange { .. } => setup
            .binds
            .iter()
            .map(|bind| root::open_source(&bind.source))
            .collect::<Result<Vec<_>, _>>()?,
        // Rootless, the init opens them itself (`root::build`).
        _ => Vec::new(),
    };
    let groups = setup
        .groups
        .as_ref()
        .map(groups::RunGroups::open)
        .transpose()?;
    Ok((sources, groups))
}

/// Clones the box init into the box's new [`NAMESPACES`]: its pid in the parent, 0 in the init.
///
/// # Safety
///
/// Only in a single-threaded process.
unsafe fn clone_init() -> std::io::Result<libc::pid_t> {
    // SAFETY: the caller guarantees a single-threaded process; no stack or tid pointers.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (NAMESPACES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

/// In the init: waits until the setup process says go (its maps are written), or exits.
fn wait_for_go(go_read: OwnedFd) {
    let mut go_read = std::fs::File::from(go_read);
    let mut byte = [0u8; 1];
    if go_read.read_exact(&mut byte).is_err() {
        std::process::exit(1);
    }
}

/// Becomes host root again after the clone (when it was root), killing the init if that fails,
/// and returns the init's pid, or the clone's error.
fn take_back_root(
    sock: &mut UnixStream,
    cloned: std::io::Result<libc::pid_t>,
    ids: IdMap,
) -> Result<libc::pid_t, String> {
    let was_root = matches!(ids, IdMap::HostRange { .. });
    let taken = if was_root {
        set_effective_ids(0)
    } else {
        Ok(())
    };
    if let Err(msg) = taken {
        let msg = failed(sock, msg);
        if let Ok(pid) = cloned {
            kill(pid);
        }
        return Err(msg);
    }
    cloned.map_err(|err| failed(sock, format!("creating the box namespaces failed: {err}")))
}

/// Writes the init's uid and gid maps (see [`crate::ids`]): as host root, the box's ids 0 to
/// [`ID_RANGE`] are the host's from its slot's base; rootless, the user's subordinate range through
/// the setuid helpers, or only the box's [`SANDBOX_UID`] as the user's own ids.
fn map_ids(pid: libc::pid_t, ids: IdMap) -> Result<(), String> {
    let write = |file: &str, text: &str| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| format!("writing the box's {file} failed: {e}"))
    };
    match ids {
        IdMap::HostRange { base } => {
            let map = format!("0 {base} {ID_RANGE}\n");
            write("uid_map", &map).and_then(|()| write("gid_map", &map))
        }
        IdMap::Own { uid, gid } => {
            // An ordinary user may map its own gid only once setgroups is denied for good.
            write("setgroups", "deny")?;
            write("uid_map", &format!("{SANDBOX_UID} {uid} 1\n"))?;
            write("gid_map", &format!("{SANDBOX_UID} {gid} 1\n"))
        }
        IdMap::Subordinate { uid, gid } => {
            let (own_uid, own_gid) = (rustix::process::getuid(), rustix::process::getgid());
            run_map_helper("newuidmap", pid, uid, own_uid.as_raw())
                .and_then(|()| run_map_helper("newgidmap", pid, gid, own_gid.as_raw()))
        }
    }
}

/// Maps the init's ids 0 to [`ID_RANGE`] to the user's subordinate ids from `start`, except the
/// box's [`SANDBOX_UID`], which is the user's `own` id (so that the init reaches what the user
/// reaches, its state directory first), with the setuid helper `helper` (`newuidmap` or
/// `newgidmap`), which checks the ranges against `/etc/subuid` or `/etc/subgid`.
fn run_map_helper(helper: &str, pid: libc::pid_t, start: u32, own: u32) -> Result<(), String> {
    let path = crate::ids::find_helper(helper)
        .ok_or_else(|| format!("{helper} is not installed (the uidmap package)"))?;
    let after = SANDBOX_UID + 1;
    let ranges = [
        (0, start, SANDBOX_UID),
        (SANDBOX_UID, own, 1),
        (after, start + after, ID_RANGE - after),
    ];
    let mut args = vec![pid.to_string()];
    for (inside, outside, count) in ranges {
        args.extend([inside.to_string(), outside.to_string(), count.to_string()]);
    }
    let out = std::process::Command::new(&path)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", path.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} refused to map the box's ids: {}; check this user's range in /etc/subuid and /etc/subgid",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Lets the init go on past [`wait_for_go`].
fn let_init_go(go_write: OwnedFd) -> Result<(), String> {
    let mut go_write = std::fs::File::from(go_write);
    std::io::Write::write_all(&mut go_write, b"g").map_err(|e| format!("pipe: {e}"))
}

/// Waits for the init and returns its exit code (`128 + signal` when a signal ended it).
fn wait_for_init(pid: libc::pid_t) -> Result<i32, String> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err("waiting for the box init failed".into());
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// Sets the effective uid and gid, keeping the real and saved ones (root): capabilities leave the
/// effective set while they are not 0 and come back when they are 0 again.
fn set_effective_ids(id: u32) -> Result<(), String> {
    // SAFETY: plain credential calls of a single-threaded process; -1 keeps a value unchanged.
    unsafe {
        if id == 0 {
            if libc::setresuid(u32::MAX, 0, u32::MAX) != 0
                || libc::setresgid(u32::MAX, 0, u32::MAX) != 0
            {
                return Err(format!(
                    "taking back host root after creating the box: {}",
                    std::io::Error::last_os_error()
                ));
            }
        } else if libc::setresgid(u32::MAX, id, u32::MAX) != 0
            || libc::setresuid(u32::MAX, id, u32::MAX) != 0
        {
            return Err(format!(
                "taking the box's host id {id}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Writes [`NAMESPACE_LIMITS`] for the init's own user namespace (it holds every capability there).
fn limit_namespace() -> Result<(), String> {
    for (name, value) in NAMESPACE_LIMITS {
        let path = format!("/proc/sys/user/{name}");
        match std::fs::write(&path, value.to_string()) {
            Ok(()) => {}
            // Older kernels lack some of these (time namespaces, fanotify).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("limiting the box's user namespace ({path}): {e}")),
        }
    }
    Ok(())
}

fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// PID 1 of the box. Never returns.
fn box_init(
    mut sock: UnixStream,
    setup: BoxSetup,
    sources: Vec<OwnedFd>,
    groups: Option<groups::RunGroups>,
) -> ! {
    let prepared = become_root(setup.ids)
        .map(|_| {
            // After the credential change, which would clear it.
            // SAFETY: prctl with constant arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        })
        .and_then(|_| root::build(&setup, &sources))
        // After the root is built: a rootless init clones its binds there, and each clone is a
        // mount namespace of its own, which the limits allow no more of.
        .and_then(|_| limit_namespace())
        .and_then(|_| root::network_loopback_up())
        .and_then(|_| {
            nix::unistd::sethostname("codebeaker").map_err(|e| format!("sethostname: {e}"))
        })
        .and_then(|_| crate::seccomp::build_filters().map_err(|e| e.to_string()));
    let filters = match prepared {
        Ok(filters) => filters,
        Err(msg) => {
            let _ = channel::send(&mut sock, &InitMsg::SetupFailed(msg));
            std::process::exit(1);
        }
    };
    // Nothing of the host's environment stays in the box.
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    if channel::send(&mut sock, &InitMsg::Ready).is_err() {
        std::process::exit(1);
    }
    let devnull = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            let _ = channel::send(&mut sock, &InitMsg::SetupFailed(format!("/dev/null: {e}")));
            std::process::exit(1);
        }
    };
    let ctx = context::Context {
        filters,
        degraded: setup.degraded,
        box_limits: setup.limits,
        devnull,
        groups,
    };
    let mut workers = warm::Workers::default();
    let mut kernels = kernels::Kernels::default();
    // Allocated and written now, while the box has memory: file reads use only this buffer.
    let mut read_buf = vec![1u8; channel::FILE_CHUNK];
    loop {
        let msg = match channel::recv::<HostMsg>(&mut sock) {
            Ok(Some(msg)) => msg,
            // The host went away: leave, and the kernel ends every process in the box.
            Ok(None) | Err(_) => std::process::exit(0),
        };
        let reply = match msg {
            HostMsg::Run(req) => {
                match run::run(&ctx, &mut workers, &mut kernels, &req, &mut sock) {
                    Ok(report) => InitMsg::Finished(report),
                    Err(run::RunError::HostGone) => std::process::exit(0),
                    Err(run::RunError::Failed(msg)) => InitMsg::Error(msg),
                }
            }
            HostMsg::WriteFile(w) => match files::write(&w) {
                Ok(()) => InitMsg::Done,
                Err(msg) => InitMsg::Error(msg),
            },
            HostMsg::ReadFile {
                root,
                path,
                max_bytes,
            } => {
                let mut send = |piece: &[u8]| channel::send_file_chunk(&mut sock, piece).is_ok();
                match files::read_chunks(root, &path, max_bytes, &mut read_buf, &mut send) {
                    Ok(()) => InitMsg::Done,
                    Err(files::ReadError::Failed(msg)) => InitMsg::Error(msg),
                    Err(files::ReadError::HostGone) => std::process::exit(0),
                }
            }
            HostMsg::AppendFile(w) => match files::append(&w) {
                Ok(()) => InitMsg::Done,
                Err(msg) => InitMsg::Error(msg),
            },
            HostMsg::CreateDir {
                root,
                path,
                recursive,
            } => match files::create_dir(root, &path, recursive) {
                Ok(()) => InitMsg::Done,
                Err(msg) => InitMsg::Error(msg),
            },
            HostMsg::Remove {
                root,
                path,
                recursive,
            } => match files::remove(root, &path, recursive) {
                Ok(removed) => InitMsg::Removed(removed),
                Err(msg) => InitMsg::Error(msg),
            },
            HostMsg::Copy {
                root,
                source,
                destination,
                overwrite,
            } => match files::copy(root, &source, &destination, overwrite) {
                Ok(n) => InitMsg::Copied(n),
                Err(msg) => InitMsg::Error(msg),
            },
            HostMsg::List {
                root,
                path,
                recursive,
                max_depth,
                max_entries,
            } => match files::list(root, &path, recursive, max_depth, max_entries) {
                Ok((entries, truncated)) => InitMsg::Entries { entries, truncated },
                Err(msg) => InitMsg::Error(msg),
            },
            HostMsg::StartWorker { spec, wait_ready } => {
                match workers.ensure(&ctx, &spec, wait_ready) {
                    Ok(()) => InitMsg::Done,
                    Err(e) => InitMsg::Error(format!("starting a warm worker: {e}")),
                }
            }
            HostMsg::KeepWorkers { keys } => {
                workers.keep_only(&keys);
                InitMsg::Done
            }
            HostMsg::StartContext { id, spec } => {
                match kernels.start(&ctx, &mut workers, &id, spec) {
                    Ok(()) => InitMsg::Done,
                    Err(e) => InitMsg::Error(e),
                }
            }
            HostMsg::CloseContext { id } => InitMsg::Removed(kernels.close(&mut workers, &id)),
            HostMsg::Shutdown => std::process::exit(0),
            HostMsg::Setup(_)
            | HostMsg::Cancel
            | HostMsg::Stdin(_)
            | HostMsg::StdinFeed(_)
            | HostMsg::CloseStdin => InitMsg::Error("unexpected request".into()),
        };
        if channel::send(&mut sock, &reply).is_err() {
            std::process::exit(0);
        }
    }
}

/// Takes uid and gid 0 of the new user namespace (mapped to the box's first host id), or, in a
/// box that has only its [`SANDBOX_UID`] mapped, that id: the init keeps every capability of the
/// namespace either way, having created it. Such a box cannot drop supplementary groups
/// (`setgroups` is denied), which [`child::GROUPS_FIXED`] tells the run children.
fn become_root(ids: IdMap) -> Result<(), String> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let id = if ids.single() { SANDBOX_UID } else { 0 };
    setresgid(Gid::from_raw(id), Gid::from_raw(id), Gid::from_raw(id))
        .map_err(|e| format!("setresgid({id}): {e}"))?;
    if ids.single() {
        child::GROUPS_FIXED.store(true, std::sync::atomic::Ordering::Relaxed);
    } else {
        setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    }
    setresuid(Uid::from_raw(id), Uid::from_raw(id), Uid::from_raw(id))
        .map_err(|e| format!("setresuid({id}): {e}"))?;
    Ok(())
}
