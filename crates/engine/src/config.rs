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
    /// Directory of the content-addressed compile cache (bound read-only into every box).
    pub cache_dir: PathBuf,
    /// Size the compile cache is kept under.
    pub cache_max_bytes: u64,
    /// TOML that extends or overrides the built-in language registry.
    pub languages_override: Option<String>,
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
            cache_dir: PathBuf::from("/var/cache/codebeaker/compile"),
            cache_max_bytes: 1024 * MIB,
            languages_override: None,
        }
    }
}
