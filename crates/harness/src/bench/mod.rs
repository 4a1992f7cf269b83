//! The benchmarks behind `codebeaker bench`: three suites that time CodeBeaker beside a
//! baseline doing the same work, and print medians, p99 and ratios. Timings are reported, never
//! asserted: machines are noisy.
//!
//! - [`sandbox`]: box creation and sandboxed runs against a bare process and bubblewrap.
//! - [`languages`]: the original .NET CodeBeaker's snippet per language, first run and cache
//!   hit, against the bare toolchain.
//! - [`warm`]: the per-request paths of a platform, through the real client over WebSocket and
//!   in-process, against Docker when its daemon runs.

pub mod languages;
pub mod sandbox;
pub mod warm;

use crate::HarnessError;

/// Which suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Boxes against bare processes and bubblewrap.
    Sandbox,
    /// The original .NET CodeBeaker's snippets: first run, cache hit, and the bare toolchain.
    Languages,
    /// The per-request paths over WebSocket and in-process, against Docker.
    Warm,
}

impl Suite {
    /// The suites by the names `--suite` takes.
    pub const NAMES: [&str; 3] = ["sandbox", "languages", "warm"];

    /// The suite named `name`, as `--suite` takes it.
    pub fn named(name: &str) -> Option<Suite> {
        match name {
            "sandbox" => Some(Suite::Sandbox),
            "languages" => Some(Suite::Languages),
            "warm" => Some(Suite::Warm),
            _ => None,
        }
    }
}

/// One benchmark run, as `codebeaker bench`'s flags give it.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub suite: Suite,
    /// Timed iterations per case (after warm-up).
    pub iterations: usize,
    /// The program every case of the sandbox suite runs.
    pub program: String,
    /// With the warm suite: how many idle Python sessions to hold for the memory figure.
    pub idle_sessions: usize,
    /// With the warm suite: measure only these parts (default: all; see [`warm::PARTS`]).
    pub only: Vec<String>,
    /// Print the results as JSON.
    pub json: bool,
}

/// Runs the chosen suite and prints its report; returns the exit code.
pub async fn run(options: BenchOptions) -> Result<i32, HarnessError> {
    match options.suite {
        Suite::Sandbox => sandbox::run(options.iterations, &options.program, options.json).await,
        Suite::Languages => languages::run(options.iterations, options.json).await,
        Suite::Warm => {
            warm::run(
                options.iterations,
                options.idle_sessions,
                &options.only,
                options.json,
            )
            .await
        }
    }
}
