//! Warm workers: pre-started interpreters inside the box that run each program in a fresh fork
//! of themselves, so the interpreter's start-up is paid once per box instead of once per run.
//!
//! A worker is started like any program (same uid, seccomp filter, rlimits ceiling) with a
//! `SOCK_SEQPACKET` control socket on fd 3. For each run the init sends one JSON request (argv,
//! cwd, environment, rlimits) with five descriptors attached (`SCM_RIGHTS`: stdin, stdout, stderr,
//! the snippet input and result pipes); the worker forks, the child takes those descriptors as
//! 0–4, applies the rlimits and runs the program, and the worker answers `{"pid": n}` at once and
//! `{"exit": status, "cpu_ns": n, "maxrss": bytes}` when the child has been reaped.
//!
//! The init supervises the child exactly as a cold run (deadline, output caps, cancel). A run
//! that ends by itself and leaves nothing behind keeps the workers; after any other run the init
//! kills every process of the box (workers included, with `kill(-1)`), and workers start again
//! when next needed. A worker makes itself
//! non-dumpable, so the programs it runs (same uid) cannot read or write its memory through
//! `/proc`; a program that kills or stops a worker only costs that run its speed: a worker that
//! does not answer is killed, and the run falls back to a cold start.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, ControlMessage, MsgFlags};

use super::run::{child, Context, Rlimit};
use crate::wire::WarmSpec;

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
        for attempt in 0..2 {
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
            // A previous run may have stopped it.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(worker.pid, libc::SIGCONT) };
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
    // SAFETY: the init is single-threaded; the child execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child(ctx, &rlimits, &targets, &path, &argv, &envp, &cwd)
    }
    Ok(Worker {
        pid,
        ctl: ours,
        ready: false,
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
    })
}

/// How many processes of the box, besides the init and `keep`, are alive (zombies not counted).
pub fn others_alive(keep: &[libc::pid_t]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return usize::MAX;
    };
    dir.flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<libc::pid_t>().ok())
        })
        .filter(|&pid| pid != 1 && !keep.contains(&pid) && !is_zombie(pid))
        .count()
}

fn is_zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
