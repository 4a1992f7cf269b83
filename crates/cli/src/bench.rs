//! `codebeaker bench`: the flags of the benchmarks; the suites themselves are
//! [`codebeaker_harness::bench`]. Timings are reported, never asserted: machines are noisy.

use std::path::PathBuf;

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
    /// daemon runs), or `all` of them one after another. With --json every figure is also written
    /// under `figures`, with the baseline measured in the same run, for --compare.
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
    /// Instead of measuring, compare two runs written by `--json` and print the figures that
    /// moved by more than --threshold: by their ratio to the same run's baseline where they have
    /// one (which a noisy machine moves far less than the times themselves), else by value.
    /// Reports; never fails on what moved.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with_all = ["suite", "json", "only"])]
    compare: Vec<PathBuf>,
    /// With --compare: the smallest change reported, in percent.
    #[arg(long, default_value_t = 10.0, requires = "compare", value_parser = percent)]
    threshold: f64,
}

fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=1000.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{text:?} is not a percentage from 0 to 1000 (for example 10)"
        )),
    }
}

pub async fn main(args: BenchArgs) -> Result<i32> {
    if let [old, new] = args.compare.as_slice() {
        return Ok(codebeaker_harness::bench::print_comparison(
            old,
            new,
            args.threshold / 100.0,
        )?);
    }
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
