//! The host side: a [`Sandbox`] makes boxes; a [`SandboxBox`] runs programs and file operations
//! in one box and destroys it.
//!
//! A box is created in these steps:
//!
//! 1. claim a free slot of host ids (`IdSlot`): the box's uids and gids are its own, shared with
//!    no other live box of any CodeBeaker process on the host;
//! 2. create its cgroup with the box limits, each read back ([`crate::cgroup`]), and the run and
//!    worker groups below it;
//! 3. start the setup process (our own binary as `__box-init`, see [`crate::init`]) with one end of
//!    a socket pair, and move it into the cgroup;
//! 4. send the [`BoxSetup`]; the setup process clones the init into fresh namespaces and reports
//!    its pid; the init builds the root filesystem and says `Ready`.
//!
//! Destroying a box kills every process in its cgroup (or the init, whose death takes the whole
//! PID namespace with it, when there is no cgroup), waits for the setup process, and removes the
//! cgroup. Mounts and files need no clean-up: they live in the box's own mount namespace and
//! tmpfs, and vanish with its last process. Dropping a [`SandboxBox`] without `destroy` does the
//! same, best effort.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use tokio::net::unix::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::census::{owner_pid, process_alive};
use crate::cgroup::{BoxCgroup, CgroupLimits, CgroupManager, CgroupVersion};
use crate::channel::{
    self, Bind, BoxSetup, Entry, Exit, FileRoot, HostMsg, InitMsg, KernelSpec, RunReport,
    RunRequest, Stream, WarmSpec, WriteFile, STDIN_PIECE,
};
use crate::ids::IdMap;
use crate::limits::{BoxLimits, RunLimits};
use crate::outcome::{RunOutcome, Verdict};

/// Argument that makes the `codebeaker` binary act as a box's setup process.
pub const INIT_ARG: &str = "__box-init";

/// Name of the parent cgroup all boxes live under.
pub(crate) const CGROUP_PARENT: &str = "codebeaker";

/// Extra time the host gives a run past its wall-clock limit before it declares the box broken.
const HOST_GRACE: Duration = Duration::from_secs(5);

/// How long the init may take to start or end a context's kernel (it waits up to 20 s for a
/// kernel to be ready, and up to 5 s for a keeper to end) before the box is declared broken.
const CONTEXT_START_GRACE: Duration = Duration::from_secs(40);

/// How long box creation may take before it is declared failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Number of id slots: live boxes on one host, across every CodeBeaker process. Slot `n` maps
/// the box's ids 0–65535 to host ids `id_base + n * 65536` and up.
pub const ID_SLOTS: u32 = 4096;

/// Host ids of every box: from `id_base`, this many.
pub const fn id_span() -> u64 {
    ID_SLOTS as u64 * crate::init::ID_RANGE as u64
}

/// Everything that can go wrong around boxes (not inside a run: that is a [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("user namespaces are not available: {0}; enable them (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone) or see `codebeaker doctor`")]
    NoUserNamespaces(String),
    #[error("no usable cgroup hierarchy and degraded mode is not allowed; mount cgroup v2 (or the v1 memory, pids, cpu and cpuacct controllers), or allow degraded boxes")]
    NoCgroups,
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("cannot find the codebeaker binary to start boxes with: {0}")]
    InitProgram(io::Error),
    #[error("preparing the sandbox state directory {path}: {source}")]
    StateDir { path: PathBuf, source: io::Error },
    #[error("starting a box failed: {0}")]
    Spawn(io::Error),
    #[error("setting up the box failed: {0}")]
    Setup(String),
    #[error("the box is gone (its init exited or was killed)")]
    BoxGone,
    #[error("the box did not answer in time and was destroyed")]
    Unresponsive,
    #[error("{0}")]
    Request(String),
    #[error("every one of the {ID_SLOTS} id slots of the host is taken by a live box; destroy boxes (close sessions) or run fewer at once")]
    NoIdSlot,
    #[error("the id base {0} leaves no room for {ID_SLOTS} slots of 65536 ids below 2^32; choose a smaller sandbox id_base")]
    IdBase(u32),
}

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Host directory for the sandbox's own state (the shared, empty root mount point).
    pub state_dir: PathBuf,
    /// Host uid/gid where the boxes' ids start: each live box takes its own 65536 ids from there
    /// ([`ID_SLOTS`] slots, so `id_base` up to `id_base + ID_SLOTS * 65536`).
    pub id_base: u32,
    /// The binary started as each box's setup process; `None` means this process's own binary.
    pub init_program: Option<PathBuf>,
    /// Create boxes without cgroups (rlimits only) when no cgroup can be had.
    pub allow_degraded: bool,
    /// Container mode: when this process is in the root of its cgroup namespace and that root
    /// holds processes (so it cannot enable controllers for boxes), move this process into a
    /// leaf group first (see [`CgroupManager::detect_explained`]).
    pub move_to_leaf: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            state_dir: crate::ids::default_state_dir(),
            id_base: 100_000_000,
            init_program: None,
            allow_degraded: true,
            move_to_leaf: true,
        }
    }
}

/// The isolation in force, as reported by `initialize` and `codebeaker doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Isolation {
    pub backend: &'static str,
    /// `None` when boxes run without cgroups (degraded).
    pub cgroup: Option<CgroupVersion>,
    pub seccomp: bool,
    pub network: &'static str,
    pub degraded: bool,
    /// What is weaker than full isolation and why, and what detection did on the way (a
    /// read-only cgroup2 skipped, this process moved into a leaf group in container mode).
    pub notes: Vec<String>,
}

/// Creates boxes. One per process is enough; it is cheap to share behind an `Arc`.
pub struct Sandbox {
    config: SandboxConfig,
    /// The ids of every box when this process is not root (see [`crate::ids`]); `None` for root,
    /// whose boxes each claim an [`IdSlot`].
    rootless: Option<IdMap>,
    init_program: PathBuf,
    cgroups: Option<CgroupManager>,
    isolation: Isolation,
}

