//! Running one process tree inside the box, from the init (PID 1).
//!
//! The init forks the program, which drops every privilege on its way to `execve` (the steps are
//! [`super::child`]'s): its own session, clean descriptors (0–2, and 3 and 4 for the snippet ABI),
//! rlimits, an empty capability bounding set, the unprivileged uid, `no_new_privs`, then the
//! seccomp filters. The init then multiplexes the pipes, the host socket (for cancel, and for
//! stdin sent while a run goes on, held up to `MAX_PENDING_STDIN` unread bytes) and a signalfd
//! for `SIGCHLD` in one `poll` loop, enforcing the wall-clock deadline and the output cap. When
//! the main process exits, the run's cgroup is killed as a whole ([`super::groups`]): nothing
//! the run started outlives it. When a limit hits, or anything but a worker is left in the
//! workers' group, everything else in the box is killed with `kill(-1, SIGKILL)` — from PID 1 that
//! reaches every process of the namespace, including double-forked, `setsid` and stopped ones —
//! and reaped, so the next run starts in an empty box.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::child::{self, CStrArray, ChildPlan, Ids, Rlimit};
use super::context::Context;
use super::groups::{self, RunGroups};
use super::kernels::{self, CellEnd, CellFds, Kernels};
use super::warm::{self, Workers};
use super::SANDBOX_UID;
use crate::channel::{
    self, Exit, HostMsg, InitMsg, RunReport, RunRequest, Stream, MAX_PENDING_STDIN,
};
use crate::limits::RunLimits;

/// Most bytes the snippet result descriptor may carry.
const MAX_FD4_BYTES: u64 = 64 * 1024 * 1024;

/// The main process of a run: forked by the init, or by a warm worker.
#[derive(Clone, Copy)]
enum Main {
    Direct(libc::pid_t),
    /// `child` is the run's process, forked by `worker`.
    Warm {
        child: libc::pid_t,
        worker: libc::pid_t,
        ctl: RawFd,
    },
    /// A cell, run by a context's kernel (see [`super::kernels`]).
    Cell(CellFds),
}

pub enum RunError {
    /// The host closed the socket: the init must exit.
    HostGone,
    /// The run could not be carried out; the box is still usable.
    Failed(String),
}

fn failed(what: &str, e: impl std::fmt::Display) -> RunError {
    RunError::Failed(format!("{what}: {e}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| failed("pipe", e))
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Finds `program` on the run's own `PATH` (inside the box's view).
pub(crate) fn resolve_program(program: &str, env: &[(String, String)]) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let candidate = format!("{dir}/{program}");
        let c = CString::new(candidate.clone()).ok()?;
        // SAFETY: access on a valid C string.
        (unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0).then_some(candidate)
    })
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>, RunError> {
    items
        .map(|s| {
            CString::new(s)
                .map_err(|_| RunError::Failed("argument or environment contains a NUL byte".into()))
        })
        .collect()
}

/// The blocked-SIGCHLD signalfd the init watches children with. Created once per run.
fn sigchld_fd() -> Result<OwnedFd, RunError> {
    // SAFETY: plain signal mask manipulation and signalfd creation in a single-threaded process.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(failed("signalfd", io::Error::last_os_error()));
        }
        Ok(std::os::fd::FromRawFd::from_raw_fd(fd))
    }
}

/// Runs `req` to its end and reports how it went.
pub fn run(
    ctx: &Context,
    workers: &mut Workers,
    kernels: &mut Kernels,
    req: &RunRequest,
    sock: &mut UnixStream,
) -> Result<RunReport, RunError> {
    let mut result = Ok(());
    for file in &req.files {
        if let Err(e) = super::files::write(file) {
            result = Err(RunError::Failed(format!("writing {}: {e}", file.path)));
            break;
        }
    }
    let report = result.and_then(|()| run_program(ctx, workers, kernels, req, sock));
    if let Some((root, dir)) = &req.cleanup {
        let _ = super::files::remove(*root, dir, true);
    }
    report
}

