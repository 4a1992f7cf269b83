//! Contexts' kernels: long-lived interpreters in the box, each running the cells of one context
//! in one namespace, so that what a cell defines is there for the next.
//!
//! A *kernel* is a program (a language's kernel, CodeBeaker's own source) started exactly like a
//! run's program ([`super::child`]: seccomp, `no_new_privs`, no capability, the run uid
//! [`SANDBOX_UID`](super::SANDBOX_UID), the run's rlimits except CPU time, which each cell's
//! wall-clock deadline bounds instead) with a `SOCK_SEQPACKET` control socket on fd 3. It sends
//! `{"ready": true}` once it has started.
//!
//! A *cell* is a run ([`super::run`]) that the init hands to a kernel instead of forking a
//! program, over the warm workers' request protocol: one JSON message `{"env": {...}}` with the
//! run's five descriptors attached (`SCM_RIGHTS`: stdin, stdout, stderr, the snippet input pipe
//! that carries the cell's code, the snippet result pipe). The kernel points its 0–2 at the first
//! three for the cell, reads the code to its end, runs it, writes the cell's result (JSON) to the
//! result pipe, points 0–2 back at `/dev/null`, closes every descriptor of the cell, and answers
//! `{"exit": status, "cpu_ns": n, "maxrss": bytes}`. The init supervises a cell as any run
//! (deadline, output cap, stdin, cancel); when one of those stops it, the init interrupts the
//! kernel (`SIGINT`: Python's `KeyboardInterrupt`) and gives it [`INTERRUPT_GRACE`] to end the
//! cell, and ends a kernel that does not.
//!
//! **Nothing a context started survives its end.** Each kernel is the only child of a *keeper*:
//! a fork of the init that never executes anything (box root, not dumpable, holding none of the
//! init's descriptors) and is a child subreaper, so that every process the kernel starts, and
//! every orphan among them (double forks, `setsid` included), stays below it. When the kernel
//! exits, or when the init ends the context (`SIGTERM` to the keeper: close, restart), the keeper
//! kills the kernel and every process below it, again and again until none is left, reports the
//! kernel's wait status on a pipe, and exits. The init names its keepers by pidfd (never by a pid
//! that could have been reused), and asks the keeper to interrupt the kernel (`SIGUSR1`) since
//! only the kernel's parent names it without a race. A keeper that does not finish in
//! [`END_TIMEOUT`] makes the init kill every process of the box (`kill(-1)`), which reaches
//! everything a keeper could have missed.
//!
//! **The truth about state.** Kernels live beside the init in the box's own cgroup, not in the
//! run group (killed whole at each run's end) nor in the workers group (which must hold workers
//! only). A run that ends uncleanly still makes the init kill every process of the box, kernels
//! included. The init keeps each context's slot across such losses: a lost kernel (a limit, a
//! crash, a sweep) is started again by the context's next cell, whose [`CellReport`] says
//! `state_lost` and counts the kernel's `generation`; a cell during which the kernel is lost says
//! so itself.
//!
//! **Workers stay out of reach.** A kernel runs the caller's code, so it runs as the run uid like
//! any program: it cannot signal, trace or change a warm worker (a uid of its own) or a keeper or
//! the init (box root, not dumpable). Contexts of one session share its uid, its workspace and
//! its box, exactly as its runs do; contexts of different sessions are different boxes.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, ControlMessage, MsgFlags};

use super::child::{self, CStrArray, ChildPlan, Rlimit};
use super::context::Context;
use super::run::{self, PROGRAM_IDS};
use super::warm::{self, Workers};
use crate::channel::{CellReport, KernelSpec};

/// Most contexts one box holds.
pub const MAX_CONTEXTS: usize = 64;

/// How long a kernel may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an interrupted kernel has to end its cell before it is ended.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// How long a keeper may take to end everything below it.
const END_TIMEOUT: Duration = Duration::from_secs(5);

/// `waitid`'s id type for a pidfd.
const P_PIDFD: libc::idtype_t = 3;

/// A running kernel, as the init holds it.
pub struct Kernel {
    /// The keeper's pid (for the process census of a box without cgroups only).
    keeper_pid: libc::pid_t,
    /// A pidfd of the keeper.
    keeper: OwnedFd,
    /// The init's end of the kernel's control socket.
    ctl: OwnedFd,
    /// The keeper's report pipe: the kernel's wait status once it has exited, then end of file
    /// once the keeper is gone. Readable means the kernel is gone.
    status: OwnedFd,
}

impl Kernel {
    /// Whether the kernel has exited (or its keeper is gone).
    fn gone(&self) -> bool {
        readable(self.status.as_raw_fd(), 0)
    }
}

/// One context of the box.
struct Slot {
    spec: KernelSpec,
    live: Option<Kernel>,
    /// Kernels started for the context so far.
    generation: u64,
    /// Its kernel was lost outside a cell, and no cell has said so yet.
    lost: bool,
}