/// Serializes the short window in which the box's end of a new socket pair is inheritable, so
/// that no other box's setup process inherits it.
static SPAWN_LOCK: StdMutex<()> = StdMutex::new(());

/// Cgroups of this process's boxes that `destroy` had to leave in place (their processes did not
/// die in time, e.g. on a badly overloaded host); [`Sandbox::remove_left_behind`] retries them.
static LEFT_BEHIND: StdMutex<std::collections::BTreeSet<String>> =
    StdMutex::new(std::collections::BTreeSet::new());

fn left_behind() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<String>> {
    LEFT_BEHIND.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a new box gets.
#[derive(Debug, Clone, Default)]
pub struct BoxSpec {
    pub limits: BoxLimits,
    /// Extra read-only binds (toolchain directories, the compile cache), each where the box
    /// should see it.
    pub binds: Vec<Bind>,
}

impl Sandbox {
    /// Checks the host, detects cgroups and removes boxes left behind by dead CodeBeaker
    /// processes.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let rootless = (!crate::ids::is_root()).then(crate::ids::rootless_map);
        if let Ok(max) = std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
            if max.trim() == "0" {
                return Err(SandboxError::NoUserNamespaces(
                    "user.max_user_namespaces is 0".into(),
                ));
            }
        }
        if u64::from(config.id_base) + id_span() > u64::from(u32::MAX) {
            return Err(SandboxError::IdBase(config.id_base));
        }
        let init_program = match &config.init_program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(SandboxError::InitProgram)?,
        };
        if rootless.is_some() {
            crate::ids::ensure_private_dir(&config.state_dir).map_err(|source| {
                SandboxError::StateDir {
                    path: config.state_dir.clone(),
                    source,
                }
            })?;
        }
        let root = config.state_dir.join("root");
        std::fs::create_dir_all(&root).map_err(|source| SandboxError::StateDir {
            path: root.clone(),
            source,
        })?;
        let slots = config.state_dir.join("ids");
        std::fs::create_dir_all(&slots).map_err(|source| SandboxError::StateDir {
            path: slots.clone(),
            source,
        })?;
        let detection = CgroupManager::detect_explained(CGROUP_PARENT, config.move_to_leaf)?;
        let cgroups = detection.manager;
        let mut notes = detection.notes;
        if let Some(ids) = &rootless {
            notes.push(ids.describe());
        }
        if cgroups.is_none() {
            if !config.allow_degraded {
                return Err(SandboxError::NoCgroups);
            }
            notes.push(
                "no usable cgroup: memory and process limits fall back to per-process rlimits \
                 (RLIMIT_AS, RLIMIT_NPROC); peak memory and CPU quota are not enforced per box"
                    .to_string(),
            );
        }
        let isolation = Isolation {
            backend: "native",
            cgroup: cgroups.as_ref().map(|c| c.version()),
            seccomp: true,
            network: "none (loopback only)",
            degraded: cgroups.is_none(),
            notes,
        };
        let sandbox = Sandbox {
            config,
            rootless,
            init_program,
            cgroups,
            isolation,
        };
        sandbox.remove_stale_boxes();
        Ok(sandbox)
    }

    /// The isolation boxes get on this host.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// How cgroups are used here, for diagnostics.
    pub fn cgroup_description(&self) -> Option<String> {
        self.cgroups.as_ref().map(|c| c.describe())
    }

    /// Removes cgroups of boxes whose owning CodeBeaker process is gone (killed, crashed).
    fn remove_stale_boxes(&self) {
        for name in self.stale_boxes() {
            if let Some(cg) = &self.cgroups {
                match cg.remove_stale(&name) {
                    Ok(()) => tracing::info!(group = %name, "removed a box left by a dead process"),
                    Err(e) => {
                        tracing::warn!(group = %name, error = %e, "could not remove a stale box")
                    }
                }
            }
        }
    }

    /// Cgroups of boxes whose owner process is no longer alive.
    pub fn stale_boxes(&self) -> Vec<String> {
        let Some(cg) = &self.cgroups else {
            return Vec::new();
        };
        let names = cg.list().unwrap_or_default();
        names
            .into_iter()
            .filter(|n| owner_pid(n).is_some_and(|pid| !process_alive(pid)))
            .collect()
    }

    /// Whether some destroyed box's cgroup waits for
    /// [`remove_left_behind`](Self::remove_left_behind).
    pub fn has_left_behind(&self) -> bool {
        !left_behind().is_empty()
    }

    /// Retries removing the cgroups that destroying a box had to leave in place (its processes
    /// did not die in time). Blocking (each try waits for the processes to die); returns how
    /// many are still left.
    pub fn remove_left_behind(&self) -> usize {
        let names: Vec<String> = left_behind().iter().cloned().collect();
        for name in names {
            let removed = match &self.cgroups {
                Some(cg) => cg.remove_stale(&name),
                None => Ok(()),
            };
            match removed {
                Ok(()) => {
                    left_behind().remove(&name);
                    tracing::info!(group = %name, "removed the cgroup of a box destroyed earlier");
                }
                Err(e) => {
                    tracing::debug!(group = %name, error = %e, "a destroyed box's cgroup is still busy")
                }
            }
        }
        left_behind().len()
    }

    /// Cgroups of boxes that belong to this process and are still there.
    pub fn own_boxes(&self) -> Vec<String> {
        let Some(cg) = &self.cgroups else {
            return Vec::new();
        };
        let me = std::process::id() as i32;
        cg.list()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| owner_pid(n) == Some(me))
            .collect()
    }

    /// Creates a box and waits until its init is ready.
    pub async fn create_box(&self, spec: &BoxSpec) -> Result<SandboxBox, SandboxError> {
        let name = format!("cb-{}-{}", std::process::id(), random_hex());
        let started = Instant::now();
        let (id_map, ids) = match self.rootless {
            Some(map) => (map, None),
            None => {
                let slot = IdSlot::claim(&self.config)?;
                (IdMap::HostRange { base: slot.base }, Some(slot))
            }
        };
        let cgroup = match &self.cgroups {
            Some(cg) => Some(cg.create(
                &name,
                &CgroupLimits {
                    memory_bytes: spec.limits.memory_bytes,
                    pids_max: spec.limits.max_processes,
                    cpu_millis: spec.limits.cpu_millis,
                },
            )?),
            None => None,
        };
        let groups = match &cgroup {
            Some(cg) => Some(cg.create_run_groups()?),
            None => None,
        };
        let (host_end, child) = self.spawn_setup_process()?;
        let mut b = SandboxBox {
            name,
            limits: spec.limits,
            conn: Mutex::new(Conn {
                stream: host_end,
                broken: false,
            }),
            cgroup,
            setup_process: Some(child),
            init_pid: None,
            id_map,
            _slot: ids,
        };
        match tokio::time::timeout(SETUP_TIMEOUT, b.setup(&self.config, spec, groups)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                b.kill();
                return Err(e);
            }
            Err(_) => {
                b.kill();
                return Err(SandboxError::Setup(
                    "the box did not become ready in time".into(),
                ));
            }
        }
        tracing::debug!(box_name = %b.name, elapsed_us = started.elapsed().as_micros() as u64, "box ready");
        Ok(b)
    }

    fn spawn_setup_process(&self) -> Result<(UnixStream, tokio::process::Child), SandboxError> {
        let (host_end, box_end) =
            std::os::unix::net::UnixStream::pair().map_err(SandboxError::Spawn)?;
        let box_end = OwnedFd::from(box_end);
        let child = {
            let _guard = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            set_inheritable(&box_end, true).map_err(SandboxError::Spawn)?;
            // The box's init is a clone of this process, and its argv is what a program in the
            // box reads in /proc/1/cmdline: a neutral name, not the host path of the binary.
            let child = tokio::process::Command::new(&self.init_program)
                .arg0("codebeaker-init")
                .arg(INIT_ARG)
                .arg(box_end.as_raw_fd().to_string())
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn();
            set_inheritable(&box_end, false).map_err(SandboxError::Spawn)?;
            child.map_err(SandboxError::Spawn)?
        };
        drop(box_end);
        host_end
            .set_nonblocking(true)
            .map_err(SandboxError::Spawn)?;
        let host_end = UnixStream::from_std(host_end).map_err(SandboxError::Spawn)?;
        Ok((host_end, child))
    }
}