fn run_program(
    ctx: &Context,
    workers: &mut Workers,
    kernels: &mut Kernels,
    req: &RunRequest,
    sock: &mut UnixStream,
) -> Result<RunReport, RunError> {
    let program = match &req.cell {
        Some(_) => None,
        None => Some(prepare_program(req)?),
    };
    let (path, argv, envp, cwd) = match program {
        Some(Ok(prepared)) => prepared,
        Some(Err(message)) => return Ok(not_started(message)),
        None => Default::default(),
    };
    let sigfd = sigchld_fd()?;
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let fd3 = req.fd3_input.as_ref().map(|_| pipe()).transpose()?;
    let fd4 = if req.capture_fd4 { Some(pipe()?) } else { None };

    let rlimits = run_rlimits(ctx, &req.limits);
    let rusage_before = children_rusage();
    let start = Instant::now();
    let null = ctx.devnull.as_raw_fd();
    let targets = [
        Some(stdin_r.as_raw_fd()),
        Some(stdout_w.as_raw_fd()),
        Some(stderr_w.as_raw_fd()),
        fd3.as_ref().map(|(r, _)| r.as_raw_fd()),
        fd4.as_ref().map(|(_, w)| w.as_raw_fd()),
    ];
    let mut cell = None;
    if let Some(context) = &req.cell {
        let request = serde_json::json!({
            "env": req.env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        });
        let fds = targets.map(|t| t.unwrap_or(null));
        match kernels.cell(ctx, workers, context, &request, fds) {
            Ok(started) => cell = Some((context.as_str(), started)),
            Err(message) => return Err(RunError::Failed(message)),
        }
    }
    let warm_main = req
        .warm
        .as_ref()
        .filter(|_| cell.is_none())
        .and_then(|spec| {
            let request = warm::request(&req.argv, &req.cwd, &req.env, &rlimits);
            let fds = targets.map(|t| t.unwrap_or(null));
            let child = workers.start(ctx, spec, &request, fds)?;
            if let Some(groups) = &ctx.groups {
                groups.move_to_run(child);
            }
            let worker = workers.get(&spec.key)?;
            Some(Main::Warm {
                child,
                worker: worker.pid,
                ctl: worker.ctl_fd(),
            })
        });
    let main = match (warm_main, &cell) {
        (_, Some((_, started))) => Main::Cell(started.fds),
        (Some(main), None) => main,
        (None, None) => {
            let plan = ChildPlan {
                group: ctx.run_group(),
                ids: &PROGRAM_IDS,
                rlimits: &rlimits,
                fds: targets,
                cwd: &cwd,
                filters: &ctx.filters,
                path: &path,
                argv: CStrArray::new(&argv),
                envp: CStrArray::new(&envp),
            };
            // SAFETY: the init is single-threaded, and the child only runs `exec_child`.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(failed("fork", io::Error::last_os_error()));
            }
            if pid == 0 {
                // SAFETY: this is the freshly forked child.
                unsafe { child::exec_child(&plan) }
            }
            Main::Direct(pid)
        }
    };
    drop((stdin_r, stdout_w, stderr_w));
    let fd3_w = fd3.map(|(r, w)| {
        drop(r);
        w
    });
    let fd4_r = fd4.map(|(r, w)| {
        drop(w);
        r
    });
    let mut io = RunIo {
        sock,
        stream: req.stream,
        stdout: Vec::new(),
        stderr: Vec::new(),
        fd4: Vec::new(),
        output_cap: req.limits.output_bytes,
        output_limit: false,
    };
    let outcome = supervise(
        &mut io,
        Pipes {
            sigfd,
            stdout: Some(stdout_r),
            stderr: Some(stderr_r),
            fd4: fd4_r,
            stdin: Some(StdinPipe {
                fd: stdin_w,
                pending: req.stdin.clone(),
                done: 0,
                open: req.stdin_open,
            }),
            fd3: fd3_w.map(|w| (w, req.fd3_input.as_deref().unwrap_or_default(), 0)),
        },
        main,
        workers,
        kernels,
        ctx.groups.as_ref(),
        start + req.limits.wall_time,
    )?;
    let cell = cell.map(|(context, started)| {
        let end = outcome.cell_end.unwrap_or(CellEnd::Unresponsive);
        kernels.after_cell(workers, context, started.report, end)
    });
    let wall = start.elapsed();
    let after = children_rusage();
    let cpu_nanos = (after.0.saturating_sub(rusage_before.0)) as u64 + outcome.worker_cpu_ns;
    Ok(RunReport {
        exit: outcome.exit,
        stdout: io.stdout,
        stderr: io.stderr,
        fd4: req.capture_fd4.then_some(io.fd4),
        truncated: io.output_limit,
        wall_timeout: outcome.wall_timeout,
        output_limit: io.output_limit,
        wall_nanos: wall.as_nanos() as u64,
        cpu_nanos,
        max_rss_bytes: after.1.max(outcome.worker_maxrss),
        error: outcome.cancelled.then(|| "cancelled".to_string()),
        cell,
    })
}

/// What a program needs to start: its resolved path, argv, environment and working directory
/// as C strings; or why it cannot start (the run's report then says so).
type Prepared = (CString, Vec<CString>, Vec<CString>, CString);

