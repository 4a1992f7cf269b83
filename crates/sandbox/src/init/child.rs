//! The child between `fork` and `execve`: a process the init starts (a run's program, or a warm
//! worker) taking its place in the box.
//!
//! The init is single-threaded, but the child still keeps to what is async-signal-safe: no
//! allocation, no lock, no std I/O. Everything it needs (C strings, the argv and envp pointer
//! arrays, the rlimit values, the seccomp filters, the descriptors) is prepared before the fork
//! in a [`ChildPlan`]. Its steps, in order ([`exec_child`] is this list):
//!
//! 1. join the plan's cgroup, first of all, so that everything it will start is in it too;
//! 2. become dumpable, to own its `/proc` files (as the program will be after `execve` anyway);
//! 3. raise its OOM score to [`PROGRAM_OOM_SCORE_ADJ`];
//! 4. start a session of its own;
//! 5. move the descriptors into place (0–2, and 3 and 4 for the snippet ABI) and close the rest;
//! 6. hand them to the user it is about to become, so that reopening them by path works too;
//! 7. reset the signal mask and `SIGPIPE` to their defaults;
//! 8. set the umask;
//! 9. apply the rlimits, each read back;
//! 10. make the capabilities it keeps across `execve` (a warm worker's; a program keeps none)
//!     inheritable, while they are still in the bounding set;
//! 11. empty the capability bounding set and the ambient set;
//! 12. become the plan's uid and gid, with no supplementary group;
//! 13. take back only the kept capabilities, ambient so that they survive `execve`;
//! 14. only now, as that user, enter the working directory, refusing symlinks on the way;
//! 15. set `no_new_privs`;
//! 16. install the seccomp filters;
//! 17. `execve` the program.
//!
//! A step that fails writes `codebeaker: <what>: <error>` to the child's stderr (by then the run's
//! stderr pipe, once the descriptors are in place) and exits with status 127.

use std::convert::Infallible;
use std::ffi::{CStr, CString};
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::os::fd::RawFd;

use seccompiler::BpfProgram;

use super::groups::Group;

/// One rlimit: resource, soft and hard value.
pub(crate) type Rlimit = (libc::__rlimit_resource_t, u64, u64);

/// Set in a box whose `setgroups` is denied (a rootless box with only its own ids, see
/// [`crate::ids`]): its processes keep the groups they have, and [`become_user`] does not try to
/// drop them.
pub(crate) static GROUPS_FIXED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Who a process the init starts runs as, and what it keeps across `execve`.
pub(crate) struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Capabilities (bit `n` is capability `n`) kept as ambient ones across `execve`: none for a
    /// program; a warm worker keeps what it needs to hand each run to the program's uid.
    pub keep_caps: u64,
}

/// The OOM score adjustment of every process the init starts (programs and warm workers): the
/// highest, so that when the box's memory is full the OOM killer takes them before the init,
/// which must live to answer the host (see [`super::run::protect_from_oom`]). Raising a score
/// needs no privilege; a program may lower its own again, but not below the floor it inherited,
/// which the init's protection leaves where it was.
const PROGRAM_OOM_SCORE_ADJ: &[u8] = b"1000";

/// A NUL-terminated array of pointers into C strings that outlive it, for `execve`.
pub(crate) struct CStrArray<'a> {
    pointers: Vec<*const libc::c_char>,
    strings: PhantomData<&'a [CString]>,
}

impl<'a> CStrArray<'a> {
    /// Points at each of `strings`, then at nothing.
    pub(crate) fn new(strings: &'a [CString]) -> CStrArray<'a> {
        let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        CStrArray {
            pointers,
            strings: PhantomData,
        }
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.pointers.as_ptr()
    }
}

/// Everything the child needs, prepared before the fork so that the child allocates nothing.
pub(crate) struct ChildPlan<'a> {
    /// The cgroup to join (`None` when the box has no cgroup).
    pub group: Option<&'a Group>,
    pub ids: &'a Ids,
    pub rlimits: &'a [Rlimit],
    /// The descriptors that become 0–4; a missing one is closed.
    pub fds: [Option<RawFd>; 5],
    /// The working directory, inside the box.
    pub cwd: &'a CStr,
    pub filters: &'a [BpfProgram],
    /// The program to execute, already resolved.
    pub path: &'a CStr,
    pub argv: CStrArray<'a>,
    pub envp: CStrArray<'a>,
}

