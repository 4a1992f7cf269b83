//! Warm workers: pre-started interpreters inside the box that run each program in a fresh fork
//! of themselves, so the interpreter's start-up is paid once per box instead of once per run.
//!
//! A worker is started like any program (seccomp filter, `no_new_privs`, an empty bounding set,
//! rlimits ceiling) with a `SOCK_SEQPACKET` control socket on fd 3, but under a uid and gid of its
//! own ([`WORKER_UID`]) and with `CAP_SETUID` and `CAP_SETGID` (its only capabilities). For each
//! run the init sends one JSON request (argv, cwd, environment, rlimits, the run's uid and gid)
//! with five descriptors attached (`SCM_RIGHTS`: stdin, stdout, stderr, the snippet input and
//! result pipes); the worker forks, the child takes those descriptors as 0–4, becomes the run's
//! uid and gid with no capability left (and checks that it did), applies the rlimits, enters the
//! working directory without following symlinks and runs the program, and the worker answers
//! `{"pid": n}` at once and `{"exit": status, "cpu_ns": n, "maxrss": bytes}` when the child has
//! been reaped.
//!
//! Why a uid of its own: a run must not be able to change its worker, since every later run is a
//! fork of it. The kernel lets a process signal another, change its rlimits (`prlimit`) or its
//! priority (`setpriority`), or read it through `/proc` only when their uids match (or with a
//! capability no run has), so a worker whose uid no program shares is out of reach of all of
//! those at once, including ways nobody listed; resetting each one from the request instead
//! would leave every way not thought of open. The two capabilities it keeps are needed only to
//! hand a child to the run's uid, and a child drops them before anything of the run happens.
//! The worker itself reads nothing a run can write and keeps nothing of a run in its memory (see
//! the workers' own sources). As a second line, the init checks a worker before every run it
//! gives it ([`Workers::start`]): its state (not stopped, not traced), uid and gid, priority and
//! every rlimit must be what it started with, and a worker that changed is killed and replaced,
//! never reused.
//!
//! The init supervises the child exactly as a cold run (deadline, output caps, cancel). A run
//! that ends by itself and leaves nothing behind keeps the workers; after any other run the init
//! kills every process of the box (workers included, with `kill(-1)`), and workers start again
//! when next needed. A worker that does not answer is killed, and the run falls back to a cold
//! start.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, ControlMessage, MsgFlags};

use super::child::{self, CStrArray, ChildPlan, Ids, Rlimit};
use super::context::Context;
use super::SANDBOX_UID;
use crate::channel::WarmSpec;

/// The uid and gid warm workers run as inside the box: mapped like the box's other ids, and
/// shared with no program (programs run as [`SANDBOX_UID`]).
pub const WORKER_UID: u32 = 999;

const CAP_SETGID: u64 = 6;
const CAP_SETUID: u64 = 7;

/// A worker's identity: its own uid and gid, and the two capabilities it needs to hand each
/// child to the run's uid.
const WORKER_IDS: Ids = Ids {
    uid: WORKER_UID,
    gid: WORKER_UID,
    keep_caps: 1 << CAP_SETUID | 1 << CAP_SETGID,
};

/// How long a worker may take to answer that it has started a run.
const START_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the init waits for a new worker to be ready when asked to.
const READY_TIMEOUT: Duration = Duration::from_secs(4);

/// A running worker.
pub struct Worker {
    pub pid: libc::pid_t,
    ctl: OwnedFd,
    /// The worker said it finished starting (it sends `{"ready": true}` once).
    ready: bool,
    /// What it was started with, which it must still have before each run.
    baseline: Baseline,
}

/// Every rlimit resource, `RLIMIT_CPU` to `RLIMIT_RTTIME`.
const RESOURCES: libc::__rlimit_resource_t = 16;

/// The rlimits (every resource, soft and hard) and the nice value a worker starts with.
struct Baseline {
    rlimits: Vec<Rlimit>,
    nice: i32,
}

impl Baseline {
    /// The init's own limits and priority, which the worker inherits, with `set` applied.
    fn of_new_worker(set: &[Rlimit]) -> io::Result<Baseline> {
        let mut rlimits = Vec::new();
        for resource in 0..RESOURCES {
            let value = match set.iter().find(|(r, _, _)| *r == resource) {
                Some(&limit) => limit,
                None => {
                    let mut got = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    // SAFETY: getrlimit fills a struct we own.
                    if unsafe { libc::getrlimit(resource, &mut got) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    (resource, got.rlim_cur, got.rlim_max)
                }
            };
            rlimits.push(value);
        }
        Ok(Baseline {
            rlimits,
            nice: priority(0)?,
        })
    }
}

/// The nice value of process `pid` (0: the init itself).
fn priority(pid: libc::pid_t) -> io::Result<i32> {
    // SAFETY: getpriority only reads; -1 is a valid value, so errno tells an error apart.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(nice)
    }
}

