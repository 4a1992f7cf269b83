//! Isolated boxes for untrusted programs, built directly on Linux primitives: no daemon, no
//! Docker.
//!
//! A *box* is created once and then runs many processes, one run at a time. Each box has its own
//! user, PID, mount, network (loopback only), IPC, UTS and cgroup namespaces; a root filesystem of
//! read-only binds plus size-capped tmpfs for `/workspace` and `/tmp`; a cgroup (v1 or v2) that
//! holds its memory, process and CPU limits; and a small init as its PID 1 that starts programs
//! as an unprivileged uid under a seccomp filter, enforces each run's limits, reaps everything,
//! and talks to the host over an inherited socket.
//!
//! ```text
//!  host (async)                          box
//!  Sandbox::create_box ──spawn──▶ setup process ──clone(namespaces)──▶ init (PID 1)
//!  SandboxBox::run ───────── socket (channel) ──────────────────────▶ fork → drop privileges → exec
//! ```
//!
//! Modules, in the order a box comes to life: [`cgroup`] (limits the kernel enforces),
//! [`host`] (creating and driving boxes), [`init`] (setup process and the init inside the box),
//! [`ids`] (which host ids a box maps, root or rootless), [`seccomp`] (the filter), [`channel`] (host ↔ init messages), [`limits`] and [`outcome`] (what
//! callers set and get back), and [`census`] (what boxes leave on the host, for
//! `codebeaker doctor --leaks` and the leak checks).
//!
//! The binary that embeds this crate must call [`init::main`] when its first argument is
//! [`INIT_ARG`], before it starts any thread.

pub mod census;
pub mod cgroup;
pub mod channel;
pub mod host;
pub mod ids;
pub mod init;
pub mod limits;
pub mod outcome;
mod procfs;
pub mod seccomp;

pub use channel::{Bind, CellReport, Entry, EntryKind, FileRoot, KernelSpec, Stream, WarmSpec};
pub use host::{
    id_span, BoxSpec, Isolation, OutputChunk, RunSpec, Sandbox, SandboxBox, SandboxConfig,
    SandboxError, StdinEvent, ID_SLOTS, INIT_ARG,
};
pub use ids::IdMap;
pub use limits::{BoxLimits, RunLimits, MIB};
pub use outcome::{RunOutcome, Verdict};
