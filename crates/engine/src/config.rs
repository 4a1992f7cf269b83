//! The engine's configuration, with the defaults a user gets when they say nothing.

use codebeaker_sandbox::{BoxLimits, RunLimits, SandboxConfig, MIB};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the engine can be told. Every field has a default; see `docs/configuration.md`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub sandbox: SandboxConfig,
    /// Limits of each new box.
    pub box_limits: BoxLimits,
    /// Limits of each run, unless the request says otherwise.
    pub run_limits: RunLimits,
    /// Limits of each compile step.
    pub compile_limits: RunLimits,
    /// Highest wall-clock limit a request may ask for.
    pub max_run_time: Duration,
    /// Highest memory limit a request may ask for.
    pub max_memory_bytes: u64,
    /// Largest stdin one run may be given. The box is fed it as its program reads (its init
    /// holds a few MiB at most, whatever the size), so this bounds what the engine holds for a
    /// run, not what a box can take.
    pub max_stdin_bytes: u64,
    /// Directory of the content-addressed compile cache (bound read-only into every box).
    pub cache_dir: PathBuf,
    /// Bytes of compile-cache entries each caller keeps (see `CompileCache`).
    pub cache_max_bytes: u64,
    /// TOML that extends or overrides the built-in language registry.
    pub languages_override: Option<String>,
    /// The only languages whose toolchains are looked for (names or aliases); `None`: all. A
    /// command that runs one language sets it, so that it does not probe the other toolchains.
    pub only_languages: Option<Vec<String>>,
    /// The file where the toolchains' version probes are kept between runs (a probe runs again
    /// when an executable it concerns changes); `None` probes every time.
    pub probe_cache_file: Option<PathBuf>,
    /// Run every version probe, whatever the probe file says, and keep the new answers
    /// (`codebeaker doctor` and `languages` do, to report what is there now).
    pub fresh_probes: bool,
    pub sessions: SessionLimits,
    pub files: FileLimits,
    /// Bounds of the `diff` and `apply_patch` commands, which run on the server.
    pub text: TextLimits,
    /// One-shot runs waiting or running at most; more are refused with "limit reached".
    pub max_queued_executions: usize,
    /// One-shot runs waiting or running at most for one caller, so that one caller cannot fill
    /// the whole queue.
    pub max_queued_executions_per_caller: usize,
    /// One-shot runs that run at the same time. A slot that comes free goes to the waiting
    /// caller who holds the fewest: a caller alone gets them all, callers together share them.
    pub max_concurrent_executions: usize,
    /// How long a finished one-shot run's result is kept for `execution.status`.
    pub execution_retention: Duration,
    /// How many finished one-shot results, and how many bytes of them, each caller keeps.
    pub execution_records: RecordLimits,
    /// Ready boxes kept for new sessions and one-shot runs (0 turns the pool off).
    pub box_pool_size: usize,
    /// Run programs in pre-started warm workers where the language has one.
    pub warm_workers: bool,
}

/// Session bounds and timeouts.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub max_sessions_per_caller: usize,
    /// Default idle timeout (the original .NET CodeBeaker's 30 minutes).
    pub idle_timeout: Duration,
    /// Highest idle timeout a caller may ask for.
    pub max_idle_timeout: Duration,
    /// Default maximum lifetime (the original .NET CodeBeaker's 120 minutes).
    pub max_lifetime: Duration,
    /// Highest maximum lifetime a caller may ask for.
    pub max_lifetime_cap: Duration,
    /// How often expired sessions are looked for.
    pub reap_interval: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_sessions: 512,
            max_sessions_per_caller: 64,
            idle_timeout: Duration::from_secs(30 * 60),
            max_idle_timeout: Duration::from_secs(24 * 3600),
            max_lifetime: Duration::from_secs(120 * 60),
            max_lifetime_cap: Duration::from_secs(24 * 3600),
            reap_interval: Duration::from_secs(10),
        }
    }
}

/// Bounds of the file commands.
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    /// Largest content one `write_file` may carry.
    pub max_write_bytes: u64,
    /// Largest file `read_file`, `diff` and `apply_patch` read.
    pub max_read_bytes: u64,
    /// Most entries one `list_files` returns.
    pub max_list_entries: u32,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_write_bytes: 64 * MIB,
            max_read_bytes: 16 * MIB,
            max_list_entries: 10_000,
        }
    }
}

/// Bounds of the work `diff` and `apply_patch` do on the server itself (not in a box).
#[derive(Debug, Clone, Copy)]
pub struct TextLimits {
    /// Largest text either side of a `diff` may be, and the largest patch `apply_patch` takes,
    /// in bytes (files are read under [`FileLimits::max_read_bytes`] first).
    pub max_bytes: u64,
    /// Most lines either side of a `diff` may have, and a patch may have.
    pub max_lines: u64,
    /// Most steps a `diff` may take (about one per line compared): two unrelated texts cost
    /// about the product of their line counts, two similar ones about their length. Beyond, the
    /// diff is refused as too costly instead of holding a thread.
    pub max_diff_cost: u64,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_bytes: 4 * MIB,
            max_lines: 200_000,
            max_diff_cost: 20_000_000,
        }
    }
}

