//! `codebeaker bench`: the flags of the benchmarks; the suites themselves are
//! [`codebeaker_harness::bench`]. Timings are reported, never asserted: machines are noisy.

use anyhow::{Context, Result};
use clap::Args;
use codebeaker_harness::bench::{BenchOptions, Suite};

#[derive(Args)]
pub struct BenchArgs {
    /// Timed iterations per case (after warm-up).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    iterations: u32,
    /// The program every case runs.
    #[arg(long, default_value = "/usr/bin/python3")]
    program: String,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// What to measure: `sandbox` (boxes against bare processes and bubblewrap), `languages`
    /// (the original .NET CodeBeaker's snippets: first run, cache hit, and the bare toolchain)
    /// or `warm` (the per-request paths over WebSocket and in-process, against Docker when a
    /// daemon runs).
    #[arg(long, default_value = "sandbox", value_parser = Suite::NAMES)]
    suite: String,
    /// With `--suite warm`: how many idle Python sessions to hold for the memory figure.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=2000))]
    idle_sessions: u32,
    /// With `--suite warm`: measure only these parts (comma-separated; default: all). `bare`
    /// (bare python3), `docker`, `session-create`, `warm` (warm snippets in a session),
    /// `one-shot` (`execution.run` cold and from the pool), `throughput`, `idle` (memory of idle
    /// sessions).
    #[arg(long, value_delimiter = ',', value_parser = codebeaker_harness::bench::warm::PARTS)]
    only: Vec<String>,
}

pub async fn main(args: BenchArgs) -> Result<i32> {
    let suite = Suite::named(&args.suite).context("--suite: no such suite")?;
    let options = BenchOptions {
        suite,
        iterations: args.iterations as usize,
        program: args.program,
        idle_sessions: args.idle_sessions as usize,
        only: args.only,
        json: args.json,
    };
    Ok(codebeaker_harness::bench::run(options).await?)
}