fn prepare_program(req: &RunRequest) -> Result<Result<Prepared, String>, RunError> {
    let Some(program) = req.argv.first() else {
        return Err(RunError::Failed("empty command".into()));
    };
    let Some(path) = resolve_program(program, &req.env) else {
        return Ok(Err(format!("{program}: command not found")));
    };
    let path = CString::new(path)
        .map_err(|_| RunError::Failed("program path contains a NUL byte".into()))?;
    let argv = cstrings(req.argv.iter().cloned())?;
    let envp = cstrings(req.env.iter().map(|(k, v)| format!("{k}={v}")))?;
    let cwd = CString::new(req.cwd.clone())
        .map_err(|_| RunError::Failed("cwd contains a NUL byte".into()))?;
    if let Err(e) = super::files::check_workdir(&req.cwd) {
        return Ok(Err(e));
    }
    Ok(Ok((path, argv, envp, cwd)))
}

fn not_started(message: String) -> RunReport {
    RunReport {
        exit: Exit::NotStarted,
        stdout: Vec::new(),
        stderr: format!("{message}\n").into_bytes(),
        fd4: None,
        truncated: false,
        wall_timeout: false,
        output_limit: false,
        wall_nanos: 0,
        cpu_nanos: 0,
        max_rss_bytes: 0,
        error: Some(message),
        cell: None,
    }
}

/// (CPU nanoseconds, peak RSS bytes) of every reaped child so far.
fn children_rusage() -> (u128, u64) {
    // SAFETY: getrusage fills a zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let nanos = |tv: libc::timeval| tv.tv_sec as u128 * 1_000_000_000 + tv.tv_usec as u128 * 1000;
    (
        nanos(ru.ru_utime) + nanos(ru.ru_stime),
        ru.ru_maxrss as u64 * 1024,
    )
}

/// The rlimits a run's processes get.
pub(crate) fn run_rlimits(ctx: &Context, limits: &RunLimits) -> Vec<Rlimit> {
    let cpu = limits.cpu_time.as_secs() + u64::from(limits.cpu_time.subsec_nanos() > 0);
    let cpu = cpu.max(1);
    let mut rl = vec![
        (libc::RLIMIT_CPU, cpu, cpu + 1),
        (
            libc::RLIMIT_FSIZE,
            limits.file_size_bytes,
            limits.file_size_bytes,
        ),
        (libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (libc::RLIMIT_CORE, 0, 0),
        // Queued signals and POSIX message-queue bytes are charged per user; small caps keep one
        // run from taking what the box's other runs (and the box's owner on the host) may use.
        capped(libc::RLIMIT_SIGPENDING, RUN_SIGPENDING),
        capped(libc::RLIMIT_MSGQUEUE, RUN_MSGQUEUE_BYTES),
    ];
    if ctx.degraded {
        let mem = limits.memory_bytes.unwrap_or(ctx.box_limits.memory_bytes);
        rl.push((libc::RLIMIT_AS, mem, mem));
        let procs = ctx.box_limits.max_processes;
        rl.push((libc::RLIMIT_NPROC, procs, procs));
    }
    rl
}

/// Signals a run's processes may have queued at once (`RLIMIT_SIGPENDING`).
pub(crate) const RUN_SIGPENDING: u64 = 1024;

/// Bytes of POSIX message queues a run's user may hold (`RLIMIT_MSGQUEUE`).
pub(crate) const RUN_MSGQUEUE_BYTES: u64 = 256 * 1024;

/// `resource` at `wanted`, or at the init's own hard limit when that is lower (raising a hard
/// limit needs a capability no box has).
fn capped(resource: libc::__rlimit_resource_t, wanted: u64) -> Rlimit {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a struct we own.
    let value = if unsafe { libc::getrlimit(resource, &mut current) } == 0 {
        wanted.min(current.rlim_max)
    } else {
        wanted
    };
    (resource, value, value)
}

/// Makes the OOM killer pass over the init `pid`, from the setup process (host root), where the
/// host lets it (`CAP_SYS_RESOURCE`; some containers withhold it, and then only the programs'
/// raised score keeps the init from being chosen). Written through the legacy `oom_adj` (-17 is
/// -1000 in `oom_score_adj`) because that write leaves the floor a process may lower itself to
/// unprivileged (`oom_score_adj_min`) where it was: the init's children cannot take the init's
/// score. Read back when it was written.
pub(crate) fn protect_from_oom(pid: libc::pid_t) -> Result<(), String> {
    let path = format!("/proc/{pid}/oom_adj");
    let capable = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    if !capable {
        return Ok(());
    }
    std::fs::write(&path, "-17")
        .map_err(|e| format!("protecting the box init from the OOM killer: {e}"))?;
    match std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")) {
        Ok(v) if v.trim() == "-1000" => Ok(()),
        Ok(v) => Err(format!(
            "protecting the box init from the OOM killer did not apply: its oom_score_adj is {}",
            v.trim()
        )),
        Err(e) => Err(format!("reading the box init's oom_score_adj: {e}")),
    }
}