/// The descriptors of a cell in progress, for the run's supervision.
#[derive(Clone, Copy)]
pub struct CellFds {
    pub ctl: RawFd,
    pub status: RawFd,
    pub keeper: RawFd,
}

/// A cell handed to its kernel.
pub struct CellStart {
    pub fds: CellFds,
    /// The kernel's generation, and whether the state from before was lost before the cell.
    pub report: CellReport,
}

/// How a cell's kernel came out of the cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellEnd {
    /// It answered: it is alive and keeps its state.
    Answered,
    /// It exited during the cell (a limit killed it, or it crashed).
    Died,
    /// It did not end the cell within the grace after an interrupt, or broke the protocol: it
    /// must be ended.
    Unresponsive,
}

/// The box's contexts, by id.
#[derive(Default)]
pub struct Kernels {
    slots: HashMap<String, Slot>,
}

impl Kernels {
    /// Starts context `id`'s kernel, ending the one it had first (a restart). Waits until it is
    /// ready.
    pub fn start(
        &mut self,
        ctx: &Context,
        workers: &mut Workers,
        id: &str,
        spec: KernelSpec,
    ) -> Result<(), String> {
        if !self.slots.contains_key(id) && self.slots.len() >= MAX_CONTEXTS {
            return Err(format!(
                "the box holds its maximum of {MAX_CONTEXTS} contexts; close one first"
            ));
        }
        let old = self.slots.get_mut(id).and_then(|s| s.live.take());
        if let Some(old) = old {
            self.end(old, workers);
        }
        let slot = self.slots.entry(id.to_string()).or_insert(Slot {
            spec: spec.clone(),
            live: None,
            generation: 0,
            lost: false,
        });
        slot.spec = spec;
        slot.lost = false;
        let kernel = launch(ctx, &slot.spec)?;
        slot.generation += 1;
        match wait_ready(&kernel) {
            Ok(()) => {
                slot.live = Some(kernel);
                Ok(())
            }
            Err(e) => {
                self.end(kernel, workers);
                Err(format!("the context's kernel did not start: {e}"))
            }
        }
    }

    /// Ends context `id`'s kernel and everything it started, and forgets the context; false
    /// when there was no such context.
    pub fn close(&mut self, workers: &mut Workers, id: &str) -> bool {
        match self.slots.remove(id) {
            Some(slot) => {
                if let Some(kernel) = slot.live {
                    self.end(kernel, workers);
                }
                true
            }
            None => false,
        }
    }

    /// Hands a cell to context `id`'s kernel (starting a new kernel first when it was lost),
    /// with the cell's `request` and its five descriptors.
    pub fn cell(
        &mut self,
        ctx: &Context,
        workers: &mut Workers,
        id: &str,
        request: &serde_json::Value,
        fds: [RawFd; 5],
    ) -> Result<CellStart, String> {
        let gone = match self.slots.get(id) {
            None => return Err(format!("there is no context {id} in this box")),
            Some(slot) => slot.live.as_ref().is_some_and(Kernel::gone),
        };
        if gone {
            if let Some(kernel) = self.slots.get_mut(id).and_then(|s| s.live.take()) {
                self.end(kernel, workers);
            }
            if let Some(slot) = self.slots.get_mut(id) {
                slot.lost = true;
            }
        }
        let Some(slot) = self.slots.get_mut(id) else {
            return Err(format!("there is no context {id} in this box"));
        };
        if slot.live.is_none() {
            let kernel = launch(ctx, &slot.spec)?;
            slot.generation += 1;
            if let Err(e) = wait_ready(&kernel) {
                self.end(kernel, workers);
                return Err(format!("the context's kernel did not start again: {e}"));
            }
            slot.live = Some(kernel);
        }
        let Some(slot) = self.slots.get_mut(id) else {
            return Err(format!("there is no context {id} in this box"));
        };
        let report = CellReport {
            generation: slot.generation,
            state_lost: slot.lost,
        };
        let Some(kernel) = slot.live.as_ref() else {
            return Err("the context's kernel is gone".into());
        };
        let sent = send_cell(kernel, request, fds);
        if let Err(e) = sent {
            if let Some(kernel) = slot.live.take() {
                slot.lost = true;
                self.end(kernel, workers);
            }
            return Err(format!("the context's kernel did not take the cell: {e}"));
        }
        slot.lost = false;
        Ok(CellStart {
            fds: CellFds {
                ctl: kernel.ctl.as_raw_fd(),
                status: kernel.status.as_raw_fd(),
                keeper: kernel.keeper.as_raw_fd(),
            },
            report,
        })
    }