fn set_inheritable(fd: &OwnedFd, inheritable: bool) -> io::Result<()> {
    let flag = if inheritable { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flag) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// 64 random bits as hex: the part of a box's name that callers see (see
/// [`SandboxBox::public_id`]). Random, so that an id tells nothing of the host (no pid, no count
/// of the boxes made before it) and cannot be guessed.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom fills the buffer we own; it does not fail for 8 bytes once the kernel's
    // pool is ready, and a short read leaves zeros, which still make a valid (if weaker) name.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Conn {
    stream: UnixStream,
    /// A request was interrupted mid-way; the framing can no longer be trusted.
    broken: bool,
}

impl Conn {
    /// The answer of an exchange with the init that was given [`HOST_GRACE`]: one that failed or
    /// came too late leaves the framing untrustworthy, so the connection is marked broken.
    fn settle<T>(
        &mut self,
        outcome: Result<Result<T, SandboxError>, tokio::time::error::Elapsed>,
    ) -> Result<T, SandboxError> {
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e)
            }
            Err(_) => {
                self.broken = true;
                Err(SandboxError::Unresponsive)
            }
        }
    }
}

/// One box: runs happen one at a time, in the order they were asked for.
pub struct SandboxBox {
    name: String,
    limits: BoxLimits,
    conn: Mutex<Conn>,
    cgroup: Option<BoxCgroup>,
    setup_process: Option<tokio::process::Child>,
    init_pid: Option<i32>,
    /// The host ids the box's ids map to.
    id_map: IdMap,
    /// Held until the box is gone (dropped after `destroy`); rootless boxes have none.
    _slot: Option<IdSlot>,
}

/// A box's own range of host ids, claimed with an exclusive `flock` on
/// `<state_dir>/ids/<slot>.lock` for as long as the box lives. The lock is what makes the slot
/// the box's alone across every CodeBeaker process on the host, and it is released by the kernel
/// when its process dies, so a crashed process leaves no slot taken.
struct IdSlot {
    base: u32,
    _lock: std::fs::File,
}

/// Where the next claim starts looking, so that claims rarely meet a taken slot.
static NEXT_SLOT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl IdSlot {
    fn claim(config: &SandboxConfig) -> Result<IdSlot, SandboxError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = config.state_dir.join("ids");
        let start = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        for i in 0..ID_SLOTS {
            let slot = start.wrapping_add(i) % ID_SLOTS;
            let path = dir.join(format!("{slot}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|source| SandboxError::StateDir { path, source })?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                NEXT_SLOT.store(slot.wrapping_add(1), Ordering::Relaxed);
                return Ok(IdSlot {
                    base: config.id_base + slot * crate::init::ID_RANGE,
                    _lock: file,
                });
            }
        }
        Err(SandboxError::NoIdSlot)
    }
}