/// The step of the child that failed.
#[derive(Clone, Copy)]
enum Step {
    JoinGroup,
    RaiseOomScore,
    Dup,
    Dup2,
    SetRlimit,
    RlimitReadBack,
    KeepCapabilities,
    BecomeUser,
    EnterCwd,
    NoNewPrivs,
    InstallSeccomp,
    Exec,
}

/// A failed step and the `errno` it left.
#[derive(Clone, Copy)]
struct ChildError {
    step: Step,
    errno: i32,
}

impl ChildError {
    /// `step` failed; the error is whatever `errno` holds now.
    fn now(step: Step) -> ChildError {
        ChildError {
            step,
            errno: errno(),
        }
    }
}

/// The calling thread's `errno`.
fn errno() -> i32 {
    // SAFETY: reading the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Takes the child through its steps, in the order of the module doc, and execs the program.
/// Never returns: a failed step is reported on stderr and the child exits with 127.
///
/// # Safety
///
/// Only in the freshly forked child of the single-threaded init, before it does anything else:
/// the steps replace descriptors 0–4, close every other one, and drop every privilege.
pub(crate) unsafe fn exec_child(plan: &ChildPlan) -> ! {
    // SAFETY: the caller guarantees that this is the freshly forked child; so does each step.
    let Err(error) = unsafe { steps(plan) };
    report(plan, error)
}

/// The steps, one line each. Each step below is `unsafe` for the same reason: it belongs to the
/// child only (see [`exec_child`]).
unsafe fn steps(plan: &ChildPlan) -> Result<Infallible, ChildError> {
    // SAFETY: called by `exec_child`, in the child.
    unsafe {
        join_group(plan)?;
        become_dumpable();
        raise_oom_score()?;
        start_session();
        move_descriptors(plan)?;
        hand_descriptors_to_user(plan);
        reset_signals();
        set_umask();
        apply_rlimits(plan)?;
        keep_capabilities_inheritable(plan)?;
        drop_capabilities();
        become_user(plan)?;
        take_back_kept_capabilities(plan)?;
        enter_cwd(plan)?;
        set_no_new_privs()?;
        install_seccomp(plan)?;
        exec(plan)
    }
}

/// Joins the plan's cgroup (when the box has one).
unsafe fn join_group(plan: &ChildPlan) -> Result<(), ChildError> {
    match plan.group {
        Some(group) if !group.join_raw() => Err(ChildError::now(Step::JoinGroup)),
        _ => Ok(()),
    }
}

/// Becomes dumpable, to own its `/proc` files.
///
/// The init is not dumpable (its creator changed ids), so its `/proc` files belong to no id of
/// the box; the program will be dumpable after `execve` anyway. Nothing in the box may trace a
/// process of box root.
unsafe fn become_dumpable() {
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
}

/// Raises the OOM score, so that the OOM killer takes this process before the init.
unsafe fn raise_oom_score() -> Result<(), ChildError> {
    if write_file(c"/proc/self/oom_score_adj", PROGRAM_OOM_SCORE_ADJ) {
        Ok(())
    } else {
        Err(ChildError::now(Step::RaiseOomScore))
    }
}

/// Starts a session of its own, away from the init's.
unsafe fn start_session() {
    // SAFETY: setsid takes no argument.
    unsafe { libc::setsid() };
}

/// Puts the plan's descriptors at 0–4 (closing those it has none for) and closes every other.
unsafe fn move_descriptors(plan: &ChildPlan) -> Result<(), ChildError> {
    // Move the pipe ends out of the way first, so no dup2 below overwrites a source.
    let mut high = [-1; 5];
    for (i, fd) in plan.fds.iter().enumerate() {
        if let Some(fd) = fd {
            // SAFETY: duplicating a descriptor the plan holds open.
            high[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64) };
            if high[i] < 0 {
                return Err(ChildError::now(Step::Dup));
            }
        }
    }
    for (target, fd) in high.iter().enumerate() {
        if *fd >= 0 {
            // SAFETY: in the child, 0–4 are the program's to take; the copy above stays open.
            if unsafe { libc::dup2(*fd, target as i32) } < 0 {
                return Err(ChildError::now(Step::Dup2));
            }
        } else {
            // SAFETY: a target the program gets nothing at; nothing of the child uses it.
            unsafe { libc::close(target as i32) };
        }
    }
    // SAFETY: every descriptor above 4 is the init's, and nothing of the child uses one.
    unsafe { libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) };
    Ok(())
}