    /// Settles context `id` after a cell that ended as `end`, and returns the cell's report
    /// (`start` is what [`cell`](Self::cell) said).
    pub fn after_cell(
        &mut self,
        workers: &mut Workers,
        id: &str,
        start: CellReport,
        end: CellEnd,
    ) -> CellReport {
        let Some(slot) = self.slots.get_mut(id) else {
            return start;
        };
        // A sweep of the box during the cell took the kernel already.
        let swept = slot.live.is_none();
        if swept {
            slot.lost = false;
            return CellReport {
                state_lost: true,
                ..start
            };
        }
        if end == CellEnd::Answered {
            return start;
        }
        let kernel = slot.live.take();
        if let Some(kernel) = kernel {
            self.end(kernel, workers);
        }
        CellReport {
            state_lost: true,
            ..start
        }
    }

    /// Forgets every kernel after the init killed every process of the box: their contexts'
    /// next cells start new kernels and say that state was lost.
    pub fn forget_all(&mut self) {
        for slot in self.slots.values_mut() {
            if slot.live.take().is_some() {
                slot.lost = true;
            }
        }
    }

    /// Every process of every context (keepers, kernels and what they started), found through
    /// `/proc`: for the census of a box without cgroups, where they must not count as left over
    /// from a run.
    pub fn tree_pids(&self) -> Vec<libc::pid_t> {
        let keepers: Vec<libc::pid_t> = self
            .slots
            .values()
            .filter_map(|s| s.live.as_ref().map(|k| k.keeper_pid))
            .collect();
        if keepers.is_empty() {
            return keepers;
        }
        descendants(&keepers)
    }

    /// Ends `kernel` and everything below its keeper. When the keeper does not finish in time,
    /// every process of the box is killed instead (and every worker and kernel forgotten).
    fn end(&mut self, kernel: Kernel, workers: &mut Workers) {
        pidfd_signal(kernel.keeper.as_raw_fd(), libc::SIGTERM);
        let ended = readable(kernel.keeper.as_raw_fd(), END_TIMEOUT.as_millis() as i32);
        reap(kernel.keeper.as_raw_fd());
        if !ended {
            tracing::warn!(
                "a context's keeper did not end in time; killing every process of the box"
            );
            drop(kernel);
            run::kill_and_reap_all(0);
            workers.forget_all();
            self.forget_all();
        }
    }
}

/// Whether `fd` is readable (or at its end) within `timeout_ms`.
fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as i32;
        // SAFETY: polling one descriptor we own.
        let n = unsafe { libc::poll(&mut pfd, 1, left) };
        if n > 0 {
            return true;
        }
        if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Sends `signal` to the process of a pidfd (nothing when it is gone).
pub fn pidfd_signal(pidfd: RawFd, signal: i32) {
    // SAFETY: pidfd_send_signal on a descriptor we own, without siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Reaps the process of a pidfd if it has exited and nobody reaped it yet.
fn reap(pidfd: RawFd) {
    // SAFETY: waitid into a zeroed struct we own; the pidfd names our own child.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            P_PIDFD,
            pidfd as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        );
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open of our own child; the descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The rlimits of a kernel: a run's, without a CPU-time limit (a kernel lives across cells;
/// each cell has its wall-clock deadline).
fn kernel_rlimits(ctx: &Context, spec: &KernelSpec) -> Vec<Rlimit> {
    let mut rlimits = run::run_rlimits(ctx, &spec.limits);
    for limit in &mut rlimits {
        if limit.0 == libc::RLIMIT_CPU {
            *limit = (libc::RLIMIT_CPU, libc::RLIM_INFINITY, libc::RLIM_INFINITY);
        }
    }
    rlimits
}

/// Starts a keeper, which starts the kernel of `spec` as its only child.
fn launch(ctx: &Context, spec: &KernelSpec) -> Result<Kernel, String> {
    let program = spec.argv.first().ok_or("the kernel has no command")?;
    let path = run::resolve_program(program, &spec.env)
        .ok_or_else(|| format!("{program}: command not found in the box"))?;
    super::files::check_workdir(&spec.cwd)?;
    let nul = |_| "the kernel's command, environment or directory contains a NUL byte".to_string();
    let path = CString::new(path).map_err(nul)?;
    let argv = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(nul)?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(nul)?;
    let cwd = CString::new(spec.cwd.as_str()).map_err(nul)?;
    let (ours, theirs) = socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let rlimits = kernel_rlimits(ctx, spec);
    let null = ctx.devnull.as_raw_fd();
    let plan = ChildPlan {
        // Beside the init, in the box's own group: see the module doc.
        group: None,
        ids: &PROGRAM_IDS,
        rlimits: &rlimits,
        fds: [
            Some(null),
            Some(null),
            Some(null),
            Some(theirs.as_raw_fd()),
            Some(null),
        ],
        cwd: &cwd,
        filters: &ctx.filters,
        path: &path,
        argv: CStrArray::new(&argv),
        envp: CStrArray::new(&envp),
    };
    let keep = [theirs.as_raw_fd(), null, status_w.as_raw_fd()];
    // SAFETY: the init is single-threaded; the child only runs `keeper`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: this is the freshly forked child of the single-threaded init.
        unsafe { keeper(&plan, status_w.as_raw_fd(), &keep) }
    }
    drop(theirs);
    drop(status_w);
    let keeper = pidfd_open(pid).map_err(|e| {
        // SAFETY: killing our own child, which no one else reaps before this returns.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        format!("pidfd_open: {e}")
    })?;
    Ok(Kernel {
        keeper_pid: pid,
        keeper,
        ctl: ours,
        status: status_r,
    })
}