/// A program's identity: the sandbox user, no capability.
pub(crate) const PROGRAM_IDS: Ids = Ids {
    uid: SANDBOX_UID,
    gid: SANDBOX_UID,
    keep_caps: 0,
};

struct RunIo<'a> {
    sock: &'a mut UnixStream,
    stream: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    fd4: Vec<u8>,
    output_cap: u64,
    output_limit: bool,
}

impl RunIo<'_> {
    /// Keeps what fits under the output cap; returns false once the cap is exceeded.
    fn take_output(&mut self, stream: Stream, data: &[u8]) -> Result<bool, RunError> {
        let used = (self.stdout.len() + self.stderr.len()) as u64;
        let room = self.output_cap.saturating_sub(used) as usize;
        let kept = &data[..data.len().min(room)];
        if !kept.is_empty() {
            match stream {
                Stream::Stdout => self.stdout.extend_from_slice(kept),
                Stream::Stderr => self.stderr.extend_from_slice(kept),
            }
            if self.stream {
                let msg = InitMsg::Output {
                    stream,
                    data: kept.to_vec(),
                };
                channel::send(self.sock, &msg).map_err(|_| RunError::HostGone)?;
            }
        }
        if kept.len() < data.len() {
            self.output_limit = true;
        }
        Ok(!self.output_limit)
    }
}

struct Pipes<'a> {
    sigfd: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    fd4: Option<OwnedFd>,
    stdin: Option<StdinPipe>,
    /// Write end, bytes to write, bytes written so far.
    fd3: Option<(OwnedFd, &'a [u8], usize)>,
}

/// The program's stdin: what is left to write, and whether more may come from the host
/// ([`HostMsg::Stdin`]) before [`HostMsg::CloseStdin`] closes it.
struct StdinPipe {
    fd: OwnedFd,
    pending: Vec<u8>,
    /// Bytes of `pending` written so far.
    done: usize,
    open: bool,
}

impl StdinPipe {
    /// Writes what the pipe takes now; `true` when the pipe is to be closed: everything is
    /// written and no more may come, or the program closed its end.
    fn write_some(&mut self) -> bool {
        match write_chunk(&self.fd, &self.pending[self.done..]) {
            Some(n) => self.done += n,
            None => return true,
        }
        if self.done >= self.pending.len() {
            self.pending = Vec::new();
            self.done = 0;
            return !self.open;
        }
        false
    }

    /// Whether bytes wait to be written (only then is the pipe watched for room).
    fn has_pending(&self) -> bool {
        self.done < self.pending.len()
    }

    /// Whether `len` more bytes fit under [`MAX_PENDING_STDIN`] unread ones (any piece fits
    /// once everything before it was read).
    fn has_room(&self, len: usize) -> bool {
        let unread = self.pending.len() - self.done;
        unread == 0 || unread + len <= MAX_PENDING_STDIN
    }

    /// Takes a piece of input from the host, refused past [`MAX_PENDING_STDIN`] unread bytes.
    fn take(&mut self, data: Vec<u8>) -> Option<String> {
        if !self.open {
            return Some("the command's stdin is closed".into());
        }
        let unread = self.pending.len() - self.done;
        if !self.has_room(data.len()) {
            return Some(format!(
                "the command has not read {unread} bytes of its stdin yet, and {} more would \
                 exceed the {MAX_PENDING_STDIN} bytes held for it: send again once it reads",
                data.len()
            ));
        }
        self.pending.drain(..self.done);
        self.done = 0;
        self.pending.extend_from_slice(&data);
        None
    }
}

struct Supervised {
    exit: Exit,
    wall_timeout: bool,
    cancelled: bool,
    /// CPU time and peak RSS of a warm run's main process, as its worker reported them.
    worker_cpu_ns: u64,
    worker_maxrss: u64,
    /// How a cell's kernel came out of it.
    cell_end: Option<CellEnd>,
}

enum ReadResult {
    Data(usize),
    Eof,
    WouldBlock,
}

fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> ReadResult {
    // SAFETY: reading into a buffer we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => ReadResult::Eof,
        n if n > 0 => ReadResult::Data(n as usize),
        _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {
            ReadResult::WouldBlock
        }
        _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => {
            ReadResult::WouldBlock
        }
        _ => ReadResult::Eof,
    }
}