/// A program to run in a box.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub argv: Vec<String>,
    /// Environment besides the defaults (`PATH`, `HOME=/tmp`, `LANG=C.UTF-8`, `TMPDIR=/tmp`).
    pub env: Vec<(String, String)>,
    /// Working directory in the box; default `/workspace`.
    pub cwd: Option<String>,
    pub stdin: Vec<u8>,
    /// Bytes offered on fd 3 (the snippet ABI's input).
    pub fd3_input: Option<Vec<u8>>,
    /// Capture fd 4 (the snippet ABI's result).
    pub capture_fd4: bool,
    pub limits: RunLimits,
    /// Run in a pre-started worker for this language when one works (see `init::warm`).
    pub warm: Option<WarmSpec>,
    /// Files written in the box (as the sandbox user) just before the program starts:
    /// `(root, relative path, contents, executable)`.
    pub files: Vec<(FileRoot, String, Vec<u8>, bool)>,
    /// A directory removed from the box (recursively) once the run has ended.
    pub cleanup: Option<(FileRoot, String)>,
    /// Run as a cell of this context ([`SandboxBox::start_context`]): the context's kernel runs
    /// the code in `fd3_input` and the cell's result comes back in [`RunOutcome::result`]; `env`
    /// is the cell's own (over the kernel's); `argv`, `cwd`, `warm` and `files` are not used.
    pub cell: Option<String>,
}

impl RunSpec {
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        RunSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            stdin: Vec::new(),
            fd3_input: None,
            capture_fd4: false,
            limits: RunLimits::default(),
            warm: None,
            files: Vec::new(),
            cleanup: None,
            cell: None,
        }
    }
}

/// Input for a run started with its stdin open ([`SandboxBox::run_with_stdin`]). Each event is
/// answered on its `oneshot`: `Ok` once the box took it, or why it did not (the run had ended,
/// stdin was closed, or more input waits unread than the box holds for a program).
#[derive(Debug)]
pub enum StdinEvent {
    /// Append these bytes to what the program reads on stdin.
    Data(Vec<u8>, oneshot::Sender<Result<(), SandboxError>>),
    /// Close the program's stdin once what it was given is written.
    Close(oneshot::Sender<Result<(), SandboxError>>),
}