/// Bounds of the finished one-shot results kept for `execution.status`, per caller. Over either
/// bound, the caller's oldest finished results are forgotten first; runs still queued or
/// running are never dropped (their number is bounded by `max_queued_executions`).
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// Finished results kept per caller.
    pub max_per_caller: usize,
    /// Bytes of finished results (stdout, stderr, error, snippet result) kept per caller.
    pub max_bytes_per_caller: u64,
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max_per_caller: 256,
            max_bytes_per_caller: 32 * MIB,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            sandbox: SandboxConfig::default(),
            box_limits: BoxLimits::default(),
            run_limits: RunLimits::default(),
            compile_limits: RunLimits {
                wall_time: Duration::from_secs(60),
                cpu_time: Duration::from_secs(60),
                output_bytes: MIB,
                file_size_bytes: 256 * MIB,
                open_files: 1024,
                memory_bytes: None,
            },
            max_run_time: Duration::from_secs(300),
            max_memory_bytes: 4096 * MIB,
            max_stdin_bytes: 64 * MIB,
            cache_dir: codebeaker_sandbox::ids::default_cache_dir().join("compile"),
            cache_max_bytes: 1024 * MIB,
            languages_override: None,
            only_languages: None,
            probe_cache_file: Some(
                codebeaker_sandbox::ids::default_cache_dir().join("toolchains.json"),
            ),
            fresh_probes: false,
            sessions: SessionLimits::default(),
            files: FileLimits::default(),
            text: TextLimits::default(),
            max_queued_executions: 1000,
            max_queued_executions_per_caller: 250,
            max_concurrent_executions: 4,
            execution_retention: Duration::from_secs(600),
            execution_records: RecordLimits::default(),
            box_pool_size: 4,
            warm_workers: true,
        }
    }
}

/// The unit of a requested time limit, as the request gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimeUnit {
    Millis,
    Seconds,
    Minutes,
}

/// A request's limits checked against this configuration's bounds: the one place for each.
impl EngineConfig {
    /// A run's time limit `asked` (in `unit`, named `field` in the request) within 1 unit and
    /// the configured longest run.
    pub(crate) fn run_time(
        &self,
        field: &'static str,
        asked: Duration,
        unit: TimeUnit,
    ) -> Result<Duration, crate::EngineError> {
        bounded_time(field, asked, unit, self.max_run_time)
    }

    /// A memory limit of `mb` MiB (named `field` in the request), in bytes: between 16 MiB and
    /// the configured most.
    pub(crate) fn memory_limit(
        &self,
        field: &'static str,
        mb: u64,
    ) -> Result<u64, crate::EngineError> {
        let most = self.max_memory_bytes / codebeaker_sandbox::MIB;
        if !(16..=most).contains(&mb) {
            return Err(crate::EngineError::OutOfRange {
                field,
                message: format!("{field} must be between 16 and {most} MB, got {mb}"),
            });
        }
        Ok(mb * codebeaker_sandbox::MIB)
    }
}

impl EngineConfig {
    /// A run's stdin (named `field` in the request) within the configured most.
    pub(crate) fn checked_stdin(
        &self,
        field: &'static str,
        stdin: Option<String>,
    ) -> Result<Vec<u8>, crate::EngineError> {
        let stdin = stdin.unwrap_or_default().into_bytes();
        self.check_stdin(field, stdin.len())?;
        Ok(stdin)
    }

    /// Refuses a stdin of `len` bytes (named `field` in the request) past the configured most.
    pub(crate) fn check_stdin(
        &self,
        field: &'static str,
        len: usize,
    ) -> Result<(), crate::EngineError> {
        let most = self.max_stdin_bytes;
        if len as u64 > most {
            return Err(crate::EngineError::OutOfRange {
                field,
                message: format!(
                    "{field} is {len} bytes, more than the {most} bytes a run may be given \
                     (limits.max_stdin_bytes); give large input as a file in the workspace instead"
                ),
            });
        }
        Ok(())
    }

    /// The limits a door asked for whole (named `field` in its request), on top of `base`: its
    /// wall-clock and CPU times within 1 ms and `most`, and its memory (when it names one)
    /// within 16 MiB and the configured most, and its file size cut to `base`'s. Every other
    /// limit is `base`'s: a door cannot raise the output, file size or open-file bounds.
    pub(crate) fn checked_limits(
        &self,
        field: &'static str,
        asked: RunLimits,
        base: RunLimits,
        most: Duration,
    ) -> Result<RunLimits, crate::EngineError> {
        bounded_time(field, asked.wall_time, TimeUnit::Millis, most)?;
        bounded_time(field, asked.cpu_time, TimeUnit::Millis, most)?;
        if let Some(bytes) = asked.memory_bytes {
            let least = 16 * MIB;
            if !(least..=self.max_memory_bytes).contains(&bytes) {
                return Err(crate::EngineError::OutOfRange {
                    field,
                    message: format!(
                        "{field}: memory must be between {least} and {} bytes, got {bytes}",
                        self.max_memory_bytes
                    ),
                });
            }
        }
        Ok(RunLimits {
            wall_time: asked.wall_time,
            cpu_time: asked.cpu_time,
            memory_bytes: asked.memory_bytes.or(base.memory_bytes),
            file_size_bytes: asked.file_size_bytes.min(base.file_size_bytes),
            ..base
        })
    }
}

/// `asked` (in `unit`, named `field`) within one `unit` and `max`.
pub(crate) fn bounded_time(
    field: &'static str,
    asked: Duration,
    unit: TimeUnit,
    max: Duration,
) -> Result<Duration, crate::EngineError> {
    let (one, name, most) = match unit {
        TimeUnit::Millis => (Duration::from_millis(1), "milliseconds", max.as_millis()),
        TimeUnit::Seconds => (Duration::from_secs(1), "seconds", u128::from(max.as_secs())),
        TimeUnit::Minutes => (
            Duration::from_secs(60),
            "minutes",
            u128::from(max.as_secs() / 60),
        ),
    };
    if asked < one || asked > max {
        return Err(crate::EngineError::OutOfRange {
            field,
            message: format!("{field} must be between 1 and {most} {name}"),
        });
    }
    Ok(asked)
}