/// Hands descriptors 0–4 (pipes of the init's uid) to the plan's user, so that reopening them by
/// path (`/dev/stdin`, `/proc/self/fd/3`) works too.
unsafe fn hand_descriptors_to_user(plan: &ChildPlan) {
    for fd in 0..5 {
        // SAFETY: fchown on the child's own descriptors (a closed one just fails).
        unsafe { libc::fchown(fd, plan.ids.uid, plan.ids.gid) };
    }
}

/// Resets what the init changed about signals: it blocks `SIGCHLD` and Rust ignores `SIGPIPE`;
/// the program gets an empty mask and the default `SIGPIPE`.
unsafe fn reset_signals() {
    // SAFETY: a zeroed sigset_t is a valid value for sigemptyset to fill; plain signal calls.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sets the umask files are created with (`022`).
unsafe fn set_umask() {
    // SAFETY: umask with a constant.
    unsafe { libc::umask(0o022) };
}

/// Applies the plan's rlimits and reads each back: a limit that did not apply is an error, never
/// silence.
unsafe fn apply_rlimits(plan: &ChildPlan) -> Result<(), ChildError> {
    for &(resource, soft, hard) in plan.rlimits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads a struct we own.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(ChildError::now(Step::SetRlimit));
        }
        let mut got = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills a struct we own.
        if unsafe { libc::getrlimit(resource, &mut got) } != 0
            || got.rlim_cur != soft
            || got.rlim_max != hard
        {
            return Err(ChildError::now(Step::RlimitReadBack));
        }
    }
    Ok(())
}

/// Makes the capabilities the plan keeps inheritable (which is possible only while they are in
/// the bounding set), kept permitted through the coming uid change. Nothing for a program.
unsafe fn keep_capabilities_inheritable(plan: &ChildPlan) -> Result<(), ChildError> {
    let keep = plan.ids.keep_caps;
    if keep != 0 && !keep_before_drop(keep) {
        return Err(ChildError::now(Step::KeepCapabilities));
    }
    Ok(())
}

/// Empties the capability bounding set and the ambient set.
unsafe fn drop_capabilities() {
    for cap in 0..64 {
        // SAFETY: prctl with plain integer arguments.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
}

/// Becomes the plan's uid and gid, with no supplementary group (unless [`GROUPS_FIXED`]).
unsafe fn become_user(plan: &ChildPlan) -> Result<(), ChildError> {
    let Ids { uid, gid, .. } = *plan.ids;
    let groups_fixed = GROUPS_FIXED.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: plain credential calls; an empty group list needs no pointer.
    let dropped = unsafe {
        (groups_fixed || libc::setgroups(0, std::ptr::null()) == 0)
            && libc::setresgid(gid, gid, gid) == 0
            && libc::setresuid(uid, uid, uid) == 0
    };
    if dropped {
        Ok(())
    } else {
        Err(ChildError::now(Step::BecomeUser))
    }
}

/// After the uid change, leaves only the kept capabilities, ambient so that they survive
/// `execve`. Nothing for a program.
unsafe fn take_back_kept_capabilities(plan: &ChildPlan) -> Result<(), ChildError> {
    let keep = plan.ids.keep_caps;
    if keep != 0 && !keep_after_uid_change(keep) {
        return Err(ChildError::now(Step::KeepCapabilities));
    }
    Ok(())
}

/// Enters the working directory as the plan's user, refusing a symlink anywhere on the way (a
/// program may have planted one): resolved and entered in one step.
unsafe fn enter_cwd(plan: &ChildPlan) -> Result<(), ChildError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let entered = rustix::fs::openat2(
        rustix::fs::CWD,
        plan.cwd,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
    .and_then(|dir| rustix::process::fchdir(&dir));
    // rustix makes raw syscalls and leaves `errno` alone: its error carries the errno.
    entered.map_err(|e| ChildError {
        step: Step::EnterCwd,
        errno: e.raw_os_error(),
    })
}

/// Sets `no_new_privs`, which the seccomp filters need and which no `execve` undoes.
unsafe fn set_no_new_privs() -> Result<(), ChildError> {
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(ChildError::now(Step::NoNewPrivs));
    }
    Ok(())
}