/// Waits for the kernel's `{"ready": true}`.
fn wait_ready(kernel: &Kernel) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = warm::recv_json(kernel.ctl.as_raw_fd(), Some(left))?;
        if msg.get("ready").is_some() {
            return Ok(());
        }
        if let Some(error) = msg.get("error").and_then(|e| e.as_str()) {
            return Err(io::Error::other(error.to_string()));
        }
    }
}

fn send_cell(kernel: &Kernel, request: &serde_json::Value, fds: [RawFd; 5]) -> io::Result<()> {
    if kernel.gone() {
        return Err(io::Error::other("the kernel has exited"));
    }
    let body = serde_json::to_vec(request)?;
    socket::sendmsg::<()>(
        kernel.ctl.as_raw_fd(),
        &[IoSlice::new(&body)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}

/// The keeper: a child subreaper that starts the kernel and, when the kernel exits or the init
/// says `SIGTERM`, kills everything below itself and exits. `SIGUSR1` interrupts the kernel.
///
/// # Safety
///
/// Only in the freshly forked child of the single-threaded init.
unsafe fn keeper(plan: &ChildPlan, status_w: RawFd, keep: &[RawFd]) -> ! {
    // SAFETY: the caller guarantees the freshly forked child of a single-threaded process (which
    // may allocate: no other thread held a lock at the fork); plain process calls.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        close_all_but(keep);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGCHLD, libc::SIGTERM, libc::SIGUSR1] {
            libc::sigaddset(&mut set, signal);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let kernel = libc::fork();
        if kernel == 0 {
            child::exec_child(plan)
        }
        if kernel < 0 {
            libc::_exit(1);
        }
        for &fd in keep {
            if fd != status_w {
                libc::close(fd);
            }
        }
        let mut alive = true;
        loop {
            let signal = libc::sigwaitinfo(&set, std::ptr::null_mut());
            match signal {
                libc::SIGUSR1 if alive => {
                    libc::kill(kernel, libc::SIGINT);
                }
                libc::SIGTERM => {
                    if alive {
                        libc::kill(kernel, libc::SIGKILL);
                    }
                    sweep();
                    libc::_exit(0);
                }
                libc::SIGCHLD => loop {
                    let mut status = 0;
                    let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if r <= 0 {
                        break;
                    }
                    if r == kernel && alive {
                        alive = false;
                        let bytes = status.to_le_bytes();
                        libc::write(status_w, bytes.as_ptr().cast(), bytes.len());
                    }
                },
                _ => {}
            }
            if !alive {
                sweep();
                libc::_exit(0);
            }
        }
    }
}

/// Closes every descriptor of the process except `keep`.
fn close_all_but(keep: &[RawFd]) {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor of this process that nothing in it uses any more.
            unsafe { libc::close(fd) };
        }
    }
}

/// Kills every child of the calling process (orphans below a subreaper become its children) and
/// reaps them, until none is left.
fn sweep() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    loop {
        for pid in children_of(&[me]) {
            // SAFETY: killing a child of this process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        loop {
            let mut status = 0;
            // SAFETY: non-blocking wait for any child.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r > 0 {
                continue;
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                return;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `(pid, parent pid)` of every process of the box's PID namespace.
fn processes() -> Vec<(libc::pid_t, libc::pid_t)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter_map(|pid: libc::pid_t| Some((pid, crate::procfs::read_stat(pid)?.ppid)))
        .collect()
}

/// The children of any of `parents`.
fn children_of(parents: &[libc::pid_t]) -> Vec<libc::pid_t> {
    processes()
        .into_iter()
        .filter(|(_, ppid)| parents.contains(ppid))
        .map(|(pid, _)| pid)
        .collect()
}

/// `roots` and every process below them.
fn descendants(roots: &[libc::pid_t]) -> Vec<libc::pid_t> {
    let all = processes();
    let mut found: Vec<libc::pid_t> = roots.to_vec();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            all.iter()
                .filter(|(pid, ppid)| *ppid == parent && !found.contains(pid))
                .map(|(pid, _)| *pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    found
}