/// How `worker` differs from what it was started with, if it does: stopped or traced, another
/// uid or gid, another priority, or any rlimit changed.
fn changed(worker: &Worker) -> Option<String> {
    let pid = worker.pid;
    let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => status,
        Err(e) => return Some(format!("its status cannot be read: {e}")),
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
    };
    if !matches!(field("State:").chars().next(), Some('R' | 'S' | 'D')) {
        return Some(format!("its state is {}", field("State:")));
    }
    if field("TracerPid:") != "0" {
        return Some("it is traced".into());
    }
    let ours = |ids: &str, id: u32| ids.split_whitespace().all(|v| v == id.to_string());
    if !ours(field("Uid:"), WORKER_IDS.uid) || !ours(field("Gid:"), WORKER_IDS.gid) {
        return Some(format!(
            "its ids changed (uid {}, gid {})",
            field("Uid:"),
            field("Gid:")
        ));
    }
    match priority(pid) {
        Ok(nice) if nice == worker.baseline.nice => {}
        Ok(nice) => return Some(format!("its nice value is {nice}")),
        Err(e) => return Some(format!("its priority cannot be read: {e}")),
    }
    for &(resource, soft, hard) in &worker.baseline.rlimits {
        let mut got = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit only reads here (no new limit) into a struct we own.
        let read = unsafe { libc::prlimit(pid, resource, std::ptr::null(), &mut got) };
        if read != 0 {
            return Some(format!(
                "its rlimit {resource} cannot be read: {}",
                io::Error::last_os_error()
            ));
        }
        if (got.rlim_cur, got.rlim_max) != (soft, hard) {
            return Some(format!(
                "its rlimit {resource} is {}/{} instead of {soft}/{hard}",
                got.rlim_cur, got.rlim_max
            ));
        }
    }
    None
}

impl Worker {
    pub fn ctl_fd(&self) -> RawFd {
        self.ctl.as_raw_fd()
    }
}

/// What a worker reported about a finished run.
pub struct WorkerExit {
    pub status: i32,
    pub cpu_ns: u64,
    pub maxrss: u64,
}

/// The box's workers, by key.
#[derive(Default)]
pub struct Workers {
    map: HashMap<String, Worker>,
}

impl Workers {
    /// Host-visible pids of every live worker (they survive the end of a run).
    pub fn pids(&self) -> Vec<libc::pid_t> {
        self.map.values().map(|w| w.pid).collect()
    }

    /// Forgets every worker (after the init killed and reaped them all).
    pub fn forget_all(&mut self) {
        self.map.clear();
    }

    /// Forgets a worker the init has reaped.
    pub fn reaped(&mut self, pid: libc::pid_t) -> bool {
        let before = self.map.len();
        self.map.retain(|_, w| w.pid != pid);
        before != self.map.len()
    }

    pub fn get(&self, key: &str) -> Option<&Worker> {
        self.map.get(key)
    }

    /// Kills and forgets the worker with host pid `pid`.
    pub fn discard_pid(&mut self, pid: libc::pid_t) {
        let key = self
            .map
            .iter()
            .find(|(_, w)| w.pid == pid)
            .map(|(k, _)| k.clone());
        if let Some(key) = key {
            self.discard(&key);
        }
    }

    /// Kills and forgets every worker whose key is not in `keys`.
    pub fn keep_only(&mut self, keys: &[String]) {
        let others: Vec<String> = self
            .map
            .keys()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        for key in others {
            self.discard(&key);
        }
    }

    /// Kills and forgets the worker `key`.
    pub fn discard(&mut self, key: &str) {
        if let Some(w) = self.map.remove(key) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(w.pid, libc::SIGKILL) };
        }
    }

    /// Starts the worker for `spec` unless it runs already.
    pub fn ensure(&mut self, ctx: &Context, spec: &WarmSpec, wait_ready: bool) -> io::Result<()> {
        if !self.map.contains_key(&spec.key) {
            let worker = spawn(ctx, spec)?;
            self.map.insert(spec.key.clone(), worker);
        }
        if let Some(worker) = self.map.get_mut(&spec.key) {
            if wait_ready && !worker.ready {
                let msg = recv_json(worker.ctl.as_raw_fd(), Some(READY_TIMEOUT))?;
                worker.ready = msg.get("ready").is_some();
            }
        }
        Ok(())
    }

    /// Starts a run in the worker for `spec` (starting the worker first if needed). Returns the
    /// run's pid, or `None` when no worker could take it (the caller then starts it cold).
    pub fn start(
        &mut self,
        ctx: &Context,
        spec: &WarmSpec,
        request: &serde_json::Value,
        fds: [RawFd; 5],
    ) -> Option<libc::pid_t> {
        for attempt in 0..3 {
            if !self.map.contains_key(&spec.key) {
                match spawn(ctx, spec) {
                    Ok(w) => {
                        self.map.insert(spec.key.clone(), w);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "starting a warm worker failed");
                        return None;
                    }
                }
            }
            let worker = self.map.get_mut(&spec.key)?;
            // Every run is a fork of the worker: one that changed is never reused. (One that has
            // not said it is ready yet may still be on its way to exec, with the init's ids.)
            if let Some(what) = worker.ready.then(|| changed(worker)).flatten() {
                tracing::debug!(attempt, what, "warm worker changed; replacing it");
                self.discard(&spec.key);
                continue;
            }
            match send_request(worker, request, fds) {
                Ok(pid) => return Some(pid),
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "warm worker failed; replacing it");
                    self.discard(&spec.key);
                }
            }
        }
        None
    }
}