/// Installs the plan's seccomp filters on this process.
///
/// Through `seccompiler` directly rather than [`crate::seccomp::install`], whose error carries a
/// `String`: the same calls, without allocating.
unsafe fn install_seccomp(plan: &ChildPlan) -> Result<(), ChildError> {
    for filter in plan.filters {
        if seccompiler::apply_filter(filter).is_err() {
            return Err(ChildError::now(Step::InstallSeccomp));
        }
    }
    Ok(())
}

/// Executes the program; returns only when `execve` failed.
unsafe fn exec(plan: &ChildPlan) -> Result<Infallible, ChildError> {
    // SAFETY: a C string and two NUL-terminated pointer arrays into C strings the plan borrows.
    unsafe { libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
    Err(ChildError::now(Step::Exec))
}

/// Writes the failure's [`message`] to stderr in one write, and exits with 127.
fn report(plan: &ChildPlan, error: ChildError) -> ! {
    let line = message(plan, error);
    // SAFETY: writing from a buffer we own to stderr, then leaving without unwinding.
    unsafe {
        libc::write(2, line.bytes.as_ptr().cast(), line.len);
        libc::_exit(127)
    }
}

/// `codebeaker: <what>: <error>\n`, with `<error>` as [`std::io::Error`] shows an `errno`
/// (`<description> (os error <n>)`), built without allocating.
fn message(plan: &ChildPlan, error: ChildError) -> Line {
    let mut line = Line::new();
    line.push(b"codebeaker: ");
    match error.step {
        Step::EnterCwd => {
            line.push(b"cannot enter directory ");
            line.push(plan.cwd.to_bytes());
            line.push(b" (symlinks are not followed)");
        }
        Step::Exec => {
            line.push(b"cannot execute ");
            line.push(plan.path.to_bytes());
        }
        step => line.push(step.what().as_bytes()),
    }
    line.push(b": ");
    let mut detail = [0u8; 128];
    // SAFETY: strerror_r writes at most `detail.len()` bytes, NUL-terminated, into our buffer.
    unsafe { libc::strerror_r(error.errno, detail.as_mut_ptr().cast(), detail.len()) };
    let detail = CStr::from_bytes_until_nul(&detail).map_or(&[][..], CStr::to_bytes);
    line.push(detail);
    // Writing into a fixed buffer cannot fail; what does not fit is left out.
    let _ = writeln!(line, " (os error {})", error.errno);
    line
}

impl Step {
    /// What the step was doing, for the steps whose message names nothing else.
    fn what(self) -> &'static str {
        match self {
            Step::JoinGroup => "joining the run's cgroup",
            Step::RaiseOomScore => "raising the OOM score",
            Step::Dup => "dup",
            Step::Dup2 => "dup2",
            Step::SetRlimit => "setrlimit",
            Step::RlimitReadBack => "an rlimit did not apply",
            Step::KeepCapabilities => "keeping the warm worker's capabilities",
            Step::BecomeUser => "dropping to the sandbox user",
            Step::EnterCwd => "cannot enter directory",
            Step::NoNewPrivs => "no_new_privs",
            Step::InstallSeccomp => "installing the seccomp filter",
            Step::Exec => "cannot execute",
        }
    }
}

/// Room for the failure message: two paths of `PATH_MAX` and the words around them.
const LINE_BYTES: usize = 8192;

/// A message built on the stack; what does not fit is cut off.
struct Line {
    bytes: [u8; LINE_BYTES],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            bytes: [0; LINE_BYTES],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(LINE_BYTES - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Writes `data` to the file at `path` with the calls `std::fs::write` makes (open, write until
/// done, close), without allocating.
fn write_file(path: &CStr, data: &[u8]) -> bool {
    // SAFETY: open with a valid C string; the descriptor is ours and closed below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    };
    if fd < 0 {
        return false;
    }
    let mut rest = data;
    let written = loop {
        if rest.is_empty() {
            break true;
        }
        // SAFETY: writing from a buffer we own to the descriptor opened above.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            break false;
        }
    };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    written
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// This process's capability sets (the 64 capabilities in two halves).
fn capget() -> Option<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two structs we own, as version 3 of its ABI defines.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    (r == 0).then_some(data)
}

fn capset(data: &[CapData; 2]) -> bool {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads two structs we own, as version 3 of its ABI defines.
    unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) == 0 }
}