/// Writes what the pipe takes now; `true` when everything is written (or the reader is gone).
fn write_some(pipe: &mut (OwnedFd, &[u8], usize)) -> bool {
    let (fd, data, done) = pipe;
    match write_chunk(fd, &data[*done..]) {
        Some(n) => {
            *done += n;
            *done >= data.len()
        }
        None => true,
    }
}

/// Writes at most 64 KiB of `rest` to a non-blocking pipe: the bytes written (0 when it is
/// full), or `None` when the reader is gone.
fn write_chunk(fd: &OwnedFd, rest: &[u8]) -> Option<usize> {
    if rest.is_empty() {
        return Some(0);
    }
    let chunk = &rest[..rest.len().min(64 * 1024)];
    // SAFETY: writing from a buffer we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
    if n > 0 {
        return Some(n as usize);
    }
    let err = io::Error::last_os_error().kind();
    (err == io::ErrorKind::WouldBlock || err == io::ErrorKind::Interrupted).then_some(0)
}

/// Kills every process of the box but the init, repeatedly, until none is left, and returns the
/// main process's status if it was reaped here.
pub(crate) fn kill_and_reap_all(main: libc::pid_t) -> Option<i32> {
    let mut main_status = None;
    loop {
        // SAFETY: kill(-1) from PID 1 signals every other process of the PID namespace.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: waiting for any child.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == main {
            main_status = Some(status);
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return main_status;
        }
    }
}

/// Kills what is left of the run; `true` when nothing but `workers` is left in the box.
fn ends_empty(groups: Option<&RunGroups>, workers: &[libc::pid_t]) -> bool {
    let clean = match groups {
        Some(g) => g.end_run() && g.workers_only(workers),
        None => {
            reap_exited();
            !groups::others_alive(workers)
        }
    };
    reap_exited();
    clean
}

/// Reaps every child of the init that has exited.
fn reap_exited() {
    loop {
        let mut status = 0;
        // SAFETY: non-blocking wait for any child.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

fn exit_of(status: i32) -> Exit {
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    }
}

/// What each entry of [`supervise`]'s poll set watches.
#[derive(Clone, Copy)]
enum Slot {
    /// The `SIGCHLD` signalfd: a child exited.
    Signals,
    /// The host socket: a cancel, or the host gone.
    Host,
    /// The program's stdout pipe.
    Stdout,
    /// The program's stderr pipe.
    Stderr,
    /// The snippet result pipe (descriptor 4).
    Fd4,
    /// The program's stdin pipe, while input is left to write.
    Stdin,
    /// The snippet input pipe (descriptor 3), while input is left to write.
    Fd3,
    /// A warm run's worker control socket, or a cell's kernel's: the run's exit report.
    Worker,
    /// A cell's keeper's report pipe: readable once the kernel is gone.
    Kernel,
}

/// The poll set of [`supervise`]: one `pollfd` per [`Slot`], `-1` (ignored by `poll`) for a slot
/// with nothing to watch.
struct PollSet([libc::pollfd; PollSet::SLOTS]);

impl PollSet {
    const SLOTS: usize = Slot::Kernel as usize + 1;

    fn new() -> PollSet {
        PollSet(
            [libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            }; PollSet::SLOTS],
        )
    }

    /// Watches `fd` (if any) for `events` in `slot`.
    fn watch(&mut self, slot: Slot, fd: Option<RawFd>, events: i16) {
        self.0[slot as usize] = libc::pollfd {
            fd: fd.unwrap_or(-1),
            events,
            revents: 0,
        };
    }

    /// Waits at most `timeout_ms` for any slot; `poll`'s result.
    fn wait(&mut self, timeout_ms: i32) -> i32 {
        // SAFETY: polling an array we own, of the length we pass.
        unsafe {
            libc::poll(
                self.0.as_mut_ptr(),
                PollSet::SLOTS as libc::nfds_t,
                timeout_ms,
            )
        }
    }

    /// Whether the last wait reported anything for `slot`.
    fn ready(&self, slot: Slot) -> bool {
        self.0[slot as usize].revents != 0
    }
}

/// The raw descriptor of a pipe still open.
fn raw(pipe: &Option<OwnedFd>) -> Option<RawFd> {
    pipe.as_ref().map(AsRawFd::as_raw_fd)
}

/// A cell's interrupt: the kernel is asked once to end the cell (the keeper sends it
/// `SIGINT`), and has until `grace` to do so.
struct Interrupt {
    keeper: RawFd,
    grace: Option<Instant>,
}