fn spawn(ctx: &Context, spec: &WarmSpec) -> io::Result<Worker> {
    if child::GROUPS_FIXED.load(std::sync::atomic::Ordering::Relaxed) {
        // A box with one id (see `crate::ids`) has no uid to keep a worker apart from its runs.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "warm workers need a uid of their own, which a box with only the user's own id lacks",
        ));
    }
    let (ours, theirs) = socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )?;
    let devnull = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let program = spec
        .argv
        .first()
        .ok_or_else(|| io::Error::other("empty worker argv"))?;
    let path = CString::new(program.as_str())?;
    let argv = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = CString::new("/workspace")?;
    // The worker's own ceiling; each run lowers it to the run's limits.
    let rlimits: Vec<Rlimit> = vec![
        (libc::RLIMIT_CPU, libc::RLIM_INFINITY, libc::RLIM_INFINITY),
        (libc::RLIMIT_NOFILE, 4096, 4096),
        (libc::RLIMIT_CORE, 0, 0),
    ];
    let null = devnull.as_raw_fd();
    // Descriptors 0-4 are all taken (4 by /dev/null too), so that whatever the worker opens
    // while starting lands above them and never collides with a run's 0-4.
    let targets = [
        Some(null),
        Some(null),
        Some(null),
        Some(theirs.as_raw_fd()),
        Some(null),
    ];
    let baseline = Baseline::of_new_worker(&rlimits)?;
    let plan = ChildPlan {
        group: ctx.workers_group(),
        ids: &WORKER_IDS,
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
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: this is the freshly forked child.
        unsafe { child::exec_child(&plan) }
    }
    Ok(Worker {
        pid,
        ctl: ours,
        ready: false,
        baseline,
    })
}

fn send_request(
    worker: &mut Worker,
    request: &serde_json::Value,
    fds: [RawFd; 5],
) -> io::Result<libc::pid_t> {
    let body = serde_json::to_vec(request)?;
    socket::sendmsg::<()>(
        worker.ctl.as_raw_fd(),
        &[IoSlice::new(&body)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    loop {
        let reply = recv_json(worker.ctl.as_raw_fd(), Some(START_TIMEOUT))?;
        if reply.get("ready").is_some() {
            // The worker finished starting while this request waited for it.
            worker.ready = true;
            continue;
        }
        return reply
            .get("pid")
            .and_then(|p| p.as_i64())
            .map(|p| p as libc::pid_t)
            .ok_or_else(|| io::Error::other(format!("unexpected worker reply {reply}")));
    }
}

/// Reads one JSON message from a worker's control socket, waiting at most `timeout`.
pub fn recv_json(fd: RawFd, timeout: Option<Duration>) -> io::Result<serde_json::Value> {
    if let Some(timeout) = timeout {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling one descriptor we own.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if n > 0 {
                break;
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "worker did not answer",
                ));
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error());
            }
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: reading into a buffer we own.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "worker went away",
        ));
    }
    serde_json::from_slice(&buf[..n as usize])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Parses a worker's exit report.
pub fn parse_exit(msg: &serde_json::Value) -> Option<WorkerExit> {
    Some(WorkerExit {
        status: msg.get("exit")?.as_i64()? as i32,
        cpu_ns: msg.get("cpu_ns").and_then(|v| v.as_u64()).unwrap_or(0),
        maxrss: msg.get("maxrss").and_then(|v| v.as_u64()).unwrap_or(0),
    })
}

/// The request a worker gets for one run.
pub fn request(
    argv: &[String],
    cwd: &str,
    env: &[(String, String)],
    rlimits: &[Rlimit],
) -> serde_json::Value {
    serde_json::json!({
        "argv": argv,
        "cwd": cwd,
        "env": env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "rlimits": rlimits.iter().map(|&(r, s, h)| [r as u64, s, h]).collect::<Vec<_>>(),
        "uid": SANDBOX_UID,
        "gid": SANDBOX_UID,
    })
}