/// A chunk of output streamed while a run goes on.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: Vec<u8>,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn program_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", DEFAULT_PATH),
        ("HOME", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("TMPDIR", "/tmp"),
        ("USER", "sandbox"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

impl SandboxBox {
    /// The box's name (also its cgroup's name): `cb-<owner pid>-<random>`, for the host only.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The box's id as callers may see it (`cb-<random>`): its name without the owner's pid.
    pub fn public_id(&self) -> String {
        let random = self.name.rsplit('-').next().unwrap_or_default();
        format!("cb-{random}")
    }

    /// The limits the box was created with.
    pub fn limits(&self) -> &BoxLimits {
        &self.limits
    }

    async fn setup(
        &mut self,
        config: &SandboxConfig,
        spec: &BoxSpec,
        groups: Option<channel::RunGroupPaths>,
    ) -> Result<(), SandboxError> {
        let pid = self
            .setup_process
            .as_ref()
            .and_then(|c| c.id())
            .ok_or_else(|| SandboxError::Setup("the setup process exited at once".into()))?;
        if let Some(cg) = &self.cgroup {
            cg.add_process(pid as i32)?;
        }
        let setup = BoxSetup {
            ids: self.id_map,
            limits: spec.limits,
            binds: spec.binds.clone(),
            root_mountpoint: config.state_dir.join("root"),
            degraded: self.cgroup.is_none(),
            groups,
        };
        let conn = self.conn.get_mut();
        channel::send_async(&mut conn.stream, &HostMsg::Setup(setup))
            .await
            .map_err(|_| SandboxError::BoxGone)?;
        loop {
            match channel::recv_async::<InitMsg>(&mut conn.stream).await {
                Ok(Some(InitMsg::Spawned { pid })) => self.init_pid = Some(pid),
                Ok(Some(InitMsg::Ready)) => return Ok(()),
                Ok(Some(InitMsg::SetupFailed(msg))) => return Err(SandboxError::Setup(msg)),
                Ok(Some(other)) => {
                    return Err(SandboxError::Setup(format!("unexpected message {other:?}")))
                }
                Ok(None) => return Err(SandboxError::Setup("the box exited during setup".into())),
                Err(e) => return Err(SandboxError::Setup(e.to_string())),
            }
        }
    }

    /// Runs `cmd` and waits for it. Limits that hit end in a [`RunOutcome`] status, not an error;
    /// an error means the box itself failed.
    pub async fn run(&self, cmd: &RunSpec) -> Result<RunOutcome, SandboxError> {
        self.run_streaming(cmd, None).await
    }

    /// Like [`run`](Self::run), sending output chunks to `output` as they come.
    pub async fn run_streaming(
        &self,
        cmd: &RunSpec,
        output: Option<mpsc::UnboundedSender<OutputChunk>>,
    ) -> Result<RunOutcome, SandboxError> {
        // A receiver whose sender is gone never fires: the run cannot be cancelled.
        let (_, never) = oneshot::channel();
        self.run_cancellable(cmd, output, never).await
    }

    /// Like [`run_streaming`](Self::run_streaming), and a value sent on `cancel` stops the run:
    /// the box ends the program and the outcome is [`Verdict::Killed`] with the message
    /// `cancelled`, with the output written until then. Dropping the sender without sending
    /// leaves the run alone. A cancel that comes while the run waits for the box (another run
    /// holds it) stops this run as soon as it starts; one that comes after the program ended
    /// changes nothing. The box stays usable either way.
    pub async fn run_cancellable(
        &self,
        cmd: &RunSpec,
        output: Option<mpsc::UnboundedSender<OutputChunk>>,
        cancel: oneshot::Receiver<()>,
    ) -> Result<RunOutcome, SandboxError> {
        self.run_with_stdin(cmd, output, cancel, None).await
    }

    /// Like [`run_cancellable`](Self::run_cancellable); with `stdin`, the program's stdin stays
    /// open after `cmd.stdin` is written, takes each [`StdinEvent::Data`] in order, and closes on
    /// [`StdinEvent::Close`], when every sender is dropped, or when the run ends. Without it,
    /// stdin closes once `cmd.stdin` is written, as for any run.
    pub async fn run_with_stdin(
        &self,
        cmd: &RunSpec,
        output: Option<mpsc::UnboundedSender<OutputChunk>>,
        cancel: oneshot::Receiver<()>,
        stdin: Option<mpsc::Receiver<StdinEvent>>,
    ) -> Result<RunOutcome, SandboxError> {
        let mut conn = self.conn.lock().await;
        if conn.broken {
            return Err(SandboxError::BoxGone);
        }
        let memory_override = cmd
            .limits
            .memory_bytes
            .filter(|m| *m != self.limits.memory_bytes);
        if let (Some(cg), Some(mem)) = (&self.cgroup, memory_override) {
            cg.set_memory_limit(mem)?;
        }
        let before = self.cgroup.as_ref().map(|cg| {
            cg.reset_peak();
            cg.stats()
        });
        // The request carries the first piece of stdin; the rest is fed as the program reads.
        let (head, feed) = cmd.stdin.split_at(cmd.stdin.len().min(STDIN_PIECE));
        let req = RunRequest {
            argv: cmd.argv.clone(),
            env: match cmd.cell {
                Some(_) => cmd.env.clone(),
                None => program_env(&cmd.env),
            },
            cwd: cmd.cwd.clone().unwrap_or_else(|| "/workspace".into()),
            stdin: head.to_vec(),
            stdin_open: stdin.is_some() || !feed.is_empty(),
            fd3_input: cmd.fd3_input.clone(),
            capture_fd4: cmd.capture_fd4,
            limits: cmd.limits,
            stream: output.is_some(),
            warm: cmd.warm.clone(),
            files: cmd
                .files
                .iter()
                .map(|(root, path, data, executable)| WriteFile {
                    root: *root,
                    path: path.clone(),
                    data: data.clone(),
                    executable: *executable,
                })
                .collect(),
            cleanup: cmd.cleanup.clone(),
            cell: cmd.cell.clone(),
        };
        // A cell may first wait for its context's kernel to start again.
        let grace = match cmd.cell {
            Some(_) => CONTEXT_START_GRACE,
            None => HOST_GRACE,
        };
        let deadline = cmd.limits.wall_time + grace;
        let result = tokio::time::timeout(
            deadline,
            exchange_run(&mut conn.stream, &req, feed, output.as_ref(), cancel, stdin),
        )
        .await;
        let report = match conn.settle(result) {
            Ok(report) => report,
            Err(SandboxError::Unresponsive) => {
                drop(conn);
                self.kill();
                return Err(SandboxError::Unresponsive);
            }
            Err(e) => return Err(e),
        };
        let after = self.cgroup.as_ref().map(|cg| cg.stats());
        if let (Some(cg), Some(_)) = (&self.cgroup, memory_override) {
            if let Err(e) = cg.set_memory_limit(self.limits.memory_bytes) {
                conn.broken = true;
                return Err(e.into());
            }
        }
        let oom = match (&before, &after) {
            (Some(Ok(b)), Some(Ok(a))) => a.oom_kills > b.oom_kills,
            _ => false,
        };
        let peak = match &after {
            Some(Ok(a)) => a.memory_peak_bytes,
            _ => Some(report.max_rss_bytes),
        };
        Ok(outcome_from(report, oom, peak, &cmd.limits))
    }

    /// Writes a file in the box (under `/workspace` or `/tmp`), as the sandbox user.
    pub async fn write_file(
        &self,
        root: FileRoot,
        path: &str,
        data: Vec<u8>,
        executable: bool,
    ) -> Result<(), SandboxError> {
        let msg = HostMsg::WriteFile(WriteFile {
            root,
            path: path.to_string(),
            data,
            executable,
        });
        match self.request(&msg).await? {
            InitMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Reads a file in the box (under `/workspace` or `/tmp`), at most `max_bytes`.
    pub async fn read_file(
        &self,
        root: FileRoot,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SandboxError> {
        let msg = HostMsg::ReadFile {
            root,
            path: path.to_string(),
            max_bytes,
        };
        let mut conn = self.conn.lock().await;
        if conn.broken {
            return Err(SandboxError::BoxGone);
        }
        // The init sends the file in pieces (it never holds it whole) and ends them with Done.
        let exchange = async {
            channel::send_async(&mut conn.stream, &msg)
                .await
                .map_err(|_| SandboxError::BoxGone)?;
            let mut data = Vec::new();
            loop {
                match channel::recv_async::<InitMsg>(&mut conn.stream).await {
                    Ok(Some(InitMsg::FileChunk(piece))) => {
                        if (data.len() + piece.len()) as u64 > max_bytes {
                            return Err(SandboxError::Request(format!(
                                "the box sent more than the {max_bytes} bytes asked for"
                            )));
                        }
                        data.extend_from_slice(&piece);
                    }
                    Ok(Some(InitMsg::Done)) => return Ok(Ok(data)),
                    Ok(Some(InitMsg::Error(msg))) => return Ok(Err(SandboxError::Request(msg))),
                    Ok(Some(other)) => return Err(unexpected(other)),
                    Ok(None) | Err(_) => return Err(SandboxError::BoxGone),
                }
            }
        };
        let outcome = tokio::time::timeout(HOST_GRACE, exchange).await;
        conn.settle(outcome)?
    }

    /// Appends to a file in the box, creating it (and its parents) when missing.
    pub async fn append_file(
        &self,
        root: FileRoot,
        path: &str,
        data: Vec<u8>,
    ) -> Result<(), SandboxError> {
        let msg = HostMsg::AppendFile(WriteFile {
            root,
            path: path.to_string(),
            data,
            executable: false,
        });
        match self.request(&msg).await? {
            InitMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a warm worker in the box now (see [`RunSpec::warm`]), so the first run that
    /// names it does not wait for it; with `wait_ready`, returns once the worker is ready.
    pub async fn start_worker(
        &self,
        spec: &WarmSpec,
        wait_ready: bool,
    ) -> Result<(), SandboxError> {
        if self.id_map.single() {
            // Such a box has no uid for a worker; its runs start cold (see `crate::ids`).
            return Ok(());
        }
        let msg = HostMsg::StartWorker {
            spec: spec.clone(),
            wait_ready,
        };
        match self.request(&msg).await? {
            InitMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Starts the kernel of context `id` in the box, ending the one it had first (a restart),
    /// and waits until it is ready: `spec`'s environment is added to the defaults every program
    /// gets. Its cells are runs with [`RunSpec::cell`].
    pub async fn start_context(&self, id: &str, spec: &KernelSpec) -> Result<(), SandboxError> {
        let mut spec = spec.clone();
        spec.env = program_env(&spec.env);
        let msg = HostMsg::StartContext {
            id: id.to_string(),
            spec,
        };
        match self.request_within(&msg, CONTEXT_START_GRACE).await? {
            InitMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ends context `id`'s kernel and everything it started; false when the box had no such
    /// context.
    pub async fn close_context(&self, id: &str) -> Result<bool, SandboxError> {
        let msg = HostMsg::CloseContext { id: id.to_string() };
        match self.request_within(&msg, CONTEXT_START_GRACE).await? {
            InitMsg::Removed(removed) => Ok(removed),
            other => Err(unexpected(other)),
        }
    }

    /// Stops every warm worker of the box except those of `specs` (their memory is the box's):
    /// for a box started with every language's workers that now serves one language.
    pub async fn keep_workers(&self, specs: &[WarmSpec]) -> Result<(), SandboxError> {
        let msg = HostMsg::KeepWorkers {
            keys: specs.iter().map(|s| s.key.clone()).collect(),
        };
        match self.request(&msg).await? {
            InitMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a directory in the box (and its parents with `recursive`).
    pub async fn create_dir(
        &self,
        root: FileRoot,
        path: &str,
        recursive: bool,
    ) -> Result<(), SandboxError> {
        let msg = HostMsg::CreateDir {
            root,
            path: path.to_string(),
            recursive,
        };
        match self.request(&msg).await? {
            InitMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a file, symlink or directory in the box; `false` when nothing was there.
    pub async fn remove(
        &self,
        root: FileRoot,
        path: &str,
        recursive: bool,
    ) -> Result<bool, SandboxError> {
        let msg = HostMsg::Remove {
            root,
            path: path.to_string(),
            recursive,
        };
        match self.request(&msg).await? {
            InitMsg::Removed(removed) => Ok(removed),
            other => Err(unexpected(other)),
        }
    }

    /// Copies a regular file in the box; returns the bytes copied.
    pub async fn copy(
        &self,
        root: FileRoot,
        source: &str,
        destination: &str,
        overwrite: bool,
    ) -> Result<u64, SandboxError> {
        let msg = HostMsg::Copy {
            root,
            source: source.to_string(),
            destination: destination.to_string(),
            overwrite,
        };
        match self.request(&msg).await? {
            InitMsg::Copied(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Lists a directory in the box without following symlinks; the flag says whether
    /// `max_entries` cut the listing short.
    pub async fn list(
        &self,
        root: FileRoot,
        path: &str,
        recursive: bool,
        max_depth: u32,
        max_entries: u32,
    ) -> Result<(Vec<Entry>, bool), SandboxError> {
        let msg = HostMsg::List {
            root,
            path: path.to_string(),
            recursive,
            max_depth,
            max_entries,
        };
        match self.request(&msg).await? {
            InitMsg::Entries { entries, truncated } => Ok((entries, truncated)),
            other => Err(unexpected(other)),
        }
    }

    async fn request(&self, msg: &HostMsg) -> Result<InitMsg, SandboxError> {
        self.request_within(msg, HOST_GRACE).await
    }

    /// A request the init answers within `grace`, or the box is declared broken.
    async fn request_within(
        &self,
        msg: &HostMsg,
        grace: Duration,
    ) -> Result<InitMsg, SandboxError> {
        let mut conn = self.conn.lock().await;
        if conn.broken {
            return Err(SandboxError::BoxGone);
        }
        let exchange = async {
            channel::send_async(&mut conn.stream, msg)
                .await
                .map_err(|_| SandboxError::BoxGone)?;
            channel::recv_async::<InitMsg>(&mut conn.stream)
                .await
                .map_err(|_| SandboxError::BoxGone)?
                .ok_or(SandboxError::BoxGone)
        };
        let outcome = tokio::time::timeout(grace, exchange).await;
        match conn.settle(outcome)? {
            InitMsg::Error(msg) => Err(SandboxError::Request(msg)),
            reply => Ok(reply),
        }
    }

    /// Whether the box can still take requests.
    pub async fn is_alive(&self) -> bool {
        !self.conn.lock().await.broken
    }

    /// Kills every process of the box, waits for them, and removes its cgroup.
    pub async fn destroy(mut self) -> Result<(), SandboxError> {
        self.kill();
        if let Some(mut child) = self.setup_process.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        match self.cgroup.take() {
            Some(cg) => {
                let destroyed = tokio::task::spawn_blocking(move || cg.destroy())
                    .await
                    .map_err(|e| SandboxError::Request(e.to_string()))?;
                if destroyed.is_err() {
                    // The group stays; the engine's upkeep retries it (remove_left_behind).
                    left_behind().insert(self.name.clone());
                }
                destroyed.map_err(SandboxError::from)
            }
            None => Ok(()),
        }
    }

    /// Kills everything in the box without waiting.
    fn kill(&self) {
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.kill_all() {
                tracing::warn!(box_name = %self.name, error = %e, "killing the box's cgroup failed");
            }
        }
        if let Some(pid) = self.init_pid {
            // SAFETY: the init is the setup process's child and is not reaped while the setup
            // process lives, so the pid still names it. Its death ends the PID namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for SandboxBox {
    fn drop(&mut self) {
        if self.setup_process.is_some() || self.cgroup.is_some() {
            self.kill();
            // The cgroup's own Drop removes it; the setup process is killed on drop and reaped by
            // tokio.
        }
    }
}

fn unexpected(msg: InitMsg) -> SandboxError {
    SandboxError::Request(format!("unexpected reply from the box: {msg:?}"))
}

/// One run's exchange with the init: the request, the output frames, the report.
///
/// The frames are read by one future that lives for the whole exchange (`receive`), so neither a
/// cancel nor a piece of stdin ever interrupts it halfway through a frame, and it goes on reading
/// while a frame goes out: the init blocks on sending output until it is read, so a write that
/// waited for the init to read would never end. When `cancel` fires, `HostMsg::Cancel` goes out
/// on the write half; each stdin event goes out as `HostMsg::Stdin` or `HostMsg::CloseStdin`, one
/// at a time, and its answer (`InitMsg::StdinTaken`, read by `receive` in the order the requests
/// went out) goes back to its sender. The init reads these only while the program runs; one that
/// reached it after the run had ended is answered later, by one `InitMsg::Error` each, which are
/// read and dropped here so that the next request gets its own answer.
///
/// `feed` is the rest of a stdin too large for the request: it goes out first, one
/// `HostMsg::StdinFeed` piece at a time, each once the one before was taken, and then the
/// caller's `stdin` events (or, without them, `HostMsg::CloseStdin`). A refused piece (the program
/// closed its stdin, or ended) ends the feed; the run goes on.
async fn exchange_run(
    stream: &mut UnixStream,
    req: &RunRequest,
    mut feed: &[u8],
    output: Option<&mpsc::UnboundedSender<OutputChunk>>,
    cancel: oneshot::Receiver<()>,
    mut stdin: Option<mpsc::Receiver<StdinEvent>>,
) -> Result<RunReport, SandboxError> {
    let (mut reader, mut writer) = stream.split();
    channel::send_async(&mut writer, &HostMsg::Run(Box::new(req.clone())))
        .await
        .map_err(|_| SandboxError::BoxGone)?;
    // The senders of the stdin requests sent and not answered yet, oldest first (`None` for the
    // close sent when every sender is gone).
    let waiting: StdMutex<VecDeque<Reply>> = StdMutex::new(VecDeque::new());
    // Requests not sent yet: at most a cancel and one stdin event.
    let mut queue: VecDeque<(HostMsg, Option<Reply>)> = VecDeque::new();
    // The write half while no frame goes out; the frame going out owns it until it is written.
    let mut idle = Some(writer);
    let mut sending: Option<Sending<'_>> = None;
    let mut cancel_sent = false;
    // The answer to the piece of `feed` that went out last, while it is awaited.
    let mut fed: Option<oneshot::Receiver<Result<(), SandboxError>>> = None;
    let mut feeding = !feed.is_empty();
    let report = {
        let receive = receive_report(&mut reader, output, &waiting);
        tokio::pin!(receive);
        let cancelled = async {
            // A sender dropped without sending means "no cancel": wait for the report alone.
            if cancel.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(cancelled);
        let mut cancel_queued = false;
        loop {
            if feeding && fed.is_none() && queue.is_empty() {
                let (piece, rest) = feed.split_at(feed.len().min(STDIN_PIECE));
                feed = rest;
                let (tx, rx) = oneshot::channel();
                fed = Some(rx);
                queue.push_back((HostMsg::StdinFeed(piece.to_vec()), Some(Some(tx))));
            }
            if sending.is_none() && idle.is_some() && !queue.is_empty() {
                if let (Some((msg, reply)), Some(mut w)) = (queue.pop_front(), idle.take()) {
                    match reply {
                        Some(reply) => lock(&waiting).push_back(reply),
                        None => cancel_sent = true,
                    }
                    sending = Some(Box::pin(async move {
                        let written = channel::send_async(&mut w, &msg).await;
                        (w, written)
                    }));
                }
            }
            let sent = async {
                match sending.as_mut() {
                    Some(frame) => frame.await,
                    None => std::future::pending().await,
                }
            };
            let next_stdin = async {
                match stdin.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let piece_taken = async {
                match fed.as_mut() {
                    Some(rx) => rx.await.is_ok_and(|taken| taken.is_ok()),
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                report = &mut receive => Step::Report(report),
                (w, written) = sent => Step::Sent(w, written),
                () = &mut cancelled, if !cancel_queued => Step::Cancel,
                taken = piece_taken => Step::Fed(taken),
                event = next_stdin, if queue.is_empty() && !feeding => Step::Stdin(event),
            };
            match step {
                Step::Report(report) => break report,
                Step::Sent(w, written) => {
                    sending = None;
                    written.map_err(|_| SandboxError::BoxGone)?;
                    idle = Some(w);
                }
                Step::Cancel => {
                    cancel_queued = true;
                    queue.push_back((HostMsg::Cancel, None));
                }
                Step::Stdin(Some(StdinEvent::Data(data, reply))) => {
                    queue.push_back((HostMsg::Stdin(data), Some(Some(reply))));
                }
                Step::Stdin(Some(StdinEvent::Close(reply))) => {
                    queue.push_back((HostMsg::CloseStdin, Some(Some(reply))));
                }
                Step::Fed(taken) => {
                    fed = None;
                    if !taken || feed.is_empty() {
                        feeding = false;
                        // Without a caller's input to follow, the program's stdin ends here.
                        if stdin.is_none() {
                            queue.push_back((HostMsg::CloseStdin, Some(None)));
                        }
                    }
                }
                Step::Stdin(None) => {
                    // No one can send more input: the program's stdin ends here.
                    stdin = None;
                    queue.push_back((HostMsg::CloseStdin, Some(None)));
                }
            }
        }
    };
    // A frame half written would leave the stream out of step: finish it.
    if let Some(frame) = sending.take() {
        let (_, written) = frame.await;
        written.map_err(|_| SandboxError::BoxGone)?;
    }
    let report = report?;
    let ended = || SandboxError::Request("the command had ended before its input came".into());
    for (_, reply) in queue {
        if let Some(Some(reply)) = reply {
            let _ = reply.send(Err(ended()));
        }
    }
    // Input that was sent but never taken from the channel (the run ended first) gets the same
    // answer, and nothing more can be sent.
    if let Some(mut rx) = stdin {
        rx.close();
        while let Ok(event) = rx.try_recv() {
            let (StdinEvent::Data(_, reply) | StdinEvent::Close(reply)) = event;
            let _ = reply.send(Err(ended()));
        }
    }
    // Requests the run ended before answering: each is answered by one `InitMsg::Error` now.
    let mut strays: Vec<Reply> = lock(&waiting).drain(..).collect();
    if cancel_sent && report.error.as_deref() != Some("cancelled") {
        strays.push(None);
    }
    for reply in strays {
        match channel::recv_async::<InitMsg>(&mut reader).await {
            Ok(Some(InitMsg::Error(_))) => {}
            Ok(Some(other)) => return Err(unexpected(other)),
            Ok(None) | Err(_) => return Err(SandboxError::BoxGone),
        }
        if let Some(reply) = reply {
            let _ = reply.send(Err(ended()));
        }
    }
    Ok(report)
}

/// A frame going out on the write half, which it gives back once written.
type Sending<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (WriteHalf<'a>, io::Result<()>)> + Send + 'a>,
>;

/// What one turn of [`exchange_run`]'s loop got.
enum Step<'a> {
    Report(Result<RunReport, SandboxError>),
    Sent(WriteHalf<'a>, io::Result<()>),
    Cancel,
    /// The last piece of the feed was answered: taken (`true`) or refused.
    Fed(bool),
    Stdin(Option<StdinEvent>),
}

/// Where the answer to one stdin request goes (`None`: nowhere).
type Reply = Option<oneshot::Sender<Result<(), SandboxError>>>;

fn lock(waiting: &StdMutex<VecDeque<Reply>>) -> std::sync::MutexGuard<'_, VecDeque<Reply>> {
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads a run's frames until its report, passing output on to `output` and the answers to stdin
/// requests to the oldest sender in `waiting`.
async fn receive_report(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    output: Option<&mpsc::UnboundedSender<OutputChunk>>,
    waiting: &StdMutex<VecDeque<Reply>>,
) -> Result<RunReport, SandboxError> {
    loop {
        match channel::recv_async::<InitMsg>(reader).await {
            Ok(Some(InitMsg::Output { stream, data })) => {
                if let Some(tx) = output {
                    let _ = tx.send(OutputChunk { stream, data });
                }
            }
            Ok(Some(InitMsg::StdinTaken(refused))) => {
                let Some(reply) = lock(waiting).pop_front() else {
                    return Err(SandboxError::Request(
                        "the box answered stdin that was never sent".into(),
                    ));
                };
                if let Some(reply) = reply {
                    let _ = reply.send(match refused {
                        None => Ok(()),
                        Some(why) => Err(SandboxError::Request(why)),
                    });
                }
            }
            Ok(Some(InitMsg::Finished(report))) => return Ok(report),
            Ok(Some(InitMsg::Error(msg))) => return Err(SandboxError::Request(msg)),
            Ok(Some(other)) => return Err(unexpected(other)),
            Ok(None) | Err(_) => return Err(SandboxError::BoxGone),
        }
    }
}

/// Turns the init's report and the cgroup's counters into the typed outcome. The one place that
/// decides a run's status.
fn outcome_from(report: RunReport, oom: bool, peak: Option<u64>, limits: &RunLimits) -> RunOutcome {
    let (exit_code, signal) = match report.exit {
        Exit::Code(c) => (Some(c), None),
        Exit::Signal(s) => (None, Some(s)),
        Exit::NotStarted => (Some(127), None),
    };
    let cpu = Duration::from_nanos(report.cpu_nanos);
    let cpu_exhausted = signal == Some(libc::SIGXCPU)
        || (signal == Some(libc::SIGKILL) && cpu + Duration::from_millis(50) >= limits.cpu_time);
    let (status, message) = if report.output_limit {
        (
            Verdict::OutputLimit,
            Some(format!("output exceeded {} bytes", limits.output_bytes)),
        )
    } else if report.wall_timeout {
        (
            Verdict::Timeout,
            Some(format!(
                "wall-clock limit of {:?} exceeded",
                limits.wall_time
            )),
        )
    } else if cpu_exhausted {
        (
            Verdict::Timeout,
            Some(format!("CPU time limit of {:?} exceeded", limits.cpu_time)),
        )
    } else if oom {
        (
            Verdict::MemoryLimit,
            Some("memory limit exceeded".to_string()),
        )
    } else if report.error.as_deref() == Some("cancelled") {
        (Verdict::Killed, Some("cancelled".to_string()))
    } else {
        match (exit_code, signal) {
            (Some(0), _) => (Verdict::Ok, None),
            (_, Some(s)) if s == libc::SIGKILL => {
                (Verdict::Killed, Some("killed by SIGKILL".to_string()))
            }
            _ => (Verdict::RuntimeError, report.error.clone()),
        }
    };
    RunOutcome {
        status,
        exit_code,
        signal,
        stdout: report.stdout,
        stderr: report.stderr,
        result: report.fd4,
        truncated: report.truncated,
        wall_time: Duration::from_nanos(report.wall_nanos),
        cpu_time: cpu,
        peak_memory_bytes: peak,
        message,
        cell: report.cell,
    }
}