impl Interrupt {
    fn now(&mut self) {
        if self.grace.is_none() {
            kernels::pidfd_signal(self.keeper, libc::SIGUSR1);
            self.grace = Some(Instant::now() + kernels::INTERRUPT_GRACE);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    io: &mut RunIo<'_>,
    mut pipes: Pipes<'_>,
    main: Main,
    workers: &mut Workers,
    kernels: &mut Kernels,
    groups: Option<&RunGroups>,
    deadline: Instant,
) -> Result<Supervised, RunError> {
    // The pid the init itself may reap as the run's main process: its own child, or a warm
    // run's child once its worker is gone (orphans are re-parented to the init). A cell's
    // kernel is its keeper's child: never reaped here (0 is never a reaped pid).
    let (main_pid, warm, cell) = match main {
        Main::Direct(pid) => (pid, None, None),
        Main::Warm { child, worker, ctl } => (child, Some((worker, ctl)), None),
        Main::Cell(fds) => (0, None, Some(fds)),
    };
    // A limit or a cancel does not stop a cell at once: it interrupts its kernel first.
    let mut interrupt = cell.map(|fds| Interrupt {
        keeper: fds.keeper,
        grace: None,
    });
    let mut cell_end = None;
    let mut worker_exit: Option<warm::WorkerExit> = None;
    let mut worker_lost = false;
    for fd in [&pipes.stdout, &pipes.stderr, &pipes.fd4]
        .into_iter()
        .flatten()
    {
        set_nonblocking(fd.as_raw_fd());
    }
    for (fd, _, _) in pipes.fd3.iter() {
        set_nonblocking(fd.as_raw_fd());
    }
    if let Some(stdin) = &pipes.stdin {
        set_nonblocking(stdin.fd.as_raw_fd());
    }
    if pipes
        .stdin
        .as_ref()
        .is_some_and(|p| !p.open && !p.has_pending())
    {
        pipes.stdin = None;
    }
    let mut main_status: Option<i32> = None;
    let mut wall_timeout = false;
    // Whether the host may send stdin during this run (answered either way while it runs).
    let req_stdin_open = pipes.stdin.as_ref().is_some_and(|p| p.open);
    // A [`HostMsg::StdinFeed`] piece waiting for room in the stdin pipe's buffer.
    let mut held_feed: Option<Vec<u8>> = None;
    let mut cancelled = false;
    let mut host_gone = false;
    let mut stop = false;
    let mut buf = vec![0u8; 64 * 1024];
    let sock_fd = io.sock.as_raw_fd();

    while !stop {
        let mut poll = PollSet::new();
        poll.watch(Slot::Signals, Some(pipes.sigfd.as_raw_fd()), libc::POLLIN);
        poll.watch(Slot::Host, Some(sock_fd), libc::POLLIN);
        poll.watch(Slot::Stdout, raw(&pipes.stdout), libc::POLLIN);
        poll.watch(Slot::Stderr, raw(&pipes.stderr), libc::POLLIN);
        poll.watch(Slot::Fd4, raw(&pipes.fd4), libc::POLLIN);
        let stdin = pipes
            .stdin
            .as_ref()
            .filter(|p| p.has_pending())
            .map(|p| p.fd.as_raw_fd());
        poll.watch(Slot::Stdin, stdin, libc::POLLOUT);
        let fd3 = pipes.fd3.as_ref().map(|p| p.0.as_raw_fd());
        poll.watch(Slot::Fd3, fd3, libc::POLLOUT);
        let ctl = warm.map(|(_, ctl)| ctl).or(cell.map(|c| c.ctl));
        poll.watch(Slot::Worker, ctl, libc::POLLIN);
        poll.watch(Slot::Kernel, cell.map(|c| c.status), libc::POLLIN);
        let now = Instant::now();
        if now >= deadline && !wall_timeout {
            wall_timeout = true;
            match interrupt.as_mut() {
                Some(interrupt) => interrupt.now(),
                None => break,
            }
        }
        let grace = interrupt.as_ref().and_then(|i| i.grace);
        if grace.is_some_and(|grace| now >= grace) {
            cell_end = Some(CellEnd::Unresponsive);
            break;
        }
        let until = grace.unwrap_or(deadline).max(now);
        let timeout_ms = (until - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        let n = poll.wait(timeout_ms);
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(failed("poll", io::Error::last_os_error()));
        }
        if poll.ready(Slot::Signals) {
            let mut info = [0u8; 128];
            // SAFETY: draining the signalfd into a buffer we own.
            while unsafe {
                libc::read(
                    pipes.sigfd.as_raw_fd(),
                    info.as_mut_ptr().cast(),
                    info.len(),
                )
            } > 0
            {}
            // Reap whatever exited; orphans reparented to the init are reaped here too, so they
            // never pile up as zombies against the process limit.
            loop {
                let mut status = 0;
                // SAFETY: non-blocking wait for any child.
                let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if r <= 0 {
                    break;
                }
                if r == main_pid {
                    main_status = Some(status);
                    stop = true;
                } else if workers.reaped(r) && warm.is_some_and(|(w, _)| w == r) {
                    // The worker running this program died (killed by the program, perhaps): the
                    // program goes on as the init's child, and is reaped here when it ends.
                    worker_lost = true;
                    // SAFETY: signal 0 only checks whether the program still exists.
                    if main_status.is_none() && unsafe { libc::kill(main_pid, 0) } != 0 {
                        stop = true;
                    }
                }
            }
        }
        if poll.ready(Slot::Host) {
            match channel::recv::<HostMsg>(io.sock) {
                Ok(Some(HostMsg::Cancel)) => {
                    cancelled = true;
                    match interrupt.as_mut() {
                        Some(interrupt) => interrupt.now(),
                        None => stop = true,
                    }
                }
                Ok(Some(HostMsg::Stdin(data))) => {
                    let refused = match pipes.stdin.as_mut() {
                        Some(pipe) => pipe.take(data),
                        None if req_stdin_open => Some("the command's stdin is closed".to_string()),
                        None => Some("the command was not started with stdin open".to_string()),
                    };
                    channel::send(io.sock, &InitMsg::StdinTaken(refused))
                        .map_err(|_| RunError::HostGone)?;
                }
                Ok(Some(HostMsg::StdinFeed(data))) => {
                    // Taken now when it fits, else held and answered once it does (below).
                    let refused = match pipes.stdin.as_mut() {
                        _ if held_feed.is_some() => {
                            Some("a piece of stdin is already waiting for room".to_string())
                        }
                        Some(pipe) if pipe.open && !pipe.has_room(data.len()) => {
                            held_feed = Some(data);
                            None
                        }
                        Some(pipe) => pipe.take(data),
                        None if req_stdin_open => Some("the command's stdin is closed".to_string()),
                        None => Some("the command was not started with stdin open".to_string()),
                    };
                    if held_feed.is_none() || refused.is_some() {
                        channel::send(io.sock, &InitMsg::StdinTaken(refused))
                            .map_err(|_| RunError::HostGone)?;
                    }
                }
                Ok(Some(HostMsg::CloseStdin)) => {
                    let refused = if !req_stdin_open {
                        Some("the command was not started with stdin open".to_string())
                    } else {
                        if let Some(pipe) = pipes.stdin.as_mut() {
                            pipe.open = false;
                        }
                        None
                    };
                    if pipes
                        .stdin
                        .as_ref()
                        .is_some_and(|p| !p.open && !p.has_pending())
                    {
                        pipes.stdin = None;
                    }
                    channel::send(io.sock, &InitMsg::StdinTaken(refused))
                        .map_err(|_| RunError::HostGone)?;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    host_gone = true;
                    stop = true;
                }
            }
        }
        for (slot, pipe, stream) in [
            (Slot::Stdout, &mut pipes.stdout, Some(Stream::Stdout)),
            (Slot::Stderr, &mut pipes.stderr, Some(Stream::Stderr)),
            (Slot::Fd4, &mut pipes.fd4, None),
        ] {
            if !poll.ready(slot) {
                continue;
            }
            let Some(fd) = pipe.as_ref() else { continue };
            match read_some(fd, &mut buf) {
                ReadResult::Data(n) => {
                    let within = match stream {
                        Some(s) => io.take_output(s, &buf[..n])?,
                        None => {
                            if (io.fd4.len() as u64) <= MAX_FD4_BYTES {
                                io.fd4.extend_from_slice(&buf[..n]);
                            }
                            if io.fd4.len() as u64 > MAX_FD4_BYTES {
                                io.output_limit = true;
                            }
                            !io.output_limit
                        }
                    };
                    if !within {
                        match interrupt.as_mut() {
                            Some(interrupt) => interrupt.now(),
                            None => stop = true,
                        }
                    }
                }
                ReadResult::Eof => *pipe = None,
                ReadResult::WouldBlock => {}
            }
        }
        if poll.ready(Slot::Kernel) {
            // The kernel is gone: its keeper reports how it ended (nothing when the keeper itself
            // was killed).
            let mut bytes = [0u8; 4];
            let fd = cell.map_or(-1, |c| c.status);
            // SAFETY: reading into a buffer we own.
            let n = unsafe { libc::read(fd, bytes.as_mut_ptr().cast(), 4) };
            main_status = Some(if n == 4 {
                i32::from_le_bytes(bytes)
            } else {
                libc::SIGKILL
            });
            cell_end = Some(CellEnd::Died);
            stop = true;
        } else if poll.ready(Slot::Worker) && cell.is_some() {
            let ctl = cell.map_or(-1, |c| c.ctl);
            match warm::recv_json(ctl, None)
                .ok()
                .as_ref()
                .and_then(warm::parse_exit)
            {
                Some(exit) => {
                    main_status = Some(exit.status);
                    worker_exit = Some(exit);
                    cell_end = Some(CellEnd::Answered);
                }
                // A kernel that says anything else is not trusted with another cell.
                None => cell_end = Some(CellEnd::Unresponsive),
            }
            stop = true;
        }
        if poll.ready(Slot::Worker) && !worker_lost {
            if let Some((_, ctl)) = warm {
                match warm::recv_json(ctl, None)
                    .ok()
                    .as_ref()
                    .and_then(warm::parse_exit)
                {
                    Some(exit) => {
                        main_status = Some(exit.status);
                        worker_exit = Some(exit);
                        stop = true;
                    }
                    // The worker is gone; its program may still run (see the reaping above).
                    None => worker_lost = true,
                }
            }
        }
        if poll.ready(Slot::Stdin) && pipes.stdin.as_mut().is_some_and(StdinPipe::write_some) {
            pipes.stdin = None;
        }
        // A held piece of stdin goes in once the program has read enough, or is refused once
        // the program closed its stdin.
        if let Some(data) = held_feed.take() {
            match pipes.stdin.as_mut() {
                Some(pipe) if !pipe.has_room(data.len()) => held_feed = Some(data),
                Some(pipe) => {
                    let refused = pipe.take(data);
                    channel::send(io.sock, &InitMsg::StdinTaken(refused))
                        .map_err(|_| RunError::HostGone)?;
                }
                None => {
                    let why = "the program closed its stdin before reading all of it";
                    channel::send(io.sock, &InitMsg::StdinTaken(Some(why.into())))
                        .map_err(|_| RunError::HostGone)?;
                }
            }
        }
        if poll.ready(Slot::Fd3) && pipes.fd3.as_mut().is_some_and(write_some) {
            pipes.fd3 = None;
        }
    }
    pipes.stdin = None;
    pipes.fd3 = None;
    // The answer a held piece of stdin waits for comes before the run's report.
    if held_feed.is_some() {
        let why = "the command ended before reading all of its stdin";
        channel::send(io.sock, &InitMsg::StdinTaken(Some(why.into())))
            .map_err(|_| RunError::HostGone)?;
    }
    // Whatever the run started dies with its group. A run that ended by itself and left nothing
    // but the workers in the workers' group keeps them. Anything else (a limit hit, a group that
    // would not empty, a worker's stray child) is ended with kill(-1), which from PID 1 reaches
    // every other process of the box, workers included: they are started again when next needed.
    // Processes that outlive a run by design: the workers, and (seen only by a box without
    // cgroups, whose census counts every process) every context's processes.
    let mut keep = workers.pids();
    if groups.is_none() {
        keep.extend(kernels.tree_pids());
    }
    // A cell's kernel that did not answer is ended with its context (`after_cell`), not here.
    let clean = (main_status.is_some() || cell.is_some()) && ends_empty(groups, &keep);
    if !clean {
        if let Some(status) = kill_and_reap_all(main_pid) {
            main_status = Some(status);
        }
        workers.forget_all();
        kernels.forget_all();
    } else if worker_lost {
        if let Some((worker, _)) = warm {
            workers.discard_pid(worker);
        }
    }
    // Every writer is dead now: drain what is left in the pipes.
    for (slot, stream) in [
        (pipes.stdout.take(), Some(Stream::Stdout)),
        (pipes.stderr.take(), Some(Stream::Stderr)),
        (pipes.fd4.take(), None),
    ] {
        let Some(fd) = slot else { continue };
        let mut file = std::fs::File::from(fd);
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => match stream {
                    Some(s) => {
                        if !io.take_output(s, &buf[..n])? {
                            break;
                        }
                    }
                    None => {
                        if (io.fd4.len() as u64) < MAX_FD4_BYTES {
                            io.fd4.extend_from_slice(&buf[..n]);
                        }
                    }
                },
            }
        }
    }
    if host_gone {
        return Err(RunError::HostGone);
    }
    let exit = main_status
        .map(exit_of)
        .unwrap_or(Exit::Signal(libc::SIGKILL));
    Ok(Supervised {
        exit,
        wall_timeout,
        cancelled,
        worker_cpu_ns: worker_exit.as_ref().map_or(0, |e| e.cpu_ns),
        worker_maxrss: worker_exit.as_ref().map_or(0, |e| e.maxrss),
        cell_end,
    })
}
