//! The typed outcome of a run: why it stopped, how, and what it cost.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a run ended. Users never have to guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Exited with code 0.
    Ok,
    /// Exited non-zero, or died of a signal such as SIGSEGV or SIGABRT.
    RuntimeError,
    /// The program did not compile (set by the language layer, never by the sandbox).
    CompileError,
    /// Wall-clock or CPU time ran out.
    Timeout,
    /// The box's memory limit was hit and the kernel killed a process.
    MemoryLimit,
    /// stdout and stderr together exceeded the run's output limit.
    OutputLimit,
    /// Killed from outside: cancelled, or SIGKILL that no limit explains.
    Killed,
    /// CodeBeaker itself failed; the message says what happened.
    InternalError,
}

impl Verdict {
    /// The name used on the wire and in the CLI (`ok`, `runtime_error`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::RuntimeError => "runtime_error",
            Verdict::CompileError => "compile_error",
            Verdict::Timeout => "timeout",
            Verdict::MemoryLimit => "memory_limit",
            Verdict::OutputLimit => "output_limit",
            Verdict::Killed => "killed",
            Verdict::InternalError => "internal_error",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything known about a finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: Verdict,
    /// Exit code when the main process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when the main process was killed by a signal.
    pub signal: Option<i32>,
    /// Captured stdout (raw bytes; may not be UTF-8).
    pub stdout: Vec<u8>,
    /// Captured stderr (raw bytes; may not be UTF-8).
    pub stderr: Vec<u8>,
    /// Bytes the snippet ABI's result descriptor (fd 4) received, when the run asked for it.
    pub result: Option<Vec<u8>>,
    /// Output was cut at the output limit.
    pub truncated: bool,
    /// Wall-clock time from start to the end of the run.
    pub wall_time: Duration,
    /// CPU time (user + system) of every process of the run.
    pub cpu_time: Duration,
    /// Peak memory of the box during the run, when the kernel reports it.
    pub peak_memory_bytes: Option<u64>,
    /// A short explanation for `internal_error`, `timeout`, `memory_limit` and `output_limit`.
    pub message: Option<String>,
    /// For a cell of a context: its kernel's generation and whether the context's state was
    /// lost.
    pub cell: Option<crate::channel::CellReport>,
}

impl RunOutcome {
    /// An outcome for a run that CodeBeaker could not carry out.
    pub fn internal_error(message: impl Into<String>) -> Self {
        RunOutcome {
            status: Verdict::InternalError,
            exit_code: None,
            signal: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            result: None,
            truncated: false,
            wall_time: Duration::ZERO,
            cpu_time: Duration::ZERO,
            peak_memory_bytes: None,
            message: Some(message.into()),
            cell: None,
        }
    }

    /// True when the run ended because a time limit ran out.
    pub fn timed_out(&self) -> bool {
        self.status == Verdict::Timeout
    }

    /// True when the run ended because the memory limit was hit.
    pub fn oom_killed(&self) -> bool {
        self.status == Verdict::MemoryLimit
    }
}