/// Before the bounding set is emptied, in a process that will keep `keep` across `execve`: the
/// kept capabilities become inheritable (which is possible only while they are in the bounding
/// set) and stay permitted through the coming uid change. Async-signal-safe.
fn keep_before_drop(keep: u64) -> bool {
    let Some(mut data) = capget() else {
        return false;
    };
    data[0].inheritable = keep as u32;
    data[1].inheritable = (keep >> 32) as u32;
    // SAFETY: prctl with constant arguments.
    capset(&data) && unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } == 0
}

/// After the uid change: only `keep` is left, effective, permitted and inheritable, and ambient
/// so that it survives `execve`; read back. Async-signal-safe.
fn keep_after_uid_change(keep: u64) -> bool {
    let half = |bits: u32| CapData {
        effective: bits,
        permitted: bits,
        inheritable: bits,
    };
    let want = [half(keep as u32), half((keep >> 32) as u32)];
    if !capset(&want) {
        return false;
    }
    for cap in (0..64u64).filter(|c| keep & (1 << c) != 0) {
        // SAFETY: prctl with plain integer arguments.
        let raised = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if raised != 0 {
            return false;
        }
    }
    capget() == Some(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_IDS: Ids = Ids {
        uid: 0,
        gid: 0,
        keep_caps: 0,
    };

    fn text(line: &Line) -> &str {
        std::str::from_utf8(&line.bytes[..line.len]).unwrap()
    }

    #[test]
    fn failure_messages_read_as_std_shows_them() {
        let argv = [CString::new("/workspace/prog").unwrap()];
        let plan = ChildPlan {
            group: None,
            ids: &NO_IDS,
            rlimits: &[],
            fds: [None; 5],
            cwd: c"/workspace/sub",
            filters: &[],
            path: c"/workspace/prog",
            argv: CStrArray::new(&argv),
            envp: CStrArray::new(&[]),
        };
        let os = |errno| std::io::Error::from_raw_os_error(errno);
        for (step, errno, expected) in [
            (
                Step::Exec,
                libc::EACCES,
                format!("codebeaker: cannot execute /workspace/prog: {}\n", os(libc::EACCES)),
            ),
            (
                Step::EnterCwd,
                libc::ELOOP,
                format!(
                    "codebeaker: cannot enter directory /workspace/sub (symlinks are not followed): {}\n",
                    os(libc::ELOOP)
                ),
            ),
            (
                Step::SetRlimit,
                libc::EPERM,
                format!("codebeaker: setrlimit: {}\n", os(libc::EPERM)),
            ),
            (
                Step::BecomeUser,
                9999,
                format!("codebeaker: dropping to the sandbox user: {}\n", os(9999)),
            ),
        ] {
            let line = message(&plan, ChildError { step, errno });
            assert_eq!(text(&line), expected);
        }
        assert!(text(&message(
            &plan,
            ChildError {
                step: Step::Dup,
                errno: libc::EMFILE
            }
        ))
        .ends_with("(os error 24)\n"));
    }

    #[test]
    fn a_message_too_long_is_cut_not_overflowed() {
        let long = CString::new(vec![b'a'; 3 * LINE_BYTES]).unwrap();
        let plan = ChildPlan {
            group: None,
            ids: &NO_IDS,
            rlimits: &[],
            fds: [None; 5],
            cwd: &long,
            filters: &[],
            path: &long,
            argv: CStrArray::new(&[]),
            envp: CStrArray::new(&[]),
        };
        let line = message(
            &plan,
            ChildError {
                step: Step::EnterCwd,
                errno: libc::ENOENT,
            },
        );
        assert_eq!(line.len, LINE_BYTES);
        assert!(text(&line).starts_with("codebeaker: cannot enter directory aaa"));
    }

    #[test]
    fn pointer_arrays_end_in_null() {
        let strings = [CString::new("a").unwrap(), CString::new("b").unwrap()];
        let array = CStrArray::new(&strings);
        assert_eq!(array.pointers.len(), 3);
        assert_eq!(array.pointers[0], strings[0].as_ptr());
        assert_eq!(array.pointers[1], strings[1].as_ptr());
        assert!(array.pointers[2].is_null());
    }
}
