//! Limits on a box as a whole and on each run inside it, with the defaults a user gets when they
//! say nothing. Every limit here is applied in exactly one place: box limits by
//! [`crate::cgroup`] (or rlimits when the box is degraded), run limits by the init inside the box.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Limits that hold for the whole box, shared by every process in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxLimits {
    /// Memory for all processes of the box together, tmpfs contents included; swap is off.
    pub memory_bytes: u64,
    /// Processes and threads alive at once in the box.
    pub max_processes: u64,
    /// CPU quota in thousandths of a core (1000 = one full core).
    pub cpu_millis: u64,
    /// Size cap of `/workspace` (writes past it fail with ENOSPC).
    pub workspace_bytes: u64,
    /// Size cap of `/tmp` (and, separately, of `/dev/shm`).
    pub tmp_bytes: u64,
    /// Number of files and directories `/workspace` may hold.
    pub workspace_files: u64,
    /// Number of files and directories `/tmp` (and, separately, `/dev/shm`) may hold: without a
    /// cap, empty files cost no bytes of the size cap but kernel memory each.
    pub tmp_files: u64,
}

impl Default for BoxLimits {
    fn default() -> Self {
        BoxLimits {
            memory_bytes: 512 * MIB,
            max_processes: 128,
            cpu_millis: 1000,
            workspace_bytes: 256 * MIB,
            tmp_bytes: 64 * MIB,
            workspace_files: 16_384,
            tmp_files: 16_384,
        }
    }
}

/// Limits for one run (one process tree started in a box).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLimits {
    /// Wall-clock time from start until every process of the run is killed.
    pub wall_time: Duration,
    /// CPU time of each process (RLIMIT_CPU, whole seconds, rounded up).
    pub cpu_time: Duration,
    /// Memory for this run; `None` uses the box's limit. Cannot exceed what the box was created with
    /// when the box is degraded (no cgroups).
    pub memory_bytes: Option<u64>,
    /// Bytes of stdout and stderr kept, together; more ends the run as `output_limit`.
    pub output_bytes: u64,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            wall_time: Duration::from_secs(10),
            cpu_time: Duration::from_secs(10),
            memory_bytes: None,
            output_bytes: MIB,
            file_size_bytes: 64 * MIB,
            open_files: 256,
        }
    }
}

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
